#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds the test kernel (bzImage + modules, so Module.symvers exists) once, and caches it
# outside the checkout under a key made of the kernel version, the config fragment and the
# toolchain versions. Prints the build directory on stdout.
#
#   scripts/build-kernel.sh [FRAGMENT...]   default: tests/vm/kernel.config
# The cache directory is named after the last fragment (kernel-KEY, debug-KEY).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

fragments=("$@")
[ ${#fragments[@]} -gt 0 ] || fragments=("$top/tests/vm/kernel.config")
[ -f "$KSRC/.emuv-source-ok" ] || die "no kernel source in $KSRC: run scripts/setup.sh first"

# A module must be built by the same rustc as its kernel, so the toolchain is part of the key.
key_input() {
	cat "$KSRC/.emuv-source-ok" "${fragments[@]}"
	rustc --version
	bindgen --version
	"clang$LLVM_SUFFIX" --version | head -n1
}
key=$(key_input | sha256sum | cut -c1-16)
name=$(basename "${fragments[-1]}" .config)
out="$EMUV_CACHE/kernel/$name-$key"

if [ -f "$out/.emuv-build-ok" ]; then
	log "kernel: cached build $out"
	echo "$out"
	exit 0
fi

# Built in place: kbuild records absolute paths, and an interrupted build resumes where it stopped.
tmp=$out
mkdir -p "$tmp"
kmake() { make -s -C "$KSRC" O="$tmp" LLVM="$LLVM_SUFFIX" "$@"; }

log "kernel: configuring $name (key $key)"
rm -f "$tmp/.config"
kmake tinyconfig >/dev/null
"$KSRC/scripts/kconfig/merge_config.sh" -m -O "$tmp" "$tmp/.config" "${fragments[@]}" >/dev/null
kmake olddefconfig >/dev/null

# merge_config.sh silently drops options whose dependencies are missing: refuse that.
missing=()
while IFS= read -r line; do
	case $line in
	CONFIG_*=n) opt=${line%%=*}; grep -q "^$opt=" "$tmp/.config" && missing+=("$line") ;;
	CONFIG_*=*) grep -qx "$line" "$tmp/.config" || missing+=("$line") ;;
	esac
done < <(cat "${fragments[@]}")
[ ${#missing[@]} -eq 0 ] || die "kernel config lost options (unmet dependencies?): ${missing[*]}"

log "kernel: building bzImage and modules with $(nproc) jobs (about 11 minutes on 2 cores)"
kmake -j"$(nproc)" bzImage modules >&2 || die "kernel build failed (see the output above)"
touch "$out/.emuv-build-ok"
log "kernel: built $out"
echo "$out"
