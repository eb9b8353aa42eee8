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

/// Pages per second-level table: one page of pointers.
const SLOTS_PER_CHUNK: usize = PAGE_SIZE / core::mem::size_of::<usize>();

/// A second-level table: `SLOTS_PER_CHUNK` page pointers.
type Chunk = AtomicPtrArray<bindings::page>;
/// What a top-level slot holds: the first slot of a chunk, from `Chunk::into_raw`.
type ChunkSlots = Atomic<*mut bindings::page>;

/// A sparse array of pages, each allocated (zeroed) on first use and freed on drop.
///
/// Two levels, both filled lock-free with compare-and-exchange: one pointer per 512 pages up
/// front, then one pointer per page once any page of its 512 is used. That is 8 bytes per
/// resident page, and nothing per page that was never touched.
///
/// # Invariants
///
/// Every non-null top-level slot is a chunk of `SLOTS_PER_CHUNK` from `Chunk::into_raw`, and
/// every non-null
/// chunk slot a page from `OwnedPage::alloc` whose ownership moved into the slot.
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

    /// Page `index`, allocating it when first asked for. The flag says whether this call
    /// allocated it (to count resident memory exactly once).
    pub(crate) fn get_or_alloc(&self, index: usize) -> Result<(BorrowedPage<'_>, bool)> {
        if index >= self.pages {
            return Err(EINVAL);
        }
        let chunk = self.chunk(index / SLOTS_PER_CHUNK)?;
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
        Ok((page, allocated))
    }

    /// How many pages have been allocated.
    pub(crate) fn resident(&self) -> usize {
        (0..self.chunks.slots().len())
            .filter_map(|i| self.existing_chunk(i))
            .map(|chunk| chunk.iter().filter(|p| !p.load(Relaxed).is_null()).count())
            .sum()
    }

    /// The second-level table for `chunk_index`, if it was allocated.
    fn existing_chunk(&self, chunk_index: usize) -> Option<&[ChunkSlots]> {
        let chunk = self.chunks.slots()[chunk_index].load(Acquire);
        // SAFETY: non-null top-level slots point at live chunks of `SLOTS_PER_CHUNK` until
        // `self` drops (type invariant).
        (!chunk.is_null()).then(|| unsafe { core::slice::from_raw_parts(chunk, SLOTS_PER_CHUNK) })
    }

    /// The second-level table for `chunk_index`, allocated when first needed.
    fn chunk(&self, chunk_index: usize) -> Result<&[ChunkSlots]> {
        if let Some(chunk) = self.existing_chunk(chunk_index) {
            return Ok(chunk);
        }
        let new = Chunk::new(SLOTS_PER_CHUNK)?.into_raw();
        if let Err(_winner) =
            self.chunks.slots()[chunk_index].cmpxchg(core::ptr::null_mut(), new, Full)
        {
            // Another thread installed one first: keep it, free ours.
            // SAFETY: `new` came from `into_raw` above and was never shared.
            drop(unsafe { Chunk::from_raw(new, SLOTS_PER_CHUNK) });
        }
        self.existing_chunk(chunk_index).ok_or(ENOMEM)
    }
}

impl Drop for SparsePages {
    fn drop(&mut self) {
        for top in self.chunks.slots() {
            let chunk = top.load(Relaxed);
            if chunk.is_null() {
                continue;
            }
            // SAFETY: see the type invariant; `&mut self` means no one else uses the slots.
            let chunk = unsafe { Chunk::from_raw(chunk, SLOTS_PER_CHUNK) };
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

    /// Stores `value` for the first free range of `count` indices in `min..max` and returns
    /// its first index; `ENOSPC` when no range is left, `ENOMEM` when the tree cannot grow.
    pub(crate) fn insert(
        &self,
        count: usize,
        value: Arc<V>,
        min: usize,
        max: usize,
    ) -> Result<usize> {
        self.tree
            .alloc_range(count, value, min..max, GFP_KERNEL_ACCOUNT)
            .map_err(|e| match Error::from(e) {
                e if e == EBUSY => ENOSPC,
                e => e,
            })
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
