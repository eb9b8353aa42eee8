// SPDX-License-Identifier: GPL-2.0

//! Waiting for a work item: 7.2's Rust workqueue API can queue work but not wait for it, which
//! a work item that runs module code needs before its module goes.

use kernel::{bindings, workqueue::Work};

/// Waits until `work` is neither queued nor running (`flush_work()`). May sleep.
pub(crate) fn wait_idle<T: ?Sized, const ID: u64>(work: &Work<T, ID>) {
    // SAFETY: `work` is a live, initialised `work_struct` (a `Work` exists only initialised)
    // that the borrow keeps alive for the call; `flush_work()` only waits on it.
    unsafe { bindings::flush_work(Work::raw_get(work)) };
}
