# SPDX-License-Identifier: GPL-2.0
#
# Builds emuv.ko out of tree, in the style of Rust-for-Linux's out-of-tree module template:
#   make KDIR=/path/to/rust-enabled/kernel/build LLVM=1
# Everything else (set-up, test kernel, VM tests) is driven from scripts/.

KDIR ?= /lib/modules/$(shell uname -r)/build
LLVM ?= 1

default: modules

modules:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules

modules_install: modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) modules_install

clean:
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=$(LLVM) clean

# emuv-smi and the NVML library (target/nvml/libnvidia-ml.so.1) for GPU tools: docs/gpu-tools.md.
tools:
	cargo build --release --locked -p emuv-smi -p emuv-nvml
	scripts/install-nvml.sh target/nvml

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

# Boots the VM, loads emuv with its defaults, shows `cat /dev/emuv` and `vram_info`.
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

.PHONY: default modules modules_install clean tools setup kernel check check-debug demo check-runner bench lint
