// SPDX-License-Identifier: GPL-2.0
//! Per-cgroup VRAM quotas through the kernel's dmem controller: each card is a region named
//! `emuv/<node>` of the card's size, every allocation is charged to the allocating task's cgroup
//! before it is made and refused with `ENOMEM` past `dmem.max` (of the cgroup or an ancestor),
//! `dmem.current` is exactly what the cgroup's processes hold — over a random sequence, under
//! concurrent allocators racing the limit, after a `SIGKILL`, while a closed file's mapping
//! lives — and a user who may not write the cgroup's files cannot raise its limit. Skipped,
//! with the reason, on kernels without `CONFIG_CGROUP_DMEM` (Debian's 7.2).

use emuv::{Device, Tier};
use emuv_tests::{
    cgroup_root, err, in_child, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    sys::{
        signal::{kill, Signal},
        wait::waitpid,
    },
    unistd::{fork, pipe, ForkResult},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: u64 = 4096;
const NOBODY: u32 = 65534;
/// Card 0's region and a 4 GiB lazy card: limits well below it are what the tests set.
const REGION: &str = "emuv/emuv";
const CARD: &str = "physical_vram_mb=4096 lazy_allocation=1";

/// A cgroup of the v2 hierarchy with the dmem controller on for it (and its children); removed
/// on drop, once its processes are gone.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(parent: &Path, name: &str) -> Result<Self, String> {
        fs::write(parent.join("cgroup.subtree_control"), "+dmem")
            .map_err(err("enable dmem for the children"))?;
        let path = parent.join(name);
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).map_err(err(&format!("mkdir {}", path.display())))?;
        Ok(Self(path))
    }

    fn child(&self, name: &str) -> Result<Self, String> {
        Self::new(&self.0, name)
    }

    fn set_max(&self, region: &str, limit: &str) -> Result<(), String> {
        fs::write(self.0.join("dmem.max"), format!("{region} {limit}"))
            .map_err(err(&format!("dmem.max = {region} {limit}")))
    }

    /// `region`'s value in one of the cgroup's dmem files.
    fn value(&self, file: &str, region: &str) -> Result<String, String> {
        let text = fs::read_to_string(self.0.join(file)).map_err(err(file))?;
        region_value(&text, region)
            .map(str::to_owned)
            .ok_or_else(|| format!("{file} has no {region}: {text:?}"))
    }

    fn current(&self) -> Result<u64, String> {
        self.value("dmem.current", REGION)?
            .parse()
            .map_err(err("dmem.current"))
    }

    /// Moves the calling process (all its threads) into the cgroup.
    fn join(&self) -> Result<(), String> {
        fs::write(self.0.join("cgroup.procs"), "0").map_err(err("join the cgroup"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A killed member leaves the cgroup a moment after `waitpid`.
        let start = Instant::now();
        while fs::remove_dir(&self.0).is_err() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The value after `region ` on its line of a dmem file.
fn region_value<'a>(text: &'a str, region: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(region)?.strip_prefix(' '))
}

fn capacity() -> Result<String, String> {
    fs::read_to_string(cgroup_root("dmem")?.join("dmem.capacity")).map_err(err("dmem.capacity"))
}

fn used(dev: &Device) -> Result<u64, String> {
    Ok(dev.info().map_err(err("INFO"))?.used)
}

/// `dmem.capacity` lists every card under its node's name and size, cards made through
/// configfs too, and no region outlives its card.
fn regions_are_the_cards() -> Result<(), String> {
    module::with_loaded(
        "gpu_count=2 physical_vram_mb=3072 virtual_vram_mb=1024 lazy_allocation=1",
        || {
            let text = capacity()?;
            check_eq(
                "emuv/emuv",
                region_value(&text, "emuv/emuv"),
                Some("4294967296"),
            )?;
            check_eq(
                "emuv/emuv1",
                region_value(&text, "emuv/emuv1"),
                Some("4294967296"),
            )?;
            let configfs = Path::new("/sys/kernel/config/emuv");
            if configfs.exists() {
                let dir = configfs.join("dmem-test");
                fs::create_dir(&dir).map_err(err("mkdir configfs card"))?;
                let made = (|| {
                    fs::write(dir.join("physical_vram_mb"), "256")
                        .map_err(err("physical_vram_mb"))?;
                    fs::write(dir.join("virtual_vram_mb"), "0").map_err(err("virtual_vram_mb"))?;
                    fs::write(dir.join("enabled"), "1").map_err(err("enabled"))?;
                    let index = fs::read_to_string(dir.join("index")).map_err(err("index"))?;
                    let region = format!("emuv/emuv{}", index.trim());
                    check_eq(
                        "the configfs card's region",
                        region_value(&capacity()?, &region).map(str::to_owned),
                        Some((256 * MIB).to_string()),
                    )?;
                    Ok::<_, String>(region)
                })();
                let disabled = fs::write(dir.join("enabled"), "0").map_err(err("enabled=0"));
                let removed = fs::remove_dir(&dir).map_err(err("rmdir configfs card"));
                disabled?;
                let region = made?;
                removed?;
                check_eq(
                    "the removed card's region",
                    region_value(&capacity()?, &region),
                    None,
                )?;
            }
            Ok(())
        },
    )?;
    let text = capacity()?;
    check(!text.contains("emuv/"), || {
        format!("regions left after rmmod: {text:?}")
    })
}

/// A cgroup limited to 1 GiB of a 4 GiB card: allocations up to the limit succeed, the one past
/// it fails with `ENOMEM` and changes nothing, while a sibling cgroup still allocates 2 GiB.
fn max_refuses_past_the_limit() -> Result<(), String> {
    module::with_loaded(CARD, || {
        let root = cgroup_root("dmem")?;
        let limited = Cgroup::new(root, "emuv-dmem-a")?;
        let other = Cgroup::new(root, "emuv-dmem-b")?;
        limited.set_max(REGION, "1G")?;
        check_eq(
            "dmem.max as read back",
            limited.value("dmem.max", REGION)?,
            GIB.to_string(),
        )?;
        let (a, b) = (&limited, &other);
        in_child(None, || {
            a.join()?;
            let dev = Device::open().map_err(err("open"))?;
            let first = dev.alloc(512 * MIB, Tier::Any).map_err(err("512 MiB"))?;
            dev.alloc(256 * MIB, Tier::Any)
                .map_err(err("256 MiB more"))?;
            check_eq("dmem.current", a.current()?, 768 * MIB)?;
            check_eq(
                "512 MiB past the limit",
                dev.alloc(512 * MIB, Tier::Any).err(),
                Some(Errno::ENOMEM),
            )?;
            check_eq("dmem.current after the refusal", a.current()?, 768 * MIB)?;
            check_eq(
                "card's used memory after the refusal",
                used(&dev)?,
                768 * MIB,
            )?;
            // The sibling's share is its own.
            let sibling = in_child(None, || {
                b.join()?;
                let dev = Device::open().map_err(err("open"))?;
                dev.alloc(2 * GIB, Tier::Any)
                    .map_err(err("2 GiB in the other cgroup"))?;
                Ok(b.current()?.to_string())
            })?;
            check_eq(
                "the other cgroup's dmem.current",
                sibling,
                (2 * GIB).to_string(),
            )?;
            dev.alloc(256 * MIB, Tier::Any)
                .map_err(err("up to the limit exactly"))?;
            check_eq(
                "one page more",
                dev.alloc(PAGE, Tier::Any).err(),
                Some(Errno::ENOMEM),
            )?;
            dev.free(first.handle).map_err(err("free"))?;
            check_eq("dmem.current after a free", a.current()?, 512 * MIB)?;
            dev.alloc(512 * MIB, Tier::Any)
                .map_err(err("what the free gave back"))?;
            Ok(String::new())
        })?;
        check_eq(
            "dmem.current once the process is gone",
            limited.current()?,
            0,
        )?;
        check_eq(
            "the other cgroup's, once its process is gone",
            other.current()?,
            0,
        )
    })
}

/// A parent's limit binds its children: the child cgroup has none of its own.
fn ancestors_limit_too() -> Result<(), String> {
    module::with_loaded(CARD, || {
        let parent = Cgroup::new(cgroup_root("dmem")?, "emuv-dmem-parent")?;
        parent.set_max(REGION, &(64 * MIB).to_string())?;
        let child = parent.child("job")?;
        let (p, c) = (&parent, &child);
        in_child(None, || {
            c.join()?;
            let dev = Device::open().map_err(err("open"))?;
            dev.alloc(64 * MIB, Tier::Any).map_err(err("64 MiB"))?;
            check_eq(
                "a page past the parent's limit",
                dev.alloc(PAGE, Tier::Any).err(),
                Some(Errno::ENOMEM),
            )?;
            check_eq(
                "the child's own limit",
                c.value("dmem.max", REGION)?,
                "max".to_owned(),
            )?;
            check_eq("the parent's dmem.current", p.current()?, 64 * MIB)?;
            check_eq("the child's dmem.current", c.current()?, 64 * MIB)?;
            Ok(String::new())
        })?;
        drop(child);
        check_eq("the parent's dmem.current at the end", parent.current()?, 0)
    })
}

/// `dmem.current` after every step of a random sequence of allocations and frees equals the
/// bytes held, as the card itself counts them.
fn current_tracks_a_random_sequence(tap: &Tap) -> Result<(), String> {
    let seed: u64 = std::env::var("EMUV_DMEM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    tap.note(format!(
        "random sequence seed {seed} (EMUV_DMEM_SEED replays it)"
    ));
    module::with_loaded(CARD, || {
        let cgroup = Cgroup::new(cgroup_root("dmem")?, "emuv-dmem-seq")?;
        cgroup.set_max(REGION, "1G")?;
        let cg = &cgroup;
        in_child(None, move || {
            cg.join()?;
            let mut rng = StdRng::seed_from_u64(seed);
            let dev = Device::open().map_err(err("open"))?;
            let mut held = Vec::new();
            let mut bytes = 0u64;
            for step in 0..1500 {
                if held.is_empty() || rng.random_bool(0.55) {
                    let size =
                        rng.random_range(1..=96 * MIB / PAGE) * PAGE - rng.random_range(0..PAGE);
                    let rounded = size.next_multiple_of(PAGE);
                    match dev.alloc(size, Tier::Any) {
                        Ok(a) => {
                            check_eq("allocated size", a.bytes, rounded)?;
                            bytes += rounded;
                            held.push(a);
                        }
                        Err(Errno::ENOMEM) => check(bytes + rounded > GIB, || {
                            format!("step {step}: ENOMEM for {rounded} with {bytes} held")
                        })?,
                        Err(e) => return Err(format!("step {step}: alloc {size}: {e}")),
                    }
                } else {
                    let a = held.swap_remove(rng.random_range(0..held.len()));
                    dev.free(a.handle).map_err(err("free"))?;
                    bytes -= a.bytes;
                }
                let current = cg.current()?;
                check(current == bytes && used(&dev)? == bytes, || {
                    format!("step {step}: dmem.current {current}, held {bytes}")
                })?;
            }
            drop(dev);
            check_eq("dmem.current after close", cg.current()?, 0)?;
            Ok(String::new())
        })
        .map(drop)
    })
}

