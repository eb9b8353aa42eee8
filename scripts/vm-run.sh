#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the test kernel under QEMU with virtme-ng, the host's filesystem shared read-only, runs
# COMMAND as root in the guest, powers off, and returns the true result. Fails on a VM timeout,
# a non-zero exit of COMMAND, or an Oops/BUG/WARNING/panic (or KASAN/kmemleak/lockdep report) in
# the guest's kernel log. The console log is kept in LOG.
#
#   scripts/vm-run.sh [--kernel DIR | --kimg IMAGE] [--timeout SECONDS] [--memory SIZE]
#                     [--log LOG] [--rwdir DIR] [--root DIR] -- COMMAND...
#
# --kernel: a kernel build tree (the test kernels); --kimg: a distribution kernel's image, whose
# modules virtme-ng takes from the root it sits in (IMAGE under ROOT/usr/lib/modules/RELEASE/).
# --root: the guest's root filesystem (read-write), instead of the host's (read-only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

kernel= kimg= timeout=900 memory=1G log= rwdirs=() root=()
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=$2; shift 2 ;;
	--kimg) kimg=$2; shift 2 ;;
	--root) root=(--root "$2" --rw); shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--memory) memory=$2; shift 2 ;;
	--log) log=$2; shift 2 ;;
	--rwdir) rwdirs+=(--rwdir "$2"); shift 2 ;;
	--) shift; break ;;
	*) die "vm-run: unknown option $1" ;;
	esac
done
[ $# -gt 0 ] || die "vm-run: no command"
[ -n "$log" ] || log=$(mktemp /tmp/emuv-vm.XXXXXX.log)
if [ -n "$kimg" ]; then
	bzimage=$kimg name=$kimg
else
	[ -n "$kernel" ] || kernel=$("$here/build-kernel.sh")
	bzimage=$kernel/arch/x86/boot/bzImage name=$(basename "$kernel")
fi
[ -f "$bzimage" ] || die "no kernel image at $bzimage"

# KVM only when the CPU really offers it: /dev/kvm exists on machines where it does not work.
accel=(--disable-kvm)
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
	accel=()
fi

# A boot that stalls before userspace (seen once under TCG on a loaded host, stuck in early
# device set-up) is retried once; a guest that hangs after booting fails the run.
BOOT_TIMEOUT=${EMUV_BOOT_TIMEOUT:-180}
boot() {
	# -v puts the guest's kernel log on the console, which goes to LOG with the command's output.
	timeout --kill-after=10 "$timeout" \
		vng -v -r "$bzimage" "${accel[@]}" --memory "$memory" --cpus 2 "${rwdirs[@]}" "${root[@]}" \
		--append "root=/dev/root panic=-1 oops=panic" --exec "$*" </dev/null >"$log" 2>&1 &
	local pid=$! waited=0
	while kill -0 "$pid" 2>/dev/null; do
		if [ $waited -ge "$BOOT_TIMEOUT" ] && ! grep -q "virtme-ng-init:" "$log"; then
			kill -- "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			return 200
		fi
		sleep 2
		waited=$((waited + 2))
	done
	wait "$pid"
}

rc=0
for attempt in 1 2; do
	log "vm: booting $name (${accel[*]:-kvm}, $memory), timeout ${timeout}s, log $log"
	rc=0
	boot "$@" || rc=$?
	[ $rc -eq 200 ] || break
	cp "$log" "$log.stalled-boot-$attempt"
	log "vm: the guest did not reach userspace within ${BOOT_TIMEOUT}s (attempt $attempt)"
done
if [ $rc -eq 200 ]; then
	log "vm: FAILED: the guest never booted"
	exit 1
fi

failed=0
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
	log "vm: FAILED: the VM did not finish within ${timeout}s"
	failed=1
elif [ $rc -ne 0 ]; then
	log "vm: FAILED: the guest command exited $rc"
	failed=1
fi
# Reports the kernel's own checkers print; any of them fails the run. KASAN and lockdep reports
# start with "BUG:" or "WARNING:"; kmemleak's are read by the tests from its debugfs file and
# also counted here. A bare "Call Trace:" is not one: fault injection makes the page allocator
# print its (expected) failure warnings with a stack dump.
# virtme-ng's init logs its own (userspace) warnings to the console, e.g. a root without `ip`.
reports='Oops|BUG:|kernel BUG at|WARNING:|Kernel panic|general protection fault|new suspected memory leaks|possible recursive locking|circular locking dependency|UBSAN|blocked for more than|soft lockup|rcu_preempt detected stalls|rcu_sched detected stalls|self-detected stall|invoked oom-killer'
if grep -vE '^\[ *[0-9.]+\] virtme-ng-init: ' "$log" | grep -qE "$reports"; then
	log "vm: FAILED: the guest kernel reported a problem:"
	grep -nE -A3 "$reports" "$log" | grep -vE '^[0-9]+[:-]\[ *[0-9.]+\] virtme-ng-init: ' | head -n 60 >&2
	failed=1
fi
[ $failed -eq 0 ] || { log "vm: console log: $log"; exit 1; }
log "vm: ok"
