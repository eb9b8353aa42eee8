// SPDX-License-Identifier: GPL-2.0

//! Memory with the GFP flags that emuv needs and 7.2's `kernel::alloc::Flags` cannot express.

use kernel::{
    alloc::AllocError,
    bindings,
    ffi::c_ulong,
    maple_tree::MapleTreeAlloc,
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed},
        Arc,
    },
};

/// `__GFP_RETRY_MAYFAIL | __GFP_NOWARN | __GFP_ZERO | __GFP_ACCOUNT` on top of `GFP_KERNEL`:
/// fail instead of invoking the OOM killer, stay quiet (emuv reports failures itself), hand out
/// zeroed memory (it reaches userspace), and charge the caller's memory cgroup.
const fn pool_gfp() -> bindings::gfp_t {
    const fn bit(b: u32) -> bindings::gfp_t {
        1 << b
    }
    // GFP_KERNEL is __GFP_RECLAIM | __GFP_IO | __GFP_FS.
    bit(bindings::___GFP_DIRECT_RECLAIM_BIT)
        | bit(bindings::___GFP_KSWAPD_RECLAIM_BIT)
        | bit(bindings::___GFP_IO_BIT)
        | bit(bindings::___GFP_FS_BIT)
        | bit(bindings::___GFP_RETRY_MAYFAIL_BIT)
        | bit(bindings::___GFP_NOWARN_BIT)
        | bit(bindings::___GFP_ZERO_BIT)
        | bit(bindings::___GFP_ACCOUNT_BIT)
}

const POOL_GFP: bindings::gfp_t = pool_gfp();

/// `POOL_GFP` for a 2 MiB folio: from free memory only, no direct reclaim or compaction (nor
/// `__GFP_RETRY_MAYFAIL`), waking kswapd and kcompactd to make 2 MiB blocks in the background,
/// as THP's `defrag=defer` does. A fragmented machine then falls back to 4 KiB pages at once:
/// with `__GFP_NORETRY`'s single reclaim and compaction pass instead, a first touch took 1.27
/// times as long as with 4 KiB pages alone, against 1.13 this way (`fragmented_touch_vs_4k`,
/// Debian's kernel).
const HUGE_GFP: bindings::gfp_t = POOL_GFP
    & !(1 << bindings::___GFP_RETRY_MAYFAIL_BIT)
    & !(1 << bindings::___GFP_DIRECT_RECLAIM_BIT);

/// Order of a PMD-sized folio: 2 MiB on x86-64.
pub(crate) const HUGE_ORDER: u32 = bindings::PMD_ORDER;
/// Pages in a PMD-sized folio.
pub(crate) const HUGE_PAGES: usize = 1 << HUGE_ORDER;
/// Bytes in a PMD-sized folio, and what one PMD maps.
pub(crate) const HUGE_SIZE: usize = PAGE_SIZE << HUGE_ORDER;

/// What vmalloc itself allocates besides `bytes` of pages, with `GFP_KERNEL` whatever the
/// caller asked for (so running out there wakes the OOM killer instead of failing): page
/// tables (one 8-byte entry per page) and, with `KASAN_VMALLOC`, one shadow byte per eight.
pub(crate) fn vmalloc_overhead(bytes: u64) -> u64 {
    let page_tables = bytes / (PAGE_SIZE as u64 / 8);
    let kasan_shadow = if cfg!(CONFIG_KASAN_VMALLOC) {
        bytes / 8
    } else {
        0
    };
    page_tables + kasan_shadow
}

/// Memory the page allocator could hand out now without swapping, in bytes.
pub(crate) fn available_bytes() -> u64 {
    // SAFETY: `si_mem_available` only reads global counters.
    let pages = unsafe { bindings::si_mem_available() };
    u64::try_from(pages).unwrap_or(0) * PAGE_SIZE as u64
}

/// One zeroed order-0 page, owned.
///
/// # Invariants
///
/// `page` came from `alloc_pages(POOL_GFP, 0)` and this value holds its only reference taken by
/// emuv (user mappings take their own).
pub(crate) struct OwnedPage {
    page: core::ptr::NonNull<bindings::page>,
}

