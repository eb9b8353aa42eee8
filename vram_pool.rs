// SPDX-License-Identifier: GPL-2.0

//! Emulated VRAM: a physical tier and a virtual tier, with exact counters.
//!
//! Knows nothing of files, ioctls or sysfs. Allocations go to the physical tier first and
//! overflow into the virtual one. Two strategies:
//!
//! * **Lazy**: only bookkeeping at load; memory is allocated, zeroed, the first time it is
//!   asked for and freed with its allocation. Capacity costs no memory until used. A 2 MiB
//!   mapping of a whole, aligned 2 MiB of an allocation gets one 2 MiB page (as GPUs and
//!   transparent huge pages do); anything else, or a 2 MiB page that cannot be had at once,
//!   gets 4 KiB pages.
//! * **Eager**: each tier is one zeroed vmalloc area reserved at load (after checking that it
//!   fits in available memory); allocations are page ranges of it. FREE only marks a range for
//!   scrubbing: the card's scrubber (a work item on the unbound workqueue) zeroes it in the
//!   background and only then makes it free, as GPU drivers scrub freed VRAM. An ALLOC that
//!   needs those pages first scrubs them itself. A freed page that something else still holds
//!   (a pipe after `vmsplice()`, an io_uring fixed buffer, direct I/O) is quarantined instead,
//!   and scrubbed and handed out again only once it is let go. Every page is in one state at a
//!   time, changed only under the pool's lock (see `page_ranges.rs`). Lazy pages need no
//!   quarantine: each allocation gets pages of its own, and the page allocator reuses a page
//!   only when its last reference is gone.
//!
//! Memory comes with `__GFP_RETRY_MAYFAIL`: when it runs out, emuv fails with `ENOMEM` and the
//! OOM killer is never invoked on its behalf.

use crate::{
    gate::AccessGate,
    glue::{
        mem::{
            available_bytes, vmalloc_overhead, BorrowedFolio, HugeLookup, SparsePages, VmallocArea,
            HUGE_PAGES, HUGE_SIZE,
        },
        work::wait_idle,
    },
    page_ranges::{Claim, HeldPages, PageRanges, PageState, CLAIM_PAGES},
};
use kernel::{
    new_condvar, new_mutex,
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, CondVar, Mutex, MutexGuard,
    },
    workqueue::{self, impl_has_work, new_work, Work, WorkItem},
};

/// Largest tier emuv accepts: 1 TiB.
pub(crate) const MAX_TIER_BYTES: u64 = 1 << 40;

const PAGE: u64 = PAGE_SIZE as u64;

/// A tier of emulated VRAM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tier {
    /// The card's own memory as configured (`physical_vram_*`).
    Physical = 0,
    /// Overflow taken from system RAM (`virtual_vram_*`).
    Virtual = 1,
}

impl Tier {
    /// Both tiers, in placement order.
    pub(crate) const ALL: [Tier; 2] = [Tier::Physical, Tier::Virtual];

    /// Lower-case name, as shown to users.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Tier::Physical => "physical",
            Tier::Virtual => "virtual",
        }
    }
}

/// Where an allocation may go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Placement {
    /// Only this tier.
    Only(Tier),
    /// Physical first, then virtual.
    Any,
}

/// When memory is taken from the system.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Strategy {
    /// Page by page, on first use.
    Lazy,
    /// All of it, at load.
    Eager,
}

impl Strategy {
    /// Name as shown in `allocation_strategy`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Strategy::Lazy => "lazy",
            Strategy::Eager => "eager",
        }
    }
}

/// Sizes and strategy of a pool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolConfig {
    pub(crate) physical_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) strategy: Strategy,
}

/// Counters of one tier, in bytes.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct TierStats {
    pub(crate) capacity: u64,
    /// Handed out to allocations.
    pub(crate) used: u64,
    /// Backed by system memory now (all of the capacity when eager).
    pub(crate) resident: u64,
    /// Freed but still held elsewhere (eager only): neither used nor free until let go.
    pub(crate) quarantined: u64,
    /// Freed and not yet zeroed (eager only): free once the scrubber has been through it.
    pub(crate) scrubbing: u64,
    /// Of `resident`, what is held in 2 MiB pages (lazy only).
    pub(crate) huge: u64,
}

/// A consistent snapshot of the pool's counters.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct PoolStats {
    pub(crate) tiers: [TierStats; 2],
    /// Highest `used` (both tiers) seen since load.
    pub(crate) peak_used: u64,
    /// Allocations alive now.
    pub(crate) allocations: u64,
    /// Allocations made since load.
    pub(crate) allocations_total: u64,
    /// 2 MiB pages that could not be had, so their range got 4 KiB pages instead.
    pub(crate) huge_fallbacks: u64,
}

impl PoolStats {
    /// The counters of `tier`.
    pub(crate) fn tier(&self, tier: Tier) -> &TierStats {
        &self.tiers[tier as usize]
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.tiers.iter().map(|t| t.capacity).sum()
    }

