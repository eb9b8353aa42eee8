// SPDX-License-Identifier: GPL-2.0
//! Who holds the card's memory, as data and as text, without lies or leaks: a process name
//! cannot forge rows of `cat /dev/emuv` (any byte that is not printable is escaped) and comes
//! through `EMUV_IOCTL_PROCESSES` as raw bytes; a reader in a PID namespace sees only the
//! processes of its namespace, under their PIDs there; a file whose opener has exited is shown
//! without a PID (its number may belong to another process by then).

use emuv::{Device, ProcessEntry, Tier};
use emuv_tests::{
    err, in_child, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    sched::{unshare, CloneFlags},
    sys::{prctl, wait::waitpid},
    unistd::{fork, getpid, pipe, read, write, ForkResult, Pid},
};
use std::{ffi::CString, os::fd::AsFd};

const MIB: u64 = 1 << 20;
const PARAMS: &str = "physical_vram_mb=64";
/// A name that, written raw, adds a row for a PID that does not exist.
const FORGED: &[u8] = b"ev\n4242 fake 9";

/// The rows of the report's process table that hold memory (the reader itself is listed too,
/// holding nothing).
fn report_rows(report: &str) -> Vec<String> {
    report
        .lines()
        .skip_while(|l| !l.starts_with("Processes:"))
        .skip(2)
        .filter(|row| row.split_whitespace().nth_back(1) != Some("0"))
        .map(str::to_owned)
        .collect()
}

/// The entries of `EMUV_IOCTL_PROCESSES` that hold memory, read through a read-only open.
fn holders() -> Result<Vec<ProcessEntry>, String> {
    let list = Device::open_read_only()
        .and_then(|d| d.processes())
        .map_err(err("PROCESSES"))?;
    Ok(list.into_iter().filter(|p| p.bytes > 0).collect())
}

/// Runs `hold` in a child that keeps what it returns until the parent is done with `check`.
fn while_child_holds<T>(
    hold: impl FnOnce() -> Result<T, String>,
    check: impl FnOnce(Pid) -> Result<(), String>,
) -> Result<(), String> {
    let (ready_rx, ready_tx) = pipe().map_err(err("pipe"))?;
    let (done_rx, done_tx) = pipe().map_err(err("pipe"))?;
    // SAFETY: single-threaded test; the child only runs `hold` and waits.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            // Only the parent's copy of `done_tx` may keep the pipe open.
            drop((ready_rx, done_tx));
            let held = hold();
            let _ = write(ready_tx.as_fd(), if held.is_ok() { b"y" } else { b"n" });
            let _ = read(&done_rx, &mut [0u8; 1]);
            std::process::exit(0)
        }
        ForkResult::Parent { child } => {
            drop((ready_tx, done_rx));
            let mut b = [0u8; 1];
            let ready = read(&ready_rx, &mut b).map_err(err("read"));
            let result = match ready {
                Ok(1) if b[0] == b'y' => check(child),
                _ => Err("the child could not set up".into()),
            };
            drop(done_tx);
            waitpid(child, None).map_err(err("waitpid"))?;
            result
        }
    }
}

fn hold_one_mib(name: &[u8]) -> impl FnOnce() -> Result<Device, String> + '_ {
    move || {
        prctl::set_name(&CString::new(name).map_err(err("name"))?).map_err(err("PR_SET_NAME"))?;
        let dev = Device::open().map_err(err("open"))?;
        dev.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
        Ok(dev)
    }
}

fn forged_name() -> Result<(), String> {
    module::with_loaded(PARAMS, || {
        while_child_holds(hold_one_mib(FORGED), |child| {
            let report = std::fs::read_to_string("/dev/emuv").map_err(err("cat /dev/emuv"))?;
            let rows = report_rows(&report);
            check_eq("process rows", rows.len(), 1)?;
            let fields: Vec<&str> = rows[0].split_whitespace().collect();
            check_eq(
                "the row",
                fields,
                vec![
                    &child.to_string()[..],
                    "ev\\n4242",
                    "fake",
                    "9",
                    "1048576",
                    "1",
                ],
            )?;
            check(
                !report.lines().any(|l| l.trim_start().starts_with("4242")),
                || format!("a forged row for PID 4242:\n{report}"),
            )?;
            // As data, the name is the raw bytes, and the PID the real one.
            let list = holders()?;
            check_eq("entries", list.len(), 1)?;
            check_eq("pid", list[0].pid, Some(child.as_raw() as u32))?;
            check_eq("comm", &list[0].comm[..], FORGED)?;
            check_eq("bytes", list[0].bytes, MIB)
        })
    })
}

