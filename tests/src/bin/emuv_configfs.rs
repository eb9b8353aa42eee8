// SPDX-License-Identifier: GPL-2.0
//! Cards at run time through configfs (`/sys/kernel/config/emuv/<name>/`): create, configure,
//! enable (the card appears at the next free index), use, and remove them; every refusal
//! (settings and `enabled=0` while in use, `rmdir` of an enabled card, `gpu_count`'s cards);
//! every bad value `EINVAL` with a `dmesg` line; a card lost through configfs; and 200 random
//! create/remove cycles while workers use whatever cards exist.

use emuv::{Device, Tier};
use emuv_tests::{
    err,
    kmsg::Kmsg,
    module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    sys::mman::{mmap, munmap, MapFlags, ProtFlags},
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    fs,
    num::NonZeroUsize,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
};

const ROOT: &str = "/sys/kernel/config/emuv";
const MIB: u64 = 1 << 20;

fn dir(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

fn write(name: &str, attr: &str, value: &str) -> Result<(), Errno> {
    fs::write(dir(name).join(attr), value).map_err(errno)
}

fn read(name: &str, attr: &str) -> Result<String, String> {
    let path = dir(name).join(attr);
    fs::read_to_string(&path)
        .map(|s| s.trim_end().to_owned())
        .map_err(err(&path.display().to_string()))
}

fn mkdir(name: &str) -> Result<(), Errno> {
    fs::create_dir(dir(name)).map_err(errno)
}

fn rmdir(name: &str) -> Result<(), Errno> {
    fs::remove_dir(dir(name)).map_err(errno)
}

fn node(index: u32) -> PathBuf {
    match index {
        0 => PathBuf::from("/dev/emuv"),
        i => PathBuf::from(format!("/dev/emuv{i}")),
    }
}

fn card_attr(index: u32, name: &str) -> Result<String, String> {
    let base = match index {
        0 => "/sys/class/emuv/emuv".to_owned(),
        i => format!("/sys/class/emuv/emuv{i}"),
    };
    fs::read_to_string(Path::new(&base).join(name))
        .map(|s| s.trim_end().to_owned())
        .map_err(err(&format!("{base}/{name}")))
}

/// Makes a card directory with `settings` and enables it; returns its index.
fn make_card(name: &str, settings: &[(&str, &str)]) -> Result<u32, String> {
    mkdir(name).map_err(err(&format!("mkdir {name}")))?;
    for (attr, value) in settings {
        write(name, attr, value).map_err(err(&format!("{name}/{attr}={value}")))?;
    }
    write(name, "enabled", "1").map_err(err(&format!("{name}/enabled=1")))?;
    read(name, "index")?
        .parse()
        .map_err(err(&format!("{name}/index")))
}

/// Disables and removes every card directory that `mkdir` made.
fn remove_all() {
    let Ok(entries) = fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let _ = write(&name, "fail", "none");
        let _ = write(&name, "enabled", "0");
        let _ = rmdir(&name);
    }
}

/// A shared mapping; unmapped on drop.
struct Map(std::ptr::NonNull<std::ffi::c_void>, usize);

impl Map {
    fn new(dev: &Device, offset: u64, len: usize) -> Result<Self, Errno> {
        // SAFETY: a new shared mapping of the device, where the kernel puts it.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).ok_or(Errno::EINVAL)?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                dev.as_fd(),
                offset as i64,
            )
        }?;
        Ok(Self(ptr, len))
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped.
        let _ = unsafe { munmap(self.0, self.1) };
    }
}

