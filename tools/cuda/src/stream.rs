// SPDX-License-Identifier: GPL-2.0
//! Streams and events. Each stream is a queue that a worker thread of its own runs in order,
//! off the caller's thread, so asynchronous copies overlap with the program's host work as on
//! a GPU. The default streams keep CUDA's rules: work on the legacy default stream waits for
//! all earlier work on the context's blocking streams and they wait for it; the per-thread
//! default stream (`_ptds`/`_ptsz` entry points, `CU_STREAM_PER_THREAD`) is one blocking stream
//! per thread and context. Those waits, and `cuStreamWaitEvent`, are tasks in the queue that
//! block the worker until the other stream has finished what it had been given; a wait only
//! ever names work submitted before it, so workers cannot wait on each other in a cycle.

use crate::{context, handles::Registry, put, status, sys, CuResult};
use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    ffi::{c_int, c_uint, c_void},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Instant,
};

type Task = Box<dyn FnOnce() + Send>;

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`: cuda.h defines them as casts, which bindgen
/// does not carry.
pub const LEGACY_HANDLE: usize = 0x1;
pub const PER_THREAD_HANDLE: usize = 0x2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The context's legacy default stream (handle 0 or `CU_STREAM_LEGACY`).
    Legacy,
    /// A thread's per-thread default stream.
    PerThread,
    /// `cuStreamCreate`.
    Created,
}

#[derive(Default)]
struct Queue {
    tasks: VecDeque<Task>,
    submitted: u64,
    completed: u64,
    worker: bool,
    closed: bool,
}

pub struct Stream {
    /// What the program sees: the registry's number, or the special handle of a default stream.
    pub handle: usize,
    pub ctx: usize,
    pub kind: Kind,
    pub flags: c_uint,
    pub priority: c_int,
    queue: Mutex<Queue>,
    changed: Condvar,
}

/// Streams made by `cuStreamCreate*`.
static STREAMS: Registry<Stream> = Registry::new();
/// Every default stream, by context: the legacy one and those of each thread.
static DEFAULTS: Mutex<Vec<Arc<Stream>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's per-thread default stream of each context.
    static PER_THREAD: RefCell<HashMap<usize, Arc<Stream>>> = RefCell::new(HashMap::new());
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stream {
    fn new(handle: usize, ctx: usize, kind: Kind, flags: c_uint, priority: c_int) -> Self {
        Stream {
            handle,
            ctx,
            kind,
            flags,
            priority,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        }
    }

    /// Whether it synchronizes with the legacy default stream.
    fn blocking(&self) -> bool {
        self.kind != Kind::Legacy && self.flags & sys::CU_STREAM_NON_BLOCKING == 0
    }

    /// The sequence number of the last task given to it.
    pub fn submitted(&self) -> u64 {
        lock(&self.queue).submitted
    }

    /// Whether everything given to it has run.
    pub fn idle(&self) -> bool {
        let q = lock(&self.queue);
        q.completed == q.submitted
    }

    /// Whether task `seq` has run.
    pub fn reached(&self, seq: u64) -> bool {
        lock(&self.queue).completed >= seq
    }

    /// Blocks until task `seq` has run.
    pub fn wait(&self, seq: u64) {
        let mut q = lock(&self.queue);
        while q.completed < seq {
            q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn push(self: &Arc<Self>, task: Task) -> u64 {
        let mut q = lock(&self.queue);
        q.tasks.push_back(task);
        q.submitted = q.submitted.saturating_add(1);
        let seq = q.submitted;
        if !q.worker {
            let me = self.clone();
            if std::thread::Builder::new()
                .name("emuv-stream".into())
                .spawn(move || me.run())
                .is_ok()
            {
                q.worker = true;
            } else {
                // No thread to be had: run the queue here, in order.
                drop(q);
                self.drain_here();
                return seq;
            }
        }
        self.changed.notify_all();
        seq
    }

    fn drain_here(&self) {
        loop {
            let task = lock(&self.queue).tasks.pop_front();
            let Some(task) = task else { return };
            task();
            let mut q = lock(&self.queue);
            q.completed = q.completed.saturating_add(1);
            self.changed.notify_all();
        }
    }

    fn run(self: Arc<Self>) {
        loop {
            let task = {
                let mut q = lock(&self.queue);
                loop {
                    if let Some(task) = q.tasks.pop_front() {
                        break task;
                    }
                    if q.closed {
                        q.worker = false;
                        return;
                    }
                    q = self.changed.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            task();
            let mut q = lock(&self.queue);
            q.completed = q.completed.saturating_add(1);
            self.changed.notify_all();
        }
    }

    /// Lets the worker end once the queue is empty.
    fn close(&self) {
        lock(&self.queue).closed = true;
        self.changed.notify_all();
    }
}

/// The streams of `ctx` that work on `stream` must wait for first, with how far: for the legacy
/// default stream every blocking stream of the context, for a blocking stream the legacy one.
fn barrier(stream: &Stream) -> Vec<(Arc<Stream>, u64)> {
    let mut waits = Vec::new();
    let mut add = |s: &Arc<Stream>| {
        if !std::ptr::eq(Arc::as_ptr(s), stream) {
            let q = lock(&s.queue);
            if q.completed < q.submitted {
                waits.push((s.clone(), q.submitted));
            }
        }
    };
    match stream.kind {
        Kind::Legacy => {
            for s in STREAMS.filter(|s| s.ctx == stream.ctx && s.blocking()) {
                add(&s);
            }
            for s in lock(&DEFAULTS).iter() {
                if s.ctx == stream.ctx && s.kind == Kind::PerThread {
                    add(s);
                }
            }
        }
        _ if stream.blocking() => {
            if let Some(legacy) = legacy_of(stream.ctx) {
                add(&legacy);
            }
        }
        _ => {}
    }
    waits
}

/// Queues `task` on `stream` after what the default-stream rules make it wait for; returns
/// its sequence number.
pub fn enqueue(stream: &Arc<Stream>, task: impl FnOnce() + Send + 'static) -> u64 {
    for (other, seq) in barrier(stream) {
        stream.push(Box::new(move || other.wait(seq)));
    }
    stream.push(Box::new(task))
}

/// Waits until `stream` and everything its next task would wait for have finished: what a
/// synchronous call issued on `stream` does before it runs on the caller's thread.
pub fn drain_before_sync_call(stream: &Arc<Stream>) {
    for (other, seq) in barrier(stream) {
        other.wait(seq);
    }
    stream.wait(stream.submitted());
}

fn legacy_of(ctx: usize) -> Option<Arc<Stream>> {
    lock(&DEFAULTS)
        .iter()
        .find(|s| s.ctx == ctx && s.kind == Kind::Legacy)
        .cloned()
}

/// The legacy default stream of context `ctx`, made on first use.
pub fn legacy(ctx: usize) -> Arc<Stream> {
    let mut defaults = lock(&DEFAULTS);
    if let Some(s) = defaults
        .iter()
        .find(|s| s.ctx == ctx && s.kind == Kind::Legacy)
    {
        return s.clone();
    }
    let s = Arc::new(Stream::new(LEGACY_HANDLE, ctx, Kind::Legacy, 0, 0));
    defaults.push(s.clone());
    s
}

/// This thread's per-thread default stream of `ctx`, made on first use.
fn per_thread(ctx: usize) -> Arc<Stream> {
    PER_THREAD.with(|map| {
        let mut map = map.borrow_mut();
        if let Some(s) = map.get(&ctx) {
            return s.clone();
        }
        let s = Arc::new(Stream::new(PER_THREAD_HANDLE, ctx, Kind::PerThread, 0, 0));
        lock(&DEFAULTS).push(s.clone());
        map.insert(ctx, s.clone());
        s
    })
}

/// The stream a `CUstream` argument names. `per_thread` for the `_ptds`/`_ptsz` entry points,
/// where 0 means the per-thread default stream.
pub fn resolve(handle: sys::CUstream, per_thread_default: bool) -> CuResult<Arc<Stream>> {
    let raw = handle as usize;
    let legacy_handle = LEGACY_HANDLE;
    let per_thread_handle = PER_THREAD_HANDLE;
    if raw == 0 || raw == legacy_handle || raw == per_thread_handle {
        let ctx = context::current()?;
        let pt = raw == per_thread_handle || (raw == 0 && per_thread_default);
        return Ok(if pt {
            per_thread(ctx.handle)
        } else {
            legacy(ctx.handle)
        });
    }
    let stream = STREAMS.get(raw).ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    context::get(stream.ctx)?;
    Ok(stream)
}

/// Waits for every stream of `ctx`.
pub fn synchronize_context(ctx: usize) {
    let mut all = STREAMS.filter(|s| s.ctx == ctx);
    all.extend(lock(&DEFAULTS).iter().filter(|s| s.ctx == ctx).cloned());
    for s in all {
        s.wait(s.submitted());
    }
}

/// A context going away: its streams finish what they have and end.
pub fn destroy_context(ctx: usize) {
    let mut gone = STREAMS.drain(|s| s.ctx == ctx);
    {
        let mut defaults = lock(&DEFAULTS);
        gone.extend(defaults.iter().filter(|s| s.ctx == ctx).cloned());
        defaults.retain(|s| s.ctx != ctx);
    }
    for s in gone {
        s.wait(s.submitted());
        s.close();
    }
    let _ = EVENTS.drain(|e| e.ctx == ctx);
}

fn create(flags: c_uint, priority: c_int) -> CuResult<usize> {
    if flags & !sys::CU_STREAM_NON_BLOCKING != 0 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    let ctx = context::current()?;
    // Out-of-range priorities are clamped, as the driver documents.
    let priority = priority.clamp(context::GREATEST_PRIORITY, 0);
    let (handle, _) =
        STREAMS.insert(|h| Stream::new(h, ctx.handle, Kind::Created, flags, priority));
    Ok(handle)
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(out: *mut sys::CUstream, flags: c_uint) -> sys::CUresult {
    if out.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    status(create(flags, 0).and_then(|h| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, h as sys::CUstream) }
    }))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    out: *mut sys::CUstream,
    flags: c_uint,
    priority: c_int,
) -> sys::CUresult {
    if out.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    status(create(flags, priority).and_then(|h| {
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, h as sys::CUstream) }
    }))
}

#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(stream: sys::CUstream) -> sys::CUresult {
    let raw = stream as usize;
    if raw == 0 || raw == LEGACY_HANDLE || raw == PER_THREAD_HANDLE {
        return sys::CUDA_ERROR_INVALID_HANDLE;
    }
    match STREAMS.remove(raw) {
        // Work already queued still runs; the worker ends after it.
        Some(s) => {
            s.close();
            sys::CUDA_SUCCESS
        }
        None => sys::CUDA_ERROR_INVALID_HANDLE,
    }
}

macro_rules! both_flavours {
    ($plain:ident, $pt:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[no_mangle]
        pub unsafe extern "C" fn $plain($($arg: $ty),*) -> sys::CUresult {
            // SAFETY: the caller's arguments, as the API defines them.
            status(unsafe { $body($($arg,)* false) })
        }
        #[no_mangle]
        pub unsafe extern "C" fn $pt($($arg: $ty),*) -> sys::CUresult {
            // SAFETY: as above.
            status(unsafe { $body($($arg,)* true) })
        }
    };
}
pub(crate) use both_flavours;

unsafe fn stream_query(stream: sys::CUstream, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    if s.idle() {
        Ok(())
    } else {
        Err(sys::CUDA_ERROR_NOT_READY)
    }
}
both_flavours!(cuStreamQuery, cuStreamQuery_ptsz, stream_query, (stream: sys::CUstream));

unsafe fn stream_synchronize(stream: sys::CUstream, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    drain_before_sync_call(&s);
    Ok(())
}
both_flavours!(cuStreamSynchronize, cuStreamSynchronize_ptsz, stream_synchronize, (stream: sys::CUstream));

unsafe fn stream_get_flags(stream: sys::CUstream, out: *mut c_uint, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    // SAFETY: an out-pointer from the caller.
    unsafe { put(out, s.flags) }
}
both_flavours!(cuStreamGetFlags, cuStreamGetFlags_ptsz, stream_get_flags, (stream: sys::CUstream, out: *mut c_uint));

unsafe fn stream_get_priority(stream: sys::CUstream, out: *mut c_int, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    // SAFETY: an out-pointer from the caller.
    unsafe { put(out, s.priority) }
}
both_flavours!(cuStreamGetPriority, cuStreamGetPriority_ptsz, stream_get_priority, (stream: sys::CUstream, out: *mut c_int));

unsafe fn stream_get_ctx(stream: sys::CUstream, out: *mut sys::CUcontext, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    // SAFETY: an out-pointer from the caller.
    unsafe { put(out, s.ctx as sys::CUcontext) }
}
both_flavours!(cuStreamGetCtx, cuStreamGetCtx_ptsz, stream_get_ctx, (stream: sys::CUstream, out: *mut sys::CUcontext));

unsafe fn stream_get_ctx_v2(
    stream: sys::CUstream,
    ctx: *mut sys::CUcontext,
    green: *mut sys::CUgreenCtx,
    pt: bool,
) -> CuResult {
    let s = resolve(stream, pt)?;
    // SAFETY: out-pointers from the caller; the green context is optional.
    unsafe {
        put(ctx, s.ctx as sys::CUcontext)?;
        if !green.is_null() {
            put(green, std::ptr::null_mut())?;
        }
    }
    Ok(())
}
both_flavours!(cuStreamGetCtx_v2, cuStreamGetCtx_v2_ptsz, stream_get_ctx_v2, (stream: sys::CUstream, ctx: *mut sys::CUcontext, green: *mut sys::CUgreenCtx));

unsafe fn stream_get_device(stream: sys::CUstream, out: *mut sys::CUdevice, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    let ctx = context::get(s.ctx)?;
    // SAFETY: an out-pointer from the caller.
    unsafe { put(out, ctx.device) }
}
both_flavours!(cuStreamGetDevice, cuStreamGetDevice_ptsz, stream_get_device, (stream: sys::CUstream, out: *mut sys::CUdevice));

unsafe fn stream_get_id(stream: sys::CUstream, out: *mut u64, pt: bool) -> CuResult {
    let s = resolve(stream, pt)?;
    // SAFETY: an out-pointer from the caller.
    unsafe { put(out, s.handle as u64) }
}
both_flavours!(cuStreamGetId, cuStreamGetId_ptsz, stream_get_id, (stream: sys::CUstream, out: *mut u64));

/// A program's callback pointer and argument, carried to the worker.
struct HostCall(unsafe extern "C" fn(*mut c_void), *mut c_void);
// SAFETY: CUDA runs host functions on a driver thread; the program made them for that.
unsafe impl Send for HostCall {}

unsafe fn launch_host_func(
    stream: sys::CUstream,
    f: sys::CUhostFn,
    data: *mut c_void,
    pt: bool,
) -> CuResult {
    let f = f.ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
    let s = resolve(stream, pt)?;
    let call = HostCall(f, data);
    enqueue(&s, move || {
        let call = call;
        // SAFETY: the program's function with its own argument, as cuLaunchHostFunc promises.
        unsafe { (call.0)(call.1) }
    });
    Ok(())
}
both_flavours!(cuLaunchHostFunc, cuLaunchHostFunc_ptsz, launch_host_func, (stream: sys::CUstream, f: sys::CUhostFn, data: *mut c_void));

struct Callback(
    unsafe extern "C" fn(sys::CUstream, sys::CUresult, *mut c_void),
    sys::CUstream,
    *mut c_void,
);
// SAFETY: as for HostCall.
unsafe impl Send for Callback {}

unsafe fn stream_add_callback(
    stream: sys::CUstream,
    cb: sys::CUstreamCallback,
    data: *mut c_void,
    flags: c_uint,
    pt: bool,
) -> CuResult {
    let cb = cb.ok_or(sys::CUDA_ERROR_INVALID_VALUE)?;
    if flags != 0 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    let s = resolve(stream, pt)?;
    let call = Callback(cb, stream, data);
    enqueue(&s, move || {
        let call = call;
        // SAFETY: the program's callback with its own arguments.
        unsafe { (call.0)(call.1, sys::CUDA_SUCCESS, call.2) }
    });
    Ok(())
}
both_flavours!(cuStreamAddCallback, cuStreamAddCallback_ptsz, stream_add_callback, (stream: sys::CUstream, cb: sys::CUstreamCallback, data: *mut c_void, flags: c_uint));

unsafe fn stream_wait_event(
    stream: sys::CUstream,
    event: sys::CUevent,
    flags: c_uint,
    pt: bool,
) -> CuResult {
    if flags & !sys::CU_EVENT_WAIT_EXTERNAL != 0 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    let s = resolve(stream, pt)?;
    let e = EVENTS
        .get(event as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let recorded = lock(&e.state).recorded.clone();
    if let Some((other, seq)) = recorded {
        if !other.reached(seq) {
            s.push(Box::new(move || other.wait(seq)));
        }
    }
    Ok(())
}
both_flavours!(cuStreamWaitEvent, cuStreamWaitEvent_ptsz, stream_wait_event, (stream: sys::CUstream, event: sys::CUevent, flags: c_uint));

// Events.

#[derive(Default)]
struct EventState {
    recorded: Option<(Arc<Stream>, u64)>,
    /// Which recording the time belongs to: a record replaced before it ran sets nothing.
    generation: u64,
    time: Option<Instant>,
}

pub struct Event {
    pub ctx: usize,
    pub flags: c_uint,
    state: Mutex<EventState>,
}

static EVENTS: Registry<Event> = Registry::new();

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(out: *mut sys::CUevent, flags: c_uint) -> sys::CUresult {
    let known =
        sys::CU_EVENT_BLOCKING_SYNC | sys::CU_EVENT_DISABLE_TIMING | sys::CU_EVENT_INTERPROCESS;
    if out.is_null() || flags & !known != 0 {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    // Interprocess events must not time, as the documentation requires.
    if flags & sys::CU_EVENT_INTERPROCESS != 0 && flags & sys::CU_EVENT_DISABLE_TIMING == 0 {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    status(context::current().and_then(|ctx| {
        let (handle, _) = EVENTS.insert(|_| Event {
            ctx: ctx.handle,
            flags,
            state: Mutex::new(EventState::default()),
        });
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, handle as sys::CUevent) }
    }))
}

#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(event: sys::CUevent) -> sys::CUresult {
    match EVENTS.remove(event as usize) {
        Some(_) => sys::CUDA_SUCCESS,
        None => sys::CUDA_ERROR_INVALID_HANDLE,
    }
}

unsafe fn event_record(event: sys::CUevent, stream: sys::CUstream, pt: bool) -> CuResult {
    let e = EVENTS
        .get(event as usize)
        .ok_or(sys::CUDA_ERROR_INVALID_HANDLE)?;
    let s = resolve(stream, pt)?;
    let mut state = lock(&e.state);
    state.generation = state.generation.wrapping_add(1);
    state.time = None;
    let generation = state.generation;
    let target = e.clone();
    drop(state);
    let seq = enqueue(&s, move || {
        let now = Instant::now();
        let mut state = lock(&target.state);
        if state.generation == generation {
            state.time = Some(now);
        }
    });
    let mut state = lock(&e.state);
    if state.generation == generation {
        state.recorded = Some((s, seq));
    }
    Ok(())
}
both_flavours!(cuEventRecord, cuEventRecord_ptsz, event_record, (event: sys::CUevent, stream: sys::CUstream));

unsafe fn event_record_with_flags(
    event: sys::CUevent,
    stream: sys::CUstream,
    flags: c_uint,
    pt: bool,
) -> CuResult {
    if flags & !sys::CU_EVENT_RECORD_EXTERNAL != 0 {
        return Err(sys::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: the caller's arguments.
    unsafe { event_record(event, stream, pt) }
}
both_flavours!(cuEventRecordWithFlags, cuEventRecordWithFlags_ptsz, event_record_with_flags, (event: sys::CUevent, stream: sys::CUstream, flags: c_uint));

#[no_mangle]
pub extern "C" fn cuEventQuery(event: sys::CUevent) -> sys::CUresult {
    let Some(e) = EVENTS.get(event as usize) else {
        return sys::CUDA_ERROR_INVALID_HANDLE;
    };
    let recorded = lock(&e.state).recorded.clone();
    match recorded {
        Some((s, seq)) if !s.reached(seq) => sys::CUDA_ERROR_NOT_READY,
        _ => sys::CUDA_SUCCESS,
    }
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: sys::CUevent) -> sys::CUresult {
    let Some(e) = EVENTS.get(event as usize) else {
        return sys::CUDA_ERROR_INVALID_HANDLE;
    };
    let recorded = lock(&e.state).recorded.clone();
    if let Some((s, seq)) = recorded {
        s.wait(seq);
    }
    sys::CUDA_SUCCESS
}

fn event_time(e: &Event) -> CuResult<Instant> {
    if e.flags & sys::CU_EVENT_DISABLE_TIMING != 0 {
        return Err(sys::CUDA_ERROR_INVALID_HANDLE);
    }
    let state = lock(&e.state);
    match (&state.recorded, state.time) {
        (None, _) => Err(sys::CUDA_ERROR_INVALID_HANDLE),
        (Some(_), None) => Err(sys::CUDA_ERROR_NOT_READY),
        (Some(_), Some(t)) => Ok(t),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: sys::CUevent,
    end: sys::CUevent,
) -> sys::CUresult {
    if ms.is_null() {
        return sys::CUDA_ERROR_INVALID_VALUE;
    }
    let (Some(a), Some(b)) = (EVENTS.get(start as usize), EVENTS.get(end as usize)) else {
        return sys::CUDA_ERROR_INVALID_HANDLE;
    };
    status((|| {
        let (ta, tb) = (event_time(&a)?, event_time(&b)?);
        let elapsed = if tb >= ta {
            (tb - ta).as_secs_f64()
        } else {
            -(ta - tb).as_secs_f64()
        };
        // SAFETY: an out-pointer from the caller.
        unsafe { put(ms, (elapsed * 1000.0) as f32) }
    })())
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(
    ms: *mut f32,
    start: sys::CUevent,
    end: sys::CUevent,
) -> sys::CUresult {
    // SAFETY: the same contract.
    unsafe { cuEventElapsedTime_v2(ms, start, end) }
}
