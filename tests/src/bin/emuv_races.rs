// SPDX-License-Identifier: GPL-2.0
//! Races on an eager card's free path, each an attack by a user who can open the device, run
//! concurrently as the review reproduced them: a FREE racing the release of a quarantined page
//! (the page once went to two allocations, B read C's data), a FREE of a full card racing 4 KiB
//! ALLOCs (the counters once underflowed: a kernel panic with the pool's lock held), a long
//! random run of threads and processes allocating, writing, splicing pages into pipes and
//! freeing, checked after every step that no byte written through one allocation shows through
//! another; scrubbing against a lost card, configfs removal and unload; and a 2 MiB fault
//! racing a 4 KiB fault on one unit of a lazy mapping.

use emuv::{Device, Mapping, Tier};
use emuv_tests::{
    attr, attr_u64, err, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    fcntl::{vmsplice, SpliceFFlags},
    unistd::{pipe, read},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    fs,
    io::IoSlice,
    os::fd::OwnedFd,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

const PAGE: usize = 4096;
const MIB: u64 = 1 << 20;

/// `used + free + quarantined + scrubbing == total`, read once the scrubber is done (the
/// attributes are read one after another: only then do they hold still).
fn settled_counters() -> Result<[u64; 5], String> {
    emuv_tests::settle_scrubbing()?;
    let values = [
        "total_vram_bytes",
        "used_bytes",
        "free_bytes",
        "quarantined_bytes",
        "scrubbing_bytes",
    ]
    .map(|name| match attr(name) {
        // A module without a scrubber: its FREE zeroed before returning.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        _ => attr_u64(name),
    });
    let mut out = [0; 5];
    for (slot, value) in out.iter_mut().zip(values) {
        *slot = value?;
    }
    let [total, used, free, quarantined, scrubbing] = out;
    check(used + free + quarantined + scrubbing == total, || {
        format!(
            "used {used} + free {free} + quarantined {quarantined} + scrubbing {scrubbing} != total {total}"
        )
    })?;
    Ok(out)
}

/// Every u64 of `m` is `tag`; says where it is not and what is there.
fn check_tag(what: &str, m: &[u8], tag: u64) -> Result<(), String> {
    for (i, word) in m.chunks_exact(8).enumerate() {
        let got = u64::from_ne_bytes(word.try_into().unwrap_or_default());
        if got != tag {
            return Err(format!(
                "{what}: byte {} holds {got:#018x}, not {tag:#018x}{}",
                i * 8,
                if got == 0 {
                    ""
                } else {
                    ": another allocation's data"
                }
            ));
        }
    }
    Ok(())
}

fn fill_tag(m: &mut [u8], tag: u64) {
    for word in m.chunks_exact_mut(8) {
        word.copy_from_slice(&tag.to_ne_bytes());
    }
}

/// A mapped allocation of `bytes` on `dev`, checked zeroed, then filled with `tag`.
fn fresh(dev: &Device, bytes: u64, tag: u64) -> Result<(u32, Mapping), Errno> {
    let a = dev.alloc(bytes, Tier::Any)?;
    let mut m = dev.map(&a)?;
    if let Some(i) = m.as_slice().iter().position(|&b| b != 0) {
        let word = &m.as_slice()[i & !7..(i & !7) + 8];
        println!(
            "# a new allocation is not zeroed: byte {i} of it holds {:#018x}, another allocation's data",
            u64::from_ne_bytes(word.try_into().unwrap_or_default())
        );
        return Err(Errno::EUCLEAN);
    }
    fill_tag(m.as_mut_slice(), tag);
    Ok((a.handle, m))
}

/// Splices the first page of `m` into a new pipe; returns its read end and write end.
fn splice_first_page(m: &Mapping) -> Result<(OwnedFd, OwnedFd), String> {
    let (rx, tx) = pipe().map_err(err("pipe"))?;
    let n = vmsplice(
        &tx,
        &[IoSlice::new(&m.as_slice()[..PAGE])],
        SpliceFFlags::empty(),
    )
    .map_err(err("vmsplice"))?;
    check_eq("vmspliced bytes", n, PAGE)?;
    Ok((rx, tx))
}

/// Reads a page back out of a pipe that holds a vmspliced page: the data of the allocation it
/// was spliced from, whatever happened to that allocation since.
fn drain(rx: &OwnedFd, tag: u64) -> Result<(), String> {
    let mut got = vec![0u8; PAGE];
    let n = read(rx, &mut got).map_err(err("read the pipe"))?;
    check_eq("bytes in the pipe", n, PAGE)?;
    check_tag("the pipe's page", &got, tag)
}

/// The review's first reproduction: A's FREE (one page in a pipe) races B, which drains the
/// pipe and allocates as soon as the page is quarantined; C allocates after the FREE. Each of
/// them must own its pages alone: B never sees C's data, and the rest of the card, filled by D,
/// shows neither.
fn quarantine_release_races_free() -> Result<(), String> {
    let params = "lazy_allocation=0 physical_vram_mb=256 virtual_vram_mb=0";
    module::with_loaded(params, || {
        for round in 0..3u64 {
            let a = Device::open().map_err(err("A: open"))?;
            let tag_a = 0xa000 + round;
            let (handle, m) = fresh(&a, 192 * MIB, tag_a).map_err(err("A: alloc"))?;
            let (rx, tx) = splice_first_page(&m)?;
            m.unmap().map_err(|(e, _)| format!("A: munmap: {e}"))?;
            let (b_page, freed) = thread::scope(|s| {
                let freer = s.spawn(|| a.free(handle));
                let b = (|| {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while attr_u64("quarantined_bytes")? < PAGE as u64
                        && !freer.is_finished()
                        && Instant::now() < deadline
                    {
                        thread::yield_now();
                    }
                    drain(&rx, tag_a)?;
                    let b = Device::open().map_err(err("B: open"))?;
                    let (_, bm) =
                        fresh(&b, PAGE as u64, 0xb000 + round).map_err(err("B: alloc"))?;
                    Ok::<_, String>((b, bm))
                })();
                (b, freer.join())
            });
            let (_b, b_map) = b_page?;
            freed
                .map_err(|_| "A's FREE panicked".to_owned())?
                .map_err(err("A: FREE with a page in a pipe"))?;
            drop((rx, tx));
            let c = Device::open().map_err(err("C: open"))?;
            let (_, c_map) = fresh(&c, PAGE as u64, 0xc000 + round).map_err(err("C: alloc"))?;
            let d = Device::open().map_err(err("D: open"))?;
            let mut d_maps = Vec::new();
            loop {
                let tag = 0xd000_0000 + d_maps.len() as u64;
                match fresh(&d, MIB, tag) {
                    Ok((_, m)) => d_maps.push((tag, m)),
                    Err(Errno::ENOMEM) => break,
                    Err(e) => return Err(format!("D: alloc {}: {e}", d_maps.len())),
                }
            }
            check_tag("B's page", b_map.as_slice(), 0xb000 + round)?;
            check_tag("C's page", c_map.as_slice(), 0xc000 + round)?;
            for (tag, m) in &d_maps {
                check_tag("D's MiB", m.as_slice(), *tag)?;
            }
            check(d_maps.len() >= 250, || {
                format!("D got only {} MiB of a 256 MiB card", d_maps.len())
            })?;
        }
        let [total, used, free, quarantined, _] = settled_counters()?;
        check_eq("used at the end", used, 0)?;
        check_eq("free at the end", free + quarantined, total)
    })
}

/// The review's second reproduction: a full card (one allocation, one page in a pipe) is
/// freed while another file loops on 4 KiB ALLOCs. They get `ENOMEM`, then pages; no panic,
/// and every counter stays within the card.
fn full_card_free_races_allocs() -> Result<(), String> {
    let params = "lazy_allocation=0 physical_vram_mb=128 virtual_vram_mb=0";
    module::with_loaded(params, || {
        for round in 0..3u64 {
            let a = Device::open().map_err(err("A: open"))?;
            let (handle, m) = fresh(&a, 128 * MIB, 0xa1).map_err(err("A: fill the card"))?;
            let (rx, _tx) = splice_first_page(&m)?;
            m.unmap().map_err(|(e, _)| format!("A: munmap: {e}"))?;
            let freed = AtomicBool::new(false);
            let (allocs, free_result) = thread::scope(|s| {
                let allocator = s.spawn(|| {
                    let b = Device::open().map_err(err("B: open"))?;
                    let (mut enomem, mut got) = (0u64, 0u64);
                    let deadline = Instant::now() + Duration::from_secs(60);
                    // Until well after the FREE: pages must come once it is done.
                    while got < 200 && Instant::now() < deadline {
                        let done = freed.load(Relaxed);
                        match b.alloc(PAGE as u64, Tier::Any) {
                            Ok(x) => {
                                got += 1;
                                let info = b.info().map_err(err("B: INFO"))?;
                                check(info.used + info.free <= info.total, || {
                                    format!("INFO: used {} + free {} > total", info.used, info.free)
                                })?;
                                b.free(x.handle).map_err(err("B: free"))?;
                            }
                            // Once the FREE is back, its pages are room (scrubbed on demand).
                            Err(Errno::ENOMEM) if !done => enomem += 1,
                            Err(e) => return Err(format!("B: 4 KiB ALLOC (freed: {done}): {e}")),
                        }
                    }
                    Ok::<_, String>((enomem, got))
                });
                thread::sleep(Duration::from_millis(20 + round * 30));
                let result = a.free(handle);
                freed.store(true, Relaxed);
                (allocator.join(), result)
            });
            free_result.map_err(err("A: FREE of the full card"))?;
            let (enomem, got) = allocs.map_err(|_| "B panicked".to_owned())??;
            check(got >= 200, || {
                format!("B got {got} pages after the FREE ({enomem} ENOMEM)")
            })?;
            drain(&rx, 0xa1)?;
        }
        // The whole card once more: the let-go page comes back scrubbed.
        let c = Device::open().map_err(err("C: open"))?;
        let (h, m) = fresh(&c, 128 * MIB, 0xc1).map_err(err("C: the whole card again"))?;
        drop(m);
        c.free(h).map_err(err("C: free"))?;
        let [total, used, free, quarantined, _] = settled_counters()?;
        check_eq("used, quarantined at the end", (used, quarantined), (0, 0))?;
        check_eq("free at the end", free, total)
    })
}

/// One worker of the random run: allocates, checks zeroed, tags, splices pages into pipes,
/// frees, and checks after every step that each of its live allocations and pipes still holds
/// its own tag.
fn random_worker(path: &str, id: u64, seed: u64, steps: u64) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ id);
    let dev = Device::open_path(path, true).map_err(err("open"))?;
    let mut live: Vec<(u32, u64, Mapping)> = Vec::new();
    let mut pipes: Vec<(OwnedFd, OwnedFd, u64)> = Vec::new();
    let (mut made, mut enomem) = (0u64, 0u64);
    for step in 0..steps {
        match rng.random_range(0..10) {
            0..=4 => {
                let pages = if rng.random_bool(0.2) {
                    rng.random_range(64..=1024)
                } else {
                    rng.random_range(1..=32)
                };
                let tag = (id << 48) | (step << 8) | 0x5a;
                match fresh(&dev, pages * PAGE as u64, tag) {
                    Ok((handle, m)) => {
                        made += 1;
                        live.push((handle, tag, m));
                    }
                    Err(Errno::ENOMEM) => enomem += 1,
                    Err(Errno::EUCLEAN) => {
                        return Err(format!("step {step}: a new allocation was not zeroed"))
                    }
                    Err(e) => return Err(format!("step {step}: alloc: {e}")),
                }
            }
            5..=7 if !live.is_empty() => {
                let (handle, tag, m) = live.swap_remove(rng.random_range(0..live.len()));
                if pipes.len() < 8 && rng.random_bool(0.3) {
                    let (rx, tx) = splice_first_page(&m)?;
                    pipes.push((rx, tx, tag));
                }
                m.unmap().map_err(|(e, _)| format!("munmap: {e}"))?;
                dev.free(handle).map_err(err("free"))?;
            }
            8 if !pipes.is_empty() => {
                let (rx, _tx, tag) = pipes.swap_remove(rng.random_range(0..pipes.len()));
                drain(&rx, tag)?;
            }
            _ => {}
        }
        for (_, tag, m) in &live {
            check_tag(&format!("worker {id} step {step}"), m.as_slice(), *tag)?;
        }
    }
    for (rx, _tx, tag) in &pipes {
        drain(rx, *tag)?;
    }
    Ok(format!("{made} allocations, {enomem} ENOMEM"))
}

