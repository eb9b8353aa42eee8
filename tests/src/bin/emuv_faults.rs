// SPDX-License-Identifier: GPL-2.0
//! Allocation failures injected into every path emuv takes: for N = 1, 2, ... the Nth slab or
//! page allocation of load, open, allocate, map-and-touch, free, close and unload fails
//! (`fail-nth`), until a run sees no failure. Each failure must surface as a clean error
//! (ENOMEM from the ioctl, a failed insmod, SIGBUS on a lazy page that cannot be had), with
//! the pool's counters exact afterwards and nothing left behind. Then random failures (task
//! filter) during allocate/map/touch/free cycles.

use emuv::{Device, Tier};
use emuv_tests::{
    attr_u64, err,
    fault::{self, FailNth},
    kmsg::Kmsg,
    module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    sys::{
        signal::{signal, SigHandler, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, read, ForkResult},
};
use std::{collections::BTreeMap, fs::File, os::fd::AsFd};

const MIB: u64 = 1 << 20;
const PAGE: usize = 4096;
/// No path of emuv's needs more fault points than this; a sweep that reaches it fails.
const MAX_N: u32 = 2000;
const LAZY: &str = "physical_vram_mb=64 virtual_vram_mb=32";
const EAGER: &str = "lazy_allocation=0 physical_vram_mb=16 virtual_vram_mb=8";

type TestResult = Result<(), String>;

/// The pool is back to nothing handed out and, for a lazy pool, nothing resident.
fn pool_is_empty(lazy: bool) -> TestResult {
    // Freed eager memory is free once the scrubber has zeroed it.
    emuv_tests::settle_scrubbing()?;
    check_eq("used_bytes", attr_u64("used_bytes")?, 0)?;
    check_eq(
        "free_bytes",
        attr_u64("free_bytes")?,
        attr_u64("total_vram_bytes")?,
    )?;
    if lazy {
        check_eq("resident_bytes", attr_u64("resident_bytes")?, 0)?;
    }
    Ok(())
}

/// What one sweep saw: how many runs had a failure injected, and which outcomes they gave.
#[derive(Default)]
struct Sweep {
    injected: u32,
    outcomes: BTreeMap<String, u32>,
}

impl Sweep {
    fn note(&mut self, outcome: impl Into<String>) {
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }

    fn summary(&self) -> String {
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} x{v}"))
            .collect();
        format!(
            "{} failures injected; outcomes: {}",
            self.injected,
            outcomes.join(", ")
        )
    }
}

