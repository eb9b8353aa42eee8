// SPDX-License-Identifier: GPL-2.0
//! `cuInit`, the driver version and the devices: the emuv cards this process can open, in
//! NVML's order, narrowed and reordered by `CUDA_VISIBLE_DEVICES` and `CUDA_DEVICE_ORDER` as
//! NVIDIA documents them.

use crate::{
    attributes::{self, CardFacts},
    c_str, put, status, sys, CuResult,
};
use emuv::{gpus::Gpu, Device};
use std::{
    ffi::{c_char, c_int, c_uint},
    sync::OnceLock,
};

/// One card as CUDA sees it.
pub struct Card {
    pub gpu: Gpu,
    /// This process's open file of the card: what every allocation is made through.
    pub device: Device,
    pub facts: CardFacts,
    /// 16 raw bytes, NVML's UUID without `GPU-`.
    pub uuid: [u8; 16],
}

impl Card {
    pub fn total_memory(&self) -> u64 {
        self.gpu.memory().map(|m| m.total).unwrap_or(0)
    }
}

/// What `cuInit` found, once per process.
static DRIVER: OnceLock<Result<Vec<Card>, sys::CUresult>> = OnceLock::new();

/// The CUDA version emuv's driver implements, from the module's `driver_version` (the branch
/// NVIDIA's driver of that number would be): 580 is CUDA 13.0. Never below 13.0: CUDA 13
/// programs refuse older drivers, and this library implements the 13.0 API.
pub fn cuda_version() -> c_int {
    let major = emuv::gpus::driver_version()
        .and_then(|v| v.split('.').next().and_then(|m| m.parse::<c_int>().ok()))
        .unwrap_or(580);
    let minor = (major.clamp(580, 670) - 580) / 10;
    13000 + minor * 10
}

fn parse_uuid(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text
        .trim_start_matches("GPU-")
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .collect();
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).take(16).enumerate() {
        let text = std::str::from_utf8(pair).unwrap_or("0");
        out[i] = u8::from_str_radix(text, 16).unwrap_or(0);
    }
    out
}

fn facts(gpu: &Gpu) -> CardFacts {
    let f = &gpu.facts;
    let bus = f.memory_bus_width_bits.unwrap_or(0);
    let clock = f.max_memory_clock_mhz.unwrap_or(0);
    let (domain, pci_bus, pci_device) = gpu.pci_location();
    CardFacts {
        model: gpu.model.clone(),
        compute_capability: f.compute_capability.unwrap_or((8, 9)),
        cuda_cores: f.cuda_cores.unwrap_or(0),
        boost_clock_mhz: f.max_graphics_clock_mhz.unwrap_or(0),
        memory_bus_width_bits: bus,
        memory_bandwidth_mbps: clock.saturating_mul(2).saturating_mul(bus) / 8,
        pci_domain: domain,
        pci_bus,
        pci_device,
        pci_device_id: gpu.device_id,
        pci_subsystem_id: 0,
    }
}

/// Which of `all` (in NVML's order) CUDA numbers 0, 1, ...: `CUDA_DEVICE_ORDER` sorts them
/// (`FASTEST_FIRST`, the default, by a simple speed estimate, ties in PCI order; `PCI_BUS_ID`
/// in NVML's order), then `CUDA_VISIBLE_DEVICES` picks: indices into that order, UUIDs with
/// or without `GPU-` (a unique prefix is enough), and the first entry that names no card, or
/// one already named, ends the list.
pub fn visible_order(
    all: &[(String, u64)],
    order: Option<&str>,
    visible: Option<&str>,
) -> Vec<usize> {
    let mut sorted: Vec<usize> = (0..all.len()).collect();
    if order.map(str::trim) != Some("PCI_BUS_ID") {
        sorted.sort_by_key(|&i| std::cmp::Reverse(all[i].1));
    }
    let Some(visible) = visible else {
        return sorted;
    };
    let mut picked = Vec::new();
    for entry in visible.split(',') {
        let entry = entry.trim();
        let found = if !entry.is_empty() && entry.bytes().all(|b| b.is_ascii_digit()) {
            entry
                .parse::<usize>()
                .ok()
                .and_then(|i| sorted.get(i).copied())
        } else {
            let wanted = entry
                .strip_prefix("GPU-")
                .unwrap_or(entry)
                .to_ascii_lowercase();
            let matches: Vec<usize> = sorted
                .iter()
                .copied()
                .filter(|&i| {
                    !wanted.is_empty()
                        && all[i]
                            .0
                            .trim_start_matches("GPU-")
                            .to_ascii_lowercase()
                            .starts_with(&wanted)
                })
                .collect();
            (matches.len() == 1).then(|| matches[0])
        };
        match found {
            Some(i) if !picked.contains(&i) => picked.push(i),
            _ => break,
        }
    }
    picked
}

