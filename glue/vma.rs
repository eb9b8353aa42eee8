// SPDX-License-Identifier: GPL-2.0

//! Mapping emulated VRAM into a process: a `vm_operations_struct` whose fault handler takes
//! pages on first touch, and whose `open`/`close` count the mappings.
//!
//! 7.2 has no Rust `vm_operations_struct`; binder sets `vm_ops` by hand too.

use kernel::{
    bindings,
    mm::virt::{VmaNew, VmaRef},
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::Arc,
};

/// Memory that can be mapped: pages by file offset, and a count of live mappings.
pub(crate) trait Mappable: Send + Sync + Sized + 'static {
    /// The page at file offset `pgoff` (in pages), allocated (zeroed) on first use if need be.
    /// An error makes the faulting access `SIGBUS`.
    fn page(&self, pgoff: usize) -> Result<BorrowedPage<'_>>;

    /// A mapping of it appeared (`mmap`, a VMA split or move).
    fn mapped(&self);

    /// A mapping of it went away (`munmap`, exit, the other half of a split).
    fn unmapped(&self);
}

/// Pages mapped per fault: the faulting one and the ones after it.
const FAULT_AROUND_PAGES: usize = 16;

struct VmOps<M>(core::marker::PhantomData<M>);

impl<M: Mappable> VmOps<M> {
    const OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        open: Some(Self::open),
        close: Some(Self::close),
        fault: Some(Self::fault),
        map_pages: Some(Self::map_pages),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// `vma` must carry `OPS`, so its private data is a counted `Arc<M>` from [`map`].
    unsafe fn memory<'a>(vma: *const bindings::vm_area_struct) -> &'a M {
        // SAFETY: per the contract, the pointer came from `Arc::into_raw` and the VMA's
        // reference keeps it alive while the VMA exists.
        unsafe { &*(*vma).vm_private_data.cast::<M>() }
    }

    /// `vm_ops.open`: a copy of a VMA (split, move) takes its own reference.
    ///
    /// # Safety
    ///
    /// Called by the mm on a new VMA copied from one set up by [`map`].
    unsafe extern "C" fn open(vma: *mut bindings::vm_area_struct) {
        // SAFETY: the private data is a counted `Arc<M>`; this makes a second count for the copy.
        let arc = unsafe { Arc::from_raw((*vma).vm_private_data.cast::<M>()) };
        arc.mapped();
        let copy = arc.clone();
        let _ = Arc::into_raw(arc);
        let _ = Arc::into_raw(copy);
    }

    /// `vm_ops.close`: the VMA goes and drops its reference.
    ///
    /// # Safety
    ///
    /// Called by the mm once per VMA set up by [`map`] or copied through `open`.
    unsafe extern "C" fn close(vma: *mut bindings::vm_area_struct) {
        // SAFETY: the VMA's count, given back exactly once.
        let arc = unsafe { Arc::from_raw((*vma).vm_private_data.cast::<M>()) };
        arc.unmapped();
    }

    /// `vm_ops.map_pages`: maps nothing, so every page comes through [`Self::fault`].
    ///
    /// The kernel calls this for read fault-around inside an RCU read-side section, where
    /// neither a lazy page nor a page table may be allocated, and none of the helpers that
    /// could find an existing page table without allocating one is exported to modules. Having
    /// it at all is what matters: a VMA with `map_pages` is one whose `fault` needs no
    /// `mmap_lock` (`vmf_can_call_fault`), so faults complete under the per-VMA lock instead of
    /// being retried under `mmap_lock`. [`Self::fault`] keeps the fault-around.
    ///
    /// # Safety
    ///
    /// Called by the mm for a VMA set up by [`map`].
    unsafe extern "C" fn map_pages(
        _vmf: *mut bindings::vm_fault,
        _start_pgoff: kernel::ffi::c_ulong,
        _end_pgoff: kernel::ffi::c_ulong,
    ) -> bindings::vm_fault_t {
        0
    }

    /// `vm_ops.fault`: inserts the page for the faulting offset, or `SIGBUS` when it cannot
    /// be had (never `VM_FAULT_OOM`, which retries the fault forever).
    ///
    /// It needs no `mmap_lock`: it reads only the VMA's bounds and private data, which the VMA
    /// lock keeps stable, allocates with sleeping allocations, and inserts pages into its own
    /// `VM_MIXEDMAP` VMA under the page-table lock.
    ///
    /// # Safety
    ///
    /// Called by the mm for a VMA set up by [`map`], with `mmap_lock` or the VMA lock held.
    unsafe extern "C" fn fault(vmf: *mut bindings::vm_fault) -> bindings::vm_fault_t {
        // SAFETY: the mm passes a valid fault description for this call.
        let (vma, pgoff, flags) = unsafe {
            (
                (*vmf).__bindgen_anon_1.vma,
                (*vmf).__bindgen_anon_1.pgoff,
                (*vmf).flags,
            )
        };
        // SAFETY: `vma` is ours (see the function's contract).
        let memory = unsafe { Self::memory(vma) };
        let Ok(page) = memory.page(pgoff) else {
            return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
        };
        let write = flags & bindings::fault_flag_FAULT_FLAG_WRITE != 0;
        // SAFETY: `vmf` is valid; the page stays allocated while the VMA holds `memory`, and the
        // page table takes its own reference.
        let ret = unsafe { bindings::vmf_insert_page_mkwrite(vmf, page.as_ptr(), write) };
        // No page table for it (`-ENOMEM`): the page cannot be had either, and `VM_FAULT_OOM`
        // would only retry the fault (or wake the OOM killer).
        if ret & bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t != 0 {
            return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
        }
        // SAFETY: as above; `address` is the faulting page's address.
        let address = unsafe { (*vmf).__bindgen_anon_1.address };
        // SAFETY: the VMA is live for the whole fault.
        Self::fault_around(unsafe { VmaRef::from_raw(vma) }, memory, address, pgoff);
        ret
    }

