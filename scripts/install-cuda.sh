#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Puts emuv's CUDA driver and runtime where programs look for NVIDIA's (docs/cuda.md):
# - DIR/libcuda.so.1, the driver (cargo builds it as libcuda.so), and the development link
#   DIR/libcuda.so (numba opens that one first);
# - DIR/libcudart.so.13 and DIR/libcudart.so.12, the runtime: the one archive cargo builds
#   (libemuv_cudart.a) linked once per soname, each with the symbol version node programs built
#   against NVIDIA's runtime require (cudaMalloc@libcudart.so.13) and the major version it
#   reports; DIR/libcudart.so links to .so.13 for `nvcc -cudart shared -L DIR`.
#
#   scripts/install-cuda.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
dir=${1:?usage: install-cuda.sh DIR}
lib=$top/target/release/libcuda.so
archive=$top/target/release/libemuv_cudart.a
for f in "$lib" "$archive"; do
	[ -f "$f" ] || { echo "install-cuda: $f not built (cargo build --release -p emuv-cuda -p emuv-cudart)" >&2; exit 1; }
done
mkdir -p "$dir"
install -m 0755 "$lib" "$dir/libcuda.so.1"
ln -sf libcuda.so.1 "$dir/libcuda.so"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for major in 13 12; do
	soname=libcudart.so.$major
	printf '%s {\n\tglobal: cuda*; __cuda*;\n\tlocal: *;\n};\n' "$soname" >"$tmp/$major.map"
	printf 'unsigned emuv_cudart_major(void) { return %s; }\n' "$major" >"$tmp/$major.c"
	cc -O2 -fPIC -shared -o "$tmp/$soname" -Wl,-soname,"$soname" \
		-Wl,--version-script="$tmp/$major.map" -Wl,-z,now -Wl,--gc-sections \
		"$tmp/$major.c" -Wl,--whole-archive "$archive" -Wl,--no-whole-archive \
		-lpthread -ldl -lm -lgcc_s -lc
	install -m 0755 "$tmp/$soname" "$dir/$soname"
done
ln -sf libcudart.so.13 "$dir/libcudart.so"
