// SPDX-License-Identifier: GPL-2.0
//! Devices: enumeration, the thread's device, flags, limits, attributes, peers, versions, and
//! `cudaGetDeviceProperties`, which fills `cudaDeviceProp` field by field from the driver's
//! name, UUID, memory size and attributes as NVIDIA's runtime does (facts.md §6 names the
//! attribute behind each field), in the CUDA 13 layout or, linked as libcudart.so.12, CUDA 12's.

use crate::{
    driver::call,
    put,
    state::{self, api, valid_device},
    sys, RtResult,
};
use std::ffi::{c_char, c_int, c_uint, c_void};

/// One attribute of `device` (a driver device handle).
fn attribute(device: sys::CUdevice, number: u32) -> RtResult<c_int> {
    let mut value = 0;
    call!(cuDeviceGetAttribute(
        &mut value,
        number as sys::CUdevice_attribute,
        device
    ))?;
    Ok(value)
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetDeviceCount(count: *mut c_int) -> sys::cudaError_t {
    api(|| {
        if count.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        // The count is 0 whatever fails, as NVIDIA's runtime leaves it.
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(count, 0)? };
        let n = state::device_count()?;
        if n == 0 {
            return Err(sys::cudaErrorNoDevice);
        }
        // SAFETY: as above.
        unsafe { put(count, n) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaSetDevice(device: c_int) -> sys::cudaError_t {
    api(|| state::set_device(device))
}

#[no_mangle]
pub unsafe extern "C" fn cudaInitDevice(
    device: c_int,
    _device_flags: c_uint,
    _flags: c_uint,
) -> sys::cudaError_t {
    api(|| state::primary_context(device).map(drop))
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetDevice(device: *mut c_int) -> sys::cudaError_t {
    // SAFETY: the caller's out-pointer.
    api(|| unsafe { put(device, state::current_device()?) })
}

#[no_mangle]
pub extern "C" fn cudaDeviceReset() -> sys::cudaError_t {
    // Not refused by a sticky error: it is how a program recovers from one.
    state::record(state::reset_device())
}

#[no_mangle]
pub extern "C" fn cudaDeviceSynchronize() -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuCtxSynchronize())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaSetDeviceFlags(flags: c_uint) -> sys::cudaError_t {
    api(|| {
        let device = state::current_device()?;
        let handle = valid_device(device)?;
        // cudaDeviceMapHost (8) is always on; the driver keeps the scheduling flags.
        call!(cuDevicePrimaryCtxSetFlags(
            handle,
            flags & !sys::cudaDeviceMapHost
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetDeviceFlags(flags: *mut c_uint) -> sys::cudaError_t {
    api(|| {
        let handle = valid_device(state::current_device()?)?;
        let (mut value, mut active) = (0, 0);
        call!(cuDevicePrimaryCtxGetState(handle, &mut value, &mut active))?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(flags, value | sys::cudaDeviceMapHost) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetLimit(
    value: *mut usize,
    limit: sys::cudaLimit,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        let mut v = 0;
        call!(cuCtxGetLimit(&mut v, limit as sys::CUlimit))?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(value, v) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceSetLimit(
    limit: sys::cudaLimit,
    value: usize,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuCtxSetLimit(limit as sys::CUlimit, value))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetAttribute(
    value: *mut c_int,
    attr: sys::cudaDeviceAttr,
    device: c_int,
) -> sys::cudaError_t {
    api(|| {
        if value.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let handle = valid_device(device)?;
        let v = attribute(handle, attr)?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(value, v) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetPCIBusId(
    bus_id: *mut c_char,
    len: c_int,
    device: c_int,
) -> sys::cudaError_t {
    api(|| {
        if bus_id.is_null() || len <= 0 {
            return Err(sys::cudaErrorInvalidValue);
        }
        let handle = valid_device(device)?;
        call!(cuDeviceGetPCIBusId(bus_id, len, handle))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetByPCIBusId(
    device: *mut c_int,
    bus_id: *const c_char,
) -> sys::cudaError_t {
    api(|| {
        if device.is_null() || bus_id.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let mut handle: sys::CUdevice = 0;
        call!(cuDeviceGetByPCIBusId(&mut handle, bus_id))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(device, handle) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceCanAccessPeer(
    can: *mut c_int,
    device: c_int,
    peer: c_int,
) -> sys::cudaError_t {
    api(|| {
        if can.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let (a, b) = (valid_device(device)?, valid_device(peer)?);
        let mut value = 0;
        call!(cuDeviceCanAccessPeer(&mut value, a, b))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(can, value) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceEnablePeerAccess(
    peer: c_int,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        let ctx = state::primary_context(peer)?;
        call!(cuCtxEnablePeerAccess(ctx, flags))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceDisablePeerAccess(peer: c_int) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        let ctx = state::primary_context(peer)?;
        call!(cuCtxDisablePeerAccess(ctx))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetP2PAttribute(
    value: *mut c_int,
    attr: sys::cudaDeviceP2PAttr,
    src: c_int,
    dst: c_int,
) -> sys::cudaError_t {
    api(|| {
        if value.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let (a, b) = (valid_device(src)?, valid_device(dst)?);
        let mut v = 0;
        call!(cuDeviceGetP2PAttribute(
            &mut v,
            attr as sys::CUdevice_P2PAttribute,
            a,
            b
        ))?;
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(value, v) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        call!(cuCtxGetStreamPriorityRange(least, greatest))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceGetCacheConfig(
    config: *mut sys::cudaFuncCache,
) -> sys::cudaError_t {
    // SAFETY: the caller's out-pointer.
    api(|| unsafe { put(config, sys::cudaFuncCachePreferNone) })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDeviceSetCacheConfig(config: sys::cudaFuncCache) -> sys::cudaError_t {
    api(|| match config {
        sys::cudaFuncCachePreferNone
        | sys::cudaFuncCachePreferShared
        | sys::cudaFuncCachePreferL1
        | sys::cudaFuncCachePreferEqual => Ok(()),
        _ => Err(sys::cudaErrorInvalidValue),
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaRuntimeGetVersion(version: *mut c_int) -> sys::cudaError_t {
    // SAFETY: the caller's out-pointer.
    state::record(unsafe { put(version, crate::runtime_version()) })
}

#[no_mangle]
pub unsafe extern "C" fn cudaDriverGetVersion(version: *mut c_int) -> sys::cudaError_t {
    state::record((|| {
        if version.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        // No driver: 0, as NVIDIA's runtime answers.
        let mut v = 0;
        if let Ok(driver) = crate::driver::opened() {
            if let Some(get_version) = driver.cuDriverGetVersion {
                // SAFETY: an out-pointer to a local.
                unsafe { get_version(&mut v) };
            }
        }
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(version, v) }
    })())
}

#[no_mangle]
pub extern "C" fn cudaProfilerStart() -> sys::cudaError_t {
    api(|| Ok(()))
}

#[no_mangle]
pub extern "C" fn cudaProfilerStop() -> sys::cudaError_t {
    api(|| Ok(()))
}

/// What `cudaDeviceProp` is made of, read from the driver once per call.
struct Facts {
    name: [c_char; 256],
    uuid: sys::CUuuid,
    total: usize,
    handle: sys::CUdevice,
}

impl Facts {
    fn read(device: c_int) -> RtResult<Facts> {
        let handle = valid_device(device)?;
        let mut facts = Facts {
            name: [0; 256],
            uuid: sys::CUuuid::default(),
            total: 0,
            handle,
        };
        call!(cuDeviceGetName(facts.name.as_mut_ptr(), 256, handle))?;
        call!(cuDeviceGetUuid(&mut facts.uuid, handle))?;
        call!(cuDeviceTotalMem(&mut facts.total, handle))?;
        Ok(facts)
    }

    fn int(&self, number: u32) -> RtResult<c_int> {
        attribute(self.handle, number)
    }

    fn size(&self, number: u32) -> RtResult<usize> {
        Ok(usize::try_from(self.int(number)?).unwrap_or(0))
    }

    fn unsigned(&self, number: u32) -> RtResult<c_uint> {
        Ok(c_uint::try_from(self.int(number)?).unwrap_or(0))
    }
}

/// The fields both layouts share, each from its attribute.
macro_rules! fill_common {
    ($p:ident, $f:ident) => {{
        $p.name = $f.name;
        $p.uuid.bytes = $f.uuid.bytes;
        $p.totalGlobalMem = $f.total;
        $p.sharedMemPerBlock = $f.size(8)?;
        $p.regsPerBlock = $f.int(12)?;
        $p.warpSize = $f.int(10)?;
        $p.memPitch = $f.size(11)?;
        $p.maxThreadsPerBlock = $f.int(1)?;
        $p.maxThreadsDim = [$f.int(2)?, $f.int(3)?, $f.int(4)?];
        $p.maxGridSize = [$f.int(5)?, $f.int(6)?, $f.int(7)?];
        $p.totalConstMem = $f.size(9)?;
        $p.major = $f.int(75)?;
        $p.minor = $f.int(76)?;
        $p.textureAlignment = $f.size(14)?;
        $p.texturePitchAlignment = $f.size(51)?;
        $p.multiProcessorCount = $f.int(16)?;
        $p.integrated = $f.int(18)?;
        $p.canMapHostMemory = $f.int(19)?;
        $p.maxTexture1D = $f.int(21)?;
        $p.maxTexture1DMipmap = $f.int(77)?;
        $p.maxTexture2D = [$f.int(22)?, $f.int(23)?];
        $p.maxTexture2DMipmap = [$f.int(73)?, $f.int(74)?];
        $p.maxTexture2DLinear = [$f.int(70)?, $f.int(71)?, $f.int(72)?];
        $p.maxTexture2DGather = [$f.int(45)?, $f.int(46)?];
        $p.maxTexture3D = [$f.int(24)?, $f.int(25)?, $f.int(26)?];
        $p.maxTexture3DAlt = [$f.int(47)?, $f.int(48)?, $f.int(49)?];
        $p.maxTextureCubemap = $f.int(52)?;
        $p.maxTexture1DLayered = [$f.int(42)?, $f.int(43)?];
        $p.maxTexture2DLayered = [$f.int(27)?, $f.int(28)?, $f.int(29)?];
        $p.maxTextureCubemapLayered = [$f.int(53)?, $f.int(54)?];
        $p.maxSurface1D = $f.int(55)?;
        $p.maxSurface2D = [$f.int(56)?, $f.int(57)?];
        $p.maxSurface3D = [$f.int(58)?, $f.int(59)?, $f.int(60)?];
        $p.maxSurface1DLayered = [$f.int(61)?, $f.int(62)?];
        $p.maxSurface2DLayered = [$f.int(63)?, $f.int(64)?, $f.int(65)?];
        $p.maxSurfaceCubemap = $f.int(66)?;
        $p.maxSurfaceCubemapLayered = [$f.int(67)?, $f.int(68)?];
        $p.surfaceAlignment = $f.size(30)?;
        $p.concurrentKernels = $f.int(31)?;
        $p.ECCEnabled = $f.int(32)?;
        $p.pciBusID = $f.int(33)?;
        $p.pciDeviceID = $f.int(34)?;
        $p.pciDomainID = $f.int(50)?;
        $p.tccDriver = $f.int(35)?;
        $p.asyncEngineCount = $f.int(40)?;
        $p.unifiedAddressing = $f.int(41)?;
        $p.memoryBusWidth = $f.int(37)?;
        $p.l2CacheSize = $f.int(38)?;
        $p.persistingL2CacheMaxSize = $f.int(108)?;
        $p.maxThreadsPerMultiProcessor = $f.int(39)?;
        $p.streamPrioritiesSupported = $f.int(78)?;
        $p.globalL1CacheSupported = $f.int(79)?;
        $p.localL1CacheSupported = $f.int(80)?;
        $p.sharedMemPerMultiprocessor = $f.size(81)?;
        $p.regsPerMultiprocessor = $f.int(82)?;
        $p.managedMemory = $f.int(83)?;
        $p.isMultiGpuBoard = $f.int(84)?;
        $p.multiGpuBoardGroupID = $f.int(85)?;
        $p.hostNativeAtomicSupported = $f.int(86)?;
        $p.pageableMemoryAccess = $f.int(88)?;
        $p.concurrentManagedAccess = $f.int(89)?;
        $p.computePreemptionSupported = $f.int(90)?;
        $p.canUseHostPointerForRegisteredMem = $f.int(91)?;
        $p.cooperativeLaunch = $f.int(95)?;
        $p.sharedMemPerBlockOptin = $f.size(97)?;
        $p.pageableMemoryAccessUsesHostPageTables = $f.int(100)?;
        $p.directManagedMemAccessFromHost = $f.int(101)?;
        $p.maxBlocksPerMultiProcessor = $f.int(106)?;
        $p.accessPolicyMaxWindowSize = $f.int(109)?;
        $p.reservedSharedMemPerBlock = $f.size(111)?;
        $p.hostRegisterSupported = $f.int(99)?;
        $p.sparseCudaArraySupported = $f.int(112)?;
        $p.hostRegisterReadOnlySupported = $f.int(113)?;
        $p.timelineSemaphoreInteropSupported = $f.int(114)?;
        $p.memoryPoolsSupported = $f.int(115)?;
        $p.gpuDirectRDMASupported = $f.int(116)?;
        $p.gpuDirectRDMAFlushWritesOptions = $f.unsigned(117)?;
        $p.gpuDirectRDMAWritesOrdering = $f.int(118)?;
        $p.memoryPoolSupportedHandleTypes = $f.unsigned(119)?;
        $p.deferredMappingCudaArraySupported = $f.int(121)?;
        $p.ipcEventSupported = $f.int(125)?;
        $p.clusterLaunch = $f.int(120)?;
        $p.unifiedFunctionPointers = $f.int(129)?;
    }};
}

fn properties13(device: c_int) -> RtResult<sys::cudaDeviceProp> {
    let f = Facts::read(device)?;
    let mut p = sys::cudaDeviceProp::default();
    fill_common!(p, f);
    p.deviceNumaConfig = f.int(130)?;
    p.deviceNumaId = f.int(131)?;
    p.mpsEnabled = f.int(133)?;
    p.hostNumaId = f.int(134)?;
    p.gpuPciDeviceID = f.unsigned(139)?;
    p.gpuPciSubsystemID = f.unsigned(140)?;
    p.hostNumaMultinodeIpcSupported = f.int(143)?;
    Ok(p)
}

fn properties12(device: c_int) -> RtResult<sys::v12::cudaDeviceProp> {
    let f = Facts::read(device)?;
    let mut p = sys::v12::cudaDeviceProp::default();
    fill_common!(p, f);
    p.clockRate = f.int(13)?;
    p.deviceOverlap = f.int(15)?;
    p.kernelExecTimeoutEnabled = f.int(17)?;
    p.computeMode = f.int(20)?;
    p.maxTexture1DLinear = f.int(69)?;
    p.memoryClockRate = f.int(36)?;
    p.singleToDoublePrecisionPerfRatio = f.int(87)?;
    p.cooperativeMultiDeviceLaunch = f.int(96)?;
    Ok(p)
}

/// `cudaGetDeviceProperties` in the layout of this runtime's major version.
///
/// # Safety
///
/// `prop` is NULL or points to a `cudaDeviceProp` of that layout.
unsafe fn get_properties(prop: *mut c_void, device: c_int) -> sys::cudaError_t {
    api(|| {
        if prop.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        if crate::major() == 12 {
            // SAFETY: a CUDA 12 program's cudaDeviceProp.
            unsafe { put(prop.cast(), properties12(device)?) }
        } else {
            // SAFETY: a CUDA 13 program's cudaDeviceProp.
            unsafe { put(prop.cast(), properties13(device)?) }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetDeviceProperties(
    prop: *mut c_void,
    device: c_int,
) -> sys::cudaError_t {
    // SAFETY: the caller's structure, of this runtime's layout.
    unsafe { get_properties(prop, device) }
}

/// CUDA 12's name for it (`cuda_runtime_api.h` 12.x maps `cudaGetDeviceProperties` here).
#[no_mangle]
pub unsafe extern "C" fn cudaGetDeviceProperties_v2(
    prop: *mut c_void,
    device: c_int,
) -> sys::cudaError_t {
    // SAFETY: as above.
    unsafe { get_properties(prop, device) }
}
