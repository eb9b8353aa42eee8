#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Sourced by every guest script (tests, demo, bench): what a booted Debian system has before
# anyone loads emuv, and virtme-ng's bare guest lacks. emuv links against configfs, a module on
# Debian's kernel that systemd loads at boot (sys-kernel-config.mount, through
# modprobe@configfs); without it `insmod emuv.ko` fails with "Unknown symbol" (ENOENT).
[ -d /sys/kernel/config ] || modprobe configfs 2>/dev/null
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config 2>/dev/null
