// SPDX-License-Identifier: GPL-2.0
//! Memory: device, pinned, registered and managed allocations, stream-ordered allocations and
//! pools, copies (every `cudaMemcpyKind`, `cudaMemcpyDefault` inferring the direction from the
//! unified address space), memsets and pointer attributes. All of it is the driver's: the
//! kernel counts each byte per process, as NVML shows.

use crate::{
    driver::call,
    put,
    state::{self, api},
    sys, RtResult,
};
use std::ffi::{c_int, c_uint, c_void};

fn dptr(p: *const c_void) -> sys::CUdeviceptr {
    p as usize as sys::CUdeviceptr
}

/// A copy's direction: the runtime's five kinds, anything else refused.
fn check_kind(kind: sys::cudaMemcpyKind) -> RtResult {
    match kind {
        sys::cudaMemcpyHostToHost
        | sys::cudaMemcpyHostToDevice
        | sys::cudaMemcpyDeviceToHost
        | sys::cudaMemcpyDeviceToDevice
        | sys::cudaMemcpyDefault => Ok(()),
        _ => Err(sys::cudaErrorInvalidMemcpyDirection),
    }
}

/// Device memory for `out`: `cudaMalloc(0)` succeeds with NULL, as NVIDIA's runtime answers.
///
/// # Safety
///
/// `out` NULL or writable.
unsafe fn device_alloc(out: *mut *mut c_void, size: usize) -> RtResult {
    if out.is_null() {
        return Err(sys::cudaErrorInvalidValue);
    }
    state::ensure_context()?;
    if size == 0 {
        // SAFETY: the caller's out-pointer, non-NULL.
        return unsafe { put(out, std::ptr::null_mut()) };
    }
    let mut p: sys::CUdeviceptr = 0;
    call!(cuMemAlloc(&mut p, size))?;
    // SAFETY: as above.
    unsafe { put(out, p as usize as *mut c_void) }
}

#[no_mangle]
pub unsafe extern "C" fn cudaMalloc(out: *mut *mut c_void, size: usize) -> sys::cudaError_t {
    // SAFETY: the caller's out-pointer.
    api(|| unsafe { device_alloc(out, size) })
}

