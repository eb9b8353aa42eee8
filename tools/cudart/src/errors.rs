// SPDX-License-Identifier: GPL-2.0
//! The runtime's error API: `cudaGetLastError`, `cudaPeekAtLastError`, and names and texts for
//! every `cudaError` value. Names come from `driver_types.h` (build.rs); the texts of codes the
//! runtime shares with the driver are the driver's `cuGetErrorString`, those of the runtime's
//! own codes are listed here.

use crate::{driver, state, sys};
use std::ffi::{c_char, CStr};

static NAMES: &[(sys::cudaError_t, &CStr)] = include!(concat!(env!("OUT_DIR"), "/error_names.rs"));

/// The texts of the runtime's own codes, and of shared codes whose runtime text differs.
static TEXTS: &[(sys::cudaError_t, &CStr)] = &[
    (sys::cudaSuccess, c"no error"),
    (sys::cudaErrorInvalidValue, c"invalid argument"),
    (sys::cudaErrorMemoryAllocation, c"out of memory"),
    (sys::cudaErrorInitializationError, c"initialization error"),
    (sys::cudaErrorCudartUnloading, c"driver shutting down"),
    (
        sys::cudaErrorInvalidConfiguration,
        c"invalid configuration argument",
    ),
    (sys::cudaErrorInvalidPitchValue, c"invalid pitch argument"),
    (sys::cudaErrorInvalidSymbol, c"invalid device symbol"),
    (sys::cudaErrorInvalidHostPointer, c"invalid host pointer"),
    (
        sys::cudaErrorInvalidDevicePointer,
        c"invalid device pointer",
    ),
    (sys::cudaErrorInvalidTexture, c"invalid texture reference"),
    (
        sys::cudaErrorInvalidMemcpyDirection,
        c"invalid copy direction for memcpy",
    ),
    (
        sys::cudaErrorInsufficientDriver,
        c"CUDA driver version is insufficient for CUDA runtime version",
    ),
    (
        sys::cudaErrorDevicesUnavailable,
        c"CUDA-capable device(s) is/are busy or unavailable",
    ),
    (
        sys::cudaErrorMissingConfiguration,
        c"__global__ function call is not configured",
    ),
    (
        sys::cudaErrorInvalidDeviceFunction,
        c"invalid device function",
    ),
    (
        sys::cudaErrorNoDevice,
        c"no CUDA-capable device is detected",
    ),
    (sys::cudaErrorInvalidDevice, c"invalid device ordinal"),
    (
        sys::cudaErrorSoftwareValidityNotEstablished,
        c"integrity checks failed",
    ),
    (
        sys::cudaErrorInvalidKernelImage,
        c"device kernel image is invalid",
    ),
    (sys::cudaErrorDeviceUninitialized, c"invalid device context"),
    (
        sys::cudaErrorInvalidResourceHandle,
        c"invalid resource handle",
    ),
    (
        sys::cudaErrorIllegalState,
        c"the operation cannot be performed in the present state",
    ),
    (sys::cudaErrorSymbolNotFound, c"named symbol not found"),
    (sys::cudaErrorNotReady, c"device not ready"),
    (sys::cudaErrorNotSupported, c"operation not supported"),
    (
        sys::cudaErrorStreamCaptureUnsupported,
        c"operation not permitted when stream is capturing",
    ),
    (sys::cudaErrorUnknown, c"unknown error"),
];

const UNRECOGNIZED: &CStr = c"unrecognized error code";

pub fn name(code: sys::cudaError_t) -> Option<&'static CStr> {
    NAMES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

fn text(code: sys::cudaError_t) -> &'static CStr {
    if let Some((_, text)) = TEXTS.iter().find(|(c, _)| *c == code) {
        return text;
    }
    if name(code).is_none() {
        return UNRECOGNIZED;
    }
    // A code shared with the driver: its text (the driver's strings are static).
    if let Some(get_string) = driver::opened().ok().and_then(|d| d.cuGetErrorString) {
        let mut text: *const c_char = std::ptr::null();
        // SAFETY: an out-pointer to a local; the driver answers with a static string or NULL.
        if unsafe { get_string(code as sys::CUresult, &mut text) } == sys::CUDA_SUCCESS
            && !text.is_null()
        {
            // SAFETY: a NUL-terminated static string of the driver.
            return unsafe { CStr::from_ptr(text) };
        }
    }
    UNRECOGNIZED
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetErrorName(code: sys::cudaError_t) -> *const c_char {
    name(code).unwrap_or(UNRECOGNIZED).as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetErrorString(code: sys::cudaError_t) -> *const c_char {
    text(code).as_ptr()
}

/// The thread's last error, reset to `cudaSuccess` (a sticky error stays).
#[no_mangle]
pub extern "C" fn cudaGetLastError() -> sys::cudaError_t {
    state::take_last_error()
}

#[no_mangle]
pub extern "C" fn cudaPeekAtLastError() -> sys::cudaError_t {
    state::peek_last_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_enum() {
        assert_eq!(
            name(sys::cudaErrorMemoryAllocation),
            Some(c"cudaErrorMemoryAllocation")
        );
        assert_eq!(
            name(sys::cudaErrorNotSupported),
            Some(c"cudaErrorNotSupported")
        );
        assert_eq!(name(12345), None);
        assert!(NAMES.len() > 120, "{} names", NAMES.len());
    }

    #[test]
    fn texts_of_runtime_codes() {
        assert_eq!(text(sys::cudaErrorMemoryAllocation), c"out of memory");
        assert_eq!(
            text(sys::cudaErrorInvalidDeviceFunction),
            c"invalid device function"
        );
        assert_eq!(text(12345), UNRECOGNIZED);
    }
}