    /// Maps the next pages of the mapping too, so a program filling its buffer from the start
    /// (the usual way) takes one fault per `FAULT_AROUND_PAGES` pages instead of one per page.
    /// Pages already mapped are skipped by the kernel (`EBUSY`); any failure just stops early,
    /// leaving later pages to their own faults.
    fn fault_around(vma: &VmaRef, memory: &M, address: usize, pgoff: usize) {
        for i in 1..FAULT_AROUND_PAGES {
            let addr = address + i * PAGE_SIZE;
            if addr >= vma.end() {
                break;
            }
            let Ok(page) = memory.page(pgoff + i) else {
                break;
            };
            // SAFETY: a `VM_MIXEDMAP` VMA of ours inside its fault, `addr` within it; the page
            // table takes its own reference to the page.
            let err = unsafe { bindings::vm_insert_page(vma.as_ptr(), addr, page.as_ptr()) };
            if err != 0 && err != EBUSY.to_errno() {
                break;
            }
        }
    }
}

/// Sets up a new shared VMA over `memory`: no copy into children (`fork`), no growth
/// (`mremap`), pages inserted on fault, or all of them now when `prefault` (eager memory, whose
/// pages exist already). The caller has counted this mapping with [`Mappable::mapped`] (under
/// whatever lock orders it against freeing); on error it is uncounted here.
pub(crate) fn map<M: Mappable>(vma: &VmaNew, memory: Arc<M>, prefault: bool) -> Result {
    let result = install(vma, &*memory, prefault);
    if result.is_err() {
        memory.unmapped();
        return result;
    }
    let raw = Arc::into_raw(memory);
    // SAFETY: in `f_op->mmap` the VMA is ours to set up; `OPS` and its callbacks are static, and
    // the private data is the counted `Arc<M>` they expect (given back in `close`).
    unsafe {
        (*vma.as_ptr()).vm_private_data = raw.cast_mut().cast();
        (*vma.as_ptr()).vm_ops = &VmOps::<M>::OPS;
    }
    Ok(())
}

/// Pages inserted per `vm_insert_pages` call when prefaulting: one page-table lock per batch.
const PREFAULT_BATCH: usize = 64;

fn install<M: Mappable>(vma: &VmaNew, memory: &M, prefault: bool) -> Result {
    vma.set_dontcopy();
    vma.set_dontexpand();
    vma.set_mixedmap();
    if !prefault {
        return Ok(());
    }
    let first = pgoff(vma);
    let pages = (vma.end() - vma.start()) / PAGE_SIZE;
    let mut done = 0;
    while done < pages {
        // Prefaulting is only a head start: a signal (`SIGKILL` of a huge `mmap` included)
        // ends it, and the fault handler maps the rest on first touch.
        if kernel::current!().signal_pending() {
            break;
        }
        let count = PREFAULT_BATCH.min(pages - done);
        let mut batch = [core::ptr::null_mut(); PREFAULT_BATCH];
        for (i, slot) in batch[..count].iter_mut().enumerate() {
            *slot = memory.page(first + done + i)?.as_ptr();
        }
        let mut left = count as kernel::ffi::c_ulong;
        // SAFETY: in `f_op->mmap` with `mmap_lock` held for writing, on a `VM_MIXEDMAP` VMA of
        // ours; the range lies inside it; the pages live while the VMA holds `memory`, and the
        // page tables take references of their own.
        kernel::error::to_result(unsafe {
            bindings::vm_insert_pages(
                vma.as_ptr(),
                (vma.start() + done * PAGE_SIZE) as kernel::ffi::c_ulong,
                batch.as_mut_ptr(),
                &mut left,
            )
        })?;
        done += count;
    }
    Ok(())
}

/// Whether the new VMA is a shared mapping (`MAP_SHARED`), also of a file opened read-only,
/// for which the kernel clears `VM_SHARED` but keeps `VM_MAYSHARE`.
pub(crate) fn is_shared(vma: &VmaNew) -> bool {
    // 7.2's `mm::virt::flags::MAYSHARE` is `VM_MAYEXEC` (a typo in `bindings_helper.h`:
    // `RUST_CONST_HELPER_VM_MAYSHARE = VM_MAYEXEC`), so the bit is taken from its number.
    let may_share: bindings::vm_flags_t = 1 << bindings::VMA_MAYSHARE_BIT;
    vma.flags() & may_share != 0
}

/// The file offset, in pages, that the new VMA maps from.
pub(crate) fn pgoff(vma: &VmaNew) -> usize {
    // SAFETY: `vm_pgoff` is plain data, fixed while the VMA is being set up.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}