/// Four processes of two threads each race allocations and frees against a 256 MiB limit while
/// a process of a sibling cgroup does the same on the same card without one: what the limited
/// ones hold never passes the limit, what they are refused the sibling is not, and everything
/// is given back.
///
/// What they hold is one counter in shared memory: raised after an ALLOC returns and lowered
/// before a FREE is made, so it never exceeds what is really charged. (`dmem.current` itself
/// may be read a moment past the limit: the page counter adds a charge before it checks it. A
/// sum of per-thread counters would not do either: read one by one, memory freed by one thread
/// and taken by another can be counted twice.)
fn concurrent_allocators_never_pass_the_limit() -> Result<(), String> {
    const LIMIT: u64 = 256 * MIB;
    module::with_loaded(CARD, || {
        let root = cgroup_root("dmem")?;
        let limited = Cgroup::new(root, "emuv-dmem-race")?;
        let free = Cgroup::new(root, "emuv-dmem-free")?;
        limited.set_max(REGION, &LIMIT.to_string())?;
        let held = SharedCounts::new(2)?;
        let worker = |cg: &Cgroup, k: usize| -> Result<String, String> {
            cg.join()?;
            let threads: Vec<_> = (0..2)
                .map(|t| {
                    let held = held.clone();
                    let limited = k < 4;
                    // The limited cgroup's counter, or the other's.
                    let slot = usize::from(!limited);
                    std::thread::spawn(move || -> Result<u64, String> {
                        let mut rng = StdRng::seed_from_u64((k * 2 + t) as u64);
                        let dev = Device::open().map_err(err("open"))?;
                        let mut mine = Vec::new();
                        let mut refused = 0;
                        for _ in 0..400 {
                            if mine.is_empty() || rng.random_bool(0.6) {
                                match dev.alloc(rng.random_range(1..=8192) * PAGE, Tier::Any) {
                                    Ok(a) => {
                                        let total = held.add(slot, a.bytes);
                                        check(!limited || total <= LIMIT, || {
                                            format!("the limited cgroup holds {total}, past its limit {LIMIT}")
                                        })?;
                                        mine.push(a);
                                    }
                                    Err(Errno::ENOMEM) => refused += 1,
                                    Err(e) => return Err(format!("alloc: {e}")),
                                }
                            } else {
                                let a = mine.swap_remove(rng.random_range(0..mine.len()));
                                held.sub(slot, a.bytes);
                                dev.free(a.handle).map_err(err("free"))?;
                            }
                        }
                        // Counted out before closing the file gives the rest back.
                        for a in &mine {
                            held.sub(slot, a.bytes);
                        }
                        drop(dev);
                        Ok(refused)
                    })
                })
                .collect();
            let mut refused = 0;
            for t in threads {
                refused += t.join().map_err(|_| "a thread panicked".to_owned())??;
            }
            Ok(refused.to_string())
        };
        let mut children = Vec::new();
        for k in 0..5 {
            let cg = if k < 4 { &limited } else { &free };
            let (rx, tx) = pipe().map_err(err("pipe"))?;
            // SAFETY: the child runs the worker and exits; this process has one thread.
            match unsafe { fork() }.map_err(err("fork"))? {
                ForkResult::Child => {
                    drop(rx);
                    let text = match worker(cg, k) {
                        Ok(s) => format!("ok:{s}"),
                        Err(s) => format!("err:{s}"),
                    };
                    let _ = fs::File::from(tx).write_all(text.as_bytes());
                    std::process::exit(0)
                }
                ForkResult::Parent { child } => {
                    drop(tx);
                    children.push((child, rx));
                }
            }
        }
        let mut answers = Vec::new();
        for (child, rx) in children {
            let mut text = String::new();
            let _ = fs::File::from(rx).read_to_string(&mut text);
            waitpid(child, None).map_err(err("waitpid"))?;
            answers.push(text);
        }
        for (k, answer) in answers.iter().enumerate() {
            check(answer.starts_with("ok:"), || {
                format!("worker {k}: {answer}")
            })?;
        }
        let refused = |k: usize| {
            answers[k]
                .trim_start_matches("ok:")
                .parse::<u64>()
                .unwrap_or(0)
        };
        check((0..4).map(refused).sum::<u64>() > 0, || {
            "the limited workers were never refused: the race did not reach the limit".to_owned()
        })?;
        check_eq("refusals without a limit", refused(4), 0)?;
        check_eq(
            "the limited cgroup's dmem.current at the end",
            limited.current()?,
            0,
        )?;
        check_eq("the other's", free.current()?, 0)?;
        let dev = Device::open_read_only().map_err(err("open"))?;
        check_eq("the card's used memory at the end", used(&dev)?, 0)
    })
}

