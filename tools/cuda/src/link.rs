// SPDX-License-Identifier: GPL-2.0
//! The JIT linker (`cuLinkCreate`, `cuLinkAddData`, `cuLinkAddFile`, `cuLinkComplete`), which
//! numba-cuda and others use to turn PTX into a loadable image. No code is generated: the
//! inputs are parsed as `cuModuleLoadData` parses them, and the "linked image" is a PTX text
//! that declares what they declare (their kernels and variables, with their sizes), so the
//! module loaded from it finds the same kernels and gives the variables real memory. Launching
//! any of them then answers `CUDA_ERROR_NOT_SUPPORTED`, as every launch does here.

use crate::{c_str, driver, handles::Registry, image, put, status, sys, CuResult};
use std::{
    collections::BTreeMap,
    ffi::{c_char, c_uint, c_void},
    sync::Mutex,
};

const INVALID: sys::CUresult = sys::CUDA_ERROR_INVALID_VALUE;

/// Where the caller asked for the linker's logs.
#[derive(Default, Clone, Copy)]
struct Logs {
    info: Option<(usize, usize)>,
    error: Option<(usize, usize)>,
}

#[derive(Default)]
struct Linked {
    kernels: Vec<String>,
    variables: BTreeMap<String, u64>,
    /// The image `cuLinkComplete` handed out; the state owns it.
    image: Vec<u8>,
}

pub struct LinkState {
    logs: Logs,
    linked: Mutex<Linked>,
}

static STATES: Registry<LinkState> = Registry::new();

/// Reads the JIT options the logs are in.
///
/// # Safety
///
/// `options` and `values` are NULL or arrays of `count` entries, as the API requires.
unsafe fn read_logs(
    count: c_uint,
    options: *const sys::CUjit_option,
    values: *const *mut c_void,
) -> CuResult<Logs> {
    let mut logs = Logs::default();
    if count == 0 {
        return Ok(logs);
    }
    if options.is_null() || values.is_null() {
        return Err(INVALID);
    }
    // SAFETY: per this function's contract.
    let (options, values) = unsafe {
        (
            std::slice::from_raw_parts(options, count as usize),
            std::slice::from_raw_parts(values, count as usize),
        )
    };
    let (mut info, mut info_len, mut error, mut error_len) = (0, 0, 0, 0);
    for (option, value) in options.iter().zip(values) {
        // Sizes are passed as the pointer's value, as the JIT option table documents.
        match *option {
            sys::CU_JIT_INFO_LOG_BUFFER => info = *value as usize,
            sys::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES => info_len = *value as usize,
            sys::CU_JIT_ERROR_LOG_BUFFER => error = *value as usize,
            sys::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES => error_len = *value as usize,
            _ => {}
        }
    }
    if info != 0 && info_len > 0 {
        logs.info = Some((info, info_len));
    }
    if error != 0 && error_len > 0 {
        logs.error = Some((error, error_len));
    }
    Ok(logs)
}

