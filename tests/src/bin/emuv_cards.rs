// SPDX-License-Identifier: GPL-2.0
//! Many cards from one load: `gpu_count=N` gives N cards, each its own node, sysfs directory,
//! pool, counters and PCI bus ID; eager cards must fit together; a card can be lost
//! (`fail=lost`: open files get `EIO`, new opens `ENODEV`, mappings `SIGBUS`, the other cards
//! carry on) and brought back; injected ECC errors count; the model facts and the driver
//! version that GPU tools report are there.

use emuv::{Device, Tier};
use emuv_tests::{
    err,
    kmsg::Kmsg,
    mem_available, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::{
        mman::{mmap, munmap, MapFlags, ProtFlags},
        signal::Signal,
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, ForkResult},
};
use std::{
    fs,
    io::{Read, Seek},
    num::NonZeroUsize,
    os::fd::AsFd,
    path::PathBuf,
    ptr::NonNull,
    time::Duration,
};

const MIB: u64 = 1 << 20;

/// `/dev/emuv` for card 0, `/dev/emuvN` after.
fn node(index: u32) -> PathBuf {
    match index {
        0 => PathBuf::from("/dev/emuv"),
        i => PathBuf::from(format!("/dev/emuv{i}")),
    }
}

fn sysfs(index: u32) -> PathBuf {
    match index {
        0 => PathBuf::from("/sys/class/emuv/emuv"),
        i => PathBuf::from(format!("/sys/class/emuv/emuv{i}")),
    }
}

fn card_attr(index: u32, name: &str) -> Result<String, String> {
    let path = sysfs(index).join(name);
    fs::read_to_string(&path)
        .map(|s| s.trim_end().to_owned())
        .map_err(err(&path.display().to_string()))
}

fn card_u64(index: u32, name: &str) -> Result<u64, String> {
    let text = card_attr(index, name)?;
    text.parse()
        .map_err(|e| format!("card {index} {name}: {text:?}: {e}"))
}

fn set_attr(index: u32, name: &str, value: &str) -> Result<(), Errno> {
    fs::write(sysfs(index).join(name), value)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
}

fn open(index: u32) -> Result<Device, String> {
    Device::open_path(node(index), true).map_err(err(&format!("open card {index}")))
}

/// A shared mapping of a whole allocation; unmapped on drop.
struct Map {
    ptr: NonNull<u8>,
    len: usize,
}

