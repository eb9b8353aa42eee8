// SPDX-License-Identifier: GPL-2.0

//! Who opened a file: the process (thread-group leader) and its command name.

use kernel::{
    sync::aref::ARef,
    task::{Pid, Task},
};

/// The process that called into the driver, kept alive as long as this value.
pub(crate) struct Process {
    leader: ARef<Task>,
    /// `comm` at open time, NUL-padded.
    comm: [u8; 16],
}

impl Process {
    /// The calling process.
    pub(crate) fn current() -> Self {
        let current = kernel::current!();
        let leader = current.group_leader();
        let mut comm = [0u8; 16];
        // SAFETY: `leader` is a live task (it leads the calling thread's group); reading
        // `comm` without `task_lock` may see a concurrent rename half-done, which is harmless
        // for a name shown to people, and the copy is always within the array.
        let raw = unsafe { (*leader.as_ptr()).comm };
        for (dst, src) in comm.iter_mut().zip(raw.iter()) {
            *dst = *src;
        }
        Self {
            leader: leader.into(),
            comm,
        }
    }

    /// Its process ID as the calling reader sees it (0 if outside the reader's namespace).
    pub(crate) fn pid_for_current_reader(&self) -> Pid {
        let current = kernel::current!();
        self.leader.tgid_nr_ns(current.active_pid_ns())
    }

    /// Whether both are the same process.
    pub(crate) fn is(&self, other: &Process) -> bool {
        core::ptr::eq(self.leader.as_ptr(), other.leader.as_ptr())
    }

    /// Its command name.
    pub(crate) fn comm(&self) -> &[u8] {
        let len = self
            .comm
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..len]
    }
}
