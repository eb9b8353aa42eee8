#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Puts emuv's CUDA driver library (built by cargo as libcuda.so) where programs look for
# NVIDIA's: DIR/libcuda.so.1 and the development link DIR/libcuda.so (numba opens that one
# first). Point LD_LIBRARY_PATH at DIR (docs/cuda.md).
#
#   scripts/install-cuda.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
dir=${1:?usage: install-cuda.sh DIR}
lib=$top/target/release/libcuda.so
[ -f "$lib" ] || { echo "install-cuda: $lib not built (cargo build --release -p emuv-cuda)" >&2; exit 1; }
mkdir -p "$dir"
install -m 0755 "$lib" "$dir/libcuda.so.1"
ln -sf libcuda.so.1 "$dir/libcuda.so"
