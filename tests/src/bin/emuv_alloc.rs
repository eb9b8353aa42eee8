// SPDX-License-Identifier: GPL-2.0
//! Emulated VRAM that programs use through /dev/emuv: allocate, map, free; data integrity;
//! per-file ownership; fork; cleanup after SIGKILL; full pool and per-file limit; every bad
//! input; concurrency; rmmod while mapped.

use emuv::{Device, Tier};
use emuv_tests::{
    attr, err, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    sys::{
        mman::MapFlags,
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, pipe, read, write, ForkResult},
};
use std::{os::fd::AsFd, process::exit};

const MIB: u64 = 1 << 20;

type TestFn = fn() -> Result<(), String>;
const PAGE: u64 = 4096;
/// A small card: 64 MiB physical + 32 MiB virtual.
const PARAMS: &str = "physical_vram_mb=64 virtual_vram_mb=32";

fn used_bytes() -> u64 {
    attr("used_bytes")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

fn resident_bytes() -> u64 {
    attr("resident_bytes")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A byte pattern that differs per page and per allocation.
fn pattern(seed: u8, i: usize) -> u8 {
    (i / PAGE as usize) as u8 ^ seed ^ (i as u8)
}

fn fill(buf: &mut [u8], seed: u8) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

fn verify(buf: &[u8], seed: u8) -> Result<(), String> {
    match buf
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern(seed, i))
    {
        None => Ok(()),
        Some((i, &b)) => Err(format!(
            "byte {i}: {b:#x}, expected {:#x}",
            pattern(seed, i)
        )),
    }
}

fn integrity() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let a = dev.alloc(3 * MIB + 100, Tier::Any).map_err(err("alloc"))?;
    check_eq("rounded size", a.bytes, 3 * MIB + PAGE)?;
    check_eq("tier", a.tier, Tier::Physical)?;
    let mut m1 = dev.map(&a).map_err(err("mmap 1"))?;
    check(m1.as_slice().iter().all(|&b| b == 0), || {
        "fresh memory is not zeroed".into()
    })?;
    fill(m1.as_mut_slice(), 7);
    // A second mapping sees what the first wrote, and writes through it are seen by the first.
    let mut m2 = dev.map(&a).map_err(err("mmap 2"))?;
    verify(m2.as_slice(), 7)?;
    m2.as_mut_slice()[12345] = 0xab;
    check_eq(
        "write seen through the other mapping",
        m1.as_slice()[12345],
        0xab,
    )?;
    m2.as_mut_slice()[12345] = pattern(7, 12345);
    check_eq(
        "mappings",
        dev.query(a.handle).map_err(err("query"))?.mappings,
        2,
    )?;
    drop(m1);
    drop(m2);
    // Data survives unmap and remap.
    let m3 = dev.map(&a).map_err(err("remap"))?;
    verify(m3.as_slice(), 7)?;
    let q = dev.query(a.handle).map_err(err("query"))?;
    check_eq("resident after touching every page", q.resident, a.bytes)?;
    check_eq("mappings", q.mappings, 1)?;
    // A part of it, at an offset inside it.
    let part = dev
        .map_range(a.mmap_offset + MIB, PAGE as usize, MapFlags::MAP_SHARED)
        .map_err(err("mmap of one page at 1 MiB"))?;
    check_eq(
        "page at 1 MiB",
        part.as_slice()[0],
        pattern(7, MIB as usize),
    )?;
    drop(part);
    drop(m3);
    dev.free(a.handle).map_err(err("free"))?;
    // Freed memory is handed out zeroed again.
    let b = dev.alloc(3 * MIB, Tier::Any).map_err(err("alloc again"))?;
    let m = dev.map(&b).map_err(err("mmap again"))?;
    check(m.as_slice().iter().all(|&b| b == 0), || {
        "reallocated memory is not zeroed".into()
    })?;
    drop(m);
    dev.free(b.handle).map_err(err("free"))
}

