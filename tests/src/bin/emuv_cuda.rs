// SPDX-License-Identifier: GPL-2.0
//! CUDA programs on emulated cards: emuv's libcuda.so.1 under the unmodified cuda-python
//! (cuda.bindings) and numba-cuda, checked against what NVIDIA's driver 580 answered
//! (tests/cuda/driver_suite.py) and against the kernel's own count; the cards CUDA sees with
//! CUDA_VISIBLE_DEVICES; a million 256-byte allocations; a process killed with device memory
//! is cleaned up by the kernel; and a fuzzer that calls the library from several threads at
//! once with hostile pointers, sizes and handles, after which nothing has crashed and the
//! card is as it was.
//!
//! Needs `EMUV_CUDA_CLIENTS` (the venv of tests/cuda/requirements.txt); `cuda/libcuda.so.1` is
//! found next to this program's directory (target/release, target/cuda).

use emuv_tests::{
    err, module,
    tap::{check, check_eq, Tap},
    target_dir,
};
use libloading::Library;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    ffi::{c_char, c_int, c_uint, c_void},
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Instant,
};

const MIB: u64 = 1 << 20;
const ONE_CARD: &str = "gpu_model=4090 physical_vram_mb=1024 virtual_vram_mb=512 lazy_allocation=1";
/// The fuzzer's card: what its threads touch must fit in the test VM's 1 GiB with room to spare
/// (on a larger lazy card they fault in more than the guest has, and the OOM killer ends it).
const FUZZ_CARD: &str = "gpu_model=4090 physical_vram_mb=256 virtual_vram_mb=0 lazy_allocation=1";
const FOUR_CARDS: &str =
    "gpu_count=4 gpu_model=4090 physical_vram_mb=256 virtual_vram_mb=0 lazy_allocation=1";

type TestResult = Result<(), String>;

fn cuda_dir() -> PathBuf {
    target_dir().join("cuda")
}

fn python() -> Result<PathBuf, String> {
    let venv = std::env::var_os("EMUV_CUDA_CLIENTS").ok_or("EMUV_CUDA_CLIENTS is not set")?;
    Ok(PathBuf::from(venv).join("bin/python3"))
}

fn suite_path() -> PathBuf {
    target_dir()
        .parent()
        .map(|top| top.join("tests/cuda/driver_suite.py"))
        .expect("checkout")
}

