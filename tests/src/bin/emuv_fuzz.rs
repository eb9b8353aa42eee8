// SPDX-License-Identifier: GPL-2.0
//! A seeded ioctl/mmap fuzzer: several processes issue random opens, closes, allocations (valid
//! and not), frees, queries, mmaps (valid and not), munmaps, touches, forks and kills against
//! one emuv, each checking every answer against its own model of what it holds. At the end:
//! used + free == total, every process's usage as the kernel reports it, and nothing left once
//! everyone has exited.
//!
//!   EMUV_FUZZ_OPS (default 20000), EMUV_FUZZ_SEED (default: from the clock, printed),
//!   EMUV_FUZZ_WORKERS (default 4). The same seed, ops and workers replay the same run.

use emuv::{sys, Device, Mapping, Tier};
use emuv_tests::{
    attr_u64, err, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    sys::{
        mman::MapFlags,
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, pipe, read, write, ForkResult, Pid},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{collections::BTreeMap, os::fd::AsFd};

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;
const MAX_FDS: usize = 4;
const MAX_MAPPINGS: usize = 16;

type TestResult = Result<(), String>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One allocation as its owner believes it is.
struct Held {
    bytes: u64,
    offset: u64,
}

/// One open file and what it holds.
struct File {
    id: u64,
    device: Device,
    held: BTreeMap<u32, Held>,
}

/// A live mapping of pages `first..first + pages` of an allocation.
struct Mapped {
    mapping: Mapping,
    /// The `File::id` it came from.
    file: u64,
    handle: u32,
    first: u64,
}

/// What was last written at the start of each page of each allocation, by any mapping:
/// (file id, handle) -> page -> byte. Pages never written read as zero.
type Shadow = BTreeMap<(u64, u32), BTreeMap<u64, u8>>;

#[derive(Default)]
struct Counts {
    ops: u64,
    errors_expected: u64,
    enomem: u64,
    forks: u64,
    kills: u64,
}

struct Worker {
    rng: StdRng,
    files: Vec<Option<File>>,
    next_file_id: u64,
    /// Files whose descriptor is closed but which mappings keep open in the kernel (it releases
    /// a file, and everything allocated through it, at its last munmap): id -> bytes held.
    closed_but_mapped: BTreeMap<u64, u64>,
    mapped: Vec<Mapped>,
    shadow: Shadow,
    counts: Counts,
}

impl Worker {
    /// Bytes this process holds: its open files' allocations and those of closed files that
    /// mappings keep open.
    fn expected_bytes(&self) -> u64 {
        let open: u64 = self
            .files
            .iter()
            .flatten()
            .flat_map(|f| f.held.values())
            .map(|h| h.bytes)
            .sum();
        open + self.closed_but_mapped.values().sum::<u64>()
    }

    fn file_id(&self, slot: usize) -> u64 {
        self.files[slot].as_ref().map_or(u64::MAX, |f| f.id)
    }

    fn pick_file(&mut self) -> Option<usize> {
        let open: Vec<usize> = (0..self.files.len())
            .filter(|&i| self.files[i].is_some())
            .collect();
        (!open.is_empty()).then(|| open[self.rng.random_range(0..open.len())])
    }

    fn op(&mut self) -> TestResult {
        self.counts.ops += 1;
        match self.rng.random_range(0..100) {
            0..4 => self.open(),
            4..7 => self.close(),
            7..35 => self.alloc(),
            35..42 => self.bad_alloc(),
            42..55 => self.free(),
            55..60 => self.query(),
            60..75 => self.map(),
            75..78 => self.bad_map(),
            78..88 => self.unmap(),
            88..95 => self.touch(),
            95..98 => self.info(),
            98 => self.fork_child(),
            _ => self.kill_child(),
        }
    }

    fn open(&mut self) -> TestResult {
        if self.files.iter().flatten().count() >= MAX_FDS {
            return Ok(());
        }
        let device = Device::open().map_err(err("open"))?;
        self.next_file_id += 1;
        let file = File {
            id: self.next_file_id,
            device,
            held: BTreeMap::new(),
        };
        match self.files.iter().position(Option::is_none) {
            Some(i) => self.files[i] = Some(file),
            None => self.files.push(Some(file)),
        }
        Ok(())
    }

    /// Closing a descriptor frees the file's allocations, unless mappings keep it open.
    fn close(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let Some(file) = self.files[i].take() else {
            return Ok(());
        };
        if self.mapped.iter().any(|m| m.file == file.id) {
            let bytes = file.held.values().map(|h| h.bytes).sum();
            self.closed_but_mapped.insert(file.id, bytes);
        } else {
            self.shadow.retain(|&(f, _), _| f != file.id);
        }
        Ok(())
    }

    fn alloc(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return self.open();
        };
        let bytes = match self.rng.random_range(0..10) {
            0 => self.rng.random_range(1..PAGE),
            1..8 => self.rng.random_range(1..64) * PAGE,
            _ => self.rng.random_range(1..4 * MIB),
        };
        let tier = [Tier::Any, Tier::Physical, Tier::Virtual][self.rng.random_range(0..3)];
        let file = self.files[i].as_mut().ok_or("file")?;
        match file.device.alloc(bytes, tier) {
            Ok(a) => {
                check_eq("rounded size", a.bytes, bytes.div_ceil(PAGE) * PAGE)?;
                check(tier == Tier::Any || a.tier == tier, || {
                    format!("asked {tier:?}, got {:?}", a.tier)
                })?;
                check(!file.held.contains_key(&a.handle), || {
                    format!("handle {} given twice", a.handle)
                })?;
                file.held.insert(
                    a.handle,
                    Held {
                        bytes: a.bytes,
                        offset: a.mmap_offset,
                    },
                );
            }
            Err(Errno::ENOMEM) => self.counts.enomem += 1,
            Err(e) => return Err(format!("alloc {bytes} {tier:?}: {e}")),
        }
        Ok(())
    }

    fn bad_alloc(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let ok = Device::alloc_request(PAGE, Tier::Any);
        let (mut req, want) = match self.rng.random_range(0..6) {
            0 => (sys::emuv_alloc { bytes: 0, ..ok }, Errno::EINVAL),
            // Sizes that overflow when rounded up to a page (u64::MAX - 4095 would not: it is a
            // page multiple, merely too large, which is ENOMEM).
            1 => (
                sys::emuv_alloc {
                    bytes: u64::MAX - self.rng.random_range(0..PAGE - 1),
                    ..ok
                },
                Errno::EINVAL,
            ),
            2 => (
                sys::emuv_alloc {
                    flags: self.rng.random_range(1..u32::MAX),
                    ..ok
                },
                Errno::EINVAL,
            ),
            3 => (
                sys::emuv_alloc {
                    reserved: [self.rng.random_range(1..u64::MAX), 0],
                    ..ok
                },
                Errno::EINVAL,
            ),
            4 => (
                sys::emuv_alloc {
                    tier: self.rng.random_range(3..u32::MAX),
                    ..ok
                },
                Errno::EINVAL,
            ),
            _ => {
                // Any size but the struct's own.
                let size = self.rng.random_range(0..ok.size * 2 - 1);
                (
                    sys::emuv_alloc {
                        size: size + u32::from(size >= ok.size),
                        ..ok
                    },
                    Errno::EINVAL,
                )
            }
        };
        let file = self.files[i].as_ref().ok_or("file")?;
        check_eq(
            "bad alloc",
            file.device.alloc_raw(&mut req).err(),
            Some(want),
        )?;
        self.counts.errors_expected += 1;
        Ok(())
    }

    fn is_mapped(&self, file: u64, handle: u32) -> bool {
        self.mapped
            .iter()
            .any(|m| m.file == file && m.handle == handle)
    }

    fn free(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let handles: Vec<u32> = self.files[i]
            .as_ref()
            .ok_or("file")?
            .held
            .keys()
            .copied()
            .collect();
        let handle = match handles.is_empty() || self.rng.random_bool(0.1) {
            true => self.rng.random_range(0..1 << 20) | 1 << 20,
            false => handles[self.rng.random_range(0..handles.len())],
        };
        let mapped = self.is_mapped(self.file_id(i), handle);
        let file = self.files[i].as_mut().ok_or("file")?;
        let result = file.device.free(handle);
        match file.held.contains_key(&handle) {
            false => check_eq("free of an unknown handle", result, Err(Errno::ENOENT))?,
            true if mapped => check_eq("free while mapped", result, Err(Errno::EBUSY))?,
            true => {
                check_eq("free", result, Ok(()))?;
                let id = file.id;
                file.held.remove(&handle);
                self.shadow.remove(&(id, handle));
                return Ok(());
            }
        }
        self.counts.errors_expected += 1;
        Ok(())
    }

    fn query(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let id = self.file_id(i);
        let mapped: Vec<u32> = self
            .mapped
            .iter()
            .filter(|m| m.file == id)
            .map(|m| m.handle)
            .collect();
        let file = self.files[i].as_ref().ok_or("file")?;
        for (&handle, held) in &file.held {
            let q = file.device.query(handle).map_err(err("query"))?;
            check_eq("query bytes", q.bytes, held.bytes)?;
            check_eq("query offset", q.mmap_offset, held.offset)?;
            let maps = mapped.iter().filter(|&&h| h == handle).count() as u32;
            check_eq("query mappings", q.mappings, maps)?;
            check(q.resident <= q.bytes, || "resident above size".into())?;
        }
        check_eq(
            "query of an unknown handle",
            file.device.query(0).err(),
            Some(Errno::ENOENT),
        )
    }

    fn map(&mut self) -> TestResult {
        if self.mapped.len() >= MAX_MAPPINGS {
            return self.unmap();
        }
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let file = self.files[i].as_ref().ok_or("file")?;
        let Some((&handle, held)) = file
            .held
            .iter()
            .nth(self.rng.random_range(0..file.held.len().max(1)))
        else {
            return Ok(());
        };
        let pages = held.bytes / PAGE;
        let first = self.rng.random_range(0..pages);
        let count = self.rng.random_range(1..=(pages - first).min(64));
        let mut mapping = file
            .device
            .map_range(
                held.offset + first * PAGE,
                (count * PAGE) as usize,
                MapFlags::MAP_SHARED,
            )
            .map_err(err("mmap"))?;
        let file = file.id;
        let shadow = self.shadow.entry((file, handle)).or_default();
        for page in [0, count - 1] {
            let value = self.rng.random::<u8>();
            mapping.as_mut_slice()[(page * PAGE) as usize] = value;
            shadow.insert(first + page, value);
        }
        self.mapped.push(Mapped {
            mapping,
            file,
            handle,
            first,
        });
        Ok(())
    }

    fn bad_map(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let file = self.files[i].as_ref().ok_or("file")?;
        let held = file.held.iter().next();
        let (offset, len, flags) = match (held, self.rng.random_range(0..3)) {
            (Some((_, h)), 0) => (h.offset, (h.bytes + PAGE) as usize, MapFlags::MAP_SHARED),
            (Some((_, h)), 1) => (h.offset, PAGE as usize, MapFlags::MAP_PRIVATE),
            // A page at or beyond 2^44, where no mmap offset lies (uapi/emuv.h).
            _ => (
                self.rng.random_range(1u64 << 32..1 << 40) * PAGE,
                PAGE as usize,
                MapFlags::MAP_SHARED,
            ),
        };
        check_eq(
            "bad mmap",
            file.device.map_range(offset, len, flags).err(),
            Some(Errno::EINVAL),
        )?;
        self.counts.errors_expected += 1;
        Ok(())
    }

    /// Checks every page against what was written through any mapping (zero if nothing was:
    /// emuv hands out zeroed memory), then unmaps.
    fn unmap(&mut self) -> TestResult {
        if self.mapped.is_empty() {
            return Ok(());
        }
        let m = self
            .mapped
            .swap_remove(self.rng.random_range(0..self.mapped.len()));
        let written = self.shadow.get(&(m.file, m.handle));
        for (i, page) in m.mapping.as_slice().chunks(PAGE as usize).enumerate() {
            let want = written
                .and_then(|w| w.get(&(m.first + i as u64)))
                .copied()
                .unwrap_or(0);
            check_eq("data at unmap", page[0], want)
                .map_err(|e| format!("{e} (page {} of handle {})", m.first + i as u64, m.handle))?;
        }
        let file = m.file;
        drop(m);
        if !self.mapped.iter().any(|m| m.file == file)
            && self.closed_but_mapped.remove(&file).is_some()
        {
            // The kernel released the file and all its allocations.
            self.shadow.retain(|&(f, _), _| f != file);
        }
        Ok(())
    }

    /// Writes the start of a random page of a mapping (a lazy fault) and reads it back.
    fn touch(&mut self) -> TestResult {
        if self.mapped.is_empty() {
            return self.map();
        }
        let k = self.rng.random_range(0..self.mapped.len());
        let pages = self.mapped[k].mapping.len() as u64 / PAGE;
        let page = self.rng.random_range(0..pages);
        let value = self.rng.random::<u8>();
        let m = &mut self.mapped[k];
        m.mapping.as_mut_slice()[(page * PAGE) as usize] = value;
        check_eq(
            "touched byte",
            m.mapping.as_slice()[(page * PAGE) as usize],
            value,
        )?;
        let (file, handle, first) = (m.file, m.handle, m.first);
        self.shadow
            .entry((file, handle))
            .or_default()
            .insert(first + page, value);
        Ok(())
    }

    fn info(&mut self) -> TestResult {
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let file = self.files[i].as_ref().ok_or("file")?;
        let info = file.device.info().map_err(err("info"))?;
        check_eq("used + free", info.used + info.free, info.total)?;
        let held: u64 = file.held.values().map(|h| h.bytes).sum();
        check_eq("file_used", info.file_used, held)
    }

    /// A child shares this process's files (not its mappings: they are DONTCOPY); it asks,
    /// allocates and frees a little on them and exits, leaving everything as it was.
    fn fork_child(&mut self) -> TestResult {
        self.counts.forks += 1;
        let Some(i) = self.pick_file() else {
            return Ok(());
        };
        let seed = self.rng.random::<u64>();
        // SAFETY: single-threaded; the child makes system calls only and exits.
        match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                let file = self.files[i].as_ref();
                let ok = file.is_some_and(|f| {
                    let mut rng = StdRng::seed_from_u64(seed);
                    (0..4).all(|_| {
                        match f.device.alloc(rng.random_range(1..16) * PAGE, Tier::Any) {
                            Ok(a) => f.device.free(a.handle).is_ok(),
                            Err(e) => e == Errno::ENOMEM,
                        }
                    }) && f.device.info().is_ok()
                });
                // Skip Rust's exit handlers: the parent's state is the parent's.
                unsafe { nix::libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).map_err(err("waitpid"))? {
                WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!("forked child: {other:?}")),
            },
        }
    }

    /// A child opens, allocates, maps and touches on its own; it is killed at a random point.
    fn kill_child(&mut self) -> TestResult {
        self.counts.kills += 1;
        let (ready_r, ready_w) = pipe().map_err(err("pipe"))?;
        let steps = self.rng.random_range(0..6u32);
        // SAFETY: as in fork_child.
        match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                let _ = (|| -> Result<(), Errno> {
                    let device = Device::open()?;
                    let mut keep = Vec::new();
                    for step in 0..steps {
                        let a = device.alloc(u64::from(step + 1) * 8 * PAGE, Tier::Any)?;
                        let mut m = device.map(&a)?;
                        m.as_mut_slice()
                            .iter_mut()
                            .step_by(PAGE as usize)
                            .for_each(|b| *b = 1);
                        keep.push(m);
                    }
                    write(ready_w.as_fd(), b"r")?;
                    loop {
                        std::thread::park();
                    }
                })();
                unsafe { nix::libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                let mut buf = [0u8; 1];
                // Kill half of them before they are ready, half after.
                if self.rng.random_bool(0.5) {
                    let _ = read(&ready_r, &mut buf);
                }
                kill(child, Signal::SIGKILL).map_err(err("kill"))?;
                match waitpid(child, None).map_err(err("waitpid"))? {
                    WaitStatus::Signaled(_, Signal::SIGKILL, _) | WaitStatus::Exited(_, 0) => {
                        Ok(())
                    }
                    other => Err(format!("killed child: {other:?}")),
                }
            }
        }
    }
}