/// Counters in memory shared by forked processes and their threads.
#[derive(Clone)]
struct SharedCounts(std::sync::Arc<SharedMap>);

struct SharedMap {
    ptr: std::ptr::NonNull<std::ffi::c_void>,
    len: usize,
}

// SAFETY: the map is only reached through atomics.
unsafe impl Send for SharedMap {}
// SAFETY: as above.
unsafe impl Sync for SharedMap {}

impl SharedCounts {
    fn new(count: usize) -> Result<Self, String> {
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        let len = count * 8;
        // SAFETY: a new anonymous shared mapping, zeroed by the kernel.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                std::num::NonZeroUsize::new(len).ok_or("no counters")?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .map_err(err("mmap"))?;
        Ok(Self(std::sync::Arc::new(SharedMap { ptr, len })))
    }

    fn counters(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: the mapping holds `len / 8` zero-initialised, aligned u64s for as long as
        // `self` lives, and is only accessed atomically.
        unsafe { std::slice::from_raw_parts(self.0.ptr.as_ptr().cast(), self.0.len / 8) }
    }

    /// Adds `bytes` to counter `slot`; the new value.
    fn add(&self, slot: usize, bytes: u64) -> u64 {
        self.counters()[slot].fetch_add(bytes, std::sync::atomic::Ordering::SeqCst) + bytes
    }