/// Runs the Python suite in `mode`; every check it printed must be `ok`, and there must be
/// at least `min_checks` of them. Gives back what it wrote on stderr.
fn python_suite_stderr(
    args: &[&str],
    env: &[(&str, &str)],
    min_checks: usize,
) -> Result<String, String> {
    let mut cmd = Command::new(python()?);
    cmd.arg(suite_path())
        .args(args)
        .env("LD_LIBRARY_PATH", cuda_dir())
        .env("EMUV_SMI", target_dir().join("release/emuv-smi"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("CUDA_VISIBLE_DEVICES");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = cmd.output().map_err(err("run driver_suite.py"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("not ok")).collect();
    let passed = stdout.lines().filter(|l| l.starts_with("ok - ")).count();
    for line in stdout.lines() {
        println!("#   {line}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    check(
        output.status.success() && failed.is_empty() && passed >= min_checks,
        || {
            format!(
                "{args:?}: {} ({passed} checks passed, {} failed)\n{}\nstderr: {}",
                output.status,
                failed.len(),
                failed.join("\n"),
                stderr
            )
        },
    )
    .map(|()| stderr)
}

fn python_suite(args: &[&str], env: &[(&str, &str)], min_checks: usize) -> TestResult {
    python_suite_stderr(args, env, min_checks).map(drop)
}

// --- the child modes: the library loaded in a process of its own, so that the module can be
// unloaded after it ---------------------------------------------------------------------------

type Fn0 = unsafe extern "C" fn() -> c_int;
type FnInit = unsafe extern "C" fn(c_uint) -> c_int;
type FnDevGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type FnRetain = unsafe extern "C" fn(*mut *mut c_void, c_int) -> c_int;
type FnSetCurrent = unsafe extern "C" fn(*mut c_void) -> c_int;
type FnAlloc = unsafe extern "C" fn(*mut u64, usize) -> c_int;
type FnFree = unsafe extern "C" fn(u64) -> c_int;
type FnInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> c_int;
type FnHtoD = unsafe extern "C" fn(u64, *const c_void, usize) -> c_int;
type FnDtoH = unsafe extern "C" fn(*mut c_void, u64, usize) -> c_int;
type FnDtoD = unsafe extern "C" fn(u64, u64, usize) -> c_int;
type FnMemset = unsafe extern "C" fn(u64, u8, usize) -> c_int;
type FnRange = unsafe extern "C" fn(*mut u64, *mut usize, u64) -> c_int;
type FnPtrAttr = unsafe extern "C" fn(*mut c_void, c_int, u64) -> c_int;
type FnStreamCreate = unsafe extern "C" fn(*mut *mut c_void, c_uint) -> c_int;
type FnStreamOp = unsafe extern "C" fn(*mut c_void) -> c_int;
type FnHtoDAsync = unsafe extern "C" fn(u64, *const c_void, usize, *mut c_void) -> c_int;
type FnEventCreate = unsafe extern "C" fn(*mut *mut c_void, c_uint) -> c_int;
type FnEventRecord = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type FnModuleGetFunction =
    unsafe extern "C" fn(*mut *mut c_void, *mut c_void, *const c_char) -> c_int;
type FnCtxCreate = unsafe extern "C" fn(*mut *mut c_void, c_uint, c_int) -> c_int;
type FnGpa = unsafe extern "C" fn(*const c_char, *mut *mut c_void, c_int, u64, *mut c_int) -> c_int;
type FnAllocHost = unsafe extern "C" fn(*mut *mut c_void, usize) -> c_int;
type FnFreeHost = unsafe extern "C" fn(*mut c_void) -> c_int;

/// The library's functions the child modes call.
struct Cuda {
    _lib: Library,
    init: FnInit,
    device_get: FnDevGet,
    retain: FnRetain,
    set_current: FnSetCurrent,
    alloc: FnAlloc,
    free: FnFree,
    info: FnInfo,
    htod: FnHtoD,
    dtoh: FnDtoH,
    dtod: FnDtoD,
    memset: FnMemset,
    range: FnRange,
    ptr_attr: FnPtrAttr,
    stream_create: FnStreamCreate,
    stream_destroy: FnStreamOp,
    stream_sync: FnStreamOp,
    stream_query: FnStreamOp,
    htod_async: FnHtoDAsync,
    event_create: FnEventCreate,
    event_record: FnEventRecord,
    event_destroy: FnStreamOp,
    event_sync: FnStreamOp,
    module_get_function: FnModuleGetFunction,
    gpa: FnGpa,
    ctx_create: FnCtxCreate,
    ctx_destroy: FnStreamOp,
    alloc_host: FnAllocHost,
    free_host: FnFreeHost,
    ctx_sync: Fn0,
}

impl Cuda {
    fn load() -> Cuda {
        let path = cuda_dir().join("libcuda.so.1");
        // SAFETY: emuv's library, whose initialisers only set up Rust statics.
        let lib =
            unsafe { Library::new(&path) }.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the types above are cuda.h's prototypes of these functions.
                *unsafe { lib.get($name) }.unwrap_or_else(|e| panic!("{}: {e}", stringify!($name)))
            };
        }
        Cuda {
            init: sym!(b"cuInit"),
            device_get: sym!(b"cuDeviceGet"),
            retain: sym!(b"cuDevicePrimaryCtxRetain"),
            set_current: sym!(b"cuCtxSetCurrent"),
            alloc: sym!(b"cuMemAlloc_v2"),
            free: sym!(b"cuMemFree_v2"),
            info: sym!(b"cuMemGetInfo_v2"),
            htod: sym!(b"cuMemcpyHtoD_v2"),
            dtoh: sym!(b"cuMemcpyDtoH_v2"),
            dtod: sym!(b"cuMemcpyDtoD_v2"),
            memset: sym!(b"cuMemsetD8_v2"),
            range: sym!(b"cuMemGetAddressRange_v2"),
            ptr_attr: sym!(b"cuPointerGetAttribute"),
            stream_create: sym!(b"cuStreamCreate"),
            stream_destroy: sym!(b"cuStreamDestroy_v2"),
            stream_sync: sym!(b"cuStreamSynchronize"),
            stream_query: sym!(b"cuStreamQuery"),
            htod_async: sym!(b"cuMemcpyHtoDAsync_v2"),
            event_create: sym!(b"cuEventCreate"),
            event_record: sym!(b"cuEventRecord"),
            event_destroy: sym!(b"cuEventDestroy_v2"),
            event_sync: sym!(b"cuEventSynchronize"),
            module_get_function: sym!(b"cuModuleGetFunction"),
            gpa: sym!(b"cuGetProcAddress_v2"),
            ctx_create: sym!(b"cuCtxCreate_v2"),
            ctx_destroy: sym!(b"cuCtxDestroy_v2"),
            alloc_host: sym!(b"cuMemAllocHost_v2"),
            free_host: sym!(b"cuMemFreeHost"),
            ctx_sync: sym!(b"cuCtxSynchronize"),
            _lib: lib,
        }
    }

    /// cuInit, and the primary context of device 0 current on this thread.
    fn start(&self) -> *mut c_void {
        let mut dev = -1;
        let mut ctx = std::ptr::null_mut();
        // SAFETY: valid out-pointers.
        unsafe {
            assert_eq!((self.init)(0), 0, "cuInit");
            assert_eq!((self.device_get)(&mut dev, 0), 0, "cuDeviceGet");
            assert_eq!((self.retain)(&mut ctx, dev), 0, "cuDevicePrimaryCtxRetain");
        }
        self.make_current(ctx);
        ctx
    }

    fn make_current(&self, ctx: *mut c_void) {
        // SAFETY: a live context.
        assert_eq!(unsafe { (self.set_current)(ctx) }, 0, "cuCtxSetCurrent");
    }

    fn free_bytes(&self) -> usize {
        let (mut free, mut total) = (0, 0);
        // SAFETY: valid out-pointers.
        assert_eq!(
            unsafe { (self.info)(&mut free, &mut total) },
            0,
            "cuMemGetInfo"
        );
        free
    }
}

/// A million 256-byte allocations: packed 8192 to a 2 MiB chunk, every one distinct and in
/// range, then all freed. Prints `million FREE_DROP_MIB ALLOC_NS FREE_NS`.
fn million() -> ! {
    const COUNT: usize = 1_000_000;
    let cuda = Cuda::load();
    cuda.start();
    let before = cuda.free_bytes();
    let mut ptrs = Vec::with_capacity(COUNT);
    let t = Instant::now();
    for _ in 0..COUNT {
        let mut p = 0u64;
        // SAFETY: a valid out-pointer.
        let rc = unsafe { (cuda.alloc)(&mut p, 256) };
        assert_eq!(rc, 0, "cuMemAlloc(256) #{}", ptrs.len());
        ptrs.push(p);
    }
    let alloc_ns = t.elapsed().as_nanos() / COUNT as u128;
    let drop = (before - cuda.free_bytes()) as u64;
    let mut sorted = ptrs.clone();
    sorted.sort_unstable();
    let distinct = sorted.windows(2).all(|w| w[1] - w[0] >= 512);
    assert!(distinct, "two allocations less than 512 bytes apart");
    // Spot checks: each writes its own bytes.
    for (i, p) in ptrs.iter().step_by(99_991).enumerate() {
        let data = [i as u8; 256];
        let mut back = [0u8; 256];
        // SAFETY: 256 bytes each way, in a 256-byte allocation.
        unsafe {
            assert_eq!((cuda.htod)(*p, data.as_ptr().cast(), 256), 0);
            assert_eq!((cuda.dtoh)(back.as_mut_ptr().cast(), *p, 256), 0);
        }
        assert_eq!(back, data);
    }
    let t = Instant::now();
    for p in &ptrs {
        // SAFETY: a pointer this process allocated.
        assert_eq!(unsafe { (cuda.free)(*p) }, 0, "cuMemFree");
    }
    let free_ns = t.elapsed().as_nanos() / COUNT as u128;
    assert_eq!(cuda.free_bytes(), before, "every chunk given back");
    println!("million {} {alloc_ns} {free_ns}", drop / MIB);
    std::process::exit(0)
}

/// Holds 64 MiB and small allocations, with a stream full of copies still pending, says
/// `ready`, and waits to be killed.
fn hold() -> ! {
    let cuda = Cuda::load();
    cuda.start();
    let mut big = 0u64;
    for size in [64 * MIB as usize, 1000, 300_000] {
        let mut p = 0u64;
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { (cuda.alloc)(&mut p, size) }, 0);
        if big == 0 {
            big = p;
        }
    }
    let host = vec![0x33u8; 64 * MIB as usize].leak();
    let mut stream = std::ptr::null_mut();
    // SAFETY: valid out-pointers; the copies are 64 MiB from a buffer that is never freed into
    // the 64 MiB allocation.
    unsafe {
        assert_eq!((cuda.stream_create)(&mut stream, 0), 0);
        for _ in 0..64 {
            assert_eq!(
                (cuda.htod_async)(big, host.as_ptr().cast(), host.len(), stream),
                0
            );
        }
        // Still running when the parent looks (64 x 64 MiB under TCG).
        assert_eq!((cuda.stream_query)(stream), 600, "the copies are pending");
    }
    println!("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::thread::sleep(std::time::Duration::from_secs(600));
    std::process::exit(0)
}

/// What a fuzzer thread may be answered: success or the documented errors of misuse.
const ALLOWED: &[c_int] = &[0, 1, 2, 201, 400, 500, 600, 801];

/// One thread's share of the fuzz: `ops` calls with hostile arguments on the context `ctx`.
/// Returns the number of calls and the allocations it still holds.
fn fuzz_thread(
    cuda: &Cuda,
    ctx: *mut c_void,
    seed: u64,
    ops: usize,
    shared: &std::sync::Mutex<Vec<usize>>,
) -> Result<usize, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Half the threads in the primary context, half in contexts of their own (destroyed at the
    // end, with whatever they still hold).
    let own_ctx = if rng.random_bool(0.5) {
        let mut c = std::ptr::null_mut();
        // SAFETY: a valid out-pointer.
        let rc = unsafe { (cuda.ctx_create)(&mut c, 0, 0) };
        if rc != 0 {
            return Err(format!("cuCtxCreate: {rc}"));
        }
        Some(c)
    } else {
        cuda.make_current(ctx);
        None
    };
    let mut freed: Vec<u64> = Vec::new();
    let mut live: Vec<(u64, usize)> = Vec::new();
    let mut streams: Vec<*mut c_void> = Vec::new();
    let mut events: Vec<*mut c_void> = Vec::new();
    let mut host = vec![0u8; 3 * MIB as usize];
    let host_ptr = host.as_mut_ptr();
    let names = [
        c"cuMemAlloc",
        c"cuGraphCreate",
        c"",
        c"cuMemAlloc_v2",
        c"cuStreamQuery",
        c"cuLaunchKernel",
    ];
    let mut calls = 0;
    for _ in 0..ops {
        // A hostile device pointer: a live one, one near it (inside, past the end, before),
        // a freed-looking one, or random bits.
        let near = |rng: &mut StdRng, live: &[(u64, usize)]| -> (u64, usize) {
            if !freed.is_empty() && rng.random_bool(0.1) {
                return (freed[rng.random_range(0..freed.len())], 256);
            }
            if live.is_empty() || rng.random_bool(0.2) {
                return (
                    rng.random::<u64>() & 0x7fff_ffff_ffff,
                    rng.random_range(0..4096),
                );
            }
            let (p, size) = live[rng.random_range(0..live.len())];
            let offset = rng.random_range(0..size as u64 + 1024);
            (
                p.wrapping_add(offset)
                    .wrapping_sub(rng.random_range(0..2) * 512),
                size,
            )
        };
        let op = rng.random_range(0..16);
        // SAFETY: every host pointer passed is `host`, with lengths within it; device pointers
        // and handles are the hostile part, which the library must refuse without harm.
        let rc = unsafe {
            match op {
                0 | 1 => {
                    let size = match rng.random_range(0..6) {
                        0 => rng.random_range(1..=512),
                        1 => rng.random_range(1..=MIB as usize),
                        2 => rng.random_range(MIB as usize..4 * MIB as usize),
                        3 => 0,
                        4 => usize::MAX - rng.random_range(0..4096),
                        _ => rng.random_range(1..64),
                    };
                    let mut p = 0u64;
                    let rc = (cuda.alloc)(&mut p, size);
                    if rc == 0 {
                        live.push((p, size));
                    }
                    rc
                }
                2 => {
                    if live.is_empty() || rng.random_bool(0.3) {
                        // Never 512-byte aligned, so never another thread's allocation:
                        // inside one, past its end, or random bits. It must be refused.
                        let p = near(&mut rng, &live).0 | 1;
                        let rc = (cuda.free)(p);
                        if rc != 1 {
                            return Err(format!("cuMemFree({p:#x}) of no allocation: {rc}"));
                        }
                        rc
                    } else {
                        let (p, _) = live.swap_remove(rng.random_range(0..live.len()));
                        let rc = (cuda.free)(p);
                        if rc != 0 {
                            return Err(format!("cuMemFree of a live allocation: {rc}"));
                        }
                        if freed.len() < 64 {
                            freed.push(p);
                        }
                        rc
                    }
                }
                3 => {
                    let (p, _) = near(&mut rng, &live);
                    let len = rng.random_range(0..host.len());
                    (cuda.htod)(p, host_ptr.cast(), len)
                }
                4 => {
                    let (p, _) = near(&mut rng, &live);
                    let len = rng.random_range(0..host.len());
                    (cuda.dtoh)(host_ptr.cast(), p, len)
                }
                5 => {
                    let (a, _) = near(&mut rng, &live);
                    let (b, _) = near(&mut rng, &live);
                    (cuda.dtod)(a, b, rng.random_range(0..2 * MIB as usize))
                }
                6 => {
                    let (p, _) = near(&mut rng, &live);
                    (cuda.memset)(p, rng.random(), rng.random_range(0..2 * MIB as usize))
                }
                7 => {
                    let (p, _) = near(&mut rng, &live);
                    let (mut base, mut size) = (0u64, 0usize);
                    if rng.random_bool(0.2) {
                        (cuda.range)(std::ptr::null_mut(), std::ptr::null_mut(), p)
                    } else {
                        (cuda.range)(&mut base, &mut size, p)
                    }
                }
                8 => {
                    let (p, _) = near(&mut rng, &live);
                    let mut out = [0u64; 4];
                    let rc = (cuda.ptr_attr)(out.as_mut_ptr().cast(), rng.random_range(-2..24), p);
                    if rc == 1 || rc == 0 {
                        0
                    } else {
                        rc
                    }
                }
                9 => {
                    let mut s = std::ptr::null_mut();
                    let rc = (cuda.stream_create)(&mut s, rng.random_range(0..3));
                    if rc == 0 {
                        streams.push(s);
                        if let Ok(mut v) = shared.lock() {
                            v.push(s as usize);
                        }
                    }
                    rc
                }
                10 => {
                    let foreign = shared.lock().map(|v| v.clone()).unwrap_or_default();
                    let s = if streams.is_empty() || rng.random_bool(0.2) {
                        (rng.random::<u64>() as usize & !0xf) as *mut c_void
                    } else if !foreign.is_empty() && rng.random_bool(0.2) {
                        // Another thread's stream, perhaps of another context, perhaps gone.
                        foreign[rng.random_range(0..foreign.len())] as *mut c_void
                    } else {
                        streams[rng.random_range(0..streams.len())]
                    };
                    let (p, _) = near(&mut rng, &live);
                    match rng.random_range(0..3) {
                        0 => (cuda.htod_async)(p, host_ptr.cast(), rng.random_range(0..4096), s),
                        1 => (cuda.stream_query)(s),
                        _ => (cuda.stream_sync)(s),
                    }
                }
                11 => {
                    if let Some(s) = (!streams.is_empty())
                        .then(|| streams.swap_remove(rng.random_range(0..streams.len())))
                    {
                        (cuda.stream_destroy)(s)
                    } else {
                        (cuda.stream_destroy)((rng.random::<u64>() as usize) as *mut c_void)
                    }
                }
                12 => {
                    let mut e = std::ptr::null_mut();
                    let rc = (cuda.event_create)(&mut e, rng.random_range(0..4));
                    if rc == 0 {
                        events.push(e);
                        let s = streams.first().copied().unwrap_or(std::ptr::null_mut());
                        let rc2 = (cuda.event_record)(e, s);
                        if !ALLOWED.contains(&rc2) {
                            return Err(format!("cuEventRecord: {rc2}"));
                        }
                    }
                    rc
                }
                13 => {
                    let e = if events.is_empty() || rng.random_bool(0.3) {
                        (rng.random::<u64>() as usize) as *mut c_void
                    } else {
                        events.swap_remove(rng.random_range(0..events.len()))
                    };
                    let rc = (cuda.event_sync)(e);
                    let rc2 = (cuda.event_destroy)(e);
                    if !ALLOWED.contains(&rc2) {
                        return Err(format!("cuEventDestroy: {rc2}"));
                    }
                    rc
                }
                14 => {
                    let mut f = std::ptr::null_mut();
                    let module = (rng.random::<u64>() as usize) as *mut c_void;
                    (cuda.module_get_function)(&mut f, module, c"kernel".as_ptr())
                }
                _ => {
                    let name = names[rng.random_range(0..names.len())];
                    let mut pfn = std::ptr::null_mut();
                    let mut status = 0;
                    let version = rng.random_range(-1..14000);
                    let flags = rng.random_range(0..4);
                    (cuda.gpa)(name.as_ptr(), &mut pfn, version, flags, &mut status)
                }
            }
        };
        calls += 1;
        if !ALLOWED.contains(&rc) {
            return Err(format!("op {op} answered {rc}"));
        }
    }
    // SAFETY: handles this thread made, pointers it allocated.
    unsafe {
        for s in streams {
            (cuda.stream_destroy)(s);
        }
        for e in events {
            (cuda.event_destroy)(e);
        }
        for (p, _) in live {
            if (cuda.free)(p) != 0 {
                return Err("freeing a live allocation at the end".into());
            }
        }
        let mut pinned = std::ptr::null_mut();
        if (cuda.alloc_host)(&mut pinned, 4096) == 0 {
            (cuda.free_host)(pinned);
        }
        (cuda.ctx_sync)();
        if let Some(c) = own_ctx {
            let rc = (cuda.ctx_destroy)(c);
            if rc != 0 {
                return Err(format!("cuCtxDestroy: {rc}"));
            }
        }
    }
    drop(host);
    Ok(calls)
}

/// The fuzzer: `threads` threads, `ops` calls in all. Prints `fuzz CALLS`; the card must be
/// as it was when every thread has freed what it held.
fn fuzz(seed: u64, ops: usize, threads: usize) -> ! {
    let cuda = Cuda::load();
    let ctx = cuda.start();
    let before = cuda.free_bytes();
    let ctx_addr = ctx as usize;
    let shared = std::sync::Mutex::new(Vec::new());
    let results: Vec<Result<usize, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (cuda, shared) = (&cuda, &shared);
                s.spawn(move || {
                    fuzz_thread(
                        cuda,
                        ctx_addr as *mut c_void,
                        seed.wrapping_add(t as u64),
                        ops / threads,
                        shared,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let mut calls = 0;
    for r in results {
        match r {
            Ok(n) => calls += n,
            Err(e) => {
                println!("fuzz failed: {e}");
                std::process::exit(1)
            }
        }
    }
    let after = cuda.free_bytes();
    if after != before {
        println!("fuzz failed: free {before} before, {after} after");
        std::process::exit(1)
    }
    println!("fuzz {calls}");
    std::process::exit(0)
}

/// `make bench`'s CUDA figures (emuv_bench runs this with the module loaded): one line per
/// figure, `NAME VALUE`, each the median of per-round ratios against the CPU's own baseline.
fn bench() -> ! {
    const ROUNDS: usize = 7;
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let cuda = Cuda::load();
    cuda.start();
    let len = 256 * MIB as usize;
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    let mut dev = 0u64;
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { (cuda.alloc)(&mut dev, len) }, 0);
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    // SAFETY (all copies below): `len` bytes each way, in buffers and an allocation of `len`.
    let mut htod = || assert_eq!(unsafe { (cuda.htod)(dev, src.as_ptr().cast(), len) }, 0);
    htod();
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let base = time(&mut || unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), len)
        });
        ratios.push(base / time(&mut htod));
    }
    println!("cuda_htod_256m_vs_memcpy {}", median(ratios));
    let dtoh =
        |d: &mut Vec<u8>| assert_eq!(unsafe { (cuda.dtoh)(d.as_mut_ptr().cast(), dev, len) }, 0);
    let mut ratios = Vec::new();
    for _ in 0..ROUNDS {
        let base = time(&mut || unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), len)
        });
        ratios.push(base / time(&mut || dtoh(&mut dst)));
    }
    assert!(
        dst.iter().all(|b| *b == 0x5a),
        "DtoH read back what HtoD wrote"
    );
    println!("cuda_dtoh_256m_vs_memcpy {}", median(ratios));
    // SAFETY: freeing what was allocated above.
    unsafe { (cuda.free)(dev) };

    // Allocation: a batch of allocations, then their frees, per operation, against the C
    // library's malloc/free (small sizes) and anonymous mmap/munmap (2 MiB).
    const BATCH: usize = 1000;
    for (name, size, baseline) in [
        ("cuda_alloc_free_256b_vs_malloc", 256usize, "malloc"),
        ("cuda_alloc_free_64k_vs_malloc", 64 << 10, "malloc"),
        ("cuda_alloc_free_2m_vs_mmap", 2 << 20, "mmap"),
    ] {
        let batch = if size >= 2 << 20 { 100 } else { BATCH };
        let mut ratios = Vec::new();
        for _ in 0..ROUNDS + 1 {
            let emuv = time(&mut || {
                let mut ptrs = vec![0u64; batch];
                for p in ptrs.iter_mut() {
                    // SAFETY: a valid out-pointer.
                    assert_eq!(unsafe { (cuda.alloc)(p, size) }, 0);
                }
                for p in &ptrs {
                    // SAFETY: freeing what was allocated.
                    assert_eq!(unsafe { (cuda.free)(*p) }, 0);
                }
            });
            let base = time(&mut || {
                let mut ptrs = vec![std::ptr::null_mut::<c_void>(); batch];
                for p in ptrs.iter_mut() {
                    *p = if baseline == "malloc" {
                        // SAFETY: plain malloc; freed below.
                        unsafe { nix::libc::malloc(size) }
                    } else {
                        // SAFETY: a fresh private anonymous mapping; unmapped below.
                        unsafe {
                            nix::libc::mmap(
                                std::ptr::null_mut(),
                                size,
                                nix::libc::PROT_READ | nix::libc::PROT_WRITE,
                                nix::libc::MAP_PRIVATE | nix::libc::MAP_ANONYMOUS,
                                -1,
                                0,
                            )
                        }
                    };
                    assert!(!p.is_null());
                }
                for p in &ptrs {
                    // SAFETY: releasing what was made above.
                    unsafe {
                        if baseline == "malloc" {
                            nix::libc::free(*p)
                        } else {
                            nix::libc::munmap(*p, size);
                        }
                    }
                }
            });
            ratios.push(emuv / base);
        }
        ratios.remove(0);
        println!("{name} {}", median(ratios));
    }
    let calls = 2000;
    let t = Instant::now();
    for _ in 0..calls {
        cuda.free_bytes();
    }
    println!(
        "cuda_meminfo_calls_per_s {}",
        calls as f64 / t.elapsed().as_secs_f64()
    );
    std::process::exit(0)
}

