// SPDX-License-Identifier: GPL-2.0
//! Safe access to `/dev/emuv`: the emulated GPU's info, and allocating, mapping, querying and
//! freeing emulated VRAM. Types come from `include/uapi/emuv.h` (bindgen, at build time).

use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    libc,
    sys::{
        mman::{mmap, munmap, MapFlags, ProtFlags},
        stat::Mode,
    },
};
use std::{
    ffi::{c_uint, c_void, CStr},
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    ptr::NonNull,
};

pub mod gpus;

/// The C ABI, as bindgen reads it from `include/uapi/emuv.h`.
#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    missing_docs,
    clippy::all
)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/uapi.rs"));
}

unsafe extern "C" {
    static emuv_ioctl_info: c_uint;
    static emuv_ioctl_alloc: c_uint;
    static emuv_ioctl_free: c_uint;
    static emuv_ioctl_query: c_uint;
}

/// The ioctl numbers, as the C header computes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlNumbers {
    pub info: u32,
    pub alloc: u32,
    pub free: u32,
    pub query: u32,
}

/// The ioctl numbers from the header.
pub fn ioctl_numbers() -> IoctlNumbers {
    // SAFETY: plain constants defined in src/ioctl_numbers.c.
    unsafe {
        IoctlNumbers {
            info: emuv_ioctl_info,
            alloc: emuv_ioctl_alloc,
            free: emuv_ioctl_free,
            query: emuv_ioctl_query,
        }
    }
}

/// Where an allocation may go, or went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Any,
    Physical,
    Virtual,
}

impl Tier {
    pub fn to_raw(self) -> u32 {
        match self {
            Tier::Any => sys::EMUV_TIER_ANY,
            Tier::Physical => sys::EMUV_TIER_PHYSICAL,
            Tier::Virtual => sys::EMUV_TIER_VIRTUAL,
        }
    }

    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            sys::EMUV_TIER_ANY => Some(Tier::Any),
            sys::EMUV_TIER_PHYSICAL => Some(Tier::Physical),
            sys::EMUV_TIER_VIRTUAL => Some(Tier::Virtual),
            _ => None,
        }
    }
}

/// An allocation made through a [`Device`]; valid for that open file only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub handle: u32,
    pub bytes: u64,
    pub tier: Tier,
    pub mmap_offset: u64,
}

/// An open `/dev/emuv`. Allocations belong to it and are freed when it is closed.
pub struct Device {
    fd: OwnedFd,
}

/// The path of the device node.
pub const DEVICE_PATH: &str = "/dev/emuv";

impl Device {
    /// Opens `/dev/emuv` (root only unless a packaging rule grants a group).
    pub fn open() -> Result<Self, Errno> {
        let fd = open(DEVICE_PATH, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Device { fd })
    }

    /// Issues `cmd` with `arg`, returning the ioctl's result: for tests of bad input.
    ///
    /// # Safety
    ///
    /// `arg` must be what `cmd` expects (for emuv's commands, a pointer to its struct).
    pub unsafe fn ioctl_raw(&self, cmd: u32, arg: *mut c_void) -> Result<i32, Errno> {
        // SAFETY: per this function's contract.
        Errno::result(unsafe { libc::ioctl(self.fd.as_raw_fd(), cmd as _, arg) })
    }

    fn ioctl<T>(&self, cmd: u32, arg: &mut T) -> Result<(), Errno> {
        // SAFETY: every emuv command takes a pointer to its struct, which `T` is by construction
        // of the callers below.
        unsafe { self.ioctl_raw(cmd, (arg as *mut T).cast()) }.map(drop)
    }

    /// `EMUV_IOCTL_INFO`.
    pub fn info(&self) -> Result<sys::emuv_info, Errno> {
        let mut info = sys::emuv_info {
            size: std::mem::size_of::<sys::emuv_info>() as u32,
            ..Default::default()
        };
        self.ioctl(ioctl_numbers().info, &mut info)?;
        Ok(info)
    }

