// SPDX-License-Identifier: GPL-2.0
//! The registration ABI compiled CUDA code calls when it loads (`crt/host_runtime.h`): every
//! object file's fatbinary, its kernels' host stubs and its `__device__`/`__managed__`
//! variables. Registration only keeps pointers (a library such as libtorch_cuda.so registers
//! about a gigabyte of fatbinaries at `import torch`); a fatbinary is loaded into a context as a
//! driver module the first time one of its variables or kernels is used there, as NVIDIA's
//! runtime does with lazy loading. Kernel launches answer `cudaErrorNotSupported`, not sticky,
//! and say once why.

use crate::{
    driver::call,
    put,
    state::{self, api},
    sys, RtResult,
};
use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    ffi::{c_char, c_int, c_uint, c_void},
    sync::{Mutex, MutexGuard, PoisonError},
};

/// `__fatBinC_Wrapper_t`, what `__cudaRegisterFatBinary` is given (facts.md §3).
#[repr(C)]
struct FatBinaryWrapper {
    magic: u32,
    version: u32,
    data: *const c_void,
    filename_or_fatbins: *const c_void,
}

const WRAPPER_MAGIC: u32 = 0x466243B1;

struct FatBinary {
    /// The fatbinary image (`data` of the wrapper), NULL if the wrapper was not one.
    image: usize,
    /// Its module in each device's context, once loaded there.
    modules: HashMap<c_int, usize>,
}

struct Kernel {
    fatbin: usize,
    name: usize,
}

struct Variable {
    fatbin: usize,
    name: usize,
    size: usize,
    /// For a `__managed__` variable: where the program's host code reads its address.
    managed_slot: Option<usize>,
}

#[derive(Default)]
struct Registry {
    /// By handle (the address `__cudaRegisterFatBinary` returned).
    fatbins: HashMap<usize, FatBinary>,
    /// By host stub address.
    kernels: HashMap<usize, Kernel>,
    /// By host shadow address.
    variables: HashMap<usize, Variable>,
    /// Kernels handed out by `cudaLibraryGetKernel` (driver `CUkernel`s).
    library_kernels: HashSet<usize>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    f(registry().get_or_insert_with(Registry::default))
}

/// Forgets the modules of `device`'s context (after `cudaDeviceReset` destroyed it).
pub fn forget_device(device: c_int) {
    with_registry(|r| {
        for fatbin in r.fatbins.values_mut() {
            fatbin.modules.remove(&device);
        }
    });
}

#[no_mangle]
pub unsafe extern "C" fn __cudaRegisterFatBinary(wrapper: *mut c_void) -> *mut *mut c_void {
    let mut image = 0;
    if !wrapper.is_null() {
        // SAFETY: compiled code passes its `__fatBinC_Wrapper_t`.
        let w = unsafe { wrapper.cast::<FatBinaryWrapper>().read_unaligned() };
        if w.magic == WRAPPER_MAGIC {
            image = w.data as usize;
        }
    }
    // The handle is an address only this registration owns; compiled code keeps it in a static.
    let handle = Box::into_raw(Box::new(std::ptr::null_mut::<c_void>()));
    with_registry(|r| {
        r.fatbins.insert(
            handle as usize,
            FatBinary {
                image,
                modules: HashMap::new(),
            },
        )
    });
    handle
}

#[no_mangle]
pub unsafe extern "C" fn __cudaRegisterFatBinaryEnd(_handle: *mut *mut c_void) {}

