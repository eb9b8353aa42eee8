// SPDX-License-Identifier: GPL-2.0
//! What one user can make the kernel hold is bounded: ALLOC and FREE need a file opened for
//! writing; a file holds at most `max_allocations_per_file` allocations (`ENOSPC`); all files
//! of one user hold at most `vram_limit_per_user_mb` (`ENOMEM`), however many times the user
//! opens the device or whichever of their subordinate uids (a user namespace of theirs) opens it;
//! every allocation's kernel memory is charged to the caller's memory
//! cgroup; and a storm of one-page allocations by an unprivileged user ends in a clean error
//! with kernel memory bounded (the figures are printed).

use emuv::{Device, Tier};
use emuv_tests::{
    cgroup_root, err, in_child, kasan_quarantine, kernel_memory, module, settled_kernel_memory,
    tap::{check, check_eq, Tap},
};
use nix::errno::Errno;
use std::{fs, os::unix::fs::PermissionsExt, path::Path};

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;
/// An unprivileged user, and a second one.
const NOBODY: u32 = 65534;
const OTHER: u32 = 65533;

/// Lets every user open the device, as a packaging rule for a group would.
fn open_to_all() -> Result<(), String> {
    fs::set_permissions("/dev/emuv", fs::Permissions::from_mode(0o666))
        .map_err(err("chmod /dev/emuv"))
}

fn read_only_open() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=64", || {
        let rw = Device::open().map_err(err("open O_RDWR"))?;
        let a = rw.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
        let ro = Device::open_read_only().map_err(err("open O_RDONLY"))?;
        let info = ro.info().map_err(err("INFO on a read-only file"))?;
        check_eq("used seen through the read-only file", info.used, MIB)?;
        check_eq(
            "QUERY of another file's handle",
            ro.query(a.handle).err(),
            Some(Errno::ENOENT),
        )?;
        let processes = ro
            .processes()
            .map_err(err("PROCESSES on a read-only file"))?;
        check_eq("processes", processes.len(), 1)?;
        fs::read_to_string("/dev/emuv").map_err(err("read on a read-only file"))?;
        check_eq(
            "ALLOC on a read-only file",
            ro.alloc(MIB, Tier::Any).err(),
            Some(Errno::EBADF),
        )?;
        check_eq(
            "FREE on a read-only file",
            ro.free(a.handle).err(),
            Some(Errno::EBADF),
        )?;
        check_eq(
            "used after refused ALLOC",
            ro.info().map_err(err("info"))?.used,
            MIB,
        )
    })
}

fn allocations_per_file() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=64 max_allocations_per_file=100", || {
        let dev = Device::open().map_err(err("open"))?;
        let mut handles = Vec::new();
        for i in 0..100 {
            handles.push(
                dev.alloc(PAGE, Tier::Any)
                    .map_err(err(&format!("alloc {i}")))?
                    .handle,
            );
        }
        check_eq(
            "the 101st allocation",
            dev.alloc(PAGE, Tier::Any).err(),
            Some(Errno::ENOSPC),
        )?;
        let info = dev.info().map_err(err("info"))?;
        check_eq("file_allocations", info.file_allocations, 100)?;
        check_eq("file_allocations_limit", info.file_allocations_limit, 100)?;
        // The limit is per file: another file may allocate, and a free makes room again.
        let other = Device::open().map_err(err("open again"))?;
        other
            .alloc(PAGE, Tier::Any)
            .map_err(err("alloc in another file"))?;
        dev.free(handles[42]).map_err(err("free"))?;
        dev.alloc(PAGE, Tier::Any)
            .map_err(err("alloc after a free"))?;
        Ok(())
    })
}

/// Opens the device as user `uid` (the file belongs to whoever opened it), then is root again.
fn open_as(uid: u32) -> Result<Device, String> {
    use nix::unistd::{seteuid, Uid};
    seteuid(Uid::from_raw(uid)).map_err(err("seteuid"))?;
    let dev = Device::open();
    seteuid(Uid::from_raw(0)).map_err(err("seteuid back"))?;
    dev.map_err(err(&format!("open as uid {uid}")))
}

