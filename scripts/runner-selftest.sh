#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check-runner`: proves that the VM test runner fails a run when it should: a test that
# asserts a wrong value, a guest WARN_ON, and a hung guest; and that a clean run passes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

kdir=$(prepare "$top")
make -s -C "$kdir" M="$top/tests/vm/selftest" LLVM="$LLVM_SUFFIX" modules
cargo build --quiet --release --locked -p emuv-tests --manifest-path "$top/Cargo.toml"
out=$(mktemp -d /tmp/emuv-runner-selftest.XXXXXX)
pass=0 fail=0 n=0

# expect WHAT EXPECTED_EXIT(0|nonzero) LOG_PATTERN COMMAND...
expect() {
	local what=$1 want=$2 pattern=$3 rc=0
	shift 3
	n=$((n + 1))
	"$@" >"$out/$n.log" 2>&1 || rc=$?
	if { [ "$want" = 0 ] && [ $rc -eq 0 ]; } || { [ "$want" != 0 ] && [ $rc -ne 0 ]; } &&
		grep -qE "$pattern" "$out/$n.log"; then
		echo "ok $n $what"
		pass=$((pass + 1))
	else
		echo "# exit $rc, log $out/$n.log:"
		sed 's/^/#   /' "$out/$n.log" | tail -n 20
		echo "not ok $n $what"
		fail=$((fail + 1))
	fi
}

vm() { "$here/vm-run.sh" --kernel "$kdir" --log "$out/console-$n.log" "$@"; }
wrong_value() {
	vm --rwdir "$out" -- "$top/tests/vm/guest.sh" "$out/results.txt" "$top" "$top/target/release" selftest_wrong_value &&
		"$top/target/release/ktap_summary" "$out/results.txt"
}

echo "TAP version 13"
echo "1..4"
expect "a clean guest run passes" 0 "vm: ok" vm -- true
expect "a test asserting a wrong value fails the run" nonzero "0 passed, [1-9][0-9]* failed" wrong_value
expect "a guest WARN_ON fails the run" nonzero "reported a problem" \
	vm -- insmod "$top/tests/vm/selftest/emuv_selftest_warn.ko"
expect "a hung guest fails the run" nonzero "did not finish within" vm --timeout 60 -- sleep 600
echo "# Totals: pass:$pass fail:$fail xfail:0 xpass:0 skip:0 error:0"
echo "runner-selftest: $pass passed, $fail failed"
[ $fail -eq 0 ]
