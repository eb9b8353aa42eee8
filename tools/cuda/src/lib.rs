// SPDX-License-Identifier: GPL-2.0
//! emuv's `libcuda.so.1`: the public CUDA driver API (`cuda.h`) on emuv's emulated cards.
//!
//! Memory is emuv's: every allocation is (part of) an allocation of the card's kernel pool,
//! counted per process by the kernel, shown by NVML and freed when the process dies. Device
//! pointers lie in address ranges this library reserved without access, so the CPU cannot
//! dereference them, as on a real GPU; the library itself reaches the memory through its own
//! mapping of the emuv allocation. Kernels do not run: launches answer
//! `CUDA_ERROR_NOT_SUPPORTED`.
//!
//! Layout: `entry` (cuGetProcAddress and versions), `driver` (cuInit, the cards), `context`,
//! `memory` (address space, sub-allocator, copies), `stream` (streams, events, the workers
//! that run asynchronous work in order), `vmm` (cuMemCreate/cuMemMap), `module` (images kept,
//! not run), `attributes` (what a
//! real card of each model reports), `errors`.

#![allow(clippy::missing_safety_doc)]

use std::{
    collections::HashSet,
    ffi::CStr,
    io::Write,
    sync::{Mutex, OnceLock},
};

/// NVIDIA's public types and constants, read from `cuda.h` by bindgen at build time.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_docs,
    clippy::all
)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/cuda.rs"));
}

pub mod attributes;
pub mod context;
pub mod driver;
pub mod entry;
pub mod errors;
mod handles;
pub mod image;
pub mod link;
pub mod memory;
pub mod module;
pub mod stream;
pub mod vmm;

use sys::CUresult;

/// `Result` with a CUDA error code as the error.
pub type CuResult<T = ()> = Result<T, CUresult>;

/// The return value of an entry point.
pub(crate) fn status(result: CuResult) -> CUresult {
    match result {
        Ok(()) => sys::CUDA_SUCCESS,
        Err(code) => code,
    }
}

/// Writes `value` through an out-pointer the program gave; `CUDA_ERROR_INVALID_VALUE` for NULL.
///
/// # Safety
///
/// `out` is NULL or valid for a write of `T`, as the API requires of the caller.
pub(crate) unsafe fn put<T>(out: *mut T, value: T) -> CuResult {
    if out.is_null() {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-NULL, and valid for a write per this function's contract.
    unsafe { out.write_unaligned(value) };
    Ok(())
}

/// Whether `EMUV_CUDA_LOG` asks for a line per call the library does not implement (and per
/// name `cuGetProcAddress` was asked for and reported absent).
pub(crate) fn logging() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("EMUV_CUDA_LOG").is_some_and(|v| !v.is_empty()))
}

/// Says `message` on stderr once per process per `key`.
pub(crate) fn say_once(key: &'static str, message: &str) {
    static SAID: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said.get_or_insert_with(HashSet::new).insert(key) {
        let _ = writeln!(std::io::stderr(), "emuv CUDA: {message}");
    }
}

/// Says once per name that `cuGetProcAddress` reported `name` absent (with `EMUV_CUDA_LOG`).
pub(crate) fn log_absent(name: &str, why: &str) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if !logging() {
        return;
    }
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if said
        .get_or_insert_with(HashSet::new)
        .insert(name.to_owned())
    {
        let _ = writeln!(
            std::io::stderr(),
            "emuv CUDA: cuGetProcAddress({name}): {why}"
        );
    }
}

/// Called by every entry point the library does not implement.
pub(crate) fn unsupported_call(name: &'static str) -> CUresult {
    if logging() {
        say_once(name, &format!("{name} is not supported on emulated cards"));
    }
    sys::CUDA_ERROR_NOT_SUPPORTED
}

/// The message kernels launches print once.
pub(crate) fn no_kernels() {
    say_once(
        "launch",
        "emulated cards run no kernels: the launch returns CUDA_ERROR_NOT_SUPPORTED (memory, \
         copies, streams and events work as on the real card)",
    );
}

/// Reads a C string argument; `None` for NULL.
///
/// # Safety
///
/// `ptr` is NULL or a NUL-terminated string, as the API requires.
pub(crate) unsafe fn c_str<'a>(ptr: *const std::ffi::c_char) -> Option<&'a CStr> {
    // SAFETY: per this function's contract.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) })
}

/// An exported entry point the library does not implement: it answers
/// `CUDA_ERROR_NOT_SUPPORTED` whatever its arguments (on x86-64 the caller owns the
/// arguments, so a function taking none can stand for any), and `cuGetProcAddress` does not
/// hand it out.
macro_rules! unsupported {
    ($name:ident) => {
        #[no_mangle]
        pub extern "C" fn $name() -> CUresult {
            unsupported_call(stringify!($name))
        }
    };
}

/// Every function `cuda.h` declares that no module here defines (generated by build.rs).
#[allow(non_snake_case)]
mod unsupported {
    use super::{unsupported_call, CUresult};
    include!(concat!(env!("OUT_DIR"), "/unsupported.rs"));
}
