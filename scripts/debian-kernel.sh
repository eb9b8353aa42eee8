#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Debian's stock Rust-enabled kernel, ready to build and test emuv against, on a Debian 12
# host (as root). Debian 12's libc is too old for sid's rustc, so everything Debian-kernel
# happens in a cached sid (or $EMUV_DEBIAN_SUITE) chroot:
#
#  1. the chroot (debootstrap, once);
#  2. the kernel: the newest 7.2 release in the suite whose recorded rustc
#     (CONFIG_RUSTC_VERSION_TEXT) the suite can install;
#  3. its headers, linux-source-7.2 and that rustc installed in the chroot, and the Rust metadata
#     the headers lack regenerated (scripts/debian-rust-metadata.sh), cached per release;
#  4. the kernel image and modules unpacked from linux-image-<release>, for the VM;
#  5. emuv.ko built against the headers, into target/kernel-debian/.
#
# Prints shell assignments on stdout (DEBIAN_RELEASE, DEBIAN_ROOT, DEBIAN_KIMG,
# DEBIAN_MODULE_DIR). Exits 2, saying why, when the suite has no kernel it can build for (the
# caller reports the Debian part skipped); 1 on errors. A warm run takes seconds: the package
# lists are refreshed at most every 6 hours.
#
#   scripts/debian-kernel.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

suite=${EMUV_DEBIAN_SUITE:-sid}
base=$EMUV_CACHE/debian
root=$base/$suite-root
module_dir=$top/target/kernel-debian
# What the chroot needs: the kernel's build dependencies (gcc-N is added once the kernel says
# which), the Rust toolchain (pinned below), and emuv-dkms's other dependencies, so that the
# package test's install and purge add and remove emuv's files only.
CHROOT_PACKAGES=(make bc flex bison libelf-dev libssl-dev openssl kmod cpio pahole xz-utils zstd
	rsync python3 binutils ca-certificates dkms udev)

# in_root CMD...: runs CMD in the chroot with /proc, /sys and /dev, in a mount namespace of its
# own so nothing stays mounted when it ends.
in_root() {
	unshare --mount --propagation private -- sh -c '
		root=$1; shift
		mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" &&
			mount --rbind /dev "$root/dev" && mkdir -p "$root/var/cache/emuv" &&
			mount --bind "$EMUV_DEBIAN_BASE" "$root/var/cache/emuv" || exit 1
		exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
			DEBIAN_FRONTEND=noninteractive "$@"' sh "$root" "$@"
}
export EMUV_DEBIAN_BASE=$base

step_chroot() {
	if [ -f "$root/.emuv-root-ok" ]; then
		skip "Debian $suite chroot"; return
	fi
	command -v debootstrap >/dev/null || {
		log "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
			die "apt-get install debootstrap failed"
	}
	local mirror
	mirror=$(debian_mirror)
	log "Debian $suite chroot: debootstrap from $mirror (about 30 s)"
	rm -rf "$root" && mkdir -p "$base"
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$base/debootstrap.log" 2>&1 ||
		die "debootstrap $suite failed (see $base/debootstrap.log)"
	# The suite's Release file can be past its Valid-Until (seen on the mirror); dpkg's fsync
	# per file quadruples install times and buys nothing in a throw-away chroot.
	cat >"$root/etc/apt/apt.conf.d/90emuv" <<-EOF
		Acquire::Check-Valid-Until "false";
		APT::Install-Recommends "false";
		Acquire::Languages "none";
	EOF
	echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/90emuv-unsafe-io"
	touch "$root/.emuv-root-ok"
}

