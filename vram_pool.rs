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
//!   fits in available memory); allocations are page ranges of it, zeroed again when freed. A
//!   freed page that something else still holds (a pipe after `vmsplice()`, an io_uring fixed
//!   buffer, direct I/O) is quarantined instead, and handed out again only once it is let go
//!   (see `page_ranges.rs`). Lazy pages need no quarantine: each allocation gets pages of its
//!   own, and the page allocator reuses a page only when its last reference is gone.
//!
//! Memory comes with `__GFP_RETRY_MAYFAIL`: when it runs out, emuv fails with `ENOMEM` and the
//! OOM killer is never invoked on its behalf.

use crate::{
    gate::AccessGate,
    glue::mem::{
        available_bytes, vmalloc_overhead, BorrowedFolio, HugeLookup, SparsePages, VmallocArea,
        HUGE_PAGES, HUGE_SIZE,
    },
    page_ranges::PageRanges,
};
use kernel::{
    new_mutex,
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
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

    /// Never negative: `used + quarantined` never exceeds `capacity` by construction.
    pub(crate) fn free(&self) -> u64 {
        self.capacity()
            .saturating_sub(self.used())
            .saturating_sub(self.quarantined())
    }

    pub(crate) fn quarantined(&self) -> u64 {
        self.tiers.iter().map(|t| t.quarantined).sum()
    }

    pub(crate) fn resident(&self) -> u64 {
        self.tiers.iter().map(|t| t.resident).sum()
    }

    pub(crate) fn huge(&self) -> u64 {
        self.tiers.iter().map(|t| t.huge).sum()
    }
}

/// The eager backing of one tier: its area and which pages of it are taken or quarantined.
struct EagerTier {
    area: VmallocArea,
    ranges: Pin<KBox<Mutex<PageRanges>>>,
}

impl EagerTier {
    fn new(bytes: u64) -> Result<Self> {
        let len = usize::try_from(bytes).map_err(|_| ENOMEM)?;
        let area = VmallocArea::new(len)?;
        let ranges = KBox::pin_init(new_mutex!(PageRanges::new(area.pages())?), GFP_KERNEL)?;
        Ok(Self { area, ranges })
    }

    /// A run of `count` pages, after giving back what quarantine can release.
    fn alloc(&self, count: usize) -> Result<usize> {
        let mut ranges = self.ranges.lock();
        self.release_quarantine(&mut ranges);
        ranges.alloc(count)
    }

    /// Frees `first..first + count`: zeroed and free again, except pages still held elsewhere,
    /// which go to quarantine. Zeroing runs outside the lock (the range stays taken meanwhile),
    /// so a large free neither blocks other allocations nor, 7.2 kernels being preemptible,
    /// the CPU.
    fn free(&self, first: usize, count: usize) {
        let mut held = false;
        for page in first..first + count {
            if self.area.page_held_elsewhere(page) {
                // Marked now, before it could be let go unzeroed, so it is zeroed on release.
                self.ranges.lock().quarantine(page);
                held = true;
            } else {
                self.area.zero_page(page);
            }
        }
        let mut ranges = self.ranges.lock();
        ranges.free_unquarantined(first, count);
        if !held {
            self.release_quarantine(&mut ranges);
        }
    }

    fn release_quarantine(&self, ranges: &mut PageRanges) {
        if ranges.quarantined_pages() > 0 {
            ranges.release_quarantine(
                |page| self.area.page_held_elsewhere(page),
                |page| self.area.zero_page(page),
            );
        }
    }

    fn quarantined_bytes(&self) -> u64 {
        self.ranges.lock().quarantined_pages() as u64 * PAGE
    }
}

/// Counters changed together under one lock, so snapshots are consistent.
#[derive(Default)]
struct Counters {
    used: [u64; 2],
    peak_used: u64,
    allocations: u64,
    allocations_total: u64,
}

