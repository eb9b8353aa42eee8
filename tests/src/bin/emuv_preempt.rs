// SPDX-License-Identifier: GPL-2.0
//! Long loops stay preemptible and killable: a 4 GiB eager pool is reserved, mapped (every page
//! prefaulted by the first touch), touched, unmapped, freed and scrubbed (every page checked and
//! zeroed) with no soft lockup or RCU stall report (the runner fails the run on either), and a
//! `SIGKILL` ends the first touch of a 4 GiB mapping while it prefaults instead of after. Needs 5.5 GiB in the VM: `make check-debug`
//! gives it that and requires the test (`EMUV_PREEMPT_REQUIRED`); smaller VMs skip it.

use emuv::{Device, Tier};
use emuv_tests::{
    err, meminfo, module, settle_scrubbing,
    tap::{check, check_eq, Tap},
};
use nix::{
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, ForkResult},
};
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;
const PARAMS: &str = "lazy_allocation=0 physical_vram_gb=4 virtual_vram_gb=0";

/// How long the long loops take for 4 GiB on this kernel.
#[derive(Clone, Copy)]
struct Timings {
    /// `mmap` and the first touch, which prefaults every page.
    prefault: Duration,
    /// FREE and the scrubber's zeroing of every page.
    free: Duration,
}

/// Maps all 4 GiB (prefaulted by the first touch), touches a page per MiB, unmaps, frees and
/// waits for the scrubber.
fn map_and_free(dev: &Device) -> Result<Timings, String> {
    let a = dev.alloc(4 * GIB, Tier::Any).map_err(err("alloc 4 GiB"))?;
    let start = Instant::now();
    let mut m = dev.map(&a).map_err(err("mmap 4 GiB"))?;
    m.as_mut_slice()[0] = 0x5a;
    let prefault = start.elapsed();
    for mib in m.as_mut_slice().chunks_mut(1 << 20) {
        mib[0] = 0x5a;
    }
    m.unmap().map_err(|(e, _)| format!("munmap: {e}"))?;
    let start = Instant::now();
    dev.free(a.handle).map_err(err("free 4 GiB"))?;
    settle_scrubbing()?;
    Ok(Timings {
        prefault,
        free: start.elapsed(),
    })
}

fn big_eager_pool(tap: &Tap) -> Result<Timings, String> {
    module::with_loaded(PARAMS, || {
        let dev = Device::open().map_err(err("open"))?;
        let start = Instant::now();
        let timings = map_and_free(&dev)?;
        tap.note(format!(
            "4 GiB eager: mmap + first touch (prefault) {:.1} s, free + scrubbing {:.1} s, map + touch + unmap + free {:.1} s",
            timings.prefault.as_secs_f64(),
            timings.free.as_secs_f64(),
            start.elapsed().as_secs_f64()
        ));
        // Freed pages were zeroed: a new allocation reads zero where the old one wrote.
        let a = dev.alloc(4 * GIB, Tier::Any).map_err(err("alloc again"))?;
        let m = dev.map(&a).map_err(err("mmap again"))?;
        check(
            m.as_slice().iter().step_by(1 << 20).all(|&b| b == 0),
            || "freed memory was not zeroed".into(),
        )?;
        Ok(timings)
    })
}

/// A child maps 4 GiB, touches it and is killed a quarter into the prefault. Dying means
/// unmapping what was prefaulted and, as the file closes, freeing all 4 GiB: a prefault that
/// ignored the signal would first finish, so its child could not be gone before the rest of the
/// prefault.
fn sigkill_during_prefault(tap: &Tap, full: Timings) -> Result<(), String> {
    module::with_loaded(PARAMS, || {
        // SAFETY: the child only makes system calls until it is killed.
        match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                let _ = Device::open().and_then(|dev| {
                    let a = dev.alloc(4 * GIB, Tier::Any)?;
                    let mut m = dev.map(&a)?;
                    m.as_mut_slice()[0] = 1;
                    std::thread::sleep(Duration::from_secs(3600));
                    drop(m);
                    Ok(())
                });
                std::process::exit(0)
            }
            ForkResult::Parent { child } => {
                std::thread::sleep(full.prefault / 4);
                let killed = Instant::now();
                kill(child, Signal::SIGKILL).map_err(err("kill"))?;
                let status = waitpid(child, None).map_err(err("waitpid"))?;
                let took = killed.elapsed();
                tap.note(format!(
                    "SIGKILL a quarter into a {:.1} s prefault: gone after {:.1} s (free and scrubbing take {:.1} s)",
                    full.prefault.as_secs_f64(),
                    took.as_secs_f64(),
                    full.free.as_secs_f64()
                ));
                check_eq(
                    "status",
                    status,
                    WaitStatus::Signaled(child, Signal::SIGKILL, false),
                )?;
                let finishing_first = full.prefault * 3 / 4;
                check(took < finishing_first, || {
                    format!(
                        "the child took {took:?} to die: no less than finishing the prefault ({finishing_first:?})"
                    )
                })
            }
        }
    })
}

fn main() {
    let mut tap = Tap::new(2);
    if module::is_loaded() {
        let _ = module::unload();
    }
    let total = meminfo("MemTotal");
    if total < 5 * GIB + GIB / 2 {
        let why = format!("needs 5632 MiB in the VM, this one has {} MiB", total >> 20);
        // `make check-debug` sizes its VM for this test: a skip there would hide it.
        if std::env::var_os("EMUV_PREEMPT_REQUIRED").is_some() {
            tap.test(
                "a 4 GiB eager pool: map, touch, unmap and free stay preemptible",
                Err(why.clone()),
            );
            tap.test(
                "SIGKILL ends the first touch of a 4 GiB mapping during its prefault",
                Err(why),
            );
            tap.finish()
        }
        tap.skip(
            "a 4 GiB eager pool: map, touch, unmap and free stay preemptible",
            &why,
        );
        tap.skip(
            "SIGKILL ends the first touch of a 4 GiB mapping during its prefault",
            &why,
        );
        tap.finish()
    }
    let full = big_eager_pool(&tap);
    let killed = match &full {
        Ok(full) => sigkill_during_prefault(&tap, *full),
        Err(_) => Err("the 4 GiB pool failed".to_owned()),
    };
    tap.test(
        "a 4 GiB eager pool: map, touch, unmap and free stay preemptible",
        full.map(drop),
    );
    tap.test(
        "SIGKILL ends the first touch of a 4 GiB mapping during its prefault",
        killed,
    );
    tap.finish()
}