fn discover() -> Result<Vec<Card>, sys::CUresult> {
    let gpus = emuv::gpus::list().map_err(|_| sys::CUDA_ERROR_NO_DEVICE)?;
    // The cards this process may allocate on: their node opens for writing.
    let openable: Vec<(Gpu, Device)> = gpus
        .into_iter()
        .filter_map(|gpu| {
            let device = Device::open_path(&gpu.device_node, true).ok()?;
            Some((gpu, device))
        })
        .collect();
    let keys: Vec<(String, u64)> = openable
        .iter()
        .map(|(gpu, _)| {
            let f = facts(gpu);
            let speed = u64::from(attributes::sm_count(&f)) * u64::from(f.boost_clock_mhz);
            (gpu.uuid(), speed)
        })
        .collect();
    let order = std::env::var("CUDA_DEVICE_ORDER").ok();
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let picked = visible_order(&keys, order.as_deref(), visible.as_deref());
    let mut slots: Vec<Option<(Gpu, Device)>> = openable.into_iter().map(Some).collect();
    let cards: Vec<Card> = picked
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .map(|(gpu, device)| Card {
            facts: facts(&gpu),
            uuid: parse_uuid(&gpu.uuid()),
            gpu,
            device,
        })
        .collect();
    if cards.is_empty() {
        return Err(sys::CUDA_ERROR_NO_DEVICE);
    }
    Ok(cards)
}

/// The cards, once `cuInit` has succeeded; `CUDA_ERROR_NOT_INITIALIZED` before, and after a
/// failed `cuInit`.
pub fn cards() -> CuResult<&'static [Card]> {
    match DRIVER.get() {
        Some(Ok(cards)) => Ok(cards),
        _ => Err(sys::CUDA_ERROR_NOT_INITIALIZED),
    }
}

/// The card `ordinal` names.
pub fn card(ordinal: sys::CUdevice) -> CuResult<&'static Card> {
    let cards = cards()?;
    usize::try_from(ordinal)
        .ok()
        .and_then(|i| cards.get(i))
        .ok_or(sys::CUDA_ERROR_INVALID_DEVICE)
}