/// A pool of emulated VRAM.
#[pin_data]
pub(crate) struct VramPool {
    config: PoolConfig,
    eager: [Option<EagerTier>; 2],
    #[pin]
    counters: Mutex<Counters>,
    /// Lazily allocated bytes per tier, all and in 2 MiB pages; atomics because faults update
    /// them without the lock.
    lazy_resident: [Atomic<u64>; 2],
    lazy_huge: [Atomic<u64>; 2],
    huge_fallbacks: Atomic<u64>,
    /// Closed while the card is lost: its memory can no longer be mapped.
    pub(crate) gate: AccessGate,
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
        let mut eager = [None, None];
        if config.strategy == Strategy::Eager {
            Self::check_eager_fits(&config, 1)?;
            for (slot, bytes) in eager
                .iter_mut()
                .zip([config.physical_bytes, config.virtual_bytes])
            {
                if bytes == 0 {
                    continue;
                }
                *slot = Some(EagerTier::new(bytes).inspect_err(|_| {
                    pr_err!(
                        "eager reservation of {} MiB failed: {} MiB available\n",
                        bytes >> 20,
                        available_bytes() >> 20
                    );
                })?);
            }
        }
        Arc::pin_init(
            pin_init!(Self {
                config,
                eager,
                counters <- new_mutex!(Counters::default()),
                lazy_resident: [Atomic::new(0), Atomic::new(0)],
                lazy_huge: [Atomic::new(0), Atomic::new(0)],
                huge_fallbacks: Atomic::new(0),
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
        let counters = self.counters.lock();
        let mut stats = PoolStats {
            peak_used: counters.peak_used,
            allocations: counters.allocations,
            allocations_total: counters.allocations_total,
            huge_fallbacks: self.huge_fallbacks.load(Relaxed),
            ..PoolStats::default()
        };
        for tier in Tier::ALL {
            let capacity = self.capacity(tier);
            stats.tiers[tier as usize] = TierStats {
                capacity,
                used: counters.used[tier as usize],
                resident: match self.config.strategy {
                    Strategy::Eager => capacity,
                    Strategy::Lazy => self.lazy_resident[tier as usize].load(Relaxed),
                },
                quarantined: self.quarantined_bytes(tier),
                huge: self.lazy_huge[tier as usize].load(Relaxed),
            };
        }
        stats
    }

    /// Allocates `size` bytes (rounded up to pages): `EINVAL` for zero or overflowing sizes,
    /// `ENOMEM` when no allowed tier has room (like `cudaMalloc` on a full card).
    pub(crate) fn allocate(&self, size: u64, placement: Placement) -> Result<Allocation> {
        let pages = match pages_for(size) {
            Some(0) | None => return Err(EINVAL),
            Some(pages) => pages,
        };
        let bytes = pages as u64 * PAGE;
        let tiers: &[Tier] = match placement {
            Placement::Only(Tier::Physical) => &[Tier::Physical],
            Placement::Only(Tier::Virtual) => &[Tier::Virtual],
            Placement::Any => &Tier::ALL,
        };
        for &tier in tiers {
            // Take the bytes first, so concurrent allocations cannot overcommit the tier.
            if !self.charge(tier, bytes) {
                continue;
            }
            match self.back(tier, pages) {
                Ok(backing) => {
                    return Ok(Allocation {
                        tier,
                        pages,
                        backing,
                    })
                }
                Err(e) => {
                    self.uncharge(tier, bytes);
                    self.counters.lock().allocations_total -= 1;
                    // An eager tier can be too fragmented for one range while the other has room.
                    if e == ENOMEM {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(ENOMEM)
    }

    /// Returns an allocation's memory to the pool.
    pub(crate) fn free(&self, allocation: Allocation) {
        let tier = allocation.tier;
        match allocation.backing {
            Backing::Lazy(pages) => {
                let (resident, huge) = pages.resident();
                drop(pages);
                self.lazy_resident[tier as usize].fetch_sub(resident as u64 * PAGE, Relaxed);
                self.lazy_huge[tier as usize].fetch_sub(huge as u64 * PAGE, Relaxed);
            }
            Backing::Eager { first_page } => {
                if let Some(eager) = &self.eager[tier as usize] {
                    eager.free(first_page, allocation.pages);
                }
            }
        }
        self.uncharge(tier, allocation.pages as u64 * PAGE);
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
            Backing::Eager { first_page } => self.eager[allocation.tier as usize]
                .as_ref()
                .and_then(|eager| eager.area.page(first_page + index))
                .ok_or(EINVAL),
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

    fn quarantined_bytes(&self, tier: Tier) -> u64 {
        self.eager[tier as usize]
            .as_ref()
            .map_or(0, EagerTier::quarantined_bytes)
    }

    fn charge(&self, tier: Tier, bytes: u64) -> bool {
        let mut counters = self.counters.lock();
        let used = counters.used[tier as usize];
        let quarantined = self.quarantined_bytes(tier);
        if self.capacity(tier) - used - quarantined < bytes {
            return false;
        }
        counters.used[tier as usize] = used + bytes;
        counters.allocations += 1;
        counters.allocations_total += 1;
        let total: u64 = counters.used.iter().sum();
        counters.peak_used = counters.peak_used.max(total);
        true
    }

    fn uncharge(&self, tier: Tier, bytes: u64) {
        let mut counters = self.counters.lock();
        counters.used[tier as usize] -= bytes;
        counters.allocations -= 1;
    }

    fn back(&self, tier: Tier, pages: usize) -> Result<Backing> {
        match &self.eager[tier as usize] {
            None => Ok(Backing::Lazy(SparsePages::new(pages)?)),
            Some(eager) => {
                let first_page = eager.alloc(pages)?;
                Ok(Backing::Eager { first_page })
            }
        }
    }
}

#[cfg(emuv_kunit)]
#[kunit_tests(emuv_vram_pool)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn pool(physical: u64, virtual_: u64, strategy: Strategy) -> Result<Arc<VramPool>> {
        VramPool::new(PoolConfig {
            physical_bytes: physical,
            virtual_bytes: virtual_,
            strategy,
        })
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
            pool.free(a);
            pool.free(b);
            pool.free(c);
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
        pool.free(v);
        pool.free(p);
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
        pool.free(a);
        assert_eq!(pool.stats().resident(), 0);
        // A new allocation gets fresh zeroed pages.
        let b = pool.allocate(4 * MIB, Placement::Any)?;
        assert_eq!(first_bytes(&pool.page(&b, 0)?)?, [0; 8]);
        pool.free(b);
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
        pool.free(a);
        let stats = pool.stats();
        assert_eq!((stats.resident(), stats.huge()), (0, 0));
        // Eager memory is never handed out as folios.
        let eager = self::pool(4 * MIB, 0, Strategy::Eager)?;
        let e = eager.allocate(2 * HUGE, Placement::Any)?;
        assert!(eager.huge_page(&e, 0).is_none());
        eager.free(e);
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
        pool.free(a);
        let b = pool.allocate(2 * MIB, Placement::Any)?;
        assert_eq!(first_bytes(&pool.page(&b, 5)?)?, [0; 8]);
        assert_eq!(pool.stats().resident(), 3 * MIB);
        pool.free(b);
        Ok(())
    }

    #[test]
    fn eager_fragmentation_spills_into_the_other_tier() -> Result {
        let pool = pool(4 * PAGE, 4 * PAGE, Strategy::Eager)?;
        let a = pool.allocate(PAGE, Placement::Any)?;
        let b = pool.allocate(2 * PAGE, Placement::Any)?;
        let c = pool.allocate(PAGE, Placement::Any)?;
        pool.free(a);
        pool.free(c);
        // Two pages free in the physical tier, but not next to each other.
        let d = pool.allocate(2 * PAGE, Placement::Any)?;
        assert_eq!(d.tier(), Tier::Virtual);
        assert_eq!(pool.stats().tier(Tier::Physical).used, 2 * PAGE);
        pool.free(b);
        pool.free(d);
        assert_eq!(pool.stats().used(), 0);
        Ok(())
    }
}