// SAFETY: a page has no thread affinity.
unsafe impl Send for OwnedPage {}
// SAFETY: `OwnedPage` exposes only its address; concurrent readers are fine.
unsafe impl Sync for OwnedPage {}

impl OwnedPage {
    /// Allocates one zeroed page, failing (never OOM-killing) when memory is short.
    pub(crate) fn alloc() -> Result<Self, AllocError> {
        // SAFETY: allocating a page has no preconditions beyond a sleepable context, which all
        // of emuv's allocation paths are.
        let page = unsafe { bindings::alloc_pages(POOL_GFP, 0) };
        core::ptr::NonNull::new(page)
            .map(|page| Self { page })
            .ok_or(AllocError)
    }

    /// The `struct page` pointer, valid while `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut bindings::page {
        self.page.as_ptr()
    }
}

impl Drop for OwnedPage {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own this reference; user mappings hold their own.
        unsafe { bindings::__free_pages(self.page.as_ptr(), 0) };
    }
}

/// One zeroed 2 MiB folio, owned: emuv's reference to it. Mappings (one PMD, or PTEs of its
/// pages after a split) and anything else that took the folio hold references of their own, so
/// the memory goes back to the page allocator only when the last of them lets go.
///
/// # Invariants
///
/// `folio` came from a folio allocation of order [`HUGE_ORDER`] with `HUGE_GFP`, and this value
/// holds the reference that allocation returned.
pub(crate) struct HugeFolio {
    folio: core::ptr::NonNull<bindings::folio>,
}

// SAFETY: a folio has no thread affinity.
unsafe impl Send for HugeFolio {}
// SAFETY: `HugeFolio` exposes only addresses; concurrent readers are fine.
unsafe impl Sync for HugeFolio {}

impl HugeFolio {
    /// Allocates one zeroed 2 MiB folio, or fails at once (never OOM-kills, never warns).
    pub(crate) fn alloc() -> Result<Self, AllocError> {
        // SAFETY: allocating has no preconditions beyond a sleepable context, which the fault
        // handler is. Large folios need `__GFP_COMP`, which these functions add.
        #[cfg(CONFIG_NUMA)]
        let folio = unsafe { bindings::folio_alloc_noprof(HUGE_GFP, HUGE_ORDER) };
        // SAFETY: as above; without NUMA there is one node, which the node argument names.
        #[cfg(not(CONFIG_NUMA))]
        let folio = unsafe {
            bindings::__folio_alloc_noprof(HUGE_GFP, HUGE_ORDER, 0, core::ptr::null_mut())
        };
        core::ptr::NonNull::new(folio)
            .map(|folio| Self { folio })
            .ok_or(AllocError)
    }

    /// Gives up ownership: the reference lives on in the returned pointer until `from_raw`.
    pub(crate) fn into_raw(self) -> *mut bindings::folio {
        let folio = self.folio.as_ptr();
        core::mem::forget(self);
        folio
    }

    /// # Safety
    ///
    /// `folio` must come from [`Self::into_raw`], and the reference it carries not be taken back
    /// twice.
    pub(crate) unsafe fn from_raw(folio: *mut bindings::folio) -> Self {
        // SAFETY: `into_raw` returned a non-null pointer.
        let folio = unsafe { core::ptr::NonNull::new_unchecked(folio) };
        Self { folio }
    }
}

impl Drop for HugeFolio {
    fn drop(&mut self) {
        let mut folio = self.folio.as_ptr();
        // SAFETY: by the type invariant we own this reference; `release_pages` is the exported
        // `folio_put` for any folio, and frees the folio if it was the last reference.
        unsafe {
            bindings::release_pages(
                bindings::release_pages_arg {
                    folios: &raw mut folio,
                },
                1,
            )
        };
    }
}

/// A 2 MiB folio borrowed from its owner for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct BorrowedFolio<'a> {
    folio: core::ptr::NonNull<bindings::folio>,
    _owner: core::marker::PhantomData<&'a HugeFolio>,
}

