// SPDX-License-Identifier: GPL-2.0
//! The driver's functions: `libcuda.so.1` opened once per process as NVIDIA's runtime opens it,
//! and every function this runtime calls resolved through `cuGetProcAddress_v2` at the CUDA
//! version of the ABI this runtime was written for (`cudaTypedefs.h`'s `PFN_<name>_v<version>`
//! types). A function the driver does not have answers `cudaErrorNotSupported` when called.

use crate::{state, sys, RtResult};
use std::{
    ffi::{c_char, c_int, c_void, CString},
    sync::OnceLock,
};

type GetProcAddress = unsafe extern "C" fn(
    *const c_char,
    *mut *mut c_void,
    c_int,
    u64,
    *mut sys::CUdriverProcAddressQueryResult,
) -> sys::CUresult;

/// Resolves `name` at `version`: `None` when the driver reports it absent.
///
/// # Safety
///
/// `T` is `Option` of the function-pointer type of `name` at `version`.
unsafe fn resolve<T: Copy>(gpa: GetProcAddress, name: &str, version: c_int) -> Option<T> {
    const { assert!(size_of::<T>() == size_of::<*mut c_void>()) };
    let name = CString::new(name).ok()?;
    let mut function: *mut c_void = std::ptr::null_mut();
    let mut found = sys::CU_GET_PROC_ADDRESS_SUCCESS;
    // SAFETY: cuGetProcAddress_v2's contract: a C string and two out-pointers.
    let rc = unsafe { gpa(name.as_ptr(), &mut function, version, 0, &mut found) };
    if rc != sys::CUDA_SUCCESS || function.is_null() {
        return None;
    }
    // SAFETY: a non-NULL function pointer of the type `T` wraps, per this function's contract;
    // `Option<fn>` has the layout of the pointer.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&function) })
}

macro_rules! driver_functions {
    ($($name:ident: $pfn:ident = $version:literal),* $(,)?) => {
        /// The driver functions this runtime calls, by their base names.
        #[allow(non_snake_case)]
        pub struct Driver {
            /// The library, kept open for the life of the process.
            _library: libloading::Library,
            pub get_proc_address: GetProcAddress,
            $(pub $name: sys::$pfn,)*
        }

        impl Driver {
            fn resolve_all(library: libloading::Library, gpa: GetProcAddress) -> Driver {
                Driver {
                    _library: library,
                    get_proc_address: gpa,
                    // SAFETY: each type is cudaTypedefs.h's for that name and version.
                    $($name: unsafe { resolve::<sys::$pfn>(gpa, stringify!($name), $version) }
                        .flatten(),)*
                }
            }
        }
    };
}