impl Map {
    fn new(dev: &Device, offset: u64, len: usize) -> Result<Self, String> {
        // SAFETY: a new shared mapping of the device, at an address the kernel picks.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(len).ok_or("empty mapping")?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                dev.as_fd(),
                offset as i64,
            )
        }
        .map_err(err("mmap"))?;
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    fn fill(&self, byte: u8) {
        // SAFETY: in bounds of a live read-write mapping.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr(), byte, self.len) };
    }

    /// Every `step`th byte, read through the mapping.
    fn sample(&self, step: usize) -> Vec<u8> {
        (0..self.len)
            .step_by(step)
            // SAFETY: in bounds of a live mapping.
            .map(|i| unsafe { self.ptr.as_ptr().add(i).read_volatile() })
            .collect()
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

fn eight_cards() -> Result<(), String> {
    let params = "gpu_count=8 physical_vram_mb=64 virtual_vram_mb=0";
    let mut first_ids = Vec::new();
    for round in 0..2 {
        module::with_loaded(params, || {
            let mut ids = Vec::new();
            for i in 0..8 {
                check(node(i).exists(), || {
                    format!("{} missing", node(i).display())
                })?;
                check_eq(
                    &format!("card {i} index"),
                    card_u64(i, "index")?,
                    u64::from(i),
                )?;
                ids.push(card_attr(i, "pci_bus_id")?);
            }
            check(!node(8).exists() && !sysfs(8).exists(), || {
                "a ninth card exists".into()
            })?;
            let mut distinct = ids.clone();
            distinct.sort();
            distinct.dedup();
            check_eq("distinct PCI bus IDs", distinct.len(), 8)?;
            check_eq("card 3's bus ID", ids[3].as_str(), "00000000:04:00.0")?;
            if round == 0 {
                first_ids = ids;
            } else {
                check_eq("bus IDs after a reload", &ids, &first_ids)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn counters_are_per_card() -> Result<(), String> {
    let params = "gpu_count=8 physical_vram_mb=64 virtual_vram_mb=0";
    module::with_loaded(params, || {
        let sizes = [(0u32, 3 * MIB), (3, 5 * MIB), (7, 9 * MIB)];
        let mut held = Vec::new();
        for &(card, bytes) in &sizes {
            let dev = open(card)?;
            let a = dev.alloc(bytes, Tier::Any).map_err(err("alloc"))?;
            let map = Map::new(&dev, a.mmap_offset, bytes as usize)?;
            map.fill(card as u8 + 1);
            held.push((card, dev, map));
        }
        for i in 0..8 {
            let want = sizes.iter().find(|s| s.0 == i).map_or(0, |s| s.1);
            check_eq(
                &format!("card {i} used_bytes"),
                card_u64(i, "used_bytes")?,
                want,
            )?;
            check_eq(
                &format!("card {i} resident_bytes"),
                card_u64(i, "resident_bytes")?,
                want,
            )?;
            // The process list of a card shows only that card's holders.
            let reader = Device::open_path(node(i), false).map_err(err("open read-only"))?;
            let mine = reader
                .processes()
                .map_err(err("processes"))?
                .into_iter()
                .filter(|p| p.pid == Some(std::process::id()))
                .map(|p| p.bytes)
                .sum::<u64>();
            check_eq(&format!("card {i}: this process's bytes"), mine, want)?;
        }
        for (card, _dev, map) in &held {
            check(
                map.sample(4096).iter().all(|&b| b == *card as u8 + 1),
                || format!("card {card}: data changed"),
            )?;
        }
        drop(held);
        for i in 0..8 {
            check_eq(
                &format!("card {i} used after close"),
                card_u64(i, "used_bytes")?,
                0,
            )?;
        }
        Ok(())
    })
}

fn bad_gpu_count_is_einval() -> Result<(), String> {
    for value in ["0", "17", "eight", "-1"] {
        let mut log = Kmsg::new();
        let result = module::load(&format!("gpu_count={value}"));
        if result.is_ok() {
            let _ = module::unload();
        }
        check_eq(
            &format!("insmod gpu_count={value}"),
            result,
            Err(Errno::EINVAL),
        )?;
        let lines = log.read_new();
        check(
            lines.iter().any(|l| {
                l.contains(&format!("invalid gpu_count={value}")) && l.contains("1 to 16")
            }),
            || format!("no dmesg line for gpu_count={value}: {lines:?}"),
        )?;
    }
    Ok(())
}

fn eager_cards_must_fit_together() -> Result<(), String> {
    // Each card alone fits; three together do not.
    let per_card = mem_available() * 45 / 100 / MIB;
    let before = mem_available();
    let mut log = Kmsg::new();
    let params =
        format!("gpu_count=3 lazy_allocation=0 physical_vram_mb={per_card} virtual_vram_mb=0");
    let result = module::load(&params);
    if result.is_ok() {
        let _ = module::unload();
    }
    check_eq(&format!("insmod {params}"), result, Err(Errno::ENOMEM))?;
    let lines = log.read_new();
    check(
        lines
            .iter()
            .any(|l| l.contains("for all cards") && l.contains("does not fit")),
        || format!("no dmesg line for the cards together: {lines:?}"),
    )?;
    // Nothing was reserved before the check (give or take what the failed load left in
    // caches).
    let after = mem_available();
    check(after + per_card * MIB / 4 > before, || {
        format!("MemAvailable {before} before, {after} after a refused load")
    })?;
    // One card of that size loads.
    module::with_loaded(
        &format!("lazy_allocation=0 physical_vram_mb={per_card} virtual_vram_mb=0"),
        || Ok(()),
    )
}

/// A child process that maps `bytes` of card `card` (mappings are not inherited: emuv's are
/// `VM_DONTCOPY`), fills them, and reads them again when told to.
struct MappingChild {
    pid: nix::unistd::Pid,
    go: Option<std::fs::File>,
    /// Reaped already (by `read`).
    reaped: bool,
}

impl MappingChild {
    fn start(card: u32, bytes: u64, byte: u8) -> Result<Self, String> {
        use std::io::Write;
        let (ready_rx, ready_tx) = nix::unistd::pipe().map_err(err("pipe"))?;
        let (go_rx, go_tx) = nix::unistd::pipe().map_err(err("pipe"))?;
        // SAFETY: the child only maps, reads and exits; the test is single-threaded here.
        match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                drop((ready_rx, go_tx));
                let map = open(card).and_then(|dev| {
                    let a = dev.alloc(bytes, Tier::Any).map_err(err("alloc"))?;
                    let map = Map::new(&dev, a.mmap_offset, bytes as usize)?;
                    map.fill(byte);
                    Ok((dev, map))
                });
                let Ok((_dev, map)) = map else {
                    std::process::exit(2)
                };
                let _ = fs::File::from(ready_tx).write_all(b"r");
                let _ = fs::File::from(go_rx).read(&mut [0]);
                let same = map.sample(4096).iter().all(|&b| b == byte);
                std::process::exit(if same { 0 } else { 3 })
            }
            ForkResult::Parent { child } => {
                drop((ready_tx, go_rx));
                let mut ready = [0];
                let n = fs::File::from(ready_rx)
                    .read(&mut ready)
                    .map_err(err("read"))?;
                check_eq("child mapped its memory", n, 1)?;
                Ok(Self {
                    pid: child,
                    go: Some(fs::File::from(go_tx)),
                    reaped: false,
                })
            }
        }
    }

    /// Lets the child read its mapping: how it ended.
    fn read(mut self) -> Result<WaitStatus, String> {
        drop(self.go.take());
        self.reaped = true;
        waitpid(self.pid, None).map_err(err("waitpid"))
    }
}

/// A test that failed before `read` must not leave the child holding a card (and emuv loaded).
impl Drop for MappingChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

fn lost_card(lazy: bool) -> Result<(), String> {
    let params = format!(
        "gpu_count=2 physical_vram_mb=32 virtual_vram_mb=0 lazy_allocation={}",
        u8::from(lazy)
    );
    module::with_loaded(&params, || {
        let mut log = Kmsg::new();
        let bytes = 4 * MIB;
        let mapper0 = MappingChild::start(0, bytes, 0x0a)?;
        let mapper1 = MappingChild::start(1, bytes, 0x1b)?;
        let (pid0, pid1) = (mapper0.pid, mapper1.pid);
        let dev1 = open(1)?;
        let a1 = dev1.alloc(bytes, Tier::Any).map_err(err("alloc card 1"))?;
        let map1 = Map::new(&dev1, a1.mmap_offset, bytes as usize)?;
        map1.fill(0x2c);
        check_eq("fail before", card_attr(1, "fail")?.as_str(), "none")?;
        set_attr(1, "fail", "lost").map_err(err("fail=lost"))?;
        check_eq("fail after", card_attr(1, "fail")?.as_str(), "lost")?;
        check_eq(
            "a mapping of the lost card",
            mapper1.read()?,
            WaitStatus::Signaled(pid1, Signal::SIGBUS, false),
        )?;
        check_eq(
            "ioctl on the lost card",
            dev1.info().map(drop),
            Err(Errno::EIO),
        )?;
        check_eq(
            "mmap on the lost card",
            Map::new(&dev1, a1.mmap_offset, bytes as usize)
                .map(drop)
                .map_err(|e| e.contains("EIO")),
            Err(true),
        )?;
        check_eq(
            "open of the lost card",
            Device::open_path(node(1), false).map(drop),
            Err(Errno::ENODEV),
        )?;
        // The other card carries on: its mapping, its ioctls, its report.
        check_eq(
            "card 0's mapping",
            mapper0.read()?,
            WaitStatus::Exited(pid0, 0),
        )?;
        let dev0 = open(0)?;
        dev0.alloc(MIB, Tier::Any).map_err(err("alloc on card 0"))?;
        let mut report = String::new();
        let read = fs::File::open(node(0)).and_then(|mut f| f.read_to_string(&mut report));
        check(read.is_ok(), || format!("cat /dev/emuv: {read:?}"))?;
        let lines = log.read_new();
        check(
            lines
                .iter()
                .any(|l| l.contains("NVRM: Xid (PCI:0000:02:00): 79,")),
            || format!("no Xid 79 line: {lines:?}"),
        )?;
        check_eq(
            "fail=none while open",
            set_attr(1, "fail", "none"),
            Err(Errno::EBUSY),
        )?;
        // Memory goes back when the files close (a mapping holds its file open).
        check_eq(
            "card 1's used_bytes while open",
            card_u64(1, "used_bytes")?,
            bytes,
        )?;
        drop(dev1);
        check_eq(
            "card 1's used_bytes while mapped",
            card_u64(1, "used_bytes")?,
            bytes,
        )?;
        drop(map1);
        check_eq(
            "card 1's used_bytes after close",
            card_u64(1, "used_bytes")?,
            0,
        )?;
        set_attr(1, "fail", "none").map_err(err("fail=none"))?;
        check_eq(
            "fail after recovery",
            card_attr(1, "fail")?.as_str(),
            "none",
        )?;
        let dev1 = open(1)?;
        let a1 = dev1
            .alloc(bytes, Tier::Any)
            .map_err(err("alloc after recovery"))?;
        let map1 = Map::new(&dev1, a1.mmap_offset, bytes as usize)?;
        check(map1.sample(4096).iter().all(|&b| b == 0), || {
            "a recovered card's new memory is not zeroed".into()
        })?;
        Ok(())
    })
}

fn fail_and_ecc_attributes() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=16 virtual_vram_mb=0", || {
        let mut log = Kmsg::new();
        check_eq(
            "fail=broken",
            set_attr(0, "fail", "broken"),
            Err(Errno::EINVAL),
        )?;
        check_eq(
            "ecc_errors=many",
            set_attr(0, "ecc_errors", "many"),
            Err(Errno::EINVAL),
        )?;
        check_eq(
            "ecc_errors=-1",
            set_attr(0, "ecc_errors", "-1"),
            Err(Errno::EINVAL),
        )?;
        let lines = log.read_new();
        for what in [
            "invalid fail=broken: accepted: none, lost",
            "invalid ecc_errors=many",
        ] {
            check(lines.iter().any(|l| l.contains(what)), || {
                format!("no dmesg line {what:?}: {lines:?}")
            })?;
        }
        check_eq("ecc_errors at load", card_u64(0, "ecc_errors")?, 0)?;
        set_attr(0, "ecc_errors", "3").map_err(err("ecc_errors=3"))?;
        set_attr(0, "ecc_errors", "2\n").map_err(err("ecc_errors=2"))?;
        check_eq("ecc_errors after 3 + 2", card_u64(0, "ecc_errors")?, 5)?;
        // A watcher polling `fail` wakes when the card is lost.
        let mut watched = fs::File::open(sysfs(0).join("fail")).map_err(err("open fail"))?;
        let mut text = String::new();
        watched
            .read_to_string(&mut text)
            .map_err(err("read fail"))?;
        let waker = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            set_attr(0, "fail", "lost")
        });
        let mut fds = [PollFd::new(watched.as_fd(), PollFlags::POLLPRI)];
        let woke = poll(&mut fds, PollTimeout::from(10_000u16)).map_err(err("poll"))?;
        waker
            .join()
            .map_err(|_| "waker panicked")?
            .map_err(err("fail=lost"))?;
        check_eq("poll woke on fail=lost", woke, 1)?;
        watched.rewind().map_err(err("seek"))?;
        text.clear();
        watched
            .read_to_string(&mut text)
            .map_err(err("reread fail"))?;
        check_eq("fail read by the watcher", text.as_str(), "lost\n")?;
        set_attr(0, "fail", "none").map_err(err("fail=none"))?;
        Ok(())
    })
}

