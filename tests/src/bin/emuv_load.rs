// SPDX-License-Identifier: GPL-2.0
//! Loading emuv as the seed's documentation does, and what it then shows: the `dmesg` line,
//! `/dev/emuv`, `/sys/class/emuv/emuv/`, `/sys/module/emuv/parameters/`, and unloading.

use emuv_tests::{
    attr,
    kmsg::Kmsg,
    module, param, report_field,
    tap::{check, check_eq, Tap},
    SYSFS_DIR,
};
use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    os::unix::fs::{FileTypeExt, MetadataExt},
};

const GIB: u64 = 1 << 30;

/// What a load with some parameters must show.
struct Expected {
    params: &'static str,
    name: &'static str,
    device_id: &'static str,
    physical_gib: u64,
    virtual_gib: u64,
}

const SEED_EXAMPLES: [Expected; 3] = [
    // "Load with defaults (RTX 4070, 12+2 GB)"
    Expected {
        params: "",
        name: "NVIDIA GeForce RTX 4070",
        device_id: "0x2786",
        physical_gib: 12,
        virtual_gib: 2,
    },
    Expected {
        params: "gpu_model=5090 physical_vram_gb=24 virtual_vram_gb=8",
        name: "NVIDIA GeForce RTX 5090",
        device_id: "0x2b85",
        physical_gib: 24,
        virtual_gib: 8,
    },
    Expected {
        params: "gpu_model=4090 physical_vram_gb=24 virtual_vram_gb=16",
        name: "NVIDIA GeForce RTX 4090",
        device_id: "0x2684",
        physical_gib: 24,
        virtual_gib: 16,
    },
];

fn check_loaded(e: &Expected, log: &[String]) -> Result<(), String> {
    let line = log.iter().find(|l| l.starts_with("emuv: emulating"));
    check(line.is_some_and(|l| l.contains(e.name)), || {
        format!("no dmesg line naming {}: {log:?}", e.name)
    })?;
    check_eq(
        "gpu_name",
        attr("gpu_name").map_err(|e| e.to_string())?.as_str(),
        e.name,
    )?;
    check_eq(
        "vendor_id",
        attr("vendor_id").map_err(|e| e.to_string())?.as_str(),
        "0x10de",
    )?;
    check_eq(
        "device_id",
        attr("device_id").map_err(|e| e.to_string())?.as_str(),
        e.device_id,
    )?;
    let bytes = |name| -> Result<u64, String> {
        attr(name)
            .map_err(|e| e.to_string())?
            .parse::<u64>()
            .map_err(|e| format!("{name}: {e}"))
    };
    check_eq(
        "physical_vram_bytes",
        bytes("physical_vram_bytes")?,
        e.physical_gib * GIB,
    )?;
    check_eq(
        "virtual_vram_bytes",
        bytes("virtual_vram_bytes")?,
        e.virtual_gib * GIB,
    )?;
    check_eq(
        "total_vram_bytes",
        bytes("total_vram_bytes")?,
        (e.physical_gib + e.virtual_gib) * GIB,
    )?;
    check_eq("used_bytes", bytes("used_bytes")?, 0)?;
    check_eq(
        "free_bytes",
        bytes("free_bytes")?,
        (e.physical_gib + e.virtual_gib) * GIB,
    )?;
    check_eq("resident_bytes", bytes("resident_bytes")?, 0)?;
    check_eq(
        "allocation_strategy",
        attr("allocation_strategy")
            .map_err(|e| e.to_string())?
            .as_str(),
        "lazy",
    )?;
    let info = attr("vram_info").map_err(|e| e.to_string())?;
    check_eq("vram_info GPU", report_field(&info, "GPU"), Some(e.name))?;
    let physical = format!("{} MiB (used 0 MiB, resident 0 MiB)", e.physical_gib * 1024);
    check_eq(
        "vram_info Physical VRAM",
        report_field(&info, "Physical VRAM"),
        Some(physical.as_str()),
    )?;
    let virtual_ = format!("{} MiB (used 0 MiB, resident 0 MiB)", e.virtual_gib * 1024);
    check_eq(
        "vram_info Virtual VRAM",
        report_field(&info, "Virtual VRAM"),
        Some(virtual_.as_str()),
    )?;
    check_eq(
        "vram_info strategy",
        report_field(&info, "Allocation strategy"),
        Some("lazy"),
    )?;
    // `cat /dev/emuv` (root only) is the same report plus the process list, here only ourselves.
    let dev = fs::read_to_string("/dev/emuv").map_err(|e| format!("cat /dev/emuv: {e}"))?;
    let (totals, processes) = dev
        .split_once("Processes: ")
        .ok_or("no process list in /dev/emuv")?;
    check_eq(
        "cat /dev/emuv starts with vram_info",
        totals.trim_end(),
        info.as_str(),
    )?;
    let me = std::process::id().to_string();
    let listed = processes
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [me.as_str(), "emuv_load", "0", "0"]);
    check(listed, || {
        format!("this process ({me}, emuv_load, 0 bytes) is not listed: {processes}")
    })
}