impl<'a> BorrowedFolio<'a> {
    /// # Safety
    ///
    /// `folio` must be a live 2 MiB folio that its owner keeps for `'a`.
    unsafe fn from_raw(folio: core::ptr::NonNull<bindings::folio>) -> Self {
        Self {
            folio,
            _owner: core::marker::PhantomData,
        }
    }

    /// The `struct folio` pointer, valid for `'a`.
    pub(crate) fn as_ptr(&self) -> *mut bindings::folio {
        self.folio.as_ptr()
    }

    /// Its page `index` (below [`HUGE_PAGES`]).
    pub(crate) fn page(&self, index: usize) -> Option<BorrowedPage<'a>> {
        if index >= HUGE_PAGES {
            return None;
        }
        // SAFETY: a folio starts with its first page, and its pages are consecutive in the
        // memory map (`folio_page()`); `index` is in bounds.
        let page = unsafe { self.folio.cast::<bindings::page>().add(index) };
        // SAFETY: the page is part of the folio, which lives for `'a`.
        Some(unsafe { BorrowedPage::from_raw(page) })
    }
}

/// A zeroed, page-aligned vmalloc area: the eager pool's backing store.
///
/// # Invariants
///
/// `ptr` is a live vmalloc allocation of `len` bytes, owned by this value.
pub(crate) struct VmallocArea {
    ptr: core::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: vmalloc memory has no thread affinity.
unsafe impl Send for VmallocArea {}
// SAFETY: only page addresses are handed out through `&self`.
unsafe impl Sync for VmallocArea {}

impl VmallocArea {
    /// Reserves and zeroes `len` bytes of vmalloc memory (rounded up to pages).
    pub(crate) fn new(len: usize) -> Result<Self, AllocError> {
        let len = len.checked_next_multiple_of(PAGE_SIZE).ok_or(AllocError)?;
        if len == 0 {
            return Err(AllocError);
        }
        // SAFETY: a null `p` makes `vrealloc_node_align` a fresh allocation; it may sleep, and
        // callers are in process context.
        let ptr = unsafe {
            bindings::vrealloc_node_align(
                core::ptr::null(),
                len,
                PAGE_SIZE as c_ulong,
                POOL_GFP,
                bindings::NUMA_NO_NODE,
            )
        };
        core::ptr::NonNull::new(ptr.cast::<u8>())
            .map(|ptr| Self { ptr, len })
            .ok_or(AllocError)
    }

    /// Number of pages in the area.
    pub(crate) fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    /// The page at `index`, or `None` past the end.
    pub(crate) fn page(&self, index: usize) -> Option<BorrowedPage<'_>> {
        if index >= self.pages() {
            return None;
        }
        // SAFETY: `index` is in bounds, so the address lies inside the live vmalloc area.
        let addr = unsafe { self.ptr.as_ptr().add(index * PAGE_SIZE) };
        // SAFETY: `addr` is inside our vmalloc area, which the returned borrow cannot outlive.
        Some(unsafe {
            kernel::alloc::allocator::Vmalloc::to_page(core::ptr::NonNull::new_unchecked(addr))
        })
    }

    /// Zeroes page `index`, so that it is handed out again clean.
    pub(crate) fn zero_page(&self, index: usize) {
        if index >= self.pages() {
            return;
        }
        // SAFETY: the page lies inside the area; the pool zeroes only pages that no allocation
        // owns, so no Rust reference to these bytes exists.
        unsafe { core::ptr::write_bytes(self.ptr.as_ptr().add(index * PAGE_SIZE), 0, PAGE_SIZE) };
    }

    /// Whether anything besides the area itself holds page `index`: a user mapping, a pipe
    /// after `vmsplice()`, an io_uring fixed buffer, direct I/O in flight, any GUP reference or
    /// pin (a pin counts 1024 references). Once the pool's own mappings are gone nothing can
    /// take a new reference, so `false` stays `false`.
    pub(crate) fn page_held_elsewhere(&self, index: usize) -> bool {
        let Some(page) = self.page(index) else {
            return false;
        };
        // SAFETY: `_refcount` of a live page (vmalloc splits its pages into order-0 pages,
        // each its own folio) read atomically, as `page_ref_count()` does. Acquire: whoever
        // dropped their reference finished with the page's contents first.
        let refs = unsafe {
            Atomic::<i32>::from_ptr(&raw mut (*page.as_ptr())._refcount.counter).load(Acquire)
        };
        refs != 1
    }
}