fn model_facts_and_driver_version() -> Result<(), String> {
    module::with_loaded(
        "gpu_model=4090 physical_vram_mb=16 virtual_vram_mb=0",
        || {
            for (name, want) in [
                ("chip", "AD102"),
                ("architecture", "Ada Lovelace"),
                ("compute_capability", "8.9"),
                ("memory_bus_width", "384"),
                ("cuda_cores", "16384"),
                ("max_graphics_clock_mhz", "2520"),
                ("max_memory_clock_mhz", "10500"),
                ("power_limit_mw", "450000"),
                ("bar1_bytes", "268435456"),
            ] {
                check_eq(name, card_attr(0, name)?.as_str(), want)?;
            }
            check_eq(
                "driver_version default",
                emuv_tests::param("driver_version").map_err(err("driver_version"))?,
                "580.159.04".to_owned(),
            )
        },
    )?;
    module::with_loaded(
        "gpu_model=5090 driver_version=590.44.01 physical_vram_mb=16",
        || {
            check_eq(
                "5090 compute_capability",
                card_attr(0, "compute_capability")?.as_str(),
                "12.0",
            )?;
            check_eq(
                "5090 max_memory_clock_mhz",
                card_attr(0, "max_memory_clock_mhz")?.as_str(),
                "14000",
            )?;
            check_eq(
                "driver_version given",
                emuv_tests::param("driver_version").map_err(err("driver_version"))?,
                "590.44.01".to_owned(),
            )
        },
    )?;
    for value in ["latest", "580", "580..1", "5800000000.1"] {
        let mut log = Kmsg::new();
        let result = module::load(&format!("driver_version={value}"));
        if result.is_ok() {
            let _ = module::unload();
        }
        check_eq(
            &format!("driver_version={value}"),
            result,
            Err(Errno::EINVAL),
        )?;
        let lines = log.read_new();
        check(
            lines
                .iter()
                .any(|l| l.contains(&format!("invalid driver_version={value}"))),
            || format!("no dmesg line for driver_version={value}: {lines:?}"),
        )?;
    }
    Ok(())
}

