#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Makes a Debian kernel's headers able to build Rust modules. Debian's kernels are built with
# CONFIG_RUST=y, but linux-headers-<release> leaves out the Rust metadata an out-of-tree Rust
# module links against (rust/*.rmeta, rust/*.so, scripts/target.json). They are regenerated
# here from Debian's own linux-source-7.2 with the headers' .config and the same rustc, which
# reproduces the kernel's Rust symbols exactly (docs/debian.md says why).
#
# Runs on the Debian system that has the kernel (as root): needs linux-headers-<release>,
# linux-source-7.2 of the same version, rustc, rust-src and bindgen (the kernel's own build
# dependencies: gcc-16 make bc flex bison libelf-dev libssl-dev openssl pahole python3).
#
#   debian-rust-metadata.sh [--cache FILE] [--by-package] [RELEASE]
#
# RELEASE defaults to the running kernel. --cache FILE: a tarball of the overlay; restored from
# when it exists, written after a build. --by-package: emuv-dkms's DKMS pre-build step is
# installing it, and purging the package removes it (what was there before is left alone).
# Exits 0 when the headers can build Rust modules (already, from the cache, or rebuilt), 2 when
# the installed rustc is not the kernel's (saying which to install), 1 on other errors.
set -euo pipefail

log() { printf '[emuv] %s\n' "$*" >&2; }
die() { printf '[emuv] ERROR: %s\n' "$*" >&2; exit "${2:-1}"; }

cache= by_package=
while [ $# -gt 0 ]; do
	case $1 in
	--cache) cache=$2; shift 2 ;;
	--by-package) by_package=1; shift ;;
	-*) die "usage: debian-rust-metadata.sh [--cache FILE] [--by-package] [RELEASE]" ;;
	*) break ;;
	esac
done
release=${1:-$(uname -r)}
headers=/usr/src/linux-headers-$release
config=$headers/.config
[ -f "$config" ] || die "no $config: install linux-headers-$release"
grep -qx 'CONFIG_RUST=y' "$config" || die "linux $release is built without CONFIG_RUST: it cannot load Rust modules"
# What the overlay consists of, relative to the headers (scripts/ is Debian's shared kbuild tree).
kbuild_scripts=$(readlink -f "$headers/scripts")
stamp=$headers/rust/.emuv-rust-metadata

config_value() { sed -n "s/^$1=\"\(.*\)\"$/\1/p" "$config"; }
want_rustc=$(config_value CONFIG_RUSTC_VERSION_TEXT)
have_rustc=$(rustc --version 2>/dev/null || echo "no rustc")
if [ "$have_rustc" != "$want_rustc" ]; then
	die "linux $release was built by \"$want_rustc\", but rustc here is \"$have_rustc\".
A Rust module must be built by exactly the kernel's rustc: install Debian's rustc $(awk '{print $2}' <<<"$want_rustc")
(apt-get install rustc=<version>, from the suite the kernel came from), or a kernel built by this rustc." 2
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_rustc" ] && [ -f "$kbuild_scripts/target.json" ]; then
	log "Rust metadata for $release: already in place"
	exit 0
fi

# install_overlay DIR: DIR holds rust/ and target.json. What goes where is listed in
# $stamp.files, so that removing emuv's package can give the headers back as shipped.
install_overlay() {
	local f
	mkdir -p "$headers/rust"
	for f in "$1"/rust/*.rmeta "$1"/rust/*.so; do
		cp "$f" "$headers/rust/" && echo "$headers/rust/$(basename "$f")"
	done >"$stamp.files"
	cp "$1/target.json" "$kbuild_scripts/target.json" && echo "$kbuild_scripts/target.json" >>"$stamp.files"
	echo "$want_rustc" >"$stamp"
	if [ -n "$by_package" ]; then touch "$stamp.package"; fi
}

if [ -n "$cache" ] && [ -f "$cache" ]; then
	tmp=$(mktemp -d)
	tar -xaf "$cache" -C "$tmp"
	install_overlay "$tmp"
	rm -rf "$tmp"
	log "Rust metadata for $release: restored from $cache"
	exit 0
fi

version=$(dpkg-query -W -f='${Version}' "linux-headers-$release" 2>/dev/null || true)
tarball=/usr/src/linux-source-7.2.tar.xz
source_version=$(dpkg-query -W -f='${Version}' linux-source-7.2 2>/dev/null || true)
[ -f "$tarball" ] || die "no $tarball: install linux-source-7.2=$version"
[ -z "$version" ] || [ "$source_version" = "$version" ] ||
	die "linux-source-7.2 is $source_version but the headers are $version: install linux-source-7.2=$version"
command -v bindgen >/dev/null || die "no bindgen: install bindgen"

# The compiler the kernel was built with, from its .config (x86_64-linux-gnu-gcc-16 ...).
cc=$(config_value CONFIG_CC_VERSION_TEXT | awk '{print $1}')
command -v "$cc" >/dev/null || die "the kernel was built with $cc, which is not installed"
work=$(mktemp -d /tmp/emuv-rust-metadata.XXXXXX)
trap 'rm -rf "$work"' EXIT
log "Rust metadata for $release: unpacking linux-source-7.2 $source_version"
mkdir -p "$work/src" "$work/out"
tar -xaf "$tarball" -C "$work/src" --strip-components=1
cp "$config" "$work/out/.config"
kmake() {
	make -s -C "$work/src" O="$work/out" ARCH=x86 CROSS_COMPILE="${cc%gcc*}" CC="$cc" \
		KERNELRELEASE="$release" "$@"
}
kmake olddefconfig >/dev/null
# A .config that olddefconfig changes means a different toolchain than the kernel's: the
# metadata would not match it.
cmp -s "$config" "$work/out/.config" ||
	die "olddefconfig changed linux $release's .config (a different compiler or tool than the kernel's?): $(diff "$config" "$work/out/.config" | head -n 6 | tr '\n' ' ')"
log "Rust metadata for $release: make prepare with $(nproc) jobs (about 90 s on 2 cores)"
kmake -j"$(nproc)" prepare >/dev/null
mkdir -p "$work/overlay/rust"
cp "$work"/out/rust/*.rmeta "$work"/out/rust/*.so "$work/overlay/rust/"
cp "$work/out/scripts/target.json" "$work/overlay/target.json"
install_overlay "$work/overlay"
if [ -n "$cache" ]; then
	mkdir -p "$(dirname "$cache")"
	tar -C "$work/overlay" --zstd -cf "$cache.tmp" rust target.json && mv "$cache.tmp" "$cache"
	log "Rust metadata for $release: cached in $cache ($(du -h "$cache" | cut -f1))"
fi
log "Rust metadata for $release: installed into $headers"
