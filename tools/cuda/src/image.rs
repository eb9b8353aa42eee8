// SPDX-License-Identifier: GPL-2.0
//! Parsing of CUDA module images: fatbin wrappers, fatbin containers, cubins
//! (ELF64, `EM_CUDA`) and PTX text, as handed to `cuModuleLoadData`,
//! `cuModuleLoadDataEx`, `cuModuleLoadFatBinary`, `cuLibraryLoadData` and
//! `cuModuleLoad` (a file).  Emulated cards run no kernels, so all this module
//! extracts is what the driver API can be asked about later: the kernel
//! names (`cuModuleGetFunction`, `cuLibraryGetKernel`) and the `__device__` /
//! `__constant__` / `__managed__` variables with their sizes
//! (`cuModuleGetGlobal`), plus a description of every fatbin entry.
//!
//! # Formats
//!
//! * Wrapper `__fatBinC_Wrapper_t` (24 bytes): u32 magic `0x466243B1`, u32
//!   version 1 or 2, pointer to a fatbin container, pointer (version 2: a
//!   NULL-terminated array of further fatbin containers, which are parsed
//!   too; version 1: ignored).  Only [`parse`] follows these host pointers.
//! * Fatbin container (8-byte aligned): u32 magic `0xBA55ED50`, u16 version 1,
//!   u16 header size (16), u64 size of the entries that follow the header.
//! * Fatbin entry header, offsets from the entry start, all little endian
//!   (checked against the `.nv_fatbin` sections of NVIDIA's libcurand 10.4
//!   / libnvjpeg2k 0.11 for CUDA 13, Zstd entries, and libnvjpeg2k for
//!   CUDA 12, LZ4 entries):
//!
//!   | off  | type | meaning                                                 |
//!   |------|------|---------------------------------------------------------|
//!   | 0x00 | u16  | kind: 1 PTX, 2 ELF cubin, others (e.g. LTO IR) skipped   |
//!   | 0x02 | u16  | entry version, always 0x0101                            |
//!   | 0x04 | u32  | header size (64, 80, 96, 104, 112, 120 seen)            |
//!   | 0x08 | u64  | payload size, padded to 8; next entry at +hdr+this      |
//!   | 0x10 | u32  | stored (compressed) payload size, <= padded size        |
//!   | 0x14 | u32  | 0, or 0x40 when the header is longer than 64 bytes (an extended part follows, e.g. PTX JIT options); unused |
//!   | 0x18 | u32  | minor (low u16) / major (high u16): PTX ISA for PTX entries, 1.<ELF ABI version> for cubins |
//!   | 0x1c | u32  | SM version (75, 89, 120 ...)                            |
//!   | 0x20 | u32  | 0 in all samples                                        |
//!   | 0x24 | u32  | 0 in all samples                                        |
//!   | 0x28 | u64  | flags: 0x1 64-bit, 0x10 Linux, 0x2000 LZ4, 0x8000 Zstd   |
//!   | 0x30 | u64  | 0 in all samples                                        |
//!   | 0x38 | u64  | uncompressed payload size (compressed entries)          |
//!
//!   LZ4 payloads are raw LZ4 *blocks* (no frame); Zstd payloads are one Zstd
//!   frame.  Both are decompressed (`lz4_flex`, `ruzstd`, pure Rust) and the
//!   result must have exactly the announced uncompressed size.
//! * Cubin: ELF64 little endian, `e_machine` 190.  Kernels are `STT_FUNC`
//!   symbols with `STO_CUDA_ENTRY` (0x10) in `st_other` (if a cubin marks no
//!   symbol so, global functions living in `.text.<their name>` are taken);
//!   variables are defined `STT_OBJECT` symbols in `.nv.global*`,
//!   `.nv.constant*` or `.nv.managed*` sections (or `SHN_COMMON`), size
//!   `st_size`.  The SM version comes from `e_flags` (bits 8..16 for ELF ABI
//!   version >= 8, bits 0..8 before).
//! * PTX: NUL-terminated text; it must start (after comments) with
//!   `.version`; `.entry` statements give kernels, module-scope `.global` and
//!   `.const` definitions give variables (size = type size × vector width ×
//!   array dimensions, `[]` sized by its initializer); `.extern` ones are
//!   declarations and ignored.
//!
//! # Bounds
//!
//! When only a pointer is known ([`parse`] with `len == None`), nothing is read
//! beyond what the headers announce: the first bytes are read one at a time
//! (stopping at a NUL), a fatbin's extent comes from its 16-byte header, an
//! ELF's from its file header and section / program header tables, and PTX
//! text ends at its NUL (at most [`MAX_PTX`] bytes).  All sizes are bounded
//! ([`MAX_IMAGE`], [`MAX_UNCOMPRESSED`]) and all arithmetic is checked.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::io::Read;

use object::read::elf::{FileHeader, Sym};
use object::LittleEndian as LE;

/// `__fatBinC_Wrapper_t::magic`.
pub const FATBIN_WRAPPER_MAGIC: u32 = 0x466243B1;
/// Fatbin container magic.
pub const FATBIN_MAGIC: u32 = 0xBA55ED50;
/// Pre-CUDA-4 fatbin magic: recognised and rejected as unsupported.
pub const OLD_FATBIN_MAGIC: u32 = 0x1EE55A01;
/// `e_machine` of a cubin.
pub const EM_CUDA: u16 = 190;
/// `st_other` bit of kernel (entry) functions in a cubin.
pub const STO_CUDA_ENTRY: u8 = 0x10;
/// Fatbin entry flag: payload is a raw LZ4 block.
pub const FLAG_LZ4: u64 = 0x2000;
/// Fatbin entry flag: payload is a Zstd frame.
pub const FLAG_ZSTD: u64 = 0x8000;

/// Largest fatbin container or ELF file accepted (4 GiB).
pub const MAX_IMAGE: u64 = 4 << 30;
/// Longest PTX text accepted (1 GiB).
pub const MAX_PTX: usize = 1 << 30;
/// Largest uncompressed fatbin entry accepted (1 GiB).
pub const MAX_UNCOMPRESSED: u64 = 1 << 30;
/// Most further fatbins a version-2 wrapper may list.
const MAX_WRAPPER_FATBINS: usize = 1 << 16;
/// Smallest / largest fatbin entry header size accepted.
const ENTRY_HEADER_MIN: u32 = 64;
const ENTRY_HEADER_MAX: u32 = 4096;
/// Largest fatbin container header size accepted.
const CONTAINER_HEADER_MAX: u16 = 4096;
/// Most ELF section headers accepted (extended numbering allows more).
const MAX_ELF_SECTIONS: u64 = 1 << 20;
/// Deepest `{` nesting accepted in PTX.
const MAX_PTX_DEPTH: usize = 1 << 16;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELF_HEADER_SIZE: u64 = 64;
const ELF_SHDR_SIZE: u64 = 64;
const ELF_PHDR_SIZE: u64 = 56;
const SHT_NULL: u32 = 0;
const SHT_NOBITS: u32 = 8;
const SHN_COMMON: u16 = 0xfff2;
const WRAPPER_SIZE: u64 = 24;
const CONTAINER_MIN_HEADER: u64 = 16;

/// What a fatbin entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// PTX text (kind 1).
    Ptx,
    /// ELF cubin (kind 2).
    Cubin,
    /// Anything else (e.g. LTO IR); its contents are not read.
    Other(u16),
}

/// How a fatbin entry's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zstd,
}

/// One fatbin entry (or the single "entry" of a bare cubin / PTX image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: EntryKind,
    /// SM version, e.g. 89 for sm_89 (PTX: the `.target`).
    pub sm: u32,
    /// Whether the payload is compressed (LZ4 or Zstd).
    pub compressed: bool,
    pub compression: Compression,
    /// `(major << 16) | minor`: the PTX ISA version for PTX (9.3 →
    /// 0x0009_0003); for cubins 1.<ELF ABI version> (0x0001_0007 or
    /// 0x0001_0008), as fatbin entry headers give it.
    pub version: u32,
    /// Raw fatbin entry flags (0 for bare cubin / PTX images).
    pub flags: u64,
    /// Whether this entry's contents were read and contributed names.
    pub used: bool,
}

/// What the image itself was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A `__fatBinC_Wrapper_t` (only through [`parse`]).
    Wrapper,
    /// A fatbin container.
    Fatbin,
    /// An ELF cubin.
    Cubin,
    /// PTX text.
    Ptx,
}

/// What a module image offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub format: Format,
    /// Kernel names, unique, in order of first appearance.
    pub kernels: Vec<String>,
    /// Variables (name, size in bytes), unique by name (first seen wins).
    pub globals: Vec<(String, u64)>,
    /// The initial bytes of the variables a cubin initialises (`.nv.global.init`,
    /// `.nv.constant*`): what the card holds in them once the module is loaded.
    pub initial: Vec<(String, Vec<u8>)>,
    /// Every entry, in container order (a wrapper's further fatbins follow).
    pub kinds: Vec<EntryInfo>,
    /// Bytes the image spans from its start: the fatbin container (header and
    /// entries), the ELF file, the PTX text including its NUL (when it has
    /// one), or 24 for a wrapper (whose fatbins lie elsewhere).
    pub len: usize,
}

impl Image {
    /// Whether `name` is a kernel of this image.
    pub fn has_kernel(&self, name: &str) -> bool {
        self.kernels.iter().any(|k| k == name)
    }

    /// Size of the variable `name`, if the image defines it.
    pub fn global(&self, name: &str) -> Option<u64> {
        self.globals
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }
}