    fn sub(&self, slot: usize, bytes: u64) {
        self.counters()[slot].fetch_sub(bytes, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `SharedCounts::new`, no longer referenced.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr, self.len) };
    }
}

/// A process killed with `SIGKILL` while holding allocations and a touched mapping: its
/// cgroup's charge goes with its files.
fn sigkill_uncharges() -> Result<(), String> {
    module::with_loaded(CARD, || {
        let cgroup = Cgroup::new(cgroup_root("dmem")?, "emuv-dmem-kill")?;
        let (rx, tx) = pipe().map_err(err("pipe"))?;
        // SAFETY: the child only allocates, reports and waits to be killed.
        match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                drop(rx);
                let hold = (|| {
                    cgroup.join()?;
                    let dev = Device::open().map_err(err("open"))?;
                    for _ in 0..3 {
                        dev.alloc(100 * MIB, Tier::Any).map_err(err("alloc"))?;
                    }
                    let small = dev.alloc(4 * MIB, Tier::Any).map_err(err("alloc"))?;
                    let mut map = dev.map(&small).map_err(err("mmap"))?;
                    map.as_mut_slice().fill(0x5a);
                    Ok::<_, String>((dev, map))
                })();
                let _ = fs::File::from(tx).write_all(if hold.is_ok() { b"y" } else { b"n" });
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            ForkResult::Parent { child } => {
                drop(tx);
                let mut answer = [0u8; 1];
                let read = fs::File::from(rx).read(&mut answer);
                let before = cgroup.current();
                kill(child, Signal::SIGKILL).map_err(err("kill"))?;
                waitpid(child, None).map_err(err("waitpid"))?;
                check(matches!(read, Ok(1)) && answer[0] == b'y', || {
                    "the child could not allocate".to_owned()
                })?;
                check_eq("dmem.current while it held", before?, 304 * MIB)?;
                let start = Instant::now();
                while cgroup.current()? != 0 && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                check_eq("dmem.current after SIGKILL", cgroup.current()?, 0)
            }
        }
    })
}

