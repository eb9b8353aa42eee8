// SPDX-License-Identifier: GPL-2.0

//! KUnit suites for emuv's model table, VRAM pool, page ranges and report, as a module of
//! their own.
//!
//! Built from the same sources as `emuv.ko`, with `--cfg emuv_kunit`,
//! which turns on the `#[kunit_tests]` modules inside them. Loading this module runs the suites
//! once; `emuv.ko` carries no tests, so load/unload cycles do not rerun them.

// The test crate compiles only the parts under test: what `emuv.ko` alone uses is unused here.
#[allow(dead_code)]
mod client;
#[allow(dead_code)]
mod gate;
#[allow(dead_code)]
mod glue {
    pub(crate) mod dmem;
    pub(crate) mod mem;
    pub(crate) mod task;
    pub(crate) mod vma;
    pub(crate) mod work;
}
#[allow(dead_code)]
mod gpu_db;
#[allow(dead_code)]
mod page_ranges;
#[allow(dead_code)]
mod report;
#[allow(dead_code)]
mod uapi;
#[allow(dead_code)]
mod vram_pool;

use kernel::prelude::*;

module! {
    type: EmuvKunit,
    name: "emuv_kunit",
    authors: ["emuv developers"],
    description: "KUnit tests of emuv's model table and VRAM pool",
    license: "GPL",
}

struct EmuvKunit;

impl kernel::Module for EmuvKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        // The suites ran when the module went live; their results are in dmesg and debugfs.
        Ok(Self)
    }
}