/// Why an image was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// Not a well-formed image: `CUDA_ERROR_INVALID_IMAGE` (200).
    Invalid,
    /// Text that is not acceptable PTX: `CUDA_ERROR_INVALID_PTX` (218).
    InvalidPtx,
    /// A fatbin without entries, or (with [`ParseOptions::target_sm`]) no
    /// entry usable on the target: `CUDA_ERROR_NO_BINARY_FOR_GPU` (209).
    NoBinaryForGpu,
}

impl ImageError {
    /// The `CUresult` value this error maps to.
    pub fn cuda_code(self) -> u32 {
        match self {
            ImageError::Invalid => 200,
            ImageError::InvalidPtx => 218,
            ImageError::NoBinaryForGpu => 209,
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ImageError::Invalid => "invalid module image",
            ImageError::InvalidPtx => "invalid PTX",
            ImageError::NoBinaryForGpu => "no binary for the GPU",
        };
        f.write_str(s)
    }
}

impl std::error::Error for ImageError {}

/// Options of [`parse_with`] / [`parse_bytes_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// `None`: read every entry and report the union of their names.
    /// `Some(sm)`: do what the driver does for a device of that SM version:
    /// use only the best cubin that runs on it (same major, highest minor not
    /// above the device's), else the PTX with the highest `.target` not above
    /// it, else fail with [`ImageError::NoBinaryForGpu`]; only the chosen
    /// entries are decompressed and read (their `used` is true).
    pub target_sm: Option<u32>,
}

/// Whether a cubin built for `cubin_sm` runs on a device of `device_sm`
/// (binary compatibility holds within one major version, upwards).
pub fn cubin_runs_on(cubin_sm: u32, device_sm: u32) -> bool {
    cubin_sm / 10 == device_sm / 10 && cubin_sm <= device_sm
}

/// Parse an image from memory.  `len` is `Some` when the caller knows the
/// size (a file read from disk), `None` when only a pointer is known.
///
/// # Safety
/// `ptr` points to readable memory holding an image of the kind its first
/// bytes say, as the CUDA docs require of the caller: for a wrapper, its
/// pointers point to fatbin containers (and, version 2, to a NULL-terminated
/// array of such pointers); with `len == Some(n)`, `n` bytes are readable.
pub unsafe fn parse(ptr: *const u8, len: Option<usize>) -> Result<Image, ImageError> {
    // SAFETY: same contract as ours.
    unsafe { parse_with(ptr, len, ParseOptions::default()) }
}

/// [`parse`] with options.
///
/// # Safety
/// As for [`parse`].
pub unsafe fn parse_with(
    ptr: *const u8,
    len: Option<usize>,
    opts: ParseOptions,
) -> Result<Image, ImageError> {
    if ptr.is_null() {
        return Err(ImageError::Invalid);
    }
    if let Some(n) = len {
        if n > isize::MAX as usize {
            return Err(ImageError::Invalid);
        }
        // SAFETY: the caller guarantees `n` readable bytes at `ptr`, and `ptr`
        // is non-null; `u8` needs no alignment.
        let bytes = unsafe { std::slice::from_raw_parts(ptr, n) };
        if bytes.len() >= 4 && le32(bytes, 0) == Some(FATBIN_WRAPPER_MAGIC) {
            if (bytes.len() as u64) < WRAPPER_SIZE {
                return Err(ImageError::Invalid);
            }
            // SAFETY: the caller guarantees a wrapper's pointers are valid.
            return unsafe { parse_wrapper(ptr, opts) };
        }
        return parse_bytes_with(bytes, opts);
    }
    // Only a pointer: look at the first bytes one at a time, so that a short
    // NUL-terminated PTX string is never read past its NUL.
    let mut head = [0u8; 4];
    let mut have = 0usize;
    while have < 4 {
        // SAFETY: every byte before index `have` was non-NUL, so the image is
        // not a PTX string that ended earlier; the magics of the other kinds
        // are 4 bytes without NUL, so byte `have` belongs to the image.
        let b = unsafe { ptr.add(have).read() };
        if b == 0 {
            break;
        }
        head[have] = b;
        have += 1;
    }
    if have == 4 {
        let magic = u32::from_le_bytes(head);
        if magic == FATBIN_WRAPPER_MAGIC {
            // SAFETY: the caller guarantees a wrapper's pointers are valid.
            return unsafe { parse_wrapper(ptr, opts) };
        }
        if magic == FATBIN_MAGIC {
            let mut b = Builder::default();
            // SAFETY: the image is a fatbin container, as its magic says.
            let len = unsafe { fatbin_at(ptr, opts, &mut b) }?;
            return b.finish(Format::Fatbin, len);
        }
        if magic == OLD_FATBIN_MAGIC {
            return Err(ImageError::Invalid);
        }
        if head == ELF_MAGIC {
            // SAFETY: the image is an ELF file, as its magic says; RawMem only
            // reads regions that the ELF headers announce.
            let mem = unsafe { RawMem::new(ptr) };
            let size = elf_extent(&mem)?;
            let bytes = mem.get(0, size as u64)?;
            return parse_bytes_with(bytes, opts);
        }
    }
    // PTX text: find the NUL, at most MAX_PTX bytes in.
    let mut n = have;
    loop {
        if n >= MAX_PTX {
            return Err(ImageError::Invalid);
        }
        // SAFETY: the image is NUL-terminated text and no NUL came before
        // index `n`, so byte `n` is part of it.
        let b = unsafe { ptr.add(n).read() };
        if b == 0 {
            break;
        }
        n += 1;
    }
    // SAFETY: the `n` bytes before the NUL were just read one by one.
    let text = unsafe { std::slice::from_raw_parts(ptr, n) };
    ptx_image(text, n + 1, opts)
}

/// The safe core: parse an image held in `bytes` (e.g. a file read by
/// `cuModuleLoad`).  A fatbin wrapper is refused (`Invalid`): it holds host
/// pointers, which only [`parse`] may follow.  Bytes after the image (after
/// the ELF file or the fatbin container, after the PTX NUL) are ignored.
pub fn parse_bytes(bytes: &[u8]) -> Result<Image, ImageError> {
    parse_bytes_with(bytes, ParseOptions::default())
}

/// [`parse_bytes`] with options.
pub fn parse_bytes_with(bytes: &[u8], opts: ParseOptions) -> Result<Image, ImageError> {
    if bytes.first().is_none_or(|&b| b == 0) {
        return Err(ImageError::Invalid);
    }
    if bytes.len() >= 4 {
        match le32(bytes, 0) {
            Some(FATBIN_WRAPPER_MAGIC) | Some(OLD_FATBIN_MAGIC) => return Err(ImageError::Invalid),
            Some(FATBIN_MAGIC) => {
                let mut b = Builder::default();
                let len = container_extent(bytes)?;
                let data = bytes.get(..len).ok_or(ImageError::Invalid)?;
                parse_container(data, opts, &mut b)?;
                return b.finish(Format::Fatbin, len);
            }
            _ => {}
        }
        if bytes[..4] == ELF_MAGIC {
            let size = elf_extent(bytes)?;
            let data = bytes.get(..size).ok_or(ImageError::Invalid)?;
            let cubin = parse_cubin(data)?;
            let info = EntryInfo {
                kind: EntryKind::Cubin,
                sm: cubin.sm,
                compressed: false,
                compression: Compression::None,
                version: (1 << 16) | cubin.abi,
                flags: 0,
                used: true,
            };
            if let Some(t) = opts.target_sm {
                if !cubin_runs_on(cubin.sm, t) {
                    return Err(ImageError::NoBinaryForGpu);
                }
            }
            let mut b = Builder::default();
            b.kinds.push(info);
            b.add(cubin.kernels, cubin.globals);
            b.add_initial(cubin.initial);
            return b.finish(Format::Cubin, size);
        }
    }
    let (text, len) = match bytes.iter().position(|&c| c == 0) {
        Some(p) => (&bytes[..p], p + 1),
        None => (bytes, bytes.len()),
    };
    if text.len() > MAX_PTX {
        return Err(ImageError::Invalid);
    }
    ptx_image(text, len, opts)
}

// ---------------------------------------------------------------------------
// Little helpers.

fn le16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn usize_of(v: u64) -> Result<usize, ImageError> {
    usize::try_from(v).map_err(|_| ImageError::Invalid)
}

/// Memory an image lies in: either a slice or a bare pointer.
trait Mem {
    /// `n` bytes at offset `off`, or `Invalid` if they are out of bounds.
    fn get(&self, off: u64, n: u64) -> Result<&[u8], ImageError>;
}

impl Mem for [u8] {
    fn get(&self, off: u64, n: u64) -> Result<&[u8], ImageError> {
        let start = usize_of(off)?;
        let end = start.checked_add(usize_of(n)?).ok_or(ImageError::Invalid)?;
        self.get(start..end).ok_or(ImageError::Invalid)
    }
}

/// A bare pointer to an image.  Invariant: only built by `unsafe` code
/// whose caller vouches that the image is of the kind its magic says, and
/// only asked for regions that the image's own headers announce (bounded
/// by [`MAX_IMAGE`]).
struct RawMem {
    ptr: *const u8,
}

impl RawMem {
    /// # Safety
    /// `ptr` is non-null and points at an image; the returned value must
    /// only be asked for regions the image's headers announce.
    unsafe fn new(ptr: *const u8) -> RawMem {
        RawMem { ptr }
    }
}

impl Mem for RawMem {
    fn get(&self, off: u64, n: u64) -> Result<&[u8], ImageError> {
        let end = off.checked_add(n).ok_or(ImageError::Invalid)?;
        if end > MAX_IMAGE {
            return Err(ImageError::Invalid);
        }
        let off = usize_of(off)?;
        let n = usize_of(n)?;
        // SAFETY: by the type's invariant the region [off, off + n) lies in
        // the image, which is readable; it is at most MAX_IMAGE < isize::MAX
        // bytes, so the offset cannot wrap; `u8` needs no alignment.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.add(off), n) })
    }
}

