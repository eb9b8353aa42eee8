#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# emuv cards in real containers: boots a kernel with the Debian sid chroot of
# scripts/debian-kernel.sh as its root (podman 5, crun and containerd 2.1 come from sid; the
# host's Debian 12 has podman 4), and runs tests/src/bin/emuv_containers.rs there, then
# tests/src/bin/emuv_kubernetes.rs (the device plugin against a kubelet harness and containerd,
# the exporter scraped by sid's Prometheus). Writes their TAP into RESULTS as sections SECTION
# and SECTION with "containers" replaced by "kubernetes".
#
#   scripts/containers.sh RESULTS SECTION KERNEL MODULE_DIR
#
# KERNEL: a kernel build tree (the test kernel) or a kernel image inside the chroot (Debian's,
# whose modules virtme-ng takes from the chroot). MODULE_DIR holds emuv.ko built for it.
#
# EMUV_CONTAINER_PROGRAMS="containers kubernetes" (the default) picks the programs run.
#
# The container image is a root filesystem made from the chroot's own files: dash, Python with
# pynvml (from the GPU tools' venv), catatonit, and the libraries they and emuv's programs link;
# no registry is asked for anything (containerd gets it through podman import/save and ctr).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

results=${1:?usage: containers.sh RESULTS SECTION KERNEL MODULE_DIR}
name=${2:?} kernel=${3:?} module_dir=${4:?}
k8s_name=${name/containers/kubernetes}
[ "$k8s_name" != "$name" ] || k8s_name=$name-kubernetes
if [ -d "$kernel" ]; then boot=(--kernel "$kernel"); else boot=(--kimg "$kernel"); fi
root=$EMUV_CACHE/debian/${EMUV_DEBIAN_SUITE:-sid}-root
work=$root/tmp/emuv-containers
# iproute2: loopback up in the guest (containerd serves CRI streaming on 127.0.0.1).
CONTAINER_PACKAGES=(podman crun conmon containerd catatonit iproute2)
# Prometheus 3.5 and promtool, without the node exporter it recommends.
METRICS_PACKAGES=(prometheus)

section() { # NAME RC LINES...: the section, as the summary reads it
	local section=$1 rc=$2
	shift 2
	{
		echo "### BEGIN $section"
		printf '%s\n' "$@"
		echo "### END $section rc=$rc"
	} >>"$results"
}

[ -f "$root/.emuv-root-ok" ] || {
	section "$name" 0 "ok 1 containers # SKIP no Debian chroot (scripts/debian-kernel.sh makes it)"
	section "$k8s_name" 0 "ok 1 kubernetes # SKIP no Debian chroot (scripts/debian-kernel.sh makes it)"
	exit 0
}

in_chroot() {
	unshare --mount --propagation private -- sh -c '
		root=$1; shift
		mount -t proc proc "$root/proc" && exec chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
			HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"' sh "$root" "$@"
}

stamp=$root/.emuv-containers-v3
if [ ! -f "$stamp" ]; then
	log "containers: installing ${CONTAINER_PACKAGES[*]} ${METRICS_PACKAGES[*]} into the chroot"
	{
		in_chroot apt-get install -y -qq "${CONTAINER_PACKAGES[@]}" &&
			in_chroot apt-get install -y -qq --no-install-recommends "${METRICS_PACKAGES[@]}"
	} >"$EMUV_CACHE/debian/containers-install.log" 2>&1 ||
		die "installing the container and metrics packages failed (see $EMUV_CACHE/debian/containers-install.log)"
	touch "$stamp"
fi

# What the guest runs: emuv.ko for the test kernel, the test program, the tools and libraries
# (laid out as in target/, where emuv-ctk finds them), and the image.
rm -rf "$work" && mkdir -p "$work/release" "$work/rootfs"
cp "$module_dir/emuv.ko" "$work/"
cp "$top/target/release/emuv_containers" "$top/target/release/emuv_kubernetes" "$top/target/release/emuv-smi" \
	"$top/target/release/emuv-ctk" "$top/target/release/emuv-device-plugin" "$top/target/release/emuv-exporter" "$work/release/"
cp -r "$top/target/nvml" "$top/target/cuda" "$work/"

