#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs everything emuv's build and tests need on a Debian 12 machine, as root.
# Idempotent: each step checks first and is skipped when already done. A failing step
# says which one failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

need_root() {
	[ "$(id -u)" = 0 ] || die "setup must run as root (it installs Debian packages)"
}

step_debian_packages() {
	local pkgs=(clang-19 lld-19 llvm-19 libclang-19-dev bc flex bison libelf-dev libssl-dev cpio
		make gcc gcc-multilib qemu-system-x86 busybox-static kmod udev file python3-venv xz-utils
		ca-certificates debootstrap)
	local missing=()
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && { skip "Debian packages"; return; }
	log "installing Debian packages: ${missing[*]}"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		die "apt-get install of ${missing[*]} failed"
}

step_rust_components() {
	command -v rustup >/dev/null || die "rustup not found: emuv builds with the machine's rustup toolchain"
	local have
	have=$(rustup component list --installed 2>/dev/null)
	local missing=()
	for c in rust-src rustfmt clippy; do
		grep -q "^$c" <<<"$have" || missing+=("$c")
	done
	[ ${#missing[@]} -eq 0 ] && { skip "rustup components"; return; }
	log "rustup component add ${missing[*]}"
	rustup component add "${missing[@]}" || die "rustup component add ${missing[*]} failed"
}

step_bindgen() {
	if command -v bindgen >/dev/null && [ "$(bindgen --version 2>/dev/null | awk '{print $2}')" = "$BINDGEN_VERSION" ]; then
		skip "bindgen $BINDGEN_VERSION"; return
	fi
	log "cargo install bindgen-cli $BINDGEN_VERSION (about 3 minutes)"
	cargo install --quiet --locked bindgen-cli --version "$BINDGEN_VERSION" ||
		die "cargo install bindgen-cli $BINDGEN_VERSION failed"
}

# linux-source-7.2 comes from a newer suite through a private apt configuration: the
# system's sources stay untouched, so later installs never pull packages built for a newer libc.
step_kernel_source() {
	if [ -f "$KSRC/Makefile" ] && [ -f "$KSRC/.emuv-source-ok" ]; then
		skip "Linux source ($(cat "$KSRC/.emuv-source-ok"))"; return
	fi
	local apt_dir="$EMUV_CACHE/apt" mirror
	mirror=$(debian_mirror)
	mkdir -p "$apt_dir"/{lists/partial,archives/partial,etc}
	printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
		"$mirror" sid "$mirror" forky >"$apt_dir/etc/sources.list"
	local opts=(-o "Dir::Etc::SourceList=$apt_dir/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::archives=$apt_dir/archives"
		-o Dir::State::Status=/dev/null -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o Acquire::Languages=none
		-o APT::Get::List-Cleanup=0 -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
	log "fetching $KERNEL_SOURCE_PACKAGE from $mirror (suites sid, forky) with a private apt configuration"
	apt-get "${opts[@]}" update -qq || die "private apt update for $KERNEL_SOURCE_PACKAGE failed"
	local version
	version=$(apt-cache "${opts[@]}" policy "$KERNEL_SOURCE_PACKAGE" | awk '/Candidate:/ {print $2}')
	[ -n "$version" ] && [ "$version" != "(none)" ] || die "$KERNEL_SOURCE_PACKAGE not found in sid/forky"
	(cd "$apt_dir/archives" && rm -f ./*.deb && apt-get "${opts[@]}" download -qq "$KERNEL_SOURCE_PACKAGE=$version") ||
		die "download of $KERNEL_SOURCE_PACKAGE $version failed"
	local x="$EMUV_CACHE/deb-extract"
	rm -rf "$x" "$KSRC" && mkdir -p "$x" "$KSRC"
	dpkg-deb -x "$apt_dir"/archives/"$KERNEL_SOURCE_PACKAGE"_*.deb "$x" || die "dpkg-deb -x failed"
	tar -xaf "$x"/usr/src/"$KERNEL_SOURCE_PACKAGE".tar.* -C "$KSRC" --strip-components=1 ||
		die "unpacking the kernel tarball failed"
	rm -rf "$x" "$apt_dir"/archives/*.deb
	echo "$KERNEL_SOURCE_PACKAGE $version" >"$KSRC/.emuv-source-ok"
	log "Linux source $version in $KSRC"
}

step_virtme_ng() {
	local installed=
	[ -x "$VENV/bin/vng" ] && installed=$("$VENV/bin/pip" show virtme-ng 2>/dev/null | awk '/^Version:/ {print $2}')
	if [ "$installed" = "$VIRTME_NG_VERSION" ]; then
		skip "virtme-ng $VIRTME_NG_VERSION"; return
	fi
	log "installing virtme-ng $VIRTME_NG_VERSION in $VENV"
	python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
	"$VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION" || die "pip install virtme-ng==$VIRTME_NG_VERSION failed"
}

# A venv of REQUIREMENTS, installed exactly as pinned (--no-deps); re-installed when the pins
# change.
#   pinned_venv VENV REQUIREMENTS WHAT
pinned_venv() {
	local venv=$1 requirements=$2 what=$3 stamp="$1/.emuv-requirements"
	if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$stamp"; then
		skip "$what"; return
	fi
	log "installing $what in $venv"
	rm -rf "$venv"
	python3 -m venv "$venv" || die "python3 -m venv $venv failed"
	"$venv/bin/pip" install -q --no-deps -r "$requirements" || die "pip install -r $requirements failed"
	cp "$requirements" "$stamp"
}

# The GPU tools the tests run.
step_gpu_tools() {
	pinned_venv "$GPU_TOOLS_VENV" "$here/../tests/gpu-tools/requirements.txt" \
		"the GPU tools the tests run (pynvml, gpustat, nvitop)"
}

# The CUDA clients the tests run, and NVIDIA's public CUDA headers the driver is built against.
step_cuda_clients() {
	"$here/cuda-headers.sh" >/dev/null
	pinned_venv "$CUDA_CLIENTS_VENV" "$here/../tests/cuda/requirements.txt" \
		"the CUDA clients the tests run (cuda-python, numba-cuda)"
}

# nvcc (tests/cudart/requirements.txt) and PyTorch (tests/torch/requirements.txt): the runtime's
# clients. PyTorch's CUDA wheels are about 2.5 GB, downloaded once into pip's cache.
step_runtime_clients() {
	pinned_venv "$NVCC_VENV" "$here/../tests/cudart/requirements.txt" \
		"NVIDIA's CUDA compiler (nvcc) for the runtime tests"
	pinned_venv "$TORCH_VENV" "$here/../tests/torch/requirements.txt" \
		"PyTorch (CUDA 13) and the libraries libtorch_cuda.so loads"
}

main() {
	need_root
	case ${1:-all} in
	all)
		# Debian packages first: the Rust steps need a C compiler and the source step needs xz.
		timed "setup: Debian packages" step_debian_packages
		timed "setup: rustup components" step_rust_components
		# The kernel source download overlaps the bindgen compile.
		timed "setup: kernel source" step_kernel_source &
		local src_pid=$!
		timed "setup: bindgen" step_bindgen
		timed "setup: virtme-ng" step_virtme_ng
		timed "setup: GPU tools" step_gpu_tools
		timed "setup: CUDA clients" step_cuda_clients
		timed "setup: CUDA runtime clients" step_runtime_clients
		wait "$src_pid" || die "kernel source step failed"
		;;
	debian)
		# What booting Debian's own kernel needs: no kernel source, no bindgen (the Debian
		# chroot has its own toolchain).
		timed "setup: Debian packages" step_debian_packages
		timed "setup: virtme-ng" step_virtme_ng
		timed "setup: GPU tools" step_gpu_tools
		timed "setup: CUDA clients" step_cuda_clients
		timed "setup: CUDA runtime clients" step_runtime_clients
		;;
	*) "step_$1" ;;
	esac
}
main "$@"