    pub(crate) fn used(&self) -> u64 {
        self.tiers.iter().map(|t| t.used).sum()
    }

    /// Zeroed and in no allocation: `used + quarantined + scrubbing + free == capacity`, the
    /// four taken from one snapshot of page states.
    pub(crate) fn free(&self) -> u64 {
        self.capacity()
            .saturating_sub(self.used())
            .saturating_sub(self.quarantined())
            .saturating_sub(self.scrubbing())
    }

    pub(crate) fn quarantined(&self) -> u64 {
        self.tiers.iter().map(|t| t.quarantined).sum()
    }

    pub(crate) fn scrubbing(&self) -> u64 {
        self.tiers.iter().map(|t| t.scrubbing).sum()
    }

    pub(crate) fn resident(&self) -> u64 {
        self.tiers.iter().map(|t| t.resident).sum()
    }

    pub(crate) fn huge(&self) -> u64 {
        self.tiers.iter().map(|t| t.huge).sum()
    }
}

/// Counters changed together under the pool's lock, so snapshots are consistent. Saturating:
/// a miscount shows as a wrong figure, never as a panic with the lock held.
#[derive(Default)]
struct Counters {
    used: [u64; 2],
    peak_used: u64,
    allocations: u64,
    allocations_total: u64,
}

impl Counters {
    fn add(&mut self, tier: Tier, bytes: u64) {
        let used = &mut self.used[tier as usize];
        *used = used.saturating_add(bytes);
        self.allocations = self.allocations.saturating_add(1);
        self.allocations_total = self.allocations_total.saturating_add(1);
        let total = self.used[0].saturating_add(self.used[1]);
        self.peak_used = self.peak_used.max(total);
    }

    fn sub(&mut self, tier: Tier, bytes: u64) {
        let used = &mut self.used[tier as usize];
        *used = used.saturating_sub(bytes);
        self.allocations = self.allocations.saturating_sub(1);
    }
}

/// Everything the pool's lock guards: the counters and the state of every eager page.
struct PoolState {
    counters: Counters,
    /// Per tier, when eager.
    pages: [Option<PageRanges>; 2],
}

/// A pool of emulated VRAM.
#[pin_data]
pub(crate) struct VramPool {
    config: PoolConfig,
    /// The backing of each eager tier.
    areas: [Option<VmallocArea>; 2],
    #[pin]
    state: Mutex<PoolState>,
    /// Woken when a scrub claim is finished: ALLOCs waiting for scrubbed pages, and the
    /// scrubber waiting for an ALLOC's claim.
    #[pin]
    scrubbed: CondVar,
    /// Zeroes freed eager pages in the background: see [`VramPool::scrub`].
    #[pin]
    scrubber: Work<VramPool>,
    /// Lazily allocated bytes per tier, all and in 2 MiB pages; atomics because faults update
    /// them without the lock.
    lazy_resident: [Atomic<u64>; 2],
    lazy_huge: [Atomic<u64>; 2],
    huge_fallbacks: Atomic<u64>,
    /// Serialises the choice between a PMD and a page table for a 2 MiB unit of a lazy
    /// allocation that has a folio (`glue::vma`): taken only by faults of such units.
    #[pin]
    pub(crate) unit_mapping: Mutex<()>,
    /// Closed while the card is lost: its memory can no longer be mapped.
    pub(crate) gate: AccessGate,
}

impl_has_work! {
    impl HasWork<Self> for VramPool { self.scrubber }
}

impl WorkItem for VramPool {
    type Pointer = Arc<VramPool>;

    fn run(this: Arc<VramPool>) {
        this.scrub();
    }
}

/// Zeroes the pages of `claim` in `area` that nothing else holds; returns the ones it left
/// alone because something still holds them. Runs without the pool's lock: claimed pages are
/// the claimer's alone.
fn zero_claim(area: &VmallocArea, claim: Claim) -> HeldPages {
    let mut held = [0; CLAIM_PAGES / 64];
    for i in 0..claim.count.min(CLAIM_PAGES) {
        let page = claim.first + i;
        // Nothing can take a new reference to a freed page (no mapping of it is left), so a
        // page that nothing holds now stays so while it is zeroed.
        if area.page_held_elsewhere(page) {
            held[i / 64] |= 1 << (i % 64);
        } else {
            area.zero_page(page);
        }
    }
    held
}

/// Pages of one allocation.
enum Backing {
    Lazy(SparsePages),
    /// A range of the tier's eager area.
    Eager {
        first_page: usize,
    },
}

/// Emulated VRAM handed out by [`VramPool::allocate`]; give it back with [`VramPool::free`].
pub(crate) struct Allocation {
    tier: Tier,
    pages: usize,
    backing: Backing,
}

impl Allocation {
    pub(crate) fn tier(&self) -> Tier {
        self.tier
    }

    pub(crate) fn size(&self) -> u64 {
        self.pages as u64 * PAGE
    }
}