fn lifecycle() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=16 virtual_vram_mb=0", || {
        mkdir("a").map_err(err("mkdir a"))?;
        check_eq("enabled after mkdir", read("a", "enabled")?.as_str(), "0")?;
        check_eq("index after mkdir", read("a", "index")?.as_str(), "-1")?;
        check_eq(
            "defaults from the module",
            read("a", "physical_vram_mb")?.as_str(),
            "16",
        )?;
        for (attr, value) in [
            ("gpu_model", "RTX 4090"),
            ("physical_vram_mb", "64"),
            ("virtual_vram_mb", "32"),
            ("lazy_allocation", "0"),
            ("vram_limit_per_file_mb", "8"),
        ] {
            write("a", attr, value).map_err(err(&format!("a/{attr}={value}")))?;
        }
        check_eq("gpu_model", read("a", "gpu_model")?.as_str(), "4090")?;
        write("a", "enabled", "1").map_err(err("enabled=1"))?;
        check_eq("index", read("a", "index")?.as_str(), "1")?;
        check(node(1).exists(), || "/dev/emuv1 missing".into())?;
        check_eq(
            "card 1's gpu_name",
            card_attr(1, "gpu_name")?.as_str(),
            "NVIDIA GeForce RTX 4090",
        )?;
        check_eq(
            "card 1's total_vram_bytes",
            card_attr(1, "total_vram_bytes")?,
            (96 * MIB).to_string(),
        )?;
        check_eq(
            "card 1's strategy",
            card_attr(1, "allocation_strategy")?.as_str(),
            "eager",
        )?;
        // In use: its limits are the directory's.
        let dev = Device::open_path(node(1), true).map_err(err("open /dev/emuv1"))?;
        check_eq(
            "alloc over the per-file limit",
            dev.alloc(9 * MIB, Tier::Any).map(drop),
            Err(Errno::ENOMEM),
        )?;
        let a = dev.alloc(8 * MIB, Tier::Any).map_err(err("alloc"))?;
        let map = Map::new(&dev, a.mmap_offset, a.bytes as usize).map_err(err("mmap"))?;
        for (attr, value) in [
            ("gpu_model", "4060"),
            ("physical_vram_mb", "8"),
            ("lazy_allocation", "1"),
        ] {
            check_eq(
                &format!("{attr} while enabled"),
                write("a", attr, value),
                Err(Errno::EBUSY),
            )?;
        }
        check_eq(
            "enabled=0 while open and mapped",
            write("a", "enabled", "0"),
            Err(Errno::EBUSY),
        )?;
        check_eq("rmdir while enabled", rmdir("a"), Err(Errno::EBUSY))?;
        drop(dev);
        check_eq(
            "enabled=0 while mapped",
            write("a", "enabled", "0"),
            Err(Errno::EBUSY),
        )?;
        drop(map);
        write("a", "enabled", "0").map_err(err("enabled=0"))?;
        check(!node(1).exists(), || "/dev/emuv1 still there".into())?;
        check_eq("index after enabled=0", read("a", "index")?.as_str(), "-1")?;
        write("a", "physical_vram_mb", "8").map_err(err("a setting after enabled=0"))?;
        rmdir("a").map_err(err("rmdir a"))?;
        Ok(())
    })
}

fn bad_values() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=16 virtual_vram_mb=0", || {
        mkdir("b").map_err(err("mkdir b"))?;
        let result = (|| {
            let mut log = Kmsg::new();
            for (attr, value, line) in [
                ("gpu_model", "9999", "invalid gpu_model=9999: unknown model"),
                ("physical_vram_mb", "0", "invalid physical_vram_mb=0"),
                ("physical_vram_mb", "lots", "invalid physical_vram_mb=lots"),
                ("virtual_vram_mb", "-1", "invalid virtual_vram_mb=-1"),
                ("lazy_allocation", "maybe", "invalid lazy_allocation=maybe"),
                (
                    "vram_limit_per_file_mb",
                    "1e3",
                    "invalid vram_limit_per_file_mb=1e3",
                ),
                ("enabled", "2", "invalid enabled=2"),
                ("fail", "lost", ""),
                ("ecc_errors", "1", ""),
            ] {
                let want = if line.is_empty() {
                    Errno::ENODEV
                } else {
                    Errno::EINVAL
                };
                check_eq(
                    &format!("{attr}={value}"),
                    write("b", attr, value),
                    Err(want),
                )?;
                let lines = log.read_new();
                check(
                    line.is_empty() || lines.iter().any(|l| l.contains(line)),
                    || format!("no dmesg line {line:?}: {lines:?}"),
                )?;
            }
            check_eq(
                "settings kept",
                read("b", "physical_vram_mb")?.as_str(),
                "16",
            )?;
            // An eager card that cannot fit: ENOMEM, nothing made.
            write("b", "lazy_allocation", "0").map_err(err("lazy_allocation=0"))?;
            write("b", "physical_vram_mb", "1048576").map_err(err("physical_vram_mb"))?;
            check_eq(
                "enabling a card that does not fit",
                write("b", "enabled", "1"),
                Err(Errno::ENOMEM),
            )?;
            check_eq("enabled after ENOMEM", read("b", "enabled")?.as_str(), "0")?;
            check(!node(1).exists(), || "a card appeared".into())
        })();
        let _ = rmdir("b");
        result
    })
}

