// SPDX-License-Identifier: GPL-2.0
//! The module's copy of the ABI (`uapi.rs` at the root of the repository, compiled here as is)
//! against the header (bindgen types, C-computed ioctl numbers): same sizes, same field
//! offsets, same constants, same ioctl numbers.

#[allow(dead_code)]
#[path = "../../../uapi.rs"]
mod module_uapi;

use emuv::{ioctl_numbers, sys};
use std::mem::{offset_of, size_of};

macro_rules! same_layout {
    ($kernel:ty, $c:ty, [$($field:ident),+]) => {{
        assert_eq!(size_of::<$kernel>(), size_of::<$c>(), "size of {}", stringify!($c));
        $(assert_eq!(
            offset_of!($kernel, $field),
            offset_of!($c, $field),
            "offset of {}.{}", stringify!($c), stringify!($field)
        );)+
    }};
}

#[test]
fn structs_match_the_header() {
    same_layout!(
        module_uapi::TierInfo,
        sys::emuv_tier_info,
        [capacity, used, resident]
    );
    same_layout!(
        module_uapi::Info,
        sys::emuv_info,
        [
            size,
            abi_version,
            vendor_id,
            device_id,
            strategy,
            name,
            model,
            tiers,
            total,
            used,
            free,
            file_limit,
            file_used,
            user_limit,
            user_used,
            file_allocations_limit,
            file_allocations,
            reserved
        ]
    );
    same_layout!(
        module_uapi::Alloc,
        sys::emuv_alloc,
        [size, flags, bytes, tier, handle, mmap_offset, reserved]
    );
    same_layout!(module_uapi::Free, sys::emuv_free, [handle, flags, reserved]);
    same_layout!(
        module_uapi::Query,
        sys::emuv_query,
        [
            handle,
            flags,
            bytes,
            resident,
            mmap_offset,
            tier,
            mappings,
            reserved
        ]
    );
    same_layout!(
        module_uapi::Process,
        sys::emuv_process,
        [pid, flags, comm, bytes, allocations, reserved]
    );
    same_layout!(
        module_uapi::Processes,
        sys::emuv_processes,
        [size, entry_size, count, total, entries, reserved]
    );
}

#[test]
fn constants_match_the_header() {
    assert_eq!(module_uapi::ABI_VERSION, sys::EMUV_ABI_VERSION);
    assert_eq!(module_uapi::IOCTL_TYPE, sys::EMUV_IOCTL_TYPE);
    assert_eq!(module_uapi::TIER_ANY, sys::EMUV_TIER_ANY);
    assert_eq!(module_uapi::TIER_PHYSICAL, sys::EMUV_TIER_PHYSICAL);
    assert_eq!(module_uapi::TIER_VIRTUAL, sys::EMUV_TIER_VIRTUAL);
    assert_eq!(module_uapi::STRATEGY_LAZY, sys::EMUV_STRATEGY_LAZY);
    assert_eq!(module_uapi::STRATEGY_EAGER, sys::EMUV_STRATEGY_EAGER);
    assert_eq!(module_uapi::PROCESS_EXITED, sys::EMUV_PROCESS_EXITED);
}

#[test]
fn ioctl_numbers_match_the_header() {
    let c = ioctl_numbers();
    assert_eq!(module_uapi::IOCTL_INFO, c.info);
    assert_eq!(module_uapi::IOCTL_ALLOC, c.alloc);
    assert_eq!(module_uapi::IOCTL_FREE, c.free);
    assert_eq!(module_uapi::IOCTL_QUERY, c.query);
    assert_eq!(module_uapi::IOCTL_PROCESSES, c.processes);
}
