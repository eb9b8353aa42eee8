#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The emuv-dkms Debian package (debian/: dh, dh-dkms).
#
#   scripts/debian-package.sh build          `make deb`: target/deb/emuv-dkms_<version>_amd64.deb
#   scripts/debian-package.sh test RESULTS   the package test, as TAP in section debian:package
#
# The test installs the package into the Debian chroot of scripts/debian-kernel.sh (DKMS builds
# emuv.ko there), boots Debian's kernel with that chroot as its root, and checks in the guest:
# `modprobe emuv` takes /etc/modprobe.d/emuv.conf's options, udev gives /dev/emuv to the group
# emuv, a member of it allocates, a user outside it gets EACCES, the tools run. Back on the host,
# `apt-get purge` must leave nothing behind (compared file by file with the chroot before the
# install).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

build() {
	local pkgs=(debhelper dh-dkms dpkg-dev) missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
			die "apt-get install ${missing[*]} failed"
	fi
	"$here/cuda-headers.sh" >/dev/null
	cargo build --quiet --release --locked -p emuv-smi -p emuv-ctk -p emuv-nvml -p emuv-cuda -p emuv-cudart -p emuv-kubernetes --manifest-path "$top/Cargo.toml" ||
		die "building emuv-smi, emuv-ctk, the NVML, CUDA driver and runtime libraries, the device plugin and the exporter failed"
	# dpkg-buildpackage writes next to the source tree: build from a copy in a directory of ours.
	local work
	work=$(mktemp -d /tmp/emuv-deb.XXXXXX)
	mkdir -p "$work/emuv/target/release" "$work/emuv/tools/emuv-run"
	"$here/install-cuda.sh" "$work/emuv/target/cuda"
	(cd "$top" && cp -pr Kbuild Makefile ./*.rs glue include emuv.conf debian LICENSE "$work/emuv/" &&
		cp -p tools/emuv-run/emuv-run "$work/emuv/tools/emuv-run/" &&
		mkdir -p "$work/emuv/scripts" && cp -p scripts/debian-rust-metadata.sh "$work/emuv/scripts/" &&
		cp -p target/release/emuv-smi target/release/emuv-ctk target/release/libnvidia_ml.so \
			target/release/emuv-device-plugin target/release/emuv-exporter "$work/emuv/target/release/")
	(cd "$work/emuv" && dpkg-buildpackage -b -uc -us >"$work/build.log" 2>&1) ||
		{ tail -n 30 "$work/build.log" >&2; die "dpkg-buildpackage failed (log: $work/build.log)"; }
	mkdir -p "$top/target/deb"
	rm -f "$top"/target/deb/*.deb
	cp "$work"/*.deb "$top/target/deb/"
	rm -rf "$work"
	ls "$top"/target/deb/*.deb
}

# What a package may leave changed in the chroot without leaving anything of its own behind:
# apt's and dpkg's state and logs, shadow's backup files.
snapshot() {
	(cd "$1" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp -o -path ./run \
		-o -path ./var/cache -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/log \
		-o -path ./build -o -path ./root \) -prune -o -print | grep -vE '^\./etc/(passwd|group|shadow|gshadow|subuid|subgid)-$' |
		sort)
}

# CMD... run as root in the Debian chroot ROOT, with /proc, /sys and /dev.
in_chroot() {
	local root=$1
	shift
	unshare --mount --propagation private -- sh -c '
		root=$1; shift
		mount -t proc proc "$root/proc" && mount --rbind /sys "$root/sys" && mount --rbind /dev "$root/dev" &&
		exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
			DEBIAN_FRONTEND=noninteractive "$@"' sh "$root" "$@"
}

test_package() {
	local results=$1 vars deb
	vars=$("$here/debian-kernel.sh") || return $?
	local DEBIAN_RELEASE DEBIAN_ROOT DEBIAN_KIMG DEBIAN_MODULE_DIR
	eval "$vars"
	deb=$(build | tail -n1)
	local root=$DEBIAN_ROOT pkgtest=$DEBIAN_ROOT/tmp/emuv-pkgtest
	rm -rf "$pkgtest" && mkdir -p "$pkgtest"
	cp "$deb" "$pkgtest/"
	# A program that allocates emulated VRAM: the C example, built on the host.
	cc -O2 -I "$top/include" -o "$pkgtest/vram_fill" "$top/examples/vram_fill.c"
	# Fixtures, made before the snapshot: the two test users, and udev without hardware module
	# autoloading (under TCG, coldplug loading Debian's modules for QEMU's devices kept udev
	# busy for minutes, so emuv's own event waited behind them).
	# The module indexes are written by the chroot's own depmod first, as DKMS's will be (sid's
	# kmod adds modules.weakdep, which the host's depmod does not write).
	# virtme-ng's init bind-mounts its own /etc/sudoers, creating the mount point in a rw root.
	# A run cut short may have left the package installed: it goes first.
	in_chroot "$root" sh -c 'getent passwd emuv-member >/dev/null || useradd -M emuv-member
		getent passwd emuv-outsider >/dev/null || useradd -M emuv-outsider
		depmod "$1" && dpkg --configure -a && { ! dpkg -s emuv-dkms >/dev/null 2>&1 || apt-get purge -y -qq emuv-dkms >/dev/null; }' sh "$DEBIAN_RELEASE" ||
		die "preparing the chroot for the package test failed"
	[ -e "$root/etc/sudoers" ] || : >"$root/etc/sudoers"
	# The headers go back to what Debian ships, without the Rust metadata debian-kernel.sh put
	# there: DKMS's pre-build step must regenerate it as on a user's system, and purge must take
	# it away again. debian-kernel.sh restores it from its cache afterwards.
	local stamp=/usr/src/linux-headers-$DEBIAN_RELEASE/rust/.emuv-rust-metadata
	if [ -f "$root$stamp.files" ]; then
		in_chroot "$root" sh -c 'xargs -r rm -f <"$1.files" && rm -f "$1.files" "$1" "$1.package" &&
			rmdir --ignore-fail-on-non-empty "$(dirname "$1")"' sh "$stamp" ||
			die "taking the harness's Rust metadata out of the chroot failed"
	fi
	mkdir -p "$root/etc/udev/rules.d"
	ln -sfn /dev/null "$root/etc/udev/rules.d/80-drivers.rules"
	snapshot "$root" >"$pkgtest/before.txt"
	{
		echo "### BEGIN debian:package"
		echo "1..12"
	} >>"$results"
	local rc=0
	log "debian package: installing $(basename "$deb") into the $DEBIAN_RELEASE chroot (DKMS regenerates the Rust metadata and builds emuv.ko)"
	if in_chroot "$root" apt-get install -y "/tmp/emuv-pkgtest/$(basename "$deb")" >"$pkgtest/install.log" 2>&1 &&
		in_chroot "$root" usermod -aG emuv emuv-member >>"$pkgtest/install.log" 2>&1; then
		echo "ok 1 apt-get install emuv-dkms (DKMS's pre-build regenerates the Rust metadata, DKMS builds emuv.ko); emuv-member joins the group emuv" >>"$results"
	else
		{ tail -n 30 "$pkgtest/install.log" | sed 's/^/# /'; echo "not ok 1 apt-get install emuv-dkms"; } >>"$results"
		rc=1
	fi
	# The administrator's choice of card, which `modprobe emuv` must take.
	sed -i 's/gpu_model=4070/gpu_model=4090/' "$root/etc/modprobe.d/emuv.conf"
	# The guest only reads: a 9p root refuses the link() that shadow's tools lock /etc with.
	cat >"$pkgtest/guest.sh" <<-'GUEST'
		#!/bin/sh
		# In Debian's kernel, root = the chroot with emuv-dkms installed. TAP lines 2..9, marked.
		rel=$(uname -r) n=1
		t() { # NAME CMD...: one TAP line for CMD's success
			name=$1; shift
			n=$((n + 1))
			if out=$("$@" 2>&1); then echo "PKGTAP ok $n $name"; else
				echo "$out" | sed 's/^/PKGTAP # /'; echo "PKGTAP not ok $n $name"; fi
		}
		t "modprobe emuv loads DKMS's emuv.ko for $rel with /etc/modprobe.d/emuv.conf's gpu_model=4090" \
			sh -c 'modinfo -F filename emuv | grep /updates/dkms/emuv.ko && modprobe emuv &&
				grep -x "NVIDIA GeForce RTX 4090" /sys/class/emuv/emuv/gpu_name'
		udevadm settle --timeout=120 2>/dev/null
		t "udev gives /dev/emuv to the group emuv, mode 0660" \
			sh -c 'test "$(stat -c "%G %a" /dev/emuv)" = "emuv 660" || { stat -c "%G %a" /dev/emuv; false; }'
		t "a member of the group emuv allocates emulated VRAM" \
			setpriv --reuid=emuv-member --regid=emuv-member --init-groups /tmp/emuv-pkgtest/vram_fill 16
		t "a user outside the group gets EACCES" sh -c '
			out=$(setpriv --reuid=emuv-outsider --regid=emuv-outsider --init-groups /tmp/emuv-pkgtest/vram_fill 16 2>&1)
			echo "$out"; echo "$out" | grep -q "Permission denied"'
		t "emuv-smi and emuv-nvml run for a member; libnvidia-ml.so.1 is not on ld.so's path" sh -c '
			setpriv --reuid=emuv-member --regid=emuv-member --init-groups emuv-smi -L | grep "RTX 4090" &&
			emuv-nvml sh -c "test -f /usr/lib/x86_64-linux-gnu/emuv/libnvidia-ml.so.1 && echo \$LD_LIBRARY_PATH" | grep emuv &&
			! ldconfig -p | grep libnvidia-ml'
		t "emuv-run: a member gets the CUDA runtime (13.0) and driver of emuv, neither on the path of ld.so" sh -c '
			setpriv --reuid=emuv-member --regid=emuv-member --init-groups emuv-run python3 -c "import ctypes
rt = ctypes.CDLL(\"libcudart.so.13\"); v, n, p = ctypes.c_int(), ctypes.c_int(), ctypes.c_void_p()
codes = (rt.cudaRuntimeGetVersion(ctypes.byref(v)), rt.cudaGetDeviceCount(ctypes.byref(n)), rt.cudaMalloc(ctypes.byref(p), 1 << 20), rt.cudaFree(p))
print(codes, v.value, n.value)
assert codes == (0, 0, 0, 0) and v.value == 13000 and n.value == 1, codes" &&
			! ldconfig -p | grep -E "libcuda\.|libcudart"'
		t "udev keeps /var/run/cdi/emuv.json current: one card, a configfs card added, then removed" sh -c '
			cards() { python3 -c "import json; print((len(json.load(open(\"/var/run/cdi/emuv.json\"))[\"devices\"]) - 1) // 2)"; }
			mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
			test "$(cards)" = 1 || { echo "after modprobe: $(cards) cards"; exit 1; }
			mkdir /sys/kernel/config/emuv/pkgtest && echo 256 >/sys/kernel/config/emuv/pkgtest/physical_vram_mb &&
				echo 1 >/sys/kernel/config/emuv/pkgtest/enabled && udevadm settle --timeout=60
			test "$(cards)" = 2 || { echo "with the configfs card: $(cards) cards"; exit 1; }
			echo 0 >/sys/kernel/config/emuv/pkgtest/enabled && rmdir /sys/kernel/config/emuv/pkgtest && udevadm settle --timeout=60
			test "$(cards)" = 1 || { echo "after removing it: $(cards) cards"; exit 1; }'
		# Loopback up (virtme-ng leaves it down) without iproute2: SIOCGIFFLAGS, SIOCSIFFLAGS.
		python3 -c 'import fcntl, socket, struct
s = socket.socket(); ifr = fcntl.ioctl(s, 0x8913, struct.pack("16sH14x", b"lo", 0))
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", struct.unpack("16sH14x", ifr)[1] | 1))'
		t "the Kubernetes services: units installed, not enabled; emuv-exporter serves the card in dcgm-exporter format; emuv-device-plugin serves its socket and leaves on SIGTERM" sh -c '
			for unit in emuv-device-plugin emuv-exporter; do
				test -f /usr/lib/systemd/system/$unit.service || { echo "no $unit.service"; exit 1; }
				! test -e /etc/systemd/system/multi-user.target.wants/$unit.service || { echo "$unit enabled"; exit 1; }
			done
			emuv-exporter --address 127.0.0.1:9400 & exporter=$!
			metrics=$(python3 -c "import time, urllib.request
for _ in range(100):
    try: print(urllib.request.urlopen(\"http://127.0.0.1:9400/metrics\").read().decode()); break
    except OSError: time.sleep(0.1)")
			kill $exporter
			echo "$metrics" | grep "^DCGM_FI_DEV_FB_USED{.*modelName=\"NVIDIA GeForce RTX 4090\"" || { echo "$metrics" | head; exit 1; }
			mkdir -p /tmp/emuv-plugins && { mountpoint -q /tmp/emuv-plugins || mount -t tmpfs tmpfs /tmp/emuv-plugins; }
			emuv-device-plugin --plugin-dir /tmp/emuv-plugins --kubelet-socket "" & plugin=$!
			for _ in $(seq 50); do test -S /tmp/emuv-plugins/emuv-nvidia.com-gpu.sock && break; sleep 0.1; done
			test -S /tmp/emuv-plugins/emuv-nvidia.com-gpu.sock || { echo "no plugin socket"; exit 1; }
			kill $plugin && wait $plugin && ! test -e /tmp/emuv-plugins/emuv-nvidia.com-gpu.sock'
		rmmod emuv
	GUEST
	chmod +x "$pkgtest/guest.sh"
	log "debian package: booting $DEBIAN_RELEASE with the chroot as root"
	local vm_rc=0
	"$here/vm-run.sh" --kimg "$DEBIAN_KIMG" --root "$root" --timeout 900 --memory 1G \
		--log "$pkgtest/console.log" -- /tmp/emuv-pkgtest/guest.sh 2>"$pkgtest/vm-run.log" || vm_rc=$?
	# The guest's lines, from the console log (a 9p root does not carry the guest's stdout).
	local guest_tap
	guest_tap=$(sed -n 's/^.*PKGTAP //p' "$pkgtest/console.log")
	echo "$guest_tap" >>"$results"
	if [ "$(grep -c '^\(not \)\?ok ' <<<"$guest_tap")" -ne 8 ] || grep -q '^not ok' <<<"$guest_tap"; then
		rc=1
	fi
	if [ $vm_rc -ne 0 ]; then
		tail -n 8 "$pkgtest/vm-run.log" | sed 's/^/# /' >>"$results"
		rc=1
	fi
	log "debian package: apt-get purge"
	if in_chroot "$root" apt-get purge -y --autoremove emuv-dkms >"$pkgtest/purge.log" 2>&1; then
		echo "ok 10 apt-get purge --autoremove emuv-dkms" >>"$results"
	else
		{ tail -n 30 "$pkgtest/purge.log" | sed 's/^/# /'; echo "not ok 10 apt-get purge --autoremove emuv-dkms"; } >>"$results"
		rc=1
	fi
	local left
	left=$(cd "$root" && find usr/lib/modules var/lib/dkms usr/src etc usr/lib/udev usr/bin usr/lib/x86_64-linux-gnu \
		\( -name "emuv*" -o -name ".emuv-rust-metadata*" -o -name "*emuv*.rules" \) 2>/dev/null || true)
	grep -q '^emuv:' "$root/etc/group" && left+=" group emuv"
	if [ -z "$left" ]; then
		echo "ok 11 nothing of emuv is left: module, DKMS tree, source, group, Rust metadata" >>"$results"
	else
		{ echo "$left" | sed 's/^/# left: /'; echo "not ok 11 nothing of emuv is left"; } >>"$results"
		rc=1
	fi
	local after
	after=$(snapshot "$root" | comm -13 "$pkgtest/before.txt" -)
	if [ -z "$after" ]; then
		echo "ok 12 the chroot holds no file the package test added" >>"$results"
	else
		{ echo "$after" | head -n 20 | sed 's/^/# left: /'; echo "not ok 12 the chroot holds no file the package test added"; } >>"$results"
		rc=1
	fi
	echo "### END debian:package rc=$rc" >>"$results"
	"$here/debian-kernel.sh" >/dev/null || die "restoring the Debian chroot's Rust metadata failed"
	return $rc
}

case ${1:-} in
build) build ;;
test) test_package "${2:?usage: debian-package.sh test RESULTS}" ;;
*) die "usage: debian-package.sh build | test RESULTS" ;;
esac
