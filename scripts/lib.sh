# SPDX-License-Identifier: GPL-2.0
# Shared settings and helpers for emuv's scripts. Sourced, not run.

# Pinned tool versions: the kernel needs bindgen >= 0.71.1.
BINDGEN_VERSION=0.73.2
VIRTME_NG_VERSION=1.42
KERNEL_SOURCE_PACKAGE=linux-source-7.2
LLVM_SUFFIX=-19

# Everything big lives outside the checkout, so a fresh clone reuses it.
EMUV_CACHE=${EMUV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emuv}
KSRC=$EMUV_CACHE/linux-7.2
VENV=$EMUV_CACHE/venv
# pynvml, gpustat and nvitop, which the tests run against emuv (tests/gpu-tools/).
GPU_TOOLS_VENV=$EMUV_CACHE/gpu-tools
# The CUDA clients (cuda-python, numba-cuda) the CUDA tests run against emuv's libcuda.so.1.
CUDA_CLIENTS_VENV=$EMUV_CACHE/cuda-clients
# NVIDIA's CUDA 13 compiler (nvcc) from its wheels, for the CUDA C programs the runtime tests build.
NVCC_VENV=$EMUV_CACHE/cuda-nvcc
# PyTorch's CUDA 13 wheel and what libtorch_cuda.so loads, run unchanged on emuv's runtime.
TORCH_VENV=$EMUV_CACHE/torch

export PATH="$HOME/.cargo/bin:$VENV/bin:$PATH"
export LIBCLANG_PATH=/usr/lib/llvm${LLVM_SUFFIX}/lib

log() { printf '[emuv] %s\n' "$*" >&2; }
skip() { log "$1: already done"; }
die() { printf '[emuv] ERROR: %s\n' "$*" >&2; exit 1; }

# The mirror comes from the system's own apt configuration; only the suite is ours.
debian_mirror() {
	local uri
	uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
	[ -n "$uri" ] || uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | grep -v security | awk '{for(i=2;i<=NF;i++) if ($i ~ /:\/\//) {print $i; exit}}' | head -n1)
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
	echo "$uri"
}

# timed LABEL CMD...: runs CMD and prints how long it took, for the per-phase timings.
timed() {
	local label=$1 start rc=0
	shift
	start=$(date +%s)
	"$@" || rc=$?
	log "$label: $(($(date +%s) - start)) s$([ $rc -eq 0 ] || echo " (failed, exit $rc)")"
	return $rc
}

# prepare TOP: set-up, the test kernel (cached) and emuv.ko built against it; prints the
# kernel's build directory.
prepare() {
	local top=$1 dir
	"$(dirname "${BASH_SOURCE[0]}")/setup.sh" >&2
	dir=$("$(dirname "${BASH_SOURCE[0]}")/build-kernel.sh")
	make -s -C "$top" KDIR="$dir" LLVM="$LLVM_SUFFIX" modules >&2
	echo "$dir"
}
