// SPDX-License-Identifier: GPL-2.0
//! The kernel's fault injection (Documentation/fault-injection/), aimed at one test task:
//! `fail-nth` fails exactly the Nth slab or page allocation the task makes next, and the
//! task filter (`make-it-fail`) confines random failures to chosen processes.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::FileExt,
};

const DEBUGFS: &str = "/sys/kernel/debug";

/// Lets failslab and fail_page_alloc hit the allocations emuv makes: order-0 pages and
/// allocations that may sleep are skipped by default. User pages (`__GFP_HIGHMEM`) stay
/// exempt, so the test program's own page faults are never failed. Quiet: no stack dumps.
///
/// Random failures are switched off first and on last: in between, a task filter already
/// lifted with the probability still set would fail allocations everywhere in the machine
/// (including the writes that were to switch it off).
pub fn configure(probability: u32, task_filter: bool) -> io::Result<()> {
    let filter = if task_filter { "Y" } else { "N" };
    for (file, value) in [
        ("failslab/probability", "0"),
        ("fail_page_alloc/probability", "0"),
        ("failslab/ignore-gfp-wait", "N"),
        ("failslab/verbose", "0"),
        ("failslab/task-filter", filter),
        ("failslab/interval", "1"),
        ("failslab/times", "-1"),
        ("fail_page_alloc/ignore-gfp-wait", "N"),
        ("fail_page_alloc/ignore-gfp-highmem", "Y"),
        ("fail_page_alloc/min-order", "0"),
        ("fail_page_alloc/verbose", "0"),
        ("fail_page_alloc/task-filter", filter),
        ("fail_page_alloc/interval", "1"),
        ("fail_page_alloc/times", "-1"),
        ("failslab/probability", &probability.to_string()),
        ("fail_page_alloc/probability", &probability.to_string()),
    ] {
        fs::write(format!("{DEBUGFS}/{file}"), value)
            .map_err(|e| io::Error::new(e.kind(), format!("{DEBUGFS}/{file}: {e}")))?;
    }
    Ok(())
}

/// Fails only page allocations of `min_order` or more (2 MiB pages: 9) by marked tasks, with
/// `probability` percent; slab allocations and smaller pages go on working.
pub fn configure_large_pages(min_order: u32, probability: u32) -> io::Result<()> {
    configure(0, true)?;
    for (file, value) in [
        ("fail_page_alloc/min-order", min_order.to_string()),
        ("fail_page_alloc/probability", probability.to_string()),
    ] {
        fs::write(format!("{DEBUGFS}/{file}"), value)
            .map_err(|e| io::Error::new(e.kind(), format!("{DEBUGFS}/{file}: {e}")))?;
    }
    Ok(())
}

/// Whether this kernel can inject faults (CONFIG_FAULT_INJECTION_DEBUG_FS, FAILSLAB,
/// FAIL_PAGE_ALLOC).
pub fn available() -> bool {
    ["failslab", "fail_page_alloc"]
        .iter()
        .all(|d| fs::metadata(format!("{DEBUGFS}/{d}")).is_ok())
}

/// This process's mark for the task filter (random failures hit only marked tasks), opened
/// once: unmarking through a fresh open could itself be failed.
pub struct MakeItFail(File);

impl MakeItFail {
    pub fn open() -> io::Result<Self> {
        OpenOptions::new()
            .write(true)
            .open("/proc/self/make-it-fail")
            .map(MakeItFail)
    }

    pub fn set(&self, on: bool) -> io::Result<()> {
        self.0.write_at(if on { b"1" } else { b"0" }, 0).map(drop)
    }
}

/// This thread's `fail-nth`, opened once: opening it allocates, arming and reading do not.
pub struct FailNth(File);

impl FailNth {
    pub fn open() -> io::Result<Self> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .map(FailNth)
    }

    /// The `n`th fault-injection point this thread reaches from now on fails.
    pub fn arm(&self, n: u32) -> io::Result<()> {
        self.0.write_at(n.to_string().as_bytes(), 0).map(drop)
    }

    /// Disarms; returns whether the failure was injected (the countdown reached zero).
    pub fn disarm(&self) -> io::Result<bool> {
        let mut buf = [0u8; 16];
        let len = self.0.read_at(&mut buf, 0)?;
        let left = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
        self.0.write_at(b"0", 0)?;
        Ok(left == "0")
    }
}
