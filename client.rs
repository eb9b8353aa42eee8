// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/emuv`: the allocations it holds, by handle, and who it belongs to.
//!
//! Accounting lives here, tied to the open file: closing it (or the process dying, even by
//! `SIGKILL` with mappings live) drops the client and returns everything it held. Nothing can go
//! stale the way a shared accounting file does.

use crate::{
    glue::{task::Process, vma::Mappable},
    uapi,
    vram_pool::{Allocation, Placement, Tier, VramPool},
};
use kernel::{
    new_mutex,
    page::{BorrowedPage, PAGE_SHIFT},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
};

/// Most handles one open file may hold at once; keeps `handle << MMAP_HANDLE_SHIFT` in range.
const MAX_HANDLES: usize = 1 << 20;

/// Offset in pages of the first page of `handle`'s mmap range.
fn first_pgoff(handle: u32) -> usize {
    (handle as usize) << (uapi::MMAP_HANDLE_SHIFT as usize - PAGE_SHIFT)
}

/// One allocation, shared by its open file's handle table and the mappings of it.
pub(crate) struct Buffer {
    pool: Arc<VramPool>,
    /// Always `Some` until dropped.
    allocation: Option<Allocation>,
    handle: u32,
    mappings: Atomic<u32>,
}

impl Buffer {
    fn allocation(&self) -> Result<&Allocation> {
        self.allocation.as_ref().ok_or(ENOENT)
    }

    pub(crate) fn mmap_offset(&self) -> u64 {
        u64::from(self.handle) << uapi::MMAP_HANDLE_SHIFT
    }

    pub(crate) fn pages(&self) -> usize {
        self.allocation()
            .map_or(0, |a| (a.size() >> PAGE_SHIFT) as usize)
    }

    /// Gives back the count taken by [`Client::buffer_for_mapping`] when no mapping was made.
    pub(crate) fn mappings_undo(&self) {
        self.unmapped();
    }

    pub(crate) fn mappings(&self) -> u32 {
        self.mappings.load(Relaxed)
    }

    /// The tier it was placed in.
    pub(crate) fn tier(&self) -> Tier {
        self.allocation().map_or(Tier::Physical, Allocation::tier)
    }

    /// Fills a `struct emuv_query` for this buffer.
    pub(crate) fn query(&self, out: &mut uapi::Query) -> Result {
        let allocation = self.allocation()?;
        out.bytes = allocation.size();
        out.resident = self.pool.resident_of(allocation);
        out.mmap_offset = self.mmap_offset();
        out.tier = tier_to_uapi(allocation.tier());
        out.mappings = self.mappings();
        Ok(())
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(allocation) = self.allocation.take() {
            self.pool.free(allocation);
        }
    }
}

impl Mappable for Buffer {
    fn page(&self, pgoff: usize) -> Result<BorrowedPage<'_>> {
        let index = pgoff.checked_sub(first_pgoff(self.handle)).ok_or(EINVAL)?;
        self.pool.page(self.allocation()?, index)
    }

    fn mapped(&self) {
        self.mappings.fetch_add(1, Relaxed);
    }

    fn unmapped(&self) {
        self.mappings.fetch_sub(1, Relaxed);
    }
}

pub(crate) fn tier_to_uapi(tier: Tier) -> u32 {
    match tier {
        Tier::Physical => uapi::TIER_PHYSICAL,
        Tier::Virtual => uapi::TIER_VIRTUAL,
    }
}

/// `EMUV_TIER_*` to a placement, or `EINVAL`.
pub(crate) fn placement_from_uapi(tier: u32) -> Result<Placement> {
    match tier {
        uapi::TIER_ANY => Ok(Placement::Any),
        uapi::TIER_PHYSICAL => Ok(Placement::Only(Tier::Physical)),
        uapi::TIER_VIRTUAL => Ok(Placement::Only(Tier::Virtual)),
        _ => Err(EINVAL),
    }
}

#[derive(Default)]
struct Holdings {
    /// `buffers[handle - 1]`.
    buffers: KVec<Option<Arc<Buffer>>>,
    bytes: u64,
    count: u64,
}