fn placement_and_counters() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let p = dev
        .alloc(60 * MIB, Tier::Any)
        .map_err(err("alloc 60 MiB"))?;
    check_eq("first tier", p.tier, Tier::Physical)?;
    let v = dev.alloc(8 * MIB, Tier::Any).map_err(err("alloc 8 MiB"))?;
    check_eq("overflow tier", v.tier, Tier::Virtual)?;
    let forced = dev
        .alloc(MIB, Tier::Virtual)
        .map_err(err("alloc in the virtual tier"))?;
    check_eq("asked tier", forced.tier, Tier::Virtual)?;
    let info = dev.info().map_err(err("info"))?;
    check_eq("used", info.used, 69 * MIB)?;
    check_eq("used + free == total", info.used + info.free, info.total)?;
    check_eq("physical used", info.tiers[0].used, 60 * MIB)?;
    check_eq("virtual used", info.tiers[1].used, 9 * MIB)?;
    check_eq("file_used", info.file_used, 69 * MIB)?;
    check_eq("sysfs used_bytes", used_bytes(), 69 * MIB)?;
    // The card is full: like cudaMalloc, ENOMEM.
    check_eq(
        "alloc past the end",
        dev.alloc(28 * MIB, Tier::Any).err(),
        Some(Errno::ENOMEM),
    )?;
    check_eq(
        "physical tier full",
        dev.alloc(8 * MIB, Tier::Physical).err(),
        Some(Errno::ENOMEM),
    )?;
    // An allocation lives in one tier: 27 MiB are free, but 4 + 23 in two tiers.
    let rest_v = dev
        .alloc(23 * MIB, Tier::Any)
        .map_err(err("alloc the virtual tier's rest"))?;
    check_eq("tier of 23 MiB", rest_v.tier, Tier::Virtual)?;
    let rest_p = dev
        .alloc(4 * MIB, Tier::Any)
        .map_err(err("alloc the physical tier's rest"))?;
    check_eq("tier of 4 MiB", rest_p.tier, Tier::Physical)?;
    check_eq("free at full", dev.info().map_err(err("info"))?.free, 0)?;
    for h in [
        p.handle,
        v.handle,
        forced.handle,
        rest_v.handle,
        rest_p.handle,
    ] {
        dev.free(h).map_err(err("free"))?;
    }
    check_eq("used after freeing all", used_bytes(), 0)
}

fn bad_input() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let mut cases: Vec<(&str, emuv::sys::emuv_alloc, Errno)> = Vec::new();
    let ok = Device::alloc_request(MIB, Tier::Any);
    cases.push((
        "zero size",
        emuv::sys::emuv_alloc { bytes: 0, ..ok },
        Errno::EINVAL,
    ));
    cases.push((
        "overflowing size",
        emuv::sys::emuv_alloc {
            bytes: u64::MAX,
            ..ok
        },
        Errno::EINVAL,
    ));
    cases.push((
        "size past the card",
        emuv::sys::emuv_alloc {
            bytes: 1 << 40,
            ..ok
        },
        Errno::ENOMEM,
    ));
    cases.push((
        "unknown flags",
        emuv::sys::emuv_alloc { flags: 1, ..ok },
        Errno::EINVAL,
    ));
    cases.push((
        "reserved not zero",
        emuv::sys::emuv_alloc {
            reserved: [0, 1],
            ..ok
        },
        Errno::EINVAL,
    ));
    cases.push((
        "unknown tier",
        emuv::sys::emuv_alloc { tier: 3, ..ok },
        Errno::EINVAL,
    ));
    cases.push((
        "wrong struct size",
        emuv::sys::emuv_alloc { size: 8, ..ok },
        Errno::EINVAL,
    ));
    for (what, mut req, want) in cases {
        check_eq(what, dev.alloc_raw(&mut req).err(), Some(want))?;
    }
    check_eq("used after bad requests", used_bytes(), 0)?;
    // SAFETY: an unknown command; the argument is not read.
    let unknown = unsafe { dev.ioctl_raw(0xE7_FF, std::ptr::null_mut()) };
    check_eq("unknown ioctl", unknown.err(), Some(Errno::ENOTTY))?;
    // SAFETY: a valid command with an invalid pointer: the kernel must fail the copy.
    let fault = unsafe { dev.ioctl_raw(emuv::ioctl_numbers().alloc, 16 as *mut _) };
    check_eq("bad pointer", fault.err(), Some(Errno::EFAULT))?;
    check_eq("free of handle 0", dev.free(0).err(), Some(Errno::ENOENT))?;
    check_eq(
        "free of unknown handle",
        dev.free(77).err(),
        Some(Errno::ENOENT),
    )?;
    check_eq(
        "query of unknown handle",
        dev.query(77).err(),
        Some(Errno::ENOENT),
    )?;
    let mut bad_free = emuv::sys::emuv_free {
        handle: 1,
        flags: 1,
        reserved: 0,
    };
    check_eq(
        "free with flags",
        dev.free_raw(&mut bad_free).err(),
        Some(Errno::EINVAL),
    )?;
    let a = dev.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
    let private = dev.map_range(a.mmap_offset, MIB as usize, MapFlags::MAP_PRIVATE);
    check_eq("private mapping", private.err(), Some(Errno::EINVAL))?;
    let beyond = dev.map_range(a.mmap_offset, 2 * MIB as usize, MapFlags::MAP_SHARED);
    check_eq("mapping past the end", beyond.err(), Some(Errno::EINVAL))?;
    let unknown_map = dev.map_range(99 << 40, PAGE as usize, MapFlags::MAP_SHARED);
    check_eq(
        "mapping an unknown handle",
        unknown_map.err(),
        Some(Errno::EINVAL),
    )?;
    let m = dev.map(&a).map_err(err("mmap"))?;
    check_eq(
        "free while mapped",
        dev.free(a.handle).err(),
        Some(Errno::EBUSY),
    )?;
    drop(m);
    dev.free(a.handle).map_err(err("free after unmap"))?;
    check_eq("double free", dev.free(a.handle).err(), Some(Errno::ENOENT))
}