step_update() {
	local lists=$root/var/lib/apt/lists
	if [ -n "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then
		skip "Debian $suite package lists (less than 6 hours old)"; return
	fi
	log "Debian $suite: apt-get update"
	in_root apt-get update -qq >&2 || die "apt-get update in the $suite chroot failed"
}

# The 7.2 kernel releases the suite has, newest first, as "release version" lines.
kernel_candidates() {
	in_root apt-cache search --names-only '^linux-headers-7\.2\.[0-9]+\+deb[0-9]+-amd64$' | awk '{print $1}' |
		sed 's/^linux-headers-//' | sort -rV | while read -r rel; do
		echo "$rel $(in_root apt-cache show --no-all-versions "linux-headers-$rel" | awk '/^Version:/ {print $2; exit}')"
	done
}

# pick: sets release, version, rustc_version (Debian's) and cc for the newest kernel whose
# rustc the suite has; exits 2 with the reasons when none.
pick() {
	local rel ver text want rv reasons=() debs=$base/debs
	mkdir -p "$debs"
	local rustc_versions
	rustc_versions=$(in_root apt-cache madison rustc | awk -F'|' '{gsub(/ /, "", $2); print $2}')
	[ -n "$rustc_versions" ] || { log "Debian $suite has no rustc package"; exit 2; }
	while read -r rel ver; do
		[ -n "$rel" ] || continue
		local deb=$debs/linux-headers-${rel}_$ver.config
		if [ ! -f "$deb" ]; then
			in_root sh -c "cd /var/cache/emuv/debs && apt-get -o APT::Sandbox::User=root download -qq linux-headers-$rel=$ver" >&2 ||
				{ reasons+=("$rel: download of its headers failed"); continue; }
			dpkg-deb --fsys-tarfile "$debs/linux-headers-${rel}_${ver//:/%3a}_amd64.deb" |
				tar -xO "./usr/src/linux-headers-$rel/.config" >"$deb.tmp" && mv "$deb.tmp" "$deb"
			rm -f "$debs/linux-headers-${rel}_"*.deb
		fi
		text=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$deb")
		[ -n "$text" ] || { reasons+=("$rel: built without CONFIG_RUST"); continue; }
		want=$(awk '{print $2}' <<<"$text")
		rv=$(grep -E "^${want//./\\.}(\+|-)" <<<"$rustc_versions" | head -n1 || true)
		if [ -z "$rv" ]; then
			reasons+=("$rel ($ver) needs \"$text\"; $suite has rustc $(tr '\n' ' ' <<<"$rustc_versions")")
			continue
		fi
		if ! in_root apt-cache madison linux-source-7.2 | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$ver"; then
			reasons+=("$rel ($ver): $suite has no linux-source-7.2 $ver")
			continue
		fi
		release=$rel version=$ver rustc_version=$rv
		cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*/\1/p' "$deb")
		return 0
	done < <(kernel_candidates)
	log "Debian $suite has no 7.2 kernel whose rustc it can install:"
	printf '[emuv]   %s\n' "${reasons[@]:-no linux-headers-7.2.*-amd64 at all}" >&2
	exit 2
}

step_packages() {
	local stamp=$root/.emuv-packages-v2-$release
	if [ -f "$stamp" ]; then
		skip "Debian $suite packages for $release"; return
	fi
	# x86_64-linux-gnu-gcc-16 comes from gcc-16.
	local gcc_pkg=${cc#x86_64-linux-gnu-}
	log "Debian $suite: installing linux-headers-$release, linux-source-7.2 $version, rustc $rustc_version, $gcc_pkg and build tools"
	in_root apt-get install -y -qq "${CHROOT_PACKAGES[@]}" "$gcc_pkg" bindgen \
		"rustc=$rustc_version" "rust-src=$rustc_version" \
		"linux-headers-$release=$version" "linux-source-7.2=$version" >"$base/apt-install.log" 2>&1 ||
		{ tail -n 20 "$base/apt-install.log" >&2; die "apt-get install in the $suite chroot failed"; }
	# DKMS makes its signing key on first use: made here, it is not something a package left.
	in_root dkms generate_mok >/dev/null || die "dkms generate_mok failed"
	touch "$stamp"
}

step_metadata() {
	cp "$here/debian-rust-metadata.sh" "$root/usr/local/sbin/"
	in_root /usr/local/sbin/debian-rust-metadata.sh --cache "/var/cache/emuv/overlay/$release.tar.zst" "$release" ||
		exit $?
}

# Debian's vmlinuz and modules, unpacked (not installed: no initramfs or bootloader hooks run)
# into the chroot, where virtme-ng finds the modules its guest needs (9p, virtio: =m there).
step_kernel_image() {
	local stamp=$root/.emuv-image-$release
	if [ -f "$stamp" ]; then
		skip "Debian kernel image $release"; return
	fi
	log "Debian $suite: unpacking linux-image-$release $version"
	local pkg debs=$base/debs
	rm -f "$debs"/linux-image-*.deb
	in_root sh -c "cd /var/cache/emuv/debs && apt-get -o APT::Sandbox::User=root download -qq linux-image-$release=$version" >&2 ||
		die "download of linux-image-$release failed"
	pkg=$(ls "$debs"/linux-image-"$release"_*.deb)
	# The image may sit in a dependency (linux-binary-<release>) rather than in the package itself.
	if ! dpkg-deb -c "$pkg" | grep -q "/vmlinuz"; then
		local dep
		for dep in $(dpkg-deb -f "$pkg" Depends | tr ',' '\n' | awk '{print $1}' | grep -E "^linux-(binary|image|modules)-"); do
			in_root sh -c "cd /var/cache/emuv/debs && apt-get -o APT::Sandbox::User=root download -qq $dep" >&2 || die "download of $dep failed"
		done
	fi
	for pkg in "$debs"/linux-{image,binary,modules}-"$release"*.deb; do
		[ -f "$pkg" ] && dpkg-deb -x "$pkg" "$root"
	done
	rm -f "$debs"/linux-{image,binary,modules}-*.deb
	[ -f "$root/usr/lib/modules/$release/vmlinuz" ] || [ -f "$root/boot/vmlinuz-$release" ] ||
		die "no vmlinuz for $release in its packages"
	in_root depmod "$release"
	touch "$stamp"
}

step_build_emuv() {
	rm -rf "$root/build/emuv" && mkdir -p "$root/build/emuv" "$module_dir"
	(cd "$top" && cp -pr Kbuild Makefile ./*.rs glue include "$root/build/emuv/")
	# Debian's kernel is built with gcc: LLVM= (empty), as its .config says.
	in_root make -s -C "/usr/src/linux-headers-$release" M=/build/emuv modules >&2 ||
		die "building emuv.ko against linux-headers-$release failed"
	cp "$root"/build/emuv/*.ko "$module_dir/"
	log "emuv.ko for Debian's $release in $module_dir"
}

main() {
	[ "$(id -u)" = 0 ] || die "debian-kernel.sh must run as root (debootstrap, chroot)"
	timed "debian: chroot" step_chroot
	timed "debian: package lists" step_update
	local release version rustc_version cc
	pick
	log "Debian kernel: $release ($version), built by rustc $rustc_version and $cc"
	timed "debian: packages" step_packages
	# The image is mostly a download: it comes while make prepare compiles.
	timed "debian: kernel image" step_kernel_image &
	local image_pid=$!
	timed "debian: Rust metadata" step_metadata
	wait "$image_pid" || die "the kernel image could not be unpacked (above)"
	timed "debian: emuv.ko" step_build_emuv
	local kimg=$root/usr/lib/modules/$release/vmlinuz
	[ -f "$kimg" ] || kimg=$root/boot/vmlinuz-$release
	printf 'DEBIAN_RELEASE=%q\nDEBIAN_ROOT=%q\nDEBIAN_KIMG=%q\nDEBIAN_MODULE_DIR=%q\n' \
		"$release" "$root" "$kimg" "$module_dir"
}
main "$@"