fn bytes_per_user() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=64 vram_limit_per_user_mb=8", || {
        open_to_all()?;
        // One user's files share the limit; opening the device again does not escape it.
        let first = open_as(NOBODY)?;
        first.alloc(6 * MIB, Tier::Any).map_err(err("6 MiB"))?;
        let second = open_as(NOBODY)?;
        check_eq(
            "4 MiB more in another file",
            second.alloc(4 * MIB, Tier::Any).err(),
            Some(Errno::ENOMEM),
        )?;
        second
            .alloc(2 * MIB, Tier::Any)
            .map_err(err("the last 2 MiB"))?;
        let info = second.info().map_err(err("info"))?;
        check_eq("user_used", info.user_used, 8 * MIB)?;
        check_eq("user_limit", info.user_limit, 8 * MIB)?;
        check_eq("file_used", info.file_used, 2 * MIB)?;
        check_eq(
            "one page past the limit",
            first.alloc(PAGE, Tier::Any).err(),
            Some(Errno::ENOMEM),
        )?;
        // Another user has a limit of their own, usable while this one is full.
        let other = open_as(OTHER)?;
        other
            .alloc(8 * MIB, Tier::Any)
            .map_err(err("8 MiB as another user"))?;
        // Everything is returned with the files: the user starts from zero again.
        drop((first, second));
        let again = open_as(NOBODY)?;
        check_eq(
            "user_used after close",
            again.info().map_err(err("info"))?.user_used,
            0,
        )?;
        again
            .alloc(8 * MIB, Tier::Any)
            .map_err(err("8 MiB again"))
            .map(drop)
    })
}

/// In a child that became `NOBODY` and made a user namespace, whose uids 0 and 1 the parent
/// (root) maps to subordinate uids 100000 and 100001 as `newuidmap` would: allocates 6 MiB as
/// uid 0 there, then 4 MiB and 2 MiB in a new file as uid 1. Returns the three results.
fn allocations_in_a_user_namespace() -> Result<[Result<(), Errno>; 3], String> {
    use nix::{
        sched::{unshare, CloneFlags},
        sys::wait::{waitpid, WaitStatus},
        unistd::{
            fork, pipe, read, setgid, setresgid, setresuid, setuid, write, ForkResult, Gid, Uid,
        },
    };
    let (ready_rx, ready_tx) = pipe().map_err(err("pipe"))?;
    let (mapped_rx, mapped_tx) = pipe().map_err(err("pipe"))?;
    let (result_rx, result_tx) = pipe().map_err(err("pipe"))?;
    // SAFETY: this test program is single-threaded; the child only makes system calls.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            let code = |e: Result<(), Errno>| match e {
                Ok(()) => 0u8,
                Err(e) => e as i32 as u8,
            };
            let run = || -> Result<[u8; 3], Errno> {
                setgid(Gid::from_raw(NOBODY))?;
                setuid(Uid::from_raw(NOBODY))?;
                unshare(CloneFlags::CLONE_NEWUSER)?;
                write(&ready_tx, b"u")?;
                let mut byte = [0u8];
                read(&mapped_rx, &mut byte)?;
                let as_uid = |uid: u32| {
                    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))?;
                    setresuid(Uid::from_raw(uid), Uid::from_raw(uid), Uid::from_raw(uid))
                };
                as_uid(0)?;
                let first = Device::open()?;
                let a = first.alloc(6 * MIB, Tier::Any).map(drop);
                // uid 0 of the namespace may become uid 1 of it (it has CAP_SETUID there).
                as_uid(1)?;
                let second = Device::open()?;
                let b = second.alloc(4 * MIB, Tier::Any).map(drop);
                let c = second.alloc(2 * MIB, Tier::Any).map(drop);
                Ok([code(a), code(b), code(c)])
            };
            let answer = match run() {
                Ok(codes) => [b'o', codes[0], codes[1], codes[2]],
                Err(e) => [b'e', e as i32 as u8, 0, 0],
            };
            let _ = write(&result_tx, &answer);
            std::process::exit(0)
        }
        ForkResult::Parent { child } => {
            drop((ready_tx, mapped_rx, result_tx));
            let mut byte = [0u8];
            let ready = read(&ready_rx, &mut byte).map_err(err("wait for the child's namespace"));
            let mapped = ready.and_then(|_| {
                for map in ["uid_map", "gid_map"] {
                    fs::write(format!("/proc/{child}/{map}"), "0 100000 2\n").map_err(err(map))?;
                }
                write(&mapped_tx, b"m").map_err(err("tell the child"))
            });
            let mut answer = [0u8; 4];
            let got = read(&result_rx, &mut answer);
            let status = waitpid(child, None).map_err(err("waitpid"))?;
            mapped?;
            check(matches!(status, WaitStatus::Exited(_, 0)), || {
                format!("child: {status:?}")
            })?;
            check_eq("bytes of the child's answer", got.map_err(err("read"))?, 4)?;
            let result = |c: u8| {
                if c == 0 {
                    Ok(())
                } else {
                    Err(Errno::from_raw(i32::from(c)))
                }
            };
            match answer[0] {
                b'o' => Ok([result(answer[1]), result(answer[2]), result(answer[3])]),
                _ => Err(format!("child: {}", Errno::from_raw(i32::from(answer[1])))),
            }
        }
    }
}

