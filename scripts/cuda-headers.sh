#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetches the CUDA headers emuv's CUDA driver and runtime are built against: the include/ of
# each NVIDIA wheel pinned in tools/cuda/headers.txt (CUDA 13) and tools/cudart/headers.txt (CUDA
# 12's runtime headers, CUDA 13's crt/), each unpacked once into the cache as
# cuda-headers/NAME-VERSION/include (the first, CUDA 13's runtime wheel, as VERSION/include), never
# into the checkout. pip finds its index through the machine's own
# configuration. Prints the CUDA 13 include directory.
#
#   scripts/cuda-headers.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# The include directory of one pin (name==version), fetched when missing.
fetch() {
	local pin=$1 dir=$2
	if [ ! -d "$dir/include" ]; then
		pip=$(command -v pip3 || true)
		[ -x "$VENV/bin/pip" ] && pip=$VENV/bin/pip
		[ -n "$pip" ] || die "cuda-headers: no pip (run make setup)"
		tmp=$(mktemp -d)
		log "fetching the CUDA headers ($pin)"
		"$pip" download -q --no-deps --only-binary=:all: -d "$tmp" "$pin" >&2 ||
			die "cuda-headers: pip download $pin failed"
		mkdir -p "$tmp/x"
		python3 -m zipfile -e "$tmp"/*.whl "$tmp/x" ||
			die "cuda-headers: unpacking the wheel failed"
		inc=$(find "$tmp/x" -type d -name include | head -n1)
		[ -n "$inc" ] || die "cuda-headers: no include/ in $pin"
		rm -rf "$dir"
		mkdir -p "$dir"
		cp -r "$inc" "$dir/include"
		rm -rf "$tmp"
	fi
	echo "$dir/include"
}

pin13=$(grep -v '^#' "$here/../tools/cuda/headers.txt" | head -n1)
grep -v '^#' "$here/../tools/cudart/headers.txt" | while read -r pin; do
	[ -n "$pin" ] && fetch "$pin" "$EMUV_CACHE/cuda-headers/${pin%%==*}-${pin#*==}" >/dev/null
done
fetch "$pin13" "$EMUV_CACHE/cuda-headers/${pin13#*==}"
