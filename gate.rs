// SPDX-License-Identifier: GPL-2.0

//! The gate between a card's memory and the page faults that map it: open while the card
//! works, closed when it is lost (`fail=lost`). Closing waits for the faults already inside,
//! so once [`AccessGate::close`] returns no fault can still map a page, and removing the pages
//! from page tables then makes every later access fault and find the gate closed (`SIGBUS`).

use kernel::{
    sync::atomic::{Acquire, Atomic, Full, Relaxed, Release},
    time::{delay::fsleep, Delta},
};

/// See the module documentation.
pub(crate) struct AccessGate {
    closed: Atomic<bool>,
    /// Faults (and prefaulting `mmap`s) between [`AccessGate::enter`] and the drop of its pass.
    inside: Atomic<i64>,
}

/// Proof of being inside an open gate; leaving drops it.
pub(crate) struct Inside<'a>(&'a AccessGate);

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Release);
    }
}

impl AccessGate {
    pub(crate) const fn new() -> Self {
        Self {
            closed: Atomic::new(false),
            inside: Atomic::new(0),
        }
    }

    /// Enters the gate, or `None` when it is closed.
    pub(crate) fn enter(&self) -> Option<Inside<'_>> {
        // A full barrier between counting ourselves in and reading `closed`, against the same
        // pair in the other order in `close`: either we see it closed, or it sees us inside.
        self.inside.fetch_add(1, Full);
        let inside = Inside(self);
        (!self.closed.load(Acquire)).then_some(inside)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Closes the gate and waits until nothing is inside. Returns whether it was open.
    pub(crate) fn close(&self) -> bool {
        let was_open = !self.closed.xchg(true, Full);
        // A fault inside holds no lock we hold, allocates at most 2 MiB and maps it: short.
        while self.inside.load(Acquire) != 0 {
            fsleep(Delta::from_millis(1));
        }
        was_open
    }

    pub(crate) fn open(&self) {
        self.closed.store(false, Release);
    }
}
