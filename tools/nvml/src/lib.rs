// SPDX-License-Identifier: GPL-2.0
//! `libnvidia-ml.so.1` for emuv: the NVML functions that pynvml, gpustat, nvitop and device
//! plugins call, answered live from emuv (identity, model facts, memory, lost state and ECC
//! errors from sysfs, processes from the device node's `EMUV_IOCTL_PROCESSES`), events from
//! sysfs notifications (`events.rs`), and `NVML_ERROR_NOT_SUPPORTED` for the other getters
//! they may call (see `stubs.rs`).
//!
//! Every export follows NVIDIA's documented contract for it (nvml.h): pointers are the
//! caller's, checked for NULL, written only on success. A card that has fallen off the bus
//! (`fail` is `lost`) answers `NVML_ERROR_GPU_IS_LOST`, as a real one does; the others are
//! unaffected.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod events;
mod stubs;
mod types;

use emuv::{
    gpus::{Gpu, Roots},
    printable,
};
use std::{
    ffi::{c_char, c_uint, CStr},
    io,
    os::unix::ffi::OsStrExt,
    sync::{Mutex, MutexGuard},
};
use types::*;

/// The most GPUs one process can see through this library.
const MAX_DEVICES: usize = 64;

/// An `nvmlDevice_t` points at one of these: stable addresses for the life of the process.
#[repr(C)]
pub struct nvmlDevice_st {
    index: u32,
}

#[allow(non_camel_case_types)]
pub type nvmlDevice_t = *const nvmlDevice_st;

static HANDLES: [nvmlDevice_st; MAX_DEVICES] = {
    let mut handles = [const { nvmlDevice_st { index: 0 } }; MAX_DEVICES];
    let mut i = 0;
    while i < MAX_DEVICES {
        handles[i].index = i as u32;
        i += 1;
    }
    handles
};

/// What `nvmlInit` found; NVML keeps the device list fixed until `nvmlShutdown` (a card removed
/// meanwhile is lost).
struct State {
    init_count: u32,
    gpus: Vec<Gpu>,
    /// The module's `driver_version` parameter, when it has one.
    driver_version: Option<String>,
}

static STATE: Mutex<State> = Mutex::new(State {
    init_count: 0,
    gpus: Vec::new(),
    driver_version: None,
});

fn state() -> MutexGuard<'static, State> {
    // A panic cannot cross the C ABI (it aborts), so a poisoned lock holds consistent data.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

type NvmlResult<T = ()> = Result<T, nvmlReturn_t>;

fn code(result: NvmlResult) -> nvmlReturn_t {
    result.err().unwrap_or(NVML_SUCCESS)
}

/// The position in the device list of the card behind `device`, if the handle is ours.
fn handle_position(device: nvmlDevice_t) -> Option<usize> {
    let base = HANDLES.as_ptr() as usize;
    let offset = (device as usize).wrapping_sub(base);
    let size = std::mem::size_of::<nvmlDevice_st>();
    (offset.is_multiple_of(size) && offset / size < MAX_DEVICES).then_some(offset / size)
}

/// Runs `f` on the card behind `device`, if the library is initialised and the handle is ours,
/// lost or not: for what identifies the card (see [`with_gpu`]).
fn with_card(device: nvmlDevice_t, f: impl FnOnce(&Gpu) -> NvmlResult) -> nvmlReturn_t {
    let state = state();
    if state.init_count == 0 {
        return NVML_ERROR_UNINITIALIZED;
    }
    match handle_position(device).and_then(|i| state.gpus.get(i)) {
        Some(gpu) => code(f(gpu)),
        None => NVML_ERROR_INVALID_ARGUMENT,
    }
}

/// Runs `f` on the GPU behind `device`, as [`with_card`], unless the card has fallen off the
/// bus: `NVML_ERROR_GPU_IS_LOST` then, for every query on a handle obtained earlier. Only the
/// identity the handle names (UUID, PCI info, index) still answers for a lost card, so that a
/// program told of the loss (Xid 79, `events.rs`) can tell which card it was: NVIDIA's device
/// plugin asks the event's device for its UUID, and marks every GPU unhealthy when it cannot.
fn with_gpu(device: nvmlDevice_t, f: impl FnOnce(&Gpu) -> NvmlResult) -> nvmlReturn_t {
    with_card(device, |gpu| {
        if gpu.is_lost() {
            return Err(NVML_ERROR_GPU_IS_LOST);
        }
        f(gpu)
    })
}

/// Reading emuv's state failed after init: the module went away (or its sysfs did).
fn lost(_: io::Error) -> nvmlReturn_t {
    NVML_ERROR_GPU_IS_LOST
}