#[no_mangle]
pub unsafe extern "C" fn __cudaUnregisterFatBinary(handle: *mut *mut c_void) {
    let removed = with_registry(|r| {
        let fatbin = r.fatbins.remove(&(handle as usize))?;
        r.kernels.retain(|_, k| k.fatbin != handle as usize);
        r.variables.retain(|_, v| v.fatbin != handle as usize);
        Some(fatbin)
    });
    let Some(fatbin) = removed else { return };
    // Most fatbinaries were never loaded (a process that imported PyTorch and used no card):
    // nothing to unload, and no driver to open at exit.
    if fatbin.modules.is_empty() {
        // SAFETY: the handle __cudaRegisterFatBinary made from a Box, registered until now.
        drop(unsafe { Box::from_raw(handle) });
        return;
    }
    if let Ok(driver) = crate::driver::get() {
        if let Some(unload) = driver.cuModuleUnload {
            for module in fatbin.modules.values() {
                // SAFETY: a module this runtime loaded; a context already gone answers an
                // error, which is all there is to do at exit.
                unsafe { unload(*module as sys::CUmodule) };
            }
        }
    }
    // SAFETY: the handle __cudaRegisterFatBinary made from a Box, registered until now.
    drop(unsafe { Box::from_raw(handle) });
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn __cudaRegisterFunction(
    handle: *mut *mut c_void,
    host_function: *const c_char,
    _device_function: *mut c_char,
    device_name: *const c_char,
    _thread_limit: c_int,
    _tid: *mut c_void,
    _bid: *mut c_void,
    _block: *mut c_void,
    _grid: *mut c_void,
    _warp_size: *mut c_int,
) {
    with_registry(|r| {
        if r.fatbins.contains_key(&(handle as usize)) && !device_name.is_null() {
            r.kernels.insert(
                host_function as usize,
                Kernel {
                    fatbin: handle as usize,
                    name: device_name as usize,
                },
            );
        }
    });
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn __cudaRegisterVar(
    handle: *mut *mut c_void,
    host_variable: *mut c_char,
    _device_address: *mut c_char,
    device_name: *const c_char,
    _ext: c_int,
    size: usize,
    _constant: c_int,
    _global: c_int,
) {
    register_variable(handle, host_variable as usize, device_name, size, None);
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn __cudaRegisterManagedVar(
    handle: *mut *mut c_void,
    host_pointer_slot: *mut *mut c_void,
    _device_address: *mut c_char,
    device_name: *const c_char,
    _ext: c_int,
    size: usize,
    _constant: c_int,
    _global: c_int,
) {
    register_variable(
        handle,
        host_pointer_slot as usize,
        device_name,
        size,
        Some(host_pointer_slot as usize),
    );
}

fn register_variable(
    handle: *mut *mut c_void,
    host: usize,
    name: *const c_char,
    size: usize,
    managed_slot: Option<usize>,
) {
    with_registry(|r| {
        if r.fatbins.contains_key(&(handle as usize)) && !name.is_null() {
            r.variables.insert(
                host,
                Variable {
                    fatbin: handle as usize,
                    name: name as usize,
                    size,
                    managed_slot,
                },
            );
        }
    });
}

#[no_mangle]
pub extern "C" fn __cudaRegisterTexture() {}

#[no_mangle]
pub extern "C" fn __cudaRegisterSurface() {}

/// The module of `fatbin` in the current context, loaded on first use.
fn module(r: &mut Registry, fatbin: usize) -> RtResult<sys::CUmodule> {
    state::ensure_context()?;
    let device = state::current_device()?;
    let entry = r
        .fatbins
        .get_mut(&fatbin)
        .ok_or(sys::cudaErrorInvalidResourceHandle)?;
    if let Some(module) = entry.modules.get(&device) {
        return Ok(*module as sys::CUmodule);
    }
    if entry.image == 0 {
        return Err(sys::cudaErrorInvalidKernelImage);
    }
    let mut module: sys::CUmodule = std::ptr::null_mut();
    call!(cuModuleLoadData(&mut module, entry.image as *const c_void))?;
    entry.modules.insert(device, module as usize);
    Ok(module)
}

/// The device address and size of the variable whose host shadow is at `symbol`.
fn symbol_address(symbol: *const c_void) -> RtResult<(sys::CUdeviceptr, usize)> {
    with_registry(|r| {
        let (fatbin, name) = match r.variables.get(&(symbol as usize)) {
            Some(v) => (v.fatbin, v.name),
            None => return Err(sys::cudaErrorInvalidSymbol),
        };
        let module = module(r, fatbin)?;
        let (mut address, mut size) = (0, 0);
        call!(cuModuleGetGlobal(
            &mut address,
            &mut size,
            module,
            name as *const c_char
        ))
        .map_err(|_| sys::cudaErrorInvalidSymbol)?;
        Ok((address, size))
    })
}

/// The part `[offset, offset + count)` of a variable, refused if it leaves the variable.
fn symbol_range(symbol: *const c_void, count: usize, offset: usize) -> RtResult<*mut c_void> {
    let (address, size) = symbol_address(symbol)?;
    match offset.checked_add(count) {
        Some(end) if end <= size => Ok((address as usize + offset) as *mut c_void),
        _ => Err(sys::cudaErrorInvalidValue),
    }
}

fn symbol_copy(
    to_symbol: bool,
    symbol: *const c_void,
    other: *mut c_void,
    count: usize,
    offset: usize,
    kind: sys::cudaMemcpyKind,
    stream: Option<sys::cudaStream_t>,
) -> RtResult {
    let allowed = if to_symbol {
        [sys::cudaMemcpyHostToDevice, sys::cudaMemcpyDeviceToDevice]
    } else {
        [sys::cudaMemcpyDeviceToHost, sys::cudaMemcpyDeviceToDevice]
    };
    if kind != sys::cudaMemcpyDefault && !allowed.contains(&kind) {
        return Err(sys::cudaErrorInvalidMemcpyDirection);
    }
    let at = symbol_range(symbol, count, offset)?;
    let (dst, src) = if to_symbol {
        (at, other.cast_const())
    } else {
        (other, at.cast_const())
    };
    // The direction is checked above; the copy itself is any other copy's.
    crate::memory::copy(dst, src, count, sys::cudaMemcpyDefault, stream)
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyToSymbol(
    symbol: *const c_void,
    src: *const c_void,
    count: usize,
    offset: usize,
    kind: sys::cudaMemcpyKind,
) -> sys::cudaError_t {
    api(|| symbol_copy(true, symbol, src.cast_mut(), count, offset, kind, None))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyFromSymbol(
    dst: *mut c_void,
    symbol: *const c_void,
    count: usize,
    offset: usize,
    kind: sys::cudaMemcpyKind,
) -> sys::cudaError_t {
    api(|| symbol_copy(false, symbol, dst, count, offset, kind, None))
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyToSymbolAsync(
    symbol: *const c_void,
    src: *const c_void,
    count: usize,
    offset: usize,
    kind: sys::cudaMemcpyKind,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| {
        symbol_copy(
            true,
            symbol,
            src.cast_mut(),
            count,
            offset,
            kind,
            Some(stream),
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaMemcpyFromSymbolAsync(
    dst: *mut c_void,
    symbol: *const c_void,
    count: usize,
    offset: usize,
    kind: sys::cudaMemcpyKind,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| symbol_copy(false, symbol, dst, count, offset, kind, Some(stream)))
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetSymbolAddress(
    out: *mut *mut c_void,
    symbol: *const c_void,
) -> sys::cudaError_t {
    api(|| {
        let (address, _) = symbol_address(symbol)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(out, address as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetSymbolSize(
    out: *mut usize,
    symbol: *const c_void,
) -> sys::cudaError_t {
    api(|| {
        let (_, size) = symbol_address(symbol)?;
        // SAFETY: the caller's out-pointer.
        unsafe { put(out, size) }
    })
}

/// `__cudaInitModule`: called by compiled code before its host code first touches a
/// `__managed__` variable; gives each of the fatbinary's managed variables managed memory
/// holding the variable's initial value, and tells the host code where it is.
#[no_mangle]
pub unsafe extern "C" fn __cudaInitModule(handle: *mut *mut c_void) -> c_char {
    let result = with_registry(|r| -> RtResult {
        let pending: Vec<(usize, usize, usize)> = r
            .variables
            .values()
            .filter(|v| v.fatbin == handle as usize)
            .filter_map(|v| v.managed_slot.map(|slot| (slot, v.name, v.size)))
            // SAFETY: the slot is the program's `void *` for this variable.
            .filter(|(slot, _, _)| unsafe { (*slot as *const *mut c_void).read() }.is_null())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let module = module(r, handle as usize)?;
        for (slot, name, size) in pending {
            let (mut image, mut image_size) = (0, 0);
            call!(cuModuleGetGlobal(
                &mut image,
                &mut image_size,
                module,
                name as *const c_char
            ))?;
            let mut managed: sys::CUdeviceptr = 0;
            call!(cuMemAllocManaged(
                &mut managed,
                size.max(1),
                sys::CU_MEM_ATTACH_GLOBAL
            ))?;
            call!(cuMemcpy(managed, image, size.min(image_size)))?;
            // SAFETY: as above; the program reads the variable through this pointer.
            unsafe { (slot as *mut *mut c_void).write(managed as usize as *mut c_void) };
        }
        Ok(())
    });
    c_char::from(state::record(result) == sys::cudaSuccess)
}

/// The driver function of the kernel whose host stub (or `cudaKernel_t`) is `function`.
fn driver_function(function: *const c_void) -> RtResult<sys::CUfunction> {
    with_registry(|r| {
        if r.library_kernels.contains(&(function as usize)) {
            let mut f: sys::CUfunction = std::ptr::null_mut();
            state::ensure_context()?;
            call!(cuKernelGetFunction(&mut f, function as sys::CUkernel))?;
            return Ok(f);
        }
        let (fatbin, name) = match r.kernels.get(&(function as usize)) {
            Some(k) => (k.fatbin, k.name),
            None => return Err(sys::cudaErrorInvalidDeviceFunction),
        };
        let module = module(r, fatbin)?;
        let mut f: sys::CUfunction = std::ptr::null_mut();
        call!(cuModuleGetFunction(&mut f, module, name as *const c_char))
            .map_err(|_| sys::cudaErrorInvalidDeviceFunction)?;
        Ok(f)
    })
}

fn is_kernel(function: *const c_void) -> bool {
    with_registry(|r| {
        r.kernels.contains_key(&(function as usize))
            || r.library_kernels.contains(&(function as usize))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaFuncGetAttributes(
    out: *mut sys::cudaFuncAttributes,
    function: *const c_void,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let f = driver_function(function)?;
        let get = |attribute: sys::CUfunction_attribute| -> RtResult<c_int> {
            let mut v = 0;
            call!(cuFuncGetAttribute(&mut v, attribute, f))?;
            Ok(v)
        };
        let size = |attribute| get(attribute).map(|v| usize::try_from(v).unwrap_or(0));
        let attrs = sys::cudaFuncAttributes {
            sharedSizeBytes: size(sys::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
            constSizeBytes: size(sys::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES)?,
            localSizeBytes: size(sys::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
            maxThreadsPerBlock: get(sys::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            numRegs: get(sys::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
            ptxVersion: get(sys::CU_FUNC_ATTRIBUTE_PTX_VERSION)?,
            binaryVersion: get(sys::CU_FUNC_ATTRIBUTE_BINARY_VERSION)?,
            cacheModeCA: get(sys::CU_FUNC_ATTRIBUTE_CACHE_MODE_CA)?,
            maxDynamicSharedSizeBytes: get(sys::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)?,
            preferredShmemCarveout: get(sys::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT)?,
            ..Default::default()
        };
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, attrs) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaFuncSetAttribute(
    function: *const c_void,
    _attribute: sys::cudaFuncAttribute,
    _value: c_int,
) -> sys::cudaError_t {
    api(|| driver_function(function).map(drop))
}

#[no_mangle]
pub unsafe extern "C" fn cudaFuncSetCacheConfig(
    function: *const c_void,
    _config: sys::cudaFuncCache,
) -> sys::cudaError_t {
    api(|| driver_function(function).map(drop))
}

#[no_mangle]
pub unsafe extern "C" fn cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    blocks: *mut c_int,
    function: *const c_void,
    block_size: c_int,
    dynamic_shared: usize,
    flags: c_uint,
) -> sys::cudaError_t {
    api(|| {
        let f = driver_function(function)?;
        call!(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            blocks,
            f,
            block_size,
            dynamic_shared,
            flags
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaOccupancyMaxActiveBlocksPerMultiprocessor(
    blocks: *mut c_int,
    function: *const c_void,
    block_size: c_int,
    dynamic_shared: usize,
) -> sys::cudaError_t {
    // SAFETY: the caller's arguments, passed on.
    unsafe {
        cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            blocks,
            function,
            block_size,
            dynamic_shared,
            0,
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudaGetFuncBySymbol(
    out: *mut sys::cudaFunction_t,
    function: *const c_void,
) -> sys::cudaError_t {
    api(|| {
        let f = driver_function(function)?;
        // SAFETY: the caller's out-pointer; cudaFunction_t is CUfunction.
        unsafe { put(out, f as sys::cudaFunction_t) }
    })
}

/// The kernel handle of a host stub is the stub's address.
#[no_mangle]
pub unsafe extern "C" fn cudaGetKernel(
    out: *mut sys::cudaKernel_t,
    function: *const c_void,
) -> sys::cudaError_t {
    api(|| {
        if !is_kernel(function) {
            return Err(sys::cudaErrorInvalidDeviceFunction);
        }
        // SAFETY: the caller's out-pointer.
        unsafe { put(out, function as sys::cudaKernel_t) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn __cudaGetKernel(
    out: *mut sys::cudaKernel_t,
    function: *const c_void,
) -> sys::cudaError_t {
    // SAFETY: as above.
    unsafe { cudaGetKernel(out, function) }
}

thread_local! {
    /// `<<<...>>>`'s configurations, pushed by compiled code before it calls the stub.
    static CONFIGURATIONS: RefCell<Vec<(sys::dim3, sys::dim3, usize, usize)>> =
        const { RefCell::new(Vec::new()) };
}

#[no_mangle]
pub unsafe extern "C" fn __cudaPushCallConfiguration(
    grid: sys::dim3,
    block: sys::dim3,
    shared: usize,
    stream: sys::cudaStream_t,
) -> c_uint {
    CONFIGURATIONS.with(|c| c.borrow_mut().push((grid, block, shared, stream as usize)));
    0
}

#[no_mangle]
pub unsafe extern "C" fn __cudaPopCallConfiguration(
    grid: *mut sys::dim3,
    block: *mut sys::dim3,
    shared: *mut usize,
    stream: *mut c_void,
) -> sys::cudaError_t {
    state::record((|| {
        let (g, b, s, st) = CONFIGURATIONS
            .with(|c| c.borrow_mut().pop())
            .ok_or(sys::cudaErrorMissingConfiguration)?;
        // SAFETY: compiled code's locals for the configuration.
        unsafe {
            put(grid, g)?;
            put(block, b)?;
            put(shared, s)?;
            put(stream.cast::<usize>(), st)
        }
    })())
}

/// A launch: refused as NVIDIA's runtime refuses a bad one (unknown kernel, impossible
/// configuration), else `cudaErrorNotSupported`, with the message once per process.
fn launch(function: *const c_void, grid: sys::dim3, block: sys::dim3) -> RtResult {
    state::ensure_context()?;
    if !is_kernel(function) {
        return Err(sys::cudaErrorInvalidDeviceFunction);
    }
    let threads = u64::from(block.x) * u64::from(block.y) * u64::from(block.z);
    if threads == 0
        || threads > 1024
        || block.z > 64
        || grid.x == 0
        || grid.y == 0
        || grid.z == 0
        || grid.y > 65535
        || grid.z > 65535
    {
        return Err(sys::cudaErrorInvalidConfiguration);
    }
    crate::say_once(
        "launch",
        "emulated cards run no kernels: the launch returns cudaErrorNotSupported (memory, \
         copies, memsets, streams and events work as on the real card)",
    );
    Err(sys::cudaErrorNotSupported)
}

#[no_mangle]
pub unsafe extern "C" fn cudaLaunchKernel(
    function: *const c_void,
    grid: sys::dim3,
    block: sys::dim3,
    _args: *mut *mut c_void,
    _shared: usize,
    _stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| launch(function, grid, block))
}

#[no_mangle]
pub unsafe extern "C" fn cudaLaunchCooperativeKernel(
    function: *const c_void,
    grid: sys::dim3,
    block: sys::dim3,
    _args: *mut *mut c_void,
    _shared: usize,
    _stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| launch(function, grid, block))
}

#[no_mangle]
pub unsafe extern "C" fn cudaLaunchKernelExC(
    config: *const sys::cudaLaunchConfig_t,
    function: *const c_void,
    _args: *mut *mut c_void,
) -> sys::cudaError_t {
    api(|| {
        if config.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        // SAFETY: the caller's configuration, non-NULL.
        let config = unsafe { config.read_unaligned() };
        launch(function, config.gridDim, config.blockDim)
    })
}

#[no_mangle]
pub unsafe extern "C" fn __cudaLaunchKernel(
    kernel: sys::cudaKernel_t,
    grid: sys::dim3,
    block: sys::dim3,
    _args: *mut *mut c_void,
    _shared: usize,
    _stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    api(|| launch(kernel as *const c_void, grid, block))
}

#[no_mangle]
pub unsafe extern "C" fn __cudaLaunchKernel_ptsz(
    kernel: sys::cudaKernel_t,
    grid: sys::dim3,
    block: sys::dim3,
    args: *mut *mut c_void,
    shared: usize,
    stream: sys::cudaStream_t,
) -> sys::cudaError_t {
    __cudaLaunchKernel(kernel, grid, block, args, shared, stream)
}

// --- libraries (cudaLibrary*): the driver's, kernels remembered for launches ------------------

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cudaLibraryLoadData(
    library: *mut sys::cudaLibrary_t,
    code: *const c_void,
    jit_options: *mut sys::cudaJitOption,
    jit_values: *mut *mut c_void,
    jit_count: c_uint,
    options: *mut sys::cudaLibraryOption,
    values: *mut *mut c_void,
    count: c_uint,
) -> sys::cudaError_t {
    api(|| {
        call!(cuLibraryLoadData(
            library,
            code,
            jit_options.cast(),
            jit_values,
            jit_count,
            options.cast(),
            values,
            count
        ))
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cudaLibraryLoadFromFile(
    library: *mut sys::cudaLibrary_t,
    path: *const c_char,
    jit_options: *mut sys::cudaJitOption,
    jit_values: *mut *mut c_void,
    jit_count: c_uint,
    options: *mut sys::cudaLibraryOption,
    values: *mut *mut c_void,
    count: c_uint,
) -> sys::cudaError_t {
    api(|| {
        call!(cuLibraryLoadFromFile(
            library,
            path,
            jit_options.cast(),
            jit_values,
            jit_count,
            options.cast(),
            values,
            count
        ))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaLibraryUnload(library: sys::cudaLibrary_t) -> sys::cudaError_t {
    api(|| call!(cuLibraryUnload(library)))
}

#[no_mangle]
pub unsafe extern "C" fn cudaLibraryGetKernel(
    out: *mut sys::cudaKernel_t,
    library: sys::cudaLibrary_t,
    name: *const c_char,
) -> sys::cudaError_t {
    api(|| {
        if out.is_null() {
            return Err(sys::cudaErrorInvalidValue);
        }
        let mut kernel: sys::CUkernel = std::ptr::null_mut();
        call!(cuLibraryGetKernel(&mut kernel, library, name))?;
        with_registry(|r| r.library_kernels.insert(kernel as usize));
        // SAFETY: the caller's out-pointer, non-NULL.
        unsafe { put(out, kernel as sys::cudaKernel_t) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaLibraryGetKernelCount(
    count: *mut c_uint,
    library: sys::cudaLibrary_t,
) -> sys::cudaError_t {
    api(|| call!(cuLibraryGetKernelCount(count, library)))
}

#[no_mangle]
pub unsafe extern "C" fn cudaLibraryGetGlobal(
    out: *mut *mut c_void,
    size: *mut usize,
    library: sys::cudaLibrary_t,
    name: *const c_char,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        let mut address: sys::CUdeviceptr = 0;
        call!(cuLibraryGetGlobal(&mut address, size, library, name))?;
        if !out.is_null() {
            // SAFETY: the caller's out-pointer, non-NULL.
            unsafe { put(out, address as usize as *mut c_void)? };
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cudaLibraryGetManaged(
    out: *mut *mut c_void,
    size: *mut usize,
    library: sys::cudaLibrary_t,
    name: *const c_char,
) -> sys::cudaError_t {
    api(|| {
        state::ensure_context()?;
        let mut address: sys::CUdeviceptr = 0;
        call!(cuLibraryGetManaged(&mut address, size, library, name))?;
        if !out.is_null() {
            // SAFETY: the caller's out-pointer, non-NULL.
            unsafe { put(out, address as usize as *mut c_void)? };
        }
        Ok(())
    })
}
