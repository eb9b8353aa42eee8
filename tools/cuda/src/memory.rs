// SPDX-License-Identifier: GPL-2.0
//! Memory: the device address space, the allocators, copies and memsets, host memory and
//! pointer attributes.
//!
//! Device memory is emuv's. A *chunk* is one allocation of the card's kernel pool, 2 MiB or a
//! multiple, with two places in this process: its device addresses, a 2 MiB-aligned range
//! reserved with no access (a CPU dereference faults, as on a GPU), and the library's own
//! mapping of the allocation, through which copies and memsets reach it. Managed memory is
//! mapped at its device addresses instead, so both sides use one pointer. As NVIDIA's driver
//! does (measured on driver 580), `cuMemAlloc` of up to 1 MiB takes 512-byte steps of a shared
//! 2 MiB chunk of its context, first fit, and larger requests get chunks of their own, rounded
//! up to 2 MiB; a chunk goes back to the card when its last allocation is freed.
//!
//! Every range the program was given is in one map, with its requested size: copies must lie
//! within it, as the real driver requires. Copies are resolved under the map's lock, and run
//! outside it holding the chunk, so a concurrent free cannot unmap memory under a copy.

use crate::{
    context::{self, Context},
    driver::{self, Card},
    put, status, stream,
    stream::both_flavours,
    sys, CuResult,
};
use emuv::Tier;
use nix::{
    errno::Errno,
    sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags},
};
use std::{
    collections::BTreeMap,
    ffi::{c_int, c_uint, c_void},
    num::NonZeroUsize,
    ptr::NonNull,
    sync::{Arc, Mutex, MutexGuard},
};

/// The unit of device memory: what the driver maps and what `cuMemGetInfo` moves by.
pub const CHUNK: usize = 2 << 20;
/// The sub-allocator's step.
const UNIT: usize = 512;
/// The largest request served from a shared chunk.
const SMALL_MAX: usize = 1 << 20;
/// What a memory pool reserves at a time (measured: 32 MiB for an 8 MiB `cuMemAllocAsync`).
const POOL_GRANULE: usize = 32 << 20;
/// `cuMemAllocPitch`'s row alignment (measured: 1000 bytes give a 1024-byte pitch).
const PITCH_ALIGN: usize = 512;
/// The vaSpaceToken of every device pointer (measured on driver 580).
const VA_SPACE_TOKEN: c_uint = 65024;

const INVALID: sys::CUresult = sys::CUDA_ERROR_INVALID_VALUE;
const OOM: sys::CUresult = sys::CUDA_ERROR_OUT_OF_MEMORY;

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

/// What an emuv `ALLOC` refusal means to CUDA.
fn alloc_error(e: Errno) -> sys::CUresult {
    match e {
        Errno::ENOMEM | Errno::ENOSPC | Errno::EFBIG | Errno::E2BIG | Errno::EDQUOT => OOM,
        // The card was lost (emuv's injected failure).
        Errno::ENODEV | Errno::ENXIO | Errno::EIO => sys::CUDA_ERROR_DEVICE_UNAVAILABLE,
        _ => sys::CUDA_ERROR_UNKNOWN,
    }
}

/// An address range reserved with no access.
pub(crate) struct Reservation {
    base: NonNull<c_void>,
    len: usize,
}

// SAFETY: an address range; nothing in Rust refers into it.
unsafe impl Send for Reservation {}
// SAFETY: as above.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// `len` bytes at an `align`-aligned address (`align` a power of two, a page multiple).
    pub(crate) fn new(len: usize, align: usize) -> CuResult<Self> {
        let span = len
            .checked_add(align)
            .and_then(NonZeroUsize::new)
            .ok_or(OOM)?;
        // SAFETY: a new anonymous mapping chosen by the kernel, aliasing nothing.
        let raw = unsafe {
            mmap_anonymous(
                None,
                span,
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }
        .map_err(|_| OOM)?;
        let start = raw.as_ptr() as usize;
        let aligned = start.next_multiple_of(align);
        let head = aligned - start;
        let tail = span.get() - head - len;
        if head > 0 {
            // SAFETY: the unaligned head of the mapping just made.
            let _ = unsafe { munmap(raw, head) };
        }
        let base = NonNull::new(aligned as *mut c_void).ok_or(OOM)?;
        if tail > 0 {
            let end = NonNull::new((aligned + len) as *mut c_void).ok_or(OOM)?;
            // SAFETY: the tail of the mapping just made, past what is kept.
            let _ = unsafe { munmap(end, tail) };
        }
        Ok(Reservation { base, len })
    }

    pub(crate) fn start(&self) -> usize {
        self.base.as_ptr() as usize
    }
}

impl Reservation {
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: exactly the range kept in `new` (with whatever was mapped over it since).
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

/// One allocation of a card's kernel pool.
pub struct Chunk {
    card: &'static Card,
    handle: u32,
    len: usize,
    /// The device addresses (for managed memory, the mapping itself).
    reservation: Option<Reservation>,
    /// The library's own mapping; `None` for managed memory.
    view: Option<emuv::Mapping>,
    view_base: usize,
}

// SAFETY: the fields are only read after construction; the memory itself is shared with the
// program, which orders its accesses with streams and events as on a GPU.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(card: &'static Card, len: usize, managed: bool) -> CuResult<Arc<Chunk>> {
        let allocation = card
            .device
            .alloc(len as u64, Tier::Any)
            .map_err(alloc_error)?;
        // From here on, dropping `chunk` gives the allocation back.
        let mut chunk = Chunk {
            card,
            handle: allocation.handle,
            len,
            reservation: None,
            view: None,
            view_base: 0,
        };
        let reservation = Reservation::new(len, CHUNK)?;
        let start = reservation.start();
        chunk.reservation = Some(reservation);
        if managed {
            let at = NonZeroUsize::new(start).ok_or(OOM)?;
            let length = NonZeroUsize::new(len).ok_or(INVALID)?;
            let offset = i64::try_from(allocation.mmap_offset).map_err(|_| INVALID)?;
            // SAFETY: replaces the reservation this chunk owns (and nothing else) with a shared
            // mapping of its own allocation; the reservation's drop unmaps it.
            unsafe {
                mmap(
                    Some(at),
                    length,
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                    &card.device,
                    offset,
                )
            }
            .map_err(|_| OOM)?;
            chunk.view_base = start;
        } else {
            let view = card.device.map(&allocation).map_err(|_| OOM)?;
            chunk.view_base = view.as_ptr() as usize;
            chunk.view = Some(view);
        }
        Ok(Arc::new(chunk))
    }

    fn start(&self) -> usize {
        self.reservation.as_ref().map_or(0, Reservation::start)
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // The kernel refuses to free a mapped allocation: unmap both places first.
        drop(self.view.take());
        drop(self.reservation.take());
        let _ = self.card.device.free(self.handle);
    }
}

/// Host memory from `cuMemAllocHost`/`cuMemHostAlloc`.
pub struct HostBlock {
    base: NonNull<c_void>,
    len: usize,
}

// SAFETY: plain memory, shared with the program as any host allocation is.
unsafe impl Send for HostBlock {}
// SAFETY: as above.
unsafe impl Sync for HostBlock {}

impl HostBlock {
    fn new(size: usize) -> CuResult<Self> {
        let len = size
            .checked_next_multiple_of(page_size())
            .and_then(NonZeroUsize::new)
            .ok_or(OOM)?;
        // SAFETY: a new anonymous mapping chosen by the kernel, aliasing nothing.
        let base = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(|_| OOM)?;
        Ok(HostBlock {
            base,
            len: len.get(),
        })
    }
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        // SAFETY: exactly the range `new` mapped.
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `cuMemAlloc`.
    Device,
    /// `cuMemAllocManaged`.
    Managed,
    /// `cuMemAllocAsync`: from a memory pool.
    Pool,
    /// `cuMemAllocHost`/`cuMemHostAlloc`.
    Host,
    /// `cuMemHostRegister`.
    Registered,
    /// `cuMemMap` (virtual memory management).
    Mapped,
}

#[derive(Clone)]
enum Backing {
    Chunk { chunk: Arc<Chunk>, offset: usize },
    Host(Arc<HostBlock>),
    Registered,
    View(Arc<crate::vmm::View>),
}

/// What keeps a copy's memory alive while it runs (held, never read).
#[derive(Clone)]
#[allow(dead_code)]
enum Keep {
    None,
    Chunk(Arc<Chunk>),
    Host(Arc<HostBlock>),
    View(Arc<crate::vmm::View>),
}

struct Range {
    start: usize,
    /// As requested: copies must end within it.
    size: usize,
    kind: Kind,
    ctx: usize,
    device: sys::CUdevice,
    buffer_id: u64,
    backing: Backing,
    /// A small allocation's units in its shared chunk: (first, count).
    units: Option<(usize, usize)>,
    pool: usize,
    host_flags: c_uint,
    /// `cuMemFreeAsync` was called; the stream has not reached the free yet.
    freeing: bool,
}

impl Range {
    fn contains(&self, addr: usize) -> bool {
        addr >= self.start && addr - self.start < self.size.max(1)
    }

    /// The address through which the library reaches `addr` of this range.
    fn reach(&self, addr: usize) -> (usize, Keep) {
        let delta = addr - self.start;
        match &self.backing {
            Backing::Chunk { chunk, offset } => {
                (chunk.view_base + offset + delta, Keep::Chunk(chunk.clone()))
            }
            Backing::Host(block) => (addr, Keep::Host(block.clone())),
            Backing::Registered => (addr, Keep::None),
            Backing::View(view) => (view.base() + delta, Keep::View(view.clone())),
        }
    }
}

