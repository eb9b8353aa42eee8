// SPDX-License-Identifier: GPL-2.0
//! Virtual memory management (`cuMemCreate`, `cuMemAddressReserve`, `cuMemMap`...), what
//! PyTorch's expandable segments use: physical memory is an emuv allocation of whole 2 MiB
//! granules; device addresses are ranges reserved with no access, as `cuMemAlloc`'s are; a
//! mapping puts part of a physical allocation at part of a reservation, reached by the library
//! through its own mapping of that part. Physical memory goes back to the card once its handle
//! is released and nothing maps it any more.

use crate::{
    context,
    driver::{self, Card},
    memory::{self, Reservation, CHUNK},
    put, status, sys, CuResult,
};
use emuv::Tier;
use nix::sys::mman::MapFlags;
use std::{
    collections::HashMap,
    ffi::c_uint,
    sync::{Arc, Mutex, MutexGuard},
};

const INVALID: sys::CUresult = sys::CUDA_ERROR_INVALID_VALUE;

/// One `cuMemCreate`: an allocation of the card's pool.
pub struct Physical {
    card: &'static Card,
    device: sys::CUdevice,
    emuv_handle: u32,
    len: usize,
    mmap_offset: u64,
    handle: u64,
}

impl Drop for Physical {
    fn drop(&mut self) {
        // Every view, which unmaps itself first, holds this: nothing maps it now.
        let _ = self.card.device.free(self.emuv_handle);
    }
}

/// The library's mapping of part of a physical allocation, for one `cuMemMap`.
pub struct View {
    // Dropped first: the mapping goes before the allocation it maps.
    mapping: emuv::Mapping,
    physical: Arc<Physical>,
}

// SAFETY: the mapping is only read through its address; the bytes are the program's to order.
unsafe impl Sync for View {}

impl View {
    pub fn base(&self) -> usize {
        self.mapping.as_ptr() as usize
    }
}

struct Vmm {
    /// Live handles (created and not released).
    handles: HashMap<u64, Arc<Physical>>,
    /// Reserved address ranges by start.
    reservations: HashMap<usize, Reservation>,
    next_handle: u64,
}

static VMM: Mutex<Option<Vmm>> = Mutex::new(None);

fn vmm() -> MutexGuard<'static, Option<Vmm>> {
    let mut guard = VMM.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(|| Vmm {
        handles: HashMap::new(),
        reservations: HashMap::new(),
        next_handle: 1,
    });
    guard
}

fn with_vmm<T>(f: impl FnOnce(&mut Vmm) -> CuResult<T>) -> CuResult<T> {
    let mut guard = vmm();
    match guard.as_mut() {
        Some(v) => f(v),
        None => Err(sys::CUDA_ERROR_UNKNOWN),
    }
}

/// The card a `CUmemAllocationProp` names: pinned device memory only.
fn device_of(prop: *const sys::CUmemAllocationProp) -> CuResult<sys::CUdevice> {
    // SAFETY: the caller's description, if not NULL.
    let prop = unsafe { prop.as_ref() }.ok_or(INVALID)?;
    if prop.type_ != sys::CU_MEM_ALLOCATION_TYPE_PINNED
        || prop.location.type_ != sys::CU_MEM_LOCATION_TYPE_DEVICE
    {
        return Err(INVALID);
    }
    driver::card(prop.location.id).map_err(|_| sys::CUDA_ERROR_INVALID_DEVICE)?;
    Ok(prop.location.id)
}