/// Runs this program in `mode` and returns its last stdout line.
fn child(mode: &[&str]) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(err("own path"))?;
    let output = Command::new(exe)
        .args(mode)
        .output()
        .map_err(err("run child"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    check(output.status.success(), || {
        format!(
            "{mode:?}: {}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    Ok(stdout.lines().last().unwrap_or("").to_owned())
}

fn used_bytes(card: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/sys/class/emuv/{card}/used_bytes"))
        .map_err(err("used_bytes"))?;
    text.trim().parse().map_err(err("used_bytes"))
}

/// A child killed (and reaped) however the test ends, so that the module can be unloaded.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn killed_process_is_cleaned_up() -> TestResult {
    let before = used_bytes("emuv")?;
    let exe = std::env::current_exe().map_err(err("own path"))?;
    let mut holder = Killed(
        Command::new(exe)
            .arg("--hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(err("spawn holder"))?,
    );
    let mut line = String::new();
    BufReader::new(holder.0.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(err("read holder"))?;
    check_eq("holder", line.trim(), "ready")?;
    let held = used_bytes("emuv")? - before;
    // 64 MiB, one 2 MiB chunk for both small allocations.
    check_eq("bytes the holder's CUDA allocations took", held, 66 * MIB)?;
    // The kernel's process list (what emuv-smi, NVML and `cat /dev/emuv` show) has it.
    let device = emuv::Device::open_read_only().map_err(err("open /dev/emuv"))?;
    let listed = device.processes().map_err(err("EMUV_IOCTL_PROCESSES"))?;
    let pid = holder.0.id();
    let entry = listed.iter().find(|p| p.pid == Some(pid));
    check_eq(
        "the holder's bytes in the process list",
        entry.map(|p| p.bytes),
        Some(66 * MIB),
    )?;
    drop(device);
    holder.0.kill().map_err(err("kill"))?;
    holder.0.wait().map_err(err("wait"))?;
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while used_bytes("emuv")? != before && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check_eq("used bytes after SIGKILL", used_bytes("emuv")?, before)
}

/// Card `index`'s UUID, as emuv's NVML gives it (`emuv-smi -L`).
fn uuid_of(index: usize) -> Result<String, String> {
    let output = Command::new(target_dir().join("release/emuv-smi"))
        .arg("-L")
        .output()
        .map_err(err("emuv-smi -L"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .nth(index)
        .and_then(|l| l.split("(UUID: ").nth(1))
        .map(|u| u.trim_end_matches(')').to_owned())
        .ok_or_else(|| format!("emuv-smi -L: {text}"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--million") => million(),
        Some("--hold") => hold(),
        Some("--bench") => bench(),
        Some("--fuzz") => {
            let num = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
            fuzz(num(2, 1), num(3, 100_000) as usize, num(4, 4) as usize)
        }
        _ => {}
    }
    let seed: u64 = std::env::var("EMUV_CUDA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let ops: u64 = std::env::var("EMUV_CUDA_FUZZ_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    type Test = Box<dyn FnOnce() -> TestResult>;
    let tests: Vec<(&str, Test)> = vec![
        (
            "cuda-python: the driver API answers as NVIDIA's driver 580 did",
            Box::new(|| module::with_loaded(ONE_CARD, || python_suite(&["driver"], &[], 110))),
        ),
        (
            "numba-cuda: device arrays on the emulated card, a kernel refused",
            Box::new(|| {
                module::with_loaded(ONE_CARD, || {
                    let stderr = python_suite_stderr(&["numba"], &[], 9)?;
                    // Said once, whatever the number of launches.
                    let said = stderr.matches("emulated cards run no kernels").count();
                    check_eq("times emuv said why the launch failed", said, 1)
                })
            }),
        ),
        (
            "a process killed holding CUDA memory: the kernel frees all of it",
            Box::new(|| module::with_loaded(ONE_CARD, killed_process_is_cleaned_up)),
        ),
        (
            "a million 256-byte allocations: packed, distinct, all given back",
            Box::new(|| {
                module::with_loaded(ONE_CARD, || {
                    let line = child(&["--million"])?;
                    let fields: Vec<u64> = line
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|f| f.parse().ok())
                        .collect();
                    tap_note(&format!("1,000,000 x cuMemAlloc(256): {line}"));
                    // One 512-byte step each, 4096 to a 2 MiB chunk: 245 chunks (244.1 rounded up).
                    check_eq(
                        "MiB a million 256-byte allocations take",
                        fields.first().copied(),
                        Some(490),
                    )
                })
            }),
        ),
        (
            "fuzz: hostile calls from 4 threads, no crash, no leak",
            Box::new(move || {
                tap_note(&format!(
                    "fuzz seed {seed} (EMUV_CUDA_FUZZ_SEED replays), {ops} calls on 4 threads"
                ));
                module::with_loaded(FUZZ_CARD, || {
                    let line = child(&["--fuzz", &seed.to_string(), &ops.to_string(), "4"])?;
                    check(line.starts_with("fuzz "), || line.clone())
                })
            }),
        ),
        (
            "four cards, in NVML's order",
            Box::new(|| {
                module::with_loaded(FOUR_CARDS, || {
                    python_suite(&["cards", "4", "0,1,2,3"], &[], 9)
                })
            }),
        ),
        (
            "CUDA_VISIBLE_DEVICES=2,0 selects and orders them",
            Box::new(|| {
                module::with_loaded(FOUR_CARDS, || {
                    python_suite(
                        &["cards", "2", "2,0"],
                        &[("CUDA_VISIBLE_DEVICES", "2,0")],
                        7,
                    )
                })
            }),
        ),
        (
            "CUDA_VISIBLE_DEVICES by UUID prefix",
            Box::new(|| {
                module::with_loaded(FOUR_CARDS, || {
                    let uuid = uuid_of(3)?;
                    let prefix = &uuid[..uuid.len().min(12)];
                    let visible = format!("{prefix},1");
                    python_suite(
                        &["cards", "2", "3,1"],
                        &[("CUDA_VISIBLE_DEVICES", &visible)],
                        7,
                    )
                })
            }),
        ),
        (
            "CUDA_VISIBLE_DEVICES stops at an invalid entry",
            Box::new(|| {
                module::with_loaded(FOUR_CARDS, || {
                    python_suite(
                        &["cards", "1", "1"],
                        &[("CUDA_VISIBLE_DEVICES", "1,7,0")],
                        4,
                    )
                })
            }),
        ),
    ];
    // EMUV_CUDA_ONLY=word runs only the tests whose names contain it (the others are skipped).
    let only = std::env::var("EMUV_CUDA_ONLY").unwrap_or_default();
    let mut tap = Tap::new(tests.len());
    for (name, test) in tests {
        if name.contains(only.as_str()) {
            tap.test(name, test());
        } else {
            tap.skip(name, "not in EMUV_CUDA_ONLY");
        }
    }
    tap.finish()
}

fn tap_note(msg: &str) {
    println!("# {msg}");
}