/// A chunk shared by allocations at 512-byte steps: a bit per unit. `cuMemAlloc` and
/// `cuMemAllocManaged` of up to 1 MiB share 2 MiB chunks of their context; a pool's blocks
/// (32 MiB multiples) hold all its allocations.
struct Slab {
    chunk: Arc<Chunk>,
    ctx: usize,
    kind: Kind,
    pool: usize,
    used: usize,
    units: usize,
    bits: Vec<u64>,
    /// No unit below this is free: where first fit starts looking.
    first_free: usize,
}

impl Slab {
    fn new(chunk: Arc<Chunk>, ctx: usize, kind: Kind, pool: usize) -> Slab {
        let units = chunk.len / UNIT;
        Slab {
            chunk,
            ctx,
            kind,
            pool,
            used: 0,
            units,
            bits: vec![0; units.div_ceil(64)],
            first_free: 0,
        }
    }

    /// The first run of `count` free units.
    fn find(&self, count: usize) -> Option<usize> {
        find_run(&self.bits, self.units, self.used, count, self.first_free)
    }

    fn mark(&mut self, first: usize, count: usize, taken: bool) {
        for unit in first..first + count {
            let bit = 1u64 << (unit % 64);
            if taken {
                self.bits[unit / 64] |= bit;
            } else {
                self.bits[unit / 64] &= !bit;
            }
        }
        if taken {
            self.used += count;
            if first == self.first_free {
                self.first_free = first + count;
            }
        } else {
            self.used -= count;
            self.first_free = self.first_free.min(first);
        }
    }
}

/// First fit: the first run of `count` clear bits among the first `units` of `bits`, of which
/// `used` are set, looking from `from` (no bit below it is clear). Whole words are skipped at
/// once.
fn find_run(bits: &[u64], units: usize, used: usize, count: usize, from: usize) -> Option<usize> {
    if units.saturating_sub(used) < count {
        return None;
    }
    let mut run_start = from;
    let mut run = 0;
    let mut unit = from;
    while unit < units {
        let word = bits[unit / 64];
        if unit.is_multiple_of(64) && word == u64::MAX {
            run = 0;
            unit += 64;
            continue;
        }
        if unit.is_multiple_of(64) && word == 0 && unit + 64 <= units {
            if run == 0 {
                run_start = unit;
            }
            run += 64;
            unit += 64;
        } else if word >> (unit % 64) & 1 == 1 {
            run = 0;
            unit += 1;
            continue;
        } else {
            if run == 0 {
                run_start = unit;
            }
            run += 1;
            unit += 1;
        }
        if run >= count {
            return Some(run_start);
        }
    }
    None
}

/// A stream-ordered allocator's pool (one default pool per card).
pub struct Pool {
    pub handle: usize,
    pub device: sys::CUdevice,
    reuse: [c_int; 3],
    release_threshold: u64,
    reserved: u64,
    reserved_high: u64,
    used: u64,
    used_high: u64,
}

struct Space {
    ranges: BTreeMap<usize, Range>,
    /// Shared chunks by device address.
    slabs: BTreeMap<usize, Slab>,
    /// Every chunk's device addresses (start, length): emulated VRAM, not host memory.
    reserved: BTreeMap<usize, usize>,
    next_buffer_id: u64,
    pools: Vec<Pool>,
    /// Per card, the pool `cuMemAllocAsync` uses if not the default one.
    current_pools: Vec<(sys::CUdevice, usize)>,
}

static SPACE: Mutex<Space> = Mutex::new(Space {
    ranges: BTreeMap::new(),
    slabs: BTreeMap::new(),
    reserved: BTreeMap::new(),
    next_buffer_id: 1,
    pools: Vec::new(),
    current_pools: Vec::new(),
});

