// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/emuv`: the allocations it holds, by handle, and who it belongs to.
//!
//! Accounting lives here, tied to the open file: closing it (or the process dying, even by
//! `SIGKILL` with mappings live) drops the client and returns everything it held. Nothing can go
//! stale the way a shared accounting file does. Every byte of kernel memory an allocation costs
//! (its `Buffer`, its node in the handle tree, the lazy page tables) is charged to the caller's
//! memory cgroup, and three limits bound what one caller can make the kernel hold: bytes per
//! file, allocations per file, and bytes per user across all of the user's files.

use crate::{
    gate::AccessGate,
    glue::{
        dmem::{DmemCharge, DmemRegion},
        mem::{BorrowedFolio, RangeTree, HUGE_PAGES},
        task::{Process, User},
        vma::Mappable,
    },
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

/// The limits one open file works under.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Bytes one open file may hold; 0 for no limit.
    pub(crate) file_bytes: u64,
    /// Allocations one open file may hold at once.
    pub(crate) file_allocations: u32,
}

/// Bytes held per user across all of their open files and allocations, against
/// `vram_limit_per_user_mb` (0: no limit). An entry lives while anything of its user does.
#[pin_data]
pub(crate) struct UserCharges {
    limit: u64,
    #[pin]
    users: Mutex<KVec<UserEntry>>,
}

struct UserEntry {
    user: User,
    bytes: u64,
    /// Open files and allocations of this user.
    holders: u64,
}

impl UserCharges {
    pub(crate) fn new(limit: u64) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                limit,
                users <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes `user` holds now.
    pub(crate) fn used(&self, user: User) -> u64 {
        let users = self.users.lock();
        users.iter().find(|e| e.user == user).map_or(0, |e| e.bytes)
    }

    /// One more holder for `user`, charged `bytes` (`ENOMEM` past the limit).
    fn hold(&self, user: User, bytes: u64) -> Result {
        let mut users = self.users.lock();
        let index = match users.iter().position(|e| e.user == user) {
            Some(index) => index,
            None => {
                users.push(
                    UserEntry {
                        user,
                        bytes: 0,
                        holders: 0,
                    },
                    GFP_KERNEL_ACCOUNT,
                )?;
                users.len() - 1
            }
        };
        let entry = &mut users[index];
        let bytes_after = entry.bytes.saturating_add(bytes);
        if self.limit != 0 && bytes_after > self.limit {
            if entry.holders == 0 {
                let _ = users.remove(index);
            }
            return Err(ENOMEM);
        }
        entry.bytes = bytes_after;
        entry.holders += 1;
        Ok(())
    }

    /// Gives back what [`Self::hold`] took.
    fn release(&self, user: User, bytes: u64) {
        let mut users = self.users.lock();
        if let Some(index) = users.iter().position(|e| e.user == user) {
            let entry = &mut users[index];
            entry.bytes -= bytes;
            entry.holders -= 1;
            if entry.holders == 0 {
                let _ = users.remove(index);
            }
        }
    }
}

/// A hold on a user's charges, given back on drop.
struct UserCharge {
    charges: Arc<UserCharges>,
    user: User,
    bytes: u64,
}

impl UserCharge {
    fn new(charges: &Arc<UserCharges>, user: User, bytes: u64) -> Result<Self> {
        charges.hold(user, bytes)?;
        Ok(Self {
            charges: charges.clone(),
            user,
            bytes,
        })
    }
}

impl Drop for UserCharge {
    fn drop(&mut self) {
        self.charges.release(self.user, self.bytes);
    }
}

/// One allocation, shared by its open file's handle tree and the mappings of it. It lives
/// until the last of them lets go, and only then goes back to the pool.
pub(crate) struct Buffer {
    pool: Arc<VramPool>,
    /// Always `Some` until dropped.
    allocation: Option<Allocation>,
    /// Its handle: the first of its page offsets in its file's mmap space, set once when the
    /// range is found (before the buffer can be seen by anyone else).
    handle: Atomic<u32>,
    mappings: Atomic<u32>,
    /// Dropped after `allocation` is back in the pool (field order): the user's bytes, and
    /// the cgroup's, are charged for as long as the memory is taken. Pages the pool still
    /// scrubs or quarantines after that are the card's, charged to no one.
    _charge: UserCharge,
    _dmem_charge: DmemCharge,
}

impl Buffer {
    fn allocation(&self) -> Result<&Allocation> {
        self.allocation.as_ref().ok_or(ENOENT)
    }

    pub(crate) fn handle(&self) -> u32 {
        self.handle.load(Relaxed)
    }

    pub(crate) fn mmap_offset(&self) -> u64 {
        u64::from(self.handle()) << PAGE_SHIFT
    }

    pub(crate) fn pages(&self) -> usize {
        self.allocation()
            .map_or(0, |a| (a.size() >> PAGE_SHIFT) as usize)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.allocation().map_or(0, Allocation::size)
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
            VramPool::free(&self.pool, allocation);
        }
    }
}