/// `/dev/emuv` is the node of `/sys/class/emuv/emuv/dev`, root-only.
fn check_node() -> Result<(), String> {
    let meta = fs::metadata("/dev/emuv").map_err(|e| format!("/dev/emuv: {e}"))?;
    check(meta.file_type().is_char_device(), || {
        "/dev/emuv is not a character device".into()
    })?;
    check_eq("/dev/emuv mode", meta.mode() & 0o7777, 0o600)?;
    let dev = attr("dev").map_err(|e| format!("{SYSFS_DIR}/dev: {e}"))?;
    let rdev = meta.rdev();
    let expected = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    check_eq("sysfs dev", dev, expected)
}

/// Reads in small chunks and after `lseek` give the same text as one read.
fn check_partial_reads() -> Result<(), String> {
    let whole = fs::read("/dev/emuv").map_err(|e| e.to_string())?;
    let mut f = File::open("/dev/emuv").map_err(|e| e.to_string())?;
    let mut chunked = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        chunked.extend_from_slice(&buf[..n]);
    }
    check_eq("7-byte reads", &chunked, &whole)?;
    let pos = f
        .seek(SeekFrom::Start(5))
        .map_err(|e| format!("lseek: {e}"))?;
    check_eq("lseek position", pos, 5)?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    check_eq("read after lseek(5)", rest.as_slice(), &whole[5..])
}

fn main() {
    let mut tap = Tap::new(SEED_EXAMPLES.len() + 6);
    if module::is_loaded() {
        let _ = module::unload();
    }

    for e in &SEED_EXAMPLES {
        let mut kmsg = Kmsg::new();
        let name = format!(
            "insmod emuv.ko {}",
            if e.params.is_empty() {
                "(defaults)"
            } else {
                e.params
            }
        );
        let result = module::with_loaded(e.params, || check_loaded(e, &kmsg.read_new()));
        let gone = check(
            !std::path::Path::new("/dev/emuv").exists() && !module::is_loaded(),
            || "/dev/emuv or the module still there after rmmod".into(),
        );
        tap.test(&name, result.and(gone));
    }

    let result = module::with_loaded("", check_node);
    tap.test(
        "/dev/emuv is the 0600 node of /sys/class/emuv/emuv/dev",
        result,
    );

    let result = module::with_loaded("", check_partial_reads);
    tap.test("cat /dev/emuv: partial reads and lseek", result);

    // Every parameter is visible, read-only, with the value in force.
    let result = module::with_loaded(
        "gpu_model=RTX-4070-Ti-Super physical_vram_mb=512 lazy_allocation=1",
        || {
            // The value in force, whatever spelling or unit was given.
            let expected = [
                ("gpu_model", "4070tisuper"),
                ("physical_vram_mb", "512"),
                ("physical_vram_gb", "0"),
                ("virtual_vram_gb", "2"),
                ("virtual_vram_mb", "2048"),
                ("lazy_allocation", "1"),
                ("debug_mode", "0"),
                ("vram_limit_per_file_mb", "0"),
            ];
            for (name, value) in expected {
                check_eq(
                    name,
                    param(name).map_err(|e| format!("{name}: {e}"))?.as_str(),
                    value,
                )?;
            }
            let mode = fs::metadata("/sys/module/emuv/parameters/gpu_model")
                .map_err(|e| e.to_string())?
                .mode();
            check_eq("parameter mode", mode & 0o777, 0o444)?;
            check_eq(
                "gpu_name",
                attr("gpu_name").map_err(|e| e.to_string())?,
                "NVIDIA GeForce RTX 4070 Ti SUPER".into(),
            )
        },
    );
    tap.test("parameters shown under /sys/module/emuv/parameters", result);

    // modprobe passes emuv.conf's options before the command line's: the last one wins.
    let result = module::with_loaded(
        "gpu_model=4090 physical_vram_gb=8 gpu_model=5090 physical_vram_gb=16",
        || {
            check_eq(
                "gpu_name",
                attr("gpu_name").map_err(|e| e.to_string())?,
                "NVIDIA GeForce RTX 5090".into(),
            )?;
            check_eq(
                "physical_vram_bytes",
                attr("physical_vram_bytes").map_err(|e| e.to_string())?,
                (16 * GIB).to_string(),
            )
        },
    );
    tap.test("the last value given wins", result);

    // A physical size other than the card's is allowed, with a note.
    let mut kmsg = Kmsg::new();
    let result = module::with_loaded("gpu_model=5090 physical_vram_gb=24", || {
        let log = kmsg.read_new();
        check(
            log.iter()
                .any(|l| l.contains("physical VRAM set to 24576 MiB") && l.contains("32 GiB")),
            || format!("no note about the 5090's real 32 GiB: {log:?}"),
        )
    });
    tap.test(
        "physical size differing from the card's is noted in dmesg",
        result,
    );

    // The VFS pins the module while /dev/emuv is open: delete_module() says EWOULDBLOCK, which
    // rmmod prints as "Module emuv is in use".
    let result = module::check_pinned_by("", || File::open("/dev/emuv").map_err(|e| e.to_string()));
    tap.test("rmmod is refused while /dev/emuv is open", result);

    tap.finish()
}
