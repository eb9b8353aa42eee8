// SPDX-License-Identifier: GPL-2.0
//! `cuGetProcAddress`: how the runtime, cuda-python and CuPy reach every driver function. They
//! ask for a base name (`cuMemAlloc`) and the CUDA version they were written for, and get the
//! newest ABI version of that function introduced at or before it (`cuMemAlloc_v2` for 3.2 and
//! later); with `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM` its per-thread-stream flavour.
//! The table is made by build.rs from `cudaTypedefs.h` and holds only what this library
//! implements: a function it does not is reported absent, never handed out as a stub.

use crate::{c_str, sys, CuResult};
use std::{
    ffi::{c_char, c_int, c_void},
    sync::OnceLock,
};

pub struct Entry {
    pub base: &'static str,
    /// `1000 * major + 10 * minor` of the CUDA release that introduced this ABI version.
    pub version: u32,
    /// The `_ptds`/`_ptsz` flavour.
    pub per_thread: bool,
    /// The exported name.
    pub name: &'static str,
    pub function: *const c_void,
}

// SAFETY: a function's address, read only.
unsafe impl Send for Entry {}
// SAFETY: as above.
unsafe impl Sync for Entry {}

pub fn entries() -> &'static [Entry] {
    static TABLE: OnceLock<Vec<Entry>> = OnceLock::new();
    TABLE.get_or_init(|| include!(concat!(env!("OUT_DIR"), "/entries.rs")))
}

/// Why a look-up found nothing: `CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND` (1) or
/// `CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT` (2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    Symbol,
    Version,
}

impl Missing {
    fn status(self) -> sys::CUdriverProcAddressQueryResult {
        match self {
            Missing::Symbol => sys::CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
            Missing::Version => sys::CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
        }
    }
}

/// Every `PFN_<base>_v<version>[_ptds|_ptsz]` typedef of `cudaTypedefs.h`: (base, version,
/// flavour).
const PFN_VERSIONS: &[(&str, u32, &str)] = include!(concat!(env!("OUT_DIR"), "/pfn_versions.rs"));

/// The entry `base` at `version` resolves to. The ABI version is chosen among all that CUDA
/// defines, and then must be one this library implements: an older one is never handed out in
/// its place, since its arguments differ.
pub fn look_up(base: &str, version: c_int, flags: u64) -> Result<&'static Entry, Missing> {
    let version = u32::try_from(version).unwrap_or(0);
    let of_base = || PFN_VERSIONS.iter().filter(move |(b, _, _)| *b == base);
    if of_base().next().is_none() || !entries().iter().any(|e| e.base == base) {
        return Err(Missing::Symbol);
    }
    let newest = |per_thread: bool| {
        of_base()
            .filter(|(_, v, f)| f.is_empty() != per_thread && *v <= version)
            .map(|(_, v, _)| *v)
            .max()
    };
    let per_thread = flags & u64::from(sys::CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
    let plain = newest(false).ok_or(Missing::Version)?;
    // The per-thread flavour where there is one of the chosen function or newer.
    let chosen = match newest(true) {
        Some(v) if per_thread && v >= plain => (v, true),
        _ => (plain, false),
    };
    entries()
        .iter()
        .find(|e| e.base == base && (e.version, e.per_thread) == chosen)
        .ok_or(Missing::Symbol)
}

const KNOWN_FLAGS: u64 = (sys::CU_GET_PROC_ADDRESS_LEGACY_STREAM
    | sys::CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) as u64;

/// # Safety
///
/// `symbol` NULL or a C string; `pfn` NULL or writable.
unsafe fn get_proc_address(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
) -> CuResult<Result<&'static Entry, Missing>> {
    if pfn.is_null() || flags & !KNOWN_FLAGS != 0 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: per this function's contract.
    let name = unsafe { c_str(symbol) }.ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
    let found = name
        .to_str()
        .map_err(|_| Missing::Symbol)
        .and_then(|n| look_up(n, version, flags));
    if let Err(missing) = found {
        let why = match missing {
            Missing::Symbol => "not implemented (absent)",
            Missing::Version => "no version at or before the one asked for",
        };
        crate::log_absent(&name.to_string_lossy(), why);
    }
    let address = found.map_or(std::ptr::null_mut(), |e| e.function.cast_mut());
    // SAFETY: non-NULL, writable per the contract.
    unsafe { pfn.write_unaligned(address) };
    Ok(found)
}

/// The 4-argument form (CUDA 11.3): a function not found is `CUDA_ERROR_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
) -> sys::CUresult {
    // SAFETY: the caller's arguments, as the API defines them.
    match unsafe { get_proc_address(symbol, pfn, version, flags) } {
        Ok(Ok(_)) => sys::CUDA_SUCCESS,
        Ok(Err(_)) => sys::CUDA_ERROR_NOT_FOUND,
        Err(code) => code,
    }
}

