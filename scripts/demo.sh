#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: boots the test VM, loads emuv with its defaults (an RTX 4070, 12 GiB physical +
# 2 GiB virtual, lazy), and shows what a user sees: dmesg, `cat /dev/emuv`, the sysfs report.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

kdir=$(prepare "$top")
out=$(mktemp -d /tmp/emuv-demo.XXXXXX)
cat >"$out/demo.sh" <<GUEST
#!/bin/sh
exec >"$out/demo.txt" 2>&1
set -x
insmod "$top/emuv.ko"
dmesg | grep -w 'emuv:'
ls -l /dev/emuv
cat /dev/emuv
cat /sys/class/emuv/emuv/vram_info
ls /sys/class/emuv/emuv/
grep . /sys/module/emuv/parameters/*
rmmod emuv
GUEST
chmod +x "$out/demo.sh"
"$here/vm-run.sh" --kernel "$kdir" --rwdir "$out" --log "$out/console.log" -- "$out/demo.sh" ||
	{ cat "$out/demo.txt" 2>/dev/null; die "demo failed (console log: $out/console.log)"; }
sed 's/^+ /$ /' "$out/demo.txt"
