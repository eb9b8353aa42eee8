// SPDX-License-Identifier: GPL-2.0
//! Shared pieces of emuv's kselftest-style test programs: TAP 13 output with kselftest's exit
//! codes, loading and unloading the module, and reading what the kernel reports.

pub mod containerd;
pub mod cri;
pub mod fault;
pub mod kmsg;
pub mod kubelet;
pub mod module;
pub mod tap;

use std::{fs, io, path::Path};

/// `/sys/class/emuv/emuv`, the emulated GPU's sysfs directory.
pub const SYSFS_DIR: &str = "/sys/class/emuv/emuv";

/// Reads one sysfs attribute of the emulated GPU, without its trailing newline.
pub fn attr(name: &str) -> io::Result<String> {
    read_trimmed(Path::new(SYSFS_DIR).join(name))
}

/// The cargo target directory this test program was built into (the parent of `release/`),
/// where the tools and libraries under test are installed beside it.
pub fn target_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A program installed beside this test program (`target/release/NAME`): emuv's tools.
pub fn tool(name: &str) -> std::path::PathBuf {
    std::env::current_exe()
        .expect("own path")
        .with_file_name(name)
}

/// The UUIDs an `emuv-smi -L` (or `nvidia-smi -L`) listing names, in order.
pub fn smi_uuids(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split("(UUID: ").nth(1))
        .map(|u| u.trim_end_matches(')').to_owned())
        .collect()
}

/// A numeric sysfs attribute of the emulated GPU (`used_bytes`, `free_bytes`, ...).
pub fn attr_u64(name: &str) -> Result<u64, String> {
    let text = attr(name).map_err(err(name))?;
    text.parse().map_err(err(name))
}

/// Waits (up to 30 s) until the card's scrubber has zeroed every freed eager page
/// (`scrubbing_bytes` is 0), for checks of `free_bytes` right after a FREE; `Err` if it never
/// does. Lazy pools never scrub.
pub fn settle_scrubbing() -> Result<(), String> {
    let start = std::time::Instant::now();
    loop {
        // A module without a scrubber (before 0.2) zeroes at FREE: nothing to wait for.
        let scrubbing = match attr("scrubbing_bytes") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            text => text
                .map_err(err("scrubbing_bytes"))?
                .parse::<u64>()
                .map_err(err("scrubbing_bytes"))?,
        };
        if scrubbing == 0 {
            return Ok(());
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            return Err(format!("scrubbing_bytes still {scrubbing} after 30 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Turns an error into a message that says what failed: `.map_err(err("mmap"))`.
pub fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The cgroup v2 hierarchy, mounted if nobody did, with `controller` (unless empty) enabled
/// for the root's children.
pub fn cgroup_root(controller: &str) -> Result<&'static Path, String> {
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        nix::mount::mount(
            Some("cgroup2"),
            root,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(err("mount cgroup2"))?;
    }
    if !controller.is_empty() {
        fs::write(
            root.join("cgroup.subtree_control"),
            format!("+{controller}"),
        )
        .map_err(err(&format!("enable the {controller} controller")))?;
    }
    Ok(root)
}

/// Reads one module parameter from `/sys/module/emuv/parameters/`.
pub fn param(name: &str) -> io::Result<String> {
    read_trimmed(Path::new("/sys/module/emuv/parameters").join(name))
}

fn read_trimmed(path: impl AsRef<Path>) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim_end_matches('\n').to_owned())
}

/// A `Key: value` line of the report (`cat /dev/emuv`, `vram_info`).
pub fn report_field<'a>(report: &'a str, key: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(": "))
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
pub fn mem_available() -> u64 {
    meminfo("MemAvailable")
}

/// Kernel memory that emuv's bookkeeping (or a leak) can grow: slab, vmalloc and page tables,
/// in bytes.
pub fn kernel_memory() -> u64 {
    meminfo("Slab") + meminfo("VmallocUsed") + meminfo("PageTables")
}

/// [`kernel_memory`] once deferred frees have run: page tables of a finished `munmap` and
/// RCU-freed objects go after a grace period, and slab pages return in batches, so a single
/// reading right after a burst of work can be 2 MiB off either way. The lowest of a few
/// readings after a pause is what stays.
pub fn settled_kernel_memory() -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(500));
    (0..5)
        .map(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            kernel_memory()
        })
        .min()
        .unwrap_or_default()
}

/// A `/proc/meminfo` field in bytes (0 if missing).
pub fn meminfo(field: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches(" kB").parse::<u64>().ok()
            })
        })
        .map_or(0, |kib| kib * 1024)
}

/// Whether this kernel has KASAN (the debug kernel of `make check-debug`).
pub fn kasan() -> bool {
    static KASAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KASAN.get_or_init(|| {
        fs::read_to_string("/proc/kallsyms")
            .map(|symbols| symbols.contains(" kasan_quarantine_put"))
            .unwrap_or(false)
    })
}

/// How much freed memory KASAN's quarantine may hold back on this kernel (1/32 of RAM, as
/// mm/kasan/quarantine.c sizes it), for memory checks to allow; 0 without KASAN.
pub fn kasan_quarantine() -> u64 {
    if kasan() {
        meminfo("MemTotal") / 32
    } else {
        0
    }
}

/// The shadow memory KASAN adds to `bytes` of vmalloc memory (one byte per eight, with
/// `KASAN_VMALLOC`), as eager pools pay it on the debug kernel; 0 without KASAN.
pub fn kasan_shadow(bytes: u64) -> u64 {
    if kasan() {
        bytes / 8
    } else {
        0
    }
}

/// Runs `f` in a forked child (as user `uid` when given: group and user both set) and returns
/// what it returned. The child's result travels back through a pipe; a child that dies
/// without answering is an error that says how it ended.
pub fn in_child(
    uid: Option<u32>,
    f: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    use nix::{
        sys::wait::waitpid,
        unistd::{fork, pipe, setgid, setuid, ForkResult, Gid, Uid},
    };
    use std::io::{Read, Write};
    let (rx, tx) = pipe().map_err(err("pipe"))?;
    // SAFETY: the child only runs `f` and exits; the tests are single-threaded when they fork.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            drop(rx);
            let result = (|| {
                if let Some(uid) = uid {
                    setgid(Gid::from_raw(uid)).map_err(err("setgid"))?;
                    setuid(Uid::from_raw(uid)).map_err(err("setuid"))?;
                }
                f()
            })();
            let text = match result {
                Ok(s) => format!("ok:{s}"),
                Err(s) => format!("err:{s}"),
            };
            let _ = std::fs::File::from(tx).write_all(text.as_bytes());
            std::process::exit(0)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut text = String::new();
            let read = std::fs::File::from(rx).read_to_string(&mut text);
            let status = waitpid(child, None).map_err(err("waitpid"))?;
            read.map_err(err("read the child's answer"))?;
            if let Some(ok) = text.strip_prefix("ok:") {
                Ok(ok.to_owned())
            } else if let Some(e) = text.strip_prefix("err:") {
                Err(e.to_owned())
            } else {
                Err(format!("child ended without an answer: {status:?}"))
            }
        }
    }
}
