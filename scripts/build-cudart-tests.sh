#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the programs tests/src/bin/emuv_cudart.rs runs on emuv's CUDA runtime, into DIR:
# runtime_suite (tests/cudart/runtime_suite.cu) with NVIDIA's nvcc from its wheels and
# `-cudart shared`, linked against emuv's libcudart.so in target/cuda, gcc as host compiler;
# runtime12 against CUDA 12's headers and emuv's libcudart.so.12; nvidia_runtime, which loads
# NVIDIA's own runtime. Needs make setup (the nvcc venv, the headers) and scripts/install-cuda.sh.
#
#   scripts/build-cudart-tests.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
. "$here/lib.sh"
dir=${1:?usage: build-cudart-tests.sh DIR}
cu13=$(echo "$NVCC_VENV"/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cu13/bin/nvcc" ] || die "build-cudart-tests: no nvcc in $NVCC_VENV (run make setup)"
headers=$EMUV_CACHE/cuda-headers
mkdir -p "$dir"
PATH=$cu13/bin:$PATH nvcc -cudart shared -arch=sm_89 -ccbin gcc -O2 \
	-L "$top/target/cuda" -L "$cu13/lib" -o "$dir/runtime_suite" "$top/tests/cudart/runtime_suite.cu"
gcc -Wall -Wextra -Werror -O2 -I "$headers/nvidia-cuda-runtime-cu12-12.9.79/include" \
	-I "$headers/nvidia-cuda-crt-13.0.88/include" -o "$dir/runtime12" "$top/tests/cudart/runtime12.c" \
	-L "$top/target/cuda" -l:libcudart.so.12
gcc -Wall -Wextra -Werror -O2 -o "$dir/nvidia_runtime" "$top/tests/cudart/nvidia_runtime.c" -ldl