impl Mappable for Buffer {
    fn page(&self, pgoff: usize) -> Result<BorrowedPage<'_>> {
        let index = pgoff.checked_sub(self.handle() as usize).ok_or(EINVAL)?;
        self.pool.page(self.allocation()?, index)
    }

    fn huge_folio(&self, pgoff: usize) -> Option<BorrowedFolio<'_>> {
        let index = pgoff.checked_sub(self.handle() as usize)?;
        self.pool.huge_page(self.allocation().ok()?, index)
    }

    fn in_huge_unit(&self, pgoff: usize) -> bool {
        let Some(index) = pgoff.checked_sub(self.handle() as usize) else {
            return false;
        };
        self.allocation()
            .is_ok_and(|a| self.pool.in_huge_unit(a, index))
    }

    fn unit_mapping_lock(&self) -> &Mutex<()> {
        &self.pool.unit_mapping
    }

    fn gate(&self) -> &AccessGate {
        &self.pool.gate
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

struct Holdings {
    /// Buffers by their range of page offsets; a buffer's handle is its first offset (the range
    /// may begin up to 511 offsets earlier, to align the handle: see [`RangeTree::insert`]).
    buffers: RangeTree<Buffer>,
    bytes: u64,
    count: u32,
}

/// What one open file holds, and whose it is.
#[pin_data]
pub(crate) struct Client {
    pub(crate) process: Process,
    /// The user whose per-user limit this file's allocations count against.
    pub(crate) user: User,
    charges: Arc<UserCharges>,
    /// Keeps the user's entry while the file is open.
    _open_charge: UserCharge,
    #[pin]
    holdings: Mutex<Holdings>,
}

/// Bytes and allocations a client holds.
#[derive(Clone, Copy, Default)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) allocations: u32,
}

