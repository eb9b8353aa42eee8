#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: boots Debian's stock Rust-enabled kernel (no kernel build: scripts/debian-kernel.sh
# prepares it in a few minutes cold), loads emuv with its defaults (an RTX 4070, 12 GiB physical
# + 2 GiB virtual, lazy), and shows what a user sees: dmesg, a program holding emulated VRAM,
# `cat /dev/emuv`, the sysfs report, emuv-smi and gpustat, then an unchanged PyTorch script on the
# card through emuv-run (examples/torch_on_emuv.py: weights loaded, mem_get_info, emuv-smi showing
# the process, an OOM caught, a kernel refused).
# EMUV_DEMO_KERNEL=test shows it on the project's own test kernel instead.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

out=$(mktemp -d /tmp/emuv-demo.XXXXXX)
build_tools() {
	"$here/cuda-headers.sh" >/dev/null &&
		cargo build --quiet --release --locked -p emuv-smi -p emuv-nvml -p emuv-cuda -p emuv-cudart --manifest-path "$top/Cargo.toml" &&
		"$here/install-nvml.sh" "$top/target/nvml" &&
		"$here/install-cuda.sh" "$top/target/cuda" &&
		cc -O2 -I "$top/include" -o "$out/vram_fill" "$top/examples/vram_fill.c"
}
if [ "${EMUV_DEMO_KERNEL:-debian}" = test ]; then
	kdir=$(prepare "$top")
	boot=(--kernel "$kdir") module_dir=$top
	build_tools
else
	"$here/setup.sh" debian >&2
	# The tools compile while the Debian kernel is prepared.
	build_tools >"$out/build.log" 2>&1 &
	tools_pid=$!
	vars=$("$here/debian-kernel.sh") || die "Debian's kernel could not be prepared (above); EMUV_DEMO_KERNEL=test uses the project's own"
	eval "$vars"
	wait "$tools_pid" || { cat "$out/build.log" >&2; die "building the tools failed"; }
	boot=(--kimg "$DEBIAN_KIMG") module_dir=$DEBIAN_MODULE_DIR
fi
cat >"$out/demo.sh" <<GUEST
#!/bin/sh
exec >"$out/demo.txt" 2>&1
export PATH="$top/target/release:$GPU_TOOLS_VENV/bin:\$PATH" LD_LIBRARY_PATH="$top/target/nvml"
. "$top/tests/vm/system.sh"
set -x
uname -r
insmod "$module_dir/emuv.ko"
dmesg | grep -w 'emuv:'
ls -l /dev/emuv
{ set +x; } 2>/dev/null
echo '\$ vram_fill 256 30 &    # a program holding 256 MiB of emulated VRAM for 30 s'
$out/vram_fill 256 30 >"$out/fill.txt" 2>&1 & holder=\$!
for _ in \$(seq 60); do grep -q holding "$out/fill.txt" && break; sleep 1; done
cat "$out/fill.txt"
set -x
cat /dev/emuv
cat /sys/class/emuv/emuv/vram_info
ls /sys/class/emuv/emuv/
grep . /sys/module/emuv/parameters/*
emuv-smi
gpustat --no-color
kill \$holder; wait \$holder
{ set +x; } 2>/dev/null
echo '\$ emuv-run python3 examples/torch_on_emuv.py    # PyTorch, unchanged (import takes a while under TCG)'
EMUV_LIB_DIR="$top/target/cuda:$top/target/nvml" EMUV_SMI="$top/target/release/emuv-smi" \
	"$top/tools/emuv-run/emuv-run" "$TORCH_VENV/bin/python3" "$top/examples/torch_on_emuv.py"
set -x
rmmod emuv
GUEST
chmod +x "$out/demo.sh"
"$here/vm-run.sh" "${boot[@]}" --memory 3G --rwdir "$out" --log "$out/console.log" -- "$out/demo.sh" ||
	{ cat "$out/demo.txt" 2>/dev/null; die "demo failed (console log: $out/console.log)"; }
sed 's/^+ /$ /' "$out/demo.txt"