impl Drop for VmallocArea {
    fn drop(&mut self) {
        // SAFETY: `ptr` is our vmalloc allocation (type invariant); `kvfree` handles vmalloc.
        unsafe { bindings::kvfree(self.ptr.as_ptr().cast()) };
    }
}

/// A zeroed array of atomic pointers from kvmalloc with the pool's GFP flags (kmalloc for small
/// arrays, vmalloc for large ones).
///
/// # Invariants
///
/// `ptr` is a live kvmalloc allocation of `len` elements, all initialised (zero is null).
struct AtomicPtrArray<T> {
    ptr: core::ptr::NonNull<Atomic<*mut T>>,
    len: usize,
}

impl<T> AtomicPtrArray<T> {
    fn new(len: usize) -> Result<Self, AllocError> {
        let bytes = len
            .checked_mul(core::mem::size_of::<Atomic<*mut T>>())
            .ok_or(AllocError)?;
        // SAFETY: a null `p` makes this a fresh allocation; callers are in process context.
        let ptr = unsafe {
            bindings::kvrealloc_node_align(
                core::ptr::null(),
                bytes.max(1),
                core::mem::align_of::<Atomic<*mut T>>() as c_ulong,
                POOL_GFP,
                bindings::NUMA_NO_NODE,
            )
        };
        // `__GFP_ZERO` zeroed it, and an all-zero `Atomic<*mut T>` is a null pointer.
        core::ptr::NonNull::new(ptr.cast())
            .map(|ptr| Self { ptr, len })
            .ok_or(AllocError)
    }

    fn slots(&self) -> &[Atomic<*mut T>] {
        // SAFETY: by the type invariant `len` initialised elements live at `ptr`.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Gives up ownership: the array lives on at the returned address until `from_raw`.
    fn into_raw(self) -> *mut Atomic<*mut T> {
        let ptr = self.ptr.as_ptr();
        core::mem::forget(self);
        ptr
    }

    /// # Safety
    ///
    /// `ptr` must come from `into_raw` of an array of `len` elements, not yet taken back.
    unsafe fn from_raw(ptr: *mut Atomic<*mut T>, len: usize) -> Self {
        // SAFETY: non-null, as `into_raw` returned it from a live array.
        let ptr = unsafe { core::ptr::NonNull::new_unchecked(ptr) };
        Self { ptr, len }
    }
}

impl<T> Drop for AtomicPtrArray<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by `kvrealloc_node_align` in `new` (type invariant).
        unsafe { bindings::kvfree(self.ptr.as_ptr().cast()) };
    }
}

// SAFETY: atomics may be shared and sent between threads.
unsafe impl<T> Send for AtomicPtrArray<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for AtomicPtrArray<T> {}

/// Pages per second-level table (one page of pointers), which is also the pages of one 2 MiB
/// folio: a top-level slot stands for one 2 MiB unit either way.
const SLOTS_PER_CHUNK: usize = PAGE_SIZE / core::mem::size_of::<usize>();
const _: () = assert!(SLOTS_PER_CHUNK == HUGE_PAGES);

/// A second-level table: `SLOTS_PER_CHUNK` page pointers.
type Chunk = AtomicPtrArray<bindings::page>;
/// What a top-level slot holds: the first slot of a chunk from `Chunk::into_raw`, or a
/// 2 MiB folio from `HugeFolio::into_raw` with bit 0 set (a table's address never has it).
type ChunkSlots = Atomic<*mut bindings::page>;