/// This process's usage as `EMUV_IOCTL_PROCESSES` reports it (0 if it is not listed).
fn reported_bytes(pid: u32) -> Result<u64, String> {
    let device = Device::open_read_only().map_err(err("open /dev/emuv read-only"))?;
    let processes = device.processes().map_err(err("EMUV_IOCTL_PROCESSES"))?;
    Ok(processes
        .iter()
        .find(|p| p.pid == Some(pid))
        .map_or(0, |p| p.bytes))
}

/// One worker process: `ops` operations from `seed`, checking the kernel's per-process view
/// every `checkpoint` operations. Exit code 0 if every check held.
fn worker(seed: u64, ops: u64) -> ! {
    let mut w = Worker {
        rng: StdRng::seed_from_u64(seed),
        files: Vec::new(),
        next_file_id: 0,
        closed_but_mapped: BTreeMap::new(),
        mapped: Vec::new(),
        shadow: Shadow::new(),
        counts: Counts::default(),
    };
    let me = std::process::id();
    let result = (|| -> TestResult {
        for n in 0..ops {
            w.op().map_err(|e| format!("op {n}: {e}"))?;
            if n % 2000 == 1999 {
                check_eq(
                    "this process's usage in /dev/emuv",
                    reported_bytes(me)?,
                    w.expected_bytes(),
                )
                .map_err(|e| format!("op {n}: {e}"))?;
            }
        }
        check_eq("usage at the end", reported_bytes(me)?, w.expected_bytes())
    })();
    let c = &w.counts;
    println!(
        "# worker {me} seed {seed}: {} ops, {} expected errors, {} ENOMEM, {} forks, {} kills{}",
        c.ops,
        c.errors_expected,
        c.enomem,
        c.forks,
        c.kills,
        result
            .as_ref()
            .err()
            .map_or(String::new(), |e| format!(": FAILED {e}"))
    );
    unsafe { nix::libc::_exit(i32::from(result.is_err())) }
}