/// Another open file, in another process, cannot use this file's handles.
fn isolation() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let a = dev.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
    let mut m = dev.map(&a).map_err(err("mmap"))?;
    fill(m.as_mut_slice(), 3);
    let (rx, tx) = pipe().map_err(err("pipe"))?;
    // SAFETY: the child only makes system calls and exits.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            let other = match Device::open() {
                Ok(d) => d,
                Err(_) => exit(10),
            };
            let q = other.query(a.handle).err() == Some(Errno::ENOENT);
            let f = other.free(a.handle).err() == Some(Errno::ENOENT);
            let map = other
                .map_range(a.mmap_offset, MIB as usize, MapFlags::MAP_SHARED)
                .err()
                == Some(Errno::EINVAL);
            let _ = write(tx.as_fd(), &[q as u8, f as u8, map as u8]);
            exit(0)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut got = [0u8; 3];
            let n = read(&rx, &mut got).map_err(err("read"))?;
            let _ = waitpid(child, None);
            check_eq("child's answers", (n, got), (3, [1, 1, 1]))?;
            verify(m.as_slice(), 3)?;
            drop(m);
            dev.free(a.handle).map_err(err("free"))
        }
    }
}

/// A child does not inherit the mapping (VM_DONTCOPY); the parent's data is intact.
fn fork_child_has_no_mapping() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let a = dev.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
    let mut m = dev.map(&a).map_err(err("mmap"))?;
    fill(m.as_mut_slice(), 5);
    let addr = m.as_ptr() as usize;
    // SAFETY: the child only reads /proc and exits.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
            let mapped = maps.lines().any(|l| {
                l.split_once('-')
                    .and_then(|(s, _)| usize::from_str_radix(s, 16).ok())
                    .is_some_and(|start| start == addr)
            });
            exit(if mapped { 1 } else { 0 })
        }
        ForkResult::Parent { child } => {
            let status = waitpid(child, None).map_err(err("waitpid"))?;
            check_eq("child saw no mapping", status, WaitStatus::Exited(child, 0))?;
            verify(m.as_slice(), 5)?;
            check_eq(
                "mappings",
                dev.query(a.handle).map_err(err("query"))?.mappings,
                1,
            )?;
            drop(m);
            dev.free(a.handle).map_err(err("free"))
        }
    }
}

/// SIGKILL with allocations mapped and touched: everything comes back.
fn sigkill_cleanup() -> Result<(), String> {
    let (used0, resident0) = (used_bytes(), resident_bytes());
    let (rx, tx) = pipe().map_err(err("pipe"))?;
    // SAFETY: the child allocates, maps, touches, reports, and waits to be killed.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            let dev = Device::open().unwrap_or_else(|_| exit(10));
            let mut maps = Vec::new();
            for _ in 0..4 {
                let a = dev.alloc(4 * MIB, Tier::Any).unwrap_or_else(|_| exit(11));
                let mut m = dev.map(&a).unwrap_or_else(|_| exit(12));
                m.as_mut_slice().fill(0x5a);
                maps.push(m);
            }
            let _ = write(tx.as_fd(), b"k");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut b = [0u8; 1];
            let ready = read(&rx, &mut b).map_err(err("read"));
            let (used, resident) = (used_bytes(), resident_bytes());
            let report = std::fs::read_to_string("/dev/emuv").map_err(err("cat /dev/emuv"));
            // Kill first, so a failed check below leaves nothing holding the module.
            kill(child, Signal::SIGKILL).map_err(err("kill"))?;
            waitpid(child, None).map_err(err("waitpid"))?;
            check_eq("child ready", ready?, 1)?;
            check_eq("used while the child lived", used, used0 + 16 * MIB)?;
            check_eq(
                "resident while the child lived",
                resident,
                resident0 + 16 * MIB,
            )?;
            let report = report?;
            let listed = report.lines().any(|l| {
                l.split_whitespace().collect::<Vec<_>>()
                    == [
                        child.to_string().as_str(),
                        "emuv_alloc",
                        &(16 * MIB).to_string(),
                        "4",
                    ]
            });
            check(listed, || {
                format!("child {child} with 16 MiB in 4 allocations not in:\n{report}")
            })?;
            check_eq("used after SIGKILL", used_bytes(), used0)?;
            check_eq("resident after SIGKILL", resident_bytes(), resident0)
        }
    }
}

