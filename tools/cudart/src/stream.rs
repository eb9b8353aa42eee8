// SPDX-License-Identifier: GPL-2.0
//! Streams and events are the driver's (`cudaStream_t` is `CUstream`, `cudaEvent_t` is
//! `CUevent`, the default streams have the same handles), and so are host functions. Stream
//! capture is answered honestly: no stream is ever capturing, and beginning a capture is not
//! supported, since captured kernels could not run.

use crate::{
    driver::call,
    put,
    state::{self, api},
    sys,
};
use std::{
    cell::Cell,
    ffi::{c_int, c_uint, c_void},
};

#[no_mangle]
pub unsafe extern "C" fn cudaStreamCreate(stream: *mut sys::cudaStream_t) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamCreate(stream, 0))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamCreateWithFlags(
    stream: *mut sys::cudaStream_t,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamCreate(stream, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamCreateWithPriority(
    stream: *mut sys::cudaStream_t,
    flags: c_uint,
    priority: c_int,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamCreateWithPriority(stream, flags, priority))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamDestroy(stream: sys::cudaStream_t) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamDestroy(stream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamSynchronize(stream: sys::cudaStream_t) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamSynchronize(stream))
    })
}

/// `cudaErrorNotReady` while work is pending; not recorded as the last error, as NVIDIA's
/// runtime leaves it.
#[no_mangle]
pub unsafe extern "C" fn cudaStreamQuery(stream: sys::cudaStream_t) -> sys::cudaError_t {
    state::api_ready(|| {
        state::ensure_context()?;
        call!(cuStreamQuery(stream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamWaitEvent(
    stream: sys::cudaStream_t,
    event: sys::cudaEvent_t,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamWaitEvent(stream, event, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamGetPriority(
    stream: sys::cudaStream_t,
    priority: *mut c_int,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamGetPriority(stream, priority))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamGetFlags(
    stream: sys::cudaStream_t,
    flags: *mut c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamGetFlags(stream, flags))
    })
}

/// `cudaStreamAddCallback`: the callback's type is the driver's (`CUstream`, `CUresult`, data),
/// with the same values.
#[no_mangle]
pub unsafe extern "C" fn cudaStreamAddCallback(
    stream: sys::cudaStream_t,
    callback: sys::cudaStreamCallback_t,
    data: *mut c_void,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuStreamAddCallback(stream, callback, data, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaLaunchHostFunc(
    stream: sys::cudaStream_t,
    function: sys::cudaHostFn_t,
    data: *mut c_void,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        if function.is_none() {
            return Err(sys::cudaErrorInvalidValue);
        }
        call!(cuLaunchHostFunc(stream, function, data))
    })
}

thread_local! {
    /// `cudaThreadExchangeStreamCaptureMode`'s mode for this thread.
    static CAPTURE_MODE: Cell<sys::cudaStreamCaptureMode> =
        const { Cell::new(sys::cudaStreamCaptureModeGlobal) };
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamIsCapturing(
    _stream: sys::cudaStream_t,
    status: *mut sys::cudaStreamCaptureStatus,
) -> sys::cudaError_t {
    // SAFETY: the caller's out-pointer.
    api(|| unsafe { put(status, sys::cudaStreamCaptureStatusNone) })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamGetCaptureInfo(
    _stream: sys::cudaStream_t,
    status: *mut sys::cudaStreamCaptureStatus,
    id: *mut u64,
    _graph: *mut sys::cudaGraph_t,
    _dependencies: *mut *const sys::cudaGraphNode_t,
    _edges: *mut *const sys::cudaGraphEdgeData,
    count: *mut usize,
) -> sys::cudaError_t {
    api(|| {
        // SAFETY: the caller's out-pointers; only the status is required.
        unsafe {
            put(status, sys::cudaStreamCaptureStatusNone)?;
            if !id.is_null() {
                put(id, 0)?;
            }
            if !count.is_null() {
                put(count, 0)?;
            }
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaThreadExchangeStreamCaptureMode(
    mode: *mut sys::cudaStreamCaptureMode,
) -> sys::cudaError_t {
    api(|| {
        if mode.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        // SAFETY: the caller's in-out pointer, non-NULL.
        let wanted = unsafe { mode.read_unaligned() };
        let old = CAPTURE_MODE.with(|m| m.replace(wanted));
        // SAFETY: as above.
        unsafe { put(mode, old) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaStreamBeginCapture(
    _stream: sys::cudaStream_t,
    _mode: sys::cudaStreamCaptureMode,
) -> sys::cudaError_t {
    crate::say_once(
        "capture",
        "stream capture (CUDA graphs) is not supported on emulated cards: kernels do not run",
    );
    api(|| Err(sys::cudaErrorNotSupported))
}

/// No stream is capturing, so there is no capture to end.
#[no_mangle]
pub unsafe extern "C" fn cudaStreamEndCapture(
    _stream: sys::cudaStream_t,
    _graph: *mut sys::cudaGraph_t,
) -> sys::cudaError_t {
    api(|| Err(sys::cudaErrorIllegalState))
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventCreate(event: *mut sys::cudaEvent_t) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventCreate(event, 0))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventCreateWithFlags(
    event: *mut sys::cudaEvent_t,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventCreate(event, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventRecord(
    event: sys::cudaEvent_t,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventRecord(event, stream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventRecordWithFlags(
    event: sys::cudaEvent_t,
    stream: sys::cudaStream_t,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventRecordWithFlags(event, stream, flags))
    })
}

/// `cudaErrorNotReady` while the event's work is pending, not recorded as the last error.
#[no_mangle]
pub unsafe extern "C" fn cudaEventQuery(event: sys::cudaEvent_t) -> sys::cudaError_t {
    state::api_ready(|| {
        state::ensure_context()?;
        call!(cuEventQuery(event))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventSynchronize(event: sys::cudaEvent_t) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventSynchronize(event))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventElapsedTime(
    ms: *mut f32,
    start: sys::cudaEvent_t,
    end: sys::cudaEvent_t,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventElapsedTime(ms, start, end))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaEventDestroy(event: sys::cudaEvent_t) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuEventDestroy(event))
    })
}