/// Runs `step(n)` with the Nth fault point armed for N = 1, 2, ... until a run injects
/// nothing (the path has fewer than N points). `step` returns its outcome's name, or an error
/// if the failure was not clean.
fn sweep(
    tap: &Tap,
    path: &str,
    mut step: impl FnMut(&FailNth, u32) -> Result<(String, bool), String>,
) -> TestResult {
    let mut s = Sweep::default();
    for n in 1..=MAX_N {
        let fail_nth = FailNth::open().map_err(err("fail-nth"))?;
        let (outcome, injected) = step(&fail_nth, n).map_err(|e| format!("N={n}: {e}"))?;
        if !injected {
            check(outcome == "ok", || {
                format!("N={n}: no failure injected, yet {outcome}")
            })?;
            tap.note(format!("{path}: {n} runs, {}", s.summary()));
            return Ok(());
        }
        s.injected += 1;
        s.note(outcome);
    }
    Err(format!("{path}: still injecting at N={MAX_N}"))
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

/// insmod with its Nth allocation failed: it loads, or fails and leaves nothing behind.
fn load(tap: &Tap, params: &str) -> TestResult {
    let file = module::open_module("emuv");
    sweep(tap, &format!("insmod {params}"), |fail, n| {
        fail.arm(n).map_err(err("arm"))?;
        let loaded = module::load_file(&file, params);
        let injected = fail.disarm().map_err(err("disarm"))?;
        match loaded {
            Ok(()) => {
                pool_is_empty(!params.contains("lazy_allocation=0"))?;
                module::unload().map_err(err("rmmod"))?;
                Ok(("ok".into(), injected))
            }
            Err(e) => {
                check(!module::is_loaded(), || {
                    format!("insmod failed ({e}) but emuv is loaded")
                })?;
                check(!std::path::Path::new("/dev/emuv").exists(), || {
                    "a stale /dev/emuv".into()
                })?;
                Ok((format!("insmod {}", errno_name(e)), injected))
            }
        }
    })
}

/// open, allocate, free, close with the Nth allocation failed in one of them.
fn allocate(tap: &Tap, params: &str) -> TestResult {
    let lazy = !params.contains("lazy_allocation=0");
    module::with_loaded(params, || {
        for (what, op) in [
            ("open", 0),
            ("ioctl ALLOC", 1),
            ("ioctl FREE", 2),
            ("close", 3),
        ] {
            sweep(tap, &format!("{what} ({params})"), |fail, n| {
                let mut outcome = "ok".to_owned();
                let mut injected = false;
                // Only the operation under test runs armed.
                let mut armed = |phase: u32, on: bool| -> Result<(), String> {
                    match (phase == op, on) {
                        (true, true) => fail.arm(n).map_err(err("arm")),
                        (true, false) => {
                            injected = fail.disarm().map_err(err("disarm"))?;
                            Ok(())
                        }
                        _ => Ok(()),
                    }
                };
                armed(0, true)?;
                let device = Device::open();
                armed(0, false)?;
                let device = match device {
                    Ok(d) => d,
                    Err(e) => return Ok((format!("open {}", errno_name(e)), injected)),
                };
                armed(1, true)?;
                let allocation = device.alloc(4 * MIB, Tier::Any);
                armed(1, false)?;
                match allocation {
                    Ok(a) => {
                        check_eq("used after alloc", attr_u64("used_bytes")?, 4 * MIB)?;
                        armed(2, true)?;
                        let freed = device.free(a.handle);
                        armed(2, false)?;
                        if let Err(e) = freed {
                            outcome = format!("free {}", errno_name(e));
                        }
                    }
                    Err(Errno::ENOMEM) => outcome = "alloc ENOMEM".into(),
                    Err(e) => return Err(format!("alloc failed with {e}, not ENOMEM")),
                }
                armed(3, true)?;
                drop(device);
                armed(3, false)?;
                pool_is_empty(lazy)?;
                Ok((outcome, injected))
            })?;
        }
        Ok(())
    })
}

/// In a child: allocate 4 MiB and map it (unarmed), then touch 64 pages with the Nth
/// allocation failed, from the 2 MiB-aligned address inside the mapping: no other mapping can
/// have given that range a page table, so the first fault needs one. A lazy page that cannot be
/// had, or the page table emuv's insert allocates, is SIGBUS (never `VM_FAULT_OOM`, which the
/// kernel reports as leaked and retries); the child's death frees everything.
///
/// One `VM_FAULT_OOM` is the kernel's own: `__do_fault` preallocates a page table before it
/// calls emuv's handler (for every file mapping), and fails the fault with `VM_FAULT_OOM` when
/// it cannot. emuv's insert allocates its own table after that (the preallocated one is only
/// installed for handlers that return the page): before the fix, that failure leaked too.
fn map_and_touch(tap: &Tap, params: &str) -> TestResult {
    let lazy = !params.contains("lazy_allocation=0");
    let mut kmsg = Kmsg::new();
    let mut oom_at = Vec::new();
    let result = module::with_loaded(params, || {
        sweep(tap, &format!("mmap and touch ({params})"), |_, n| {
            // SAFETY: the child only makes system calls and exits.
            match unsafe { fork() }.map_err(err("fork"))? {
                ForkResult::Child => {
                    let code = (|| -> Result<i32, String> {
                        sigbus_kills()?;
                        let fail = FailNth::open().map_err(err("fail-nth"))?;
                        let device = Device::open().map_err(err("open"))?;
                        let a = device.alloc(4 * MIB, Tier::Any).map_err(err("alloc"))?;
                        fail.arm(n).map_err(err("arm"))?;
                        let mapped = match device.map(&a) {
                            Ok(mut m) => {
                                let start = (m.as_ptr() as usize).next_multiple_of(2 << 20)
                                    - m.as_ptr() as usize;
                                let pages = m.as_mut_slice()[start..].chunks_mut(PAGE);
                                for page in pages.take(64) {
                                    page[0] = 0xe7;
                                }
                                true
                            }
                            Err(_) => false,
                        };
                        let injected = fail.disarm().map_err(err("disarm"))?;
                        // 0: all touched, nothing injected; 10: injected but all touched (the
                        // failure hit something emuv retried or did not need); 11: mmap failed;
                        // 12: mmap failed with nothing injected.
                        Ok(match (mapped, injected) {
                            (true, false) => 0,
                            (true, true) => 10,
                            (false, true) => 11,
                            (false, false) => 12,
                        })
                    })();
                    exit_child(code)
                }
                ForkResult::Parent { child } => {
                    let status = waitpid(child, None).map_err(err("waitpid"))?;
                    pool_is_empty(lazy)?;
                    if kmsg.read_new().iter().any(|l| l.contains("VM_FAULT_OOM")) {
                        oom_at.push(n);
                    }
                    match status {
                        WaitStatus::Exited(_, 0) => Ok(("ok".into(), false)),
                        WaitStatus::Exited(_, 10) => Ok(("touched all".into(), true)),
                        WaitStatus::Exited(_, 11) => Ok(("mmap failed".into(), true)),
                        WaitStatus::Signaled(_, Signal::SIGBUS, _) => Ok(("SIGBUS".into(), true)),
                        other => Err(format!("the child ended with {other:?}")),
                    }
                }
            }
        })
    });
    result?;
    check(oom_at.len() <= 1, || {
        format!(
            "faults returned VM_FAULT_OOM at N = {oom_at:?}: only the kernel's own page-table \
             preallocation may"
        )
    })
}

/// Ends a forked child with `code`, or 1 and the reason on a `#` line.
fn exit_child(code: Result<i32, String>) -> ! {
    std::process::exit(code.unwrap_or_else(|e| {
        println!("# child: {e}");
        1
    }))
}

/// Lets a `SIGBUS` kill this process, as it would a C program. Rust's runtime handles it to
/// detect stack overflows, and for any other address restores the default action and returns,
/// so the access runs again; with a one-shot injected failure that second try succeeds and the
/// `SIGBUS` would never be seen.
fn sigbus_kills() -> TestResult {
    // SAFETY: the default action, no handler code runs.
    unsafe { signal(Signal::SIGBUS, SigHandler::SigDfl) }
        .map(drop)
        .map_err(err("signal(SIGBUS, SIG_DFL)"))
}

/// rmmod with its Nth allocation failed: it unloads.
fn unload(tap: &Tap) -> TestResult {
    sweep(tap, "rmmod", |fail, n| {
        module::load(LAZY).map_err(err("insmod"))?;
        fail.arm(n).map_err(err("arm"))?;
        let result = module::unload();
        let injected = fail.disarm().map_err(err("disarm"))?;
        match result {
            Ok(()) => Ok(("ok".into(), injected)),
            Err(e) => {
                module::unload().map_err(err("second rmmod"))?;
                Ok((format!("rmmod {}", errno_name(e)), injected))
            }
        }
    })
}

/// What the random-failure rounds met, besides success.
#[derive(Default)]
struct Refusals {
    alloc_enomem: u32,
    mmap_failed: u32,
    /// The kernel's write into a lazy page that could not be had: the SIGBUS a program gets,
    /// seen as EFAULT because the kernel made the access.
    touch_efault: u32,
    munmap_enomem: u32,
    /// FREE that could not shrink the file's handle tree (it allocates too): nothing freed,
    /// nothing lost, retried.
    free_enomem: u32,
}

/// One allocate, map, touch, unmap, free round; every failure must be one of the clean ones.
fn random_round(
    device: &Device,
    zero: &File,
    bytes: u64,
    seen: &mut Refusals,
) -> Result<(), Errno> {
    let a = match device.alloc(bytes, Tier::Any) {
        Ok(a) => a,
        Err(Errno::ENOMEM) => {
            seen.alloc_enomem += 1;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match device.map(&a) {
        Ok(mut m) => {
            // Touched by the kernel (a read from /dev/zero into the page), so that a page that
            // cannot be had is EFAULT here rather than a SIGBUS that would end the rounds.
            match read(zero.as_fd(), &mut m.as_mut_slice()[..1]) {
                Ok(_) => {}
                Err(Errno::EFAULT) => seen.touch_efault += 1,
                Err(e) => return Err(e),
            }
            // munmap allocates too; a failed one leaves the mapping (and FREE would be EBUSY).
            let mut tries = 0;
            while let Err((e, still_mapped)) = m.unmap() {
                tries += 1;
                if e != Errno::ENOMEM || tries == 100 {
                    return Err(e);
                }
                seen.munmap_enomem += 1;
                m = still_mapped;
            }
        }
        Err(Errno::ENOMEM) => seen.mmap_failed += 1,
        Err(e) => return Err(e),
    }
    for _ in 0..100 {
        match device.free(a.handle) {
            Err(Errno::ENOMEM) => seen.free_enomem += 1,
            other => return other,
        }
    }
    Err(Errno::ENOMEM)
}

/// Random failures (5 % of this child's allocations, task filter) while it allocates, maps,
/// touches and frees: every round ends cleanly, and the pool is empty when the child is gone.
fn random_failures() -> TestResult {
    const ROUNDS: u32 = 300;
    module::with_loaded(LAZY, || {
        fault::configure(5, true).map_err(err("configure"))?;
        // SAFETY: the child only makes system calls and exits.
        let result = match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                // While marked, the child makes emuv's system calls only: no output, no heap
                // growth, code already paged in by an unmarked warm-up round.
                let run = |device: &Device, zero: &File, rounds: u32, seen: &mut Refusals| {
                    (0..rounds).try_for_each(|round| {
                        let bytes = (u64::from(round % 7) + 1) * 16 * PAGE as u64;
                        random_round(device, zero, bytes, seen)
                            .map_err(|e| format!("round {round}: {e}"))
                    })
                };
                let code = (|| -> Result<i32, String> {
                    sigbus_kills()?;
                    let device = Device::open().map_err(err("open"))?;
                    let zero = File::open("/dev/zero").map_err(err("/dev/zero"))?;
                    let mark = fault::MakeItFail::open().map_err(err("make-it-fail"))?;
                    run(&device, &zero, 7, &mut Refusals::default())?;
                    let mut seen = Refusals::default();
                    mark.set(true).map_err(err("mark"))?;
                    let result = run(&device, &zero, ROUNDS, &mut seen);
                    mark.set(false).map_err(err("unmark"))?;
                    result?;
                    println!(
                        "# random failures: {ROUNDS} rounds; refused: ALLOC {} (ENOMEM), \
                         mmap {}, touch {} (EFAULT), munmap {} (ENOMEM, retried), FREE {} \
                         (ENOMEM, retried)",
                        seen.alloc_enomem,
                        seen.mmap_failed,
                        seen.touch_efault,
                        seen.munmap_enomem,
                        seen.free_enomem
                    );
                    Ok(0)
                })();
                exit_child(code)
            }
            ForkResult::Parent { child } => waitpid(child, None).map_err(err("waitpid")),
        };
        fault::configure(0, false).map_err(err("configure"))?;
        match result? {
            WaitStatus::Exited(_, 0) => Ok(()),
            other => Err(format!("the child ended with {other:?}")),
        }?;
        pool_is_empty(true)
    })
}

fn main() {
    let mut tap = Tap::new(8);
    if !fault::available() {
        for name in [
            "load",
            "lazy",
            "eager",
            "touch lazy",
            "touch eager",
            "unload",
            "random",
            "clean",
        ] {
            tap.skip(name, "no fault injection in this kernel");
        }
        tap.finish()
    }
    let ready = fault::configure(0, false);
    tap.test(
        "fault injection configured",
        ready.map_err(|e| e.to_string()),
    );
    tap.test(
        "insmod: every failure is a failed insmod that leaves nothing",
        load(&tap, LAZY).and_then(|()| load(&tap, EAGER)),
    );
    tap.test(
        "open/alloc/free/close on a lazy pool: ENOMEM and exact counters",
        allocate(&tap, LAZY),
    );
    tap.test(
        "open/alloc/free/close on an eager pool: ENOMEM and exact counters",
        allocate(&tap, EAGER),
    );
    tap.test(
        "map and touch, lazy: SIGBUS or success, and everything freed",
        map_and_touch(&tap, LAZY),
    );
    tap.test(
        "map and touch, eager: success or a failed mmap, and everything freed",
        map_and_touch(&tap, EAGER),
    );
    tap.test("rmmod: unloads whatever fails", unload(&tap));
    tap.test(
        "random failures (task filter) while allocating, mapping and freeing",
        random_failures(),
    );
    tap.finish()
}