/// What one top-level slot, one 2 MiB unit, holds.
enum Unit<'a> {
    Empty,
    /// 4 KiB pages, each allocated on first use.
    Pages(&'a [ChunkSlots]),
    /// One 2 MiB folio.
    Huge(BorrowedFolio<'a>),
}

const HUGE_TAG: usize = 1;

/// Whether a slot holding `value` holds a folio (tagged) rather than a table.
fn is_huge_tagged(value: *mut ChunkSlots) -> bool {
    value as usize & HUGE_TAG != 0
}

/// Result of a page lookup: the page, and whether this call allocated memory for it (so that
/// resident memory is counted exactly once).
pub(crate) struct Found<P> {
    pub(crate) page: P,
    pub(crate) allocated: bool,
}

/// A sparse array of pages, allocated (zeroed) on first use and freed on drop, in 2 MiB units.
///
/// One pointer per 2 MiB unit up front. A unit that a 2 MiB mapping asks for first becomes one
/// 2 MiB folio; one that a 4 KiB mapping asks for first (or whose folio could not be had) gets a
/// table of 512 page pointers, each filled on first use. So bookkeeping costs 8 bytes per 2 MiB
/// held in 2 MiB pages, 8 bytes per 4 KiB page otherwise, and nothing where nothing was touched.
/// All slots are filled lock-free with compare-and-exchange: racing faults agree on one winner.
///
/// # Invariants
///
/// Every non-null top-level slot is either a chunk of `SLOTS_PER_CHUNK` from `Chunk::into_raw`
/// or a tagged folio from `HugeFolio::into_raw`, never replaced once set; every non-null chunk
/// slot is a page from `OwnedPage::alloc` whose ownership moved into the slot.
pub(crate) struct SparsePages {
    chunks: AtomicPtrArray<ChunkSlots>,
    pages: usize,
}

impl SparsePages {
    /// An array of `pages` slots, none allocated.
    pub(crate) fn new(pages: usize) -> Result<Self, AllocError> {
        Ok(Self {
            chunks: AtomicPtrArray::new(pages.div_ceil(SLOTS_PER_CHUNK))?,
            pages,
        })
    }

    /// Page `index`, allocating it when first asked for: a 4 KiB page, or the matching page of
    /// its unit's 2 MiB folio if the unit has one.
    pub(crate) fn get_or_alloc(&self, index: usize) -> Result<Found<BorrowedPage<'_>>> {
        if index >= self.pages {
            return Err(EINVAL);
        }
        let unit_index = index / SLOTS_PER_CHUNK;
        let mut unit = self.unit(unit_index);
        if let Unit::Empty = unit {
            unit = self.fill_with_chunk(unit_index)?;
        }
        let chunk = match unit {
            Unit::Huge(folio) => {
                let page = folio.page(index % SLOTS_PER_CHUNK).ok_or(EINVAL)?;
                return Ok(Found {
                    page,
                    allocated: false,
                });
            }
            Unit::Pages(chunk) => chunk,
            // A filled slot is never emptied again.
            Unit::Empty => return Err(EINVAL),
        };
        let slot = &chunk[index % SLOTS_PER_CHUNK];
        let mut allocated = false;
        let mut page = slot.load(Acquire);
        if page.is_null() {
            let new = core::mem::ManuallyDrop::new(OwnedPage::alloc()?);
            match slot.cmpxchg(core::ptr::null_mut(), new.as_ptr(), Full) {
                Ok(_) => {
                    allocated = true;
                    page = new.as_ptr();
                }
                Err(winner) => {
                    // Another thread filled the slot first: keep its page, free ours.
                    drop(core::mem::ManuallyDrop::into_inner(new));
                    page = winner;
                }
            }
        }
        // SAFETY: `page` is non-null and owned by the slot (type invariant) until `self` drops,
        // which the returned borrow outlives not.
        let page = unsafe { BorrowedPage::from_raw(core::ptr::NonNull::new_unchecked(page)) };
        Ok(Found { page, allocated })
    }

    /// The 2 MiB folio of unit `unit_index`, allocated when first asked for, unless the unit is
    /// to be mapped with 4 KiB pages: it is not whole (the array's tail), it already has 4 KiB
    /// pages, or no 2 MiB folio can be had now.
    pub(crate) fn get_or_alloc_huge(&self, unit_index: usize) -> HugeLookup<'_> {
        if (unit_index + 1) * SLOTS_PER_CHUNK > self.pages {
            return HugeLookup::NotHuge;
        }
        match self.unit(unit_index) {
            Unit::Huge(folio) => {
                return HugeLookup::Found(Found {
                    page: folio,
                    allocated: false,
                })
            }
            Unit::Pages(_) => return HugeLookup::NotHuge,
            Unit::Empty => {}
        }
        let Ok(new) = HugeFolio::alloc() else {
            return HugeLookup::NoMemory;
        };
        let raw = new.into_raw();
        let tagged = (raw as usize | HUGE_TAG) as *mut ChunkSlots;
        let won = self.chunks.slots()[unit_index]
            .cmpxchg(core::ptr::null_mut(), tagged, Full)
            .is_ok();
        if !won {
            // Another fault filled the unit first, with a folio or a table: free ours.
            // SAFETY: `raw` came from `into_raw` above and was never shared.
            drop(unsafe { HugeFolio::from_raw(raw) });
        }
        match self.unit(unit_index) {
            Unit::Huge(folio) => HugeLookup::Found(Found {
                page: folio,
                allocated: won,
            }),
            _ => HugeLookup::NotHuge,
        }
    }

    /// How many pages have been allocated, and how many of them are in 2 MiB folios.
    pub(crate) fn resident(&self) -> (usize, usize) {
        let (mut pages, mut huge) = (0, 0);
        for unit_index in 0..self.chunks.slots().len() {
            match self.unit(unit_index) {
                Unit::Empty => {}
                Unit::Huge(_) => huge += SLOTS_PER_CHUNK,
                Unit::Pages(chunk) => {
                    pages += chunk.iter().filter(|p| !p.load(Relaxed).is_null()).count()
                }
            }
        }
        (pages + huge, huge)
    }

    /// What unit `unit_index` holds now.
    /// Whether unit `unit_index` holds a 2 MiB folio (false past the end). Once a unit is
    /// filled it never changes, so `true` stays `true`.
    pub(crate) fn is_huge(&self, unit_index: usize) -> bool {
        self.chunks
            .slots()
            .get(unit_index)
            .is_some_and(|slot| is_huge_tagged(slot.load(Acquire)))
    }

    fn unit(&self, unit_index: usize) -> Unit<'_> {
        let value = self.chunks.slots()[unit_index].load(Acquire);
        if value.is_null() {
            Unit::Empty
        } else if is_huge_tagged(value) {
            let folio = (value as usize & !HUGE_TAG) as *mut bindings::folio;
            // SAFETY: a tagged slot holds a live folio until `self` drops (type invariant), which
            // the borrow outlives not; untagged, the pointer is non-null.
            Unit::Huge(unsafe { BorrowedFolio::from_raw(core::ptr::NonNull::new_unchecked(folio)) })
        } else {
            // SAFETY: untagged non-null slots point at live chunks of `SLOTS_PER_CHUNK` until
            // `self` drops (type invariant).
            Unit::Pages(unsafe { core::slice::from_raw_parts(value, SLOTS_PER_CHUNK) })
        }
    }

    /// Gives unit `unit_index`, found empty, a table of 4 KiB pages, unless a racing fault gave
    /// it a table or a folio first; returns what the unit holds then.
    fn fill_with_chunk(&self, unit_index: usize) -> Result<Unit<'_>> {
        let new = Chunk::new(SLOTS_PER_CHUNK)?.into_raw();
        if self.chunks.slots()[unit_index]
            .cmpxchg(core::ptr::null_mut(), new, Full)
            .is_err()
        {
            // Another thread filled it first: keep that, free ours.
            // SAFETY: `new` came from `into_raw` above and was never shared.
            drop(unsafe { Chunk::from_raw(new, SLOTS_PER_CHUNK) });
        }
        Ok(self.unit(unit_index))
    }
}