/// Bytes rounded up to whole pages, or `None` on overflow.
fn pages_for(bytes: u64) -> Option<usize> {
    usize::try_from(bytes.checked_next_multiple_of(PAGE)? / PAGE).ok()
}

impl VramPool {
    /// `ENOMEM` (and a `dmesg` line with the numbers) unless `cards` eager pools of `config`
    /// fit in available memory together, with what reserving them costs besides.
    pub(crate) fn check_eager_fits(config: &PoolConfig, cards: u64) -> Result {
        let wanted = (config.physical_bytes + config.virtual_bytes).saturating_mul(cards);
        let overhead = vmalloc_overhead(wanted);
        let available = available_bytes();
        if wanted.saturating_add(overhead) > available {
            let what = if cfg!(CONFIG_KASAN_VMALLOC) {
                "vmalloc page tables and KASAN shadow"
            } else {
                "vmalloc page tables"
            };
            let of_cards = if cards > 1 { " for all cards" } else { "" };
            pr_err!(
                "eager reservation of {} MiB{of_cards} (+{} MiB of {what}) does not fit: {} MiB available\n",
                wanted >> 20,
                overhead >> 20,
                available >> 20
            );
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Creates a pool; an eager one reserves all of its memory now.
    ///
    /// Fails with `EINVAL` for a tier above [`MAX_TIER_BYTES`] or an empty physical tier, and
    /// with `ENOMEM` (and a `dmesg` line with the numbers) when an eager pool does not fit.
    pub(crate) fn new(config: PoolConfig) -> Result<Arc<Self>> {
        if config.physical_bytes == 0
            || config.physical_bytes > MAX_TIER_BYTES
            || config.virtual_bytes > MAX_TIER_BYTES
        {
            return Err(EINVAL);
        }
        let mut areas = [None, None];
        let mut pages = [None, None];
        if config.strategy == Strategy::Eager {
            Self::check_eager_fits(&config, 1)?;
            let tiers = areas.iter_mut().zip(pages.iter_mut());
            for ((area, ranges), bytes) in tiers.zip([config.physical_bytes, config.virtual_bytes])
            {
                if bytes == 0 {
                    continue;
                }
                let reserved = usize::try_from(bytes)
                    .map_err(|_| ENOMEM)
                    .and_then(|len| Ok(VmallocArea::new(len)?))
                    .inspect_err(|_| {
                        pr_err!(
                            "eager reservation of {} MiB failed: {} MiB available\n",
                            bytes >> 20,
                            available_bytes() >> 20
                        );
                    })?;
                *ranges = Some(PageRanges::new(reserved.pages())?);
                *area = Some(reserved);
            }
        }
        Arc::pin_init(
            pin_init!(Self {
                config,
                areas,
                state <- new_mutex!(PoolState {
                    counters: Counters::default(),
                    pages,
                }),
                scrubbed <- new_condvar!(),
                scrubber <- new_work!("VramPool::scrubber"),
                lazy_resident: [Atomic::new(0), Atomic::new(0)],
                lazy_huge: [Atomic::new(0), Atomic::new(0)],
                huge_fallbacks: Atomic::new(0),
                unit_mapping <- new_mutex!(()),
                gate: AccessGate::new(),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn config(&self) -> &PoolConfig {
        &self.config
    }

    fn capacity(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Physical => self.config.physical_bytes,
            Tier::Virtual => self.config.virtual_bytes,
        }
    }

    /// A consistent snapshot of the counters.
    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.state.lock();
        let counters = &state.counters;
        let mut stats = PoolStats {
            peak_used: counters.peak_used,
            allocations: counters.allocations,
            allocations_total: counters.allocations_total,
            huge_fallbacks: self.huge_fallbacks.load(Relaxed),
            ..PoolStats::default()
        };
        for tier in Tier::ALL {
            let capacity = self.capacity(tier);
            let pages = state.pages[tier as usize].as_ref();
            let bytes_in = |s| pages.map_or(0, |p| p.count(s) as u64 * PAGE);
            stats.tiers[tier as usize] = TierStats {
                capacity,
                used: counters.used[tier as usize],
                resident: match self.config.strategy {
                    Strategy::Eager => capacity,
                    Strategy::Lazy => self.lazy_resident[tier as usize].load(Relaxed),
                },
                quarantined: bytes_in(PageState::Quarantined),
                scrubbing: bytes_in(PageState::Scrubbing),
                huge: self.lazy_huge[tier as usize].load(Relaxed),
            };
        }
        stats
    }

    /// Allocates `size` bytes (rounded up to pages): `EINVAL` for zero or overflowing sizes,
    /// `ENOMEM` when no allowed tier has room (like `cudaMalloc` on a full card). Eager pages
    /// freed but not yet scrubbed count as room: the allocation scrubs them (or waits for the
    /// scrubber's claim) when it needs them.
    pub(crate) fn allocate(&self, size: u64, placement: Placement) -> Result<Allocation> {
        let pages = match pages_for(size) {
            Some(0) | None => return Err(EINVAL),
            Some(pages) => pages,
        };
        let tiers: &[Tier] = match placement {
            Placement::Only(Tier::Physical) => &[Tier::Physical],
            Placement::Only(Tier::Virtual) => &[Tier::Virtual],
            Placement::Any => &Tier::ALL,
        };
        for &tier in tiers {
            let backing = match &self.areas[tier as usize] {
                Some(area) => self.take_eager(tier, area, pages),
                None => self.take_lazy(tier, pages),
            };
            match backing {
                Ok(backing) => {
                    return Ok(Allocation {
                        tier,
                        pages,
                        backing,
                    })
                }
                // A full (or, eager, too fragmented) tier: the other may have room.
                Err(e) if e == ENOMEM => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ENOMEM)
    }

    /// A lazy allocation of `pages` in `tier`: its bytes are taken first, so concurrent
    /// allocations cannot overcommit the tier, and given back if its page table cannot be had.
    fn take_lazy(&self, tier: Tier, pages: usize) -> Result<Backing> {
        let bytes = pages as u64 * PAGE;
        {
            let mut state = self.state.lock();
            let room = self
                .capacity(tier)
                .saturating_sub(state.counters.used[tier as usize]);
            if room < bytes {
                return Err(ENOMEM);
            }
            state.counters.add(tier, bytes);
        }
        let pages = SparsePages::new(pages).inspect_err(|_| {
            let mut state = self.state.lock();
            state.counters.sub(tier, bytes);
            state.counters.allocations_total = state.counters.allocations_total.saturating_sub(1);
        })?;
        Ok(Backing::Lazy(pages))
    }

    /// An eager allocation of `pages` in `tier`, whose backing is `area`: `Free -> Taken` and
    /// the bytes counted in one step under the lock. While free pages do not suffice but freed
    /// ones would, it scrubs a claim of them itself, or waits for the claim out to finish.
    fn take_eager(&self, tier: Tier, area: &VmallocArea, pages: usize) -> Result<Backing> {
        let bytes = pages as u64 * PAGE;
        let mut state = self.state.lock();
        loop {
            let PoolState {
                counters,
                pages: ranges,
            } = &mut *state;
            let ranges = ranges[tier as usize].as_mut().ok_or(EINVAL)?;
            if ranges.count(PageState::Quarantined) > 0 {
                ranges.release_quarantine(|page| area.page_held_elsewhere(page));
            }
            match ranges.alloc(pages) {
                Ok(first_page) => {
                    counters.add(tier, bytes);
                    return Ok(Backing::Eager { first_page });
                }
                Err(e) if e != ENOMEM => return Err(e),
                Err(_) => {}
            }
            let scrubbing = ranges.count(PageState::Scrubbing);
            // No room even once every freed page is scrubbed, or none being scrubbed that
            // could join a run: the card really is full (or too fragmented) for this.
            if scrubbing == 0 || ranges.count(PageState::Free).saturating_add(scrubbing) < pages {
                return Err(ENOMEM);
            }
            match ranges.claim_scrub() {
                Some(claim) => {
                    state = self.scrub_claim(state, tier, area, claim);
                }
                None => self.scrubbed.wait(&mut state),
            }
        }
    }

    /// Zeroes `claim` of `tier` (backed by `area`) with the lock let go, then ends the claim
    /// under it again and wakes whoever waits for scrubbed pages; returns the lock.
    fn scrub_claim<'a>(
        &'a self,
        state: MutexGuard<'a, PoolState>,
        tier: Tier,
        area: &VmallocArea,
        claim: Claim,
    ) -> MutexGuard<'a, PoolState> {
        drop(state);
        let held = zero_claim(area, claim);
        let mut state = self.state.lock();
        if let Some(ranges) = state.pages[tier as usize].as_mut() {
            if ranges.finish_scrub(claim, &held).is_err() {
                pr_err!(
                    "scrub claim {claim:?} of the {} tier was not out\n",
                    tier.name()
                );
            }
        }
        self.scrubbed.notify_all();
        state
    }

    /// The scrubber: zeroes every freed eager page, a claim at a time so that ALLOCs and
    /// statistics wait at most one claim's zeroing for the lock, then scrubs what quarantine
    /// let go meanwhile. One work item per card: scrubbing runs beside the card's users, one
    /// CPU at a time per card, cards in parallel.
    fn scrub(&self) {
        let mut state = self.state.lock();
        loop {
            let mut next = None;
            let mut others_claim = false;
            for tier in Tier::ALL {
                let (Some(ranges), Some(area)) = (
                    state.pages[tier as usize].as_mut(),
                    self.areas[tier as usize].as_ref(),
                ) else {
                    continue;
                };
                if let Some(claim) = ranges.claim_scrub() {
                    next = Some((tier, area, claim));
                    break;
                }
                others_claim |= ranges.claimed();
            }
            if let Some((tier, area, claim)) = next {
                state = self.scrub_claim(state, tier, area, claim);
                continue;
            }
            // An ALLOC holds the last claim: what it leaves is the scrubber's.
            if others_claim {
                self.scrubbed.wait(&mut state);
                continue;
            }
            let mut released = 0;
            for tier in Tier::ALL {
                if let (Some(ranges), Some(area)) = (
                    state.pages[tier as usize].as_mut(),
                    self.areas[tier as usize].as_ref(),
                ) {
                    released += ranges.release_quarantine(|page| area.page_held_elsewhere(page));
                }
            }
            if released == 0 {
                return;
            }
        }
    }

    /// Waits until the scrubber is neither queued nor running, for a card going away (its
    /// pool must not outlive the module in the scrubber's hands) and for tests.
    pub(crate) fn wait_for_scrubber(&self) {
        wait_idle(&self.scrubber);
    }

    /// Returns an allocation's memory to the pool: a lazy one's pages at once, an eager one's
    /// range to the scrubber. Nothing here can fail: an eager range that is not all `Taken`
    /// (which would be a bug) is left out of use rather than freed twice.
    pub(crate) fn free(pool: &Arc<Self>, allocation: Allocation) {
        let tier = allocation.tier;
        let bytes = allocation.size();
        match allocation.backing {
            Backing::Lazy(pages) => {
                let (resident, huge) = pages.resident();
                drop(pages);
                let t = tier as usize;
                pool.lazy_resident[t].fetch_sub(resident as u64 * PAGE, Relaxed);
                pool.lazy_huge[t].fetch_sub(huge as u64 * PAGE, Relaxed);
                pool.state.lock().counters.sub(tier, bytes);
            }
            Backing::Eager { first_page } => {
                {
                    let mut state = pool.state.lock();
                    let PoolState { counters, pages } = &mut *state;
                    let freed = pages[tier as usize]
                        .as_mut()
                        .map(|ranges| ranges.free(first_page, allocation.pages));
                    if let Some(Ok(())) = freed {
                        counters.sub(tier, bytes);
                    } else {
                        pr_err!(
                            "pages {first_page}+{} of the {} tier were not an allocation's: kept out of use\n",
                            allocation.pages,
                            tier.name()
                        );
                        return;
                    }
                }
                // Already queued: the queued run will see this range too.
                let _ = workqueue::system_unbound().enqueue(pool.clone());
            }
        }
    }

    /// Bytes of `allocation` backed by system memory now.
    pub(crate) fn resident_of(&self, allocation: &Allocation) -> u64 {
        match &allocation.backing {
            Backing::Lazy(pages) => pages.resident().0 as u64 * PAGE,
            Backing::Eager { .. } => allocation.size(),
        }
    }

    /// Page `index` of `allocation`, allocated and zeroed on first use when lazy.
    pub(crate) fn page<'a>(
        &'a self,
        allocation: &'a Allocation,
        index: usize,
    ) -> Result<BorrowedPage<'a>> {
        if index >= allocation.pages {
            return Err(EINVAL);
        }
        match &allocation.backing {
            Backing::Lazy(pages) => {
                let found = pages.get_or_alloc(index)?;
                if found.allocated {
                    self.lazy_resident[allocation.tier as usize].fetch_add(PAGE, Relaxed);
                }
                Ok(found.page)
            }
            Backing::Eager { first_page } => self.areas[allocation.tier as usize]
                .as_ref()
                .and_then(|area| area.page(first_page + index))
                .ok_or(EINVAL),
        }
    }

    /// Whether page `index` of `allocation` lies in a 2 MiB unit that holds a 2 MiB folio.
    pub(crate) fn in_huge_unit(&self, allocation: &Allocation, index: usize) -> bool {
        match &allocation.backing {
            Backing::Lazy(pages) => pages.is_huge(index / HUGE_PAGES),
            Backing::Eager { .. } => false,
        }
    }

    /// The 2 MiB page for pages `index..index + 512` of `allocation`, allocated and zeroed on
    /// first use, when they are one whole, aligned 2 MiB unit of a lazy allocation with no
    /// 4 KiB pages yet; `None` to map them with 4 KiB pages instead. A 2 MiB page that cannot be
    /// had at once is counted as a fallback.
    pub(crate) fn huge_page<'a>(
        &'a self,
        allocation: &'a Allocation,
        index: usize,
    ) -> Option<BorrowedFolio<'a>> {
        let Backing::Lazy(pages) = &allocation.backing else {
            return None;
        };
        if index % HUGE_PAGES != 0 {
            return None;
        }
        match pages.get_or_alloc_huge(index / HUGE_PAGES) {
            HugeLookup::Found(found) => {
                if found.allocated {
                    let bytes = HUGE_SIZE as u64;
                    self.lazy_resident[allocation.tier as usize].fetch_add(bytes, Relaxed);
                    self.lazy_huge[allocation.tier as usize].fetch_add(bytes, Relaxed);
                }
                Some(found.page)
            }
            HugeLookup::NotHuge => None,
            HugeLookup::NoMemory => {
                self.huge_fallbacks.fetch_add(1, Relaxed);
                None
            }
        }
    }
}