fn space() -> MutexGuard<'static, Space> {
    SPACE.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a free lets go of: dropped once the lock is released (unmapping and the kernel's
/// FREE happen then).
type Released = Vec<Arc<Chunk>>;

impl Space {
    fn find(&self, addr: usize) -> Option<&Range> {
        self.ranges
            .range(..=addr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.contains(addr))
    }

    fn in_device_memory(&self, addr: usize) -> bool {
        self.reserved
            .range(..=addr)
            .next_back()
            .is_some_and(|(start, len)| addr - start < *len)
    }

    fn buffer_id(&mut self) -> u64 {
        let id = self.next_buffer_id;
        self.next_buffer_id = id.saturating_add(1);
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        start: usize,
        size: usize,
        kind: Kind,
        ctx: &Context,
        backing: Backing,
        units: Option<(usize, usize)>,
        pool: usize,
        host_flags: c_uint,
    ) {
        let buffer_id = self.buffer_id();
        self.ranges.insert(
            start,
            Range {
                start,
                size,
                kind,
                ctx: ctx.handle,
                device: ctx.device,
                buffer_id,
                backing,
                units,
                pool,
                host_flags,
                freeing: false,
            },
        );
    }

    /// The range at exactly `start`, if it is of one of `kinds` and no free of it is pending.
    fn check_free(&self, start: usize, kinds: &[Kind]) -> CuResult {
        match self.ranges.get(&start) {
            Some(r) if kinds.contains(&r.kind) && !r.freeing => Ok(()),
            _ => Err(INVALID),
        }
    }

    /// Takes the range at exactly `start`, if it is of one of `kinds`; gives back the chunks it
    /// lets go of.
    fn take(&mut self, start: usize, kinds: &[Kind], pending: bool) -> CuResult<(Range, Released)> {
        match self.ranges.get(&start) {
            Some(r) if kinds.contains(&r.kind) && r.freeing == pending => {}
            _ => return Err(INVALID),
        }
        let range = self.ranges.remove(&start).ok_or(INVALID)?;
        let mut released = Vec::new();
        if range.kind == Kind::Pool {
            if let Ok(p) = self.pool_mut(range.pool) {
                p.used = p.used.saturating_sub(range.size as u64);
            }
        }
        if let Backing::Chunk { chunk, .. } = &range.backing {
            let base = chunk.start();
            match range.units {
                Some((first, count)) => {
                    let mut empty = false;
                    if let Some(slab) = self.slabs.get_mut(&base) {
                        slab.mark(first, count, false);
                        empty = slab.used == 0;
                    }
                    if empty {
                        released.extend(self.release_empty_slab(base, range.pool));
                    }
                }
                None => {
                    self.reserved.remove(&base);
                    released.push(chunk.clone());
                }
            }
        }
        Ok((range, released))
    }

    /// An empty shared chunk goes back to the card, but a pool keeps its blocks while what it
    /// holds is within its release threshold.
    fn release_empty_slab(&mut self, base: usize, pool: usize) -> Option<Arc<Chunk>> {
        let len = self.slabs.get(&base)?.chunk.len as u64;
        if pool != 0 {
            let p = self.pool_mut(pool).ok()?;
            if p.reserved <= p.release_threshold {
                return None;
            }
            p.reserved = p.reserved.saturating_sub(len);
        }
        self.reserved.remove(&base);
        self.slabs.remove(&base).map(|s| s.chunk)
    }

    fn pool_mut(&mut self, handle: usize) -> CuResult<&mut Pool> {
        self.pools
            .iter_mut()
            .find(|p| p.handle == handle)
            .ok_or(INVALID)
    }

    fn default_pool(&mut self, device: sys::CUdevice) -> usize {
        if let Some(p) = self.pools.iter().find(|p| p.device == device) {
            return p.handle;
        }
        self.new_pool(device)
    }

    /// A pool of `device` (its first is the card's default pool).
    fn new_pool(&mut self, device: sys::CUdevice) -> usize {
        let handle = crate::handles::fresh();
        self.pools.push(Pool {
            handle,
            device,
            reuse: [1, 1, 1],
            release_threshold: 0,
            reserved: 0,
            reserved_high: 0,
            used: 0,
            used_high: 0,
        });
        handle
    }
}

// --- allocation -------------------------------------------------------------------------------

/// Where a shared-chunk allocation goes: `kind` in `ctx`, or (`pool` non-zero) a pool's blocks.
struct Shared {
    kind: Kind,
    pool: usize,
}

fn alloc_shared(ctx: &Context, size: usize, shared: Shared) -> CuResult<usize> {
    let card = driver::card(ctx.device)?;
    let count = size.div_ceil(UNIT).max(1);
    let owner = if shared.pool != 0 { 0 } else { ctx.handle };
    loop {
        {
            let mut space = space();
            let found = space
                .slabs
                .iter()
                .filter(|(_, s)| s.ctx == owner && s.kind == shared.kind && s.pool == shared.pool)
                .find_map(|(base, s)| s.find(count).map(|first| (*base, first)));
            if let Some((base, first)) = found {
                let slab = space.slabs.get_mut(&base).ok_or(INVALID)?;
                slab.mark(first, count, true);
                let chunk = slab.chunk.clone();
                let start = base + first * UNIT;
                let backing = Backing::Chunk {
                    chunk,
                    offset: first * UNIT,
                };
                let units = Some((first, count));
                space.insert(
                    start,
                    size,
                    shared.kind,
                    ctx,
                    backing,
                    units,
                    shared.pool,
                    0,
                );
                if shared.pool != 0 {
                    let p = space.pool_mut(shared.pool)?;
                    p.used += size as u64;
                    p.used_high = p.used_high.max(p.used);
                }
                return Ok(start);
            }
        }
        // No room: a new chunk (made without the lock: it is an ioctl and two mmaps), then the
        // search again.
        let len = if shared.pool != 0 {
            size.checked_next_multiple_of(POOL_GRANULE).ok_or(OOM)?
        } else {
            CHUNK
        };
        let chunk = Chunk::new(card, len, shared.kind == Kind::Managed)?;
        let base = chunk.start();
        let mut space = space();
        if shared.pool != 0 {
            let p = space.pool_mut(shared.pool)?;
            p.reserved += len as u64;
            p.reserved_high = p.reserved_high.max(p.reserved);
        }
        space.reserved.insert(base, len);
        space
            .slabs
            .insert(base, Slab::new(chunk, owner, shared.kind, shared.pool));
    }
}

fn alloc_own_chunk(ctx: &Context, size: usize, kind: Kind) -> CuResult<usize> {
    let card = driver::card(ctx.device)?;
    let len = size.checked_next_multiple_of(CHUNK).ok_or(OOM)?;
    let chunk = Chunk::new(card, len, kind == Kind::Managed)?;
    let start = chunk.start();
    let mut space = space();
    space.reserved.insert(start, len);
    space.insert(
        start,
        size,
        kind,
        ctx,
        Backing::Chunk { chunk, offset: 0 },
        None,
        0,
        0,
    );
    Ok(start)
}

/// `cuMemAlloc` and `cuMemAllocManaged`: up to 1 MiB in a shared chunk, more in its own.
fn alloc_in(ctx: &Context, size: usize, kind: Kind) -> CuResult<usize> {
    if size == 0 {
        return Err(INVALID);
    }
    if size <= SMALL_MAX {
        alloc_shared(ctx, size, Shared { kind, pool: 0 })
    } else {
        alloc_own_chunk(ctx, size, kind)
    }
}

fn alloc_device(size: usize) -> CuResult<usize> {
    let ctx = context::current()?;
    alloc_in(&ctx, size, Kind::Device)
}

/// Frees what `take` gave, outside the lock.
fn release(taken: (Range, Released)) {
    drop(taken);
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(out: *mut sys::CUdeviceptr, size: usize) -> sys::CUresult {
    if out.is_null() {
        return INVALID;
    }
    // SAFETY: an out-pointer from the caller.
    status(alloc_device(size).and_then(|p| unsafe { put(out, p as sys::CUdeviceptr) }))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocPitch_v2(
    out: *mut sys::CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    element_size: c_uint,
) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        if out.is_null() || pitch.is_null() {
            return Err(INVALID);
        }
        if width == 0 || height == 0 || !matches!(element_size, 4 | 8 | 16) {
            // The real driver zeroes both outputs when it refuses.
            // SAFETY: out-pointers from the caller, checked non-NULL.
            unsafe {
                put(out, 0)?;
                put(pitch, 0)?;
            }
            return Err(INVALID);
        }
        let row = width.checked_next_multiple_of(PITCH_ALIGN).ok_or(INVALID)?;
        let size = row.checked_mul(height).ok_or(OOM)?;
        let p = alloc_device(size)?;
        // SAFETY: out-pointers from the caller, checked non-NULL.
        unsafe {
            put(out, p as sys::CUdeviceptr)?;
            put(pitch, row)
        }
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(ptr: sys::CUdeviceptr) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        if ptr == 0 {
            return Ok(());
        }
        let taken = space().take(
            ptr as usize,
            &[Kind::Device, Kind::Managed, Kind::Pool],
            false,
        )?;
        release(taken);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> sys::CUresult {
    let result = (|| {
        let ctx = context::current()?;
        let card = driver::card(ctx.device)?;
        let memory = card.gpu.memory().map_err(|_| sys::CUDA_ERROR_UNKNOWN)?;
        // SAFETY: out-pointers from the caller.
        unsafe {
            put(free, memory.free as usize)?;
            put(total, memory.total as usize)
        }
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(
    base: *mut sys::CUdeviceptr,
    size: *mut usize,
    ptr: sys::CUdeviceptr,
) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        let (start, len) = {
            let space = space();
            let r = space
                .find(ptr as usize)
                .filter(|r| {
                    matches!(
                        r.kind,
                        Kind::Device | Kind::Managed | Kind::Pool | Kind::Mapped
                    )
                })
                .ok_or(sys::CUDA_ERROR_NOT_FOUND)?;
            (r.start, r.size)
        };
        // Either out-pointer may be NULL.
        if !base.is_null() {
            // SAFETY: a non-NULL out-pointer from the caller.
            unsafe { put(base, start as sys::CUdeviceptr)? };
        }
        if !size.is_null() {
            // SAFETY: as above.
            unsafe { put(size, len)? };
        }
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocManaged(
    out: *mut sys::CUdeviceptr,
    size: usize,
    flags: c_uint,
) -> sys::CUresult {
    let result = (|| {
        let ctx = context::current()?;
        if out.is_null()
            || size == 0
            || (flags != sys::CU_MEM_ATTACH_GLOBAL && flags != sys::CU_MEM_ATTACH_HOST)
        {
            return Err(INVALID);
        }
        let p = alloc_in(&ctx, size, Kind::Managed)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, p as sys::CUdeviceptr) }
    })();
    status(result)
}

// --- host memory -------------------------------------------------------------------------------

fn alloc_host(size: usize, flags: c_uint) -> CuResult<usize> {
    let ctx = context::current()?;
    let known = sys::CU_MEMHOSTALLOC_PORTABLE
        | sys::CU_MEMHOSTALLOC_DEVICEMAP
        | sys::CU_MEMHOSTALLOC_WRITECOMBINED;
    if flags & !known != 0 {
        return Err(INVALID);
    }
    // Measured: a 0-byte request succeeds with NULL.
    if size == 0 {
        return Ok(0);
    }
    let block = Arc::new(HostBlock::new(size)?);
    let start = block.base.as_ptr() as usize;
    // With unified addressing all pinned memory is mapped (measured: cuMemAllocHost's reads
    // back as DEVICEMAP).
    let flags = flags | sys::CU_MEMHOSTALLOC_DEVICEMAP;
    space().insert(
        start,
        size,
        Kind::Host,
        &ctx,
        Backing::Host(block),
        None,
        0,
        flags,
    );
    Ok(start)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(out: *mut *mut c_void, size: usize) -> sys::CUresult {
    if out.is_null() {
        return INVALID;
    }
    // SAFETY: an out-pointer from the caller.
    status(alloc_host(size, 0).and_then(|p| unsafe { put(out, p as *mut c_void) }))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    out: *mut *mut c_void,
    size: usize,
    flags: c_uint,
) -> sys::CUresult {
    if out.is_null() {
        return INVALID;
    }
    // SAFETY: an out-pointer from the caller.
    status(alloc_host(size, flags).and_then(|p| unsafe { put(out, p as *mut c_void) }))
}

#[no_mangle]
pub extern "C" fn cuMemFreeHost(ptr: *mut c_void) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        let taken = space().take(ptr as usize, &[Kind::Host], false)?;
        release(taken);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemHostRegister_v2(
    ptr: *mut c_void,
    size: usize,
    flags: c_uint,
) -> sys::CUresult {
    let result = (|| {
        let ctx = context::current()?;
        let known = sys::CU_MEMHOSTREGISTER_PORTABLE
            | sys::CU_MEMHOSTREGISTER_DEVICEMAP
            | sys::CU_MEMHOSTREGISTER_IOMEMORY
            | sys::CU_MEMHOSTREGISTER_READ_ONLY;
        let start = ptr as usize;
        let end = start.checked_add(size).ok_or(INVALID)?;
        if ptr.is_null() || size == 0 || flags & !known != 0 {
            return Err(INVALID);
        }
        let mut space = space();
        if space.in_device_memory(start) {
            return Err(INVALID);
        }
        let overlaps = space
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(_, r)| r.start + r.size.max(1) > start);
        if overlaps {
            return Err(sys::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
        }
        let flags = flags | sys::CU_MEMHOSTREGISTER_DEVICEMAP;
        space.insert(
            start,
            size,
            Kind::Registered,
            &ctx,
            Backing::Registered,
            None,
            0,
            flags,
        );
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub extern "C" fn cuMemHostUnregister(ptr: *mut c_void) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        let mut space = space();
        // An interior pointer of a registered range is an invalid value; anything else was
        // never registered.
        let interior = space
            .find(ptr as usize)
            .is_some_and(|r| r.kind == Kind::Registered && r.start != ptr as usize);
        if interior {
            return Err(INVALID);
        }
        let taken = space
            .take(ptr as usize, &[Kind::Registered], false)
            .map_err(|_| sys::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED)?;
        drop(space);
        release(taken);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostGetDevicePointer_v2(
    out: *mut sys::CUdeviceptr,
    ptr: *mut c_void,
    flags: c_uint,
) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        let found = flags == 0
            && space()
                .find(ptr as usize)
                .is_some_and(|r| matches!(r.kind, Kind::Host | Kind::Registered));
        // The real driver writes 0 when it refuses.
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, if found { ptr as sys::CUdeviceptr } else { 0 }) }?;
        if found {
            Ok(())
        } else {
            Err(INVALID)
        }
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostGetFlags(out: *mut c_uint, ptr: *mut c_void) -> sys::CUresult {
    let result = (|| {
        context::current()?;
        let flags = space()
            .find(ptr as usize)
            .filter(|r| matches!(r.kind, Kind::Host | Kind::Registered))
            .map(|r| r.host_flags)
            .ok_or(INVALID)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, flags) }
    })();
    status(result)
}

// --- copies and memsets ----------------------------------------------------------------------

/// Memory a copy or memset reaches, held alive while it runs.
struct Span {
    addr: usize,
    _keep: Keep,
}

// SAFETY: an address and what keeps it mapped; the bytes are the program's to order.
unsafe impl Send for Span {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Must be memory the driver gave (device, managed, pool, pinned or registered).
    Device,
    /// Any host memory, or memory the driver gave (unified addressing).
    Host,
}

impl Space {
    /// `len` bytes at `addr` on `side`: `CUDA_ERROR_INVALID_VALUE` for NULL, an address the
    /// driver did not give, or a span that runs past the end of its allocation.
    fn span(&self, side: Side, addr: usize, len: usize) -> CuResult<Span> {
        if addr == 0 {
            return Err(INVALID);
        }
        let end = addr.checked_add(len).ok_or(INVALID)?;
        match self.find(addr) {
            Some(r) => {
                if end > r.start + r.size {
                    return Err(INVALID);
                }
                let (reach, keep) = r.reach(addr);
                Ok(Span {
                    addr: reach,
                    _keep: keep,
                })
            }
            None if side == Side::Host && !self.in_device_memory(addr) => Ok(Span {
                addr,
                _keep: Keep::None,
            }),
            None => Err(INVALID),
        }
    }
}

/// # Safety
///
/// `dst` and `src` reach `len` bytes each (as `Space::span` checked, or host memory the
/// program vouched for).
unsafe fn copy_bytes(dst: &Span, src: &Span, len: usize) {
    // SAFETY: per this function's contract; `copy` allows the spans to overlap.
    unsafe { std::ptr::copy(src.addr as *const u8, dst.addr as *mut u8, len) };
}

/// A memset's pattern: `count` elements of `width` bytes.
#[derive(Clone, Copy)]
struct Fill {
    value: u32,
    width: usize,
}

impl Fill {
    /// # Safety
    ///
    /// `span` reaches `count * width` bytes, aligned to `width`.
    unsafe fn apply(self, span: &Span, count: usize) {
        let at = span.addr;
        // SAFETY: per this function's contract.
        unsafe {
            match self.width {
                1 => std::ptr::write_bytes(at as *mut u8, self.value as u8, count),
                2 => std::slice::from_raw_parts_mut(at as *mut u16, count).fill(self.value as u16),
                _ => std::slice::from_raw_parts_mut(at as *mut u32, count).fill(self.value),
            }
        }
    }
}

/// Runs `work` in order on the stream a call names: queued for the `Async` calls, on the
/// caller's thread after the stream has drained for the synchronous ones.
fn submit(
    stream: sys::CUstream,
    per_thread: bool,
    asynchronous: bool,
    work: impl FnOnce() + Send + 'static,
) -> CuResult {
    let s = stream::resolve(stream, per_thread)?;
    if asynchronous {
        stream::enqueue(&s, work);
    } else {
        stream::drain_before_sync_call(&s);
        work();
    }
    Ok(())
}

struct Copy1D {
    dst: usize,
    dst_side: Side,
    src: usize,
    src_side: Side,
    len: usize,
}

fn copy_1d(c: Copy1D, stream: sys::CUstream, pt: bool, asynchronous: bool) -> CuResult {
    context::current()?;
    if c.len == 0 {
        return Ok(());
    }
    let (dst, src) = {
        let space = space();
        (
            space.span(c.dst_side, c.dst, c.len)?,
            space.span(c.src_side, c.src, c.len)?,
        )
    };
    let len = c.len;
    // SAFETY: both spans were checked to reach `len` bytes (host ones as the program said).
    submit(stream, pt, asynchronous, move || unsafe {
        copy_bytes(&dst, &src, len)
    })
}

macro_rules! copy_fn {
    ($plain:ident, $pt:ident, $body:ident, async: $is_async:expr,
     ($dst:ident: $dty:ty => $dside:expr, $src:ident: $sty:ty => $sside:expr $(, $stream:ident)?)) => {
        unsafe fn $body($dst: $dty, $src: $sty, len: usize $(, $stream: sys::CUstream)?, pt: bool) -> CuResult {
            #[allow(unused_mut, unused_assignments)]
            let mut stream: sys::CUstream = std::ptr::null_mut();
            $(stream = $stream;)?
            copy_1d(
                Copy1D { dst: $dst as usize, dst_side: $dside, src: $src as usize, src_side: $sside, len },
                stream,
                pt,
                $is_async,
            )
        }
        both_flavours!($plain, $pt, $body, ($dst: $dty, $src: $sty, len: usize $(, $stream: sys::CUstream)?));
    };
}

copy_fn!(cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds, htod, async: false,
    (dst: sys::CUdeviceptr => Side::Device, src: *const c_void => Side::Host));
copy_fn!(cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds, dtoh, async: false,
    (dst: *mut c_void => Side::Host, src: sys::CUdeviceptr => Side::Device));
copy_fn!(cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds, dtod, async: false,
    (dst: sys::CUdeviceptr => Side::Device, src: sys::CUdeviceptr => Side::Device));
copy_fn!(cuMemcpy, cuMemcpy_ptds, unified, async: false,
    (dst: sys::CUdeviceptr => Side::Host, src: sys::CUdeviceptr => Side::Host));
copy_fn!(cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz, htod_async, async: true,
    (dst: sys::CUdeviceptr => Side::Device, src: *const c_void => Side::Host, stream));
copy_fn!(cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz, dtoh_async, async: true,
    (dst: *mut c_void => Side::Host, src: sys::CUdeviceptr => Side::Device, stream));
copy_fn!(cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz, dtod_async, async: true,
    (dst: sys::CUdeviceptr => Side::Device, src: sys::CUdeviceptr => Side::Device, stream));
copy_fn!(cuMemcpyAsync, cuMemcpyAsync_ptsz, unified_async, async: true,
    (dst: sys::CUdeviceptr => Side::Host, src: sys::CUdeviceptr => Side::Host, stream));

/// Peer copies: the contexts must be live; with one address space they are device copies.
#[allow(clippy::too_many_arguments)]
unsafe fn peer(
    dst: sys::CUdeviceptr,
    dst_ctx: sys::CUcontext,
    src: sys::CUdeviceptr,
    src_ctx: sys::CUcontext,
    len: usize,
    stream: sys::CUstream,
    asynchronous: bool,
    pt: bool,
) -> CuResult {
    context::get(dst_ctx as usize)?;
    context::get(src_ctx as usize)?;
    let c = Copy1D {
        dst: dst as usize,
        dst_side: Side::Device,
        src: src as usize,
        src_side: Side::Device,
        len,
    };
    copy_1d(c, stream, pt, asynchronous)
}

unsafe fn peer_sync(
    dst: sys::CUdeviceptr,
    dst_ctx: sys::CUcontext,
    src: sys::CUdeviceptr,
    src_ctx: sys::CUcontext,
    len: usize,
    pt: bool,
) -> CuResult {
    // SAFETY: the caller's arguments.
    unsafe {
        peer(
            dst,
            dst_ctx,
            src,
            src_ctx,
            len,
            std::ptr::null_mut(),
            false,
            pt,
        )
    }
}
both_flavours!(cuMemcpyPeer, cuMemcpyPeer_ptds, peer_sync,
    (dst: sys::CUdeviceptr, dst_ctx: sys::CUcontext, src: sys::CUdeviceptr, src_ctx: sys::CUcontext, len: usize));

unsafe fn peer_async(
    dst: sys::CUdeviceptr,
    dst_ctx: sys::CUcontext,
    src: sys::CUdeviceptr,
    src_ctx: sys::CUcontext,
    len: usize,
    stream: sys::CUstream,
    pt: bool,
) -> CuResult {
    // SAFETY: the caller's arguments.
    unsafe { peer(dst, dst_ctx, src, src_ctx, len, stream, true, pt) }
}
both_flavours!(cuMemcpyPeerAsync, cuMemcpyPeerAsync_ptsz, peer_async,
    (dst: sys::CUdeviceptr, dst_ctx: sys::CUcontext, src: sys::CUdeviceptr, src_ctx: sys::CUcontext, len: usize, stream: sys::CUstream));

fn side_of(
    memory_type: sys::CUmemorytype,
    host: *const c_void,
    device: sys::CUdeviceptr,
) -> CuResult<(usize, Side)> {
    match memory_type {
        sys::CU_MEMORYTYPE_HOST => Ok((host as usize, Side::Host)),
        sys::CU_MEMORYTYPE_DEVICE => Ok((device as usize, Side::Device)),
        sys::CU_MEMORYTYPE_UNIFIED => Ok((device as usize, Side::Host)),
        // CUDA arrays are not implemented: no array handle is valid.
        _ => Err(INVALID),
    }
}

unsafe fn copy_2d(
    p: *const sys::CUDA_MEMCPY2D,
    stream: sys::CUstream,
    asynchronous: bool,
    pt: bool,
) -> CuResult {
    context::current()?;
    // SAFETY: the caller's descriptor, if not NULL.
    let p = unsafe { p.as_ref() }.ok_or(INVALID)?;
    let (src, src_side) = side_of(p.srcMemoryType, p.srcHost, p.srcDevice)?;
    let (dst, dst_side) = side_of(p.dstMemoryType, p.dstHost, p.dstDevice)?;
    let (width, rows) = (p.WidthInBytes, p.Height);
    if width == 0 || rows == 0 {
        return Ok(());
    }
    // A 2-D copy is a 3-D one of a single slice.
    let from = Volume::new(src, p.srcXInBytes, p.srcY, 0, p.srcPitch, rows)?;
    let to = Volume::new(dst, p.dstXInBytes, p.dstY, 0, p.dstPitch, rows)?;
    let region = Region {
        width,
        rows,
        depth: 1,
    };
    copy_volumes(
        (from, src_side),
        (to, dst_side),
        region,
        stream,
        asynchronous,
        pt,
    )
}

unsafe fn memcpy_2d(p: *const sys::CUDA_MEMCPY2D, pt: bool) -> CuResult {
    // SAFETY: the caller's descriptor.
    unsafe { copy_2d(p, std::ptr::null_mut(), false, pt) }
}
both_flavours!(cuMemcpy2D_v2, cuMemcpy2D_v2_ptds, memcpy_2d, (p: *const sys::CUDA_MEMCPY2D));
both_flavours!(cuMemcpy2DUnaligned_v2, cuMemcpy2DUnaligned_v2_ptds, memcpy_2d, (p: *const sys::CUDA_MEMCPY2D));

unsafe fn memcpy_2d_async(
    p: *const sys::CUDA_MEMCPY2D,
    stream: sys::CUstream,
    pt: bool,
) -> CuResult {
    // SAFETY: the caller's descriptor.
    unsafe { copy_2d(p, stream, true, pt) }
}
both_flavours!(cuMemcpy2DAsync_v2, cuMemcpy2DAsync_v2_ptsz, memcpy_2d_async, (p: *const sys::CUDA_MEMCPY2D, stream: sys::CUstream));

/// One side of a 2-D or 3-D copy or memset: rows `pitch` apart and slices `slice_rows * pitch`
/// apart, from `addr`.
#[derive(Clone, Copy)]
struct Volume {
    addr: usize,
    pitch: usize,
    slice_rows: usize,
}

impl Volume {
    fn new(
        base: usize,
        x: usize,
        y: usize,
        z: usize,
        pitch: usize,
        slice_rows: usize,
    ) -> CuResult<Volume> {
        let row = z
            .checked_mul(slice_rows)
            .and_then(|r| r.checked_add(y))
            .ok_or(INVALID)?;
        let addr = row
            .checked_mul(pitch)
            .and_then(|o| o.checked_add(x))
            .and_then(|o| base.checked_add(o))
            .ok_or(INVALID)?;
        Ok(Volume {
            addr,
            pitch,
            slice_rows,
        })
    }

    /// Bytes from the first byte to the last of `width x rows x depth`.
    fn extent(&self, width: usize, rows: usize, depth: usize) -> CuResult<usize> {
        if (rows > 1 || depth > 1) && self.pitch < width || depth > 1 && self.slice_rows < rows {
            return Err(INVALID);
        }
        let last_row = (depth - 1)
            .checked_mul(self.slice_rows)
            .and_then(|r| r.checked_add(rows - 1))
            .ok_or(INVALID)?;
        last_row
            .checked_mul(self.pitch)
            .and_then(|b| b.checked_add(width))
            .ok_or(INVALID)
    }

    fn row(&self, slice: usize, row: usize) -> usize {
        (slice * self.slice_rows + row) * self.pitch
    }
}

unsafe fn copy_3d(
    p: *const sys::CUDA_MEMCPY3D,
    stream: sys::CUstream,
    asynchronous: bool,
    pt: bool,
) -> CuResult {
    context::current()?;
    // SAFETY: the caller's descriptor, if not NULL.
    let p = unsafe { p.as_ref() }.ok_or(INVALID)?;
    if p.srcLOD != 0 || p.dstLOD != 0 {
        return Err(INVALID);
    }
    let (src, src_side) = side_of(p.srcMemoryType, p.srcHost, p.srcDevice)?;
    let (dst, dst_side) = side_of(p.dstMemoryType, p.dstHost, p.dstDevice)?;
    let (width, rows, depth) = (p.WidthInBytes, p.Height, p.Depth);
    if width == 0 || rows == 0 || depth == 0 {
        return Ok(());
    }
    let from = Volume::new(src, p.srcXInBytes, p.srcY, p.srcZ, p.srcPitch, p.srcHeight)?;
    let to = Volume::new(dst, p.dstXInBytes, p.dstY, p.dstZ, p.dstPitch, p.dstHeight)?;
    let region = Region { width, rows, depth };
    copy_volumes(
        (from, src_side),
        (to, dst_side),
        region,
        stream,
        asynchronous,
        pt,
    )
}

/// What a 2-D or 3-D operation covers: `depth` slices of `rows` rows of `width` bytes.
#[derive(Clone, Copy)]
struct Region {
    width: usize,
    rows: usize,
    depth: usize,
}

/// Copies `region` from one volume to the other, both checked first.
fn copy_volumes(
    (from, src_side): (Volume, Side),
    (to, dst_side): (Volume, Side),
    region: Region,
    stream: sys::CUstream,
    asynchronous: bool,
    pt: bool,
) -> CuResult {
    let Region { width, rows, depth } = region;
    let (s, d) = {
        let space = space();
        (
            space.span(src_side, from.addr, from.extent(width, rows, depth)?)?,
            space.span(dst_side, to.addr, to.extent(width, rows, depth)?)?,
        )
    };
    submit(stream, pt, asynchronous, move || {
        for slice in 0..depth {
            for row in 0..rows {
                let a = Span {
                    addr: s.addr + from.row(slice, row),
                    _keep: Keep::None,
                };
                let b = Span {
                    addr: d.addr + to.row(slice, row),
                    _keep: Keep::None,
                };
                // SAFETY: within the extents checked above, kept alive by `s` and `d`.
                unsafe { copy_bytes(&b, &a, width) };
            }
        }
    })
}

unsafe fn memcpy_3d(p: *const sys::CUDA_MEMCPY3D, pt: bool) -> CuResult {
    // SAFETY: the caller's descriptor.
    unsafe { copy_3d(p, std::ptr::null_mut(), false, pt) }
}
both_flavours!(cuMemcpy3D_v2, cuMemcpy3D_v2_ptds, memcpy_3d, (p: *const sys::CUDA_MEMCPY3D));

unsafe fn memcpy_3d_async(
    p: *const sys::CUDA_MEMCPY3D,
    stream: sys::CUstream,
    pt: bool,
) -> CuResult {
    // SAFETY: the caller's descriptor.
    unsafe { copy_3d(p, stream, true, pt) }
}
both_flavours!(cuMemcpy3DAsync_v2, cuMemcpy3DAsync_v2_ptsz, memcpy_3d_async, (p: *const sys::CUDA_MEMCPY3D, stream: sys::CUstream));

/// Fills `rows` rows of `count` elements, `pitch` bytes apart, from `dst`.
fn memset(
    dst: sys::CUdeviceptr,
    fill: Fill,
    (pitch, count, rows): (usize, usize, usize),
    stream: sys::CUstream,
    asynchronous: bool,
    pt: bool,
) -> CuResult {
    context::current()?;
    let addr = dst as usize;
    if count == 0 || rows == 0 {
        return Ok(());
    }
    if !addr.is_multiple_of(fill.width) || !pitch.is_multiple_of(fill.width) {
        return Err(INVALID);
    }
    let width = count.checked_mul(fill.width).ok_or(INVALID)?;
    let at = Volume {
        addr,
        pitch,
        slice_rows: rows,
    };
    let span = space().span(Side::Device, addr, at.extent(width, rows, 1)?)?;
    submit(stream, pt, asynchronous, move || {
        for row in 0..rows {
            let here = Span {
                addr: span.addr + at.row(0, row),
                _keep: Keep::None,
            };
            // SAFETY: within the extent checked above, aligned as checked, kept by `span`.
            unsafe { fill.apply(&here, count) };
        }
    })
}

macro_rules! memset_fns {
    ($module:ident, $width:expr, $ty:ty,
     $d:ident, $d_pt:ident, $d_async:ident, $d_async_pt:ident,
     $d2:ident, $d2_pt:ident, $d2_async:ident, $d2_async_pt:ident) => {
        mod $module {
            use super::*;
            unsafe fn one(dst: sys::CUdeviceptr, value: $ty, count: usize, pt: bool) -> CuResult {
                let rows = (0, count, 1);
                memset(dst, Fill { value: value as u32, width: $width }, rows, std::ptr::null_mut(), false, pt)
            }
            both_flavours!($d, $d_pt, one, (dst: sys::CUdeviceptr, value: $ty, count: usize));
            unsafe fn one_async(dst: sys::CUdeviceptr, value: $ty, count: usize, stream: sys::CUstream, pt: bool) -> CuResult {
                let rows = (0, count, 1);
                memset(dst, Fill { value: value as u32, width: $width }, rows, stream, true, pt)
            }
            both_flavours!($d_async, $d_async_pt, one_async, (dst: sys::CUdeviceptr, value: $ty, count: usize, stream: sys::CUstream));
            unsafe fn two(dst: sys::CUdeviceptr, pitch: usize, value: $ty, width: usize, height: usize, pt: bool) -> CuResult {
                let rows = (pitch, width, height);
                memset(dst, Fill { value: value as u32, width: $width }, rows, std::ptr::null_mut(), false, pt)
            }
            both_flavours!($d2, $d2_pt, two, (dst: sys::CUdeviceptr, pitch: usize, value: $ty, width: usize, height: usize));
            unsafe fn two_async(dst: sys::CUdeviceptr, pitch: usize, value: $ty, width: usize, height: usize, stream: sys::CUstream, pt: bool) -> CuResult {
                let rows = (pitch, width, height);
                memset(dst, Fill { value: value as u32, width: $width }, rows, stream, true, pt)
            }
            both_flavours!($d2_async, $d2_async_pt, two_async, (dst: sys::CUdeviceptr, pitch: usize, value: $ty, width: usize, height: usize, stream: sys::CUstream));
        }
        pub use $module::*;
    };
}

memset_fns!(
    memset_8,
    1,
    u8,
    cuMemsetD8_v2,
    cuMemsetD8_v2_ptds,
    cuMemsetD8Async,
    cuMemsetD8Async_ptsz,
    cuMemsetD2D8_v2,
    cuMemsetD2D8_v2_ptds,
    cuMemsetD2D8Async,
    cuMemsetD2D8Async_ptsz
);
memset_fns!(
    memset_16,
    2,
    u16,
    cuMemsetD16_v2,
    cuMemsetD16_v2_ptds,
    cuMemsetD16Async,
    cuMemsetD16Async_ptsz,
    cuMemsetD2D16_v2,
    cuMemsetD2D16_v2_ptds,
    cuMemsetD2D16Async,
    cuMemsetD2D16Async_ptsz
);
memset_fns!(
    memset_32,
    4,
    c_uint,
    cuMemsetD32_v2,
    cuMemsetD32_v2_ptds,
    cuMemsetD32Async,
    cuMemsetD32Async_ptsz,
    cuMemsetD2D32_v2,
    cuMemsetD2D32_v2_ptds,
    cuMemsetD2D32Async,
    cuMemsetD2D32Async_ptsz
);

/// `cuStreamWriteValue32/64`: a write of `width` bytes to device memory in stream order.
fn write_value(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u64,
    width: usize,
    flags: c_uint,
    pt: bool,
) -> CuResult {
    context::current()?;
    if flags & !sys::CU_STREAM_WRITE_VALUE_NO_MEMORY_BARRIER != 0
        || !(addr as usize).is_multiple_of(width)
    {
        return Err(INVALID);
    }
    let span = space().span(Side::Device, addr as usize, width)?;
    submit(stream, pt, true, move || {
        // SAFETY: `width` bytes at an address aligned to them, checked above, kept alive by
        // `span`.
        unsafe {
            if width == 4 {
                (span.addr as *mut u32).write_volatile(value as u32)
            } else {
                (span.addr as *mut u64).write_volatile(value)
            }
        }
    })
}

unsafe fn write_value_32(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u32,
    flags: c_uint,
    pt: bool,
) -> CuResult {
    write_value(stream, addr, value.into(), 4, flags, pt)
}
both_flavours!(cuStreamWriteValue32, cuStreamWriteValue32_ptsz, write_value_32,
    (stream: sys::CUstream, addr: sys::CUdeviceptr, value: u32, flags: c_uint));
both_flavours!(cuStreamWriteValue32_v2, cuStreamWriteValue32_v2_ptsz, write_value_32,
    (stream: sys::CUstream, addr: sys::CUdeviceptr, value: u32, flags: c_uint));

unsafe fn write_value_64(
    stream: sys::CUstream,
    addr: sys::CUdeviceptr,
    value: u64,
    flags: c_uint,
    pt: bool,
) -> CuResult {
    write_value(stream, addr, value, 8, flags, pt)
}
both_flavours!(cuStreamWriteValue64, cuStreamWriteValue64_ptsz, write_value_64,
    (stream: sys::CUstream, addr: sys::CUdeviceptr, value: u64, flags: c_uint));
both_flavours!(cuStreamWriteValue64_v2, cuStreamWriteValue64_v2_ptsz, write_value_64,
    (stream: sys::CUstream, addr: sys::CUdeviceptr, value: u64, flags: c_uint));

// --- pointer attributes ----------------------------------------------------------------------

/// An attribute's value, written as NVIDIA's driver writes it (measured: 8 bytes for
/// pointers, handles, ids and sizes; 4 for types, flags, ordinals and booleans; 12 for the
/// P2P tokens).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Wide(u64),
    Narrow(u32),
    Tokens { p2p: u64, va_space: u32 },
}

impl Value {
    fn flag(b: bool) -> Value {
        Value::Narrow(u32::from(b))
    }

    /// # Safety
    ///
    /// `out` is NULL or writable for this value's width.
    unsafe fn write(self, out: *mut c_void) -> CuResult {
        // SAFETY: per this function's contract.
        unsafe {
            match self {
                Value::Wide(v) => put(out.cast::<u64>(), v),
                Value::Narrow(v) => put(out.cast::<u32>(), v),
                Value::Tokens { p2p, va_space } => {
                    put(out.cast::<u64>(), p2p)?;
                    put(out.cast::<u8>().add(8).cast::<u32>(), va_space)
                }
            }
        }
    }
}

/// What a refused attribute still writes (measured: zeros of its width).
fn refused_zero(attribute: sys::CUpointer_attribute) -> Option<Value> {
    match attribute {
        sys::CU_POINTER_ATTRIBUTE_HOST_POINTER => Some(Value::Wide(0)),
        sys::CU_POINTER_ATTRIBUTE_P2P_TOKENS => Some(Value::Tokens {
            p2p: 0,
            va_space: 0,
        }),
        _ => None,
    }
}

/// `attribute` of the memory `r` at `addr`.
fn value_of(r: &Range, addr: usize, attribute: sys::CUpointer_attribute) -> CuResult<Value> {
    use Value::*;
    let on_device = matches!(
        r.kind,
        Kind::Device | Kind::Managed | Kind::Pool | Kind::Mapped
    );
    let (mapping_base, mapping_len) = match &r.backing {
        Backing::Chunk { chunk, .. } => (chunk.start(), chunk.len),
        Backing::Host(block) => (
            block.base.as_ptr() as usize,
            block.len.next_multiple_of(CHUNK),
        ),
        Backing::Registered | Backing::View(_) => (r.start, r.size),
    };
    Ok(match attribute {
        // Pool memory belongs to no context (measured: NULL).
        sys::CU_POINTER_ATTRIBUTE_CONTEXT => Wide(if r.kind == Kind::Pool {
            0
        } else {
            r.ctx as u64
        }),
        sys::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => Narrow(if on_device {
            sys::CU_MEMORYTYPE_DEVICE
        } else {
            sys::CU_MEMORYTYPE_HOST
        }),
        sys::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => Wide(addr as u64),
        sys::CU_POINTER_ATTRIBUTE_HOST_POINTER => match r.kind {
            Kind::Device | Kind::Pool | Kind::Mapped => return Err(INVALID),
            _ => Wide(addr as u64),
        },
        sys::CU_POINTER_ATTRIBUTE_P2P_TOKENS if on_device => Tokens {
            p2p: 0,
            va_space: VA_SPACE_TOKEN,
        },
        sys::CU_POINTER_ATTRIBUTE_P2P_TOKENS => return Err(INVALID),
        sys::CU_POINTER_ATTRIBUTE_SYNC_MEMOPS => Value::flag(on_device),
        sys::CU_POINTER_ATTRIBUTE_BUFFER_ID => Wide(r.buffer_id),
        sys::CU_POINTER_ATTRIBUTE_IS_MANAGED => Value::flag(r.kind == Kind::Managed),
        sys::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => Narrow(r.device as u32),
        sys::CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE => Value::flag(r.kind == Kind::Device),
        sys::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => Wide(r.start as u64),
        sys::CU_POINTER_ATTRIBUTE_RANGE_SIZE => Wide(r.size as u64),
        sys::CU_POINTER_ATTRIBUTE_MAPPED => Value::flag(true),
        sys::CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES => Wide(0),
        // GeForce cards do not do GPUDirect RDMA (as attribute 116 says).
        sys::CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE => Narrow(0),
        sys::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS => {
            Narrow(sys::CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE)
        }
        sys::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE => Wide(r.pool as u64),
        // The mapping the memory lies in: its chunk (measured: 2 MiB for a 1 MiB allocation).
        sys::CU_POINTER_ATTRIBUTE_MAPPING_SIZE => Wide(mapping_len as u64),
        sys::CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR => Wide(mapping_base as u64),
        sys::CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID => Wide(mapping_base as u64 >> 21),
        sys::CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE => Value::flag(r.kind == Kind::Device),
        _ => return Err(INVALID),
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(
    data: *mut c_void,
    attribute: sys::CUpointer_attribute,
    ptr: sys::CUdeviceptr,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let value = {
            let space = space();
            let found = space.find(ptr as usize).ok_or(INVALID)?;
            value_of(found, ptr as usize, attribute)
        };
        match value {
            // SAFETY: `data` is writable for the attribute's type, as the API requires.
            Ok(v) => unsafe { v.write(data) },
            Err(code) => {
                if let Some(zero) = refused_zero(attribute) {
                    // SAFETY: as above.
                    unsafe { zero.write(data) }?;
                }
                Err(code)
            }
        }
    })();
    status(result)
}

/// `attribute` for `cuPointerGetAttributes` of memory the driver did not give (measured: it
/// reads as unregistered host memory; the range attributes are left unwritten).
fn unknown_memory_value(
    ptr: usize,
    attribute: sys::CUpointer_attribute,
) -> CuResult<Option<Value>> {
    use Value::*;
    Ok(Some(match attribute {
        sys::CU_POINTER_ATTRIBUTE_HOST_POINTER => Wide(ptr as u64),
        sys::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => Narrow(-2i32 as u32),
        sys::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR | sys::CU_POINTER_ATTRIBUTE_RANGE_SIZE => {
            return Ok(None)
        }
        sys::CU_POINTER_ATTRIBUTE_CONTEXT
        | sys::CU_POINTER_ATTRIBUTE_DEVICE_POINTER
        | sys::CU_POINTER_ATTRIBUTE_BUFFER_ID
        | sys::CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES
        | sys::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE
        | sys::CU_POINTER_ATTRIBUTE_MAPPING_SIZE
        | sys::CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR
        | sys::CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID => Wide(0),
        sys::CU_POINTER_ATTRIBUTE_MEMORY_TYPE
        | sys::CU_POINTER_ATTRIBUTE_SYNC_MEMOPS
        | sys::CU_POINTER_ATTRIBUTE_IS_MANAGED
        | sys::CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE
        | sys::CU_POINTER_ATTRIBUTE_MAPPED
        | sys::CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE
        | sys::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS
        | sys::CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE => Narrow(0),
        _ => return Err(INVALID),
    }))
}

/// Several attributes at once. Measured on driver 580: it never fails for a pointer the
/// driver did not give (the attributes read as unregistered host memory's), an attribute a
/// pointer lacks reads as zero, and asking for the P2P tokens fails the whole call, after the
/// attributes before it were written.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttributes(
    count: c_uint,
    attributes: *const sys::CUpointer_attribute,
    data: *mut *mut c_void,
    ptr: sys::CUdeviceptr,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if count == 0 || attributes.is_null() || data.is_null() {
            return Err(INVALID);
        }
        let count = count as usize;
        // SAFETY: the caller's arrays of `count` entries.
        let (attributes, data) = unsafe {
            (
                std::slice::from_raw_parts(attributes, count),
                std::slice::from_raw_parts(data, count),
            )
        };
        let space = space();
        let found = space.find(ptr as usize);
        for (attribute, out) in attributes.iter().zip(data) {
            if *attribute == sys::CU_POINTER_ATTRIBUTE_P2P_TOKENS {
                return Err(INVALID);
            }
            let value = match found {
                Some(r) => match value_of(r, ptr as usize, *attribute) {
                    Ok(v) => Some(v),
                    Err(_) if *attribute == sys::CU_POINTER_ATTRIBUTE_HOST_POINTER => {
                        Some(Value::Wide(0))
                    }
                    Err(code) => return Err(code),
                },
                None => unknown_memory_value(ptr as usize, *attribute)?,
            };
            if let Some(value) = value {
                // SAFETY: each slot is writable for its attribute's type, as the API requires.
                unsafe { value.write(*out) }?;
            }
        }
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuPointerSetAttribute(
    value: *const c_void,
    attribute: sys::CUpointer_attribute,
    ptr: sys::CUdeviceptr,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if value.is_null() || attribute != sys::CU_POINTER_ATTRIBUTE_SYNC_MEMOPS {
            return Err(INVALID);
        }
        // Memory operations here are always synchronous where they claim to be: nothing to set.
        space()
            .find(ptr as usize)
            .filter(|r| r.kind == Kind::Device)
            .map(drop)
            .ok_or(INVALID)
    })();
    status(result)
}

// --- the stream-ordered allocator ------------------------------------------------------------

pub fn default_pool(device: sys::CUdevice) -> CuResult<usize> {
    driver::card(device)?;
    Ok(space().default_pool(device))
}

pub fn current_pool(device: sys::CUdevice) -> CuResult<usize> {
    driver::card(device)?;
    let mut space = space();
    if let Some((_, p)) = space.current_pools.iter().find(|(d, _)| *d == device) {
        return Ok(*p);
    }
    Ok(space.default_pool(device))
}

pub fn set_current_pool(device: sys::CUdevice, pool: usize) -> CuResult {
    let mut space = space();
    if !space
        .pools
        .iter()
        .any(|p| p.handle == pool && p.device == device)
    {
        return Err(INVALID);
    }
    space.current_pools.retain(|(d, _)| *d != device);
    space.current_pools.push((device, pool));
    Ok(())
}

fn alloc_async(
    out: *mut sys::CUdeviceptr,
    size: usize,
    pool: Option<usize>,
    stream: sys::CUstream,
    pt: bool,
) -> CuResult {
    let ctx = context::current()?;
    // The stream must be valid; the memory is usable at once (and so in stream order too).
    stream::resolve(stream, pt)?;
    if out.is_null() {
        return Err(INVALID);
    }
    // Measured: a 0-byte request succeeds with NULL.
    let start = if size == 0 {
        0
    } else {
        let pool = match pool {
            Some(p) => p,
            None => current_pool(ctx.device)?,
        };
        if space().pool_mut(pool)?.device != ctx.device {
            return Err(INVALID);
        }
        alloc_shared(
            &ctx,
            size,
            Shared {
                kind: Kind::Pool,
                pool,
            },
        )?
    };
    // SAFETY: an out-pointer from the caller, checked non-NULL.
    unsafe { put(out, start as sys::CUdeviceptr) }
}

unsafe fn mem_alloc_async(
    out: *mut sys::CUdeviceptr,
    size: usize,
    stream: sys::CUstream,
    pt: bool,
) -> CuResult {
    alloc_async(out, size, None, stream, pt)
}
both_flavours!(cuMemAllocAsync, cuMemAllocAsync_ptsz, mem_alloc_async,
    (out: *mut sys::CUdeviceptr, size: usize, stream: sys::CUstream));

unsafe fn mem_alloc_from_pool_async(
    out: *mut sys::CUdeviceptr,
    size: usize,
    pool: sys::CUmemoryPool,
    stream: sys::CUstream,
    pt: bool,
) -> CuResult {
    alloc_async(out, size, Some(pool as usize), stream, pt)
}
both_flavours!(cuMemAllocFromPoolAsync, cuMemAllocFromPoolAsync_ptsz, mem_alloc_from_pool_async,
    (out: *mut sys::CUdeviceptr, size: usize, pool: sys::CUmemoryPool, stream: sys::CUstream));

/// Frees in stream order: refused at once if the pointer is not one to free, done when the
/// stream reaches it (work queued before it still has the memory). Any device allocation
/// may be freed so (measured).
unsafe fn mem_free_async(ptr: sys::CUdeviceptr, stream: sys::CUstream, pt: bool) -> CuResult {
    context::current()?;
    let s = stream::resolve(stream, pt)?;
    let kinds = [Kind::Pool, Kind::Device, Kind::Managed];
    {
        let mut space = space();
        space.check_free(ptr as usize, &kinds)?;
        if let Some(r) = space.ranges.get_mut(&(ptr as usize)) {
            r.freeing = true;
        }
    }
    stream::enqueue(&s, move || {
        let taken = space().take(ptr as usize, &kinds, true);
        if let Ok(taken) = taken {
            release(taken);
        }
    });
    Ok(())
}
both_flavours!(cuMemFreeAsync, cuMemFreeAsync_ptsz, mem_free_async,
    (ptr: sys::CUdeviceptr, stream: sys::CUstream));

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolCreate(
    out: *mut sys::CUmemoryPool,
    props: *const sys::CUmemPoolProps,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        // SAFETY: the caller's properties, if not NULL.
        let props = unsafe { props.as_ref() }.ok_or(INVALID)?;
        if out.is_null()
            || props.allocType != sys::CU_MEM_ALLOCATION_TYPE_PINNED
            || props.location.type_ != sys::CU_MEM_LOCATION_TYPE_DEVICE
            || props.handleTypes != sys::CU_MEM_HANDLE_TYPE_NONE
        {
            return Err(INVALID);
        }
        let device = props.location.id;
        driver::card(device).map_err(|_| INVALID)?;
        let handle = {
            let mut space = space();
            // The card's default pool is its first.
            space.default_pool(device);
            space.new_pool(device)
        };
        // SAFETY: an out-pointer from the caller, checked non-NULL.
        unsafe { put(out, handle as sys::CUmemoryPool) }
    })();
    status(result)
}

