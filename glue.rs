// SPDX-License-Identifier: GPL-2.0

//! The one place where emuv talks to C directly.
//!
//! Linux 7.2's Rust abstractions have no class devices, sysfs attributes, visible module
//! parameters, `file_operations.owner`/`llseek`, or GFP flags beyond seven. Each gap is closed
//! here behind a small safe type; everything outside this module is safe Rust.

pub(crate) mod chrdev;
pub(crate) mod mem;
pub(crate) mod param;
pub(crate) mod sysfs;
pub(crate) mod task;
pub(crate) mod uapi;
pub(crate) mod vma;

/// Makes a C struct holding raw pointers usable as a `static`.
#[repr(transparent)]
pub(crate) struct AssertSync<T>(pub(crate) T);

// SAFETY: only used for C tables (`file_operations`, sysfs attributes, module parameters) that
// neither Rust nor C mutate after initialisation.
unsafe impl<T> Sync for AssertSync<T> {}
