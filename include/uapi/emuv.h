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

#define EMUV_ABI_VERSION 1

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
	__u64 used;		/* out: used + free == total, always */
	__u64 free;
	__u64 file_limit;	/* out: bytes one open file may hold, 0 = no limit */
	__u64 file_used;	/* out: bytes this open file holds */
	__u64 reserved[4];	/* out: zero */
};

/* EMUV_IOCTL_ALLOC: allocate emulated VRAM, owned by this open file. */
struct emuv_alloc {
	__u32 size;		/* in: sizeof(struct emuv_alloc) */
	__u32 flags;		/* in: must be 0 */
	__u64 bytes;		/* in: size wanted; out: rounded up to pages */
	__u32 tier;		/* in: EMUV_TIER_*; out: the tier used */
	__u32 handle;		/* out: non-zero, valid for this open file only */
	__u64 mmap_offset;	/* out: offset to pass to mmap() */
	__u64 reserved[2];	/* in: must be 0 */
};

/* EMUV_IOCTL_FREE: free an allocation (EBUSY while mapped). */
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

#define EMUV_IOCTL_INFO _IOWR(EMUV_IOCTL_TYPE, 0x00, struct emuv_info)
#define EMUV_IOCTL_ALLOC _IOWR(EMUV_IOCTL_TYPE, 0x01, struct emuv_alloc)
#define EMUV_IOCTL_FREE _IOW(EMUV_IOCTL_TYPE, 0x02, struct emuv_free)
#define EMUV_IOCTL_QUERY _IOWR(EMUV_IOCTL_TYPE, 0x03, struct emuv_query)

#endif /* _UAPI_EMUV_H */