/// A pool's destruction: its allocations stay valid until freed (as the driver documents);
/// its idle blocks go back now, the rest as they empty.
#[no_mangle]
pub extern "C" fn cuMemPoolDestroy(pool: sys::CUmemoryPool) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let handle = pool as usize;
        let released = {
            let mut space = space();
            let device = space.pool_mut(handle)?.device;
            // A card's default pool is not the program's to destroy.
            if space
                .pools
                .iter()
                .find(|p| p.device == device)
                .map(|p| p.handle)
                == Some(handle)
            {
                return Err(INVALID);
            }
            space.pool_mut(handle)?.release_threshold = 0;
            space.current_pools.retain(|(_, p)| *p != handle);
            let idle: Vec<usize> = space
                .slabs
                .iter()
                .filter(|(_, s)| s.pool == handle && s.used == 0)
                .map(|(b, _)| *b)
                .collect();
            let mut released = Vec::new();
            for base in idle {
                space.reserved.remove(&base);
                if let Some(slab) = space.slabs.remove(&base) {
                    released.push(slab.chunk);
                }
            }
            if !space.slabs.values().any(|s| s.pool == handle) {
                space.pools.retain(|p| p.handle != handle);
            }
            released
        };
        drop(released);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolTrimTo(pool: sys::CUmemoryPool, keep: usize) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let handle = pool as usize;
        let released = {
            let mut space = space();
            space.pool_mut(handle)?;
            let idle: Vec<usize> = space
                .slabs
                .iter()
                .filter(|(_, s)| s.pool == handle && s.used == 0)
                .map(|(b, _)| *b)
                .collect();
            let mut released = Vec::new();
            for base in idle {
                if space.pool_mut(handle)?.reserved <= keep as u64 {
                    break;
                }
                if let Some(slab) = space.slabs.remove(&base) {
                    space.reserved.remove(&base);
                    let p = space.pool_mut(handle)?;
                    p.reserved = p.reserved.saturating_sub(slab.chunk.len as u64);
                    released.push(slab.chunk);
                }
            }
            released
        };
        drop(released);
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAttribute(
    pool: sys::CUmemoryPool,
    attribute: sys::CUmemPool_attribute,
    out: *mut c_void,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        let mut space = space();
        let p = space.pool_mut(pool as usize)?;
        // SAFETY: `out` is writable for the attribute's documented type.
        unsafe {
            match attribute {
                sys::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => put(out.cast(), p.reuse[0]),
                sys::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => put(out.cast(), p.reuse[1]),
                sys::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
                    put(out.cast(), p.reuse[2])
                }
                sys::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => put(out.cast(), p.release_threshold),
                sys::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT => put(out.cast(), p.reserved),
                sys::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH => put(out.cast(), p.reserved_high),
                sys::CU_MEMPOOL_ATTR_USED_MEM_CURRENT => put(out.cast(), p.used),
                sys::CU_MEMPOOL_ATTR_USED_MEM_HIGH => put(out.cast(), p.used_high),
                _ => Err(INVALID),
            }
        }
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAttribute(
    pool: sys::CUmemoryPool,
    attribute: sys::CUmemPool_attribute,
    value: *mut c_void,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        if value.is_null() {
            return Err(INVALID);
        }
        let mut space = space();
        let p = space.pool_mut(pool as usize)?;
        // SAFETY: `value` is readable for the attribute's documented type.
        unsafe {
            let flag = || value.cast::<c_int>().read_unaligned();
            let number = || value.cast::<u64>().read_unaligned();
            match attribute {
                sys::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => p.reuse[0] = flag(),
                sys::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => p.reuse[1] = flag(),
                sys::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => p.reuse[2] = flag(),
                sys::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => p.release_threshold = number(),
                // The high-water marks may only be reset, to 0.
                sys::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH if number() == 0 => {
                    p.reserved_high = p.reserved
                }
                sys::CU_MEMPOOL_ATTR_USED_MEM_HIGH if number() == 0 => p.used_high = p.used,
                _ => return Err(INVALID),
            }
        }
        Ok(())
    })();
    status(result)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(
    out: *mut usize,
    prop: *const sys::CUmemAllocationProp,
    option: sys::CUmemAllocationGranularity_flags,
) -> sys::CUresult {
    let result = (|| {
        driver::cards()?;
        // SAFETY: the caller's description, if not NULL.
        let prop = unsafe { prop.as_ref() }.ok_or(INVALID)?;
        if prop.type_ != sys::CU_MEM_ALLOCATION_TYPE_PINNED
            || prop.location.type_ != sys::CU_MEM_LOCATION_TYPE_DEVICE
            || option > sys::CU_MEM_ALLOC_GRANULARITY_RECOMMENDED
        {
            return Err(INVALID);
        }
        driver::card(prop.location.id)?;
        // SAFETY: an out-pointer from the caller.
        unsafe { put(out, CHUNK) }
    })();
    status(result)
}

