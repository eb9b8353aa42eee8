// SPDX-License-Identifier: GPL-2.0
//! `libnvidia-ml.so.1` for emuv: the NVML functions that pynvml, gpustat and nvitop call,
//! answered live from emuv (identity and memory from sysfs, processes from the device node's
//! `EMUV_IOCTL_PROCESSES`),
//! and `NVML_ERROR_NOT_SUPPORTED` for the other getters they may call (see `stubs.rs`).
//!
//! Every export follows NVIDIA's documented contract for it (nvml.h): pointers are the
//! caller's, checked for NULL, written only on success.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod stubs;
mod types;

use emuv::{
    gpus::{self, Gpu},
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

/// What `nvmlInit` found; NVML keeps the device list fixed until `nvmlShutdown`.
struct State {
    init_count: u32,
    gpus: Vec<Gpu>,
}

static STATE: Mutex<State> = Mutex::new(State {
    init_count: 0,
    gpus: Vec::new(),
});

fn state() -> MutexGuard<'static, State> {
    // A panic cannot cross the C ABI (it aborts), so a poisoned lock holds consistent data.
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

type NvmlResult<T = ()> = Result<T, nvmlReturn_t>;

fn code(result: NvmlResult) -> nvmlReturn_t {
    result.err().unwrap_or(NVML_SUCCESS)
}

/// Runs `f` on the GPU behind `device`, if the library is initialised and the handle is ours.
fn with_gpu(device: nvmlDevice_t, f: impl FnOnce(&Gpu) -> NvmlResult) -> nvmlReturn_t {
    let state = state();
    if state.init_count == 0 {
        return NVML_ERROR_UNINITIALIZED;
    }
    let base = HANDLES.as_ptr() as usize;
    let offset = (device as usize).wrapping_sub(base);
    let size = std::mem::size_of::<nvmlDevice_st>();
    let gpu = offset
        .is_multiple_of(size)
        .then(|| state.gpus.get(offset / size))
        .flatten();
    match gpu {
        Some(gpu) => code(f(gpu)),
        None => NVML_ERROR_INVALID_ARGUMENT,
    }
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
    let mut state = state();
    if state.init_count > 0 {
        state.init_count += 1;
        return NVML_SUCCESS;
    }
    let gpus = match gpus::list() {
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

/// emuv's version stands where NVIDIA's driver version would.
const DRIVER_VERSION: &str = env!("CARGO_PKG_VERSION");

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: the caller's buffer, per NVML's contract.
    code(initialised().and_then(|()| unsafe { put_str(version, length, DRIVER_VERSION) }))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: as above.
    code(unsafe { put_str(version, length, DRIVER_VERSION) })
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

/// The handle of the GPU at `index` of the list `nvmlInit` made.
unsafe fn handle_where(device: *mut nvmlDevice_t, pick: impl Fn(&Gpu) -> bool) -> nvmlReturn_t {
    let state = state();
    if state.init_count == 0 {
        return NVML_ERROR_UNINITIALIZED;
    }
    match state.gpus.iter().position(pick) {
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

/// Accepts both bus ID forms, `00000000:01:00.0` and `0000:01:00.0`.
fn same_bus_id(gpu: &Gpu, id: &str) -> bool {
    let (domain, bus, device) = gpu.pci_location();
    id.eq_ignore_ascii_case(&gpu.pci_bus_id())
        || id.eq_ignore_ascii_case(&format!("{domain:04X}:{bus:02X}:{device:02X}.0"))
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
    with_gpu(device, |g| unsafe { put(index, g.index) })
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
    with_gpu(device, |g| unsafe { put_str(uuid, length, &g.uuid()) })
}

fn pci_info(g: &Gpu) -> nvmlPciInfo_t {
    let (domain, bus, device) = g.pci_location();
    nvmlPciInfo_t {
        bus_id_legacy: c_field(&format!("{domain:04X}:{bus:02X}:{device:02X}.0")),
        domain,
        bus,
        device,
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
    with_gpu(device, |g| unsafe { put(pci, pci_info(g)) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_v2_t,
) -> nvmlReturn_t {
    with_gpu(device, |g| {
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