/// A mapping outlives its file: the memory, and its charge, stay until it is unmapped.
fn charge_lasts_while_mapped() -> Result<(), String> {
    module::with_loaded(CARD, || {
        let cgroup = Cgroup::new(cgroup_root("dmem")?, "emuv-dmem-map")?;
        let cg = &cgroup;
        in_child(None, || {
            cg.join()?;
            let dev = Device::open().map_err(err("open"))?;
            let a = dev.alloc(8 * MIB, Tier::Any).map_err(err("alloc"))?;
            let map = dev.map(&a).map_err(err("mmap"))?;
            check_eq(
                "FREE while mapped",
                dev.free(a.handle).err(),
                Some(Errno::EBUSY),
            )?;
            drop(dev);
            check_eq(
                "dmem.current after close, still mapped",
                cg.current()?,
                8 * MIB,
            )?;
            drop(map);
            check_eq("dmem.current after munmap", cg.current()?, 0)?;
            Ok(String::new())
        })
        .map(drop)
    })
}

/// A user the cgroup's files do not belong to cannot raise (or clear) its limit, and stays
/// bound by it.
fn unprivileged_cannot_raise_its_limit() -> Result<(), String> {
    module::with_loaded(CARD, || {
        fs::set_permissions(
            "/dev/emuv",
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .map_err(err("chmod /dev/emuv"))?;
        let cgroup = Cgroup::new(cgroup_root("dmem")?, "emuv-dmem-user")?;
        cgroup.set_max(REGION, &(16 * MIB).to_string())?;
        // Joined as root (moving needs write access to cgroup.procs), then run as nobody.
        let cg = &cgroup;
        in_child(None, || {
            cg.join()?;
            in_child(Some(NOBODY), || {
                let raised = fs::write(cg.0.join("dmem.max"), format!("{REGION} max"));
                check_eq(
                    "writing dmem.max as nobody",
                    raised.map_err(|e| e.raw_os_error()),
                    Err(Some(Errno::EACCES as i32)),
                )?;
                let dev = Device::open().map_err(err("open"))?;
                dev.alloc(16 * MIB, Tier::Any).map_err(err("16 MiB"))?;
                check_eq(
                    "a page past the limit",
                    dev.alloc(PAGE, Tier::Any).err(),
                    Some(Errno::ENOMEM),
                )?;
                Ok(String::new())
            })
        })?;
        check_eq(
            "dmem.max at the end",
            cgroup.value("dmem.max", REGION)?,
            (16 * MIB).to_string(),
        )
    })
}

/// One test: its TAP line's name and what it runs.
type TestFn = dyn Fn(&Tap) -> Result<(), String>;

fn main() {
    let tests: [(&str, &TestFn); 7] = [
        ("dmem.capacity lists every card as emuv/<node> of its size, configfs cards too, none after rmmod", &|_| regions_are_the_cards()),
        ("dmem.max: the allocation past 1 GiB of a 4 GiB card fails with ENOMEM, another cgroup still allocates", &|_| max_refuses_past_the_limit()),
        ("a parent cgroup's dmem.max binds its children", &|_| ancestors_limit_too()),
        ("dmem.current equals what is held after every step of a random sequence", &current_tracks_a_random_sequence),
        ("8 racing threads in one cgroup never take it past its limit; all is given back", &|_| concurrent_allocators_never_pass_the_limit()),
        ("a SIGKILLed process's charge goes with it", &|_| sigkill_uncharges()),
        ("the charge lasts while a closed file's mapping lives", &|_| charge_lasts_while_mapped()),
    ];
    let mut tap = Tap::new(tests.len() + 1);
    let controllers = cgroup_root("").and_then(|root| {
        fs::read_to_string(root.join("cgroup.controllers")).map_err(err("cgroup.controllers"))
    });
    let reason = match &controllers {
        Ok(text) if text.split_whitespace().any(|c| c == "dmem") => None,
        Ok(_) => Some("this kernel has no dmem cgroup controller (CONFIG_CGROUP_DMEM); the per-user limit is the quota here".to_owned()),
        Err(e) => Some(format!("no cgroup v2 hierarchy: {e}")),
    };
    for (name, test) in tests {
        match &reason {
            Some(why) => tap.skip(name, why),
            None => {
                tap.test(name, test(&tap));
            }
        }
    }
    let name = "a user who does not own the cgroup cannot raise its dmem.max";
    match &reason {
        Some(why) => tap.skip(name, why),
        None => {
            tap.test(name, unprivileged_cannot_raise_its_limit());
        }
    }
    tap.finish()
}
