// SPDX-License-Identifier: GPL-2.0

//! The module's copy of `include/uapi/emuv.h`.
//!
//! Plain `core` Rust, so that the userspace test crate can compile this very file and check it
//! against the header (sizes, field offsets, ioctl numbers). Keep the two in step.

/// `EMUV_ABI_VERSION`.
pub(crate) const ABI_VERSION: u32 = 2;
/// `EMUV_IOCTL_TYPE`.
pub(crate) const IOCTL_TYPE: u32 = 0xE7;

pub(crate) const TIER_ANY: u32 = 0;
pub(crate) const TIER_PHYSICAL: u32 = 1;
pub(crate) const TIER_VIRTUAL: u32 = 2;

pub(crate) const STRATEGY_LAZY: u32 = 0;
pub(crate) const STRATEGY_EAGER: u32 = 1;

/// `struct emuv_tier_info`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct TierInfo {
    pub(crate) capacity: u64,
    pub(crate) used: u64,
    pub(crate) resident: u64,
}

/// `struct emuv_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Info {
    pub(crate) size: u32,
    pub(crate) abi_version: u32,
    pub(crate) vendor_id: u16,
    pub(crate) device_id: u16,
    pub(crate) strategy: u32,
    pub(crate) name: [u8; 64],
    pub(crate) model: [u8; 32],
    pub(crate) tiers: [TierInfo; 2],
    pub(crate) total: u64,
    pub(crate) used: u64,
    pub(crate) free: u64,
    pub(crate) file_limit: u64,
    pub(crate) file_used: u64,
    pub(crate) user_limit: u64,
    pub(crate) user_used: u64,
    pub(crate) file_allocations_limit: u32,
    pub(crate) file_allocations: u32,
    pub(crate) reserved: [u64; 1],
}

/// `struct emuv_alloc`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Alloc {
    pub(crate) size: u32,
    pub(crate) flags: u32,
    pub(crate) bytes: u64,
    pub(crate) tier: u32,
    pub(crate) handle: u32,
    pub(crate) mmap_offset: u64,
    pub(crate) reserved: [u64; 2],
}

/// `struct emuv_free`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Free {
    pub(crate) handle: u32,
    pub(crate) flags: u32,
    pub(crate) reserved: u64,
}

/// `struct emuv_query`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Query {
    pub(crate) handle: u32,
    pub(crate) flags: u32,
    pub(crate) bytes: u64,
    pub(crate) resident: u64,
    pub(crate) mmap_offset: u64,
    pub(crate) tier: u32,
    pub(crate) mappings: u32,
    pub(crate) reserved: [u64; 2],
}

/// `EMUV_PROCESS_EXITED`.
pub(crate) const PROCESS_EXITED: u32 = 1;

/// `struct emuv_process`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Process {
    pub(crate) pid: i32,
    pub(crate) flags: u32,
    pub(crate) comm: [u8; 16],
    pub(crate) bytes: u64,
    pub(crate) allocations: u64,
    pub(crate) reserved: [u64; 2],
}

/// `struct emuv_processes`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Processes {
    pub(crate) size: u32,
    pub(crate) entry_size: u32,
    pub(crate) count: u32,
    pub(crate) total: u32,
    pub(crate) entries: u64,
    pub(crate) reserved: [u64; 2],
}

/// `_IOC(dir, type, nr, size)` of `include/uapi/asm-generic/ioctl.h`.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | (IOCTL_TYPE << 8) | nr
}
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `EMUV_IOCTL_INFO`.
pub(crate) const IOCTL_INFO: u32 = ioc(IOC_READ | IOC_WRITE, 0x00, core::mem::size_of::<Info>());
/// `EMUV_IOCTL_ALLOC`.
pub(crate) const IOCTL_ALLOC: u32 = ioc(IOC_READ | IOC_WRITE, 0x01, core::mem::size_of::<Alloc>());
/// `EMUV_IOCTL_FREE`.
pub(crate) const IOCTL_FREE: u32 = ioc(IOC_WRITE, 0x02, core::mem::size_of::<Free>());
/// `EMUV_IOCTL_QUERY`.
pub(crate) const IOCTL_QUERY: u32 = ioc(IOC_READ | IOC_WRITE, 0x03, core::mem::size_of::<Query>());
/// `EMUV_IOCTL_PROCESSES`.
pub(crate) const IOCTL_PROCESSES: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x04,
    core::mem::size_of::<Processes>(),
);

/// Each open file's mmap offsets, in pages, lie in `1..MMAP_PAGE_OFFSETS`: an allocation of N
/// pages gets a range of N page offsets of its own, and the first is its handle. 2^32 pages
/// is what a 32-bit caller's `mmap2` can name.
pub(crate) const MMAP_PAGE_OFFSETS: u64 = 1 << 32;
