/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * emuv: the ioctl interface of /dev/emuv.
 *
 * The one definition of emuv's ABI. The module's Rust copy (uapi.rs) and the Rust userspace
 * crate (generated from this file by bindgen) are checked against it by a test.
 *
 * Rules that let it grow: fixed-width fields only, u64 for sizes and offsets, explicit
 * padding, a size field first, and flags and reserved fields that must be zero (EINVAL
 * otherwise). The layouts are the same for 32- and 64-bit callers (compat_ioctl).
 */
#ifndef _UAPI_EMUV_H
#define _UAPI_EMUV_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* 2: EMUV_IOCTL_PROCESSES, per-user and per-file allocation limits in emuv_info. */
#define EMUV_ABI_VERSION 2

/* Unused in Documentation/userspace-api/ioctl/ioctl-number.rst. */
#define EMUV_IOCTL_TYPE 0xE7

/* Where an allocation may go (emuv_alloc.tier in) and went (out). */
#define EMUV_TIER_ANY 0
#define EMUV_TIER_PHYSICAL 1
#define EMUV_TIER_VIRTUAL 2

#define EMUV_STRATEGY_LAZY 0
#define EMUV_STRATEGY_EAGER 1

struct emuv_tier_info {
	__u64 capacity;	/* bytes */
	__u64 used;	/* bytes handed out to allocations */
	__u64 resident;	/* bytes backed by system memory now */
};

/* EMUV_IOCTL_INFO: the emulated GPU and its pool. */
struct emuv_info {
	__u32 size;		/* in: sizeof(struct emuv_info) */
	__u32 abi_version;	/* out: EMUV_ABI_VERSION */
	__u16 vendor_id;	/* out: 0x10de */
	__u16 device_id;	/* out: PCI device ID */
	__u32 strategy;		/* out: EMUV_STRATEGY_* */
	char name[64];		/* out: "NVIDIA GeForce RTX 4090", NUL-terminated */
	char model[32];		/* out: "4090", NUL-terminated */
	struct emuv_tier_info tiers[2];	/* out: [0] physical, [1] virtual */
	__u64 total;		/* out: capacity of both tiers */
	__u64 used;		/* out: used + free == total, less what is quarantined */
	__u64 free;		/* (freed pages still held elsewhere, eager pools only); free
				 * counts freed pages still being scrubbed: an ALLOC gets them */
	__u64 file_limit;	/* out: bytes one open file may hold, 0 = no limit */
	__u64 file_used;	/* out: bytes this open file holds */
	__u64 user_limit;	/* out: bytes all files of the opener's user may hold, 0 = no limit */
	__u64 user_used;	/* out: bytes all files of the opener's user hold */
	__u32 file_allocations_limit;	/* out: allocations one open file may hold */
	__u32 file_allocations;	/* out: allocations this open file holds */
	__u64 reserved[1];	/* out: zero */
};

/*
 * EMUV_IOCTL_ALLOC: allocate emulated VRAM, owned by this open file. ALLOC and FREE need a file
 * opened for writing (EBADF otherwise); INFO, QUERY, PROCESSES, read() and read-only mmap() work
 * on any open file. ENOMEM: the card (or the per-file or per-user byte limit) is full; ENOSPC:
 * the file holds as many allocations as it may.
 */
struct emuv_alloc {
	__u32 size;		/* in: sizeof(struct emuv_alloc) */
	__u32 flags;		/* in: must be 0 */
	__u64 bytes;		/* in: size wanted; out: rounded up to pages */
	__u32 tier;		/* in: EMUV_TIER_*; out: the tier used */
	__u32 handle;		/* out: non-zero, valid for this open file only */
	__u64 mmap_offset;	/* out: offset to pass to mmap(); below 2^44, so that 32-bit
				 * callers' mmap2() reaches it */
	__u64 reserved[2];	/* in: must be 0 */
};

/*
 * EMUV_IOCTL_FREE: free an allocation (EBUSY while mapped). ENOMEM when the kernel cannot get
 * the little memory its bookkeeping needs to let go (as munmap can): nothing was freed, retry.
 */
struct emuv_free {
	__u32 handle;
	__u32 flags;		/* must be 0 */
	__u64 reserved;		/* must be 0 */
};

/* EMUV_IOCTL_QUERY: one allocation of this open file. */
struct emuv_query {
	__u32 handle;		/* in */
	__u32 flags;		/* in: must be 0 */
	__u64 bytes;		/* out */
	__u64 resident;		/* out: bytes backed by system memory now */
	__u64 mmap_offset;	/* out */
	__u32 tier;		/* out: EMUV_TIER_PHYSICAL or EMUV_TIER_VIRTUAL */
	__u32 mappings;		/* out: live mmap()s of it */
	__u64 reserved[2];	/* out: zero */
};

/*
 * EMUV_IOCTL_PROCESSES: who holds this card's memory, one entry per process (a process with
 * several open files is one entry), as the caller's PID namespace sees it: processes outside it
 * are left out. A file whose opening process has exited (it was inherited or passed on) is an
 * entry of its own with pid 0 and EMUV_PROCESS_EXITED, never a PID that may have been reused.
 */
#define EMUV_PROCESS_EXITED (1u << 0)

struct emuv_process {
	__s32 pid;		/* PID in the caller's namespace; 0 with EMUV_PROCESS_EXITED */
	__u32 flags;		/* EMUV_PROCESS_* */
	char comm[16];		/* command name at open: raw bytes, NUL-padded */
	__u64 bytes;		/* emulated VRAM held */
	__u64 allocations;	/* allocations held */
	__u64 reserved[2];	/* zero */
};

struct emuv_processes {
	__u32 size;		/* in: sizeof(struct emuv_processes) */
	__u32 entry_size;	/* in: sizeof(struct emuv_process) */
	__u32 count;		/* in: room at entries; out: entries written */
	__u32 total;		/* out: entries there are (call again with more room if > count) */
	__u64 entries;		/* in: user address of an array of count struct emuv_process */
	__u64 reserved[2];	/* in: must be 0 */
};

#define EMUV_IOCTL_INFO _IOWR(EMUV_IOCTL_TYPE, 0x00, struct emuv_info)
#define EMUV_IOCTL_ALLOC _IOWR(EMUV_IOCTL_TYPE, 0x01, struct emuv_alloc)
#define EMUV_IOCTL_FREE _IOW(EMUV_IOCTL_TYPE, 0x02, struct emuv_free)
#define EMUV_IOCTL_QUERY _IOWR(EMUV_IOCTL_TYPE, 0x03, struct emuv_query)
#define EMUV_IOCTL_PROCESSES _IOWR(EMUV_IOCTL_TYPE, 0x04, struct emuv_processes)

#endif /* _UAPI_EMUV_H */