// --- for the virtual memory management calls (vmm.rs) ----------------------------------------

/// Marks `[start, start + len)` as device addresses (a `cuMemAddressReserve`), or unmarks it.
pub(crate) fn mark_device_addresses(start: usize, len: usize, reserved: bool) {
    let mut space = space();
    if reserved {
        space.reserved.insert(start, len);
    } else {
        space.reserved.remove(&start);
    }
}

/// Whether any range the program was given overlaps `[start, start + len)`.
pub(crate) fn overlaps_a_range(start: usize, len: usize) -> bool {
    let space = space();
    let end = start.saturating_add(len);
    space
        .ranges
        .range(..end)
        .next_back()
        .is_some_and(|(_, r)| r.start + r.size.max(1) > start)
}

/// A `cuMemMap`: `view` at device addresses `[start, start + len)` of `device`.
pub(crate) fn insert_mapping(
    start: usize,
    len: usize,
    device: sys::CUdevice,
    ctx: usize,
    view: Arc<crate::vmm::View>,
) {
    let mut space = space();
    let buffer_id = space.buffer_id();
    space.ranges.insert(
        start,
        Range {
            start,
            size: len,
            kind: Kind::Mapped,
            ctx,
            device,
            buffer_id,
            backing: Backing::View(view),
            units: None,
            pool: 0,
            host_flags: 0,
            freeing: false,
        },
    );
}