/// `cudaFree(NULL)` only makes sure the context exists (programs call it for that).
#[no_mangle]
pub unsafe extern "C" fn cudaFree(p: *mut c_void) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        if p.is_null() {
            return Ok(());
        }
        call!(cuMemFree(dptr(p)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemGetInfo(free: *mut usize, total: *mut usize) -> sys::cudaError_t {
    api(|| {
        if free.is_null() || total.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        call!(cuMemGetInfo(free, total))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMallocHost(out: *mut *mut c_void, size: usize) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuMemAllocHost(out, size))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaHostAlloc(
    out: *mut *mut c_void,
    size: usize,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        // cudaHostAlloc* flags have the values of CU_MEMHOSTALLOC_*.
        call!(cuMemHostAlloc(out, size, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaFreeHost(p: *mut c_void) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuMemFreeHost(p))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaHostRegister(
    p: *mut c_void,
    size: usize,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuMemHostRegister(p, size, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaHostUnregister(p: *mut c_void) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuMemHostUnregister(p))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaHostGetDevicePointer(
    out: *mut *mut c_void,
    host: *mut c_void,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        let mut p: sys::CUdeviceptr = 0;
        call!(cuMemHostGetDevicePointer(&mut p, host, flags))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, p as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaHostGetFlags(
    flags: *mut c_uint,
    host: *mut c_void,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuMemHostGetFlags(flags, host))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMallocManaged(
    out: *mut *mut c_void,
    size: usize,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        if size == 0 {
            // SAFETY: the caller's out-pointer, non-NULL.
            return unsafe { put(out, std::ptr::null_mut()) };
        }
        let mut p: sys::CUdeviceptr = 0;
        call!(cuMemAllocManaged(&mut p, size, flags))?;
        // SAFETY: as above.
        unsafe { put(out, p as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMallocPitch(
    out: *mut *mut c_void,
    pitch: *mut usize,
    width: usize,
    height: usize,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() || pitch.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        let mut p: sys::CUdeviceptr = 0;
        // The largest element size the driver accepts: the pitch the runtime gives.
        call!(cuMemAllocPitch(&mut p, pitch, width, height, 16))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, p as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMallocAsync(
    out: *mut *mut c_void,
    size: usize,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        let mut p: sys::CUdeviceptr = 0;
        call!(cuMemAllocAsync(&mut p, size, stream))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, p as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMallocFromPoolAsync(
    out: *mut *mut c_void,
    size: usize,
    pool: sys::cudaMemPool_t,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        let mut p: sys::CUdeviceptr = 0;
        call!(cuMemAllocFromPoolAsync(&mut p, size, pool, stream))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, p as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaFreeAsync(
    p: *mut c_void,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuMemFreeAsync(dptr(p), stream))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetDefaultMemPool(
    pool: *mut sys::cudaMemPool_t,
    device: c_int,
) -> sys::cudaError_t {
    api(|| {
        let handle = state::valid_device(device)?;
        call!(cuDeviceGetDefaultMemPool(pool, handle))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetMemPool(
    pool: *mut sys::cudaMemPool_t,
    device: c_int,
) -> sys::cudaError_t {
    api(|| {
        let handle = state::valid_device(device)?;
        call!(cuDeviceGetMemPool(pool, handle))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceSetMemPool(
    device: c_int,
    pool: sys::cudaMemPool_t,
) -> sys::cudaError_t {
    api(|| {
        let handle = state::valid_device(device)?;
        call!(cuDeviceSetMemPool(handle, pool))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemPoolCreate(
    pool: *mut sys::cudaMemPool_t,
    props: *const sys::cudaMemPoolProps,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        // cudaMemPoolProps has CUmemPoolProps' layout and values.
        call!(cuMemPoolCreate(pool, props.cast()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemPoolDestroy(pool: sys::cudaMemPool_t) -> sys::cudaError_t {
    api(|| call!(cuMemPoolDestroy(pool)))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemPoolSetAttribute(
    pool: sys::cudaMemPool_t,
    attr: sys::cudaMemPoolAttr,
    value: *mut c_void,
) -> sys::cudaError_t {
    api(|| {
        call!(cuMemPoolSetAttribute(
            pool,
            attr as sys::CUmemPool_attribute,
            value
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemPoolGetAttribute(
    pool: sys::cudaMemPool_t,
    attr: sys::cudaMemPoolAttr,
    value: *mut c_void,
) -> sys::cudaError_t {
    api(|| {
        call!(cuMemPoolGetAttribute(
            pool,
            attr as sys::CUmemPool_attribute,
            value
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemPoolTrimTo(
    pool: sys::cudaMemPool_t,
    keep: usize,
) -> sys::cudaError_t {
    api(|| call!(cuMemPoolTrimTo(pool, keep)))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemPoolSetAccess(
    pool: sys::cudaMemPool_t,
    map: *const sys::cudaMemAccessDesc,
    count: usize,
) -> sys::cudaError_t {
    // cudaMemAccessDesc has CUmemAccessDesc's layout and values.
    api(|| call!(cuMemPoolSetAccess(pool, map.cast(), count)))
}

/// A copy of `count` bytes: synchronous unless `stream` is given.
pub(crate) fn copy(
    dst: *mut c_void,
    src: *const c_void,
    count: usize,
    kind: sys::cudaMemcpyKind,
    stream: Option<sys::cudaStream_t>,
) -> RtResult {
    check_kind(kind)?;
    state::ensure_context()?;
    if count == 0 {
        return Ok(());
    }
    // With unified addressing the driver tells host from device memory itself, as NVIDIA's
    // runtime lets it for every kind.
    match stream {
        None => call!(cuMemcpy(dptr(dst), dptr(src), count)),
        Some(stream) => call!(cuMemcpyAsync(dptr(dst), dptr(src), count, stream)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpy(
    dst: *mut c_void,
    src: *const c_void,
    count: usize,
    kind: sys::cudaMemcpyKind,
) -> sys::cudaError_t {
    api(|| copy(dst, src, count, kind, None))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyAsync(
    dst: *mut c_void,
    src: *const c_void,
    count: usize,
    kind: sys::cudaMemcpyKind,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| copy(dst, src, count, kind, Some(stream)))
}

/// A 2D copy as the driver's `CUDA_MEMCPY2D`, both sides in the unified address space.
#[allow(clippy::too_many_arguments)]
fn copy_2d(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: sys::cudaMemcpyKind,
    stream: Option<sys::cudaStream_t>,
) -> RtResult {
    check_kind(kind)?;
    state::ensure_context()?;
    if width > dpitch || width > spitch {
        return Err(sys::cudaErrorInvalidPitchValue);
    }
    if width == 0 || height == 0 {
        return Ok(());
    }
    let params = sys::CUDA_MEMCPY2D {
        srcMemoryType: sys::CU_MEMORYTYPE_UNIFIED,
        srcDevice: dptr(src),
        srcPitch: spitch,
        dstMemoryType: sys::CU_MEMORYTYPE_UNIFIED,
        dstDevice: dptr(dst),
        dstPitch: dpitch,
        WidthInBytes: width,
        Height: height,
        ..Default::default()
    };
    match stream {
        None => call!(cuMemcpy2D(&params)),
        Some(stream) => call!(cuMemcpy2DAsync(&params, stream)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpy2D(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: sys::cudaMemcpyKind,
) -> sys::cudaError_t {
    api(|| copy_2d(dst, dpitch, src, spitch, width, height, kind, None))
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cudaMemcpy2DAsync(
    dst: *mut c_void,
    dpitch: usize,
    src: *const c_void,
    spitch: usize,
    width: usize,
    height: usize,
    kind: sys::cudaMemcpyKind,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| copy_2d(dst, dpitch, src, spitch, width, height, kind, Some(stream)))
}

fn copy_peer(
    dst: *mut c_void,
    dst_device: c_int,
    src: *const c_void,
    src_device: c_int,
    count: usize,
    stream: Option<sys::cudaStream_t>,
) -> RtResult {
    state::ensure_context()?;
    let (dst_ctx, src_ctx) = (
        state::primary_context(dst_device)?,
        state::primary_context(src_device)?,
    );
    if count == 0 {
        return Ok(());
    }
    match stream {
        None => call!(cuMemcpyPeer(dptr(dst), dst_ctx, dptr(src), src_ctx, count)),
        Some(s) => call!(cuMemcpyPeerAsync(
            dptr(dst),
            dst_ctx,
            dptr(src),
            src_ctx,
            count,
            s
        )),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyPeer(
    dst: *mut c_void,
    dst_device: c_int,
    src: *const c_void,
    src_device: c_int,
    count: usize,
) -> sys::cudaError_t {
    api(|| copy_peer(dst, dst_device, src, src_device, count, None))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyPeerAsync(
    dst: *mut c_void,
    dst_device: c_int,
    src: *const c_void,
    src_device: c_int,
    count: usize,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| copy_peer(dst, dst_device, src, src_device, count, Some(stream)))
}

/// `cudaMemset`: the value's low byte, as the runtime documents.
fn memset(
    p: *mut c_void,
    value: c_int,
    count: usize,
    stream: Option<sys::cudaStream_t>,
) -> RtResult {
    state::ensure_context()?;
    if count == 0 {
        return Ok(());
    }
    let byte = value as u8;
    match stream {
        None => call!(cuMemsetD8(dptr(p), byte, count)),
        Some(s) => call!(cuMemsetD8Async(dptr(p), byte, count, s)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemset(
    p: *mut c_void,
    value: c_int,
    count: usize,
) -> sys::cudaError_t {
    api(|| memset(p, value, count, None))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemsetAsync(
    p: *mut c_void,
    value: c_int,
    count: usize,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| memset(p, value, count, Some(stream)))
}

fn memset_2d(
    p: *mut c_void,
    pitch: usize,
    value: c_int,
    width: usize,
    height: usize,
    stream: Option<sys::cudaStream_t>,
) -> RtResult {
    state::ensure_context()?;
    if width == 0 || height == 0 {
        return Ok(());
    }
    let byte = value as u8;
    match stream {
        None => call!(cuMemsetD2D8(dptr(p), pitch, byte, width, height)),
        Some(s) => call!(cuMemsetD2D8Async(dptr(p), pitch, byte, width, height, s)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemset2D(
    p: *mut c_void,
    pitch: usize,
    value: c_int,
    width: usize,
    height: usize,
) -> sys::cudaError_t {
    api(|| memset_2d(p, pitch, value, width, height, None))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemset2DAsync(
    p: *mut c_void,
    pitch: usize,
    value: c_int,
    width: usize,
    height: usize,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| memset_2d(p, pitch, value, width, height, Some(stream)))
}

/// `cudaPointerGetAttributes`: the driver's attributes in the runtime's form (measured on
/// driver 580: host memory the runtime did not give reads as unregistered, device -2).
#[no_mangle]
pub unsafe extern "C" fn cudaPointerGetAttributes(
    out: *mut sys::cudaPointerAttributes,
    p: *const c_void,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        let mut memory_type: c_uint = 0;
        let mut ordinal: c_int = -2;
        let mut device_pointer: u64 = 0;
        let mut host_pointer: u64 = 0;
        let mut managed: c_int = 0;
        let mut attributes = [
            sys::CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
            sys::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
            sys::CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
            sys::CU_POINTER_ATTRIBUTE_HOST_POINTER,
            sys::CU_POINTER_ATTRIBUTE_IS_MANAGED,
        ];
        let mut data: [*mut c_void; 5] = [
            (&mut memory_type as *mut c_uint).cast(),
            (&mut ordinal as *mut c_int).cast(),
            (&mut device_pointer as *mut u64).cast(),
            (&mut host_pointer as *mut u64).cast(),
            (&mut managed as *mut c_int).cast(),
        ];
        call!(cuPointerGetAttributes(
            5,
            attributes.as_mut_ptr(),
            data.as_mut_ptr(),
            dptr(p)
        ))?;
        let kind = if managed != 0 {
            sys::cudaMemoryTypeManaged
        } else {
            match memory_type {
                sys::CU_MEMORYTYPE_HOST => sys::cudaMemoryTypeHost,
                sys::CU_MEMORYTYPE_DEVICE => sys::cudaMemoryTypeDevice,
                _ => sys::cudaMemoryTypeUnregistered,
            }
        };
        let attrs = sys::cudaPointerAttributes {
            type_: kind,
            device: ordinal,
            devicePointer: device_pointer as usize as *mut c_void,
            hostPointer: host_pointer as usize as *mut c_void,
            ..Default::default()
        };
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, attrs) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaIpcGetMemHandle(
    handle: *mut sys::cudaIpcMemHandle_t,
    p: *mut c_void,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        // cudaIpcMemHandle_t has CUipcMemHandle's layout.
        call!(cuIpcGetMemHandle(handle.cast(), dptr(p)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaIpcOpenMemHandle(
    out: *mut *mut c_void,
    handle: sys::cudaIpcMemHandle_t,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        state::ensure_context()?;
        let mut p: sys::CUdeviceptr = 0;
        // SAFETY: the two handle types are the same 64 bytes.
        let handle: sys::CUipcMemHandle = unsafe { std::mem::transmute(handle) };
        call!(cuIpcOpenMemHandle(&mut p, handle, flags))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, p as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaIpcCloseMemHandle(p: *mut c_void) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuIpcCloseMemHandle(dptr(p)))
    })
}
