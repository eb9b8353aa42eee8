#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Fetches the CUDA headers emuv's CUDA driver is built against: the include/ of NVIDIA's
# nvidia-cuda-runtime wheel pinned in tools/cuda/headers.txt, unpacked once into the cache
# (never into the checkout). pip finds its index through the machine's own configuration.
# Prints the include directory.
#
#   scripts/cuda-headers.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
pin=$(grep -v '^#' "$here/../tools/cuda/headers.txt" | head -n1)
version=${pin#*==}
dir=$EMUV_CACHE/cuda-headers/$version
if [ ! -f "$dir/include/cuda.h" ]; then
	pip=$(command -v pip3 || true)
	[ -x "$VENV/bin/pip" ] && pip=$VENV/bin/pip
	[ -n "$pip" ] || die "cuda-headers: no pip (run make setup)"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	log "fetching the CUDA headers ($pin)"
	"$pip" download -q --no-deps --only-binary=:all: -d "$tmp" "$pin" >&2 ||
		die "cuda-headers: pip download $pin failed"
	mkdir -p "$tmp/x"
	python3 -m zipfile -e "$tmp"/*.whl "$tmp/x" ||
		die "cuda-headers: unpacking the wheel failed"
	inc=$(find "$tmp/x" -name cuda.h -path '*include*' -printf '%h\n' | head -n1)
	[ -n "$inc" ] || die "cuda-headers: no include/cuda.h in $pin"
	rm -rf "$dir"
	mkdir -p "$dir"
	cp -r "$inc" "$dir/include"
fi
echo "$dir/include"