/// A `cuMemUnmap`: the mappings wholly inside `[start, start + len)`, taken out; `None` if
/// there are none or one lies across an end.
pub(crate) fn take_mappings(start: usize, len: usize) -> Option<Vec<Arc<crate::vmm::View>>> {
    let mut space = space();
    let end = start.checked_add(len)?;
    if space.find(start).is_some_and(|r| r.start != start)
        || space
            .find(end.checked_sub(1)?)
            .is_some_and(|r| r.start + r.size > end)
    {
        return None;
    }
    let starts: Vec<usize> = space
        .ranges
        .range(start..end)
        .filter(|(_, r)| r.kind == Kind::Mapped)
        .map(|(s, _)| *s)
        .collect();
    if starts.is_empty() {
        return None;
    }
    let views = starts
        .into_iter()
        .filter_map(|s| space.ranges.remove(&s))
        .filter_map(|r| match r.backing {
            Backing::View(v) => Some(v),
            _ => None,
        })
        .collect();
    Some(views)
}

/// The mapping at `addr`: its view, and the access flags last set on it.
pub(crate) fn mapping_at(addr: usize) -> Option<(Arc<crate::vmm::View>, c_uint)> {
    let space = space();
    let r = space.find(addr).filter(|r| r.kind == Kind::Mapped)?;
    match &r.backing {
        Backing::View(v) => Some((v.clone(), r.host_flags)),
        _ => None,
    }
}

