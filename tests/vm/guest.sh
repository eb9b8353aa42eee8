#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test VM (one boot per suite): the KUnit module once, then every test program,
# each between "### BEGIN name" and "### END name rc=N" lines that the host's summary reads.
#
#   guest.sh RESULTS_FILE MODULE_DIR BIN_DIR PROGRAM...
#
# EMUV_SECTION_PREFIX names this kernel's sections (debian: for Debian's kernel). On a
# distribution kernel, brd (/dev/ram0, for the O_DIRECT tests) is a module: virtme-ng links the
# kernel's module tree into the guest's /lib/modules.
set -u
results=$1 module_dir=$2 bin_dir=$3
shift 3
prefix=${EMUV_SECTION_PREFIX:-}

[ -e /dev/ram0 ] || modprobe brd rd_nr=1 2>/dev/null
# shellcheck source=tests/vm/system.sh
. "$(dirname "$0")/system.sh"
exec 3>>"$results"
echo "### VM: $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)" >&3

# A debug kernel's kmemleak: forget what boot left, so what it reports at the end is ours.
kmemleak=/sys/kernel/debug/kmemleak
[ -w $kmemleak ] && echo clear >$kmemleak

# KUnit: the suites run when emuv_kunit.ko goes live; debugfs keeps their KTAP results.
# Kbuild builds emuv_kunit.ko only for kernels with KUnit. A second boot of the same kernel
# (EMUV_GUEST_KUNIT=0) leaves them out.
if [ "${EMUV_GUEST_KUNIT:-1}" = 0 ]; then
	:
elif [ ! -f "$module_dir/emuv_kunit.ko" ]; then
	echo "### BEGIN ${prefix}kunit" >&3
	echo "ok 1 emuv's KUnit suites # SKIP this kernel has no KUnit (CONFIG_KUNIT)" >&3
	echo "### END ${prefix}kunit rc=0" >&3
elif insmod "$module_dir/emuv_kunit.ko" 2>&1; then
	for suite in /sys/kernel/debug/kunit/emuv_*; do
		name=$(basename "$suite")
		echo "### BEGIN ${prefix}kunit:$name" >&3
		cat "$suite/results" >&3
		echo "### END ${prefix}kunit:$name rc=0" >&3
	done
	rmmod emuv_kunit
else
	echo "### BEGIN ${prefix}kunit:load" >&3
	echo "not ok 1 insmod emuv_kunit.ko" >&3
	echo "### END ${prefix}kunit:load rc=1" >&3
fi

for prog in "$@"; do
	echo "### BEGIN $prefix$prog" >&3
	EMUV_MODULE_DIR=$module_dir "$bin_dir/$prog" >&3 2>&1
	echo "### END $prefix$prog rc=$?" >&3
done
# kmemleak reports only objects unreferenced for 5 s, found by a scan: wait, and scan twice
# (an object first seen in one scan is reported by the next).
if [ -w $kmemleak ]; then
	echo "### BEGIN kmemleak" >&3
	sleep 6
	echo scan >$kmemleak
	sleep 6
	echo scan >$kmemleak
	leaks=$(cat $kmemleak)
	if [ -z "$leaks" ]; then
		echo "ok 1 kmemleak: no unreferenced objects after the tests" >&3
		rc=0
	else
		echo "$leaks" | sed 's/^/# /' >&3
		echo "not ok 1 kmemleak: unreferenced objects after the tests" >&3
		rc=1
	fi
	echo "### END kmemleak rc=$rc" >&3
fi
echo "### DONE" >&3