fn run(tap: &Tap, params: &str, seed: u64, ops: u64, workers: u64) -> TestResult {
    module::with_loaded(params, || {
        let start = std::time::Instant::now();
        let mut children: Vec<Pid> = Vec::new();
        for k in 0..workers {
            // SAFETY: single-threaded; each child runs `worker` and exits.
            match unsafe { fork() }.map_err(err("fork"))? {
                ForkResult::Child => worker(seed.wrapping_add(k), ops / workers),
                ForkResult::Parent { child } => children.push(child),
            }
        }
        let mut failed = 0;
        for child in children {
            match waitpid(child, None).map_err(err("waitpid"))? {
                WaitStatus::Exited(_, 0) => {}
                _ => failed += 1,
            }
        }
        let elapsed = start.elapsed();
        tap.note(format!(
            "{params}: {ops} ops by {workers} processes in {:.1} s ({:.0} ops/s)",
            elapsed.as_secs_f64(),
            ops as f64 / elapsed.as_secs_f64()
        ));
        check_eq("failed workers", failed, 0)?;
        check_eq("used after everyone exited", attr_u64("used_bytes")?, 0)?;
        emuv_tests::settle_scrubbing()?;
        check_eq(
            "free after everyone exited",
            attr_u64("free_bytes")?,
            attr_u64("total_vram_bytes")?,
        )?;
        if !params.contains("lazy_allocation=0") {
            check_eq(
                "resident after everyone exited",
                attr_u64("resident_bytes")?,
                0,
            )?;
        }
        let listed = Device::open_read_only()
            .and_then(|ro| ro.processes())
            .map_err(err("EMUV_IOCTL_PROCESSES"))?;
        let left: Vec<_> = listed.iter().filter(|p| p.allocations > 0).collect();
        check(left.is_empty(), || {
            format!("processes still listed: {left:?}")
        })
    })
}

fn main() {
    let ops = env_u64("EMUV_FUZZ_OPS", 20_000);
    let workers = env_u64("EMUV_FUZZ_WORKERS", 4).max(1);
    let seed = env_u64(
        "EMUV_FUZZ_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    );
    let mut tap = Tap::new(2);
    tap.note(format!(
        "replay with EMUV_FUZZ_SEED={seed} EMUV_FUZZ_OPS={ops} EMUV_FUZZ_WORKERS={workers}"
    ));
    // Small tiers, so the pool fills up and ENOMEM is part of the run.
    let lazy = "physical_vram_mb=48 virtual_vram_mb=16";
    let eager = "lazy_allocation=0 physical_vram_mb=24 virtual_vram_mb=8";
    tap.test(
        "lazy pool: every answer as modelled, nothing left",
        run(&tap, lazy, seed, ops / 2, workers),
    );
    tap.test(
        "eager pool: every answer as modelled, nothing left",
        run(&tap, eager, seed ^ 0x5eed, ops / 2, workers),
    );
    tap.finish()
}