fn module_cards_are_read_only() -> Result<(), String> {
    module::with_loaded("gpu_count=2 physical_vram_mb=16 virtual_vram_mb=0", || {
        for (name, index) in [("emuv", "0"), ("emuv1", "1")] {
            check_eq(
                &format!("{name}/enabled"),
                read(name, "enabled")?.as_str(),
                "1",
            )?;
            check_eq(
                &format!("{name}/index"),
                read(name, "index")?.as_str(),
                index,
            )?;
            check_eq(
                &format!("{name}/physical_vram_mb"),
                read(name, "physical_vram_mb")?.as_str(),
                "16",
            )?;
        }
        check_eq(
            "emuv1/enabled=0",
            write("emuv1", "enabled", "0"),
            Err(Errno::EPERM),
        )?;
        check_eq(
            "emuv1/gpu_model",
            write("emuv1", "gpu_model", "4090"),
            Err(Errno::EBUSY),
        )?;
        check_eq(
            "rmdir emuv1",
            rmdir("emuv1").map_err(|e| e == Errno::EPERM || e == Errno::EBUSY),
            Err(true),
        )?;
        check_eq("mkdir emuv1", mkdir("emuv1"), Err(Errno::EEXIST))?;
        // Their fail attribute is the card's.
        write("emuv1", "fail", "lost").map_err(err("emuv1/fail=lost"))?;
        check_eq("sysfs fail", card_attr(1, "fail")?.as_str(), "lost")?;
        check_eq(
            "open a lost card",
            Device::open_path(node(1), false).map(drop),
            Err(Errno::ENODEV),
        )?;
        write("emuv1", "fail", "none").map_err(err("emuv1/fail=none"))?;
        write("emuv1", "ecc_errors", "4").map_err(err("emuv1/ecc_errors"))?;
        check_eq(
            "sysfs ecc_errors",
            card_attr(1, "ecc_errors")?.as_str(),
            "4",
        )?;
        // A new card takes the next free index.
        check_eq("next free index", make_card("c", &[]), Ok(2))?;
        check_eq(
            "rmmod with a configfs card",
            module::unload(),
            Err(Errno::EWOULDBLOCK),
        )?;
        write("c", "enabled", "0").map_err(err("c/enabled=0"))?;
        rmdir("c").map_err(err("rmdir c"))?;
        Ok(())
    })
}

fn indices_are_reused_lowest_first() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=16 virtual_vram_mb=0", || {
        let result = (|| {
            let small = [("physical_vram_mb", "8"), ("virtual_vram_mb", "0")];
            check_eq("x", make_card("x", &small), Ok(1))?;
            check_eq("y", make_card("y", &small), Ok(2))?;
            check_eq("z", make_card("z", &small), Ok(3))?;
            write("y", "enabled", "0").map_err(err("y/enabled=0"))?;
            check_eq("w takes y's index", make_card("w", &small), Ok(2))?;
            write("y", "enabled", "1").map_err(err("y/enabled=1"))?;
            check_eq("y comes back at", read("y", "index")?.as_str(), "4")?;
            Ok(())
        })();
        remove_all();
        result
    })
}

