// SPDX-License-Identifier: GPL-2.0
//! Modules and libraries: images are parsed and kept, never run. A module knows its kernels
//! (`cuModuleGetFunction`) and its variables, which get real emulated memory at load, as on
//! the card, so `cuModuleGetGlobal` and copies to and from them work. Launches answer
//! `CUDA_ERROR_NOT_SUPPORTED` and say once why.

use crate::{
    c_str, context, driver,
    handles::Registry,
    image::{self, Image, ParseOptions},
    memory, no_kernels, put, status,
    stream::both_flavours,
    sys, CuResult,
};
use std::{
    ffi::{c_char, c_int, c_uint, c_void, CString},
    sync::{Arc, Mutex},
};

pub struct Module {
    pub handle: usize,
    pub ctx: usize,
    pub image: Image,
    /// Each variable: name, device address, size.
    variables: Vec<(String, usize, usize)>,
}

pub struct Function {
    pub handle: usize,
    pub module: usize,
    pub name: CString,
}

/// A library (`cuLibraryLoadData`): context-independent; loaded as a module into each context
/// that uses it.
pub struct Library {
    pub handle: usize,
    image_bytes: Vec<u8>,
    modules: Mutex<Vec<(usize, usize)>>,
}

pub struct Kernel {
    pub handle: usize,
    pub library: usize,
    pub name: CString,
}

static MODULES: Registry<Module> = Registry::new();
static FUNCTIONS: Registry<Function> = Registry::new();
static LIBRARIES: Registry<Library> = Registry::new();
static KERNELS: Registry<Kernel> = Registry::new();

fn image_error(e: image::ImageError) -> sys::CUresult {
    e.cuda_code()
}

/// Loads an image into the current context.
fn load(parse: impl FnOnce(ParseOptions) -> Result<Image, image::ImageError>) -> CuResult<usize> {
    let ctx = context::current()?;
    let card = driver::card(ctx.device)?;
    let (major, minor) = card.facts.compute_capability;
    let image = parse(ParseOptions {
        target_sm: Some(major * 10 + minor),
    })
    .map_err(image_error)?;
    let mut variables = Vec::new();
    for (name, size) in &image.globals {
        let size = usize::try_from(*size).map_err(|_| sys::CUDA_ERROR_OUT_OF_MEMORY)?;
        let initial = image
            .initial
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, bytes)| bytes.as_slice());
        let made = memory::alloc_variable(&ctx, size).and_then(|addr| {
            match initial.map(|bytes| memory::fill_variable(addr, bytes)) {
                Some(Err(code)) => {
                    memory::free_variable(addr);
                    Err(code)
                }
                _ => Ok(addr),
            }
        });
        match made {
            Ok(addr) => variables.push((name.clone(), addr, size)),
            Err(code) => {
                for (_, addr, _) in variables {
                    memory::free_variable(addr);
                }
                return Err(code);
            }
        }
    }
    let (handle, _) = MODULES.insert(|handle| Module {
        handle,
        ctx: ctx.handle,
        image,
        variables,
    });
    Ok(handle)
}

fn unload(handle: usize) -> CuResult {
    let module = MODULES
        .remove(handle)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let _ = FUNCTIONS.drain(|f| f.module == handle);
    for (_, addr, _) in &module.variables {
        memory::free_variable(*addr);
    }
    Ok(())
}

fn module(handle: sys::CUmodule) -> CuResult<Arc<Module>> {
    let m = MODULES
        .get(handle as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    context::get(m.ctx)?;
    Ok(m)
}

/// Reads a NUL-terminated C string argument.
///
/// # Safety
///
/// `name` is NULL or a C string.
unsafe fn name_arg<'a>(name: *const c_char) -> CuResult<&'a str> {
    // SAFETY: per this function's contract.
    let name = unsafe { c_str(name) }.ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
    name.to_str().map_err(|_| sys::CUDA_ERROR_NOT_FOUND)
}

fn read_file(path: *const c_char) -> CuResult<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: the API's file name: NULL or a C string.
    let path = unsafe { c_str(path) }.ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    std::fs::read(path).map_err(|_| sys::CUDA_ERROR_FILE_NOT_FOUND)
}

