#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make lint`: rustfmt with the kernel's own .rustfmt.toml on emuv's kernel sources (the
# kernel's `make rustfmt` walks the kernel tree, not M=), a CLIPPY=1 build that must print no
# warning, and rustfmt/clippy on the userspace crates.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

kdir=$("$here/build-kernel.sh")
cd "$top"
kernel_sources=(*.rs glue/*.rs)
rustfmt --check --edition 2021 --config-path "$KSRC/.rustfmt.toml" "${kernel_sources[@]}" ||
	die "rustfmt: run 'rustfmt --edition 2021 --config-path $KSRC/.rustfmt.toml ${kernel_sources[*]}'"

# Only the two crates' objects, so that clippy sees every file again: kbuild's `clean` would also
# delete every `*.a` under the checkout, cargo's build-script outputs in target/ included.
rm -f "$top/emuv.o" "$top/emuv_kunit.o"
out=$(make -C "$top" KDIR="$kdir" LLVM="$LLVM_SUFFIX" CLIPPY=1 modules 2>&1) || { echo "$out"; die "CLIPPY=1 build failed"; }
if grep -E "^(warning|error)" <<<"$out"; then
	echo "$out"
	die "CLIPPY=1 build printed warnings"
fi
cargo fmt --all --check || die "cargo fmt: run 'cargo fmt --all'"
cargo clippy --quiet --release --locked --workspace -- -D warnings || die "cargo clippy found problems"
log "lint: clean"
