#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: set-up (when needed), the test kernel (cached), emuv.ko, the test programs,
# then one VM boot that runs KUnit and every test program. Prints per-phase timings and ends
# with the plain line `N passed, N failed, N skipped`; exits non-zero on any failure.
#
# `make check` then runs the same programs on Debian's stock Rust-enabled kernel
# (scripts/debian-kernel.sh), in sections named debian:*; a suite without a kernel it can
# build for is reported as one skipped test, saying why. EMUV_DEBIAN=0 leaves it out.
#
# `make check-debug` (scripts/check.sh --debug): the same suite on the debug kernel (KASAN,
# kmemleak, lockdep on top of the CI kernel's checkers), with emuv.ko built for it in
# target/kernel-debug, a 1,000,000-operation fuzz run, 200 load/unload cycles and a kmemleak
# scan at the end.
#
#   scripts/check.sh [--debug]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

# The test programs, in the order they run in the guest.
PROGRAMS=(emuv_load emuv_params emuv_memory emuv_alloc emuv_pages emuv_races emuv_huge emuv_limits emuv_cards emuv_configfs emuv_processes emuv_examples emuv_compat32 emuv_gpu_tools emuv_cuda emuv_cdi emuv_dmem
	emuv_faults emuv_storm emuv_fuzz emuv_preempt)
# The CUDA runtime's programs run in a second boot with more memory: PyTorch with a model's weights
# does not fit the 1 GiB the others are sized for.
RUNTIME_PROGRAMS=(emuv_cudart)
RUNTIME_VM_MEMORY=3G
# What must show up in the results: the host tests, the KUnit suites and every program.
EXPECTED=(host kunit:emuv_gpu_db kunit:emuv_vram_pool kunit:emuv_page_ranges kunit:emuv_report kunit:emuv_client "${PROGRAMS[@]}" "${RUNTIME_PROGRAMS[@]}")

case ${1:-} in
--debug)
	FRAGMENTS=("$top/tests/vm/kernel.config" "$top/tests/vm/debug.config")
	MODULE_DIR=$top/target/kernel-debug
	# Sizes of the long runs (the environment may change them); the seeds are printed, and
	# EMUV_FUZZ_SEED / EMUV_STORM_SEED with the same sizes replay a run.
	RUN_SIZES=(EMUV_FUZZ_OPS="${EMUV_FUZZ_OPS:-1000000}" EMUV_STORM_CYCLES="${EMUV_STORM_CYCLES:-200}"
		EMUV_PREEMPT_REQUIRED=1)
	EXPECTED+=(kmemleak)
	VM_TIMEOUT=5400
	# emuv_preempt's 4 GiB eager pool needs 5.5 GiB in the guest; KASAN's shadow and the
	# crash kernel take 1 GiB of the VM's memory first (6G left 5103 MiB).
	VM_MEMORY=7G
	RUNTIME_VM_MEMORY=7G
	DEBIAN=0
	;;
"")
	FRAGMENTS=("$top/tests/vm/kernel.config")
	MODULE_DIR=$top
	RUN_SIZES=(EMUV_FUZZ_OPS="${EMUV_FUZZ_OPS:-40000}" EMUV_STORM_CYCLES="${EMUV_STORM_CYCLES:-200}")
	VM_TIMEOUT=1800
	VM_MEMORY=1G
	DEBIAN=${EMUV_DEBIAN:-1}
	;;
*) die "usage: check.sh [--debug]" ;;
esac

start=$(date +%s)
out=$(mktemp -d /tmp/emuv-check.XXXXXX)
results=$out/results.txt
timed "phase: set-up" "$here/setup.sh"
# Debian's kernel is prepared while ours compiles: its chroot and packages are mostly downloads.
if [ "$DEBIAN" = 1 ]; then
	timed "phase: Debian kernel (beside the test kernel)" "$here/debian-kernel.sh" \
		>"$out/debian.vars" 2>"$out/debian.log" &
	debian_pid=$!