/// Writes a new handle through `out`.
///
/// # Safety
///
/// `out` NULL or writable.
unsafe fn hand_out<T>(out: *mut *mut T, make: impl FnOnce() -> CuResult<usize>) -> sys::CUresult {
    if out.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: a non-NULL out-pointer from the caller.
    status(make().and_then(|h| unsafe { put(out, h as *mut T) }))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(
    out: *mut sys::CUmodule,
    data: *const c_void,
) -> sys::CUresult {
    // SAFETY: `data` is an image, as the API requires.
    unsafe { hand_out(out, || load(|o| image::parse_with(data.cast(), None, o))) }
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    out: *mut sys::CUmodule,
    data: *const c_void,
    _count: c_uint,
    _options: *mut sys::CUjit_option,
    _values: *mut *mut c_void,
) -> sys::CUresult {
    // JIT options tune a compilation that never happens here.
    // SAFETY: `data` is an image, as the API requires.
    unsafe { hand_out(out, || load(|o| image::parse_with(data.cast(), None, o))) }
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadFatBinary(
    out: *mut sys::CUmodule,
    data: *const c_void,
) -> sys::CUresult {
    // SAFETY: `data` is a fatbin, as the API requires.
    unsafe { hand_out(out, || load(|o| image::parse_with(data.cast(), None, o))) }
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(
    out: *mut sys::CUmodule,
    path: *const c_char,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    unsafe {
        hand_out(out, || {
            context::current()?;
            let bytes = read_file(path)?;
            load(|o| image::parse_bytes_with(&bytes, o))
        })
    }
}

#[no_mangle]
pub extern "C" fn cuModuleUnload(module: sys::CUmodule) -> sys::CUresult {
    status(driver::cards().and_then(|_| unload(module as usize)))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    out: *mut sys::CUfunction,
    module_handle: sys::CUmodule,
    name: *const c_char,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    unsafe {
        hand_out(out, || {
            let m = module(module_handle)?;
            // SAFETY: the caller's C string.
            let name = name_arg(name)?;
            if !m.image.has_kernel(name) {
                return Err(sys::CUDA_ERROR_NOT_FOUND);
            }
            if let Some(f) = FUNCTIONS
                .filter(|f| f.module == m.handle && f.name.to_bytes() == name.as_bytes())
                .first()
            {
                return Ok(f.handle);
            }
            let name = CString::new(name).map_err(|_| sys::CUDA_ERROR_NOT_FOUND)?;
            Ok(FUNCTIONS
                .insert(|handle| Function {
                    handle,
                    module: m.handle,
                    name,
                })
                .0)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut sys::CUdeviceptr,
    bytes: *mut usize,
    module_handle: sys::CUmodule,
    name: *const c_char,
) -> sys::CUresult {
    let result = (|| {
        let m = module(module_handle)?;
        // SAFETY: the caller's C string.
        let name = unsafe { name_arg(name) }?;
        let (_, addr, size) = m
            .variables
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or(sys::CUDA_ERROR_NOT_FOUND)?;
        // Either out-pointer may be NULL.
        if !dptr.is_null() {
            // SAFETY: a non-NULL out-pointer.
            unsafe { put(dptr, *addr as sys::CUdeviceptr)? };
        }
        if !bytes.is_null() {
            // SAFETY: as above.
            unsafe { put(bytes, *size)? };
        }
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunctionCount(
    count: *mut c_uint,
    module_handle: sys::CUmodule,
) -> sys::CUresult {
    let result = module(module_handle).and_then(|m| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(count, m.image.kernels.len() as c_uint) }
    });
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetLoadingMode(
    mode: *mut sys::CUmoduleLoadingMode,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    status(driver::cards().and_then(|_| unsafe { put(mode, sys::CU_MODULE_LAZY_LOADING) }))
}

/// The function a `CUfunction` names; a `CUkernel` may stand for one (as CUDA 12 allows): its
/// function in the current context.
fn function(handle: sys::CUfunction) -> CuResult<Arc<Function>> {
    let f = match FUNCTIONS.get(handle as usize) {
        Some(f) => f,
        None => kernel_function(handle as usize)?,
    };
    MODULES
        .get(f.module)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    Ok(f)
}

/// What a kernel that uses no registers, shared, constant or local memory reports, on a card
/// of compute capability `sm` (major * 10 + minor).
fn attribute_value(attribute: sys::CUfunction_attribute, sm: c_int) -> CuResult<c_int> {
    Ok(match attribute {
        sys::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        sys::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
        | sys::CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES
        | sys::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
        | sys::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        | sys::CU_FUNC_ATTRIBUTE_CACHE_MODE_CA
        | sys::CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET
        | sys::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH
        | sys::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT
        | sys::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH
        | sys::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
        | sys::CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE
        | sys::CU_FUNC_ATTRIBUTE_NUM_REGS => 0,
        sys::CU_FUNC_ATTRIBUTE_PTX_VERSION | sys::CU_FUNC_ATTRIBUTE_BINARY_VERSION => sm,
        sys::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => -1,
        _ => return Err(sys::CUDA_ERROR_INVALID_VALUE),
    })
}

fn sm_of(device: sys::CUdevice) -> CuResult<c_int> {
    let (major, minor) = driver::card(device)?.facts.compute_capability;
    Ok((major * 10 + minor) as c_int)
}

/// Only the launch-shaping attributes can be set; a launch never happens.
fn settable(attribute: sys::CUfunction_attribute) -> CuResult {
    let ok = matches!(
        attribute,
        sys::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            | sys::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
            | sys::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH
            | sys::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT
            | sys::CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH
            | sys::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
            | sys::CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE
    );
    if ok {
        Ok(())
    } else {
        Err(sys::CUDA_ERROR_INVALID_VALUE)
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    out: *mut c_int,
    attribute: sys::CUfunction_attribute,
    func: sys::CUfunction,
) -> sys::CUresult {
    let result = (|| {
        let f = function(func)?;
        let m = MODULES
            .get(f.module)
            .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
        let value = attribute_value(attribute, sm_of(context::get(m.ctx)?.device)?)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, value) }
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(
    func: sys::CUfunction,
    attribute: sys::CUfunction_attribute,
    _value: c_int,
) -> sys::CUresult {
    status(function(func).and_then(|_| settable(attribute)))
}

#[no_mangle]
pub extern "C" fn cuFuncSetCacheConfig(
    func: sys::CUfunction,
    _config: sys::CUfunc_cache,
) -> sys::CUresult {
    status(function(func).map(drop))
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetName(
    out: *mut *const c_char,
    func: sys::CUfunction,
) -> sys::CUresult {
    // The name lives as long as the function handle.
    // SAFETY: an out-pointer from the caller.
    status(function(func).and_then(|f| unsafe { put(out, f.name.as_ptr()) }))
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetModule(
    out: *mut sys::CUmodule,
    func: sys::CUfunction,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    status(function(func).and_then(|f| unsafe { put(out, f.module as sys::CUmodule) }))
}

/// Every launch: the function must be valid; then the once-said refusal.
fn launch(func: sys::CUfunction) -> CuResult {
    context::current()?;
    function(func)?;
    no_kernels();
    Err(sys::CUDA_ERROR_NOT_SUPPORTED)
}

#[allow(clippy::too_many_arguments)]
unsafe fn launch_kernel(
    func: sys::CUfunction,
    _gx: c_uint,
    _gy: c_uint,
    _gz: c_uint,
    _bx: c_uint,
    _by: c_uint,
    _bz: c_uint,
    _shared: c_uint,
    stream: sys::CUstream,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
    pt: bool,
) -> CuResult {
    crate::stream::resolve(stream, pt)?;
    launch(func)
}
both_flavours!(cuLaunchKernel, cuLaunchKernel_ptsz, launch_kernel,
    (func: sys::CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
     shared: c_uint, stream: sys::CUstream, params: *mut *mut c_void, extra: *mut *mut c_void));

#[allow(clippy::too_many_arguments)]
unsafe fn launch_cooperative(
    func: sys::CUfunction,
    _gx: c_uint,
    _gy: c_uint,
    _gz: c_uint,
    _bx: c_uint,
    _by: c_uint,
    _bz: c_uint,
    _shared: c_uint,
    stream: sys::CUstream,
    _params: *mut *mut c_void,
    pt: bool,
) -> CuResult {
    crate::stream::resolve(stream, pt)?;
    launch(func)
}
both_flavours!(cuLaunchCooperativeKernel, cuLaunchCooperativeKernel_ptsz, launch_cooperative,
    (func: sys::CUfunction, gx: c_uint, gy: c_uint, gz: c_uint, bx: c_uint, by: c_uint, bz: c_uint,
     shared: c_uint, stream: sys::CUstream, params: *mut *mut c_void));

unsafe fn launch_kernel_ex(
    config: *const sys::CUlaunchConfig,
    func: sys::CUfunction,
    _params: *mut *mut c_void,
    _extra: *mut *mut c_void,
    pt: bool,
) -> CuResult {
    // SAFETY: the caller's configuration, if not NULL.
    let config = unsafe { config.as_ref() }.ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
    crate::stream::resolve(config.hStream, pt)?;
    launch(func)
}
both_flavours!(cuLaunchKernelEx, cuLaunchKernelEx_ptsz, launch_kernel_ex,
    (config: *const sys::CUlaunchConfig, func: sys::CUfunction, params: *mut *mut c_void, extra: *mut *mut c_void));

// --- libraries --------------------------------------------------------------------------------

/// The bytes of an image given by pointer: parsed once to learn it is valid and how long.
///
/// # Safety
///
/// `data` is an image, as the API requires.
unsafe fn library_bytes(data: *const c_void) -> CuResult<Vec<u8>> {
    // SAFETY: per this function's contract.
    let image = unsafe { image::parse(data.cast(), None) }.map_err(image_error)?;
    if image.len == 0 {
        return Err(sys::CUDA_ERROR_INVALID_IMAGE);
    }
    // SAFETY: the parser read `len` bytes at `data`.
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), image.len) }.to_vec())
}

fn new_library(bytes: Vec<u8>) -> CuResult<usize> {
    driver::cards()?;
    image::parse_bytes(&bytes).map_err(image_error)?;
    Ok(LIBRARIES
        .insert(|handle| Library {
            handle,
            image_bytes: bytes,
            modules: Mutex::new(Vec::new()),
        })
        .0)
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryLoadData(
    out: *mut sys::CUlibrary,
    code: *const c_void,
    _jit_options: *mut sys::CUjit_option,
    _jit_values: *mut *mut c_void,
    _jit_count: c_uint,
    _options: *mut sys::CUlibraryOption,
    _values: *mut *mut c_void,
    _count: c_uint,
) -> sys::CUresult {
    // SAFETY: `code` is an image, as the API requires.
    unsafe { hand_out(out, || new_library(library_bytes(code)?)) }
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryLoadFromFile(
    out: *mut sys::CUlibrary,
    path: *const c_char,
    _jit_options: *mut sys::CUjit_option,
    _jit_values: *mut *mut c_void,
    _jit_count: c_uint,
    _options: *mut sys::CUlibraryOption,
    _values: *mut *mut c_void,
    _count: c_uint,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    unsafe { hand_out(out, || new_library(read_file(path)?)) }
}

#[no_mangle]
pub extern "C" fn cuLibraryUnload(library: sys::CUlibrary) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let lib = LIBRARIES
            .remove(library as usize)
            .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
        let _ = KERNELS.drain(|k| k.library == lib.handle);
        let modules = std::mem::take(&mut *lib.modules.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, m) in modules {
            let _ = unload(m);
        }
        Ok(())
    })();
    status(result)
}

/// The library's module in the current context, loaded on first use there.
fn library_module(library: usize) -> CuResult<Arc<Module>> {
    let lib = LIBRARIES
        .get(library)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let ctx = context::current()?;
    let mut modules = lib.modules.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = modules
        .iter()
        .find(|(c, _)| *c == ctx.handle)
        .and_then(|(_, m)| MODULES.get(*m))
    {
        return Ok(m);
    }
    let handle = load(|o| image::parse_bytes_with(&lib.image_bytes, o))?;
    modules.retain(|(c, _)| *c != ctx.handle);
    modules.push((ctx.handle, handle));
    MODULES.get(handle).ok_or(sys::CUDA_ERROR_INVALID_HANDLE)
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetModule(
    out: *mut sys::CUmodule,
    library: sys::CUlibrary,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    unsafe { hand_out(out, || library_module(library as usize).map(|m| m.handle)) }
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetKernel(
    out: *mut sys::CUkernel,
    library: sys::CUlibrary,
    name: *const c_char,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    unsafe {
        hand_out(out, || {
            driver::cards()?;
            let lib = LIBRARIES
                .get(library as usize)
                .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
            // SAFETY: the caller's C string.
            let name = name_arg(name)?;
            let image = image::parse_bytes(&lib.image_bytes).map_err(image_error)?;
            if !image.has_kernel(name) {
                return Err(sys::CUDA_ERROR_NOT_FOUND);
            }
            let name = CString::new(name).map_err(|_| sys::CUDA_ERROR_NOT_FOUND)?;
            Ok(KERNELS
                .insert(|handle| Kernel {
                    handle,
                    library: lib.handle,
                    name,
                })
                .0)
        })
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetFunction(
    out: *mut sys::CUfunction,
    kernel: sys::CUkernel,
) -> sys::CUresult {
    let k = match KERNELS.get(kernel as usize) {
        Some(k) => k,
        None => return sys::CUDA_ERROR_INVALID_HANDLE,
    };
    let m = match library_module(k.library) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // SAFETY: the caller's out-pointer; the name is a C string this library made.
    unsafe { cuModuleGetFunction(out, m.handle as sys::CUmodule, k.name.as_ptr()) }
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetGlobal(
    dptr: *mut sys::CUdeviceptr,
    bytes: *mut usize,
    library: sys::CUlibrary,
    name: *const c_char,
) -> sys::CUresult {
    match library_module(library as usize) {
        // SAFETY: the caller's arguments.
        Ok(m) => unsafe { cuModuleGetGlobal_v2(dptr, bytes, m.handle as sys::CUmodule, name) },
        Err(code) => code,
    }
}

fn kernel(handle: sys::CUkernel) -> CuResult<Arc<Kernel>> {
    driver::cards()?;
    KERNELS
        .get(handle as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)
}

/// A kernel's function in the current context (its library loaded there on first use).
fn kernel_function(handle: usize) -> CuResult<Arc<Function>> {
    let k = KERNELS.get(handle).ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let m = library_module(k.library)?;
    if let Some(f) = FUNCTIONS
        .filter(|f| f.module == m.handle && f.name == k.name)
        .first()
    {
        return Ok(f.clone());
    }
    Ok(FUNCTIONS
        .insert(|handle| Function {
            handle,
            module: m.handle,
            name: k.name.clone(),
        })
        .1)
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetAttribute(
    out: *mut c_int,
    attribute: sys::CUfunction_attribute,
    kernel_handle: sys::CUkernel,
    device: sys::CUdevice,
) -> sys::CUresult {
    let result = (|| {
        kernel(kernel_handle)?;
        let value = attribute_value(attribute, sm_of(device)?)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, value) }
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuKernelSetAttribute(
    attribute: sys::CUfunction_attribute,
    _value: c_int,
    kernel_handle: sys::CUkernel,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(
        kernel(kernel_handle)
            .and_then(|_| driver::card(device))
            .and_then(|_| settable(attribute)),
    )
}

#[no_mangle]
pub extern "C" fn cuKernelSetCacheConfig(
    kernel_handle: sys::CUkernel,
    _config: sys::CUfunc_cache,
    device: sys::CUdevice,
) -> sys::CUresult {
    status(
        kernel(kernel_handle)
            .and_then(|_| driver::card(device))
            .map(drop),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetName(
    out: *mut *const c_char,
    kernel_handle: sys::CUkernel,
) -> sys::CUresult {
    // The name lives as long as the kernel handle.
    // SAFETY: an out-pointer from the caller.
    status(kernel(kernel_handle).and_then(|k| unsafe { put(out, k.name.as_ptr()) }))
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetLibrary(
    out: *mut sys::CUlibrary,
    kernel_handle: sys::CUkernel,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    status(kernel(kernel_handle).and_then(|k| unsafe { put(out, k.library as sys::CUlibrary) }))
}

fn library_kernels(library: sys::CUlibrary) -> CuResult<(Arc<Library>, Vec<String>)> {
    driver::cards()?;
    let lib = LIBRARIES
        .get(library as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let image = image::parse_bytes(&lib.image_bytes).map_err(image_error)?;
    Ok((lib, image.kernels))
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetKernelCount(
    count: *mut c_uint,
    library: sys::CUlibrary,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    status(library_kernels(library).and_then(|(_, k)| unsafe { put(count, k.len() as c_uint) }))
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryEnumerateKernels(
    out: *mut sys::CUkernel,
    count: c_uint,
    library: sys::CUlibrary,
) -> sys::CUresult {
    let result = (|| {
        let (lib, names) = library_kernels(library)?;
        if out.is_null() || (count as usize) < names.len() {
            return Err(sys::CUDA_ERROR_INVALID_VALUE);
        }
        for (i, name) in names.into_iter().enumerate() {
            let name = CString::new(name).map_err(|_| sys::CUDA_ERROR_INVALID_VALUE)?;
            let existing = KERNELS
                .filter(|k| k.library == lib.handle && k.name == name)
                .first()
                .map(|k| k.handle);
            let handle = match existing {
                Some(h) => h,
                None => {
                    KERNELS
                        .insert(|handle| Kernel {
                            handle,
                            library: lib.handle,
                            name,
                        })
                        .0
                }
            };
            // SAFETY: the caller's array of `count` entries, `i` below it.
            unsafe { out.add(i).write_unaligned(handle as sys::CUkernel) };
        }
        Ok(())
    })();
    status(result)
}

// --- occupancy ----------------------------------------------------------------------------------

/// What the card of `func`'s context allows per SM: (threads, blocks, shared memory, SMs).
fn sm_limits(func: sys::CUfunction) -> CuResult<(i32, i32, i64, i32)> {
    let f = function(func)?;
    let m = MODULES
        .get(f.module)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let card = driver::card(context::get(m.ctx)?.device)?;
    let attr =
        |a: sys::CUdevice_attribute| crate::attributes::value(&card.facts, a as i32).unwrap_or(0);
    Ok((
        attr(sys::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR),
        attr(sys::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR),
        i64::from(attr(
            sys::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        )),
        attr(sys::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
    ))
}

/// Blocks of `block_size` threads and `shared` bytes of dynamic shared memory that fit on one
/// SM, for a kernel that uses no registers or static shared memory (what the images here hold).
fn blocks_per_sm(limits: (i32, i32, i64, i32), block_size: i32, shared: usize) -> CuResult<i32> {
    let (threads, blocks, smem, _) = limits;
    if block_size <= 0 || block_size > 1024 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    let warps = (block_size + 31) / 32;
    let by_threads = (threads / 32) / warps;
    // Each block also holds the 1 KiB the system reserves.
    let per_block = i64::try_from(shared)
        .unwrap_or(i64::MAX)
        .saturating_add(1024);
    let by_shared = i32::try_from(smem / per_block).unwrap_or(i32::MAX);
    Ok(blocks.min(by_threads).min(by_shared).max(0))
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    out: *mut c_int,
    func: sys::CUfunction,
    block_size: c_int,
    shared: usize,
) -> sys::CUresult {
    // SAFETY: an out-pointer from the caller.
    status(
        sm_limits(func)
            .and_then(|l| blocks_per_sm(l, block_size, shared))
            .and_then(|n| unsafe { put(out, n) }),
    )
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    out: *mut c_int,
    func: sys::CUfunction,
    block_size: c_int,
    shared: usize,
    _flags: c_uint,
) -> sys::CUresult {
    // SAFETY: the caller's arguments.
    unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessor(out, func, block_size, shared) }
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSize(
    min_grid: *mut c_int,
    block_size_out: *mut c_int,
    func: sys::CUfunction,
    shared_for: sys::CUoccupancyB2DSize,
    shared: usize,
    limit: c_int,
) -> sys::CUresult {
    let result = (|| {
        let limits = sm_limits(func)?;
        let limit = if limit <= 0 { 1024 } else { limit.min(1024) };
        // The block size that keeps the most threads resident, the largest of equals.
        let mut best = (0, 0, 0);
        let mut size = limit - limit % 32;
        while size > 0 {
            let smem = match shared_for {
                // SAFETY: the caller's callback, called as the API documents.
                Some(f) => unsafe { f(size) },
                None => shared,
            };
            let blocks = blocks_per_sm(limits, size, smem)?;
            if blocks * size > best.0 {
                best = (blocks * size, size, blocks);
            }
            size -= 32;
        }
        // SAFETY: out-pointers from the caller.
        unsafe {
            put(min_grid, best.2 * limits.3)?;
            put(block_size_out, best.1)
        }
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid: *mut c_int,
    block_size_out: *mut c_int,
    func: sys::CUfunction,
    shared_for: sys::CUoccupancyB2DSize,
    shared: usize,
    limit: c_int,
    _flags: c_uint,
) -> sys::CUresult {
    // SAFETY: the caller's arguments.
    unsafe {
        cuOccupancyMaxPotentialBlockSize(min_grid, block_size_out, func, shared_for, shared, limit)
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    out: *mut usize,
    func: sys::CUfunction,
    blocks: c_int,
    block_size: c_int,
) -> sys::CUresult {
    let result = (|| {
        let limits = sm_limits(func)?;
        if blocks <= 0 || blocks_per_sm(limits, block_size, 0)? < blocks {
            return Err(sys::CUDA_ERROR_INVALID_VALUE);
        }
        let per_block = (limits.2 / i64::from(blocks) - 1024).max(0);
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, per_block as usize) }
    })();
    status(result)
}

/// A context going away: its modules go with it (their memory goes with the context's).
pub fn destroy_context(ctx: usize) {
    let gone = MODULES.drain(|m| m.ctx == ctx);
    for m in gone {
        let _ = FUNCTIONS.drain(|f| f.module == m.handle);
    }
}
