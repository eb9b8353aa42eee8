// SPDX-License-Identifier: GPL-2.0

//! Who opened a file: the process (by its `struct pid`), its command name and its user.
//!
//! Only C functions are used to find the process: 7.2's bindgen output places every
//! `task_struct` field after `stats` 48 bytes too early when `CONFIG_SCHEDSTATS=n` (the empty
//! `struct sched_statistics` is `____cacheline_aligned` in C, alignment bindgen drops), so
//! Rust field reads such as `Task::pid()` or `group_leader` are wrong on such kernels. The
//! command name has no C accessor; it is read from the field only after checking that the
//! bindings agree with C on this kernel.

use kernel::{bindings, task::Task};

/// The calling process, kept as a counted `struct pid` (its thread-group ID).
///
/// # Invariants
///
/// `pid` holds a reference taken by `get_task_pid`, put on drop.
pub(crate) struct Process {
    pid: core::ptr::NonNull<bindings::pid>,
    /// `comm` of the calling thread at open time, NUL-padded; "?" when it cannot be read safely.
    comm: [u8; 16],
}

// SAFETY: a counted `struct pid` may be used and put from any thread.
unsafe impl Send for Process {}
// SAFETY: `&Process` only reads the pid number through `pid_vnr`, which is thread-safe.
unsafe impl Sync for Process {}

/// Whether the Rust bindings' `task_struct` layout matches C's on this kernel, judged by two
/// fields after the usual point of divergence.
fn task_fields_match(task: *mut bindings::task_struct) -> bool {
    // SAFETY: `task` is the current task, alive for this call; the C functions only read it.
    unsafe {
        let pid_c =
            bindings::__task_pid_nr_ns(task, bindings::pid_type_PIDTYPE_PID, core::ptr::null_mut());
        let tgid_c = bindings::__task_pid_nr_ns(
            task,
            bindings::pid_type_PIDTYPE_TGID,
            core::ptr::null_mut(),
        );
        (*task).pid == pid_c && (*task).tgid == tgid_c
    }
}

impl Process {
    /// The calling process; `None` if the kernel cannot name it (it is exiting).
    pub(crate) fn current() -> Option<Self> {
        let task = Task::current_raw();
        // SAFETY: `task` is the current task; `get_task_pid` takes a reference or returns NULL.
        let pid = unsafe { bindings::get_task_pid(task, bindings::pid_type_PIDTYPE_TGID) };
        let pid = core::ptr::NonNull::new(pid)?;
        let mut comm = [0u8; 16];
        if task_fields_match(task) {
            // SAFETY: the layout check passed, so `comm` is the real field of the live current
            // task; a concurrent rename may be seen half-done, harmless for a displayed name.
            let raw = unsafe { (*task).comm };
            for (dst, src) in comm.iter_mut().zip(raw.iter()) {
                *dst = *src;
            }
        } else {
            comm[0] = b'?';
        }
        Some(Self { pid, comm })
    }

    /// Its process ID as the calling reader sees it, `None` if it lies outside the reader's
    /// PID namespace. The number is kept even after the process exited: check [`Self::alive`].
    pub(crate) fn pid_for_current_reader(&self) -> Option<i32> {
        // SAFETY: `pid` is counted (type invariant); `pid_vnr` reads it for the current task.
        let nr = unsafe { bindings::pid_vnr(self.pid.as_ptr()) };
        (nr > 0).then_some(nr)
    }

    /// Whether the process still exists. Once it has gone its number may name another
    /// process, so it must not be shown any more.
    pub(crate) fn alive(&self) -> bool {
        let _rcu = kernel::sync::rcu::read_lock();
        // SAFETY: `pid` is counted (type invariant); `pid_task` needs the RCU read lock, held.
        let task =
            unsafe { bindings::pid_task(self.pid.as_ptr(), bindings::pid_type_PIDTYPE_TGID) };
        !task.is_null()
    }

    /// Whether both are the same process.
    pub(crate) fn is(&self, other: &Process) -> bool {
        self.pid == other.pid
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

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `current` (type invariant).
        unsafe { bindings::put_pid(self.pid.as_ptr()) };
    }
}

/// A user, by kernel uid (the same whatever user namespace looks at it).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct User(u32);

impl User {
    /// The user the calling task's usage is charged to: its effective uid, or, in a user
    /// namespace, the user who created the outermost one (in the initial namespace). A user's
    /// subordinate uids (`unshare -U`, rootless containers) are that user's, so they share one
    /// `vram_limit_per_user_mb` slice instead of getting one each.
    pub(crate) fn current() -> Self {
        let task = kernel::current!();
        // SAFETY: a task's own credentials can be read without locks by the task itself (only
        // it replaces them), and they pin their user namespace, which pins its parents.
        let mut ns = unsafe { (*(*task.as_ptr()).cred).user_ns };
        let init = &raw const bindings::init_user_ns;
        let mut owner = None;
        while !ns.is_null() && !core::ptr::eq(ns.cast_const(), init) {
            // SAFETY: a live namespace of the chain above (pinned, see above).
            unsafe {
                owner = Some((*ns).owner.val);
                ns = (*ns).parent;
            }
        }
        // SAFETY: `current_euid` reads the current task's credentials, always valid.
        Self(owner.unwrap_or_else(|| unsafe { bindings::current_euid() }.val))
    }
}
