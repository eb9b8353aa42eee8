// SPDX-License-Identifier: GPL-2.0

//! The one place where emuv talks to C directly.
//!
//! Linux 7.2's Rust abstractions have no class devices, sysfs attributes, visible module
//! parameters, `file_operations.owner`/`llseek`/`get_unmapped_area`, GFP flags beyond seven,
//! folios, huge (PMD) faults, or waiting for work items. Each gap is closed here behind a small safe type; everything
//! outside this module is safe Rust.

pub(crate) mod chrdev;
#[cfg(CONFIG_CONFIGFS_FS)]
pub(crate) mod configfs;
pub(crate) mod dmem;
pub(crate) mod mem;
pub(crate) mod param;
pub(crate) mod sysfs;
pub(crate) mod task;
pub(crate) mod uapi;
pub(crate) mod vma;
pub(crate) mod work;

/// Makes a C table holding raw pointers usable as a `static`.
#[repr(transparent)]
pub(crate) struct AssertSync<T>(T);

impl<T> AssertSync<T> {
    /// # Safety
    ///
    /// `value` must be a table that neither Rust nor C mutates once built, and whose pointers
    /// may be read from any thread.
    pub(crate) const unsafe fn new(value: T) -> Self {
        Self(value)
    }

    pub(crate) const fn as_ptr(&self) -> *const T {
        &self.0
    }
}

// SAFETY: by `new`'s contract the table is never mutated and its pointers may be shared.
unsafe impl<T> Sync for AssertSync<T> {}