/// `cuMemSetAccess` over `[start, start + len)`: every byte must be mapped.
pub(crate) fn set_access(start: usize, len: usize, flags: c_uint) -> CuResult {
    let mut space = space();
    let end = start.checked_add(len).ok_or(INVALID)?;
    let mut at = start;
    while at < end {
        let r = space
            .find(at)
            .filter(|r| r.kind == Kind::Mapped)
            .ok_or(INVALID)?;
        at = r.start + r.size;
    }
    for (_, r) in space.ranges.range_mut(..end) {
        if r.kind == Kind::Mapped && r.start + r.size > start {
            r.host_flags = flags;
        }
    }
    Ok(())
}

/// Device memory for a module's variable (`cuModuleGetGlobal`), in `ctx`.
pub(crate) fn alloc_variable(ctx: &Context, size: usize) -> CuResult<usize> {
    alloc_in(ctx, size.max(1), Kind::Device)
}

/// Writes a module variable's initial bytes at its start (`alloc_variable` gave it, as large).
pub(crate) fn fill_variable(start: usize, bytes: &[u8]) -> CuResult {
    let span = space().span(Side::Device, start, bytes.len())?;
    // SAFETY: `span` reaches `bytes.len()` bytes of the variable, checked by `span`.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), span.addr as *mut u8, bytes.len()) };
    Ok(())
}