# The image: the chroot's dash, Python and catatonit, pynvml, and every library they or emuv's programs
# load, found by the chroot's own ldd.
python=$(cd "$root/usr/bin" && ls python3.[0-9]* | grep -E '^python3\.[0-9]+$' | sort -V | tail -n1)
pynvml=$(ls "$GPU_TOOLS_VENV"/lib/python3*/site-packages/pynvml.py 2>/dev/null | head -n1)
[ -n "$pynvml" ] || die "no pynvml.py in $GPU_TOOLS_VENV (scripts/setup.sh installs it)"
img=$work/rootfs
mkdir -p "$img"/{usr/bin,usr/lib/x86_64-linux-gnu,usr/lib64,usr/lib/python3/dist-packages,etc,proc,sys,dev,tmp,run,root}
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$img/$d"; done
ln -s bin "$img/usr/sbin"
# catatonit (static): the pause process of containerd's pod sandboxes.
cp -a "$root/usr/bin/dash" "$root/usr/bin/$python" "$root/usr/bin/catatonit" "$img/usr/bin/"
ln -s dash "$img/usr/bin/sh"
ln -s "$python" "$img/usr/bin/python3"
cp -a "$root/usr/lib/$python" "$img/usr/lib/"
rm -rf "$img/usr/lib/$python"/{test,idlelib,tkinter,turtledemo,ensurepip,pydoc_data}
cp "$pynvml" "$img/usr/lib/python3/dist-packages/"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$img/etc/passwd"
printf 'root:x:0:\n' >"$img/etc/group"
# Copied into the chroot first, so that its ldd resolves them as the container will.
objects=(/usr/bin/dash "/usr/bin/$python" /tmp/emuv-containers/release/emuv_containers
	/tmp/emuv-containers/release/emuv-smi /tmp/emuv-containers/nvml/libnvidia-ml.so.1
	/tmp/emuv-containers/cuda/libcuda.so.1)
while IFS= read -r so; do objects+=("${so#"$root"}"); done < <(find "$root/usr/lib/$python/lib-dynload" -name '*.so')
in_chroot sh -c 'for o in "$@"; do ldd "$o"; done' sh "${objects[@]}" |
	awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
	while IFS= read -r lib; do
		real=$(in_chroot readlink -f "$lib")
		mkdir -p "$img$(dirname "$lib")"
		cp -L "$root$real" "$img$lib"
	done
log "containers: image of $(du -sm "$img" | cut -f1) MiB ($python, dash, pynvml)"

cat >"$work/guest.sh" <<GUEST
#!/bin/sh
# In the test kernel, root = the sid chroot. Prints the programs' TAP lines marked CTAP (containers)
# and K8STAP (Kubernetes).
[ -f /sys/fs/cgroup/cgroup.controllers ] || mount -t cgroup2 cgroup2 /sys/fs/cgroup
# Modules on Debian's kernel: emuv links against configfs; containerd's snapshots are overlays.
[ -d /sys/kernel/config ] || modprobe configfs 2>/dev/null
modprobe overlay 2>/dev/null
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
ip link set lo up
# Podman's state and the image in memory: the root is 9p, slow for both.
mkdir -p /var/run/cdi /tmp/emuv-podman && mount -t tmpfs tmpfs /tmp/emuv-podman &&
	cp -a /tmp/emuv-containers/rootfs /tmp/emuv-podman/rootfs
cd /tmp/emuv-containers
export EMUV_CONTAINER_ROOTFS=/tmp/emuv-podman/rootfs EMUV_MODULE_DIR=/tmp/emuv-containers
case " ${EMUV_CONTAINER_PROGRAMS:-containers kubernetes} " in *" containers "*)
	${EMUV_CONTAINERS_ONLY:+env EMUV_CONTAINERS_ONLY=$EMUV_CONTAINERS_ONLY} ./release/emuv_containers 2>&1 | sed -u 's/^/CTAP /' ;;
esac
case " ${EMUV_CONTAINER_PROGRAMS:-containers kubernetes} " in *" kubernetes "*)
	./release/emuv_kubernetes 2>&1 | sed -u 's/^/K8STAP /' ;;
esac
GUEST
chmod +x "$work/guest.sh"

log "containers: booting $(basename "$kernel") with the chroot as root (section $name)"
vm_rc=0
"$here/vm-run.sh" "${boot[@]}" --root "$root" --timeout 1200 --memory 2G \
	--log "$work/console.log" -- /tmp/emuv-containers/guest.sh 2>"$work/vm-run.log" || vm_rc=$?

overall=0
for kind in CTAP:"$name" K8STAP:"$k8s_name"; do
	prefix=${kind%%:*} section_name=${kind#*:}
	program=containers
	[ "$prefix" = CTAP ] || program=kubernetes
	case " ${EMUV_CONTAINER_PROGRAMS:-containers kubernetes} " in *" $program "*) ;; *)
		section "$section_name" 0 "ok 1 $program # SKIP EMUV_CONTAINER_PROGRAMS leaves it out"
		continue ;;
	esac
	mapfile -t tap < <(sed -n "s/^.*$prefix //p" "$work/console.log" | tr -d '\r')
	rc=0
	if [ $vm_rc -ne 0 ]; then
		mapfile -t tail_lines < <(tail -n 8 "$work/vm-run.log" | sed 's/^/# /')
		tap+=("${tail_lines[@]}" "not ok 99 the containers VM finished and its kernel log is clean (see $work/console.log)")
		rc=1
	fi
	printf '%s\n' "${tap[@]}" | grep -q '^not ok' && rc=1
	[ ${#tap[@]} -gt 0 ] || { tap=("not ok 1 $section_name: the tests printed nothing (see $work/console.log)"); rc=1; }
	section "$section_name" $rc "${tap[@]}"
	[ $rc -eq 0 ] || overall=1
done
exit $overall