/// A user's subordinate uids are the user's: they share one slice, as the uid that made the
/// namespace, instead of getting one each.
fn subordinate_uids_share_the_user_slice() -> Result<(), String> {
    module::with_loaded("physical_vram_mb=64 vram_limit_per_user_mb=8", || {
        open_to_all()?;
        let [a, b, c] = allocations_in_a_user_namespace()?;
        check_eq("6 MiB as uid 0 of the namespace", a, Ok(()))?;
        check_eq(
            "4 MiB more as uid 1 of it (another kernel uid, the same user)",
            b,
            Err(Errno::ENOMEM),
        )?;
        check_eq("the last 2 MiB as uid 1", c, Ok(()))
    })
}

/// A `memory.stat` field of a cgroup, in bytes.
fn memory_stat(cgroup: &Path, field: &str) -> Result<u64, String> {
    let text = fs::read_to_string(cgroup.join("memory.stat")).map_err(err("memory.stat"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("no '{field}' in memory.stat"))
}

fn charged_to_the_memcg(tap: &Tap) -> Result<(), String> {
    const ALLOCATIONS: u64 = 20_000;
    module::with_loaded("physical_vram_mb=1024", || {
        let cgroup = cgroup_root("memory")?.join("emuv-test");
        let _ = fs::remove_dir(&cgroup);
        fs::create_dir(&cgroup).map_err(err("mkdir cgroup"))?;
        let cg = cgroup.clone();
        let charged = in_child(None, move || {
            fs::write(cg.join("cgroup.procs"), "0").map_err(err("join the cgroup"))?;
            let dev = Device::open().map_err(err("open"))?;
            let before = memory_stat(&cg, "slab")?;
            for i in 0..ALLOCATIONS {
                dev.alloc(PAGE, Tier::Any)
                    .map_err(err(&format!("alloc {i}")))?;
            }
            Ok((memory_stat(&cg, "slab")? - before).to_string())
        });
        let removed = fs::remove_dir(&cgroup);
        let per_allocation = charged?.parse::<u64>().map_err(err("answer"))? / ALLOCATIONS;
        removed.map_err(err("rmdir cgroup"))?;
        tap.note(format!(
            "kernel memory charged to the caller's memory cgroup: {per_allocation} bytes per allocation"
        ));
        // The buffer, its handle-tree node share and its page-table stub: about 150 bytes.
        check(per_allocation >= 100, || {
            format!("only {per_allocation} bytes per allocation charged to the memory cgroup")
        })
    })
}

/// One-page allocations by an unprivileged user in `files` open files until each fails.
/// Returns (allocations made, the errors seen, kernel memory they held).
fn storm(files: usize) -> Result<(u64, Vec<Errno>, u64), String> {
    let answer = in_child(Some(NOBODY), move || {
        let before = kernel_memory();
        let devices = (0..files)
            .map(|_| Device::open())
            .collect::<Result<Vec<_>, _>>()
            .map_err(err("open"))?;
        let (mut made, mut errors) = (0u64, Vec::new());
        for dev in &devices {
            loop {
                match dev.alloc(PAGE, Tier::Any) {
                    Ok(_) => made += 1,
                    Err(e) => {
                        errors.push(e as i32);
                        break;
                    }
                }
            }
        }
        let held = kernel_memory().saturating_sub(before);
        let errors: Vec<String> = errors.iter().map(i32::to_string).collect();
        Ok(format!("{made} {held} {}", errors.join(",")))
    })?;
    let mut parts = answer.split(' ');
    let number = |s: Option<&str>| s.and_then(|s| s.parse::<u64>().ok()).ok_or("bad answer");
    let made = number(parts.next())?;
    let held = number(parts.next())?;
    let errors = parts
        .next()
        .unwrap_or("")
        .split(',')
        .filter_map(|e| e.parse().ok())
        .map(Errno::from_raw)
        .collect();
    Ok((made, errors, held))
}

/// Loads emuv with `params`, storms it from `files` files as an unprivileged user, prints the
/// figures, and checks that it stopped after `expected` allocations with `error` in every file,
/// holding at most 1 KiB of kernel memory per allocation and nothing after close.
fn storm_with(
    tap: &Tap,
    params: &str,
    files: usize,
    expected: u64,
    error: Errno,
) -> Result<(), String> {
    module::with_loaded(params, || {
        open_to_all()?;
        let before = kernel_memory();
        let (made, errors, held) = storm(files)?;
        let leaked = settled_kernel_memory().saturating_sub(before);
        tap.note(format!(
            "storm with {params}: {made} allocations in {files} files, then {error}; kernel \
             memory held {} KiB ({} bytes per allocation), {} KiB after close",
            held >> 10,
            held / made.max(1),
            leaked >> 10
        ));
        check_eq("allocations", made, expected)?;
        check(
            errors.len() == files && errors.iter().all(|&e| e == error),
            || format!("errors {errors:?}, expected {error} in each of {files} files"),
        )?;
        check(held <= made * 1024, || {
            format!("{held} bytes of kernel memory held")
        })?;
        // KASAN's quarantine holds freed objects back on the debug kernel (kmemleak is what
        // catches leaks there).
        check(leaked <= 4 * MIB + kasan_quarantine(), || {
            format!("{leaked} bytes still held after close")
        })
    })
}

fn allocation_storm(tap: &Tap) -> Result<(), String> {
    // With the per-user limit: 64 MiB is 16384 pages, across all 8 files together.
    let capped = storm_with(
        tap,
        "physical_vram_gb=1 vram_limit_per_user_mb=64",
        8,
        16384,
        Errno::ENOMEM,
    );
    // Without it, each file stops at the per-file allocation limit (65536 by default).
    let per_file = storm_with(tap, "physical_vram_gb=1", 2, 2 * 65536, Errno::ENOSPC);
    capped.and(per_file)
}

fn main() {
    let mut tap = Tap::new(6);
    if module::is_loaded() {
        let _ = module::unload();
    }
    tap.test(
        "a read-only open keeps INFO, QUERY, PROCESSES and read; ALLOC and FREE are EBADF",
        read_only_open(),
    );
    tap.test(
        "max_allocations_per_file: ENOSPC past it, per file",
        allocations_per_file(),
    );
    tap.test(
        "vram_limit_per_user_mb: one limit across all of a user's files, one per user",
        bytes_per_user(),
    );
    let name =
        "vram_limit_per_user_mb: a user's subordinate uids (unshare -U, setuid) share the user's slice";
    if Path::new("/proc/self/uid_map").exists() {
        tap.test(name, subordinate_uids_share_the_user_slice());
    } else {
        tap.skip(name, "this kernel has no user namespaces (CONFIG_USER_NS)");
    }
    let result = charged_to_the_memcg(&tap);
    tap.test(
        "every allocation's kernel memory is charged to the caller's memory cgroup",
        result,
    );
    let result = allocation_storm(&tap);
    tap.test(
        "a one-page allocation storm by an unprivileged user ends in a clean error, kernel memory bounded",
        result,
    );
    tap.finish()
}