/// Writes `*ptr = value`, NULL being an invalid argument.
unsafe fn put<T>(ptr: *mut T, value: T) -> NvmlResult {
    if ptr.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and NVML's contract makes it point to a writable `T`.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// Copies `text` and its NUL into the caller's buffer of `length` bytes.
unsafe fn put_str(buffer: *mut c_char, length: c_uint, text: &str) -> NvmlResult {
    if buffer.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    if text.len() + 1 > length as usize {
        return Err(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    // SAFETY: the caller's buffer holds `length` bytes, at least `text.len() + 1`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast(), buffer, text.len());
        buffer.add(text.len()).write(0);
    }
    Ok(())
}

/// A fixed C string field, NUL-padded.
fn c_field<const N: usize>(text: &str) -> [c_char; N] {
    let mut field = [0; N];
    for (dst, src) in field.iter_mut().zip(text.bytes().take(N - 1)) {
        *dst = src as c_char;
    }
    field
}

/// Reads a C string argument.
unsafe fn arg_str<'a>(ptr: *const c_char) -> NvmlResult<&'a str> {
    if ptr.is_null() {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    // SAFETY: NVML's contract: a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| NVML_ERROR_INVALID_ARGUMENT)
}

// Library.

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(flags: c_uint) -> nvmlReturn_t {
    init_in(flags, &Roots::default())
}

/// `nvmlInitWithFlags` with emuv looked for in `roots` (a fake tree in tests).
fn init_in(flags: c_uint, roots: &Roots) -> nvmlReturn_t {
    let mut state = state();
    if state.init_count > 0 {
        state.init_count += 1;
        return NVML_SUCCESS;
    }
    let gpus = match roots.list() {
        Ok(gpus) => gpus,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if flags & NVML_INIT_FLAG_NO_GPUS == 0 {
                return NVML_ERROR_DRIVER_NOT_LOADED;
            }
            Vec::new()
        }
        Err(_) => return NVML_ERROR_UNKNOWN,
    };
    state.gpus = gpus.into_iter().take(MAX_DEVICES).collect();
    state.driver_version = roots.driver_version();
    state.init_count = 1;
    NVML_SUCCESS
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    nvmlInitWithFlags(0)
}

#[no_mangle]
pub extern "C" fn nvmlInit() -> nvmlReturn_t {
    nvmlInitWithFlags(0)
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    let mut state = state();
    match state.init_count {
        0 => NVML_ERROR_UNINITIALIZED,
        1 => {
            state.init_count = 0;
            state.gpus.clear();
            state.driver_version = None;
            NVML_SUCCESS
        }
        _ => {
            state.init_count -= 1;
            NVML_SUCCESS
        }
    }
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    error_string(result).as_ptr()
}

fn initialised() -> NvmlResult {
    match state().init_count {
        0 => Err(NVML_ERROR_UNINITIALIZED),
        _ => Ok(()),
    }
}

/// emuv's own version, where a module without the `driver_version` parameter leaves NVIDIA's
/// driver version.
const EMUV_VERSION: &str = env!("CARGO_PKG_VERSION");

/// NVML's major version (`NVML_API_VERSION` of the 580 driver's nvml.h), which the NVML
/// version string leads with: `13.580.159.04`.
const NVML_API_VERSION: u32 = 13;

/// The module's `driver_version` parameter (programs refuse drivers they think too old), or
/// emuv's version on a module without it.
fn driver_version(state: &State) -> &str {
    state.driver_version.as_deref().unwrap_or(EMUV_VERSION)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    let state = state();
    if state.init_count == 0 {
        return NVML_ERROR_UNINITIALIZED;
    }
    // SAFETY: the caller's buffer, per NVML's contract.
    code(unsafe { put_str(version, length, driver_version(&state)) })
}

/// NVIDIA's form, `13.580.159.04`, with the driver version; emuv's version when the module
/// has none (or NVML is not initialised, which this call does not need).
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    let text = match &state().driver_version {
        Some(driver) => format!("{NVML_API_VERSION}.{driver}"),
        None => EMUV_VERSION.to_owned(),
    };
    // SAFETY: as above.
    code(unsafe { put_str(version, length, &text) })
}

/// There is no CUDA driver behind an emulated GPU; a made-up CUDA version would send programs
/// looking for one.
#[no_mangle]
pub extern "C" fn nvmlSystemGetCudaDriverVersion(_version: *mut i32) -> nvmlReturn_t {
    match initialised() {
        Ok(()) => NVML_ERROR_NOT_SUPPORTED,
        Err(e) => e,
    }
}

#[no_mangle]
pub extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut i32) -> nvmlReturn_t {
    nvmlSystemGetCudaDriverVersion(version)
}

/// The program a process runs, as nvidia-smi prints it; its command name if /proc hides that.
/// Either may hold any byte: escaped by [`printable`], the name is UTF-8 on one line, which
/// Python clients decode. PID 0 (a file whose opener has exited) is no process: not found.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetProcessName(
    pid: c_uint,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    let found = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| printable(p.as_os_str().as_bytes()))
        .or_else(|_| {
            std::fs::read(format!("/proc/{pid}/comm"))
                .map(|comm| printable(comm.strip_suffix(b"\n").unwrap_or(&comm)))
        });
    let result = initialised().and_then(|()| {
        let text = found.map_err(|_| NVML_ERROR_NOT_FOUND)?;
        // NVML truncates to the caller's buffer rather than failing, at a character boundary.
        let mut cut = text.len().min((length as usize).saturating_sub(1));
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = text.get(..cut).unwrap_or("");
        // SAFETY: the caller's buffer, per NVML's contract.
        unsafe { put_str(name, length, text) }
    });
    code(result)
}

