// SPDX-License-Identifier: GPL-2.0

//! Lets the ioctl structures of `uapi.rs` be copied from and to userspace.

use crate::uapi::{Alloc, Free, Info, Process, Processes, Query, TierInfo};
use kernel::transmute::{AsBytes, FromBytes};

macro_rules! plain_data {
    ($($t:ty),+) => {$(
        // SAFETY: `#[repr(C)]` structs of integers and integer arrays with explicit padding
        // fields: no padding bytes, and every bit pattern is a valid value.
        unsafe impl FromBytes for $t {}
        // SAFETY: as above.
        unsafe impl AsBytes for $t {}
    )+};
}

plain_data!(TierInfo, Info, Alloc, Free, Query, Process, Processes);