driver_functions! {
    cuInit: PFN_cuInit_v2000 = 2000,
    cuDriverGetVersion: PFN_cuDriverGetVersion_v2020 = 2020,
    cuGetErrorString: PFN_cuGetErrorString_v6000 = 6000,
    cuDeviceGetCount: PFN_cuDeviceGetCount_v2000 = 2000,
    cuDeviceGet: PFN_cuDeviceGet_v2000 = 2000,
    cuDeviceGetName: PFN_cuDeviceGetName_v2000 = 2000,
    cuDeviceGetUuid: PFN_cuDeviceGetUuid_v11040 = 11040,
    cuDeviceTotalMem: PFN_cuDeviceTotalMem_v3020 = 3020,
    cuDeviceGetAttribute: PFN_cuDeviceGetAttribute_v2000 = 2000,
    cuDeviceGetPCIBusId: PFN_cuDeviceGetPCIBusId_v4010 = 4010,
    cuDeviceGetByPCIBusId: PFN_cuDeviceGetByPCIBusId_v4010 = 4010,
    cuDeviceCanAccessPeer: PFN_cuDeviceCanAccessPeer_v4000 = 4000,
    cuDeviceGetP2PAttribute: PFN_cuDeviceGetP2PAttribute_v8000 = 8000,
    cuDevicePrimaryCtxRetain: PFN_cuDevicePrimaryCtxRetain_v7000 = 7000,
    cuDevicePrimaryCtxReset: PFN_cuDevicePrimaryCtxReset_v11000 = 11000,
    cuDevicePrimaryCtxSetFlags: PFN_cuDevicePrimaryCtxSetFlags_v11000 = 11000,
    cuDevicePrimaryCtxGetState: PFN_cuDevicePrimaryCtxGetState_v7000 = 7000,
    cuDeviceGetDefaultMemPool: PFN_cuDeviceGetDefaultMemPool_v11020 = 11020,
    cuDeviceGetMemPool: PFN_cuDeviceGetMemPool_v11020 = 11020,
    cuDeviceSetMemPool: PFN_cuDeviceSetMemPool_v11020 = 11020,
    cuCtxGetCurrent: PFN_cuCtxGetCurrent_v4000 = 4000,
    cuCtxSetCurrent: PFN_cuCtxSetCurrent_v4000 = 4000,
    cuCtxGetDevice: PFN_cuCtxGetDevice_v2000 = 2000,
    cuCtxSynchronize: PFN_cuCtxSynchronize_v2000 = 2000,
    cuCtxGetLimit: PFN_cuCtxGetLimit_v3010 = 3010,
    cuCtxSetLimit: PFN_cuCtxSetLimit_v3010 = 3010,
    cuCtxGetStreamPriorityRange: PFN_cuCtxGetStreamPriorityRange_v5050 = 5050,
    cuCtxEnablePeerAccess: PFN_cuCtxEnablePeerAccess_v4000 = 4000,
    cuCtxDisablePeerAccess: PFN_cuCtxDisablePeerAccess_v4000 = 4000,
    cuMemAlloc: PFN_cuMemAlloc_v3020 = 3020,
    cuMemFree: PFN_cuMemFree_v3020 = 3020,
    cuMemGetInfo: PFN_cuMemGetInfo_v3020 = 3020,
    cuMemAllocHost: PFN_cuMemAllocHost_v3020 = 3020,
    cuMemHostAlloc: PFN_cuMemHostAlloc_v2020 = 2020,
    cuMemFreeHost: PFN_cuMemFreeHost_v2000 = 2000,
    cuMemHostRegister: PFN_cuMemHostRegister_v6050 = 6050,
    cuMemHostUnregister: PFN_cuMemHostUnregister_v4000 = 4000,
    cuMemHostGetDevicePointer: PFN_cuMemHostGetDevicePointer_v3020 = 3020,
    cuMemHostGetFlags: PFN_cuMemHostGetFlags_v2030 = 2030,
    cuMemAllocManaged: PFN_cuMemAllocManaged_v6000 = 6000,
    cuMemAllocPitch: PFN_cuMemAllocPitch_v3020 = 3020,
    cuMemAllocAsync: PFN_cuMemAllocAsync_v11020 = 11020,
    cuMemFreeAsync: PFN_cuMemFreeAsync_v11020 = 11020,
    cuMemAllocFromPoolAsync: PFN_cuMemAllocFromPoolAsync_v11020 = 11020,
    cuMemPoolCreate: PFN_cuMemPoolCreate_v11020 = 11020,
    cuMemPoolDestroy: PFN_cuMemPoolDestroy_v11020 = 11020,
    cuMemPoolSetAttribute: PFN_cuMemPoolSetAttribute_v11020 = 11020,
    cuMemPoolGetAttribute: PFN_cuMemPoolGetAttribute_v11020 = 11020,
    cuMemPoolTrimTo: PFN_cuMemPoolTrimTo_v11020 = 11020,
    cuMemPoolSetAccess: PFN_cuMemPoolSetAccess_v11020 = 11020,
    cuMemGetAddressRange: PFN_cuMemGetAddressRange_v3020 = 3020,
    cuMemcpy: PFN_cuMemcpy_v4000 = 4000,
    cuMemcpyAsync: PFN_cuMemcpyAsync_v4000 = 4000,
    cuMemcpy2D: PFN_cuMemcpy2D_v3020 = 3020,
    cuMemcpy2DAsync: PFN_cuMemcpy2DAsync_v3020 = 3020,
    cuMemcpyPeer: PFN_cuMemcpyPeer_v4000 = 4000,
    cuMemcpyPeerAsync: PFN_cuMemcpyPeerAsync_v4000 = 4000,
    cuMemsetD8: PFN_cuMemsetD8_v3020 = 3020,
    cuMemsetD8Async: PFN_cuMemsetD8Async_v3020 = 3020,
    cuMemsetD2D8: PFN_cuMemsetD2D8_v3020 = 3020,
    cuMemsetD2D8Async: PFN_cuMemsetD2D8Async_v3020 = 3020,
    cuPointerGetAttributes: PFN_cuPointerGetAttributes_v7000 = 7000,
    cuMemPrefetchAsync: PFN_cuMemPrefetchAsync_v12020 = 12020,
    cuMemAdvise: PFN_cuMemAdvise_v12020 = 12020,
    cuStreamCreate: PFN_cuStreamCreate_v2000 = 2000,
    cuStreamCreateWithPriority: PFN_cuStreamCreateWithPriority_v5050 = 5050,
    cuStreamDestroy: PFN_cuStreamDestroy_v4000 = 4000,
    cuStreamSynchronize: PFN_cuStreamSynchronize_v2000 = 2000,
    cuStreamQuery: PFN_cuStreamQuery_v2000 = 2000,
    cuStreamWaitEvent: PFN_cuStreamWaitEvent_v3020 = 3020,
    cuStreamGetPriority: PFN_cuStreamGetPriority_v5050 = 5050,
    cuStreamGetFlags: PFN_cuStreamGetFlags_v5050 = 5050,
    cuStreamAddCallback: PFN_cuStreamAddCallback_v5000 = 5000,
    cuLaunchHostFunc: PFN_cuLaunchHostFunc_v10000 = 10000,
    cuEventCreate: PFN_cuEventCreate_v2000 = 2000,
    cuEventRecord: PFN_cuEventRecord_v2000 = 2000,
    cuEventRecordWithFlags: PFN_cuEventRecordWithFlags_v11010 = 11010,
    cuEventQuery: PFN_cuEventQuery_v2000 = 2000,
    cuEventSynchronize: PFN_cuEventSynchronize_v2000 = 2000,
    cuEventElapsedTime: PFN_cuEventElapsedTime_v12080 = 12080,
    cuEventDestroy: PFN_cuEventDestroy_v4000 = 4000,
    cuModuleLoadData: PFN_cuModuleLoadData_v2000 = 2000,
    cuModuleUnload: PFN_cuModuleUnload_v2000 = 2000,
    cuModuleGetGlobal: PFN_cuModuleGetGlobal_v3020 = 3020,
    cuModuleGetFunction: PFN_cuModuleGetFunction_v2000 = 2000,
    cuFuncGetAttribute: PFN_cuFuncGetAttribute_v2020 = 2020,
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags:
        PFN_cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags_v7000 = 7000,
    cuLibraryLoadData: PFN_cuLibraryLoadData_v12000 = 12000,
    cuLibraryLoadFromFile: PFN_cuLibraryLoadFromFile_v12000 = 12000,
    cuLibraryUnload: PFN_cuLibraryUnload_v12000 = 12000,
    cuLibraryGetKernel: PFN_cuLibraryGetKernel_v12000 = 12000,
    cuLibraryGetGlobal: PFN_cuLibraryGetGlobal_v12000 = 12000,
    cuLibraryGetManaged: PFN_cuLibraryGetManaged_v12000 = 12000,
    cuLibraryGetKernelCount: PFN_cuLibraryGetKernelCount_v12040 = 12040,
    cuKernelGetFunction: PFN_cuKernelGetFunction_v12000 = 12000,
    cuIpcGetMemHandle: PFN_cuIpcGetMemHandle_v4010 = 4010,
    cuIpcOpenMemHandle: PFN_cuIpcOpenMemHandle_v11000 = 11000,
    cuIpcCloseMemHandle: PFN_cuIpcCloseMemHandle_v4010 = 4010,
    cuIpcGetEventHandle: PFN_cuIpcGetEventHandle_v4010 = 4010,
    cuIpcOpenEventHandle: PFN_cuIpcOpenEventHandle_v4010 = 4010,
}

