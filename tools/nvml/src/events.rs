// SPDX-License-Identifier: GPL-2.0
//! NVML's events, as device plugins use them for health checks: `nvmlEventSetCreate`,
//! `nvmlDeviceRegisterEvents`, `nvmlEventSetWait_v2` (and the older `nvmlEventSetWait`),
//! `nvmlEventSetFree`, `nvmlDeviceGetSupportedEventTypes`.
//!
//! A card that falls off the bus (its `fail` attribute goes from `none` to `lost`, or the card
//! is removed) is an `nvmlEventTypeXidCriticalError` with Xid 79, as NVIDIA's driver reports it;
//! a rise of its uncorrected ECC count (`ecc_errors`) is an `nvmlEventTypeDoubleBitEccError`.
//! The kernel notifies changes of both attributes (`sysfs_notify`), so a wait sleeps in
//! `poll` until one changes; it also re-reads them every [`RECHECK`], which is what a wait
//! relies on where no notification comes (a module without it, fake trees in tests).

use crate::{
    code, handle_position, initialised, nvmlDevice_t, put, types::*, with_card, with_gpu,
    NvmlResult, HANDLES,
};
use emuv::gpus::{wait_for_change, Gpu, Watch};
use std::{
    collections::VecDeque,
    ffi::{c_uint, c_ulonglong},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// What an `nvmlEventSet_t` points at: nothing to read; its address names a set.
#[repr(C)]
pub struct nvmlEventSet_st {
    _opaque: [u8; 0],
}

#[allow(non_camel_case_types)]
pub type nvmlEventSet_t = *mut nvmlEventSet_st;

/// How often a wait re-reads the registered cards' state even without a notification.
const RECHECK: Duration = Duration::from_millis(100);

/// One card registered in a set: what it was last seen as, so that only changes are events.
struct Registration {
    /// Its position in the device list (its handle).
    position: usize,
    mask: c_ulonglong,
    watch: Watch,
    lost: bool,
    ecc_errors: Option<u64>,
}

/// An event found, not yet handed to a waiter.
struct Event {
    position: usize,
    event_type: c_ulonglong,
    data: c_ulonglong,
}

#[derive(Default)]
struct EventSet {
    registrations: Vec<Registration>,
    pending: VecDeque<Event>,
}

impl EventSet {
    /// Re-reads every registered card and queues what changed since the last look.
    fn scan(&mut self) {
        for r in &mut self.registrations {
            let lost = r.watch.lost();
            if lost && !r.lost && r.mask & NVML_EVENT_TYPE_XID_CRITICAL_ERROR != 0 {
                self.pending.push_back(Event {
                    position: r.position,
                    event_type: NVML_EVENT_TYPE_XID_CRITICAL_ERROR,
                    data: XID_FALLEN_OFF_THE_BUS,
                });
            }
            // Brought back (`fail` = `none`): the next loss is an event again.
            r.lost = lost;
            if r.mask & NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR != 0 {
                let now = r.watch.ecc_errors();
                if let (Some(now), Some(before)) = (now, r.ecc_errors) {
                    if now > before {
                        self.pending.push_back(Event {
                            position: r.position,
                            event_type: NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR,
                            data: 0,
                        });
                    }
                }
                if now.is_some() {
                    r.ecc_errors = now;
                }
            }
        }
    }
}

/// The live sets, by the address their handle holds. A set stays alive while a wait uses it,
/// even if another thread frees it meanwhile.
static SETS: Mutex<Vec<Arc<Mutex<EventSet>>>> = Mutex::new(Vec::new());

fn sets() -> MutexGuard<'static, Vec<Arc<Mutex<EventSet>>>> {
    // A panic cannot cross the C ABI (it aborts), so a poisoned lock holds consistent data.
    SETS.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock(set: &Mutex<EventSet>) -> MutexGuard<'_, EventSet> {
    set.lock().unwrap_or_else(|e| e.into_inner())
}

fn handle_of(set: &Arc<Mutex<EventSet>>) -> nvmlEventSet_t {
    Arc::as_ptr(set).cast_mut().cast()
}

/// The set behind a handle, if it is a live one of ours.
fn find(handle: nvmlEventSet_t) -> NvmlResult<Arc<Mutex<EventSet>>> {
    sets()
        .iter()
        .find(|s| handle_of(s) == handle)
        .cloned()
        .ok_or(NVML_ERROR_INVALID_ARGUMENT)
}