fn main() {
    type Test = fn() -> Result<(), String>;
    let tests: [(&str, Test); 8] = [
        (
            "gpu_count=8: eight cards, nodes, indices, stable bus IDs",
            eight_cards,
        ),
        (
            "allocations on cards 0, 3 and 7 move only their counters",
            counters_are_per_card,
        ),
        (
            "gpu_count out of range is EINVAL with a dmesg line",
            bad_gpu_count_is_einval,
        ),
        (
            "eager cards must fit together",
            eager_cards_must_fit_together,
        ),
        (
            "a lost lazy card: SIGBUS, EIO, ENODEV, others carry on, recovery",
            || lost_card(true),
        ),
        (
            "a lost eager card: SIGBUS, EIO, ENODEV, others carry on, recovery",
            || lost_card(false),
        ),
        (
            "fail and ecc_errors: bad values refused, counts add, poll wakes",
            fail_and_ecc_attributes,
        ),
        (
            "model facts and driver_version",
            model_facts_and_driver_version,
        ),
    ];
    let mut tap = Tap::new(tests.len());
    if module::is_loaded() {
        let _ = module::unload();
    }
    for (name, test) in tests {
        tap.test(name, test());
        if module::is_loaded() {
            let _ = module::unload();
        }
    }
    tap.finish()
}