fi
# The test programs do not need the kernel: build them while it compiles.
build_tests() {
	cargo build --quiet --release --locked -p emuv-tests -p emuv -p emuv-smi -p emuv-nvml -p emuv-cuda -p emuv-cudart -p emuv-ctk -p emuv-kubernetes \
		--examples --bins --lib --manifest-path "$top/Cargo.toml" >"$EMUV_CACHE/cargo-build.log" 2>&1 &&
		"$here/install-nvml.sh" "$top/target/nvml" &&
		"$here/install-cuda.sh" "$top/target/cuda" &&
		"$here/build-cudart-tests.sh" "$top/target/cudart" >>"$EMUV_CACHE/cargo-build.log" 2>&1 &&
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
kdir=$(timed "phase: test kernel" "$here/build-kernel.sh" "${FRAGMENTS[@]}")
wait "$cargo_pid" || die "building the test programs failed"
# Struct layouts differ between the two kernels: each gets its own build of emuv.ko, the debug
# one from a copy of the sources (kbuild refuses a second output directory for a source tree
# that holds a build, and stale objects there would be taken for the other kernel's).
if [ "$MODULE_DIR" != "$top" ]; then
	mkdir -p "$MODULE_DIR"
	(cd "$top" && cp -pr Kbuild Makefile ./*.rs glue include "$MODULE_DIR/")
fi
timed "phase: emuv.ko" make -s -C "$MODULE_DIR" KDIR="$kdir" LLVM="$LLVM_SUFFIX" modules


# On the host, as TAP: the module's copy of the ABI against include/uapi/emuv.h, NVML's struct
# layouts, and the tools' unit tests (parsers, formats, the CUDA library's tables, CDI specs).
host_tests() {
	local rc=0
	cargo test --release --locked -p emuv -p emuv-smi -p emuv-nvml -p emuv-cuda -p emuv-cudart -p emuv-ctk -p emuv-kubernetes --manifest-path "$top/Cargo.toml" \
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
timed "phase: VM tests" "$here/vm-run.sh" --kernel "$kdir" --timeout "$VM_TIMEOUT" --memory "$VM_MEMORY" --rwdir "$out" \
	--log "$out/console.log" -- env EMUV_GPU_TOOLS="$GPU_TOOLS_VENV" EMUV_CUDA_CLIENTS="$CUDA_CLIENTS_VENV" "${RUN_SIZES[@]}" \
	"$top/tests/vm/guest.sh" "$results" "$MODULE_DIR" "$top/target/release" "${PROGRAMS[@]}" \
	2> >(tee "$out/vm-run.log" >&2) || vm_ok=0
if [ $vm_ok -eq 0 ]; then
	# A dead VM or a kernel report is a failure of its own, counted with the tests; the summary
	# repeats vm-run's last words (the report) next to it.
	{
		echo "### BEGIN vm"
		tail -n 12 "$out/vm-run.log" | sed 's/^/# /'
		echo "not ok 1 the VM finished and its kernel log is clean (see $out/console.log)"
		echo "### END vm rc=1"
	} >>"$results"
fi
if ! timed "phase: VM tests (CUDA runtime, $RUNTIME_VM_MEMORY)" "$here/vm-run.sh" --kernel "$kdir" --timeout "$VM_TIMEOUT" \
	--memory "$RUNTIME_VM_MEMORY" --rwdir "$out" --log "$out/console-runtime.log" -- \
	env EMUV_GUEST_KUNIT=0 EMUV_CUDA_CLIENTS="$CUDA_CLIENTS_VENV" EMUV_TORCH="$TORCH_VENV" \
	"$top/tests/vm/guest.sh" "$results" "$MODULE_DIR" "$top/target/release" "${RUNTIME_PROGRAMS[@]}" \
	2> >(tee "$out/vm-run-runtime.log" >&2); then
	{
		echo "### BEGIN vm:runtime"
		tail -n 12 "$out/vm-run-runtime.log" | sed 's/^/# /'
		echo "not ok 1 the CUDA runtime's VM finished and its kernel log is clean (see $out/console-runtime.log)"
		echo "### END vm:runtime rc=1"
	} >>"$results"
fi
# Debian's stock kernel: the same programs, on the kernel users run.
debian_tests() {
	local vars rc=0
	wait "$debian_pid" || rc=$?
	cat "$out/debian.log" >&2
	vars=$(cat "$out/debian.vars")
	if [ $rc -eq 2 ]; then
		EXPECTED+=(debian)
		{
			echo "### VM: Debian's stock kernel: none to build for"
			echo "### BEGIN debian"
			grep -A20 'has no 7.2 kernel' "$out/debian.log" | sed 's/^\[emuv\] */# /'
			echo "ok 1 the suite on Debian's stock kernel # SKIP $(grep -m1 'has no 7.2 kernel' "$out/debian.log" | sed 's/^\[emuv\] //')"
			echo "### END debian rc=0"
		} >>"$results"
		return 0
	fi
	EXPECTED+=(debian:kunit "${PROGRAMS[@]/#/debian:}" "${RUNTIME_PROGRAMS[@]/#/debian:}" debian:package)
	[ $rc -eq 0 ] || return 1
	local DEBIAN_RELEASE DEBIAN_ROOT DEBIAN_KIMG DEBIAN_MODULE_DIR
	eval "$vars"
	# The runtime's boot first: the summary counts the package test with the boot before it.
	"$here/vm-run.sh" --kimg "$DEBIAN_KIMG" --timeout "$VM_TIMEOUT" --memory "$RUNTIME_VM_MEMORY" --rwdir "$out" \
		--log "$out/console-debian-runtime.log" -- env EMUV_GUEST_KUNIT=0 EMUV_CUDA_CLIENTS="$CUDA_CLIENTS_VENV" \
		EMUV_TORCH="$TORCH_VENV" EMUV_SECTION_PREFIX=debian: \
		"$top/tests/vm/guest.sh" "$results" "$DEBIAN_MODULE_DIR" "$top/target/release" "${RUNTIME_PROGRAMS[@]}" \
		2> >(tee -a "$out/vm-run-debian.log" >&2) || return 1
	"$here/vm-run.sh" --kimg "$DEBIAN_KIMG" --timeout "$VM_TIMEOUT" --memory "$VM_MEMORY" --rwdir "$out" \
		--log "$out/console-debian.log" -- env EMUV_GPU_TOOLS="$GPU_TOOLS_VENV" EMUV_CUDA_CLIENTS="$CUDA_CLIENTS_VENV" "${RUN_SIZES[@]}" \
		EMUV_SECTION_PREFIX=debian: \
		"$top/tests/vm/guest.sh" "$results" "$DEBIAN_MODULE_DIR" "$top/target/release" "${PROGRAMS[@]}" \
		2> >(tee -a "$out/vm-run-debian.log" >&2) || return 1
	# The package test writes its own section (debian:package), failed or not.
	timed "phase: Debian package test" "$here/debian-package.sh" test "$results" ||
		log "the package test failed: $results, section debian:package"
}
if [ "$DEBIAN" = 1 ] && ! timed "phase: Debian kernel: VM tests and package test" debian_tests; then
	{
		echo "### BEGIN debian:vm"
		tail -n 12 "$out/vm-run-debian.log" "$out/debian.log" 2>/dev/null | sed 's/^/# /'
		echo "not ok 1 Debian's kernel: prepared, booted, and its kernel log clean (see $out/console-debian.log)"
		echo "### END debian:vm rc=1"
	} >>"$results"
fi

# Real container runtimes (podman 5 from sid) on the test kernel, with the sid chroot as root.
if [ "$DEBIAN" = 1 ]; then
	EXPECTED+=(containers kubernetes)
	timed "phase: containers and Kubernetes (podman, containerd, Prometheus from the sid chroot, on the test kernel)" \
		"$here/containers.sh" "$results" containers "$kdir" "$MODULE_DIR" ||
		log "the container tests failed: $results, section containers"
fi

log "results: $results, console: $out/console.log"
log "total: $(($(date +%s) - start)) s"
"$top/target/release/ktap_summary" "$results" "${EXPECTED[@]}"
