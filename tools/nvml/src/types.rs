// SPDX-License-Identifier: GPL-2.0
//! NVIDIA's C types, return codes and error texts (nvml.h, NVML_API_VERSION 13). Layouts are
//! checked by the tests below against the sizes and offsets of the real header.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_uint, c_ulonglong, CStr};

#[allow(non_camel_case_types)]
pub type nvmlReturn_t = c_uint;

pub const NVML_SUCCESS: nvmlReturn_t = 0;
pub const NVML_ERROR_UNINITIALIZED: nvmlReturn_t = 1;
pub const NVML_ERROR_INVALID_ARGUMENT: nvmlReturn_t = 2;
pub const NVML_ERROR_NOT_SUPPORTED: nvmlReturn_t = 3;
pub const NVML_ERROR_NOT_FOUND: nvmlReturn_t = 6;
pub const NVML_ERROR_INSUFFICIENT_SIZE: nvmlReturn_t = 7;
pub const NVML_ERROR_DRIVER_NOT_LOADED: nvmlReturn_t = 9;
pub const NVML_ERROR_TIMEOUT: nvmlReturn_t = 10;
pub const NVML_ERROR_GPU_IS_LOST: nvmlReturn_t = 15;
pub const NVML_ERROR_ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = 25;
pub const NVML_ERROR_UNKNOWN: nvmlReturn_t = 999;

/// `nvmlInitWithFlags`: initialise even when there is no GPU.
pub const NVML_INIT_FLAG_NO_GPUS: c_uint = 1;

pub const NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE: usize = 32;
pub const NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE: usize = 16;
/// `gpuInstanceId`/`computeInstanceId` of a process on a GPU without MIG.
pub const NVML_VALUE_NOT_AVAILABLE_UINT: c_uint = 0xFFFF_FFFF;
/// `NVML_COMPUTEMODE_DEFAULT`.
pub const NVML_COMPUTEMODE_DEFAULT: c_uint = 0;

/// `nvmlDeviceArchitecture_t`.
pub const NVML_DEVICE_ARCH_ADA: c_uint = 8;
pub const NVML_DEVICE_ARCH_BLACKWELL: c_uint = 10;
/// `nvmlBrandType_t`: what GeForce RTX cards report (`NVML_BRAND_GEFORCE_RTX`, 15, is marked
/// "Unused" in nvml.h, and nvidia-smi prints "Product Brand : GeForce" for RTX 40xx and 50xx).
pub const NVML_BRAND_GEFORCE: c_uint = 5;

/// `nvmlClockType_t`.
pub const NVML_CLOCK_GRAPHICS: c_uint = 0;
pub const NVML_CLOCK_SM: c_uint = 1;
pub const NVML_CLOCK_MEM: c_uint = 2;
pub const NVML_CLOCK_VIDEO: c_uint = 3;

/// `nvmlMemoryErrorType_t`.
pub const NVML_MEMORY_ERROR_TYPE_CORRECTED: c_uint = 0;
pub const NVML_MEMORY_ERROR_TYPE_UNCORRECTED: c_uint = 1;
/// `nvmlEccCounterType_t`: volatile (since the driver loaded) and aggregate (lifetime); emuv's
/// counter starts at load, so both are the same.
pub const NVML_VOLATILE_ECC: c_uint = 0;
pub const NVML_AGGREGATE_ECC: c_uint = 1;
/// `nvmlMemoryLocation_t`: emuv's errors are device memory's (DRAM); the other locations
/// (L1 = 0 ... SRAM = 7) have none.
pub const NVML_MEMORY_LOCATION_DRAM: c_uint = 2;
pub const NVML_MEMORY_LOCATION_SRAM: c_uint = 7;

/// Event types (`nvmlEventType*`), a bit mask.
pub const NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR: c_ulonglong = 0x2;
pub const NVML_EVENT_TYPE_XID_CRITICAL_ERROR: c_ulonglong = 0x8;
/// The Xid of a GPU that has fallen off the bus.
pub const XID_FALLEN_OFF_THE_BUS: c_ulonglong = 79;