impl Client {
    /// A client for the calling process, whose allocations count against `charges`.
    pub(crate) fn new(charges: &Arc<UserCharges>) -> Result<Arc<Self>> {
        let process = Process::current().ok_or(ESRCH)?;
        let user = User::current();
        let open_charge = UserCharge::new(charges, user, 0)?;
        let buffers = RangeTree::new()?;
        Arc::pin_init(
            pin_init!(Self {
                process,
                user,
                charges: charges.clone(),
                _open_charge: open_charge,
                holdings <- new_mutex!(Holdings {
                    buffers,
                    bytes: 0,
                    count: 0,
                }),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    pub(crate) fn usage(&self) -> Usage {
        let holdings = self.holdings.lock();
        Usage {
            bytes: holdings.bytes,
            allocations: holdings.count,
        }
    }

    /// Allocates `bytes` from `pool` for this file within `limits`, the user's limit and the
    /// caller's cgroup's `dmem.max` in `region`: `ENOMEM` when a byte limit or the card is
    /// full, `ENOSPC` when the file holds as many allocations as it may. Returns the new buffer.
    pub(crate) fn allocate(
        &self,
        pool: &Arc<VramPool>,
        region: &DmemRegion,
        bytes: u64,
        placement: Placement,
        limits: Limits,
    ) -> Result<Arc<Buffer>> {
        let mut holdings = self.holdings.lock();
        if holdings.count >= limits.file_allocations {
            return Err(ENOSPC);
        }
        let rounded = bytes
            .checked_next_multiple_of(1 << PAGE_SHIFT)
            .ok_or(EINVAL)?;
        if limits.file_bytes != 0 && holdings.bytes.saturating_add(rounded) > limits.file_bytes {
            return Err(ENOMEM);
        }
        let charge = UserCharge::new(&self.charges, self.user, rounded)?;
        // The pool rounds to pages too, so the charge is the allocation's size exactly.
        let dmem_charge = region.try_charge(rounded)?;
        let allocation = pool.allocate(bytes, placement)?;
        let size = allocation.size();
        let pages = (size >> PAGE_SHIFT) as usize;
        let buffer = Arc::new(
            Buffer {
                pool: pool.clone(),
                allocation: Some(allocation),
                handle: Atomic::new(0),
                mappings: Atomic::new(0),
                _charge: charge,
                _dmem_charge: dmem_charge,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        // A buffer of 2 MiB or more starts on a 2 MiB boundary of the file's offsets, so that
        // its 2 MiB units line up with the 2 MiB-aligned mappings `get_unmapped_area` gives.
        let align = if pages >= HUGE_PAGES { HUGE_PAGES } else { 1 };
        let first = holdings.buffers.insert(
            pages,
            align,
            buffer.clone(),
            1,
            uapi::MMAP_PAGE_OFFSETS as usize,
        )?;
        // The tree allots offsets below 2^32 only, so the handle always fits.
        buffer.handle.store(first as u32, Relaxed);
        holdings.bytes += size;
        holdings.count += 1;
        Ok(buffer)
    }

    /// The buffer `handle` names in this file, or `ENOENT`.
    pub(crate) fn buffer(&self, handle: u32) -> Result<Arc<Buffer>> {
        let holdings = self.holdings.lock();
        Self::lookup(&holdings, handle)
    }

    fn lookup(holdings: &Holdings, handle: u32) -> Result<Arc<Buffer>> {
        holdings
            .buffers
            .get(handle as usize)
            .filter(|b| b.handle() == handle && handle != 0)
            .ok_or(ENOENT)
    }

    /// The buffer whose mmap range holds page offset `pgoff`, counted as mapped once more, so
    /// it cannot be freed before the mapping is set up (or the count given back).
    pub(crate) fn buffer_for_mapping(&self, pgoff: usize) -> Result<Arc<Buffer>> {
        let holdings = self.holdings.lock();
        let buffer = holdings.buffers.get(pgoff).ok_or(ENOENT)?;
        buffer.mapped();
        Ok(buffer)
    }

    /// Frees `handle`: `ENOENT` if this file has no such handle, `EBUSY` while it is mapped.
    pub(crate) fn free(&self, handle: u32) -> Result<u64> {
        let buffer = self.buffer(handle)?;
        self.free_buffer(&buffer)
    }

    /// Frees exactly `buffer`, if this file still holds it: a concurrent FREE and ALLOC on the
    /// same file may have put another buffer at the same handle since.
    pub(crate) fn free_buffer(&self, buffer: &Arc<Buffer>) -> Result<u64> {
        let mut holdings = self.holdings.lock();
        let handle = buffer.handle();
        let held = Self::lookup(&holdings, handle)?;
        if !Arc::ptr_eq(&held, buffer) {
            return Err(ENOENT);
        }
        if held.mappings() > 0 {
            return Err(EBUSY);
        }
        let removed = holdings.buffers.remove(handle as usize)?;
        let bytes = removed.bytes();
        holdings.bytes -= bytes;
        holdings.count -= 1;
        drop(holdings);
        // Returned to the pool when the last reference (this one, `held`, or a mapping that
        // raced) goes, outside the lock.
        drop(removed);
        Ok(bytes)
    }
}

#[cfg(emuv_kunit)]
#[kernel::prelude::kunit_tests(emuv_client)]
mod tests {
    use super::*;
    use crate::vram_pool::{PoolConfig, Strategy};

    const LIMITS: Limits = Limits {
        file_bytes: 0,
        file_allocations: 4,
    };

    fn client() -> Result<(Arc<VramPool>, DmemRegion, Arc<Client>)> {
        let pool = VramPool::new(PoolConfig {
            physical_bytes: 1 << 20,
            virtual_bytes: 0,
            strategy: Strategy::Lazy,
        })?;
        let region = DmemRegion::register(c"emuv/kunit", 1 << 20)?;
        Ok((pool, region, Client::new(&UserCharges::new(0)?)?))
    }

    /// The interleaving a concurrent FREE and ALLOC can produce while an ALLOC's result is
    /// being copied out: the failed ALLOC must free its own buffer, not the handle's new owner.
    #[test]
    fn a_failed_alloc_frees_its_own_buffer_not_the_handles_next_owner() -> Result {
        let (pool, region, client) = client()?;
        let first = client.allocate(&pool, &region, 4096, Placement::Any, LIMITS)?;
        let handle = first.handle();
        client.free(handle)?;
        let second = client.allocate(&pool, &region, 4096, Placement::Any, LIMITS)?;
        assert_eq!(second.handle(), handle);
        assert_eq!(client.free_buffer(&first).err(), Some(ENOENT));
        assert!(Arc::ptr_eq(&client.buffer(handle)?, &second));
        assert_eq!(client.usage().allocations, 1);
        Ok(())
    }

    #[test]
    fn handles_are_offset_ranges_and_limits_hold() -> Result {
        let (pool, region, client) = client()?;
        let a = client.allocate(&pool, &region, 3 * 4096, Placement::Any, LIMITS)?;
        let b = client.allocate(&pool, &region, 4096, Placement::Any, LIMITS)?;
        // Each allocation owns a range of page offsets; its handle is the first of them.
        assert_eq!(b.handle(), a.handle() + 3);
        assert!(Arc::ptr_eq(
            &client.buffer_for_mapping(a.handle() as usize + 2)?,
            &a
        ));
        a.mappings_undo();
        assert_eq!(client.buffer(a.handle() + 1).err(), Some(ENOENT));
        for _ in 0..2 {
            client.allocate(&pool, &region, 4096, Placement::Any, LIMITS)?;
        }
        assert_eq!(
            client
                .allocate(&pool, &region, 4096, Placement::Any, LIMITS)
                .err(),
            Some(ENOSPC)
        );
        Ok(())
    }
}