fn granular(n: usize) -> bool {
    n != 0 && n.is_multiple_of(CHUNK)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAddressReserve(
    out: *mut sys::CUdeviceptr,
    size: usize,
    alignment: usize,
    _addr: sys::CUdeviceptr,
    flags: u64,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if out.is_null()
            || !granular(size)
            || flags != 0
            || (alignment != 0 && !alignment.is_power_of_two())
        {
            return Err(INVALID);
        }
        // The address hint is only a hint; the kernel chooses.
        let reservation = Reservation::new(size, alignment.max(CHUNK))?;
        let start = reservation.start();
        memory::mark_device_addresses(start, size, true);
        with_vmm(|v| {
            v.reservations.insert(start, reservation);
            Ok(())
        })?;
        // SAFETY: an out-pointer from the caller, checked non-NULL.
        unsafe { put(out, start as sys::CUdeviceptr) }
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemAddressFree(ptr: sys::CUdeviceptr, size: usize) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let start = ptr as usize;
        let reservation = with_vmm(|v| {
            match v.reservations.get(&start) {
                Some(r) if r.len() == size => {}
                _ => return Err(INVALID),
            }
            v.reservations.remove(&start).ok_or(INVALID)
        })?;
        // What is still mapped there goes with it.
        drop(memory::take_mappings(start, size));
        memory::mark_device_addresses(start, size, false);
        drop(reservation);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemCreate(
    out: *mut sys::CUmemGenericAllocationHandle,
    size: usize,
    prop: *const sys::CUmemAllocationProp,
    flags: u64,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let device = device_of(prop)?;
        if out.is_null() || !granular(size) || flags != 0 {
            return Err(INVALID);
        }
        let card = driver::card(device)?;
        let allocation = card
            .device
            .alloc(size as u64, Tier::Any)
            .map_err(|_| sys::CUDA_ERROR_OUT_OF_MEMORY)?;
        let handle = with_vmm(|v| {
            let handle = v.next_handle;
            v.next_handle = handle.saturating_add(1);
            let physical = Physical {
                card,
                device,
                emuv_handle: allocation.handle,
                len: size,
                mmap_offset: allocation.mmap_offset,
                handle,
            };
            v.handles.insert(handle, Arc::new(physical));
            Ok(handle)
        })?;
        // SAFETY: an out-pointer from the caller, checked non-NULL.
        unsafe { put(out, handle) }
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemRelease(handle: sys::CUmemGenericAllocationHandle) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let physical = with_vmm(|v| v.handles.remove(&handle).ok_or(INVALID))?;
        // Freed now if nothing maps it, else when the last mapping goes.
        drop(physical);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemMap(
    ptr: sys::CUdeviceptr,
    size: usize,
    offset: usize,
    handle: sys::CUmemGenericAllocationHandle,
    flags: u64,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let start = ptr as usize;
        if !granular(size) || !offset.is_multiple_of(CHUNK) || flags != 0 {
            return Err(INVALID);
        }
        let end = start.checked_add(size).ok_or(INVALID)?;
        let physical = with_vmm(|v| {
            // Within one reservation.
            let inside = v
                .reservations
                .values()
                .any(|r| r.start() <= start && end <= r.start() + r.len());
            if !inside {
                return Err(INVALID);
            }
            v.handles.get(&handle).cloned().ok_or(INVALID)
        })?;
        if offset.checked_add(size).is_none_or(|e| e > physical.len) {
            return Err(INVALID);
        }
        if memory::overlaps_a_range(start, size) {
            return Err(INVALID);
        }
        let mapping = physical
            .card
            .device
            .map_range(
                physical.mmap_offset + offset as u64,
                size,
                MapFlags::MAP_SHARED,
            )
            .map_err(|_| sys::CUDA_ERROR_OUT_OF_MEMORY)?;
        let ctx = context::current().map(|c| c.handle).unwrap_or(0);
        let device = physical.device;
        let view = Arc::new(View { mapping, physical });
        memory::insert_mapping(start, size, device, ctx, view);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemUnmap(ptr: sys::CUdeviceptr, size: usize) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let views = memory::take_mappings(ptr as usize, size).ok_or(INVALID)?;
        drop(views);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemSetAccess(
    ptr: sys::CUdeviceptr,
    size: usize,
    desc: *const sys::CUmemAccessDesc,
    count: usize,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if desc.is_null() || count == 0 {
            return Err(INVALID);
        }
        // SAFETY: the caller's array of `count` descriptors.
        let descs = unsafe { std::slice::from_raw_parts(desc, count) };
        let mut flags = 0;
        for d in descs {
            if d.location.type_ != sys::CU_MEM_LOCATION_TYPE_DEVICE
                || !matches!(
                    d.flags,
                    sys::CU_MEM_ACCESS_FLAGS_PROT_NONE
                        | sys::CU_MEM_ACCESS_FLAGS_PROT_READ
                        | sys::CU_MEM_ACCESS_FLAGS_PROT_READWRITE
                )
            {
                return Err(INVALID);
            }
            driver::card(d.location.id)?;
            flags = d.flags as c_uint;
        }
        memory::set_access(ptr as usize, size, flags)
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetAccess(
    out: *mut u64,
    location: *const sys::CUmemLocation,
    ptr: sys::CUdeviceptr,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        // SAFETY: the caller's location, if not NULL.
        let location = unsafe { location.as_ref() }.ok_or(INVALID)?;
        if location.type_ != sys::CU_MEM_LOCATION_TYPE_DEVICE {
            return Err(INVALID);
        }
        let (_, flags) = memory::mapping_at(ptr as usize).ok_or(INVALID)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, u64::from(flags)) }
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemRetainAllocationHandle(
    out: *mut sys::CUmemGenericAllocationHandle,
    addr: *mut std::ffi::c_void,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let (view, _) = memory::mapping_at(addr as usize).ok_or(INVALID)?;
        let physical = view.physical.clone();
        let handle = physical.handle;
        // The handle is live again (to be released once more), as the driver documents.
        with_vmm(|v| {
            v.handles.entry(handle).or_insert(physical);
            Ok(())
        })?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, handle) }
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetAllocationPropertiesFromHandle(
    prop: *mut sys::CUmemAllocationProp,
    handle: sys::CUmemGenericAllocationHandle,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let device = with_vmm(|v| v.handles.get(&handle).map(|p| p.device).ok_or(INVALID))?;
        let value = sys::CUmemAllocationProp {
            type_: sys::CU_MEM_ALLOCATION_TYPE_PINNED,
            location: sys::CUmemLocation {
                type_: sys::CU_MEM_LOCATION_TYPE_DEVICE,
                id: device,
            },
            ..Default::default()
        };
        // SAFETY: an out-pointer from the caller.
        unsafe { put(prop, value) }
    })();
    status(result)
}

/// Sharing a physical allocation with another process: emuv's allocations belong to the
/// process that made them (the kernel counts and frees them per process), so an export is
/// refused, for a handle that exists, with the reason said once. PyTorch needs the function to
/// exist (its expandable segments resolve it at start) and calls it only to share tensors
/// between processes.
#[no_mangle]
pub unsafe extern "C" fn cuMemExportToShareableHandle(
    out: *mut std::ffi::c_void,
    handle: sys::CUmemGenericAllocationHandle,
    _handle_type: sys::CUmemAllocationHandleType,
    flags: u64,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if out.is_null() || flags != 0 {
            return Err(INVALID);
        }
        with_vmm(|v| v.handles.get(&handle).map(drop).ok_or(INVALID))?;
        crate::say_once(
            "export",
            "sharing device memory with another process (cuMemExportToShareableHandle) is not \
             supported on emulated cards: emuv's memory belongs to the process that allocated it",
        );
        Err(sys::CUDA_ERROR_NOT_SUPPORTED)
    })();
    status(result)
}

/// The other half: no process exports, so there is nothing to import.
#[no_mangle]
pub unsafe extern "C" fn cuMemImportFromShareableHandle(
    out: *mut sys::CUmemGenericAllocationHandle,
    os_handle: *mut std::ffi::c_void,
    _handle_type: sys::CUmemAllocationHandleType,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if out.is_null() || os_handle.is_null() {
            return Err(INVALID);
        }
        Err(sys::CUDA_ERROR_NOT_SUPPORTED)
    })();
    status(result)
}