#[cfg(emuv_kunit)]
#[kunit_tests(emuv_vram_pool)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A pool that waits for its scrubber before it goes, as a card does.
    struct TestPool(Arc<VramPool>);

    impl core::ops::Deref for TestPool {
        type Target = Arc<VramPool>;

        fn deref(&self) -> &Arc<VramPool> {
            &self.0
        }
    }

    impl Drop for TestPool {
        fn drop(&mut self) {
            self.0.wait_for_scrubber();
        }
    }

    fn pool(physical: u64, virtual_: u64, strategy: Strategy) -> Result<TestPool> {
        VramPool::new(PoolConfig {
            physical_bytes: physical,
            virtual_bytes: virtual_,
            strategy,
        })
        .map(TestPool)
    }

    /// The four counters add up to the capacity, and the eager ones are the page states'.
    fn assert_counters_add_up(pool: &VramPool) {
        let stats = pool.stats();
        assert_eq!(
            stats.used() + stats.free() + stats.quarantined() + stats.scrubbing(),
            stats.capacity()
        );
        let state = pool.state.lock();
        for tier in Tier::ALL {
            if let Some(ranges) = &state.pages[tier as usize] {
                assert!(ranges.consistent());
                let taken = ranges.count(PageState::Taken) as u64 * PAGE;
                assert_eq!(state.counters.used[tier as usize], taken);
            }
        }
    }

    /// Reads the first bytes of a page (through the kernel mapping).
    fn first_bytes(page: &BorrowedPage<'_>) -> Result<[u8; 8]> {
        let mut buf = [0u8; 8];
        // SAFETY: the test owns the allocation; nothing writes the page concurrently.
        unsafe { page.read_raw(buf.as_mut_ptr(), 0, buf.len())? };
        Ok(buf)
    }

    #[test]
    fn physical_first_then_virtual_then_enomem() -> Result {
        for strategy in [Strategy::Lazy, Strategy::Eager] {
            let pool = pool(4 * MIB, 2 * MIB, strategy)?;
            let a = pool.allocate(3 * MIB, Placement::Any)?;
            assert_eq!(a.tier(), Tier::Physical);
            let b = pool.allocate(2 * MIB, Placement::Any)?;
            assert_eq!(b.tier(), Tier::Virtual);
            let c = pool.allocate(MIB, Placement::Any)?;
            assert_eq!(c.tier(), Tier::Physical);
            assert_eq!(pool.allocate(1, Placement::Any).err(), Some(ENOMEM));
            let stats = pool.stats();
            assert_eq!(stats.used(), 6 * MIB);
            assert_eq!(stats.free(), 0);
            assert_eq!(stats.allocations, 3);
            VramPool::free(&pool, a);
            VramPool::free(&pool, b);
            VramPool::free(&pool, c);
            let stats = pool.stats();
            assert_eq!(stats.used(), 0);
            assert_eq!(stats.allocations, 0);
            assert_eq!(stats.allocations_total, 3);
            assert_eq!(stats.peak_used, 6 * MIB);
        }
        Ok(())
    }

    #[test]
    fn tier_placement_is_honoured() -> Result {
        let pool = pool(MIB, MIB, Strategy::Lazy)?;
        let v = pool.allocate(MIB, Placement::Only(Tier::Virtual))?;
        assert_eq!(v.tier(), Tier::Virtual);
        assert_eq!(
            pool.allocate(1, Placement::Only(Tier::Virtual)).err(),
            Some(ENOMEM)
        );
        let p = pool.allocate(1, Placement::Only(Tier::Physical))?;
        assert_eq!(p.size(), PAGE);
        assert_eq!(pool.stats().tier(Tier::Physical).used, PAGE);
        VramPool::free(&pool, v);
        VramPool::free(&pool, p);
        Ok(())
    }

    #[test]
    fn bad_sizes_are_refused() -> Result {
        let pool = pool(MIB, 0, Strategy::Lazy)?;
        assert_eq!(pool.allocate(0, Placement::Any).err(), Some(EINVAL));
        assert_eq!(pool.allocate(u64::MAX, Placement::Any).err(), Some(EINVAL));
        assert_eq!(pool.allocate(MIB + 1, Placement::Any).err(), Some(ENOMEM));
        assert_eq!(
            pool.allocate(1, Placement::Only(Tier::Virtual)).err(),
            Some(ENOMEM)
        );
        assert_eq!(
            pool.stats(),
            PoolStats {
                tiers: [
                    TierStats {
                        capacity: MIB,
                        ..TierStats::default()
                    },
                    TierStats::default(),
                ],
                ..PoolStats::default()
            }
        );
        Ok(())
    }

    #[test]
    fn bad_configs_are_refused() {
        assert_eq!(pool(0, MIB, Strategy::Lazy).err(), Some(EINVAL));
        assert_eq!(
            pool(MAX_TIER_BYTES + 1, 0, Strategy::Lazy).err(),
            Some(EINVAL)
        );
        assert_eq!(
            pool(MIB, MAX_TIER_BYTES + 1, Strategy::Lazy).err(),
            Some(EINVAL)
        );
        // A lazy pool of 1 TiB per tier costs nothing at load.
        assert!(pool(MAX_TIER_BYTES, MAX_TIER_BYTES, Strategy::Lazy).is_ok());
        // An eager one that cannot fit fails cleanly.
        assert_eq!(pool(MAX_TIER_BYTES, 0, Strategy::Eager).err(), Some(ENOMEM));
    }

    #[test]
    fn lazy_pages_are_allocated_on_first_use_zeroed_and_counted_once() -> Result {
        let pool = pool(8 * MIB, 0, Strategy::Lazy)?;
        let a = pool.allocate(4 * MIB, Placement::Any)?;
        assert_eq!(pool.stats().resident(), 0);
        let page = pool.page(&a, 0)?;
        assert_eq!(first_bytes(&page)?, [0; 8]);
        // SAFETY: the test owns the allocation.
        unsafe { page.write_raw([7u8; 8].as_ptr(), 0, 8)? };
        assert_eq!(first_bytes(&pool.page(&a, 0)?)?, [7; 8]);
        pool.page(&a, 1023)?;
        pool.page(&a, 1023)?;
        assert_eq!(pool.stats().resident(), 2 * PAGE);
        assert_eq!(pool.page(&a, 1024).err(), Some(EINVAL));
        VramPool::free(&pool, a);
        assert_eq!(pool.stats().resident(), 0);
        // A new allocation gets fresh zeroed pages.
        let b = pool.allocate(4 * MIB, Placement::Any)?;
        assert_eq!(first_bytes(&pool.page(&b, 0)?)?, [0; 8]);
        VramPool::free(&pool, b);
        Ok(())
    }

    #[test]
    fn lazy_2mib_units_are_one_folio_counted_once() -> Result {
        const HUGE: u64 = HUGE_SIZE as u64;
        let pool = pool(16 * MIB, 0, Strategy::Lazy)?;
        let a = pool.allocate(2 * HUGE + PAGE, Placement::Any)?;
        let folio = pool.huge_page(&a, 0).ok_or(ENOMEM)?;
        let again = pool.huge_page(&a, 0).ok_or(EINVAL)?;
        assert_eq!(folio.as_ptr(), again.as_ptr());
        let stats = pool.stats();
        assert_eq!((stats.resident(), stats.huge()), (HUGE, HUGE));
        // A 4 KiB lookup in a unit with a folio is that folio's page: one memory.
        let page = pool.page(&a, 5)?;
        assert_eq!(Some(page.as_ptr()), folio.page(5).map(|p| p.as_ptr()));
        // SAFETY: the test owns the allocation.
        unsafe { page.write_raw([3u8; 8].as_ptr(), 0, 8)? };
        assert_eq!(first_bytes(&folio.page(5).ok_or(EINVAL)?)?, [3; 8]);
        // Not at a unit's start, a unit with 4 KiB pages already, the partial tail: no folio.
        assert!(pool.huge_page(&a, 1).is_none());
        pool.page(&a, HUGE_PAGES + 7)?;
        assert!(pool.huge_page(&a, HUGE_PAGES).is_none());
        assert!(pool.huge_page(&a, 2 * HUGE_PAGES).is_none());
        let stats = pool.stats();
        assert_eq!((stats.resident(), stats.huge()), (HUGE + PAGE, HUGE));
        assert_eq!(stats.huge_fallbacks, 0);
        VramPool::free(&pool, a);
        let stats = pool.stats();
        assert_eq!((stats.resident(), stats.huge()), (0, 0));
        // Eager memory is never handed out as folios.
        let eager = self::pool(4 * MIB, 0, Strategy::Eager)?;
        let e = eager.allocate(2 * HUGE, Placement::Any)?;
        assert!(eager.huge_page(&e, 0).is_none());
        VramPool::free(&eager, e);
        Ok(())
    }

    #[test]
    fn eager_pages_are_reserved_and_zeroed_again_after_free() -> Result {
        let pool = pool(2 * MIB, MIB, Strategy::Eager)?;
        assert_eq!(pool.stats().resident(), 3 * MIB);
        let a = pool.allocate(2 * MIB, Placement::Any)?;
        let page = pool.page(&a, 5)?;
        // SAFETY: the test owns the allocation.
        unsafe { page.write_raw([9u8; 8].as_ptr(), 0, 8)? };
        VramPool::free(&pool, a);
        let b = pool.allocate(2 * MIB, Placement::Any)?;
        assert_eq!(first_bytes(&pool.page(&b, 5)?)?, [0; 8]);
        assert_eq!(pool.stats().resident(), 3 * MIB);
        VramPool::free(&pool, b);
        Ok(())
    }

    #[test]
    fn eager_free_returns_at_once_and_the_scrubber_zeroes_in_the_background() -> Result {
        let pool = pool(8 * MIB, 0, Strategy::Eager)?;
        let a = pool.allocate(8 * MIB, Placement::Any)?;
        for index in [0, 1000, 2047] {
            // SAFETY: the test owns the allocation.
            unsafe { pool.page(&a, index)?.write_raw([5u8; 8].as_ptr(), 0, 8)? };
        }
        VramPool::free(&pool, a);
        // Freed: no longer used, free only once scrubbed, and the four always add up.
        let stats = pool.stats();
        assert_eq!(stats.used(), 0);
        assert_eq!(stats.free() + stats.scrubbing(), 8 * MIB);
        assert_counters_add_up(&pool);
        pool.wait_for_scrubber();
        let stats = pool.stats();
        assert_eq!((stats.free(), stats.scrubbing()), (8 * MIB, 0));
        assert_counters_add_up(&pool);
        // The whole card again, at once after a free too: the ALLOC scrubs what it needs.
        let b = pool.allocate(8 * MIB, Placement::Any)?;
        for index in [0, 1000, 2047] {
            assert_eq!(first_bytes(&pool.page(&b, index)?)?, [0; 8]);
            // SAFETY: the test owns the allocation.
            unsafe { pool.page(&b, index)?.write_raw([6u8; 8].as_ptr(), 0, 8)? };
        }
        VramPool::free(&pool, b);
        let c = pool.allocate(8 * MIB, Placement::Any)?;
        for index in [0, 1000, 2047] {
            assert_eq!(first_bytes(&pool.page(&c, index)?)?, [0; 8]);
        }
        assert_counters_add_up(&pool);
        VramPool::free(&pool, c);
        Ok(())
    }

    /// ALLOCs and FREEs of every size while the scrubber runs beside them: every allocation
    /// gets zeroed pages, a full card says `ENOMEM` only when it is full, and the counters
    /// add up after every step.
    #[test]
    fn eager_allocations_race_the_scrubber() -> Result {
        const PAGES: u64 = 1024;
        let pool = pool(PAGES * PAGE, 256 * PAGE, Strategy::Eager)?;
        let mut live: KVec<Allocation> = KVec::new();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..3000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed % 3 != 0 || live.is_empty() {
                let size = (1 + seed % 300) * PAGE;
                match pool.allocate(size, Placement::Any) {
                    Ok(a) => {
                        let last = (a.size() / PAGE) as usize - 1;
                        for index in [0, last / 2, last] {
                            assert_eq!(first_bytes(&pool.page(&a, index)?)?, [0; 8]);
                        }
                        for index in [0, last / 2, last] {
                            // SAFETY: the test owns the allocation.
                            unsafe { pool.page(&a, index)?.write_raw([7u8; 8].as_ptr(), 0, 8)? };
                        }
                        live.push(a, GFP_KERNEL)?;
                    }
                    Err(e) => {
                        assert_eq!(e, ENOMEM);
                        // Not for want of scrubbing: with everything scrubbed, it still fails.
                        pool.wait_for_scrubber();
                        assert_eq!(pool.stats().scrubbing(), 0);
                        assert!(pool.allocate(size, Placement::Any).is_err());
                        let used: u64 = live.iter().map(Allocation::size).sum();
                        assert_eq!(pool.stats().used(), used);
                    }
                }
            } else {
                let index = (seed as usize / 7) % live.len();
                VramPool::free(&pool, live.remove(index).map_err(|_| EINVAL)?);
            }
            if step % 10 == 0 {
                assert_counters_add_up(&pool);
            }
        }
        for a in live.drain_all() {
            VramPool::free(&pool, a);
        }
        pool.wait_for_scrubber();
        assert_eq!(pool.stats().free(), (PAGES + 256) * PAGE);
        assert_counters_add_up(&pool);
        Ok(())
    }

    #[test]
    fn eager_fragmentation_spills_into_the_other_tier() -> Result {
        let pool = pool(4 * PAGE, 4 * PAGE, Strategy::Eager)?;
        let a = pool.allocate(PAGE, Placement::Any)?;
        let b = pool.allocate(2 * PAGE, Placement::Any)?;
        let c = pool.allocate(PAGE, Placement::Any)?;
        VramPool::free(&pool, a);
        VramPool::free(&pool, c);
        // Two pages free in the physical tier, but not next to each other.
        let d = pool.allocate(2 * PAGE, Placement::Any)?;
        assert_eq!(d.tier(), Tier::Virtual);
        assert_eq!(pool.stats().tier(Tier::Physical).used, 2 * PAGE);
        VramPool::free(&pool, b);
        VramPool::free(&pool, d);
        assert_eq!(pool.stats().used(), 0);
        Ok(())
    }
}
