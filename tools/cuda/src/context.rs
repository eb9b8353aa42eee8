// SPDX-License-Identifier: GPL-2.0
//! Contexts: one primary context per card (retained and released by count, same handle for
//! the process's life), contexts made by `cuCtxCreate`, and each thread's stack of current
//! contexts. What a context holds (memory, streams, events, modules) goes with it.

use crate::{attributes, driver, handles, memory, module, put, status, stream, sys, CuResult};
use std::{
    cell::RefCell,
    ffi::{c_int, c_uint},
    sync::{Arc, Mutex, MutexGuard},
};

/// Stream priorities: 0 is the lowest, -5 the greatest (measured on driver 580).
pub const GREATEST_PRIORITY: c_int = -5;

/// `cuCtxGetApiVersion` of every context (measured: 3020).
const API_VERSION: c_uint = 3020;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub stack_size: usize,
    pub printf_fifo_size: usize,
    pub malloc_heap_size: usize,
    pub pending_launch_count: usize,
    pub max_l2_fetch_granularity: usize,
    pub persisting_l2_cache_size: usize,
}

impl Default for Limits {
    /// What driver 580 reports for a new context (capture-580/01-driver.out), but the
    /// persisting L2 size, which a real card starts at 0 until asked.
    fn default() -> Self {
        Limits {
            stack_size: 1024,
            printf_fifo_size: 8_650_752,
            malloc_heap_size: 8 << 20,
            pending_launch_count: 2048,
            max_l2_fetch_granularity: 64,
            persisting_l2_cache_size: 0,
        }
    }
}

pub struct Context {
    pub handle: usize,
    pub device: sys::CUdevice,
    pub primary: bool,
    pub flags: Mutex<c_uint>,
    pub limits: Mutex<Limits>,
    pub cache_config: Mutex<sys::CUfunc_cache>,
    pub shared_config: Mutex<sys::CUsharedconfig>,
}

/// Every live context, primary ones included (while active).
static CONTEXTS: handles::Registry<Context> = handles::Registry::new();

/// Per card: the primary context's handle (fixed once made), how many retain it, its flags.
struct Primary {
    handle: usize,
    retained: u32,
    flags: c_uint,
}

static PRIMARIES: Mutex<Vec<Option<Primary>>> = Mutex::new(Vec::new());

