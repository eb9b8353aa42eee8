#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: set-up (when needed), the test kernel (cached), emuv.ko, the test programs,
# then one VM boot that runs KUnit and every test program. Prints per-phase timings and ends
# with the plain line `N passed, N failed, N skipped`; exits non-zero on any failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

# The test programs, in the order they run in the guest.
PROGRAMS=(emuv_load emuv_params emuv_memory emuv_alloc emuv_examples emuv_compat32 emuv_gpu_tools)
# What must show up in the results: the ABI check, the KUnit suites and every program.
EXPECTED=(host kunit:emuv_gpu_db kunit:emuv_vram_pool "${PROGRAMS[@]}")

start=$(date +%s)
timed "phase: set-up" "$here/setup.sh"
# The test programs do not need the kernel: build them while it compiles.
build_tests() {
	cargo build --quiet --release --locked -p emuv-tests -p emuv -p emuv-smi -p emuv-nvml \
		--examples --bins --lib --manifest-path "$top/Cargo.toml" >"$EMUV_CACHE/cargo-build.log" 2>&1 &&
		"$here/install-nvml.sh" "$top/target/nvml" &&
		mkdir -p "$top/target/examples" &&
		cp "$top/target/release/examples/vram_fill" "$top/target/examples/vram_fill_rs" &&
		cc -Wall -Wextra -Werror -O2 -I "$top/include" -o "$top/target/examples/vram_fill_c" \
			"$top/examples/vram_fill.c" >>"$EMUV_CACHE/cargo-build.log" 2>&1 &&
		cc -m32 -static -Wall -Wextra -Werror -O2 -I "$top/include" \
			-o "$top/target/release/emuv_compat32" "$top/tests/compat/emuv_compat32.c" \
			>>"$EMUV_CACHE/cargo-build.log" 2>&1 ||
		{ cat "$EMUV_CACHE/cargo-build.log" >&2; return 1; }
}
timed "phase: test programs" build_tests &
cargo_pid=$!
kdir=$(timed "phase: test kernel" "$here/build-kernel.sh")
wait "$cargo_pid" || die "building the test programs failed"
timed "phase: emuv.ko" make -s -C "$top" KDIR="$kdir" LLVM="$LLVM_SUFFIX" modules

out=$(mktemp -d /tmp/emuv-check.XXXXXX)
results=$out/results.txt

# On the host, as TAP: the module's copy of the ABI against include/uapi/emuv.h, NVML's struct
# layouts, and the tools' unit tests (parsers, formats).
host_tests() {
	local rc=0
	cargo test --release --locked -p emuv -p emuv-smi -p emuv-nvml --manifest-path "$top/Cargo.toml" \
		>"$out/host.log" 2>&1 || rc=$?
	{
		echo "### BEGIN host"
		awk '/^test .* \.\.\. / { n++; print ($NF == "ok" ? "ok " : "not ok ") n " " $2 }' "$out/host.log"
		echo "### END host rc=$rc"
	} >>"$results"
	[ $rc -eq 0 ] || cat "$out/host.log" >&2
}
timed "phase: host tests" host_tests || true

vm_ok=1
timed "phase: VM tests" "$here/vm-run.sh" --kernel "$kdir" --rwdir "$out" --log "$out/console.log" \
	-- env EMUV_GPU_TOOLS="$GPU_TOOLS_VENV" \
	"$top/tests/vm/guest.sh" "$results" "$top" "$top/target/release" "${PROGRAMS[@]}" || vm_ok=0
if [ $vm_ok -eq 0 ]; then
	# A dead VM or a kernel report is a failure of its own, counted with the tests.
	printf '### BEGIN vm\nnot ok 1 the VM finished and its kernel log is clean (see %s)\n### END vm rc=1\n' \
		"$out/console.log" >>"$results"
fi
log "results: $results, console: $out/console.log"
log "total: $(($(date +%s) - start)) s"
"$top/target/release/ktap_summary" "$results" "${EXPECTED[@]}"