/// Collects names and entry descriptions, keeping names unique.
#[derive(Default)]
struct Builder {
    kernels: Vec<String>,
    kset: HashSet<String>,
    globals: Vec<(String, u64)>,
    gset: HashSet<String>,
    initial: Vec<(String, Vec<u8>)>,
    kinds: Vec<EntryInfo>,
}

impl Builder {
    fn add(&mut self, kernels: Vec<String>, globals: Vec<(String, u64)>) {
        for k in kernels {
            if self.kset.insert(k.clone()) {
                self.kernels.push(k);
            }
        }
        for (g, s) in globals {
            if self.gset.insert(g.clone()) {
                self.globals.push((g, s));
            }
        }
    }

    /// The initial bytes of variables, first seen wins (as for their sizes).
    fn add_initial(&mut self, initial: Vec<(String, Vec<u8>)>) {
        for (name, bytes) in initial {
            if !self.initial.iter().any(|(n, _)| *n == name) {
                self.initial.push((name, bytes));
            }
        }
    }

    fn finish(self, format: Format, len: usize) -> Result<Image, ImageError> {
        Ok(Image {
            format,
            kernels: self.kernels,
            globals: self.globals,
            initial: self.initial,
            kinds: self.kinds,
            len,
        })
    }
}

// ---------------------------------------------------------------------------
// Wrapper and fatbin containers.

/// # Safety
/// `ptr` points at a `__fatBinC_Wrapper_t` whose pointers are valid.
unsafe fn parse_wrapper(ptr: *const u8, opts: ParseOptions) -> Result<Image, ImageError> {
    // SAFETY: a wrapper is 24 bytes, as its magic announces.
    let mem = unsafe { RawMem::new(ptr) };
    let w = mem.get(0, WRAPPER_SIZE)?;
    let version = le32(w, 4).ok_or(ImageError::Invalid)?;
    if version != 1 && version != 2 {
        return Err(ImageError::Invalid);
    }
    let data = le64(w, 8).ok_or(ImageError::Invalid)?;
    let extra = le64(w, 16).ok_or(ImageError::Invalid)?;
    if data == 0 {
        return Err(ImageError::Invalid);
    }
    let mut b = Builder::default();
    let mut containers: Vec<*const u8> = vec![usize_of(data)? as *const u8];
    if version == 2 && extra != 0 {
        let list = usize_of(extra)? as *const u8;
        // SAFETY: a version-2 wrapper's second pointer is a NULL-terminated
        // array of pointers; RawMem is asked for one element at a time, each
        // only after the previous one was non-NULL.
        let arr = unsafe { RawMem::new(list) };
        let mut i = 0u64;
        loop {
            if i as usize >= MAX_WRAPPER_FATBINS {
                return Err(ImageError::Invalid);
            }
            let p = le64(arr.get(i.checked_mul(8).ok_or(ImageError::Invalid)?, 8)?, 0)
                .ok_or(ImageError::Invalid)?;
            if p == 0 {
                break;
            }
            containers.push(usize_of(p)? as *const u8);
            i += 1;
        }
    }
    for c in containers {
        // SAFETY: the wrapper's contract says each pointer is a container;
        // fatbin_at checks the magic before reading further.
        unsafe { fatbin_at(c, opts, &mut b) }?;
    }
    b.finish(Format::Wrapper, WRAPPER_SIZE as usize)
}

/// Parse the fatbin container at `ptr`, returning its length.
///
/// # Safety
/// `ptr` points at a fatbin container (its 16-byte header and the entries
/// that header announces are readable).
unsafe fn fatbin_at(
    ptr: *const u8,
    opts: ParseOptions,
    b: &mut Builder,
) -> Result<usize, ImageError> {
    // SAFETY: a container's 16-byte header is readable, and RawMem is then
    // asked only for the extent that header announces.
    let mem = unsafe { RawMem::new(ptr) };
    let len = container_extent(&mem)?;
    let data = mem.get(0, len as u64)?;
    parse_container(data, opts, b)?;
    Ok(len)
}

/// Size of the container at the start of `m` (header plus entries).
fn container_extent<M: Mem + ?Sized>(m: &M) -> Result<usize, ImageError> {
    let h = m.get(0, CONTAINER_MIN_HEADER)?;
    if le32(h, 0) != Some(FATBIN_MAGIC) || le16(h, 4) != Some(1) {
        return Err(ImageError::Invalid);
    }
    let hsize = le16(h, 6).ok_or(ImageError::Invalid)?;
    if u64::from(hsize) < CONTAINER_MIN_HEADER || hsize > CONTAINER_HEADER_MAX {
        return Err(ImageError::Invalid);
    }
    let body = le64(h, 8).ok_or(ImageError::Invalid)?;
    let total = u64::from(hsize)
        .checked_add(body)
        .ok_or(ImageError::Invalid)?;
    if total > MAX_IMAGE {
        return Err(ImageError::Invalid);
    }
    usize_of(total)
}

/// One entry header, with the payload range.
struct RawEntry {
    info: EntryInfo,
    /// Payload offset and stored length within the container.
    start: usize,
    stored: usize,
    uncompressed: u64,
}

/// Walk and read the container `data` (exactly its extent).
fn parse_container(data: &[u8], opts: ParseOptions, b: &mut Builder) -> Result<(), ImageError> {
    let hsize = usize::from(le16(data, 6).ok_or(ImageError::Invalid)?);
    let mut pos = hsize;
    let end = data.len();
    let mut entries = Vec::new();
    while pos < end {
        let e = &data[pos..];
        if e.len() < ENTRY_HEADER_MIN as usize {
            return Err(ImageError::Invalid);
        }
        let bad = ImageError::Invalid;
        let kind = le16(e, 0x00).ok_or(bad)?;
        let ever = le16(e, 0x02).ok_or(bad)?;
        let ehs = le32(e, 0x04).ok_or(bad)?;
        let padded = le64(e, 0x08).ok_or(bad)?;
        let stored = le32(e, 0x10).ok_or(bad)?;
        let version = le32(e, 0x18).ok_or(bad)?;
        let sm = le32(e, 0x1c).ok_or(bad)?;
        let flags = le64(e, 0x28).ok_or(bad)?;
        let unc = le64(e, 0x38).ok_or(bad)?;
        if ever != 0x0101 || !(ENTRY_HEADER_MIN..=ENTRY_HEADER_MAX).contains(&ehs) {
            return Err(bad);
        }
        let ehs = ehs as usize;
        let padded = usize_of(padded)?;
        let next = ehs.checked_add(padded).ok_or(bad)?;
        if next > e.len() {
            return Err(bad);
        }
        let compression = match (flags & FLAG_LZ4 != 0, flags & FLAG_ZSTD != 0) {
            (false, false) => Compression::None,
            (true, false) => Compression::Lz4,
            (false, true) => Compression::Zstd,
            (true, true) => return Err(bad),
        };
        let stored = stored as usize;
        let stored = if stored == 0 && compression == Compression::None {
            padded
        } else if stored > padded {
            return Err(bad);
        } else {
            stored
        };
        let kind = match kind {
            1 => EntryKind::Ptx,
            2 => EntryKind::Cubin,
            k => EntryKind::Other(k),
        };
        entries.push(RawEntry {
            info: EntryInfo {
                kind,
                sm,
                compressed: compression != Compression::None,
                compression,
                version,
                flags,
                used: false,
            },
            start: pos.checked_add(ehs).ok_or(bad)?,
            stored,
            uncompressed: unc,
        });
        pos = pos.checked_add(next).ok_or(bad)?;
    }
    if entries.is_empty() {
        return Err(ImageError::NoBinaryForGpu);
    }
    let chosen: Vec<usize> = match opts.target_sm {
        None => (0..entries.len())
            .filter(|&i| !matches!(entries[i].info.kind, EntryKind::Other(_)))
            .collect(),
        Some(t) => choose(&entries, t).ok_or(ImageError::NoBinaryForGpu)?,
    };
    for i in chosen {
        let e = &mut entries[i];
        let end = e.start.checked_add(e.stored).ok_or(ImageError::Invalid)?;
        let stored = data.get(e.start..end).ok_or(ImageError::Invalid)?;
        let payload = decompress(e.info.compression, stored, e.uncompressed)?;
        match e.info.kind {
            EntryKind::Cubin => {
                let size = elf_extent(&payload[..])?;
                let elf = payload.get(..size).ok_or(ImageError::Invalid)?;
                let c = parse_cubin(elf)?;
                b.add(c.kernels, c.globals);
                b.add_initial(c.initial);
            }
            EntryKind::Ptx => {
                let text = match payload.iter().position(|&c| c == 0) {
                    Some(p) => &payload[..p],
                    None => &payload[..],
                };
                let p = parse_ptx(text)?;
                b.add(p.kernels, p.globals);
            }
            EntryKind::Other(_) => continue,
        }
        e.info.used = true;
    }
    b.kinds.extend(entries.into_iter().map(|e| e.info));
    Ok(())
}

/// The entries the driver would use on a device of SM `target`.
fn choose(entries: &[RawEntry], target: u32) -> Option<Vec<usize>> {
    let pick = |want: EntryKind, ok: &dyn Fn(u32) -> bool| -> Option<Vec<usize>> {
        let best = entries
            .iter()
            .filter(|e| e.info.kind == want && ok(e.info.sm))
            .map(|e| e.info.sm)
            .max()?;
        Some(
            (0..entries.len())
                .filter(|&i| entries[i].info.kind == want && entries[i].info.sm == best)
                .collect(),
        )
    };
    pick(EntryKind::Cubin, &|sm| cubin_runs_on(sm, target))
        .or_else(|| pick(EntryKind::Ptx, &|sm| sm <= target))
}

