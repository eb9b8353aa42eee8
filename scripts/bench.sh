#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: boots the test VM once and measures emuv against the kernel's own baselines
# (anonymous memory, memfd) side by side, as medians of per-round ratios. Prints the table,
# writes it into docs/PERFORMANCE.md between its markers, and the figures as JSON to the path
# printed last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

kdir=$(prepare "$top")
cargo build --quiet --release --locked -p emuv-tests --bin emuv_bench --manifest-path "$top/Cargo.toml"
out=$(mktemp -d /tmp/emuv-bench.XXXXXX)
cat >"$out/bench.sh" <<GUEST
#!/bin/sh
EMUV_MODULE_DIR="$top" "$top/target/release/emuv_bench" "$out/bench.json" >"$out/bench.txt" 2>&1
GUEST
chmod +x "$out/bench.sh"
"$here/vm-run.sh" --kernel "$kdir" --rwdir "$out" --log "$out/console.log" -- "$out/bench.sh" ||
	{ cat "$out/bench.txt" 2>/dev/null; die "bench failed (console log: $out/console.log)"; }
cat "$out/bench.txt"
{
	echo '```'
	echo "# make bench, $(date -u +%Y-%m-%d), $(uname -m), QEMU TCG guest (1 GiB, 2 vCPUs)"
	cat "$out/bench.txt"
	echo '```'
} >"$out/table.md"
awk -v table="$out/table.md" '
	/<!-- bench:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
	/<!-- bench:end -->/ { skip = 0 }
	!skip { print }' "$top/docs/PERFORMANCE.md" >"$out/PERFORMANCE.md"
cp "$out/PERFORMANCE.md" "$top/docs/PERFORMANCE.md"
echo "bench: results in $out/bench.json"