/// What a card can report: a loss always (a removed card is lost too); ECC errors when the
/// module counts them.
fn supported(g: &Gpu) -> c_ulonglong {
    let ecc = if g.has_ecc_counter() {
        NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR
    } else {
        0
    };
    NVML_EVENT_TYPE_XID_CRITICAL_ERROR | ecc
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    let result = initialised().and_then(|()| {
        let new = Arc::new(Mutex::new(EventSet::default()));
        // SAFETY: the caller's pointer, per NVML's contract.
        unsafe { put(set, handle_of(&new)) }?;
        sets().push(new);
        Ok(())
    });
    code(result)
}

#[no_mangle]
pub extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    let result = initialised().and_then(|()| {
        let mut sets = sets();
        let i = sets
            .iter()
            .position(|s| handle_of(s) == set)
            .ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        sets.swap_remove(i);
        Ok(())
    });
    code(result)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    types: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    with_gpu(device, |g| unsafe { put(types, supported(g)) })
}

/// Registers the supported ones of `event_types`; `NVML_ERROR_NOT_SUPPORTED` when none is
/// (asked for alone), as NVIDIA documents. Registering a card again adds to its types.
#[no_mangle]
pub extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    event_types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    let mut found = None;
    let checked = with_gpu(device, |g| {
        let mask = event_types & supported(g);
        if mask == 0 {
            return Err(NVML_ERROR_NOT_SUPPORTED);
        }
        let position = handle_position(device).ok_or(NVML_ERROR_INVALID_ARGUMENT)?;
        found = Some((position, mask, g.watch()));
        Ok(())
    });
    let Some((position, mask, mut watch)) = found else {
        return checked;
    };
    // The set's lock is taken without the library's: a wait may hold it for a while.
    let set = match find(set) {
        Ok(set) => set,
        Err(e) => return e,
    };
    let mut set = lock(&set);
    match set
        .registrations
        .iter_mut()
        .find(|r| r.position == position)
    {
        Some(r) => r.mask |= mask,
        None => {
            let (lost, ecc_errors) = (watch.lost(), watch.ecc_errors());
            set.registrations.push(Registration {
                position,
                mask,
                watch,
                lost,
                ecc_errors,
            });
        }
    }
    NVML_SUCCESS
}

/// Waits up to `timeout_ms` for the next event of `set` (0: looks once); the event, or
/// `NVML_ERROR_TIMEOUT`.
fn wait(set: nvmlEventSet_t, timeout_ms: c_uint) -> NvmlResult<Event> {
    initialised()?;
    let set = find(set)?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
    let mut set = lock(&set);
    loop {
        set.scan();
        if let Some(event) = set.pending.pop_front() {
            return Ok(event);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NVML_ERROR_TIMEOUT);
        }
        let watches = set.registrations.iter().map(|r| &r.watch);
        if wait_for_change(watches, left.min(RECHECK)).is_err() {
            // poll itself failed (no memory): keep the promised timeout without spinning.
            std::thread::sleep(left.min(RECHECK));
        }
    }
}

/// The event's device handle; the device is checked as any handle is, lost or not.
fn device_of(event: &Event) -> NvmlResult<nvmlDevice_t> {
    let device = &HANDLES[event.position] as nvmlDevice_t;
    code_result(with_card(device, |_| Ok(())))?;
    Ok(device)
}

fn code_result(code: nvmlReturn_t) -> NvmlResult {
    match code {
        NVML_SUCCESS => Ok(()),
        e => Err(e),
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    if data.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let result = wait(set, timeout_ms).and_then(|event| {
        let info = nvmlEventData_t {
            device: device_of(&event)?,
            event_type: event.event_type,
            event_data: event.data,
            gpu_instance_id: NVML_VALUE_NOT_AVAILABLE_UINT,
            compute_instance_id: NVML_VALUE_NOT_AVAILABLE_UINT,
        };
        // SAFETY: the caller's struct, per NVML's contract.
        unsafe { put(data, info) }
    });
    code(result)
}

/// The older wait, whose struct ends before the MIG instance IDs.
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_v1_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    if data.is_null() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    let result = wait(set, timeout_ms).and_then(|event| {
        let info = nvmlEventData_v1_t {
            device: device_of(&event)?,
            event_type: event.event_type,
            event_data: event.data,
        };
        // SAFETY: the caller's struct, per NVML's contract.
        unsafe { put(data, info) }
    });
    code(result)
}