// Device identity.

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    let state = state();
    if state.init_count == 0 {
        return NVML_ERROR_UNINITIALIZED;
    }
    // SAFETY: the caller's pointer, per NVML's contract.
    code(unsafe { put(count, state.gpus.len() as c_uint) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetCount_v2(count) }
}

/// The handle of the first GPU of the list `nvmlInit` made that `pick` chooses; none for a
/// lost card (`NVML_ERROR_GPU_IS_LOST`, as NVIDIA documents for these calls).
unsafe fn handle_where(device: *mut nvmlDevice_t, pick: impl Fn(&Gpu) -> bool) -> nvmlReturn_t {
    let state = state();
    if state.init_count == 0 {
        return NVML_ERROR_UNINITIALIZED;
    }
    match state.gpus.iter().position(pick) {
        Some(i) if state.gpus[i].is_lost() => NVML_ERROR_GPU_IS_LOST,
        // SAFETY: the caller's pointer, per NVML's contract.
        Some(i) => code(unsafe { put(device, &HANDLES[i] as nvmlDevice_t) }),
        None => NVML_ERROR_NOT_FOUND,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    let state = state();
    if state.init_count > 0 && index as usize >= state.gpus.len() {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    drop(state);
    // SAFETY: same contract.
    unsafe { handle_where(device, |g| g.index == index) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetHandleByIndex_v2(index, device) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's string, per NVML's contract.
    match unsafe { arg_str(uuid) } {
        // SAFETY: same contract.
        Ok(uuid) => unsafe { handle_where(device, |g| g.uuid().eq_ignore_ascii_case(uuid)) },
        Err(e) => e,
    }
}

/// Accepts both bus ID forms, `00000000:01:00.0` and `0000:01:00.0`, in any case.
fn same_bus_id(gpu: &Gpu, id: &str) -> bool {
    emuv::gpus::PciLocation::parse(id).is_some_and(|location| location == gpu.pci)
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    bus_id: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's string, per NVML's contract.
    match unsafe { arg_str(bus_id) } {
        // SAFETY: same contract.
        Ok(id) => unsafe { handle_where(device, |g| same_bus_id(g, id)) },
        Err(e) => e,
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    bus_id: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { nvmlDeviceGetHandleByPciBusId_v2(bus_id, device) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    with_card(device, |g| unsafe { put(index, g.index) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's buffer, per NVML's contract.
    with_gpu(device, |g| unsafe { put_str(name, length, &g.name) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's buffer, per NVML's contract.
    with_card(device, |g| unsafe { put_str(uuid, length, &g.uuid()) })
}

fn pci_info(g: &Gpu) -> nvmlPciInfo_t {
    nvmlPciInfo_t {
        bus_id_legacy: c_field(&g.pci.bus_id_legacy()),
        domain: g.pci.domain,
        bus: g.pci.bus,
        device: g.pci.device,
        pci_device_id: u32::from(g.device_id) << 16 | u32::from(g.vendor_id),
        // An emulated card has no board vendor.
        pci_sub_system_id: 0,
        bus_id: c_field(&g.pci_bus_id()),
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's struct, per NVML's contract.
    with_card(device, |g| unsafe { put(pci, pci_info(g)) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_v2_t,
) -> nvmlReturn_t {
    with_card(device, |g| {
        let info = pci_info(g);
        let old = nvmlPciInfo_v2_t {
            bus_id: info.bus_id_legacy,
            domain: info.domain,
            bus: info.bus,
            device: info.device,
            pci_device_id: info.pci_device_id,
            pci_sub_system_id: info.pci_sub_system_id,
            reserved: [0; 4],
        };
        // SAFETY: the caller's struct, per NVML's contract.
        unsafe { put(pci, old) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_v2_t,
) -> nvmlReturn_t {
    // SAFETY: same contract and layout.
    unsafe { nvmlDeviceGetPciInfo_v2(device, pci) }
}

// Memory and utilisation.

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        let m = g.memory().map_err(lost)?;
        let info = nvmlMemory_t {
            total: m.total,
            free: m.free,
            used: m.used,
        };
        // SAFETY: the caller's struct, per NVML's contract.
        unsafe { put(memory, info) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        if memory.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: non-null; the caller set the version field, per NVML's contract.
        if unsafe { (*memory).version } != NVML_MEMORY_V2 {
            return Err(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let m = g.memory().map_err(lost)?;
        let info = nvmlMemory_v2_t {
            version: NVML_MEMORY_V2,
            total: m.total,
            reserved: m.reserved,
            free: m.free,
            used: m.used,
        };
        // SAFETY: as above.
        unsafe { put(memory, info) }
    })
}

/// Nothing executes on an emulated GPU: its engines and memory controller are idle.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's struct, per NVML's contract.
    with_gpu(device, |_| unsafe {
        put(utilization, nvmlUtilization_t::default())
    })
}

/// GeForce cards run in the default compute mode; emuv has no other.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeMode(
    device: nvmlDevice_t,
    mode: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    with_gpu(device, |_| unsafe { put(mode, NVML_COMPUTEMODE_DEFAULT) })
}

/// emuv's GPUs are whole cards, never MIG slices.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: nvmlDevice_t,
    is_mig: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    with_gpu(device, |_| unsafe { put(is_mig, 0) })
}

// What emuv's model table says (sysfs attributes, read at init): what a real card of the
// model answers. A module without the attribute leaves NVML's "not supported".

/// Writes `value(g)` to `*ptr`, or `NVML_ERROR_NOT_SUPPORTED` when the card has no such fact.
unsafe fn put_fact<T>(
    device: nvmlDevice_t,
    ptr: *mut T,
    value: impl FnOnce(&Gpu) -> Option<T>,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        let value = value(g).ok_or(NVML_ERROR_NOT_SUPPORTED)?;
        // SAFETY: the caller's pointer, per NVML's contract.
        unsafe { put(ptr, value) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(
    device: nvmlDevice_t,
    arch: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    unsafe {
        put_fact(device, arch, |g| match g.facts.architecture.as_deref()? {
            "Ada Lovelace" | "Ada" => Some(NVML_DEVICE_ARCH_ADA),
            "Blackwell" => Some(NVML_DEVICE_ARCH_BLACKWELL),
            _ => None,
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: nvmlDevice_t,
    major: *mut i32,
    minor: *mut i32,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        let (ma, mi) = g.facts.compute_capability.ok_or(NVML_ERROR_NOT_SUPPORTED)?;
        let ma = i32::try_from(ma).map_err(|_| NVML_ERROR_NOT_SUPPORTED)?;
        let mi = i32::try_from(mi).map_err(|_| NVML_ERROR_NOT_SUPPORTED)?;
        if minor.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        // SAFETY: the caller's pointers, per NVML's contract (both checked before writing).
        unsafe {
            put(major, ma)?;
            put(minor, mi)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryBusWidth(
    device: nvmlDevice_t,
    width: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    unsafe { put_fact(device, width, |g| g.facts.memory_bus_width_bits) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNumGpuCores(
    device: nvmlDevice_t,
    cores: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    unsafe { put_fact(device, cores, |g| g.facts.cuda_cores) }
}

/// Every emuv model is a GeForce RTX card.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBrand(
    device: nvmlDevice_t,
    brand: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    unsafe { put_fact(device, brand, |_| Some(NVML_BRAND_GEFORCE)) }
}

/// The boost clock for graphics and SM, the memory clock; no video clock in the model table.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    clock_type: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        let mhz = match clock_type {
            NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => g.facts.max_graphics_clock_mhz,
            NVML_CLOCK_MEM => g.facts.max_memory_clock_mhz,
            NVML_CLOCK_VIDEO => None,
            _ => return Err(NVML_ERROR_INVALID_ARGUMENT),
        };
        // SAFETY: the caller's pointer, per NVML's contract.
        unsafe { put(clock, mhz.ok_or(NVML_ERROR_NOT_SUPPORTED)?) }
    })
}

/// The board's default power limit, in milliwatts: nothing changes it on an emulated card, so
/// it is also the current and the enforced limit.
unsafe fn power_limit(device: nvmlDevice_t, limit: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    unsafe { put_fact(device, limit, |g| g.facts.power_limit_mw) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { power_limit(device, limit) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementDefaultLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { power_limit(device, limit) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: same contract.
    unsafe { power_limit(device, limit) }
}

/// The card's kernel index, as `/dev/emuv<i>` is numbered (NVIDIA's `/dev/nvidia<minor>`):
/// the same in every process, whatever cards it sees.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(
    device: nvmlDevice_t,
    minor: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    with_card(device, |g| unsafe { put(minor, g.minor_number()) })
}

/// The model's BAR1 aperture; emuv maps nothing through one, so none of it is used.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBAR1MemoryInfo(
    device: nvmlDevice_t,
    bar1: *mut nvmlBAR1Memory_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's struct, per NVML's contract.
    unsafe {
        put_fact(device, bar1, |g| {
            let total = g.facts.bar1_bytes?;
            Some(nvmlBAR1Memory_t {
                bar1_total: total,
                bar1_free: total,
                bar1_used: 0,
            })
        })
    }
}

// ECC errors: the card's uncorrected count since load (`ecc_errors`), none corrected.

/// The count `error_type` and `counter_type` ask for.
fn ecc_count(g: &Gpu, error_type: c_uint, counter_type: c_uint) -> NvmlResult<u64> {
    if !matches!(counter_type, NVML_VOLATILE_ECC | NVML_AGGREGATE_ECC) {
        return Err(NVML_ERROR_INVALID_ARGUMENT);
    }
    let uncorrected = || match g.ecc_errors() {
        Ok(count) => Ok(count),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NVML_ERROR_NOT_SUPPORTED),
        Err(e) => Err(lost(e)),
    };
    match error_type {
        NVML_MEMORY_ERROR_TYPE_CORRECTED => uncorrected().map(|_| 0),
        NVML_MEMORY_ERROR_TYPE_UNCORRECTED => uncorrected(),
        _ => Err(NVML_ERROR_INVALID_ARGUMENT),
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: nvmlDevice_t,
    error_type: c_uint,
    counter_type: c_uint,
    count: *mut u64,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        let value = ecc_count(g, error_type, counter_type)?;
        // SAFETY: the caller's pointer, per NVML's contract.
        unsafe { put(count, value) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryErrorCounter(
    device: nvmlDevice_t,
    error_type: c_uint,
    counter_type: c_uint,
    location: c_uint,
    count: *mut u64,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        let total = ecc_count(g, error_type, counter_type)?;
        let value = match location {
            NVML_MEMORY_LOCATION_DRAM => total,
            0..=NVML_MEMORY_LOCATION_SRAM => 0,
            _ => return Err(NVML_ERROR_INVALID_ARGUMENT),
        };
        // SAFETY: the caller's pointer, per NVML's contract.
        unsafe { put(count, value) }
    })
}

// Processes.

/// NVML's two-call pattern: with `*count` too small (0 and NULL to ask), the needed count and
/// `NVML_ERROR_INSUFFICIENT_SIZE`; `NVML_SUCCESS` at once when there are none. Without access
/// to the device node, the list is empty (the totals still come from sysfs). A file whose
/// opener has exited is listed with PID 0, so that the memory it holds is still accounted for
/// (and no PID that may have been reused is named).
unsafe fn running_processes<T: ProcessEntry>(
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut T,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
        if count.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        let processes = match g.processes() {
            Ok(processes) => processes,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Vec::new(),
            Err(e) => return Err(lost(e)),
        };
        // SAFETY: non-null, the caller's, per NVML's contract.
        let room = unsafe { count.read_unaligned() } as usize;
        // SAFETY: as above.
        unsafe { count.write_unaligned(processes.len() as c_uint) };
        if processes.len() > room {
            return Err(NVML_ERROR_INSUFFICIENT_SIZE);
        }
        if processes.is_empty() {
            return Ok(());
        }
        if infos.is_null() {
            return Err(NVML_ERROR_INVALID_ARGUMENT);
        }
        for (i, p) in processes.iter().enumerate() {
            let entry = T::new(p.pid.unwrap_or(0), p.bytes);
            // SAFETY: `infos` holds `room` >= `processes.len()` entries, per NVML's contract.
            unsafe { infos.add(i).write_unaligned(entry) };
        }
        Ok(())
    })
}

/// Graphics and MPS clients do not exist on emuv: every allocation is a compute client's.
unsafe fn no_processes(device: nvmlDevice_t, count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: the caller's pointer, per NVML's contract.
    with_gpu(device, |_| unsafe { put(count, 0) })
}

macro_rules! process_lists {
    ($($name:ident: $entry:ty => $body:ident;)+) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            device: nvmlDevice_t,
            count: *mut c_uint,
            infos: *mut $entry,
        ) -> nvmlReturn_t {
            process_lists!(@call $body, device, count, infos)
        }
    )+};
    (@call running_processes, $device:ident, $count:ident, $infos:ident) => {
        // SAFETY: the caller's pointers, per NVML's contract.
        unsafe { running_processes($device, $count, $infos) }
    };
    (@call no_processes, $device:ident, $count:ident, $infos:ident) => {{
        let _ = $infos;
        // SAFETY: the caller's pointer, per NVML's contract.
        unsafe { no_processes($device, $count) }
    }};
}

process_lists! {
    nvmlDeviceGetComputeRunningProcesses: nvmlProcessInfo_v1_t => running_processes;
    nvmlDeviceGetComputeRunningProcesses_v2: nvmlProcessInfo_t => running_processes;
    nvmlDeviceGetComputeRunningProcesses_v3: nvmlProcessInfo_t => running_processes;
    nvmlDeviceGetGraphicsRunningProcesses: nvmlProcessInfo_v1_t => no_processes;
    nvmlDeviceGetGraphicsRunningProcesses_v2: nvmlProcessInfo_t => no_processes;
    nvmlDeviceGetGraphicsRunningProcesses_v3: nvmlProcessInfo_t => no_processes;
    nvmlDeviceGetMPSComputeRunningProcesses: nvmlProcessInfo_v1_t => no_processes;
    nvmlDeviceGetMPSComputeRunningProcesses_v2: nvmlProcessInfo_t => no_processes;
    nvmlDeviceGetMPSComputeRunningProcesses_v3: nvmlProcessInfo_t => no_processes;
}

#[cfg(test)]
mod tests {
    use super::{events::*, stubs::nvmlDeviceGetTemperature, *};
    use emuv::gpus::fake::Tree;
    use std::{ffi::CString, thread, time::Duration};

    /// The library's state is global: one test at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// Cards 0, 1 (a 5090) and 5, initialised; shut down on drop.
    struct Fixture {
        tree: Tree,
        _serial: MutexGuard<'static, ()>,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            let tree = Tree::new(name);
            tree.add_card(0, "4090");
            tree.add_card(1, "5090");
            tree.add_card(5, "4090");
            std::fs::write(
                tree.roots().params_dir.join("driver_version"),
                "580.159.04\n",
            )
            .unwrap();
            Fixture {
                tree,
                _serial: serial,
            }
        }

        fn init(&self) {
            assert_eq!(init_in(0, &self.tree.roots()), NVML_SUCCESS);
        }

        fn card(&self, kernel_index: u32) -> std::path::PathBuf {
            let name = match kernel_index {
                0 => "emuv".to_owned(),
                i => format!("emuv{i}"),
            };
            self.tree.roots().class_dir.join(name)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            while nvmlShutdown() == NVML_SUCCESS {}
        }
    }

    fn by_index(index: u32) -> Result<nvmlDevice_t, nvmlReturn_t> {
        let mut device = std::ptr::null();
        // SAFETY: a valid out pointer.
        match unsafe { nvmlDeviceGetHandleByIndex_v2(index, &mut device) } {
            NVML_SUCCESS => Ok(device),
            e => Err(e),
        }
    }

    fn text(f: impl FnOnce(*mut c_char, c_uint) -> nvmlReturn_t) -> Result<String, nvmlReturn_t> {
        let mut buf = [0 as c_char; 96];
        match f(buf.as_mut_ptr(), buf.len() as c_uint) {
            // SAFETY: NUL-terminated on success.
            NVML_SUCCESS => Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
                .to_string_lossy()
                .into_owned()),
            e => Err(e),
        }
    }

    fn uint(f: impl FnOnce(*mut c_uint) -> nvmlReturn_t) -> Result<c_uint, nvmlReturn_t> {
        let mut value = 0;
        match f(&mut value) {
            NVML_SUCCESS => Ok(value),
            e => Err(e),
        }
    }

    fn uuid_of(device: nvmlDevice_t) -> String {
        // SAFETY: the buffer `text` passes.
        text(|b, n| unsafe { nvmlDeviceGetUUID(device, b, n) }).unwrap()
    }

    #[test]
    fn every_visible_card_is_a_device_with_its_model_facts() {
        let f = Fixture::new("nvml-cards");
        f.init();
        // SAFETY: valid out pointers and buffers throughout.
        unsafe {
            assert_eq!(uint(|c| nvmlDeviceGetCount_v2(c)), Ok(3));
            assert_eq!(by_index(3), Err(NVML_ERROR_INVALID_ARGUMENT));
            let five = by_index(2).unwrap();
            assert_eq!(uint(|i| nvmlDeviceGetIndex(five, i)), Ok(2));
            assert_eq!(uint(|m| nvmlDeviceGetMinorNumber(five, m)), Ok(5));
            let mut pci = std::mem::zeroed::<nvmlPciInfo_t>();
            assert_eq!(nvmlDeviceGetPciInfo_v3(five, &mut pci), NVML_SUCCESS);
            assert_eq!((pci.domain, pci.bus, pci.device), (0, 6, 0));
            assert_eq!(emuv::c_field(&pci.bus_id), "00000000:06:00.0");
            assert_eq!(emuv::c_field(&pci.bus_id_legacy), "0000:06:00.0");
            for id in ["00000000:06:00.0", "0000:06:00.0", "0000:06:00.0"] {
                let id = CString::new(id).unwrap();
                let mut device = std::ptr::null();
                assert_eq!(
                    nvmlDeviceGetHandleByPciBusId_v2(id.as_ptr(), &mut device),
                    NVML_SUCCESS
                );
                assert_eq!(device, five);
            }
            let uuid = CString::new(uuid_of(five).to_uppercase()).unwrap();
            let mut device = std::ptr::null();
            assert_eq!(
                nvmlDeviceGetHandleByUUID(uuid.as_ptr(), &mut device),
                NVML_SUCCESS
            );
            assert_eq!(device, five);

            let (ada, blackwell) = (by_index(0).unwrap(), by_index(1).unwrap());
            assert_eq!(
                uint(|a| nvmlDeviceGetArchitecture(ada, a)),
                Ok(NVML_DEVICE_ARCH_ADA)
            );
            assert_eq!(
                uint(|a| nvmlDeviceGetArchitecture(blackwell, a)),
                Ok(NVML_DEVICE_ARCH_BLACKWELL)
            );
            let (mut major, mut minor) = (0, 0);
            assert_eq!(
                nvmlDeviceGetCudaComputeCapability(blackwell, &mut major, &mut minor),
                NVML_SUCCESS
            );
            assert_eq!((major, minor), (12, 0));
            assert_eq!(uint(|w| nvmlDeviceGetMemoryBusWidth(ada, w)), Ok(384));
            assert_eq!(uint(|c| nvmlDeviceGetNumGpuCores(ada, c)), Ok(16384));
            assert_eq!(uint(|b| nvmlDeviceGetBrand(ada, b)), Ok(NVML_BRAND_GEFORCE));
            assert_eq!(
                uint(|c| nvmlDeviceGetMaxClockInfo(ada, NVML_CLOCK_SM, c)),
                Ok(2520)
            );
            assert_eq!(
                uint(|c| nvmlDeviceGetMaxClockInfo(ada, NVML_CLOCK_MEM, c)),
                Ok(10501)
            );
            assert_eq!(
                uint(|c| nvmlDeviceGetMaxClockInfo(ada, NVML_CLOCK_VIDEO, c)),
                Err(NVML_ERROR_NOT_SUPPORTED)
            );
            assert_eq!(
                uint(|p| nvmlDeviceGetEnforcedPowerLimit(ada, p)),
                Ok(450_000)
            );
            assert_eq!(
                uint(|p| nvmlDeviceGetPowerManagementLimit(ada, p)),
                Ok(450_000)
            );
            assert_eq!(
                uint(|p| nvmlDeviceGetPowerManagementDefaultLimit(blackwell, p)),
                Ok(575_000)
            );
            let mut bar1 = nvmlBAR1Memory_t::default();
            assert_eq!(nvmlDeviceGetBAR1MemoryInfo(ada, &mut bar1), NVML_SUCCESS);
            assert_eq!(
                (bar1.bar1_total, bar1.bar1_used, bar1.bar1_free),
                (32 << 30, 0, 32 << 30)
            );

            f.tree.set(&f.card(0), "ecc_errors", "4");
            let mut count = 0u64;
            let ecc = |error, counter, count: &mut u64| {
                nvmlDeviceGetTotalEccErrors(ada, error, counter, count)
            };
            assert_eq!(
                ecc(
                    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                    NVML_VOLATILE_ECC,
                    &mut count
                ),
                0
            );
            assert_eq!(count, 4);
            assert_eq!(
                ecc(
                    NVML_MEMORY_ERROR_TYPE_CORRECTED,
                    NVML_AGGREGATE_ECC,
                    &mut count
                ),
                0
            );
            assert_eq!(count, 0);
            assert_eq!(
                ecc(2, NVML_VOLATILE_ECC, &mut count),
                NVML_ERROR_INVALID_ARGUMENT
            );
            let counter = |location, count: &mut u64| {
                nvmlDeviceGetMemoryErrorCounter(
                    ada,
                    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                    NVML_AGGREGATE_ECC,
                    location,
                    count,
                )
            };
            assert_eq!(counter(NVML_MEMORY_LOCATION_DRAM, &mut count), NVML_SUCCESS);
            assert_eq!(count, 4);
            assert_eq!(counter(1, &mut count), NVML_SUCCESS);
            assert_eq!(count, 0);

            assert_eq!(
                text(|b, n| nvmlSystemGetDriverVersion(b, n)).as_deref(),
                Ok("580.159.04")
            );
            assert_eq!(
                text(|b, n| nvmlSystemGetNVMLVersion(b, n)).as_deref(),
                Ok("13.580.159.04")
            );
            // A getter without a value checks its handle all the same.
            assert_eq!(nvmlDeviceGetTemperature(ada), NVML_ERROR_NOT_SUPPORTED);
            assert_eq!(
                nvmlDeviceGetTemperature(std::ptr::null()),
                NVML_ERROR_INVALID_ARGUMENT
            );
        }
    }

    #[test]
    fn a_module_without_the_parameter_reports_emuvs_version() {
        let f = Fixture::new("nvml-version");
        std::fs::remove_file(f.tree.roots().params_dir.join("driver_version")).unwrap();
        f.init();
        // SAFETY: the buffer `text` passes.
        let version = text(|b, n| unsafe { nvmlSystemGetDriverVersion(b, n) });
        assert_eq!(version.as_deref(), Ok(EMUV_VERSION));
    }

    #[test]
    fn a_container_sees_its_cards_renumbered() {
        let f = Fixture::new("nvml-container");
        for name in ["emuv", "emuv1"] {
            std::fs::remove_file(f.tree.roots().dev_dir.join(name)).unwrap();
        }
        f.init();
        // SAFETY: valid out pointers.
        unsafe {
            assert_eq!(uint(|c| nvmlDeviceGetCount_v2(c)), Ok(1));
            let only = by_index(0).unwrap();
            assert_eq!(uint(|m| nvmlDeviceGetMinorNumber(only, m)), Ok(5));
            let mut pci = std::mem::zeroed::<nvmlPciInfo_t>();
            assert_eq!(nvmlDeviceGetPciInfo_v3(only, &mut pci), NVML_SUCCESS);
            assert_eq!(emuv::c_field(&pci.bus_id), "00000000:06:00.0");
        }
    }

    #[test]
    fn a_lost_card_is_lost_and_the_others_are_not() {
        let f = Fixture::new("nvml-lost");
        f.init();
        let (zero, one) = (by_index(0).unwrap(), by_index(1).unwrap());
        let uuid = uuid_of(one);
        f.tree.set(&f.card(1), "fail", "lost");
        assert_eq!(by_index(1), Err(NVML_ERROR_GPU_IS_LOST));
        let (c_uuid, c_bus) = (
            CString::new(uuid.clone()).unwrap(),
            CString::new("0000:02:00.0").unwrap(),
        );
        let mut device = std::ptr::null();
        // SAFETY: valid pointers and buffers throughout.
        unsafe {
            assert_eq!(
                nvmlDeviceGetHandleByUUID(c_uuid.as_ptr(), &mut device),
                NVML_ERROR_GPU_IS_LOST
            );
            assert_eq!(
                nvmlDeviceGetHandleByPciBusId_v2(c_bus.as_ptr(), &mut device),
                NVML_ERROR_GPU_IS_LOST
            );
            let mut memory = nvmlMemory_t::default();
            assert_eq!(
                nvmlDeviceGetMemoryInfo(one, &mut memory),
                NVML_ERROR_GPU_IS_LOST
            );
            assert_eq!(
                text(|b, n| nvmlDeviceGetName(one, b, n)),
                Err(NVML_ERROR_GPU_IS_LOST)
            );
            assert_eq!(
                uint(|a| nvmlDeviceGetArchitecture(one, a)),
                Err(NVML_ERROR_GPU_IS_LOST)
            );
            assert_eq!(nvmlDeviceGetTemperature(one), NVML_ERROR_GPU_IS_LOST);
            let mut count = 0;
            assert_eq!(
                nvmlDeviceGetComputeRunningProcesses_v3(one, &mut count, std::ptr::null_mut()),
                NVML_ERROR_GPU_IS_LOST
            );
            // What names the card still answers, so that the one lost can be told.
            assert_eq!(uuid_of(one), uuid);
            // The others are unaffected, and so is the count.
            assert_eq!(nvmlDeviceGetMemoryInfo(zero, &mut memory), NVML_SUCCESS);
            assert_eq!(memory.total, 1 << 30);
            assert_eq!(uint(|c| nvmlDeviceGetCount_v2(c)), Ok(3));
            assert!(by_index(2).is_ok());
            // Brought back.
            f.tree.set(&f.card(1), "fail", "none");
            assert_eq!(by_index(1), Ok(one));
            assert_eq!(nvmlDeviceGetMemoryInfo(one, &mut memory), NVML_SUCCESS);
        }
    }

    fn wait_v2(set: nvmlEventSet_t, timeout_ms: c_uint) -> Result<nvmlEventData_t, nvmlReturn_t> {
        let mut data = nvmlEventData_t {
            device: std::ptr::null(),
            event_type: 0,
            event_data: 0,
            gpu_instance_id: 0,
            compute_instance_id: 0,
        };
        // SAFETY: a valid out pointer.
        match unsafe { nvmlEventSetWait_v2(set, &mut data, timeout_ms) } {
            NVML_SUCCESS => Ok(data),
            e => Err(e),
        }
    }

    #[test]
    fn a_loss_is_xid_79_and_ecc_errors_are_double_bit_events() {
        let f = Fixture::new("nvml-events");
        f.init();
        let (zero, one) = (by_index(0).unwrap(), by_index(1).unwrap());
        let mut set: nvmlEventSet_t = std::ptr::null_mut();
        // SAFETY: a valid out pointer.
        assert_eq!(unsafe { nvmlEventSetCreate(&mut set) }, NVML_SUCCESS);
        let mut types = 0;
        // SAFETY: a valid out pointer.
        assert_eq!(
            unsafe { nvmlDeviceGetSupportedEventTypes(zero, &mut types) },
            NVML_SUCCESS
        );
        assert_eq!(
            types,
            NVML_EVENT_TYPE_XID_CRITICAL_ERROR | NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR
        );
        // Single-bit ECC errors alone: nothing to report.
        assert_eq!(
            nvmlDeviceRegisterEvents(zero, 0x1, set),
            NVML_ERROR_NOT_SUPPORTED
        );
        // What NVIDIA's device plugin asks for: Xid, double- and single-bit ECC errors.
        for device in [zero, one] {
            assert_eq!(
                nvmlDeviceRegisterEvents(device, 0x1 | 0x2 | 0x8, set),
                NVML_SUCCESS
            );
        }
        assert_eq!(wait_v2(set, 0).unwrap_err(), NVML_ERROR_TIMEOUT);
        assert_eq!(wait_v2(set, 50).unwrap_err(), NVML_ERROR_TIMEOUT);

        let card = f.card(1);
        let loser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            std::fs::write(card.join("fail"), "lost\n").unwrap();
        });
        let event = wait_v2(set, 10_000).unwrap();
        loser.join().unwrap();
        assert_eq!(event.device, one);
        assert_eq!(event.event_type, NVML_EVENT_TYPE_XID_CRITICAL_ERROR);
        assert_eq!(event.event_data, 79);
        assert_eq!(
            (event.gpu_instance_id, event.compute_instance_id),
            (u32::MAX, u32::MAX)
        );
        // Once per loss.
        assert_eq!(wait_v2(set, 250).unwrap_err(), NVML_ERROR_TIMEOUT);

        f.tree.set(&f.card(0), "ecc_errors", "2");
        let event = wait_v2(set, 10_000).unwrap();
        assert_eq!(event.device, zero);
        assert_eq!(event.event_type, NVML_EVENT_TYPE_DOUBLE_BIT_ECC_ERROR);
        assert_eq!(event.event_data, 0);

        // Back and lost again: a second event, through the older wait too.
        f.tree.set(&f.card(1), "fail", "none");
        assert_eq!(wait_v2(set, 250).unwrap_err(), NVML_ERROR_TIMEOUT);
        f.tree.set(&f.card(1), "fail", "lost");
        let mut old = nvmlEventData_v1_t {
            device: std::ptr::null(),
            event_type: 0,
            event_data: 0,
        };
        // SAFETY: a valid out pointer.
        assert_eq!(
            unsafe { nvmlEventSetWait(set, &mut old, 10_000) },
            NVML_SUCCESS
        );
        assert_eq!((old.device, old.event_type, old.event_data), (one, 0x8, 79));

        assert_eq!(nvmlEventSetFree(set), NVML_SUCCESS);
        assert_eq!(nvmlEventSetFree(set), NVML_ERROR_INVALID_ARGUMENT);
        assert_eq!(wait_v2(set, 0).unwrap_err(), NVML_ERROR_INVALID_ARGUMENT);
    }
}