/// The 5-argument form (CUDA 12.0): succeeds with a NULL function and says why in
/// `*symbol_status`.
#[no_mangle]
pub unsafe extern "C" fn cuGetProcAddress_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: c_int,
    flags: u64,
    symbol_status: *mut sys::CUdriverProcAddressQueryResult,
) -> sys::CUresult {
    // SAFETY: the caller's arguments, as the API defines them.
    let result = unsafe { get_proc_address(symbol, pfn, version, flags) };
    let status = match result {
        Ok(Ok(_)) => sys::CU_GET_PROC_ADDRESS_SUCCESS,
        Ok(Err(missing)) => missing.status(),
        Err(code) => return code,
    };
    if !symbol_status.is_null() {
        // SAFETY: a non-NULL out-pointer from the caller.
        unsafe { symbol_status.write_unaligned(status) };
    }
    sys::CUDA_SUCCESS
}

/// Every name `cuda.h` declares (for the tests: what is exported).
pub fn declared() -> &'static [&'static str] {
    include!(concat!(env!("OUT_DIR"), "/declared.rs"))
}

/// The name's C form, for tests.
pub fn c_name(name: &str) -> Option<std::ffi::CString> {
    std::ffi::CString::new(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_a_version_cuda_h_names() {
        for e in entries() {
            let flavour = PFN_VERSIONS
                .iter()
                .any(|(b, v, f)| *b == e.base && *v == e.version && f.is_empty() != e.per_thread);
            assert!(flavour, "{} v{} is no PFN typedef", e.name, e.version);
            assert!(declared().contains(&e.name), "{} not declared", e.name);
        }
    }

    #[test]
    fn versions_select_the_abi() {
        let name = |b, v, f| look_up(b, v, f).map(|e| e.name);
        assert_eq!(name("cuMemAlloc", 13000, 0), Ok("cuMemAlloc_v2"));
        assert_eq!(name("cuMemAlloc", 3020, 0), Ok("cuMemAlloc_v2"));
        assert_eq!(name("cuMemAlloc_v2", 13000, 0), Err(Missing::Symbol));
        assert_eq!(name("cuMemAllocAsync", 11000, 0), Err(Missing::Version));
        assert_eq!(name("cuMemAllocAsync", 11020, 0), Ok("cuMemAllocAsync"));
        assert_eq!(name("cuGetProcAddress", 11030, 0), Ok("cuGetProcAddress"));
        assert_eq!(
            name("cuGetProcAddress", 12000, 0),
            Ok("cuGetProcAddress_v2")
        );
        assert_eq!(name("cuMemcpy", 12000, 2), Ok("cuMemcpy_ptds"));
        assert_eq!(name("cuMemcpyHtoD", 12000, 2), Ok("cuMemcpyHtoD_v2_ptds"));
        assert_eq!(name("cuStreamQuery", 12000, 2), Ok("cuStreamQuery_ptsz"));
        assert_eq!(name("cuCtxCreate", 13000, 0), Ok("cuCtxCreate_v4"));
        assert_eq!(name("", 0, 0), Err(Missing::Symbol));
        assert_eq!(name("cuNoSuchThing", 13000, 0), Err(Missing::Symbol));
    }

    #[test]
    fn stubs_are_not_handed_out() {
        // Graphs are declared by cuda.h and exported as stubs, but absent from the table.
        assert!(declared().contains(&"cuGraphCreate"));
        assert_eq!(
            look_up("cuGraphCreate", 13000, 0).err(),
            Some(Missing::Symbol)
        );
    }

    #[test]
    fn c_api() {
        let mut pfn: *mut c_void = std::ptr::dangling_mut();
        let mut status = 99;
        let sym = c_name("cuNoSuchThing").unwrap();
        // SAFETY: valid arguments.
        let rc = unsafe { cuGetProcAddress_v2(sym.as_ptr(), &mut pfn, 13000, 0, &mut status) };
        assert_eq!((rc, pfn.is_null(), status), (0, true, 1));
        // SAFETY: valid arguments.
        let rc = unsafe { cuGetProcAddress(sym.as_ptr(), &mut pfn, 13000, 0) };
        assert_eq!(rc, sys::CUDA_ERROR_NOT_FOUND);
        let sym = c_name("cuInit").unwrap();
        // SAFETY: valid arguments.
        let rc = unsafe { cuGetProcAddress_v2(sym.as_ptr(), &mut pfn, 2000, 0, &mut status) };
        assert_eq!((rc, status), (0, 0));
        assert_eq!(pfn.cast_const(), crate::driver::cuInit as *const c_void);
    }
}
