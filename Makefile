# SPDX-License-Identifier: GPL-2.0
#
# Builds emuv.ko out of tree, in the style of Rust-for-Linux's out-of-tree module template:
#   make KDIR=/path/to/rust-enabled/kernel/build
# Everything else (set-up, test kernel, VM tests) is driven from scripts/.

KDIR ?= /lib/modules/$(shell uname -r)/build
# The kernel's own compiler: LLVM=1 for a clang-built kernel (LLVM=-19 for a versioned one),
# gcc for a gcc-built one such as Debian's.
LLVM ?= $(if $(shell grep -sx 'CONFIG_CC_IS_CLANG=y' $(KDIR)/.config),1,)

default: modules

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules

modules_install: modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules_install

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) clean

# emuv-smi and the NVML library (target/nvml/libnvidia-ml.so.1) for GPU tools: docs/gpu-tools.md;
# the CUDA driver and runtime libraries (target/cuda/libcuda.so.1, libcudart.so.13 and .so.12) for
# CUDA programs, run with tools/emuv-run/emuv-run: docs/cuda.md, docs/cudart.md;
# emuv-ctk (CDI specs for containers); emuv-device-plugin and emuv-exporter (Kubernetes).
tools:
	scripts/cuda-headers.sh >/dev/null
	cargo build --release --locked -p emuv-smi -p emuv-nvml -p emuv-cuda -p emuv-cudart -p emuv-ctk -p emuv-kubernetes
	scripts/install-nvml.sh target/nvml
	scripts/install-cuda.sh target/cuda

# Installs everything the build and the tests need (Debian 12, as root). Idempotent.
setup:
	scripts/setup.sh

# Builds (once, cached outside the checkout) the Linux 7.2 kernel the tests boot.
kernel: setup
	scripts/build-kernel.sh

# Set-up, test kernel, module, tests; boots the VM once and runs every test in it.
check:
	scripts/check.sh

# The same suite on a debug kernel (KASAN, kmemleak, lockdep, fault injection), with a
# 1,000,000-operation fuzz run and 200 load/unload cycles; fails on any report.
check-debug:
	scripts/check.sh --debug

# On a Debian system with a Rust-enabled Debian kernel: regenerates the Rust metadata its
# linux-headers lack, so that `make KDIR=/usr/src/linux-headers-RELEASE` builds emuv
# (docs/debian.md). RELEASE defaults to the running kernel.
debian-prepare:
	scripts/debian-rust-metadata.sh $(RELEASE)

# On a Debian 12 host (the test machines): Debian's newest buildable 7.2 kernel in a cached sid
# chroot, its metadata, its image and emuv.ko built against it (target/kernel-debian/).
debian-kernel:
	scripts/debian-kernel.sh

# The emuv-dkms package (dh, dh-dkms): target/deb/emuv-dkms_<version>_amd64.deb.
deb:
	scripts/debian-package.sh build

# Boots Debian's stock kernel in the VM, loads emuv with its defaults, shows `cat /dev/emuv`,
# `vram_info`, emuv-smi and gpustat beside a program holding emulated VRAM.
demo:
	scripts/demo.sh

# Proves the VM runner fails on a failing test, a guest WARNING and a hung guest.
check-runner:
	scripts/runner-selftest.sh

# emuv against the kernel's own memory (anonymous, memfd), side by side in the VM.
bench:
	scripts/bench.sh

# rustfmt with the kernel's .rustfmt.toml on our files, then a clippy build.
lint:
	scripts/lint.sh

.PHONY: default modules modules_install clean tools setup kernel check check-debug demo debian-prepare debian-kernel deb check-runner bench lint