/// Uses whatever cards exist until told to stop: opens, allocates, maps, touches, frees, and
/// closes at random. Errors that a card going away or being lost explains are expected; any
/// other is counted.
fn worker(seed: u64, stop: Arc<AtomicBool>, surprises: Arc<AtomicU64>, ops: Arc<AtomicU64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut held: Vec<(Device, Vec<Map>)> = Vec::new();
    let Ok(zero) = fs::File::open("/dev/zero") else {
        surprises.fetch_add(1, Ordering::Relaxed);
        return;
    };
    while !stop.load(Ordering::Relaxed) {
        ops.fetch_add(1, Ordering::Relaxed);
        let expected = |e: Errno| {
            matches!(
                e,
                Errno::ENOENT | Errno::ENODEV | Errno::ENXIO | Errno::EIO | Errno::ENOMEM
            )
        };
        match rng.random_range(0..10) {
            0..3 if held.len() < 4 => match Device::open_path(node(rng.random_range(0..6)), true) {
                Ok(dev) => held.push((dev, Vec::new())),
                Err(e) if expected(e) => {}
                Err(e) => {
                    eprintln!("# worker: open: {e}");
                    surprises.fetch_add(1, Ordering::Relaxed);
                }
            },
            3..7 if !held.is_empty() => {
                let i = rng.random_range(0..held.len());
                let (dev, maps) = &mut held[i];
                let bytes = rng.random_range(1..=4) * MIB;
                match dev.alloc(bytes, Tier::Any) {
                    Ok(a) => match Map::new(dev, a.mmap_offset, bytes as usize) {
                        Ok(map) => {
                            // Touched by the kernel (a read from /dev/zero into it), where a
                            // card lost meanwhile is `EFAULT`, not this process's `SIGBUS`.
                            // SAFETY: the mapping is live and only the kernel writes it here.
                            let buf = unsafe {
                                std::slice::from_raw_parts_mut(map.0.as_ptr().cast::<u8>(), map.1)
                            };
                            match nix::unistd::read(&zero, buf) {
                                Ok(_) | Err(Errno::EFAULT) => {}
                                Err(e) => {
                                    eprintln!("# worker: touch: {e}");
                                    surprises.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            maps.push(map);
                        }
                        Err(e) if expected(e) => {}
                        Err(e) => {
                            eprintln!("# worker: mmap: {e}");
                            surprises.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(e) if expected(e) || e == Errno::ENOSPC => {}
                    Err(e) => {
                        eprintln!("# worker: alloc: {e}");
                        surprises.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ if !held.is_empty() => {
                let i = rng.random_range(0..held.len());
                held.swap_remove(i);
            }
            _ => {}
        }
    }
}

fn random_cycles() -> Result<(), String> {
    let seed = std::env::var("EMUV_CONFIGFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    let cycles: u32 = std::env::var("EMUV_CONFIGFS_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("# seed {seed} (EMUV_CONFIGFS_SEED), {cycles} cycles");
    module::with_loaded("gpu_count=2 physical_vram_mb=16 virtual_vram_mb=0", || {
        let stop = Arc::new(AtomicBool::new(false));
        let surprises = Arc::new(AtomicU64::new(0));
        let ops = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (stop, surprises, ops) = (stop.clone(), surprises.clone(), ops.clone());
                std::thread::spawn(move || worker(seed + 1 + i, stop, surprises, ops))
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let names = ["r0", "r1", "r2", "r3"];
        let mut made = 0;
        let result = (|| {
            for _ in 0..cycles {
                let name = names[rng.random_range(0..names.len())];
                let exists = dir(name).exists();
                // Each step may be refused by what the workers hold: only other errors count.
                let outcome = match rng.random_range(0..7) {
                    0 if !exists => mkdir(name).map(|()| made += 1),
                    1 if exists => write(name, "enabled", "1"),
                    2 if exists => write(name, "enabled", "0"),
                    3 if exists => rmdir(name),
                    4 if exists => write(
                        name,
                        "fail",
                        if rng.random_bool(0.5) { "lost" } else { "none" },
                    ),
                    5 if exists => write(
                        name,
                        "lazy_allocation",
                        if rng.random_bool(0.5) { "0" } else { "1" },
                    ),
                    6 => write(
                        ["emuv", "emuv1"][rng.random_range(0..2)],
                        "fail",
                        if rng.random_bool(0.7) { "none" } else { "lost" },
                    ),
                    _ => Ok(()),
                };
                match outcome {
                    Ok(()) | Err(Errno::EBUSY | Errno::ENODEV | Errno::ENOENT) => {}
                    Err(e) => return Err(format!("configfs step on {name}: {e}")),
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().map_err(|_| "a worker panicked")?;
        }
        // With no file open any more, everything can go.
        for name in ["emuv", "emuv1"] {
            write(name, "fail", "none").map_err(err(&format!("{name}/fail=none")))?;
        }
        for name in names {
            if dir(name).exists() {
                let _ = write(name, "fail", "none");
                write(name, "enabled", "0")
                    .map_err(err(&format!("{name}/enabled=0 at the end")))?;
                rmdir(name).map_err(err(&format!("rmdir {name} at the end")))?;
            }
        }
        println!(
            "# {made} directories made, {} worker operations",
            ops.load(Ordering::Relaxed)
        );
        result?;
        check_eq(
            "surprising worker errors",
            surprises.load(Ordering::Relaxed),
            0,
        )?;
        check(card_attr(0, "used_bytes")? == "0", || {
            "card 0 holds memory at the end".into()
        })
    })
}

/// One card's `enabled=0` racing another's `enabled=1`, 300 times: the freed index is taken
/// only once its device is gone (it was once reused while the old device was still being
/// unregistered: `EEXIST` and a sysfs duplicate-name stack dump).
fn enable_races_disable() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=16", || {
        let mut kmsg = emuv_tests::kmsg::Kmsg::new();
        make_card("a", &[])?;
        mkdir("b").map_err(err("mkdir b"))?;
        // Two writes at once, from two threads.
        let race = |one: (&str, &str), other: (&str, &str)| {
            std::thread::scope(|s| {
                let first = s.spawn(|| write(one.0, "enabled", one.1));
                let second = s.spawn(|| write(other.0, "enabled", other.1));
                (first.join(), second.join())
            })
        };
        for round in 0..300 {
            // a goes while b comes, then the other way round.
            for (going, coming) in [("a", "b"), ("b", "a")] {
                let (gone, came) = race((going, "0"), (coming, "1"));
                let gone = gone.map_err(|_| "a writer panicked".to_owned())?;
                let came = came.map_err(|_| "a writer panicked".to_owned())?;
                check_eq(
                    &format!("round {round}: {going}/enabled=0, {coming}/enabled=1"),
                    (gone, came),
                    (Ok(()), Ok(())),
                )?;
            }
        }
        let log = kmsg.read_new();
        let duplicate = log.iter().find(|line| line.contains("duplicate"));
        check(duplicate.is_none(), || {
            format!(
                "the kernel said: {}",
                duplicate.cloned().unwrap_or_default()
            )
        })?;
        write("a", "enabled", "0").map_err(err("a/enabled=0"))?;
        rmdir("a").map_err(err("rmdir a"))?;
        rmdir("b").map_err(err("rmdir b"))
    })
}

fn main() {
    type Test = fn() -> Result<(), String>;
    let tests: [(&str, Test); 6] = [
        (
            "create, configure, enable, use, refuse while in use, remove",
            lifecycle,
        ),
        (
            "every bad value is EINVAL with a dmesg line; ENODEV, ENOMEM",
            bad_values,
        ),
        (
            "gpu_count's cards: there, read-only, their fail and ecc_errors",
            module_cards_are_read_only,
        ),
        (
            "indices: the lowest free one, reused",
            indices_are_reused_lowest_first,
        ),
        (
            "random create/remove cycles while workers use the cards",
            random_cycles,
        ),
        (
            "enabled=1 racing another card's enabled=0: no index reused before its device is gone",
            enable_races_disable,
        ),
    ];
    let mut tap = Tap::new(tests.len());
    if module::is_loaded() {
        remove_all();
        let _ = module::unload();
    }
    let available = module::load("physical_vram_mb=16").is_ok() && Path::new(ROOT).exists();
    if module::is_loaded() {
        let _ = module::unload();
    }
    for (name, test) in tests {
        if !available {
            tap.skip(name, "this kernel has no configfs (CONFIG_CONFIGFS_FS)");
            continue;
        }
        tap.test(name, test());
        if module::is_loaded() {
            remove_all();
            let _ = module::unload();
        }
    }
    tap.finish()
}