/// What [`SparsePages::get_or_alloc_huge`] found.
pub(crate) enum HugeLookup<'a> {
    /// The unit's folio.
    Found(Found<BorrowedFolio<'a>>),
    /// The unit is mapped with 4 KiB pages.
    NotHuge,
    /// No 2 MiB folio could be had now; map 4 KiB pages.
    NoMemory,
}

impl Drop for SparsePages {
    fn drop(&mut self) {
        for top in self.chunks.slots() {
            let value = top.load(Relaxed);
            if value.is_null() {
                continue;
            }
            if is_huge_tagged(value) {
                // SAFETY: see the type invariant: the slot owns this folio reference.
                drop(unsafe {
                    HugeFolio::from_raw((value as usize & !HUGE_TAG) as *mut bindings::folio)
                });
                continue;
            }
            // SAFETY: see the type invariant; `&mut self` means no one else uses the slots.
            let chunk = unsafe { Chunk::from_raw(value, SLOTS_PER_CHUNK) };
            for page in chunk.slots() {
                if let Some(page) = core::ptr::NonNull::new(page.load(Relaxed)) {
                    // INVARIANT: the slot owned this page; user mappings hold their own references.
                    drop(OwnedPage { page });
                }
            }
        }
    }
}

/// Ranges of indices, each with a shared value, in `min..max`, first fit: a maple tree in
/// allocation-range mode.
///
/// 7.2's `MapleTreeAlloc` is neither `Send` nor `Sync`, although every operation on it takes
/// the tree's own spinlock; this wrapper says so once.
pub(crate) struct RangeTree<V: Send + Sync + 'static> {
    tree: Pin<KBox<MapleTreeAlloc<Arc<V>>>>,
}