#[no_mangle]
pub extern "C" fn cuInit(flags: c_uint) -> sys::CUresult {
    if flags != 0 {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    match DRIVER.get_or_init(discover) {
        Ok(_) => sys::CUDA_SUCCESS,
        Err(code) => *code,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut c_int) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    status(unsafe { put(version, cuda_version()) })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> sys::CUresult {
    status(cards().and_then(|cards| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(count, cards.len() as c_int) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut sys::CUdevice, ordinal: c_int) -> sys::CUresult {
    status(card(ordinal).and_then(|_| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(device, ordinal) }
    }))
}

/// Copies `text` and a NUL into a caller's buffer of `len` bytes, cut to fit.
///
/// # Safety
///
/// `buf` is NULL or valid for `len` bytes of writes.
pub(crate) unsafe fn put_c_string(buf: *mut c_char, len: c_int, text: &str) -> CuResult {
    let len = usize::try_from(len).map_err(|_| sys::CUDA_ERROR_INVALID_VALUE)?;
    if buf.is_null() || len == 0 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    let bytes = text.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: `n + 1 <= len` bytes of the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast(), n);
        buf.add(n).write(0);
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(
    name: *mut c_char,
    len: c_int,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|card| {
        // SAFETY: the caller's buffer of `len` bytes.
        unsafe { put_c_string(name, len, &card.gpu.name) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(
    bytes: *mut usize,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|card| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(bytes, card.total_memory() as usize) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(
    uuid: *mut sys::CUuuid,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|card| {
        let value = sys::CUuuid {
            bytes: card.uuid.map(|b| b as c_char),
        };
        // SAFETY: an out-pointer from the caller.
        unsafe { put(uuid, value) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(
    uuid: *mut sys::CUuuid,
    device: sys::CUdevice,
) -> sys::CUresult {
    // SAFETY: the same contract.
    unsafe { cuDeviceGetUuid_v2(uuid, device) }
}

/// A real driver reports no LUID on Linux.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetLuid(
    _luid: *mut c_char,
    _mask: *mut c_uint,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and(Err(sys::CUDA_ERROR_NOT_SUPPORTED)))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetPCIBusId(
    bus_id: *mut c_char,
    len: c_int,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|card| {
        // CUDA's form: a 4-digit domain, as in `0000:01:00.0`.
        let (domain, bus, dev) = card.gpu.pci_location();
        let text = format!("{domain:04x}:{bus:02x}:{dev:02x}.0");
        // SAFETY: the caller's buffer of `len` bytes.
        unsafe { put_c_string(bus_id, len, &text) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetByPCIBusId(
    device: *mut sys::CUdevice,
    bus_id: *const c_char,
) -> sys::CUresult {
    // SAFETY: a C string from the caller.
    let Some(wanted) = (unsafe { c_str(bus_id) }) else {
        return sys::CUDA_ERROR_INVALID_VALUE;
    };
    let wanted = wanted.to_string_lossy();
    status(cards().and_then(|cards| {
        let index = cards
            .iter()
            .position(|c| c.gpu.is_named_by(&wanted))
            .ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(device, index as c_int) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    value: *mut c_int,
    attribute: sys::CUdevice_attribute,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|card| {
        let v =
            attributes::lookup(&card.facts, attribute as i32).map_err(|e| e as sys::CUresult)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(value, v) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceComputeCapability(
    major: *mut c_int,
    minor: *mut c_int,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|card| {
        let (ma, mi) = card.facts.compute_capability;
        // SAFETY: out-pointers from the caller.
        unsafe {
            put(major, ma as c_int)?;
            put(minor, mi as c_int)
        }
    }))
}

/// Emulated cards are never in TCC mode, and take any context flags.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(
    pool: *mut sys::CUmemoryPool,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|_| {
        let handle = crate::memory::default_pool(device)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(pool, handle as sys::CUmemoryPool) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetMemPool(
    pool: *mut sys::CUmemoryPool,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|_| {
        let handle = crate::memory::current_pool(device)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(pool, handle as sys::CUmemoryPool) }
    }))
}

#[no_mangle]
pub extern "C" fn cuDeviceSetMemPool(
    device: sys::CUdevice,
    pool: sys::CUmemoryPool,
) -> sys::CUresult {
    status(card(device).and_then(|_| crate::memory::set_current_pool(device, pool as usize)))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(
    can: *mut c_int,
    device: sys::CUdevice,
    peer: sys::CUdevice,
) -> sys::CUresult {
    status(card(device).and_then(|_| {
        card(peer)?;
        // GeForce 40xx/50xx have no peer access (no NVLink, P2P off in the driver).
        // SAFETY: an out-pointer from the caller.
        unsafe { put(can, 0) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetP2PAttribute(
    value: *mut c_int,
    _attribute: sys::CUdevice_P2PAttribute,
    src: sys::CUdevice,
    dst: sys::CUdevice,
) -> sys::CUresult {
    status(card(src).and_then(|_| {
        card(dst)?;
        if src == dst {
            return Err(sys::CUDA_ERROR_INVALID_DEVICE);
        }
        // SAFETY: an out-pointer from the caller.
        unsafe { put(value, 0) }
    }))
}

/// The NVIDIA runtime this process loaded, if it is a shared library: its path.
fn loaded_nvidia_runtime() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libcudart.so"))
        })
        .map(str::to_owned)
}

/// NVIDIA's private tables: only NVIDIA's own runtime asks for them, and it runs on nothing but
/// NVIDIA's driver. Every id is refused as the real driver refuses unknown ones, once with a
/// line saying why.
#[no_mangle]
pub unsafe extern "C" fn cuGetExportTable(
    _table: *mut *const std::ffi::c_void,
    _id: *const sys::CUuuid,
) -> sys::CUresult {
    let runtime = loaded_nvidia_runtime().unwrap_or_else(|| {
        "a copy linked into the program or one of its libraries (CuPy's wheels, nvcc's default \
         -cudart static)"
            .to_owned()
    });
    crate::say_once(
        "export-table",
        &format!(
            "this program uses NVIDIA's own CUDA runtime ({runtime}), which runs only on NVIDIA's \
             driver: its calls will fail. Run it with emuv-run, which puts emuv's runtime \
             (libcudart.so.12, .so.13) first; programs that carry NVIDIA's runtime inside them \
             cannot use emuv's (build with nvcc -cudart shared)"
        ),
    );
    sys::CUDA_ERROR_INVALID_VALUE
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(
    code: sys::CUresult,
    out: *mut *const c_char,
) -> sys::CUresult {
    match crate::errors::name(code) {
        // SAFETY: an out-pointer from the caller; the string is static.
        Some(name) => status(unsafe { put(out, name.as_ptr()) }),
        None => {
            // The real driver sets NULL and says INVALID_VALUE.
            // SAFETY: as above.
            let _ = unsafe { put(out, std::ptr::null()) };
            sys::CUDA_ERROR_INVALID_VALUE
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(
    code: sys::CUresult,
    out: *mut *const c_char,
) -> sys::CUresult {
    match crate::errors::description(code) {
        // SAFETY: an out-pointer from the caller; the string is static.
        Some(text) => status(unsafe { put(out, text.as_ptr()) }),
        None => {
            // SAFETY: as above.
            let _ = unsafe { put(out, std::ptr::null()) };
            sys::CUDA_ERROR_INVALID_VALUE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::visible_order;

    fn cards() -> Vec<(String, u64)> {
        vec![
            ("GPU-aaaa1111".into(), 10),
            ("GPU-bbbb2222".into(), 30),
            ("GPU-bbcc3333".into(), 20),
        ]
    }

    #[test]
    fn visible_devices_as_nvidia_documents_them() {
        let all = cards();
        assert_eq!(visible_order(&all, None, None), [1, 2, 0]);
        assert_eq!(visible_order(&all, Some("PCI_BUS_ID"), None), [0, 1, 2]);
        assert_eq!(visible_order(&all, Some("PCI_BUS_ID"), Some("2,0")), [2, 0]);
        assert_eq!(visible_order(&all, Some("PCI_BUS_ID"), Some("1,7,0")), [1]);
        assert_eq!(
            visible_order(&all, Some("PCI_BUS_ID"), Some("")),
            Vec::<usize>::new()
        );
        assert_eq!(
            visible_order(&all, Some("PCI_BUS_ID"), Some("GPU-bbcc,aaaa")),
            [2, 0]
        );
        // "bb" is ambiguous: the list ends there.
        assert_eq!(visible_order(&all, Some("PCI_BUS_ID"), Some("0,bb,1")), [0]);
        assert_eq!(visible_order(&all, Some("PCI_BUS_ID"), Some("0,0")), [0]);
        assert_eq!(visible_order(&all, None, Some("0")), [1]);
        assert_eq!(
            visible_order(&all, Some("PCI_BUS_ID"), Some("MIG-x")),
            Vec::<usize>::new()
        );
    }
}