/// Runs [`random_worker`] in a process of its own.
fn worker_process(id: u64, seed: u64, steps: u64) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(err("current_exe"))?;
    let out = std::process::Command::new(exe)
        .args([
            "--worker",
            &id.to_string(),
            &seed.to_string(),
            &steps.to_string(),
        ])
        .output()
        .map_err(err("spawn a worker process"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok(format!("process {id}: {text}"))
    } else {
        Err(format!("process {id} ({}): {text}", out.status))
    }
}

/// Threads and processes together on one small card (so that pages are reused all the time),
/// with a reader checking that INFO's snapshot always fits in the card.
fn random_concurrent_run(tap: &Tap) -> Result<(), String> {
    let params = "lazy_allocation=0 physical_vram_mb=24 virtual_vram_mb=8";
    let seed = std::env::var("EMUV_RACES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let steps: u64 = std::env::var("EMUV_RACES_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    tap.note(format!(
        "random run: seed {seed}, {steps} steps per worker (EMUV_RACES_SEED, EMUV_RACES_STEPS)"
    ));
    module::with_loaded(params, || {
        let stop = AtomicBool::new(false);
        let snapshots = AtomicU64::new(0);
        let results = thread::scope(|s| {
            let reader = s.spawn(|| {
                let dev = Device::open_read_only().map_err(err("reader: open"))?;
                while !stop.load(Relaxed) {
                    let info = dev.info().map_err(err("reader: INFO"))?;
                    check(info.used + info.free <= info.total, || {
                        format!(
                            "INFO: used {} + free {} > total {}",
                            info.used, info.free, info.total
                        )
                    })?;
                    attr("vram_info").map_err(err("vram_info"))?;
                    snapshots.fetch_add(1, Relaxed);
                }
                Ok::<_, String>(())
            });
            let threads: Vec<_> = (0..3)
                .map(|id| s.spawn(move || random_worker("/dev/emuv", id, seed, steps)))
                .collect();
            // Two processes besides the threads: other owners, other page tables. This program
            // again, as a worker (forking a threaded process is not safe).
            let children: Vec<_> = (10..12u64)
                .map(|id| s.spawn(move || worker_process(id, seed, steps)))
                .collect();
            let mut results = Vec::new();
            for t in threads.into_iter().chain(children) {
                results.push(t.join().unwrap_or_else(|_| Err("worker panicked".into())));
            }
            stop.store(true, Relaxed);
            results.push(
                reader
                    .join()
                    .unwrap_or_else(|_| Err("reader panicked".into()))
                    .map(|()| "reader".into()),
            );
            results
        });
        for result in results {
            tap.note(result?);
        }
        check(snapshots.load(Relaxed) > 0, || {
            "the reader read nothing".into()
        })?;
        // Everything freed and let go: one allocation per tier takes each whole tier.
        let dev = Device::open().map_err(err("open"))?;
        for (tier, bytes) in [("physical", 24 * MIB), ("virtual", 8 * MIB)] {
            let (h, m) = fresh(&dev, bytes, 1).map_err(err(&format!("the whole {tier} tier")))?;
            drop(m);
            dev.free(h).map_err(err("free"))?;
        }
        let [total, used, free, quarantined, scrubbing] = settled_counters()?;
        check_eq(
            "used, quarantined, scrubbing at the end",
            (used, quarantined, scrubbing),
            (0, 0, 0),
        )?;
        check_eq("free at the end", free, total)
    })
}

/// A card lost while a large FREE is still being scrubbed: the scrubber finishes, the counters
/// add up, and once back the card hands out zeroed memory only.
fn scrubbing_against_fail_lost() -> Result<(), String> {
    let params = "lazy_allocation=0 physical_vram_mb=192 virtual_vram_mb=0";
    module::with_loaded(params, || {
        let a = Device::open().map_err(err("A: open"))?;
        let (handle, m) = fresh(&a, 192 * MIB, 0xaa55).map_err(err("A: alloc"))?;
        m.unmap().map_err(|(e, _)| format!("A: munmap: {e}"))?;
        a.free(handle).map_err(err("A: free"))?;
        let pending = attr_u64("scrubbing_bytes")?;
        fs::write(format!("{}/fail", emuv_tests::SYSFS_DIR), "lost").map_err(err("fail=lost"))?;
        drop(a);
        let [total, used, free, quarantined, _] = settled_counters()?;
        check_eq("used, quarantined", (used, quarantined), (0, 0))?;
        check_eq("free once scrubbed", free, total)?;
        fs::write(format!("{}/fail", emuv_tests::SYSFS_DIR), "none").map_err(err("fail=none"))?;
        let b = Device::open().map_err(err("B: open"))?;
        let (_, bm) = fresh(&b, 192 * MIB, 0xbb).map_err(err("B: the whole card, zeroed"))?;
        check_tag("B", &bm.as_slice()[..PAGE], 0xbb)?;
        Ok::<_, String>(pending)
    })
    .map(|pending| {
        // Said, not required: how much the FREE left to the scrubber.
        println!("# scrubbing_bytes right after the FREE of 192 MiB: {pending}");
    })
}

/// `rmmod` right after a large FREE (the scrubber still zeroing) and configfs removal of a
/// card in the same state: both wait for the scrubber, nothing of it runs after the module
/// is gone (the runner fails the run on any kernel report).
fn unload_and_removal_with_scrubbing_pending() -> Result<(), String> {
    let params = "lazy_allocation=0 physical_vram_mb=192 virtual_vram_mb=0";
    for round in 0..3 {
        module::load(params).map_err(|e| format!("insmod emuv.ko {params}: {e}"))?;
        let filled = (|| {
            let a = Device::open().map_err(err("open"))?;
            let (handle, m) = fresh(&a, 192 * MIB, 0x77).map_err(err("alloc"))?;
            drop(m);
            a.free(handle).map_err(err("free"))
        })();
        let unloaded = module::unload();
        filled?;
        check_eq(
            &format!("rmmod while scrubbing (round {round})"),
            unloaded,
            Ok(()),
        )?;
    }
    module::with_loaded("", || {
        let configfs = "/sys/kernel/config/emuv";
        if !std::path::Path::new(configfs).exists() {
            println!("# no configfs on this kernel: card removal not tried");
            return Ok(());
        }
        let dir = format!("{configfs}/scrubbed");
        fs::create_dir(&dir).map_err(err("mkdir a configfs card"))?;
        let set =
            |attr: &str, value: &str| fs::write(format!("{dir}/{attr}"), value).map_err(err(attr));
        set("lazy_allocation", "0")?;
        set("physical_vram_mb", "128")?;
        set("virtual_vram_mb", "0")?;
        set("enabled", "1")?;
        let index: u32 = fs::read_to_string(format!("{dir}/index"))
            .map_err(err("index"))?
            .trim()
            .parse()
            .map_err(err("index"))?;
        let node = format!("/dev/emuv{index}");
        {
            let a = Device::open_path(&node, true).map_err(err("open the configfs card"))?;
            let (handle, m) = fresh(&a, 128 * MIB, 0x99).map_err(err("alloc"))?;
            drop(m);
            a.free(handle).map_err(err("free"))?;
        }
        set("enabled", "0")?;
        fs::remove_dir(&dir).map_err(err("rmdir the configfs card"))
    })
}

/// In a process of its own (a `SIGBUS` ends it): `rounds` times, a 2 MiB lazy allocation is
/// mapped and two threads first-touch offsets 0 and 4096 of its one 2 MiB unit together, while
/// a third turns transparent huge pages off and on for the process (`PR_SET_THP_DISABLE`), so
/// that one fault of the pair maps 2 MiB and the other 4 KiB. Prints what the touches read.
fn thp_race_rounds(rounds: u64) -> Result<String, String> {
    use std::sync::atomic::AtomicUsize;
    let dev = Device::open().map_err(err("open"))?;
    let stop = AtomicBool::new(false);
    // The second toucher spins (no futex wake-up between the two): `go` is the round it may
    // start, `base` the mapping, `done` the last round it finished, `seen` what it read.
    let (go, base_addr, done, seen_b) = (
        AtomicU64::new(0),
        AtomicUsize::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    );
    thread::scope(|s| {
        s.spawn(|| {
            let mut disable = 1;
            while !stop.load(Relaxed) {
                // SAFETY: prctl with integer arguments only.
                unsafe { nix::libc::prctl(nix::libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) };
                disable ^= 1;
                thread::yield_now();
            }
        });
        s.spawn(|| {
            let mut round = 0;
            while !stop.load(Relaxed) {
                let next = go.load(std::sync::atomic::Ordering::Acquire);
                if next == round {
                    std::hint::spin_loop();
                    continue;
                }
                round = next;
                let p = (base_addr.load(Relaxed) + PAGE) as *mut u8;
                // SAFETY: inside the live 2 MiB mapping the main thread published for `round`,
                // which it keeps until `done` says this round is over.
                let got = unsafe {
                    p.write_volatile(0xb1);
                    p.read_volatile()
                };
                seen_b.store(u64::from(got), Relaxed);
                done.store(round, std::sync::atomic::Ordering::Release);
            }
        });
        let result = (|| {
            let mut huge_rounds = 0;
            let mut kept = None;
            for round in 1..=rounds {
                // Every other round maps the last round's allocation again: its unit has its
                // folio (or table) already, and the two faults meet at the PMD.
                let a = match kept.take() {
                    Some(a) => a,
                    None => dev.alloc(2 * MIB, Tier::Any).map_err(err("alloc"))?,
                };
                let m = dev.map(&a).map_err(err("mmap"))?;
                let base = m.as_ptr() as usize;
                check(base.is_multiple_of(2 * MIB as usize), || {
                    format!("mapping at {base:#x} is not 2 MiB aligned")
                })?;
                base_addr.store(base, Relaxed);
                go.store(round, std::sync::atomic::Ordering::Release);
                let p = base as *mut u8;
                // SAFETY: inside the live 2 MiB mapping `m`.
                let got_a = unsafe {
                    p.write_volatile(0xa1);
                    p.read_volatile()
                };
                while done.load(std::sync::atomic::Ordering::Acquire) != round {
                    std::hint::spin_loop();
                }
                check_eq(
                    &format!("round {round}: bytes read back"),
                    [got_a, seen_b.load(Relaxed) as u8],
                    [0xa1, 0xb1],
                )?;
                if attr_u64("huge_bytes")? > 0 {
                    huge_rounds += 1;
                }
                drop(m);
                if round % 2 == 1 {
                    kept = Some(a);
                } else {
                    dev.free(a.handle).map_err(err("free"))?;
                }
            }
            Ok(format!(
                "{rounds} rounds, {huge_rounds} of them with a 2 MiB page"
            ))
        })();
        stop.store(true, Relaxed);
        result
    })
}

/// The review's fault race: [`thp_race_rounds`] in a child process, which must neither get a
/// `SIGBUS` nor leave a kernel warning (the runner checks the log).
fn huge_and_small_faults_race_on_one_unit() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=64 virtual_vram_mb=0", || {
        let exe = std::env::current_exe().map_err(err("current_exe"))?;
        let rounds = std::env::var("EMUV_THP_RACE_ROUNDS").unwrap_or_else(|_| "3000".into());
        let out = std::process::Command::new(exe)
            .args(["--thp-race", &rounds])
            .output()
            .map_err(err("spawn"))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        println!("# {text}");
        check(out.status.success(), || {
            format!("the racing process ended with {} ({text})", out.status)
        })
    })
}

