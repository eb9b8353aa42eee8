// SPDX-License-Identifier: GPL-2.0
//! The runtime's state: each thread's current device and last error, the process's sticky
//! error, and the primary context of each device, made current for a thread on its first call
//! that needs one (as NVIDIA's runtime does: a context the program made current itself, through
//! the driver, is used instead).

use crate::{
    driver::{self, call},
    sys, RtResult,
};
use std::{
    cell::Cell,
    collections::HashMap,
    ffi::c_int,
    sync::{Mutex, PoisonError},
};

thread_local! {
    /// `cudaSetDevice`'s device for this thread; device 0 until it is called.
    static DEVICE: Cell<c_int> = const { Cell::new(0) };
    /// The last error a runtime call of this thread returned (`cudaGetLastError`).
    static LAST_ERROR: Cell<sys::cudaError_t> = const { Cell::new(sys::cudaSuccess) };
}

/// A sticky error: once a call returned one, every call returns it until `cudaDeviceReset`
/// (a real card's context is corrupt after them).
static STICKY: Mutex<Option<sys::cudaError_t>> = Mutex::new(None);

/// Errors after which a real card's context cannot be used again.
fn is_sticky(code: sys::cudaError_t) -> bool {
    matches!(
        code,
        sys::cudaErrorIllegalAddress
            | sys::cudaErrorLaunchFailure
            | sys::cudaErrorAssert
            | sys::cudaErrorHardwareStackError
            | sys::cudaErrorIllegalInstruction
            | sys::cudaErrorMisalignedAddress
            | sys::cudaErrorInvalidAddressSpace
            | sys::cudaErrorInvalidPc
            | sys::cudaErrorECCUncorrectable
            | sys::cudaErrorDevicesUnavailable
    )
}

/// A driver `CUresult` as the runtime's `cudaError_t`. The runtime's codes took the driver's
/// numbers in CUDA 10 wherever both have the error; the differences are named here.
pub fn from_driver(rc: sys::CUresult) -> sys::cudaError_t {
    match rc {
        sys::CUDA_SUCCESS => sys::cudaSuccess,
        // A lost card: the runtime's "all CUDA-capable devices are busy or unavailable".
        sys::CUDA_ERROR_DEVICE_UNAVAILABLE => sys::cudaErrorDevicesUnavailable,
        sys::CUDA_ERROR_NOT_INITIALIZED => sys::cudaErrorInitializationError,
        sys::CUDA_ERROR_DEINITIALIZED => sys::cudaErrorCudartUnloading,
        sys::CUDA_ERROR_INVALID_CONTEXT => sys::cudaErrorDeviceUninitialized,
        other => other as sys::cudaError_t,
    }
}

/// A driver call's result.
pub fn check(rc: sys::CUresult) -> RtResult {
    match rc {
        sys::CUDA_SUCCESS => Ok(()),
        other => Err(from_driver(other)),
    }
}

/// Runs one runtime call: a sticky error answers it first; its error becomes the thread's last
/// error.
pub fn api(call: impl FnOnce() -> RtResult) -> sys::cudaError_t {
    let sticky = *STICKY.lock().unwrap_or_else(PoisonError::into_inner);
    let result = match sticky {
        Some(code) => Err(code),
        None => call(),
    };
    match result {
        Ok(()) => sys::cudaSuccess,
        Err(code) => {
            if is_sticky(code) {
                let mut sticky = STICKY.lock().unwrap_or_else(PoisonError::into_inner);
                sticky.get_or_insert(code);
            }
            LAST_ERROR.with(|e| e.set(code));
            code
        }
    }
}

/// `api` for the queries (`cudaStreamQuery`, `cudaEventQuery`): their `cudaErrorNotReady` is
/// an answer, not an error, and leaves the thread's last error as it was.
pub fn api_ready(call: impl FnOnce() -> RtResult) -> sys::cudaError_t {
    let before = LAST_ERROR.with(Cell::get);
    let code = api(call);
    if code == sys::cudaErrorNotReady {
        LAST_ERROR.with(|e| e.set(before));
    }
    code
}

/// Runs a call that never answers with the sticky error (error names, versions, the last
/// error itself).
pub fn record(result: RtResult) -> sys::cudaError_t {
    match result {
        Ok(()) => sys::cudaSuccess,
        Err(code) => {
            LAST_ERROR.with(|e| e.set(code));
            code
        }
    }
}

