// SPDX-License-Identifier: GPL-2.0
//! Safe access to `/dev/emuv`: the emulated GPU's info, and allocating, mapping, querying and
//! freeing emulated VRAM, and who holds it. Types come from `include/uapi/emuv.h` (bindgen, at
//! build time).

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
    fmt::Write,
    num::NonZeroUsize,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
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
    static emuv_ioctl_processes: c_uint;
}

/// The ioctl numbers, as the C header computes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlNumbers {
    pub info: u32,
    pub alloc: u32,
    pub free: u32,
    pub query: u32,
    pub processes: u32,
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
            processes: emuv_ioctl_processes,
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

/// A process holding files of the device open, as `EMUV_IOCTL_PROCESSES` reports it: data, not
/// a line of text, so that no command name can forge or break an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessEntry {
    /// In the caller's PID namespace. `None` for a file whose opening process has exited (the
    /// file was inherited or passed on): its number may name another process by now.
    pub pid: Option<u32>,
    /// The command name at open, raw and without its NUL padding: any bytes the process chose
    /// (`prctl(PR_SET_NAME)`), newlines included. Show it with [`printable`].
    pub comm: Vec<u8>,
    /// Emulated VRAM held, in bytes.
    pub bytes: u64,
    pub allocations: u64,
}

impl ProcessEntry {
    fn from_raw(raw: &sys::emuv_process) -> Result<Self, Errno> {
        let pid = if raw.flags & sys::EMUV_PROCESS_EXITED != 0 {
            None
        } else {
            // A live process the caller can see has a positive PID in its namespace.
            let pid = u32::try_from(raw.pid).ok().filter(|&pid| pid > 0);
            Some(pid.ok_or(Errno::EPROTO)?)
        };
        Ok(ProcessEntry {
            pid,
            comm: raw
                .comm
                .iter()
                .map(|&c| c as u8)
                .take_while(|&b| b != 0)
                .collect(),
            bytes: raw.bytes,
            allocations: raw.allocations,
        })
    }

    /// Whether the process that opened the file has exited (no PID to show).
    pub fn exited(&self) -> bool {
        self.pid.is_none()
    }

    /// The command name as one line of text: see [`printable`].
    pub fn comm_lossy(&self) -> String {
        printable(&self.comm)
    }
}

/// A name from the system (a command name, a path) as text that stays on one line: any user
/// can name a process or a file with any byte but NUL. Printable UTF-8 stays as it is;
/// anything else is escaped as Rust writes it (`\n`, `\t`, `\u{202e}`), an invalid byte as
/// `\xff`, and a backslash as `\\`, so that an escape cannot be mistaken for the name itself.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                // Quotes print as they are; `escape_debug` would add backslashes.
                '"' | '\'' => out.push(c),
                _ => out.extend(c.escape_debug()),
            }
        }
        for byte in chunk.invalid() {
            // Infallible: writing to a String.
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// An open `/dev/emuv`. Allocations belong to it and are freed when it is closed.
pub struct Device {
    fd: OwnedFd,
}

/// The path of the device node.
pub const DEVICE_PATH: &str = "/dev/emuv";

impl Device {
    /// Opens `/dev/emuv` for reading and writing, as allocating needs (root only unless a
    /// packaging rule grants a group).
    pub fn open() -> Result<Self, Errno> {
        Self::open_path(DEVICE_PATH, true)
    }

    /// Opens `/dev/emuv` read-only: enough for INFO, QUERY and PROCESSES, which is all a
    /// monitoring tool needs; ALLOC and FREE fail with `EBADF`.
    pub fn open_read_only() -> Result<Self, Errno> {
        Self::open_path(DEVICE_PATH, false)
    }

    /// Opens an emuv device node (a card other than `/dev/emuv`), `writable` to allocate.
    pub fn open_path(path: impl AsRef<Path>, writable: bool) -> Result<Self, Errno> {
        let access = if writable {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        let fd = open(path.as_ref(), access | OFlag::O_CLOEXEC, Mode::empty())?;
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

    /// `EMUV_IOCTL_PROCESSES`: every process with the card open, this one included (a
    /// read-only open holds nothing), in the kernel's order. Works on a read-only open. The list
    /// changes between calls: the kernel says how many entries there are, and the call is
    /// repeated with room for them until they fit.
    pub fn processes(&self) -> Result<Vec<ProcessEntry>, Errno> {
        let mut entries: Vec<sys::emuv_process> = Vec::new();
        loop {
            let room = u32::try_from(entries.len()).map_err(|_| Errno::EOVERFLOW)?;
            let mut req = sys::emuv_processes {
                size: std::mem::size_of::<sys::emuv_processes>() as u32,
                entry_size: std::mem::size_of::<sys::emuv_process>() as u32,
                count: room,
                entries: entries.as_mut_ptr().expose_provenance() as u64,
                ..Default::default()
            };
            // SAFETY: the command takes a pointer to `req`, and the kernel writes at most
            // `req.count` entries of `entry_size` bytes at `req.entries`: `entries` holds them.
            unsafe { self.ioctl_raw(ioctl_numbers().processes, (&raw mut req).cast()) }?;
            if req.total <= room {
                if req.count != req.total {
                    return Err(Errno::EPROTO);
                }
                entries.truncate(req.count as usize);
                return entries.iter().map(ProcessEntry::from_raw).collect();
            }
            // More than there was room for (none, the first time; processes may open the
            // device between calls): room for all, and again.
            entries = vec![sys::emuv_process::default(); req.total as usize];
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pid: i32, flags: u32, comm: &[u8]) -> sys::emuv_process {
        let mut raw = sys::emuv_process {
            pid,
            flags,
            bytes: 1 << 20,
            allocations: 1,
            ..Default::default()
        };
        for (dst, &src) in raw.comm.iter_mut().zip(comm) {
            *dst = src as std::ffi::c_char;
        }
        raw
    }

    #[test]
    fn names_are_shown_on_one_line() {
        assert_eq!(printable(b"python3"), "python3");
        assert_eq!(
            printable("Web Content \"é\"".as_bytes()),
            "Web Content \"é\""
        );
        assert_eq!(printable(b"ev\n4242 fake 9"), "ev\\n4242 fake 9");
        assert_eq!(printable(b"a\\n\tb\r\x1b"), "a\\\\n\\tb\\r\\u{1b}");
        assert_eq!(printable(b"bad\xff\xc3"), "bad\\xff\\xc3");
        assert_eq!(printable("rtl\u{202e}".as_bytes()), "rtl\\u{202e}");
    }

    #[test]
    fn entries_are_read_as_the_header_says() {
        let live = ProcessEntry::from_raw(&raw(42, 0, b"ev\n4242 fake 9")).unwrap();
        assert_eq!(live.pid, Some(42));
        assert_eq!(live.comm, b"ev\n4242 fake 9");
        assert_eq!((live.bytes, live.allocations), (1 << 20, 1));
        assert!(!live.exited());
        let full = ProcessEntry::from_raw(&raw(7, 0, &[b'x'; 16])).unwrap();
        assert_eq!(full.comm, [b'x'; 16]);
        let gone = ProcessEntry::from_raw(&raw(0, sys::EMUV_PROCESS_EXITED, b"worker")).unwrap();
        assert_eq!((gone.pid, gone.exited()), (None, true));
        assert_eq!(gone.comm_lossy(), "worker");
        assert_eq!(ProcessEntry::from_raw(&raw(0, 0, b"x")), Err(Errno::EPROTO));
        assert_eq!(
            ProcessEntry::from_raw(&raw(-1, 0, b"x")),
            Err(Errno::EPROTO)
        );
    }
}