// SAFETY: `mtree_alloc_range`, `mtree_load` and `mtree_erase` take the tree's internal spinlock,
// and the values are `Arc`s of `Send + Sync` data, so the tree may be used and dropped from any
// thread.
unsafe impl<V: Send + Sync> Send for RangeTree<V> {}
// SAFETY: as above: shared use is serialised by the tree's spinlock.
unsafe impl<V: Send + Sync> Sync for RangeTree<V> {}

impl<V: Send + Sync> RangeTree<V> {
    /// An empty tree; its nodes are allocated with `GFP_KERNEL_ACCOUNT`, charged to the caller.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            tree: KBox::pin_init(MapleTreeAlloc::new(), GFP_KERNEL_ACCOUNT)?,
        })
    }

    /// Stores `value` for the first free range of `count` indices in `min..max` that starts on
    /// a multiple of `align`, and returns that start; `ENOSPC` when no range is left, `ENOMEM`
    /// when the tree cannot grow. The range reserved may begin up to `align - 1` indices before
    /// the start (the maple tree has no aligned search): those indices find `value` too.
    pub(crate) fn insert(
        &self,
        count: usize,
        align: usize,
        value: Arc<V>,
        min: usize,
        max: usize,
    ) -> Result<usize> {
        let reserved = count.checked_add(align - 1).ok_or(ENOSPC)?;
        let first = self
            .tree
            .alloc_range(reserved, value, min..max, GFP_KERNEL_ACCOUNT)
            .map_err(|e| match Error::from(e) {
                e if e == EBUSY => ENOSPC,
                e => e,
            })?;
        first.checked_next_multiple_of(align).ok_or(ENOSPC)
    }

    /// The value whose range holds `index`.
    pub(crate) fn get(&self, index: usize) -> Option<Arc<V>> {
        self.tree.lock().load(index).map(Arc::from)
    }

    /// Removes the range that holds `index`, handing its value back: `ENOENT` if there is none,
    /// `ENOMEM` if the tree could not get the nodes it needed to shrink (the range stays).
    pub(crate) fn remove(&self, index: usize) -> Result<Arc<V>> {
        let value = self.tree.erase(index).ok_or(ENOENT)?;
        if self.tree.lock().load(index).is_some() {
            // `mtree_erase` returns the entry even when it failed to remove it for want of
            // memory; the tree still owns that reference, so it must not be dropped here.
            let _ = Arc::into_raw(value);
            return Err(ENOMEM);
        }
        Ok(value)
    }
}