/// Writes `text` (truncated, NUL-terminated) into a log buffer the caller gave.
fn write_log(buffer: Option<(usize, usize)>, text: &str) {
    if let Some((at, len)) = buffer {
        let n = text.len().min(len - 1);
        // SAFETY: the caller gave `len` writable bytes at `at` for this log.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), at as *mut u8, n);
            (at as *mut u8).add(n).write(0);
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuLinkCreate_v2(
    count: c_uint,
    options: *mut sys::CUjit_option,
    values: *mut *mut c_void,
    out: *mut sys::CUlinkState,
) -> sys::CUresult {
    let result = (|| {
        crate::context::current()?;
        if out.is_null() {
            return Err(INVALID);
        }
        // SAFETY: the caller's option arrays.
        let logs = unsafe { read_logs(count, options, values) }?;
        write_log(logs.info, "");
        write_log(logs.error, "");
        let (handle, _) = STATES.insert(|_| LinkState {
            logs,
            linked: Mutex::new(Linked::default()),
        });
        // SAFETY: an out-pointer from the caller, checked non-NULL.
        unsafe { put(out, handle as sys::CUlinkState) }
    })();
    status(result)
}

fn add(state: sys::CUlinkState, kind: sys::CUjitInputType, bytes: &[u8], name: &str) -> CuResult {
    driver::cards()?;
    let state = STATES
        .get(state as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let parsed = match kind {
        sys::CU_JIT_INPUT_PTX | sys::CU_JIT_INPUT_CUBIN | sys::CU_JIT_INPUT_FATBINARY => {
            image::parse_bytes(bytes)
        }
        // Device libraries and objects (libcudadevrt, relocatable code) bring functions that
        // would be linked into kernels; with no code generated there is nothing to take.
        sys::CU_JIT_INPUT_LIBRARY | sys::CU_JIT_INPUT_OBJECT => return Ok(()),
        _ => return Err(INVALID),
    };
    let image = parsed.map_err(|e| {
        write_log(state.logs.error, &format!("emuv: {name}: {e}"));
        e.cuda_code()
    })?;
    let mut linked = state.linked.lock().unwrap_or_else(|e| e.into_inner());
    for k in image.kernels {
        if !linked.kernels.contains(&k) {
            linked.kernels.push(k);
        }
    }
    for (v, size) in image.globals {
        linked.variables.entry(v).or_insert(size);
    }
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cuLinkAddData_v2(
    state: sys::CUlinkState,
    kind: sys::CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    _count: c_uint,
    _options: *mut sys::CUjit_option,
    _values: *mut *mut c_void,
) -> sys::CUresult {
    if data.is_null() || size == 0 {
        return INVALID;
    }
    // SAFETY: the caller's `size` bytes of input.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
    // SAFETY: NULL or a C string.
    let name = unsafe { c_str(name) }
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    status(add(state, kind, bytes, &name))
}

#[no_mangle]
pub unsafe extern "C" fn cuLinkAddFile_v2(
    state: sys::CUlinkState,
    kind: sys::CUjitInputType,
    path: *const c_char,
    _count: c_uint,
    _options: *mut sys::CUjit_option,
    _values: *mut *mut c_void,
) -> sys::CUresult {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: NULL or a C string.
    let Some(path) = (unsafe { c_str(path) }) else {
        return INVALID;
    };
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    match std::fs::read(path) {
        Ok(bytes) => status(add(state, kind, &bytes, &path.to_string_lossy())),
        Err(_) => sys::CUDA_ERROR_FILE_NOT_FOUND,
    }
}

/// The PTX text that declares what the inputs declared.
fn declarations(linked: &Linked, sm: u32) -> Vec<u8> {
    let mut text = format!(".version 8.0\n.target sm_{sm}\n.address_size 64\n");
    for (name, size) in &linked.variables {
        text.push_str(&format!(
            ".visible .global .align 8 .b8 {name}[{}];\n",
            (*size).max(1)
        ));
    }
    for name in &linked.kernels {
        text.push_str(&format!(".visible .entry {name}()\n{{\n\tret;\n}}\n"));
    }
    let mut bytes = text.into_bytes();
    bytes.push(0);
    bytes
}

#[no_mangle]
pub unsafe extern "C" fn cuLinkComplete(
    state: sys::CUlinkState,
    image_out: *mut *mut c_void,
    size_out: *mut usize,
) -> sys::CUresult {
    let result = (|| {
        let ctx = crate::context::current()?;
        let (major, minor) = driver::card(ctx.device)?.facts.compute_capability;
        let state = STATES
            .get(state as usize)
            .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
        if image_out.is_null() || size_out.is_null() {
            return Err(INVALID);
        }
        let mut linked = state.linked.lock().unwrap_or_else(|e| e.into_inner());
        if linked.kernels.is_empty() && linked.variables.is_empty() {
            write_log(state.logs.error, "emuv: nothing to link");
            return Err(sys::CUDA_ERROR_INVALID_IMAGE);
        }
        linked.image = declarations(&linked, major * 10 + minor);
        let (ptr, len) = (linked.image.as_mut_ptr(), linked.image.len());
        // SAFETY: out-pointers from the caller, checked non-NULL; the image lives as long as
        // the state, as the API documents.
        unsafe {
            put(image_out, ptr.cast::<c_void>())?;
            put(size_out, len)
        }
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuLinkDestroy(state: sys::CUlinkState) -> sys::CUresult {
    status(driver::cards().and_then(|_| {
        STATES
            .remove(state as usize)
            .map(drop)
            .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declarations_parse_back_to_the_same_kernels_and_variables() {
        let mut linked = Linked::default();
        linked.kernels.push("_Z6kernelPf".into());
        linked.variables.insert("table".into(), 64);
        let text = declarations(&linked, 89);
        let image = image::parse_bytes(&text).expect("parses");
        assert!(image.has_kernel("_Z6kernelPf"));
        assert_eq!(image.global("table"), Some(64));
    }
}