    /// `EMUV_IOCTL_ALLOC` with a request as given (for tests of bad input).
    pub fn alloc_raw(&self, req: &mut sys::emuv_alloc) -> Result<(), Errno> {
        self.ioctl(ioctl_numbers().alloc, req)
    }

    /// A fresh, valid allocation request.
    pub fn alloc_request(bytes: u64, tier: Tier) -> sys::emuv_alloc {
        sys::emuv_alloc {
            size: std::mem::size_of::<sys::emuv_alloc>() as u32,
            bytes,
            tier: tier.to_raw(),
            ..Default::default()
        }
    }

    /// Allocates `bytes` (rounded up to pages) of emulated VRAM in `tier`.
    pub fn alloc(&self, bytes: u64, tier: Tier) -> Result<Allocation, Errno> {
        let mut req = Self::alloc_request(bytes, tier);
        self.alloc_raw(&mut req)?;
        Ok(Allocation {
            handle: req.handle,
            bytes: req.bytes,
            tier: Tier::from_raw(req.tier).ok_or(Errno::EPROTO)?,
            mmap_offset: req.mmap_offset,
        })
    }

    /// `EMUV_IOCTL_FREE` with a request as given.
    pub fn free_raw(&self, req: &mut sys::emuv_free) -> Result<(), Errno> {
        self.ioctl(ioctl_numbers().free, req)
    }

    /// Frees an allocation (`EBUSY` while mapped, `ENOENT` if not this file's).
    pub fn free(&self, handle: u32) -> Result<(), Errno> {
        self.free_raw(&mut sys::emuv_free {
            handle,
            ..Default::default()
        })
    }

    /// `EMUV_IOCTL_QUERY`.
    pub fn query(&self, handle: u32) -> Result<sys::emuv_query, Errno> {
        let mut query = sys::emuv_query {
            handle,
            ..Default::default()
        };
        self.ioctl(ioctl_numbers().query, &mut query)?;
        Ok(query)
    }

    /// Maps a whole allocation, shared, readable and writable.
    pub fn map(&self, allocation: &Allocation) -> Result<Mapping, Errno> {
        self.map_range(
            allocation.mmap_offset,
            allocation.bytes as usize,
            MapFlags::MAP_SHARED,
        )
    }

    /// Maps `len` bytes at file offset `offset` with `flags` (for tests of bad input too).
    pub fn map_range(&self, offset: u64, len: usize, flags: MapFlags) -> Result<Mapping, Errno> {
        let len_nz = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a new mapping chosen by the kernel; it aliases no Rust object.
        let ptr = unsafe {
            mmap(
                None,
                len_nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                &self.fd,
                offset as i64,
            )
        }?;
        Ok(Mapping { ptr, len })
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A mapping of emulated VRAM; unmapped on drop.
pub struct Mapping {
    ptr: NonNull<c_void>,
    len: usize,
}

// SAFETY: plain memory; the kernel keeps it valid until `munmap`.
unsafe impl Send for Mapping {}

impl Mapping {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }

    /// The mapped bytes. Another mapping of the same allocation may change them concurrently,
    /// as with any shared memory.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes are mapped read-write at `ptr` until drop.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// Unmaps now and says whether it worked: `munmap` itself allocates and can fail with
    /// `ENOMEM`, in which case the mapping is handed back, still mapped.
    pub fn unmap(self) -> Result<(), (Errno, Mapping)> {
        // SAFETY: unmapping exactly the range `mmap` returned; on success `self` is forgotten
        // so that drop does not unmap it again.
        match unsafe { munmap(self.ptr, self.len) } {
            Ok(()) => {
                std::mem::forget(self);
                Ok(())
            }
            Err(e) => Err((e, self)),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the range `mmap` returned.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// A NUL-terminated C string field as text.
pub fn c_field(field: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = field.iter().map(|&c| c as u8).collect();
    CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