/// Holds 1 MiB in this process and looks at the list from a new PID namespace.
fn pid_namespace() -> Result<(), String> {
    module::with_loaded(PARAMS, || {
        let outside = Device::open().map_err(err("open"))?;
        outside.alloc(MIB, Tier::Any).map_err(err("alloc"))?;
        let seen = in_child(None, || {
            unshare(CloneFlags::CLONE_NEWPID).map_err(err("unshare(CLONE_NEWPID)"))?;
            // The next child is PID 1 of the new namespace.
            in_child(None, || {
                check_eq("pid inside", getpid().as_raw(), 1)?;
                let dev = Device::open().map_err(err("open inside"))?;
                dev.alloc(2 * MIB, Tier::Any).map_err(err("alloc inside"))?;
                let list = dev.processes().map_err(err("PROCESSES inside"))?;
                let report =
                    std::fs::read_to_string("/dev/emuv").map_err(err("cat /dev/emuv inside"))?;
                Ok(format!("{list:?}\n{}", report_rows(&report).join("\n")))
            })
        })?;
        let (list, rows) = seen.split_once('\n').unwrap_or((&seen, ""));
        // Only itself, as PID 1: not the process outside, not even as PID 0.
        check(
            list.matches("ProcessEntry").count() == 1 && list.contains("pid: Some(1)"),
            || format!("PROCESSES inside the namespace: {list}"),
        )?;
        let rows: Vec<&str> = rows.lines().collect();
        check(
            rows.len() == 1 && rows[0].trim_start().starts_with("1 "),
            || format!("report rows inside the namespace: {rows:?}"),
        )?;
        // The host sees its own entry under its own PID (the namespace's process has gone).
        let all = outside.processes().map_err(err("PROCESSES outside"))?;
        check_eq("entries seen from the host", all.len(), 1)?;
        check_eq("own entry", all[0].pid, Some(getpid().as_raw() as u32))
    })
}

/// A file whose opener exited but that lives on in a child that inherited it.
fn exited_opener() -> Result<(), String> {
    module::with_loaded(PARAMS, || {
        prctl::set_child_subreaper(true).map_err(err("PR_SET_CHILD_SUBREAPER"))?;
        let (ready_rx, ready_tx) = pipe().map_err(err("pipe"))?;
        let (done_rx, done_tx) = pipe().map_err(err("pipe"))?;
        // SAFETY: single-threaded test; the children only allocate, fork and wait.
        let opener = match unsafe { fork() }.map_err(err("fork"))? {
            ForkResult::Child => {
                drop((ready_rx, done_tx));
                let held = hold_one_mib(b"opener")();
                // SAFETY: as above.
                if let (Ok(dev), Ok(ForkResult::Child)) = (held, unsafe { fork() }) {
                    // The heir keeps the file open; the opener exits at once.
                    let _ = write(ready_tx.as_fd(), b"y");
                    let _ = read(&done_rx, &mut [0u8; 1]);
                    drop(dev);
                }
                std::process::exit(0)
            }
            ForkResult::Parent { child } => child,
        };
        drop((ready_tx, done_rx));
        waitpid(opener, None).map_err(err("waitpid opener"))?;
        let ready = read(&ready_rx, &mut [0u8; 1]).map_err(err("read"));
        let result = (|| {
            check_eq("heir ready", ready?, 1)?;
            let list = holders()?;
            check_eq("entries", list.len(), 1)?;
            check_eq("pid of an exited opener", list[0].pid, None)?;
            check(list[0].exited(), || "EMUV_PROCESS_EXITED not set".into())?;
            check_eq("bytes", list[0].bytes, MIB)?;
            let report = std::fs::read_to_string("/dev/emuv").map_err(err("cat /dev/emuv"))?;
            let rows = report_rows(&report);
            check(
                rows.len() == 1 && rows[0].split_whitespace().next() == Some("-"),
                || format!("report rows: {rows:?}"),
            )?;
            check(!rows[0].contains(&opener.to_string()), || {
                format!("the exited opener's PID is shown: {}", rows[0])
            })
        })();
        drop(done_tx);
        // The heir was handed to us as subreaper.
        let _ = nix::sys::wait::wait();
        result
    })
}

fn main() {
    let mut tap = Tap::new(3);
    if module::is_loaded() {
        let _ = module::unload();
    }
    tap.test(
        "a process name cannot forge report rows; PROCESSES gives its raw bytes",
        forged_name(),
    );
    tap.test(
        "a reader in a PID namespace sees only its namespace's processes, under its PIDs",
        pid_namespace(),
    );
    tap.test(
        "a file whose opener exited is shown without a PID",
        exited_opener(),
    );
    tap.finish()
}