/// Frees what `alloc_variable` gave (the module's unload).
pub(crate) fn free_variable(start: usize) {
    if let Ok(taken) = space().take(start, &[Kind::Device], false) {
        release(taken);
    }
}

/// A context going away: everything allocated in it is freed.
pub fn destroy_context(ctx: usize) {
    let released = {
        let mut space = space();
        let starts: Vec<usize> = space
            .ranges
            .values()
            .filter(|r| r.ctx == ctx && r.kind != Kind::Pool)
            .map(|r| r.start)
            .collect();
        let kinds = [Kind::Device, Kind::Managed, Kind::Host, Kind::Registered];
        let mut released: Vec<(Range, Vec<Arc<Chunk>>)> = Vec::new();
        for start in starts {
            if let Ok(taken) = space.take(start, &kinds, false) {
                released.push(taken);
            }
        }
        let slabs: Vec<usize> = space
            .slabs
            .iter()
            .filter(|(_, s)| s.ctx == ctx)
            .map(|(b, _)| *b)
            .collect();
        for base in slabs {
            space.slabs.remove(&base);
            space.reserved.remove(&base);
        }
        released
    };
    drop(released);
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: usize = CHUNK / UNIT;
    const WORDS: usize = UNITS / 64;

    fn slab() -> [u64; WORDS] {
        [0; WORDS]
    }

    fn find(bits: [u64; WORDS], used: usize, count: usize) -> Option<usize> {
        find_run(&bits, UNITS, used, count, 0)
    }

    #[test]
    fn first_fit() {
        let mut bits = slab();
        assert_eq!(find(bits, 0, 1), Some(0));
        bits[0] = 0b1;
        assert_eq!(find(bits, 1, 1), Some(1));
        bits[0] = 0b1011;
        assert_eq!(find(bits, 3, 1), Some(2));
        assert_eq!(find(bits, 3, 2), Some(4));
        bits[0] = u64::MAX;
        bits[1] = 1;
        assert_eq!(find(bits, 65, 64), Some(65));
        assert_eq!(find(bits, 65, UNITS - 65), Some(65));
        assert_eq!(find(bits, 65, UNITS - 64), None);
        assert_eq!(find([u64::MAX; WORDS], UNITS, 1), None);
        assert_eq!(find(slab(), 0, UNITS), Some(0));
        // A count of units that is not a multiple of 64 ends inside the last word.
        assert_eq!(find_run(&[0], 10, 0, 10, 0), Some(0));
        assert_eq!(find_run(&[0], 10, 0, 11, 0), None);
        assert_eq!(find_run(&[1 << 9], 10, 1, 9, 0), Some(0));
        // From a hint, inside a word.
        assert_eq!(find_run(&[0b111, 0], 128, 3, 2, 3), Some(3));
        assert_eq!(find_run(&[u64::MAX, 0b1], 128, 65, 1, 64), Some(65));
    }

    #[test]
    fn the_hint_follows_allocations_and_frees() {
        let mut bits = vec![0u64; 64];
        let mut first_free = 0;
        let mut used = 0;
        let take = |bits: &mut Vec<u64>, count: usize, first_free: &mut usize, used: &mut usize| {
            let at = find_run(bits, UNITS, *used, count, *first_free).unwrap();
            for u in at..at + count {
                bits[u / 64] |= 1 << (u % 64);
            }
            *used += count;
            if at == *first_free {
                *first_free = at + count;
            }
            at
        };
        assert_eq!(take(&mut bits, 1, &mut first_free, &mut used), 0);
        assert_eq!(take(&mut bits, 8, &mut first_free, &mut used), 1);
        assert_eq!(take(&mut bits, 128, &mut first_free, &mut used), 9);
        assert_eq!(first_free, 137);
    }
}
