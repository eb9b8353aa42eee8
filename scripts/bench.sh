#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: boots each kernel once, our test kernel and Debian's stock one (when
# scripts/debian-kernel.sh finds one; EMUV_DEBIAN=0 skips it), and measures emuv against the
# kernel's own baselines (anonymous memory, memfd) side by side, as medians of per-round
# ratios, with THP as each kernel sets it by default. Prints one table with a column per kernel,
# writes it into docs/PERFORMANCE.md between its markers, and each run's figures as JSON.
# EMUV_BENCH_ONLY=prefix[,prefix...] measures only the figures whose names start so (the others
# show as "-").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

kdir=$(prepare "$top")
"$here/cuda-headers.sh" >/dev/null
cargo build --quiet --release --locked -p emuv-tests --manifest-path "$top/Cargo.toml"
cargo build --quiet --release --locked -p emuv-cuda -p emuv-cudart -p emuv-nvml --manifest-path "$top/Cargo.toml"
"$here/install-cuda.sh" "$top/target/cuda"
"$here/install-nvml.sh" "$top/target/nvml"
out=$(mktemp -d /tmp/emuv-bench.XXXXXX)
# 1 GiB of anonymous memory and a 2 GiB eager pool (the life-cycle figure), one after the other.
BENCH_MEMORY=4G

# bench NAME MODULE_DIR vm-run.sh's kernel options...: one VM boot, figures in $out/NAME.json.
bench() {
	local name=$1 module_dir=$2
	shift 2
	cat >"$out/$name.sh" <<-GUEST
		#!/bin/sh
		. "$top/tests/vm/system.sh"
		EMUV_BENCH_ONLY="${EMUV_BENCH_ONLY:-}" EMUV_MODULE_DIR="$module_dir" "$top/target/release/emuv_bench" "$out/$name.json" >"$out/$name.txt" 2>&1
	GUEST
	chmod +x "$out/$name.sh"
	log "bench: $name"
	"$here/vm-run.sh" "$@" --rwdir "$out" --log "$out/console-$name.log" -- "$out/$name.sh" ||
		{ cat "$out/$name.txt" 2>/dev/null; die "bench on $name failed (console log: $out/console-$name.log)"; }
	cat "$out/$name.txt" >&2
}

runs=()
bench ours "$top" --kernel "$kdir" --memory "$BENCH_MEMORY"
runs+=("$out/ours.json")

# PyTorch on emuv's runtime (tests/torch/bench.py), on our kernel: a 24 GiB lazy RTX 4090.
cat >"$out/torch.sh" <<GUEST
. "$top/tests/vm/system.sh"
insmod "$top/emuv.ko" gpu_model=4090 physical_vram_gb=24 virtual_vram_gb=0 lazy_allocation=1
run() { EMUV_LIB_DIR="$top/target/cuda:$top/target/nvml" "$top/tools/emuv-run/emuv-run" "$TORCH_VENV/bin/python3" "\$@"; }
alone=\$(run -c 'import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)')
run "$top/tests/torch/bench.py" "\$alone" >"$out/torch.txt" 2>&1
rmmod emuv
GUEST
chmod +x "$out/torch.sh"
log "bench: PyTorch"
"$here/vm-run.sh" --kernel "$kdir" --memory "$BENCH_MEMORY" --rwdir "$out" --log "$out/console-torch.log" -- "$out/torch.sh" ||
	{ cat "$out/torch.txt" 2>/dev/null; die "the PyTorch bench failed (console log: $out/console-torch.log)"; }
cat "$out/torch.txt" >&2
if [ "${EMUV_DEBIAN:-1}" = 1 ]; then
	rc=0
	vars=$("$here/debian-kernel.sh") || rc=$?
	if [ $rc -eq 0 ]; then
		eval "$vars"
		bench debian "$DEBIAN_MODULE_DIR" --kimg "$DEBIAN_KIMG" --memory "$BENCH_MEMORY"
		runs+=("$out/debian.json")
	elif [ $rc -eq 2 ]; then
		log "bench: no Debian kernel to measure (above: why); our kernel only"
	else
		die "preparing Debian's kernel failed"
	fi
fi
{
	echo "# make bench, $(date -u +%Y-%m-%d), $(uname -m), QEMU TCG guests ($BENCH_MEMORY, 2 vCPUs)"
	"$top/target/release/emuv_bench" table "${runs[@]}"
} >"$out/table.txt"
cat "$out/table.txt"
{
	echo '```'
	cat "$out/table.txt"
	echo
	echo "# PyTorch $(sed -n 's/^torch==//p' "$top/tests/torch/requirements.txt") on emuv's runtime, our kernel; ratio = baseline time / emuv's time"
	cat "$out/torch.txt"
	echo '```'
} >"$out/table.md"
awk -v table="$out/table.md" '
	/<!-- bench:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
	/<!-- bench:end -->/ { skip = 0 }
	!skip { print }' "$top/docs/PERFORMANCE.md" >"$out/PERFORMANCE.md"
cp "$out/PERFORMANCE.md" "$top/docs/PERFORMANCE.md"
echo "bench: figures in ${runs[*]}"