/// 8 threads in each of 2 processes allocate, touch and free at random; counters end exact.
fn concurrency() -> Result<(), String> {
    fn worker(seed: u64) -> bool {
        let Ok(dev) = Device::open() else {
            return false;
        };
        let dev = std::sync::Arc::new(dev);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dev = dev.clone();
                std::thread::spawn(move || {
                    let mut rng = seed.wrapping_mul(31).wrapping_add(t) | 1;
                    let mut next = move || {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng
                    };
                    let mut held = Vec::new();
                    for _ in 0..200 {
                        if held.len() < 4 && next() % 3 != 0 {
                            let bytes = (next() % (2 * MIB)) + 1;
                            match dev.alloc(bytes, Tier::Any) {
                                Ok(a) => {
                                    let Ok(mut m) = dev.map(&a) else { return false };
                                    let len = m.len();
                                    m.as_mut_slice()[(next() as usize) % len] = 1;
                                    drop(m);
                                    held.push(a);
                                }
                                Err(Errno::ENOMEM) => {}
                                Err(_) => return false,
                            }
                        } else if let Some(a) = held.pop() {
                            if dev.free(a.handle).is_err() {
                                return false;
                            }
                        }
                    }
                    held.iter().all(|a| dev.free(a.handle).is_ok())
                })
            })
            .collect();
        threads.into_iter().all(|t| t.join().unwrap_or(false))
    }
    let mut children = Vec::new();
    for p in 0..2 {
        // SAFETY: the child runs the workload and exits.
        match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => exit(if worker(p + 1) { 0 } else { 1 }),
            ForkResult::Parent { child } => children.push(child),
        }
    }
    for child in children {
        check_eq(
            "worker",
            waitpid(child, None).map_err(err("waitpid"))?,
            WaitStatus::Exited(child, 0),
        )?;
    }
    let info = Device::open()
        .map_err(err("open"))?
        .info()
        .map_err(err("info"))?;
    check_eq("used after the storm", info.used, 0)?;
    check_eq("used + free == total", info.used + info.free, info.total)?;
    check_eq("resident after the storm", resident_bytes(), 0)
}

fn main() {
    let mut tap = Tap::new(10);
    if module::is_loaded() {
        let _ = module::unload();
    }
    let tests: [(&str, TestFn); 7] = [
        (
            "data integrity across two mappings and remaps; zeroed memory",
            integrity,
        ),
        (
            "placement, counters and ENOMEM when full",
            placement_and_counters,
        ),
        ("bad input gets the right errno", bad_input),
        ("another process cannot use this file's handles", isolation),
        (
            "a forked child has no mapping; the parent's data is intact",
            fork_child_has_no_mapping,
        ),
        (
            "SIGKILL with live mappings returns everything; process list",
            sigkill_cleanup,
        ),
        ("8 threads x 2 processes: counters exact", concurrency),
    ];
    for (name, test) in tests {
        tap.test(name, module::with_loaded(PARAMS, test));
    }

    // Eager pools map their reserved pages at mmap time.
    let result = module::with_loaded(
        "lazy_allocation=0 physical_vram_mb=16 virtual_vram_mb=8",
        integrity,
    );
    tap.test("eager pool: data integrity across mappings", result);

    // A per-file limit slices the card between tenants.
    let result = module::with_loaded(&format!("{PARAMS} vram_limit_per_file_mb=8"), || {
        let dev = Device::open().map_err(err("open"))?;
        check_eq(
            "file_limit",
            dev.info().map_err(err("info"))?.file_limit,
            8 * MIB,
        )?;
        let a = dev.alloc(6 * MIB, Tier::Any).map_err(err("alloc 6 MiB"))?;
        check_eq(
            "past the limit",
            dev.alloc(3 * MIB, Tier::Any).err(),
            Some(Errno::ENOMEM),
        )?;
        let b = dev
            .alloc(2 * MIB, Tier::Any)
            .map_err(err("alloc up to the limit"))?;
        let other = Device::open().map_err(err("second open"))?;
        let c = other
            .alloc(8 * MIB, Tier::Any)
            .map_err(err("another file's own 8 MiB"))?;
        dev.free(a.handle).map_err(err("free"))?;
        dev.free(b.handle).map_err(err("free"))?;
        other.free(c.handle).map_err(err("free"))
    });
    tap.test("per-file limit", result);

    // A mapping pins the module even after its file is closed.
    let result = module::check_pinned_by(PARAMS, || {
        let dev = Device::open().map_err(err("open"))?;
        let a = dev.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
        // The file is closed when `dev` goes; the mapping alone must pin the module.
        dev.map(&a).map_err(err("mmap"))
    });
    tap.test("rmmod is refused while a mapping exists", result);
    tap.finish()
}