/// Undo an entry's compression; the result has exactly `unc` bytes.
fn decompress(c: Compression, stored: &[u8], unc: u64) -> Result<Cow<'_, [u8]>, ImageError> {
    if c == Compression::None {
        return Ok(Cow::Borrowed(stored));
    }
    if unc == 0 || unc > MAX_UNCOMPRESSED || stored.is_empty() {
        return Err(ImageError::Invalid);
    }
    let n = usize_of(unc)?;
    let out = match c {
        Compression::None => return Ok(Cow::Borrowed(stored)),
        Compression::Lz4 => {
            // An LZ4 block expands at most ~255-fold; refuse sizes that would
            // only make us allocate.
            let limit = (stored.len() as u64)
                .checked_mul(255)
                .and_then(|v| v.checked_add(64));
            if limit.is_some_and(|l| unc > l) {
                return Err(ImageError::Invalid);
            }
            let r = std::panic::catch_unwind(|| {
                let mut out = vec![0u8; n];
                lz4_flex::block::decompress_into(stored, &mut out).map(|got| (got, out))
            });
            match r {
                Ok(Ok((got, out))) if got == n => out,
                _ => return Err(ImageError::Invalid),
            }
        }
        Compression::Zstd => {
            let r = std::panic::catch_unwind(|| -> Option<Vec<u8>> {
                let dec = ruzstd::decoding::StreamingDecoder::new(stored).ok()?;
                let mut out = Vec::with_capacity(n.min(64 << 20));
                dec.take(unc.checked_add(1)?).read_to_end(&mut out).ok()?;
                Some(out)
            });
            match r {
                Ok(Some(out)) if out.len() == n => out,
                _ => return Err(ImageError::Invalid),
            }
        }
    };
    Ok(Cow::Owned(out))
}

// ---------------------------------------------------------------------------
// ELF cubins.

/// Size of the ELF file at the start of `m`: the furthest end of its file
/// header, section header table, program header table, and the file
/// contents of every section and segment.  Also checks that it is a cubin.
fn elf_extent<M: Mem + ?Sized>(m: &M) -> Result<usize, ImageError> {
    let bad = ImageError::Invalid;
    let h = m.get(0, ELF_HEADER_SIZE)?;
    // ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT.
    if h[..4] != ELF_MAGIC || h[4] != 2 || h[5] != 1 || h[6] != 1 {
        return Err(bad);
    }
    if le16(h, 18) != Some(EM_CUDA) {
        return Err(bad);
    }
    let phoff = le64(h, 32).ok_or(bad)?;
    let shoff = le64(h, 40).ok_or(bad)?;
    let ehsize = le16(h, 52).ok_or(bad)?;
    let phentsize = le16(h, 54).ok_or(bad)?;
    let mut phnum = u64::from(le16(h, 56).ok_or(bad)?);
    let shentsize = le16(h, 58).ok_or(bad)?;
    let mut shnum = u64::from(le16(h, 60).ok_or(bad)?);
    let mut end = ELF_HEADER_SIZE.max(u64::from(ehsize));
    let grow = |end: &mut u64, off: u64, size: u64| -> Result<(), ImageError> {
        let e = off.checked_add(size).ok_or(ImageError::Invalid)?;
        if e > MAX_IMAGE {
            return Err(ImageError::Invalid);
        }
        *end = (*end).max(e);
        Ok(())
    };
    if shoff != 0 {
        if u64::from(shentsize) != ELF_SHDR_SIZE {
            return Err(bad);
        }
        if shnum == 0 || phnum == 0xffff {
            // Extended numbering: the counts live in section header 0.
            grow(&mut end, shoff, ELF_SHDR_SIZE)?;
            let s0 = m.get(shoff, ELF_SHDR_SIZE)?;
            if shnum == 0 {
                shnum = le64(s0, 32).ok_or(bad)?;
            }
            if phnum == 0xffff {
                phnum = u64::from(le32(s0, 44).ok_or(bad)?);
            }
        }
        if shnum > MAX_ELF_SECTIONS {
            return Err(bad);
        }
        let table = shnum.checked_mul(ELF_SHDR_SIZE).ok_or(bad)?;
        grow(&mut end, shoff, table)?;
        let t = m.get(shoff, table)?;
        for s in t.chunks_exact(ELF_SHDR_SIZE as usize) {
            let ty = le32(s, 4).ok_or(bad)?;
            if ty == SHT_NULL || ty == SHT_NOBITS {
                continue;
            }
            grow(&mut end, le64(s, 24).ok_or(bad)?, le64(s, 32).ok_or(bad)?)?;
        }
    } else if shnum != 0 {
        return Err(bad);
    }
    if phoff != 0 && phnum != 0 {
        if u64::from(phentsize) != ELF_PHDR_SIZE || phnum == 0xffff {
            return Err(bad);
        }
        let table = phnum.checked_mul(ELF_PHDR_SIZE).ok_or(bad)?;
        grow(&mut end, phoff, table)?;
        let t = m.get(phoff, table)?;
        for p in t.chunks_exact(ELF_PHDR_SIZE as usize) {
            grow(&mut end, le64(p, 8).ok_or(bad)?, le64(p, 32).ok_or(bad)?)?;
        }
    }
    // The whole extent must be there (for a slice: not truncated).
    m.get(0, end)?;
    usize_of(end)
}

struct Cubin {
    kernels: Vec<String>,
    globals: Vec<(String, u64)>,
    initial: Vec<(String, Vec<u8>)>,
    sm: u32,
    abi: u32,
}

/// The bytes a variable's symbol covers in its section, when the section holds data (an
/// initialised variable; `.nv.global` is NOBITS, zero on the card).
fn initial_bytes(
    sections: &object::read::elf::SectionTable<'_, object::elf::FileHeader64<LE>>,
    sym: &object::elf::Sym64<LE>,
    index: object::read::SymbolIndex,
    symbols: &object::read::elf::SymbolTable<'_, object::elf::FileHeader64<LE>>,
    data: &[u8],
) -> Result<Option<Vec<u8>>, ImageError> {
    use object::read::elf::SectionHeader;
    let bad = |_| ImageError::Invalid;
    let e = LE;
    let Some(i) = symbols.symbol_section(e, sym, index).map_err(bad)? else {
        return Ok(None);
    };
    let sh = sections.section(i).map_err(bad)?;
    if sh.sh_type(e).0 == SHT_NOBITS {
        return Ok(None);
    }
    // Bytes outside the section (or the file) are not an initial value: the variable is zeroed.
    let start = sym
        .st_value(e)
        .checked_sub(sh.sh_addr(e))
        .and_then(|offset| offset.checked_add(sh.sh_offset(e)));
    let end = start.and_then(|start| start.checked_add(sym.st_size(e)));
    let section_end = sh.sh_offset(e).checked_add(sh.sh_size(e));
    let (Some(start), Some(end), Some(section_end)) = (start, end, section_end) else {
        return Ok(None);
    };
    if end > section_end {
        return Ok(None);
    }
    let (start, end) = (usize_of(start)?, usize_of(end)?);
    Ok(data.get(start..end).map(<[u8]>::to_vec))
}