/// The driver library opened and its functions resolved.
fn open() -> Result<Driver, Refusal> {
    // SAFETY: loading the CUDA driver, whose initialisers set up only its own state.
    let library = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| {
        (
            sys::cudaErrorInsufficientDriver,
            format!("cannot load libcuda.so.1 ({e}): run the program with emuv-run"),
        )
    })?;
    let gpa = {
        // SAFETY: cuGetProcAddress_v2's prototype in cuda.h.
        let symbol = unsafe { library.get::<GetProcAddress>(b"cuGetProcAddress_v2\0") };
        match symbol {
            Ok(symbol) => *symbol,
            Err(e) => {
                return Err((
                    sys::cudaErrorInsufficientDriver,
                    format!("libcuda.so.1 has no cuGetProcAddress_v2 ({e})"),
                ))
            }
        }
    };
    Ok(Driver::resolve_all(library, gpa))
}

/// The error a driver that cannot be used gives every call, and why (said once).
type Refusal = (sys::cudaError_t, String);

/// The driver, loaded but not initialised: enough for versions and error strings.
pub fn opened() -> RtResult<&'static Driver> {
    static DRIVER: OnceLock<Result<Driver, Refusal>> = OnceLock::new();
    let driver = DRIVER.get_or_init(|| {
        let driver = open()?;
        let mut version = 0;
        if let Some(get_version) = driver.cuDriverGetVersion {
            // SAFETY: an out-pointer to a local.
            unsafe { get_version(&mut version) };
        }
        let needed = if crate::major() == 12 { 12000 } else { 13000 };
        if version < needed {
            return Err((
                sys::cudaErrorInsufficientDriver,
                format!(
                    "the CUDA driver reports version {version}; this runtime needs {needed} or later"
                ),
            ));
        }
        Ok(driver)
    });
    match driver {
        Ok(driver) => Ok(driver),
        Err((code, why)) => {
            crate::say_once("driver", why);
            Err(*code)
        }
    }
}