/// What `nvmlErrorString` returns: the real library's texts (as NVIDIA's DCGM table and captured
/// nvidia-smi output give them).
pub fn error_string(code: nvmlReturn_t) -> &'static CStr {
    match code {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        11 => c"Interrupt Request Issue",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        14 => c"Corrupted infoROM",
        15 => c"GPU is lost",
        16 => c"GPU requires reset",
        17 => c"GPU access blocked by the operating system",
        18 => c"Driver/library version mismatch",
        19 => c"In use by another client",
        20 => c"Insufficient Memory",
        21 => c"No data",
        23 => c"Insufficient Resources",
        25 => c"Argument version mismatch",
        26 => c"Requested functionality has been deprecated",
        27 => c"System is not in ready state",
        _ => c"Unknown Error",
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nvmlMemory_t {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nvmlMemory_v2_t {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    /// Includes `reserved`.
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2`: the struct's size with version 2 in the top byte.
pub const NVML_MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | 2 << 24;

/// Filled by `nvmlDeviceGetPciInfo_v3`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nvmlPciInfo_t {
    /// `%04X:%02X:%02X.0`
    pub bus_id_legacy: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    /// `(device_id << 16) | vendor_id`
    pub pci_device_id: c_uint,
    pub pci_sub_system_id: c_uint,
    /// `%08X:%02X:%02X.0`
    pub bus_id: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_SIZE],
}

/// Filled by the unversioned `nvmlDeviceGetPciInfo` and `_v2` (the pre-9.0 layout).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nvmlPciInfo_v2_t {
    pub bus_id: [c_char; NVML_DEVICE_PCI_BUS_ID_BUFFER_V2_SIZE],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pci_device_id: c_uint,
    pub pci_sub_system_id: c_uint,
    pub reserved: [c_uint; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nvmlUtilization_t {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// The unversioned `nvmlDeviceGet*RunningProcesses`' entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nvmlProcessInfo_v1_t {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
}

/// The `_v2` and `_v3` entry (`nvmlProcessInfo_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nvmlProcessInfo_t {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct nvmlBAR1Memory_t {
    pub bar1_total: c_ulonglong,
    pub bar1_free: c_ulonglong,
    pub bar1_used: c_ulonglong,
}

/// What `nvmlEventSetWait_v2` fills; `nvmlEventSetWait` fills the first three fields only (its
/// struct ended there).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nvmlEventData_t {
    pub device: *const crate::nvmlDevice_st,
    pub event_type: c_ulonglong,
    /// The Xid for `nvmlEventTypeXidCriticalError`, 0 for the others.
    pub event_data: c_ulonglong,
    /// 0xFFFFFFFF: not a MIG instance's event.
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

/// The first fields of [`nvmlEventData_t`], all that `nvmlEventSetWait` (v1) writes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct nvmlEventData_v1_t {
    pub device: *const crate::nvmlDevice_st,
    pub event_type: c_ulonglong,
    pub event_data: c_ulonglong,
}

/// One process-list entry layout.
pub trait ProcessEntry: Copy {
    fn new(pid: u32, used_bytes: u64) -> Self;
}

impl ProcessEntry for nvmlProcessInfo_v1_t {
    fn new(pid: u32, used_bytes: u64) -> Self {
        Self {
            pid,
            used_gpu_memory: used_bytes,
        }
    }
}

impl ProcessEntry for nvmlProcessInfo_t {
    fn new(pid: u32, used_bytes: u64) -> Self {
        Self {
            pid,
            used_gpu_memory: used_bytes,
            gpu_instance_id: NVML_VALUE_NOT_AVAILABLE_UINT,
            compute_instance_id: NVML_VALUE_NOT_AVAILABLE_UINT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_nvml_h() {
        assert_eq!(size_of::<nvmlMemory_t>(), 24);
        assert_eq!(size_of::<nvmlMemory_v2_t>(), 40);
        assert_eq!(offset_of!(nvmlMemory_v2_t, total), 8);
        assert_eq!(NVML_MEMORY_V2, 0x0200_0028);
        assert_eq!(size_of::<nvmlPciInfo_t>(), 68);
        assert_eq!(offset_of!(nvmlPciInfo_t, pci_device_id), 28);
        assert_eq!(offset_of!(nvmlPciInfo_t, bus_id), 36);
        assert_eq!(size_of::<nvmlPciInfo_v2_t>(), 52);
        assert_eq!(size_of::<nvmlProcessInfo_v1_t>(), 16);
        assert_eq!(size_of::<nvmlProcessInfo_t>(), 24);
        assert_eq!(offset_of!(nvmlProcessInfo_t, gpu_instance_id), 16);
        assert_eq!(size_of::<nvmlUtilization_t>(), 8);
        assert_eq!(size_of::<nvmlBAR1Memory_t>(), 24);
        assert_eq!(offset_of!(nvmlBAR1Memory_t, bar1_free), 8);
        assert_eq!(size_of::<nvmlEventData_t>(), 32);
        assert_eq!(offset_of!(nvmlEventData_t, event_type), 8);
        assert_eq!(offset_of!(nvmlEventData_t, event_data), 16);
        assert_eq!(offset_of!(nvmlEventData_t, gpu_instance_id), 24);
        assert_eq!(offset_of!(nvmlEventData_t, compute_instance_id), 28);
        assert_eq!(size_of::<nvmlEventData_v1_t>(), 24);
    }

    #[test]
    fn error_strings_are_nvidias() {
        assert_eq!(
            error_string(NVML_ERROR_DRIVER_NOT_LOADED),
            c"Driver Not Loaded"
        );
        assert_eq!(
            error_string(NVML_ERROR_INSUFFICIENT_SIZE),
            c"Insufficient Size"
        );
        assert_eq!(error_string(12345), c"Unknown Error");
    }
}