pub fn take_last_error() -> sys::cudaError_t {
    let sticky = *STICKY.lock().unwrap_or_else(PoisonError::into_inner);
    let last = LAST_ERROR.with(|e| e.replace(sys::cudaSuccess));
    sticky.unwrap_or(last)
}

pub fn peek_last_error() -> sys::cudaError_t {
    let sticky = *STICKY.lock().unwrap_or_else(PoisonError::into_inner);
    sticky.unwrap_or_else(|| LAST_ERROR.with(Cell::get))
}

pub fn clear_sticky() {
    *STICKY.lock().unwrap_or_else(PoisonError::into_inner) = None;
    LAST_ERROR.with(|e| e.set(sys::cudaSuccess));
}

/// The number of devices the driver shows (CUDA_VISIBLE_DEVICES applied by it).
pub fn device_count() -> RtResult<c_int> {
    let mut count = 0;
    call!(cuDeviceGetCount(&mut count))?;
    Ok(count)
}

/// `device` checked against the driver's devices.
pub fn valid_device(device: c_int) -> RtResult<sys::CUdevice> {
    let count = device_count()?;
    if count == 0 {
        return Err(sys::cudaErrorNoDevice);
    }
    if device < 0 || device >= count {
        return Err(sys::cudaErrorInvalidDevice);
    }
    let mut handle: sys::CUdevice = 0;
    call!(cuDeviceGet(&mut handle, device))?;
    Ok(handle)
}

/// Each device's primary context, retained once for the life of the process.
static PRIMARY: Mutex<Option<HashMap<c_int, usize>>> = Mutex::new(None);

/// `device`'s primary context, retained on first use.
pub fn primary_context(device: c_int) -> RtResult<sys::CUcontext> {
    let handle = valid_device(device)?;
    let mut primary = PRIMARY.lock().unwrap_or_else(PoisonError::into_inner);
    let contexts = primary.get_or_insert_with(HashMap::new);
    if let Some(ctx) = contexts.get(&device) {
        return Ok(*ctx as sys::CUcontext);
    }
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    call!(cuDevicePrimaryCtxRetain(&mut ctx, handle))?;
    contexts.insert(device, ctx as usize);
    Ok(ctx)
}

/// The thread's device: that of its current context when it has one, else `cudaSetDevice`'s.
pub fn current_device() -> RtResult<c_int> {
    driver::get()?;
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    call!(cuCtxGetCurrent(&mut ctx))?;
    if !ctx.is_null() {
        let mut device: sys::CUdevice = 0;
        if call!(cuCtxGetDevice(&mut device)).is_ok() {
            return Ok(device);
        }
    }
    Ok(DEVICE.with(Cell::get))
}

/// Makes `device` the thread's device and its primary context current (CUDA 12 and later
/// initialise the context in `cudaSetDevice`).
pub fn set_device(device: c_int) -> RtResult {
    let ctx = primary_context(device)?;
    call!(cuCtxSetCurrent(ctx))?;
    DEVICE.with(|d| d.set(device));
    Ok(())
}

/// Makes sure the thread has a current context, as every call touching the card needs: its own
/// (set through the driver) or its device's primary context.
pub fn ensure_context() -> RtResult {
    driver::get()?;
    let mut ctx: sys::CUcontext = std::ptr::null_mut();
    call!(cuCtxGetCurrent(&mut ctx))?;
    if ctx.is_null() {
        let ctx = primary_context(DEVICE.with(Cell::get))?;
        call!(cuCtxSetCurrent(ctx))?;
    }
    Ok(())
}

/// `cudaDeviceReset`: the device's primary context is destroyed (all its memory freed) and the
/// sticky error cleared; the next call makes a new one.
pub fn reset_device() -> RtResult {
    let device = current_device()?;
    let handle = valid_device(device)?;
    call!(cuDevicePrimaryCtxReset(handle))?;
    // The thread's context is gone with it: the next call makes the new one current.
    call!(cuCtxSetCurrent(std::ptr::null_mut()))?;
    let mut primary = PRIMARY.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(contexts) = primary.as_mut() {
        // The reset released every retain, ours too.
        contexts.remove(&device);
    }
    drop(primary);
    crate::registry::forget_device(device);
    clear_sticky();
    Ok(())
}