/// Whether `addr` of this process reads through `/proc/self/mem`: the kernel's own access
/// (GUP) finds the page mapped, or faults it in, which on a lost card fails (`EIO`) where a
/// program's own access would get `SIGBUS`.
fn readable_through_proc_mem(mem: &fs::File, addr: usize) -> bool {
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8; 8];
    mem.read_at(&mut byte, addr as u64).is_ok()
}

/// `mmap` in a loop on one thread while another loses the card (`fail=lost`): every mapping
/// that exists once the loss is done must be cut off from the card's memory, however its
/// `mmap` overlapped the loss (an eager mapping prefaulted in `f_op->mmap` and linked after the
/// loss's unmapping once kept working).
fn mmap_racing_fail_lost(rounds: u32) -> Result<(), String> {
    let params = "lazy_allocation=0 physical_vram_mb=64 virtual_vram_mb=0";
    let fail = format!("{}/fail", emuv_tests::SYSFS_DIR);
    module::with_loaded(params, || {
        let mem = fs::File::open("/proc/self/mem").map_err(err("open /proc/self/mem"))?;
        let mut made = 0usize;
        for round in 0..rounds {
            let dev = Device::open().map_err(err("open"))?;
            let a = dev.alloc(256 * 1024, Tier::Any).map_err(err("alloc"))?;
            let lost = AtomicBool::new(false);
            let maps = thread::scope(|s| {
                let mapper = s.spawn(|| {
                    let mut maps = Vec::new();
                    while !lost.load(Relaxed) && maps.len() < 2000 {
                        match dev.map(&a) {
                            Ok(m) => maps.push(m),
                            Err(Errno::EIO) => break,
                            Err(e) => return Err(format!("mmap: {e}")),
                        }
                    }
                    Ok(maps)
                });
                thread::sleep(Duration::from_micros(200 + u64::from(round % 20) * 150));
                let result = fs::write(&fail, "lost").map_err(err("fail=lost"));
                lost.store(true, Relaxed);
                let maps = mapper
                    .join()
                    .unwrap_or_else(|_| Err("mapper panicked".into()));
                result.and(maps)
            })?;
            made += maps.len();
            for (i, m) in maps.iter().enumerate() {
                check(
                    !readable_through_proc_mem(&mem, m.as_ptr() as usize),
                    || {
                        format!(
                            "round {round}: mapping {i} of {} still reads the lost card's memory",
                            maps.len()
                        )
                    },
                )?;
            }
            drop(maps);
            drop(dev);
            fs::write(&fail, "none").map_err(err("fail=none"))?;
        }
        println!("# {made} mappings made around {rounds} losses");
        Ok(())
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, rounds] = &args[..] {
        if flag == "--thp-race" {
            match rounds
                .parse()
                .map_err(err("rounds"))
                .and_then(thp_race_rounds)
            {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    println!("{e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    if let [_, flag, id, seed, steps] = &args[..] {
        if flag == "--worker" {
            let parsed = (id.parse(), seed.parse(), steps.parse());
            let (Ok(id), Ok(seed), Ok(steps)) = parsed else {
                eprintln!("usage: --worker ID SEED STEPS");
                std::process::exit(2);
            };
            match random_worker("/dev/emuv", id, seed, steps) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    println!("{e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    }
    type Test<'a> = Box<dyn FnOnce(&Tap) -> Result<(), String> + 'a>;
    let tests: Vec<(&str, &str, Test)> = vec![
        (
            "release",
            "a FREE racing the release of a quarantined page: B, C and D each own their pages",
            Box::new(|_| quarantine_release_races_free()),
        ),
        (
            "full",
            "a full card's FREE racing 4 KiB ALLOCs: ENOMEM, then pages, no panic",
            Box::new(|_| full_card_free_races_allocs()),
        ),
        (
            "random",
            "threads and processes allocating, splicing and freeing at random: no byte crosses allocations",
            Box::new(random_concurrent_run),
        ),
        (
            "lost",
            "scrubbing against fail=lost: finished, counted, zeroed once back",
            Box::new(|_| scrubbing_against_fail_lost()),
        ),
        (
            "unload",
            "rmmod and configfs removal with scrubbing pending wait for the scrubber",
            Box::new(|_| unload_and_removal_with_scrubbing_pending()),
        ),
        (
            "thp",
            "a 2 MiB fault and a 4 KiB fault racing on one unit, THP toggled: no SIGBUS, no warning",
            Box::new(|_| huge_and_small_faults_race_on_one_unit()),
        ),
        (
            "mmap",
            "mmap racing fail=lost: no mapping outlives the loss with the card's memory",
            Box::new(|_| mmap_racing_fail_lost(100)),
        ),
    ];
    let mut tap = Tap::new(tests.len());
    if module::is_loaded() {
        let _ = module::unload();
    }
    // EMUV_RACES_ONLY=key,key... runs only those (to replay one against another module).
    let only = std::env::var("EMUV_RACES_ONLY").ok();
    for (key, name, test) in tests {
        if only
            .as_ref()
            .is_some_and(|only| !only.split(',').any(|k| k == key))
        {
            tap.skip(name, "not in EMUV_RACES_ONLY");
            continue;
        }
        let result = test(&tap);
        tap.test(name, result);
    }
    tap.finish()
}