/// What one open file holds, and whose it is.
#[pin_data]
pub(crate) struct Client {
    pub(crate) process: Process,
    #[pin]
    holdings: Mutex<Holdings>,
}

/// Bytes and allocations a client holds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) allocations: u64,
}

impl Client {
    /// A client for the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let process = Process::current().ok_or(ESRCH)?;
        Arc::pin_init(
            pin_init!(Self {
                process,
                holdings <- new_mutex!(Holdings::default()),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn usage(&self) -> Usage {
        let holdings = self.holdings.lock();
        Usage {
            bytes: holdings.bytes,
            allocations: holdings.count,
        }
    }

    /// Allocates `bytes` from `pool` for this file, unless that would take it past `limit`
    /// bytes (0: no limit). Returns the new buffer.
    pub(crate) fn allocate(
        &self,
        pool: &Arc<VramPool>,
        bytes: u64,
        placement: Placement,
        limit: u64,
    ) -> Result<Arc<Buffer>> {
        let mut holdings = self.holdings.lock();
        let slot = match holdings.buffers.iter().position(Option::is_none) {
            Some(free) => free,
            None if holdings.buffers.len() < MAX_HANDLES => {
                holdings.buffers.push(None, GFP_KERNEL)?;
                holdings.buffers.len() - 1
            }
            None => return Err(ENOSPC),
        };
        let rounded = bytes
            .checked_next_multiple_of(1 << PAGE_SHIFT)
            .ok_or(EINVAL)?;
        if limit != 0 && holdings.bytes.saturating_add(rounded) > limit {
            return Err(ENOMEM);
        }
        let allocation = pool.allocate(bytes, placement)?;
        let size = allocation.size();
        let buffer = Arc::new(
            Buffer {
                pool: pool.clone(),
                allocation: Some(allocation),
                handle: slot as u32 + 1,
                mappings: Atomic::new(0),
            },
            GFP_KERNEL,
        )?;
        holdings.buffers[slot] = Some(buffer.clone());
        holdings.bytes += size;
        holdings.count += 1;
        Ok(buffer)
    }

    fn slot(holdings: &mut Holdings, handle: u32) -> Result<&mut Option<Arc<Buffer>>> {
        let index = (handle as usize).checked_sub(1).ok_or(ENOENT)?;
        match holdings.buffers.get_mut(index) {
            Some(slot) if slot.is_some() => Ok(slot),
            _ => Err(ENOENT),
        }
    }

    /// The buffer `handle` names in this file, or `ENOENT`.
    pub(crate) fn buffer(&self, handle: u32) -> Result<Arc<Buffer>> {
        let mut holdings = self.holdings.lock();
        Self::slot(&mut holdings, handle)?.clone().ok_or(ENOENT)
    }

    /// The buffer `handle` names, counted as mapped once more, so it cannot be freed before
    /// the mapping is set up (or the count given back).
    pub(crate) fn buffer_for_mapping(&self, handle: u32) -> Result<Arc<Buffer>> {
        let mut holdings = self.holdings.lock();
        let buffer = Self::slot(&mut holdings, handle)?.clone().ok_or(ENOENT)?;
        buffer.mapped();
        Ok(buffer)
    }

    /// Frees `handle`: `ENOENT` if this file has no such handle, `EBUSY` while it is mapped.
    pub(crate) fn free(&self, handle: u32) -> Result<u64> {
        let mut holdings = self.holdings.lock();
        let slot = Self::slot(&mut holdings, handle)?;
        if slot.as_ref().is_some_and(|b| b.mappings() > 0) {
            return Err(EBUSY);
        }
        let buffer = slot.take().ok_or(ENOENT)?;
        let bytes = buffer.allocation().map_or(0, Allocation::size);
        holdings.bytes -= bytes;
        holdings.count -= 1;
        // Shrink the table past trailing free slots so it does not only grow.
        while holdings.buffers.last().is_some_and(Option::is_none) {
            holdings.buffers.pop();
        }
        drop(holdings);
        // Returned to the pool here, outside the lock (or by the last mapping, if one raced).
        drop(buffer);
        Ok(bytes)
    }
}