/// The driver, initialised (`cuInit`) on first use; the error every runtime call returns when it
/// cannot be.
pub fn get() -> RtResult<&'static Driver> {
    static INIT: OnceLock<sys::CUresult> = OnceLock::new();
    let driver = opened()?;
    let rc = *INIT.get_or_init(|| match driver.cuInit {
        // SAFETY: cuInit(0), flags 0 as the API requires.
        Some(init) => unsafe { init(0) },
        None => sys::CUDA_ERROR_NOT_SUPPORTED,
    });
    state::check(rc)?;
    Ok(driver)
}

/// Calls the driver function `$name` with `$args`: its CUresult as an `RtResult`;
/// `cudaErrorNotSupported` when the driver lacks it.
macro_rules! call {
    ($name:ident($($arg:expr),* $(,)?)) => {{
        match $crate::driver::get() {
            Ok(driver) => match driver.$name {
                // SAFETY: the driver's function with the arguments cuda.h gives it, checked by the
                // caller of this macro.
                Some(function) => $crate::state::check(unsafe { function($($arg),*) }),
                None => Err($crate::sys::cudaErrorNotSupported),
            },
            Err(code) => Err(code),
        }
    }};
}
pub(crate) use call;

/// `cudaGetDriverEntryPointByVersion`: the driver's own `cuGetProcAddress_v2`, so a program gets
/// the very functions the driver hands out (PyTorch fetches its VMM and context calls this way).
#[no_mangle]
pub unsafe extern "C" fn cudaGetDriverEntryPointByVersion(
    symbol: *const c_char,
    function: *mut *mut c_void,
    cuda_version: std::ffi::c_uint,
    flags: u64,
    status: *mut sys::cudaDriverEntryPointQueryResult,
) -> sys::cudaError_t {
    state::api(|| {
        if symbol.is_null() || function.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let driver = get()?;
        let version = c_int::try_from(cuda_version).map_err(|_| sys::cudaErrorInvalidValue)?;
        let mut found = sys::CU_GET_PROC_ADDRESS_SUCCESS;
        // SAFETY: the caller's C string and out-pointer, checked non-NULL; cudaEnable* flags
        // have the values of CU_GET_PROC_ADDRESS_*.
        let rc = unsafe { (driver.get_proc_address)(symbol, function, version, flags, &mut found) };
        state::check(rc)?;
        if !status.is_null() {
            // SAFETY: the caller's out-pointer; cudaDriverEntryPoint* values are the driver's.
            unsafe { status.write_unaligned(found as sys::cudaDriverEntryPointQueryResult) };
        }
        Ok(())
    })
}

/// `cudaGetDriverEntryPoint`: the same at this runtime's own CUDA version.
#[no_mangle]
pub unsafe extern "C" fn cudaGetDriverEntryPoint(
    symbol: *const c_char,
    function: *mut *mut c_void,
    flags: u64,
    status: *mut sys::cudaDriverEntryPointQueryResult,
) -> sys::cudaError_t {
    let version = crate::runtime_version() as std::ffi::c_uint;
    // SAFETY: the caller's arguments, passed on.
    unsafe { cudaGetDriverEntryPointByVersion(symbol, function, version, flags, status) }
}