thread_local! {
    static STACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The context `handle` names, if it is live.
pub fn get(handle: usize) -> CuResult<Arc<Context>> {
    driver::cards()?;
    CONTEXTS.get(handle).ok_or(sys::CUDA_ERROR_INVALID_CONTEXT)
}

/// The calling thread's current context: `CUDA_ERROR_INVALID_CONTEXT` without one, or when it
/// has been destroyed.
pub fn current() -> CuResult<Arc<Context>> {
    driver::cards()?;
    let top = STACK.with(|s| s.borrow().last().copied());
    match top {
        None => Err(sys::CUDA_ERROR_INVALID_CONTEXT),
        // Still current but released or destroyed (measured: CONTEXT_IS_DESTROYED).
        Some(h) => CONTEXTS.get(h).ok_or(sys::CUDA_ERROR_CONTEXT_IS_DESTROYED),
    }
}

/// The context a call names: `ctx`, or the current one for NULL.
pub fn named_or_current(ctx: sys::CUcontext) -> CuResult<Arc<Context>> {
    if ctx.is_null() {
        current()
    } else {
        get(ctx as usize)
    }
}

const KNOWN_FLAGS: c_uint = sys::CU_CTX_SCHED_MASK
    | sys::CU_CTX_MAP_HOST
    | sys::CU_CTX_LMEM_RESIZE_TO_MAX
    | sys::CU_CTX_COREDUMP_ENABLE
    | sys::CU_CTX_USER_COREDUMP_ENABLE
    | sys::CU_CTX_SYNC_MEMOPS;

fn check_flags(flags: c_uint) -> CuResult {
    // One scheduling mode at most; no unknown bits.
    let sched = flags & sys::CU_CTX_SCHED_MASK;
    if flags & !KNOWN_FLAGS != 0 || sched == 3 || sched > sys::CU_CTX_SCHED_BLOCKING_SYNC {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(())
}

fn make(handle: usize, device: sys::CUdevice, primary: bool, flags: c_uint) -> Context {
    Context {
        handle,
        device,
        primary,
        // Host memory is always mappable (unified addressing): the driver reports MAP_HOST.
        flags: Mutex::new(flags | sys::CU_CTX_MAP_HOST),
        limits: Mutex::new(Limits::default()),
        cache_config: Mutex::new(sys::CU_FUNC_CACHE_PREFER_NONE),
        shared_config: Mutex::new(sys::CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE),
    }
}

/// Frees what `ctx` holds: its streams finish first.
fn tear_down(ctx: usize) {
    stream::destroy_context(ctx);
    module::destroy_context(ctx);
    memory::destroy_context(ctx);
}

fn create(device: sys::CUdevice, flags: c_uint) -> CuResult<usize> {
    driver::card(device)?;
    check_flags(flags)?;
    let (handle, _) = CONTEXTS.insert(|h| make(h, device, false, flags));
    STACK.with(|s| s.borrow_mut().push(handle));
    Ok(handle)
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(
    out: *mut sys::CUcontext,
    flags: c_uint,
    device: sys::CUdevice,
) -> sys::CUresult {
    if out.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    status(create(device, flags).and_then(|h| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, h as sys::CUcontext) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v3(
    out: *mut sys::CUcontext,
    params: *mut sys::CUexecAffinityParam,
    count: c_int,
    flags: c_uint,
    device: sys::CUdevice,
) -> sys::CUresult {
    // Execution affinity (SM partitions) is a MPS/Volta+ datacenter feature.
    if count != 0 || !params.is_null() {
        return sys::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
    }
    // SAFETY: the same out-pointer contract.
    unsafe { cuCtxCreate_v2(out, flags, device) }
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v4(
    out: *mut sys::CUcontext,
    params: *mut sys::CUctxCreateParams,
    flags: c_uint,
    device: sys::CUdevice,
) -> sys::CUresult {
    if !params.is_null() {
        // SAFETY: a non-NULL parameter block from the caller.
        let p = unsafe { params.read_unaligned() };
        if p.numExecAffinityParams != 0 || !p.execAffinityParams.is_null() {
            return sys::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY;
        }
        // A CIG (graphics interop) context needs a graphics API emulated cards do not have.
        if !p.cigParams.is_null() {
            return sys::CUDA_ERROR_NOT_SUPPORTED;
        }
    }
    // SAFETY: the same out-pointer contract.
    unsafe { cuCtxCreate_v2(out, flags, device) }
}

#[no_mangle]
pub extern "C" fn cuCtxDestroy_v2(ctx: sys::CUcontext) -> sys::CUresult {
    status((|| {
        let c = get(ctx as usize)?;
        if c.primary {
            return Err(sys::CUDA_ERROR_INVALID_CONTEXT);
        }
        CONTEXTS.remove(c.handle);
        tear_down(c.handle);
        // Off this thread's stack; other threads' stacks keep a handle that now answers
        // INVALID_CONTEXT.
        STACK.with(|s| s.borrow_mut().retain(|&h| h != c.handle));
        Ok(())
    })())
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(out: *mut sys::CUcontext) -> sys::CUresult {
    status(driver::cards().and_then(|_| {
        let top = STACK.with(|s| s.borrow().last().copied()).unwrap_or(0);
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, top as sys::CUcontext) }
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: sys::CUcontext) -> sys::CUresult {
    status((|| {
        driver::cards()?;
        if ctx.is_null() {
            STACK.with(|s| s.borrow_mut().pop());
            return Ok(());
        }
        let c = get(ctx as usize)?;
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            s.pop();
            s.push(c.handle);
        });
        Ok(())
    })())
}

#[no_mangle]
pub extern "C" fn cuCtxPushCurrent_v2(ctx: sys::CUcontext) -> sys::CUresult {
    status((|| {
        let c = get(ctx as usize)?;
        STACK.with(|s| s.borrow_mut().push(c.handle));
        Ok(())
    })())
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(out: *mut sys::CUcontext) -> sys::CUresult {
    status((|| {
        driver::cards()?;
        let top = STACK
            .with(|s| s.borrow_mut().pop())
            .ok_or(sys::CUDA_ERROR_INVALID_CONTEXT)?;
        if !out.is_null() {
            // SAFETY: a non-NULL out-pointer from the caller.
            unsafe { put(out, top as sys::CUcontext) }?;
        }
        Ok(())
    })())
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(out: *mut sys::CUdevice) -> sys::CUresult {
    status(current().and_then(|c| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, c.device) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice_v2(
    out: *mut sys::CUdevice,
    ctx: sys::CUcontext,
) -> sys::CUresult {
    status(named_or_current(ctx).and_then(|c| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, c.device) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetFlags(out: *mut c_uint) -> sys::CUresult {
    status(current().and_then(|c| {
        let flags = *lock(&c.flags);
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, flags) }
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxSetFlags(flags: c_uint) -> sys::CUresult {
    status(current().and_then(|c| {
        check_flags(flags)?;
        *lock(&c.flags) = flags | sys::CU_CTX_MAP_HOST;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetId(ctx: sys::CUcontext, out: *mut u64) -> sys::CUresult {
    status(named_or_current(ctx).and_then(|c| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, c.handle as u64) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(
    ctx: sys::CUcontext,
    out: *mut c_uint,
) -> sys::CUresult {
    status(named_or_current(ctx).and_then(|_| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, API_VERSION) }
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> sys::CUresult {
    status(current().map(|c| stream::synchronize_context(c.handle)))
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize_v2(ctx: sys::CUcontext) -> sys::CUresult {
    status(named_or_current(ctx).map(|c| stream::synchronize_context(c.handle)))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> sys::CUresult {
    status(current().and_then(|_| {
        // Either pointer may be NULL.
        // SAFETY: out-pointers from the caller, written when non-NULL.
        unsafe {
            if !least.is_null() {
                put(least, 0)?;
            }
            if !greatest.is_null() {
                put(greatest, GREATEST_PRIORITY)?;
            }
        }
        Ok(())
    }))
}

fn limit_slot(limits: &mut Limits, limit: sys::CUlimit) -> CuResult<&mut usize> {
    Ok(match limit {
        sys::CU_LIMIT_STACK_SIZE => &mut limits.stack_size,
        sys::CU_LIMIT_PRINTF_FIFO_SIZE => &mut limits.printf_fifo_size,
        sys::CU_LIMIT_MALLOC_HEAP_SIZE => &mut limits.malloc_heap_size,
        sys::CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT => &mut limits.pending_launch_count,
        sys::CU_LIMIT_MAX_L2_FETCH_GRANULARITY => &mut limits.max_l2_fetch_granularity,
        sys::CU_LIMIT_PERSISTING_L2_CACHE_SIZE => &mut limits.persisting_l2_cache_size,
        // Measured: these two answer UNSUPPORTED_LIMIT on driver 580.
        sys::CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH | sys::CU_LIMIT_CIG_SHMEM_FALLBACK_ENABLED => {
            return Err(sys::CUDA_ERROR_UNSUPPORTED_LIMIT)
        }
        _ => return Err(sys::CUDA_ERROR_INVALID_VALUE),
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetLimit(out: *mut usize, limit: sys::CUlimit) -> sys::CUresult {
    status(current().and_then(|c| {
        let value = match limit {
            sys::CU_LIMIT_SHMEM_SIZE => {
                let card = driver::card(c.device)?;
                attributes::lookup(
                    &card.facts,
                    sys::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN as i32,
                )
                .map_err(|e| e as sys::CUresult)? as usize
            }
            sys::CU_LIMIT_CIG_ENABLED => 0,
            _ => *limit_slot(&mut lock(&c.limits), limit)?,
        };
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, value) }
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxSetLimit(limit: sys::CUlimit, value: usize) -> sys::CUresult {
    status(current().and_then(|c| {
        if matches!(limit, sys::CU_LIMIT_SHMEM_SIZE | sys::CU_LIMIT_CIG_ENABLED) {
            return Err(sys::CUDA_ERROR_INVALID_VALUE);
        }
        let card = driver::card(c.device)?;
        let value = match limit {
            // The driver rounds the granularity down to a power of two of at most 128.
            sys::CU_LIMIT_MAX_L2_FETCH_GRANULARITY => {
                if value > 128 {
                    128
                } else {
                    value
                        .checked_next_power_of_two()
                        .map_or(0, |p| if p > value { p / 2 } else { p })
                }
            }
            sys::CU_LIMIT_PERSISTING_L2_CACHE_SIZE => {
                let max = attributes::lookup(
                    &card.facts,
                    sys::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE as i32,
                )
                .unwrap_or(0) as usize;
                value.min(max)
            }
            _ => value,
        };
        *limit_slot(&mut lock(&c.limits), limit)? = value;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCacheConfig(out: *mut sys::CUfunc_cache) -> sys::CUresult {
    status(current().and_then(|c| {
        let v = *lock(&c.cache_config);
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, v) }
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxSetCacheConfig(config: sys::CUfunc_cache) -> sys::CUresult {
    status(current().and_then(|c| {
        if config > sys::CU_FUNC_CACHE_PREFER_EQUAL {
            return Err(sys::CUDA_ERROR_INVALID_VALUE);
        }
        *lock(&c.cache_config) = config;
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetSharedMemConfig(out: *mut sys::CUsharedconfig) -> sys::CUresult {
    status(current().and_then(|c| {
        let v = *lock(&c.shared_config);
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, v) }
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxSetSharedMemConfig(config: sys::CUsharedconfig) -> sys::CUresult {
    status(current().and_then(|c| {
        if config > sys::CU_SHARED_MEM_CONFIG_EIGHT_BYTE_BANK_SIZE {
            return Err(sys::CUDA_ERROR_INVALID_VALUE);
        }
        *lock(&c.shared_config) = config;
        Ok(())
    }))
}

#[no_mangle]
pub extern "C" fn cuCtxResetPersistingL2Cache() -> sys::CUresult {
    status(current().map(drop))
}

// Primary contexts.

fn with_primary<R>(
    device: sys::CUdevice,
    f: impl FnOnce(&mut Option<Primary>) -> CuResult<R>,
) -> CuResult<R> {
    let cards = driver::cards()?;
    driver::card(device)?;
    let mut primaries = lock(&PRIMARIES);
    if primaries.len() < cards.len() {
        primaries.resize_with(cards.len(), || None);
    }
    let slot = primaries
        .get_mut(device as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_DEVICE)?;
    f(slot)
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(
    out: *mut sys::CUcontext,
    device: sys::CUdevice,
) -> sys::CUresult {
    if out.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    status(
        with_primary(device, |slot| {
            let primary = slot.get_or_insert_with(|| Primary {
                handle: handles::fresh(),
                retained: 0,
                flags: 0,
            });
            if primary.retained == 0 && CONTEXTS.get(primary.handle).is_none() {
                let (handle, flags) = (primary.handle, primary.flags);
                CONTEXTS.insert_as(handle, make(handle, device, true, flags));
            }
            primary.retained = primary.retained.saturating_add(1);
            Ok(primary.handle)
        })
        .and_then(|h| {
            // SAFETY: an out-pointer from the caller.
            unsafe { put(out, h as sys::CUcontext) }
        }),
    )
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(device: sys::CUdevice) -> sys::CUresult {
    status(with_primary(device, |slot| {
        let primary = slot
            .as_mut()
            .filter(|p| p.retained > 0)
            .ok_or(sys::CUDA_ERROR_INVALID_CONTEXT)?;
        primary.retained -= 1;
        if primary.retained == 0 {
            // The last release destroys it: what it held is freed.
            CONTEXTS.remove(primary.handle);
            tear_down(primary.handle);
        }
        Ok(())
    }))
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(device: sys::CUdevice) -> sys::CUresult {
    status(with_primary(device, |slot| {
        if let Some(primary) = slot.as_mut() {
            if CONTEXTS.remove(primary.handle).is_some() {
                tear_down(primary.handle);
            }
            primary.retained = 0;
            primary.flags = 0;
        }
        Ok(())
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(
    device: sys::CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> sys::CUresult {
    if flags.is_null() || active.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    status(with_primary(device, |slot| {
        let (f, a) = match slot {
            Some(p) => (p.flags, c_int::from(p.retained > 0)),
            None => (0, 0),
        };
        // SAFETY: out-pointers from the caller.
        unsafe {
            put(flags, f)?;
            put(active, a)
        }
    }))
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(
    device: sys::CUdevice,
    flags: c_uint,
) -> sys::CUresult {
    status(with_primary(device, |slot| {
        check_flags(flags)?;
        let primary = slot.get_or_insert_with(|| Primary {
            handle: handles::fresh(),
            retained: 0,
            flags: 0,
        });
        primary.flags = flags;
        if let Some(c) = CONTEXTS.get(primary.handle) {
            *lock(&c.flags) = flags | sys::CU_CTX_MAP_HOST;
        }
        Ok(())
    }))
}