/// Read the symbols of the cubin `data` (exactly its extent).
fn parse_cubin(data: &[u8]) -> Result<Cubin, ImageError> {
    let bad = |_| ImageError::Invalid;
    let e = LE;
    let hdr = object::elf::FileHeader64::<LE>::parse(data).map_err(bad)?;
    if hdr.e_machine(e).0 != EM_CUDA {
        return Err(ImageError::Invalid);
    }
    let abi = u32::from(hdr.e_ident().abi_version);
    let flags = hdr.e_flags(e).0;
    let sm = if abi >= 8 {
        (flags >> 8) & 0xff
    } else {
        flags & 0xff
    };
    let sections = hdr.sections(e, data).map_err(bad)?;
    let symbols = sections
        .symbols(e, data, object::elf::SHT_SYMTAB)
        .map_err(bad)?;
    let is_func = |s: &object::elf::Sym64<LE>| s.st_type() == object::elf::STT_FUNC;
    let marked = symbols
        .iter()
        .any(|s| is_func(s) && s.st_other().0 & STO_CUDA_ENTRY != 0);
    let mut kernels = Vec::new();
    let mut globals = Vec::new();
    let mut initial = Vec::new();
    for (index, sym) in symbols.enumerate() {
        let ty = sym.st_type();
        if ty != object::elf::STT_FUNC && ty != object::elf::STT_OBJECT {
            continue;
        }
        let name = symbols.symbol_name(e, sym).map_err(bad)?;
        if name.is_empty() {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let common = sym.st_shndx(e).0 == SHN_COMMON;
        let section = match symbols.symbol_section(e, sym, index).map_err(bad)? {
            Some(i) => {
                let sh = sections.section(i).map_err(bad)?;
                Some(sections.section_name(e, sh).map_err(bad)?)
            }
            None => None,
        };
        if ty == object::elf::STT_FUNC {
            let Some(sec) = section else { continue };
            let entry = if marked {
                sym.st_other().0 & STO_CUDA_ENTRY != 0
            } else {
                let bind = sym.st_bind();
                (bind == object::elf::STB_GLOBAL || bind == object::elf::STB_WEAK)
                    && sec.strip_prefix(b".text.") == Some(name.as_bytes())
            };
            if entry {
                kernels.push(name);
            }
        } else {
            let var = common
                || section.is_some_and(|s| {
                    s.starts_with(b".nv.global")
                        || s.starts_with(b".nv.constant")
                        || s.starts_with(b".nv.managed")
                });
            if var {
                if let Some(bytes) = initial_bytes(&sections, sym, index, &symbols, data)? {
                    initial.push((name.clone(), bytes));
                }
                globals.push((name, sym.st_size(e)));
            }
        }
    }
    Ok(Cubin {
        kernels,
        globals,
        initial,
        sm,
        abi,
    })
}

// ---------------------------------------------------------------------------
// PTX.

fn ptx_image(text: &[u8], len: usize, opts: ParseOptions) -> Result<Image, ImageError> {
    // Binary garbage is not PTX text at all.
    if text.is_empty()
        || text
            .iter()
            .any(|&c| c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
    {
        return Err(ImageError::Invalid);
    }
    let p = parse_ptx(text)?;
    if let Some(t) = opts.target_sm {
        if p.sm > t {
            return Err(ImageError::NoBinaryForGpu);
        }
    }
    let mut b = Builder::default();
    b.kinds.push(EntryInfo {
        kind: EntryKind::Ptx,
        sm: p.sm,
        compressed: false,
        compression: Compression::None,
        version: p.version,
        flags: 0,
        used: true,
    });
    b.add(p.kernels, p.globals);
    b.finish(Format::Ptx, len)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// Identifier, directive (`.entry`) or number.
    Word(&'a str),
    /// A string literal (contents not kept).
    Str,
    /// Any other single byte.
    P(u8),
    /// A brace-enclosed initializer with this many top-level elements.
    Init(u64),
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'%' | b'.')
}

impl<'a> Lexer<'a> {
    fn next(&mut self) -> Result<Option<Tok<'a>>, ImageError> {
        let s = self.s;
        loop {
            while self.i < s.len() && s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            if self.i >= s.len() {
                return Ok(None);
            }
            if s[self.i..].starts_with(b"//") {
                while self.i < s.len() && s[self.i] != b'\n' {
                    self.i += 1;
                }
                continue;
            }
            if s[self.i..].starts_with(b"/*") {
                let rest = &s[self.i + 2..];
                let close = rest
                    .windows(2)
                    .position(|w| w == b"*/")
                    .ok_or(ImageError::InvalidPtx)?;
                self.i += 2 + close + 2;
                continue;
            }
            break;
        }
        let c = s[self.i];
        if c == b'"' {
            self.i += 1;
            loop {
                match s.get(self.i) {
                    None | Some(b'\n') => return Err(ImageError::InvalidPtx),
                    Some(b'\\') => self.i += 2,
                    Some(b'"') => {
                        self.i += 1;
                        return Ok(Some(Tok::Str));
                    }
                    Some(_) => self.i += 1,
                }
            }
        }
        if is_word_byte(c) {
            let start = self.i;
            while self.i < s.len() && is_word_byte(s[self.i]) {
                self.i += 1;
            }
            let w = std::str::from_utf8(&s[start..self.i]).map_err(|_| ImageError::InvalidPtx)?;
            return Ok(Some(Tok::Word(w)));
        }
        self.i += 1;
        Ok(Some(Tok::P(c)))
    }
}

#[derive(Debug, Default)]
struct Ptx {
    version: u32,
    sm: u32,
    kernels: Vec<String>,
    globals: Vec<(String, u64)>,
}

fn is_ident(w: &str) -> bool {
    let b = w.as_bytes();
    match b.first() {
        Some(&c) if c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%') => {}
        _ => return false,
    }
    b.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$'))
}

/// Size in bytes of a PTX fundamental type, `None` for opaque or unknown.
fn type_size(t: &str) -> Option<u64> {
    Some(match t {
        ".b8" | ".u8" | ".s8" | ".e4m3" | ".e5m2" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" | ".e4m3x2" | ".e5m2x2" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" | ".tf32" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

fn parse_int(w: &str) -> Option<u64> {
    let w = w.trim_end_matches(['U', 'u']);
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        w.parse().ok()
    }
}

fn parse_ptx(text: &[u8]) -> Result<Ptx, ImageError> {
    let bad = ImageError::InvalidPtx;
    let mut lx = Lexer { s: text, i: 0 };
    let mut out = Ptx::default();
    let mut have_version = false;
    let mut first = true;
    let mut cur: Vec<Tok> = Vec::new();
    let mut depth = 0usize;
    let mut init_commas = 0u64;
    let mut init_any = false;
    // Directive whose arguments are being consumed (no `;` ends these).
    let mut args: Option<&str> = None;
    while let Some(tok) = lx.next()? {
        if depth > 0 {
            match tok {
                Tok::P(b'{') => {
                    if depth == 1 {
                        init_any = true;
                    }
                    depth += 1;
                    if depth > MAX_PTX_DEPTH {
                        return Err(bad);
                    }
                }
                Tok::P(b'}') => {
                    depth -= 1;
                    if depth == 0 {
                        if cur.contains(&Tok::P(b'=')) {
                            let n = if init_any {
                                init_commas.saturating_add(1)
                            } else {
                                0
                            };
                            cur.push(Tok::Init(n));
                        } else {
                            statement(&cur, &mut out)?;
                            cur.clear();
                        }
                    }
                }
                Tok::P(b',') if depth == 1 => init_commas = init_commas.saturating_add(1),
                _ => {
                    if depth == 1 {
                        init_any = true;
                    }
                }
            }
            continue;
        }
        if let Some(dir) = args {
            let directive = matches!(tok, Tok::Word(w) if w.starts_with('.'));
            if !directive && !matches!(tok, Tok::P(b'{' | b'}' | b';')) {
                match (dir, tok) {
                    (".version", Tok::Word(v)) if !have_version => {
                        let (ma, mi) = v.split_once('.').ok_or(bad)?;
                        let ma: u32 = ma.parse().map_err(|_| bad)?;
                        let mi: u32 = mi.parse().map_err(|_| bad)?;
                        if ma > 0xffff || mi > 0xffff {
                            return Err(bad);
                        }
                        out.version = (ma << 16) | mi;
                        have_version = true;
                    }
                    (".version", _) => return Err(bad),
                    (".target", Tok::Word(t)) if out.sm == 0 => {
                        if let Some(d) = t.strip_prefix("sm_") {
                            let digits: String =
                                d.chars().take_while(|c| c.is_ascii_digit()).collect();
                            out.sm = digits.parse().unwrap_or(0);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            args = None;
            if tok == Tok::P(b';') {
                continue;
            }
        }
        if first {
            // PTX must open with `.version`.
            if tok != Tok::Word(".version") {
                return Err(bad);
            }
            first = false;
        }
        match tok {
            Tok::Word(w @ (".version" | ".target" | ".address_size" | ".file"))
                if cur.is_empty() =>
            {
                args = Some(w);
            }
            Tok::P(b';') => {
                statement(&cur, &mut out)?;
                cur.clear();
            }
            Tok::P(b'{') => {
                depth = 1;
                init_commas = 0;
                init_any = false;
            }
            Tok::P(b'}') => return Err(bad),
            t => cur.push(t),
        }
    }
    if depth != 0 || !cur.is_empty() || !have_version {
        return Err(bad);
    }
    Ok(out)
}

/// Take in one module-scope statement (its depth-0 tokens).
fn statement(cur: &[Tok], out: &mut Ptx) -> Result<(), ImageError> {
    let bad = ImageError::InvalidPtx;
    if cur.is_empty() {
        return Ok(());
    }
    if let Some(p) = cur.iter().position(|t| *t == Tok::Word(".entry")) {
        let external = cur[..p].contains(&Tok::Word(".extern"));
        match cur.get(p + 1) {
            Some(Tok::Word(n)) if is_ident(n) => {
                if !external {
                    out.kernels.push((*n).to_string());
                }
                return Ok(());
            }
            _ => return Err(bad),
        }
    }
    if cur.contains(&Tok::Word(".func")) {
        return Ok(());
    }
    let mut i = 0;
    loop {
        match cur.get(i) {
            Some(Tok::Word(".extern")) => return Ok(()),
            Some(Tok::Word(".visible" | ".weak" | ".common")) => i += 1,
            Some(Tok::Word(".global" | ".const")) => {
                i += 1;
                break;
            }
            _ => return Ok(()),
        }
    }
    // `.const[2]`: old constant-bank syntax.
    if cur.get(i) == Some(&Tok::P(b'[')) {
        i += 3;
    }
    let mut vec = 1u64;
    let elem;
    loop {
        match cur.get(i) {
            Some(Tok::Word(".align")) => i += 2,
            Some(Tok::Word(".attribute")) => {
                i += 1;
                if cur.get(i) == Some(&Tok::P(b'(')) {
                    while cur.get(i).is_some_and(|t| *t != Tok::P(b')')) {
                        i += 1;
                    }
                    i += 1;
                }
            }
            Some(Tok::Word(".v2")) => {
                vec = 2;
                i += 1;
            }
            Some(Tok::Word(".v4")) => {
                vec = 4;
                i += 1;
            }
            Some(Tok::Word(".v8")) => {
                vec = 8;
                i += 1;
            }
            Some(Tok::Word(".ptr" | ".global" | ".const" | ".shared" | ".local")) => i += 1,
            Some(Tok::Word(t)) if t.starts_with('.') => match type_size(t) {
                Some(s) => {
                    elem = s;
                    i += 1;
                    break;
                }
                // .texref / .samplerref / .surfref and the unknown.
                None => return Ok(()),
            },
            _ => return Ok(()),
        }
    }
    loop {
        let name = match cur.get(i) {
            Some(Tok::Word(n)) if is_ident(n) => *n,
            _ => return Err(bad),
        };
        i += 1;
        let mut count = 1u64;
        let mut open = false;
        while cur.get(i) == Some(&Tok::P(b'[')) {
            i += 1;
            match cur.get(i) {
                Some(Tok::P(b']')) => open = true,
                Some(Tok::Word(n)) => {
                    let n = parse_int(n).ok_or(bad)?;
                    count = count.checked_mul(n).ok_or(bad)?;
                    i += 1;
                    if cur.get(i) != Some(&Tok::P(b']')) {
                        return Err(bad);
                    }
                }
                _ => return Err(bad),
            }
            i += 1;
        }
        let mut init = None;
        if cur.get(i) == Some(&Tok::P(b'=')) {
            i += 1;
            let mut paren = 0usize;
            while let Some(t) = cur.get(i) {
                match t {
                    Tok::P(b',') if paren == 0 => break,
                    Tok::P(b'(') => paren += 1,
                    Tok::P(b')') => paren = paren.saturating_sub(1),
                    Tok::Init(n) => init = Some(*n),
                    _ => {}
                }
                i += 1;
            }
        }
        if open {
            count = count.checked_mul(init.unwrap_or(0)).ok_or(bad)?;
        }
        let size = elem
            .checked_mul(vec)
            .and_then(|s| s.checked_mul(count))
            .ok_or(bad)?;
        out.globals.push((name.to_string(), size));
        match cur.get(i) {
            Some(Tok::P(b',')) => i += 1,
            None => return Ok(()),
            Some(_) => return Err(bad),
        }
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    // ---- builders for self-made inputs ----

    fn push16(v: &mut Vec<u8>, x: u16) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn push32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn push64(v: &mut Vec<u8>, x: u64) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn pad8(v: &mut Vec<u8>) {
        while !v.len().is_multiple_of(8) {
            v.push(0);
        }
    }

    /// A minimal cubin: kernels (STO_CUDA_ENTRY unless `unmarked`), one
    /// device function, variables in .nv.global / .nv.constant3.
    fn cubin_with(sm: u32, kernels: &[&str], globals: &[(&str, u64)], unmarked: bool) -> Vec<u8> {
        // Sections: 0 null, 1 .shstrtab, 2 .strtab, 3 .symtab, 4 .nv.global,
        // 5 .nv.constant3, 6 .text.helper, 7.. .text.<kernel>.
        let mut shstr = vec![0u8];
        let mut names = Vec::new();
        let add = |s: &str, tab: &mut Vec<u8>| {
            let off = tab.len() as u32;
            tab.extend_from_slice(s.as_bytes());
            tab.push(0);
            off
        };
        for s in [
            ".shstrtab",
            ".strtab",
            ".symtab",
            ".nv.global",
            ".nv.constant3",
            ".text.helper",
        ] {
            names.push(add(s, &mut shstr));
        }
        for k in kernels {
            names.push(add(&format!(".text.{k}"), &mut shstr));
        }
        let mut strtab = vec![0u8];
        let mut syms = vec![0u8; 24];
        let mut sym =
            |name: &str, info: u8, other: u8, shndx: u16, size: u64, strtab: &mut Vec<u8>| {
                let off = add(name, strtab);
                push32(&mut syms, off);
                syms.push(info);
                syms.push(other);
                push16(&mut syms, shndx);
                push64(&mut syms, 0);
                push64(&mut syms, size);
            };
        for (i, (g, s)) in globals.iter().enumerate() {
            // Alternate .nv.global (local binding) and .nv.constant3.
            let (info, sec) = if i % 2 == 0 { (0x01, 4) } else { (0x11, 5) };
            sym(g, info, 0, sec, *s, &mut strtab);
        }
        sym("helper", 0x02, 0, 6, 16, &mut strtab); // LOCAL FUNC
        for (i, k) in kernels.iter().enumerate() {
            let other = if unmarked { 0 } else { STO_CUDA_ENTRY };
            sym(k, 0x12, other, 7 + i as u16, 32, &mut strtab);
        }
        let mut f = vec![0u8; 64];
        let mut shdrs: Vec<[u64; 6]> = Vec::new(); // type, offset, size, link, entsize, name idx
        let place = |f: &mut Vec<u8>, data: &[u8]| {
            pad8(f);
            let off = f.len() as u64;
            f.extend_from_slice(data);
            (off, data.len() as u64)
        };
        let (o, s) = place(&mut f, &shstr);
        shdrs.push([3, o, s, 0, 0, 0]);
        let (o, s) = place(&mut f, &strtab);
        shdrs.push([3, o, s, 0, 0, 1]);
        let (o, s) = place(&mut f, &syms);
        shdrs.push([2, o, s, 2, 24, 2]);
        shdrs.push([8, f.len() as u64, 0x100, 0, 0, 3]);
        let (o, s) = place(&mut f, &[0u8; 16]);
        shdrs.push([1, o, s, 0, 0, 4]);
        let (o, s) = place(&mut f, &[0u8; 16]);
        shdrs.push([1, o, s, 0, 0, 5]);
        for i in 0..kernels.len() {
            let (o, s) = place(&mut f, &[0u8; 32]);
            shdrs.push([1, o, s, 0, 0, 6 + i as u64]);
        }
        pad8(&mut f);
        let shoff = f.len() as u64;
        f.extend_from_slice(&[0u8; 64]);
        for sh in &shdrs {
            push32(&mut f, names[sh[5] as usize]);
            push32(&mut f, sh[0] as u32);
            push64(&mut f, 0); // flags
            push64(&mut f, 0); // addr
            push64(&mut f, sh[1]);
            push64(&mut f, sh[2]);
            push32(&mut f, sh[3] as u32);
            push32(&mut f, 0); // info
            push64(&mut f, 8);
            push64(&mut f, sh[4]);
        }
        let mut h = Vec::new();
        h.extend_from_slice(&ELF_MAGIC);
        h.extend_from_slice(&[2, 1, 1, 0x41, 8, 0, 0, 0, 0, 0, 0, 0]);
        push16(&mut h, 2); // ET_EXEC
        push16(&mut h, EM_CUDA);
        push32(&mut h, 1);
        push64(&mut h, 0); // entry
        push64(&mut h, 0); // phoff
        push64(&mut h, shoff);
        push32(&mut h, 0x0600_0004 | (sm << 8)); // e_flags, ABI 8 style
        push16(&mut h, 64);
        push16(&mut h, 56);
        push16(&mut h, 0);
        push16(&mut h, 64);
        push16(&mut h, shdrs.len() as u16 + 1);
        push16(&mut h, 1);
        f[..64].copy_from_slice(&h);
        f
    }

    fn cubin(sm: u32, kernels: &[&str], globals: &[(&str, u64)]) -> Vec<u8> {
        cubin_with(sm, kernels, globals, false)
    }

    /// A fatbin entry with a 64-byte header.
    fn entry(kind: u16, sm: u32, flags: u64, stored: &[u8], unc: u64) -> Vec<u8> {
        let mut p = stored.to_vec();
        pad8(&mut p);
        let mut e = Vec::new();
        push16(&mut e, kind);
        push16(&mut e, 0x0101);
        push32(&mut e, 64);
        push64(&mut e, p.len() as u64);
        push32(&mut e, stored.len() as u32);
        push32(&mut e, 0);
        push32(&mut e, if kind == 1 { 0x0009_0000 } else { 0x0001_0008 });
        push32(&mut e, sm);
        push64(&mut e, 0);
        push64(&mut e, flags | 0x11);
        push64(&mut e, 0);
        push64(&mut e, unc);
        assert_eq!(e.len(), 64);
        e.extend_from_slice(&p);
        e
    }

    fn container(entries: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let mut c = Vec::new();
        push32(&mut c, FATBIN_MAGIC);
        push16(&mut c, 1);
        push16(&mut c, 16);
        push64(&mut c, body.len() as u64);
        c.extend_from_slice(&body);
        c
    }

    /// An LZ4 block holding `data` as literals only.
    fn lz4_literals(data: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        let n = data.len();
        if n < 15 {
            o.push((n as u8) << 4);
        } else {
            o.push(0xf0);
            let mut r = n - 15;
            while r >= 255 {
                o.push(255);
                r -= 255;
            }
            o.push(r as u8);
        }
        o.extend_from_slice(data);
        o
    }

    /// A Zstd frame holding `data` in raw blocks.
    fn zstd_raw(data: &[u8]) -> Vec<u8> {
        let mut o = vec![0x28, 0xb5, 0x2f, 0xfd, 0xa0];
        push32(&mut o, data.len() as u32);
        let chunks: Vec<&[u8]> = data.chunks(100_000).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = (i + 1 == chunks.len()) as u32;
            let h = last | ((c.len() as u32) << 3);
            o.extend_from_slice(&h.to_le_bytes()[..3]);
            o.extend_from_slice(c);
        }
        o
    }

    const PTX: &str = r#"
//
// Generated by a test
//

.version 8.7
.target sm_86
.address_size 64

	// .globl	_Z6kernelPf
.file 1 "/tmp/x.cu", 1700000000, 1234
.extern .shared .align 16 .b8 dyn_smem[];
.extern .global .align 4 .u32 elsewhere;
.global .texref tex;
.visible .global .align 4 .b8 table[40] = {1, 2, 3};
.global .u32 counter;
.visible .const .align 4 .f32 coeffs[8];
.global .align 8 .u64 a, b[3];
.global .align 1 .b8 implicit[] = {1, 2, 3, 4, 5};
.visible .global .attribute(.managed) .align 4 .u32 managed_var;
.global .v4 .f32 vec4[2];
.global .align 8 .u64 ptr_var = generic(counter);

.func (.param .b32 func_retval0) helper(.param .b32 p)
{
	ret;
}

/* a block comment with .entry fake( inside */
.visible .entry _Z6kernelPf(
	.param .u64 _Z6kernelPf_param_0
)
.maxntid 256, 1, 1
{
	.reg .b32 %r<4>;
	{ .reg .b32 inner; }
	ret;
}

.entry noparams
{
	ret;
}
.weak .entry weak_kernel() { ret; }
.extern .entry declared_only(.param .u32 x);
.visible .entry _Z6kernelPf(.param .u64 p) { ret; }
"#;

    fn ptx_bytes() -> Vec<u8> {
        let mut v = PTX.as_bytes().to_vec();
        v.push(0);
        v
    }

    // ---- tests ----

    #[test]
    fn ptx_entries_and_globals() {
        let img = parse_bytes(&ptx_bytes()).expect("ptx");
        assert_eq!(img.format, Format::Ptx);
        assert_eq!(img.kernels, vec!["_Z6kernelPf", "noparams", "weak_kernel"]);
        let g: Vec<(&str, u64)> = img.globals.iter().map(|(n, s)| (n.as_str(), *s)).collect();
        assert_eq!(
            g,
            vec![
                ("table", 40),
                ("counter", 4),
                ("coeffs", 32),
                ("a", 8),
                ("b", 24),
                ("implicit", 5),
                ("managed_var", 4),
                ("vec4", 32),
                ("ptr_var", 8),
            ]
        );
        assert_eq!(img.kinds.len(), 1);
        assert_eq!(img.kinds[0].sm, 86);
        assert_eq!(img.kinds[0].version, (8 << 16) | 7);
        assert_eq!(img.len, PTX.len() + 1);
    }

    #[test]
    fn ptx_through_pointer() {
        let v = ptx_bytes();
        // SAFETY: `v` holds NUL-terminated text.
        let img = unsafe { parse(v.as_ptr(), None) }.expect("ptx");
        assert_eq!(img.kernels.len(), 3);
        assert_eq!(img.len, v.len());
        // Short strings: never read past the NUL.
        let short = b"ab\0";
        // SAFETY: NUL-terminated.
        assert_eq!(
            unsafe { parse(short.as_ptr(), None) },
            Err(ImageError::InvalidPtx)
        );
        let empty = b"\0";
        // SAFETY: NUL-terminated.
        assert_eq!(
            unsafe { parse(empty.as_ptr(), None) },
            Err(ImageError::Invalid)
        );
    }

    #[test]
    fn ptx_rejects() {
        for bad in [
            "hello world",
            ".target sm_80\n.version 8.0\n",
            ".version 8.0\n.target sm_80\n.entry k {",
            ".version 8.0\n.target sm_80\n.entry k { } }",
            ".version 8.0\n.entry (",
            ".version x\n",
            ".version 8.0\n/* unterminated",
            ".version 8.0\n.global .u32 x",
            ".version 8.0\n.global .b8 x[99999999999999999999];",
            ".version 8.0\n.global .b64 x[4294967296][4294967296];",
        ] {
            assert_eq!(
                parse_bytes(bad.as_bytes()),
                Err(ImageError::InvalidPtx),
                "{bad:?}"
            );
        }
        assert_eq!(parse_bytes(b"\x01\x02\x03binary"), Err(ImageError::Invalid));
        assert_eq!(parse_bytes(b""), Err(ImageError::Invalid));
        assert_eq!(parse_bytes(b"\0abc"), Err(ImageError::Invalid));
        // A minimal PTX is fine.
        let img = parse_bytes(b".version 9.0\n.target sm_120\n.address_size 64\n").expect("min");
        assert!(img.kernels.is_empty());
        assert_eq!(img.kinds[0].sm, 120);
    }

    #[test]
    fn cubin_symbols() {
        let c = cubin(89, &["k1", "k2"], &[("gvar", 16), ("cvar", 64)]);
        let img = parse_bytes(&c).expect("cubin");
        assert_eq!(img.format, Format::Cubin);
        assert_eq!(img.kernels, vec!["k1", "k2"]);
        assert_eq!(img.global("gvar"), Some(16));
        assert_eq!(img.global("cvar"), Some(64));
        assert_eq!(img.global("helper"), None);
        assert!(!img.has_kernel("helper"));
        assert_eq!(img.kinds[0].sm, 89);
        assert_eq!(img.len, c.len());
        // Trailing bytes after the file are not part of it.
        let mut longer = c.clone();
        longer.extend_from_slice(&[0xaa; 100]);
        assert_eq!(parse_bytes(&longer).expect("longer").len, c.len());
        // Through a bare pointer, the size comes from the headers.
        // SAFETY: `c` holds a whole ELF file.
        let img2 = unsafe { parse(c.as_ptr(), None) }.expect("ptr");
        assert_eq!(img2, img);
    }

    #[test]
    fn cubin_without_entry_marks() {
        let c = cubin_with(75, &["kern"], &[], true);
        let img = parse_bytes(&c).expect("cubin");
        assert_eq!(img.kernels, vec!["kern"]);
    }

    #[test]
    fn cubin_rejects() {
        let c = cubin(89, &["k1"], &[("g", 4)]);
        for cut in [10, 63, 64, 200, c.len() - 1] {
            assert_eq!(
                parse_bytes(&c[..cut]),
                Err(ImageError::Invalid),
                "cut {cut}"
            );
        }
        let mut m = c.clone();
        m[18] = 62; // x86-64
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        let mut m = c.clone();
        m[4] = 1; // ELFCLASS32
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        let mut m = c.clone();
        m[40..48].copy_from_slice(&u64::MAX.to_le_bytes()); // e_shoff
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        let mut m = c.clone();
        m[40..48].copy_from_slice(&(MAX_IMAGE - 8).to_le_bytes());
        // SAFETY: not readable that far, but the extent check refuses
        // before reading: the section table would end past MAX_IMAGE.
        assert_eq!(unsafe { parse(m.as_ptr(), None) }, Err(ImageError::Invalid));
        // A section claiming a huge size.
        let shoff = le64(&c, 40).unwrap() as usize;
        let mut m = c.clone();
        let s1 = shoff + 64 + 32;
        m[s1..s1 + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
    }

    #[test]
    fn fatbin_ptx_and_cubin() {
        let ptx = ptx_bytes();
        let c = cubin(89, &["k1", "_Z6kernelPf"], &[("gvar", 16), ("table", 40)]);
        let fb = container(&[
            entry(1, 86, 0, &ptx, 0),
            entry(2, 89, 0, &c, 0),
            entry(5, 89, 0, b"lto", 0),
        ]);
        let img = parse_bytes(&fb).expect("fatbin");
        assert_eq!(img.format, Format::Fatbin);
        assert_eq!(img.len, fb.len());
        assert_eq!(
            img.kernels,
            vec!["_Z6kernelPf", "noparams", "weak_kernel", "k1"]
        );
        assert_eq!(img.global("gvar"), Some(16));
        assert_eq!(img.global("table"), Some(40));
        let kinds: Vec<(EntryKind, u32, bool)> =
            img.kinds.iter().map(|k| (k.kind, k.sm, k.used)).collect();
        assert_eq!(
            kinds,
            vec![
                (EntryKind::Ptx, 86, true),
                (EntryKind::Cubin, 89, true),
                (EntryKind::Other(5), 89, false)
            ]
        );
        // SAFETY: `fb` holds a whole container.
        let img2 = unsafe { parse(fb.as_ptr(), None) }.expect("ptr");
        assert_eq!(img2, img);
    }

    #[test]
    fn fatbin_compressed() {
        let c = cubin(120, &["lz"], &[("g", 8)]);
        let z = cubin(120, &["zs"], &[]);
        let p = ptx_bytes();
        let fb = container(&[
            entry(2, 120, FLAG_LZ4, &lz4_literals(&c), c.len() as u64),
            entry(2, 120, FLAG_ZSTD, &zstd_raw(&z), z.len() as u64),
            entry(1, 120, FLAG_ZSTD, &zstd_raw(&p), p.len() as u64),
        ]);
        let img = parse_bytes(&fb).expect("fatbin");
        assert_eq!(
            img.kernels,
            vec!["lz", "zs", "_Z6kernelPf", "noparams", "weak_kernel"]
        );
        assert_eq!(img.global("g"), Some(8));
        assert!(img.kinds.iter().all(|k| k.compressed && k.used));
        assert_eq!(img.kinds[0].compression, Compression::Lz4);
        assert_eq!(img.kinds[1].compression, Compression::Zstd);
        // Wrong uncompressed size, corrupt data, both flags: invalid.
        for e in [
            entry(2, 120, FLAG_LZ4, &lz4_literals(&c), c.len() as u64 + 1),
            entry(2, 120, FLAG_LZ4, &lz4_literals(&c)[..100], c.len() as u64),
            entry(2, 120, FLAG_LZ4, &[0xff; 32], 1 << 20),
            entry(2, 120, FLAG_LZ4, &lz4_literals(&c), 0),
            entry(2, 120, FLAG_LZ4, &lz4_literals(&c), MAX_UNCOMPRESSED + 1),
            entry(2, 120, FLAG_ZSTD, &zstd_raw(&z), z.len() as u64 - 1),
            entry(2, 120, FLAG_ZSTD, &[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0], 100),
            entry(2, 120, FLAG_ZSTD | FLAG_LZ4, &zstd_raw(&z), z.len() as u64),
            entry(2, 120, FLAG_LZ4, &lz4_literals(b"not an elf at all"), 17),
        ] {
            assert_eq!(parse_bytes(&container(&[e])), Err(ImageError::Invalid));
        }
    }

    #[test]
    fn fatbin_rejects() {
        assert_eq!(
            parse_bytes(&container(&[])),
            Err(ImageError::NoBinaryForGpu)
        );
        let fb = container(&[entry(2, 89, 0, &cubin(89, &["k"], &[]), 0)]);
        for cut in [4, 15, 16, 40, fb.len() - 1] {
            assert_eq!(
                parse_bytes(&fb[..cut]),
                Err(ImageError::Invalid),
                "cut {cut}"
            );
        }
        // Container announcing more than there is / an absurd size.
        for size in [fb.len() as u64, u64::MAX - 8, MAX_IMAGE] {
            let mut m = fb.clone();
            m[8..16].copy_from_slice(&size.to_le_bytes());
            assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        }
        let mut m = fb.clone();
        m[8..16].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        // SAFETY: the extent check refuses before reading past the header.
        assert_eq!(unsafe { parse(m.as_ptr(), None) }, Err(ImageError::Invalid));
        // Entry fields: version, header size, payload size, stored size.
        for (off, val) in [
            (16 + 2, 0x0102u64),
            (16 + 4, 8),
            (16 + 4, 1 << 20),
            (16 + 8, 1 << 40),
            (16 + 16, 1 << 30),
        ] {
            let mut m = fb.clone();
            let w = if off == 16 + 2 {
                2
            } else if off == 16 + 8 {
                8
            } else {
                4
            };
            m[off..off + w].copy_from_slice(&val.to_le_bytes()[..w]);
            assert_eq!(parse_bytes(&m), Err(ImageError::Invalid), "off {off}");
        }
        // Container version / header size.
        let mut m = fb.clone();
        m[4] = 2;
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        let mut m = fb.clone();
        m[6] = 8;
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        // Trailing garbage too short for an entry, inside the container.
        let mut m = fb.clone();
        m.extend_from_slice(&[0; 8]);
        let n = le64(&m, 8).unwrap() + 8;
        m[8..16].copy_from_slice(&n.to_le_bytes());
        assert_eq!(parse_bytes(&m), Err(ImageError::Invalid));
        // Old magic; a wrapper in plain bytes.
        assert_eq!(
            parse_bytes(&0x1EE55A01u32.to_le_bytes()),
            Err(ImageError::Invalid)
        );
        let mut w = Vec::new();
        push32(&mut w, FATBIN_WRAPPER_MAGIC);
        push32(&mut w, 1);
        push64(&mut w, 0x1000);
        push64(&mut w, 0);
        assert_eq!(parse_bytes(&w), Err(ImageError::Invalid));
        // A cubin entry holding garbage.
        let g = container(&[entry(2, 89, 0, b"\x7fELF not really", 0)]);
        assert_eq!(parse_bytes(&g), Err(ImageError::Invalid));
        // A PTX entry holding bad PTX.
        let g = container(&[entry(1, 89, 0, b".version 8.0\n.entry {", 0)]);
        assert_eq!(parse_bytes(&g), Err(ImageError::InvalidPtx));
    }

    #[test]
    fn wrappers() {
        let fb1 = container(&[entry(2, 89, 0, &cubin(89, &["w1"], &[("g1", 4)]), 0)]);
        let fb2 = container(&[entry(1, 80, 0, &ptx_bytes(), 0)]);
        let mut w = Vec::new();
        push32(&mut w, FATBIN_WRAPPER_MAGIC);
        push32(&mut w, 1);
        push64(&mut w, fb1.as_ptr() as u64);
        push64(&mut w, 0);
        // SAFETY: the wrapper points at `fb1`.
        let img = unsafe { parse(w.as_ptr(), None) }.expect("v1");
        assert_eq!(img.format, Format::Wrapper);
        assert_eq!(img.kernels, vec!["w1"]);
        assert_eq!(img.len, 24);
        // SAFETY: as above, with the length known.
        let img = unsafe { parse(w.as_ptr(), Some(w.len())) }.expect("v1 len");
        assert_eq!(img.kernels, vec!["w1"]);
        // Version 2 with a list of further containers.
        let list: Vec<u64> = vec![fb2.as_ptr() as u64, 0];
        let mut w2 = Vec::new();
        push32(&mut w2, FATBIN_WRAPPER_MAGIC);
        push32(&mut w2, 2);
        push64(&mut w2, fb1.as_ptr() as u64);
        push64(&mut w2, list.as_ptr() as u64);
        // SAFETY: the wrapper points at `fb1` and a NULL-terminated list.
        let img = unsafe { parse(w2.as_ptr(), None) }.expect("v2");
        assert_eq!(
            img.kernels,
            vec!["w1", "_Z6kernelPf", "noparams", "weak_kernel"]
        );
        assert_eq!(img.kinds.len(), 2);
        // Bad version, NULL data, data that is not a container.
        let mut bad = w.clone();
        bad[4] = 3;
        // SAFETY: a readable 24-byte wrapper; refused before following.
        assert_eq!(
            unsafe { parse(bad.as_ptr(), None) },
            Err(ImageError::Invalid)
        );
        let mut bad = w.clone();
        bad[8..16].copy_from_slice(&0u64.to_le_bytes());
        // SAFETY: as above.
        assert_eq!(
            unsafe { parse(bad.as_ptr(), None) },
            Err(ImageError::Invalid)
        );
        let not_fb = [0u8; 16];
        let mut bad = w.clone();
        bad[8..16].copy_from_slice(&(not_fb.as_ptr() as u64).to_le_bytes());
        // SAFETY: points at 16 readable bytes that are not a container.
        assert_eq!(
            unsafe { parse(bad.as_ptr(), None) },
            Err(ImageError::Invalid)
        );
        // SAFETY: length known and too short for a wrapper.
        assert_eq!(
            unsafe { parse(w.as_ptr(), Some(8)) },
            Err(ImageError::Invalid)
        );
        // SAFETY: null is refused.
        assert_eq!(
            unsafe { parse(std::ptr::null(), None) },
            Err(ImageError::Invalid)
        );
    }

    #[test]
    fn target_selection() {
        let fb = container(&[
            entry(2, 75, 0, &cubin(75, &["k75"], &[]), 0),
            entry(2, 86, 0, &cubin(86, &["k86"], &[]), 0),
            entry(2, 80, 0, &cubin(80, &["k80"], &[]), 0),
            entry(1, 90, 0, &ptx_bytes(), 0),
        ]);
        let at = |sm| {
            parse_bytes_with(
                &fb,
                ParseOptions {
                    target_sm: Some(sm),
                },
            )
        };
        assert_eq!(at(89).expect("89").kernels, vec!["k86"]);
        assert_eq!(at(80).expect("80").kernels, vec!["k80"]);
        assert_eq!(at(75).expect("75").kernels, vec!["k75"]);
        assert_eq!(
            at(120).expect("120").kernels,
            vec!["_Z6kernelPf", "noparams", "weak_kernel"]
        );
        assert_eq!(at(70), Err(ImageError::NoBinaryForGpu));
        let img = at(89).expect("89");
        let used: Vec<bool> = img.kinds.iter().map(|k| k.used).collect();
        assert_eq!(used, vec![false, true, false, false]);
        // Unselected entries are not decompressed: a corrupt one does not matter.
        let fb = container(&[
            entry(2, 89, 0, &cubin(89, &["good"], &[]), 0),
            entry(2, 90, FLAG_LZ4, &[0xff; 16], 1000),
        ]);
        let img = parse_bytes_with(
            &fb,
            ParseOptions {
                target_sm: Some(89),
            },
        )
        .expect("sel");
        assert_eq!(img.kernels, vec!["good"]);
        assert_eq!(parse_bytes(&fb), Err(ImageError::Invalid));
        // Bare cubin / PTX.
        let c = cubin(90, &["k"], &[]);
        assert_eq!(
            parse_bytes_with(
                &c,
                ParseOptions {
                    target_sm: Some(89)
                }
            ),
            Err(ImageError::NoBinaryForGpu)
        );
        assert!(parse_bytes_with(
            &ptx_bytes(),
            ParseOptions {
                target_sm: Some(89)
            }
        )
        .is_ok());
        assert_eq!(
            parse_bytes_with(
                &ptx_bytes(),
                ParseOptions {
                    target_sm: Some(75)
                }
            ),
            Err(ImageError::NoBinaryForGpu)
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random mutations of valid images.
        let c = cubin(89, &["k1", "k2"], &[("g", 4)]);
        let seeds = [
            c.clone(),
            container(&[entry(2, 89, FLAG_LZ4, &lz4_literals(&c), c.len() as u64)]),
            container(&[entry(
                1,
                89,
                FLAG_ZSTD,
                &zstd_raw(&ptx_bytes()),
                ptx_bytes().len() as u64,
            )]),
            ptx_bytes(),
        ];
        let mut x: u64 = 0x1234_5678_9abc_def0;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for s in &seeds {
            for _ in 0..300 {
                let mut m = s.clone();
                for _ in 0..(rnd() % 8 + 1) {
                    let i = (rnd() as usize) % m.len();
                    m[i] = rnd() as u8;
                }
                let cut = (rnd() as usize) % (m.len() + 1);
                let _ = parse_bytes(&m);
                let _ = parse_bytes(&m[..cut]);
            }
        }
    }

    /// Runs on a real `.nv_fatbin` section dump (one or more containers back
    /// to back) when `EMUV_REAL_FATBIN` names one, e.g. made with
    /// `objcopy -O binary --only-section=.nv_fatbin lib.so out.bin`.
    #[test]
    fn real_fatbin_from_env() {
        let Ok(path) = std::env::var("EMUV_REAL_FATBIN") else {
            return;
        };
        let data = std::fs::read(&path).expect("read");
        let mut off = 0usize;
        let (mut containers, mut entries, mut kernels, mut globals) = (0, 0, 0, 0);
        while off + 16 <= data.len() {
            if le32(&data, off) != Some(FATBIN_MAGIC) {
                off += 8;
                continue;
            }
            let img =
                parse_bytes(&data[off..]).unwrap_or_else(|e| panic!("container at {off:#x}: {e}"));
            for sm in [75, 86, 89, 120] {
                let _ = parse_bytes_with(
                    &data[off..],
                    ParseOptions {
                        target_sm: Some(sm),
                    },
                );
            }
            containers += 1;
            entries += img.kinds.len();
            kernels += img.kernels.len();
            globals += img.globals.len();
            off += img.len;
            off = (off + 7) & !7;
        }
        eprintln!("{path}: {containers} containers, {entries} entries, {kernels} kernels, {globals} globals");
        assert!(containers > 0);
    }
}
