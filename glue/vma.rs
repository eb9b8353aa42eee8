// SPDX-License-Identifier: GPL-2.0

//! Mapping emulated VRAM into a process: a `vm_operations_struct` whose fault handlers take
//! pages on first touch (2 MiB at a time where the memory and the mapping allow it), whose
//! `open`/`close` count the mappings, and the `get_unmapped_area` that places mappings so that
//! 2 MiB of memory can be mapped with one PMD.
//!
//! 7.2 has no Rust `vm_operations_struct`, nor anything for huge faults or folios; binder sets
//! `vm_ops` by hand too.

use super::mem::{BorrowedFolio, HUGE_SIZE};
use crate::gate::AccessGate;
use kernel::{
    bindings,
    mm::virt::{VmaNew, VmaRef},
    page::{BorrowedPage, PAGE_SIZE},
    prelude::*,
    sync::{Arc, Mutex},
};

/// Memory that can be mapped: pages by file offset, and a count of live mappings.
pub(crate) trait Mappable: Send + Sync + Sized + 'static {
    /// The page at file offset `pgoff` (in pages), allocated (zeroed) on first use if need be.
    /// An error makes the faulting access `SIGBUS`.
    fn page(&self, pgoff: usize) -> Result<BorrowedPage<'_>>;

    /// The 2 MiB folio holding file offsets `pgoff..pgoff + 512` in order, allocated (zeroed) on
    /// first use, or `None` to map them with 4 KiB pages through [`Self::page`].
    fn huge_folio(&self, pgoff: usize) -> Option<BorrowedFolio<'_>>;

    /// Whether file offset `pgoff` lies in a 2 MiB unit that has a 2 MiB folio, and so may be
    /// mapped by a PMD as well as by page-table entries. Fixed once [`Self::page`] returned.
    fn in_huge_unit(&self, pgoff: usize) -> bool;

    /// Held while a fault decides between a PMD and a page table for a 2 MiB unit with a folio
    /// and maps it, so that a 2 MiB fault and a 4 KiB fault of one unit never meet halfway.
    fn unit_mapping_lock(&self) -> &Mutex<()>;

    /// Closed when the memory may no longer be mapped: faults then `SIGBUS`, `mmap` fails.
    fn gate(&self) -> &AccessGate;

    /// A mapping of it appeared (`mmap`, a VMA split or move).
    fn mapped(&self);

    /// A mapping of it went away (`munmap`, exit, the other half of a split).
    fn unmapped(&self);
}

/// Pages mapped per fault: the faulting one and the ones after it.
const FAULT_AROUND_PAGES: usize = 16;

/// The operations of a mapping of `M`; `WHOLE`: memory that exists up front (eager), mapped in
/// full by the first fault.
struct VmOps<M, const WHOLE: bool>(core::marker::PhantomData<M>);

impl<M: Mappable, const WHOLE: bool> VmOps<M, WHOLE> {
    const OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        open: Some(Self::open),
        close: Some(Self::close),
        fault: Some(Self::fault),
        #[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
        huge_fault: Some(Self::huge_fault),
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
    /// lock keeps stable, allocates with sleeping allocations, and inserts pages under the
    /// page-table lock.
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
        // Inside until the pages are in the page table (`AccessGate`).
        let Some(_inside) = memory.gate().enter() else {
            return SIGBUS;
        };
        let Ok(page) = memory.page(pgoff) else {
            return SIGBUS;
        };
        // A page of a unit with a folio may meet a PMD that a 2 MiB fault of another thread (one
        // with transparent huge pages, which `PR_SET_THP_DISABLE` turns on and off per fault)
        // just set: a page table under it would fail (`SIGBUS`, or `VM_BUG_ON` in
        // `walk_to_pmd()` on debug kernels). Under the lock the PMD cannot change to huge; if it
        // is huge already, the page is mapped: the access is retried.
        let _unit = if memory.in_huge_unit(pgoff) {
            let guard = memory.unit_mapping_lock().lock();
            // SAFETY: `vmf` is the live fault, whose PMD pointer the mm set before `fault`.
            if unsafe { pmd_holds(vmf) } == PmdHolds::Huge {
                return NOPAGE;
            }
            Some(guard)
        } else {
            None
        };
        let write = flags & bindings::fault_flag_FAULT_FLAG_WRITE != 0;
        // SAFETY: `vmf` is valid; the page stays allocated while the VMA holds `memory`, and the
        // page table takes its own reference.
        let ret = unsafe { bindings::vmf_insert_page_mkwrite(vmf, page.as_ptr(), write) };
        // No page table for it (`-ENOMEM`): the page cannot be had either, and `VM_FAULT_OOM`
        // would only retry the fault (or wake the OOM killer).
        if ret & OOM != 0 {
            return SIGBUS;
        }
        if WHOLE {
            // SAFETY: `vmf` is valid for the whole fault, on a `VM_MIXEDMAP` VMA (`install`).
            unsafe { Self::map_whole(vmf, memory) };
        } else {
            // SAFETY: `vmf` is valid for the whole fault.
            unsafe { Self::fault_around(vmf, memory, pgoff) };
        }
        ret
    }

    /// Maps every other page of the VMA too, a batch of `PREFAULT_BATCH` per page-table lock:
    /// the pages after the faulting one, then those before it, each run up to the first page
    /// mapped already (after `MADV_DONTNEED`, say: the rest get faults of their own). Done on the
    /// first fault, not in `f_op->mmap`: there the VMA is not yet in the file's mapping tree, so
    /// a card lost meanwhile (`fail=lost`) could not unmap it, and it would keep working. Here
    /// the fault is inside the gate: a loss waits for it, then unmaps it all.
    ///
    /// # Safety
    ///
    /// `vmf` is the live fault on a `VM_MIXEDMAP` VMA set up by [`map`] that [`Self::fault`] is
    /// handling, and its page is mapped.
    unsafe fn map_whole(vmf: *mut bindings::vm_fault, memory: &M) {
        // SAFETY: the caller's contract: a live fault on a live VMA.
        let (vma, address) =
            unsafe { ((*vmf).__bindgen_anon_1.vma, (*vmf).__bindgen_anon_1.address) };
        // SAFETY: as above; the VMA lock keeps its bounds and offset stable during the fault.
        let (start, end, vm_pgoff) = unsafe {
            let area = VmaRef::from_raw(vma);
            (area.start(), area.end(), (*vma).vm_pgoff)
        };
        let pages = (end - start) / PAGE_SIZE;
        let faulting = (address - start) / PAGE_SIZE;
        for (from, to) in [(faulting + 1, pages), (0, faulting)] {
            let mut done = from;
            while done < to {
                // Only a head start: a signal (`SIGKILL` included) ends it, and later faults
                // map the rest.
                if kernel::current!().signal_pending() {
                    return;
                }
                let count = PREFAULT_BATCH.min(to - done);
                let mut batch = [core::ptr::null_mut(); PREFAULT_BATCH];
                for (i, slot) in batch[..count].iter_mut().enumerate() {
                    let Ok(page) = memory.page(vm_pgoff + done + i) else {
                        return;
                    };
                    *slot = page.as_ptr();
                }
                let mut left = count as kernel::ffi::c_ulong;
                // SAFETY: a `VM_MIXEDMAP` VMA of ours (the caller's contract) under its fault's
                // lock; the range lies inside it; the pages live while the VMA holds `memory`,
                // and the page tables take references of their own. A page mapped already
                // stops the batch with `EBUSY`, leaving what it mapped.
                let ret = unsafe {
                    bindings::vm_insert_pages(
                        vma,
                        (start + done * PAGE_SIZE) as kernel::ffi::c_ulong,
                        batch.as_mut_ptr(),
                        &mut left,
                    )
                };
                if ret != 0 {
                    break;
                }
                done += count;
            }
        }
    }

    /// Maps the next pages of the mapping too, up to the next 2 MiB boundary, so a program
    /// filling its buffer from the start (the usual way) takes one fault per
    /// `FAULT_AROUND_PAGES` pages instead of one per page.
    /// Pages already mapped are skipped by the kernel; any failure just stops early, leaving
    /// later pages to their own faults.
    ///
    /// # Safety
    ///
    /// `vmf` is the live fault on a VMA set up by [`map`] that [`Self::fault`] is handling.
    unsafe fn fault_around(vmf: *mut bindings::vm_fault, memory: &M, pgoff: usize) {
        // `vm_insert_page()` would make the VMA `VM_MIXEDMAP`, where a split 2 MiB mapping
        // leaks its folio, so each page goes through `vmf_insert_page_mkwrite()` as the faulting
        // one did, on a copy of the fault description that names the page's address.
        // SAFETY: the caller's contract; `vm_fault` is plain data, and the copy is only read.
        let mut around = unsafe { core::ptr::read(vmf) };
        let address = around.__bindgen_anon_1.address & !(PAGE_SIZE - 1);
        // Not past the next 2 MiB boundary either: a page table there would keep that 2 MiB
        // from ever being mapped with one PMD (as the kernel's own fault-around stays in one).
        let unit_end = (address & !(HUGE_SIZE - 1)) + HUGE_SIZE;
        // SAFETY: the VMA is live for the whole fault.
        let end = unsafe { VmaRef::from_raw(around.__bindgen_anon_1.vma) }
            .end()
            .min(unit_end);
        for i in 1..FAULT_AROUND_PAGES {
            let addr = address + i * PAGE_SIZE;
            if addr >= end {
                break;
            }
            let Ok(page) = memory.page(pgoff + i) else {
                break;
            };
            around.__bindgen_anon_1.address = addr;
            // Not `write`: only the faulting page is being written. A page mapped already
            // answers `NOPAGE` too and is skipped; a failure stops here.
            // SAFETY: `around` describes the same fault at `addr`, inside the VMA; the page
            // lives while the VMA holds `memory`, and the page table takes its own reference.
            let ret =
                unsafe { bindings::vmf_insert_page_mkwrite(&mut around, page.as_ptr(), false) };
            if ret != NOPAGE {
                break;
            }
        }
    }

    /// `vm_ops.huge_fault`: maps a whole 2 MiB folio with one PMD when the faulting 2 MiB of
    /// the mapping is one 2 MiB unit of memory; otherwise `VM_FAULT_FALLBACK`, and the kernel
    /// maps 4 KiB pages through [`Self::fault`].
    ///
    /// # Safety
    ///
    /// Called by the mm for a VMA set up by [`map`], with `mmap_lock` or the VMA lock held,
    /// when the PMD for the address is empty (or read-only on a write).
    #[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
    unsafe extern "C" fn huge_fault(
        vmf: *mut bindings::vm_fault,
        order: kernel::ffi::c_uint,
    ) -> bindings::vm_fault_t {
        if order != super::mem::HUGE_ORDER {
            return FALLBACK;
        }
        // SAFETY: the mm passes a valid fault description, on a live VMA, for this call.
        let (vma, address, flags) = unsafe {
            (
                (*vmf).__bindgen_anon_1.vma,
                (*vmf).__bindgen_anon_1.address,
                (*vmf).flags,
            )
        };
        // SAFETY: as above; the VMA lock keeps its bounds and offset stable during the fault.
        let (start, end, vm_pgoff) = unsafe {
            let area = VmaRef::from_raw(vma);
            (area.start(), area.end(), (*vma).vm_pgoff)
        };
        // The kernel leaves these checks to the handler (`thp_vma_suitable_order()`): the whole
        // 2 MiB must lie inside the mapping.
        let first = address & !(HUGE_SIZE - 1);
        if first < start || first + HUGE_SIZE > end {
            return FALLBACK;
        }
        let pgoff = vm_pgoff + (first - start) / PAGE_SIZE;
        // SAFETY: `vma` is ours (see the function's contract).
        let memory = unsafe { Self::memory(vma) };
        let Some(_inside) = memory.gate().enter() else {
            return SIGBUS;
        };
        let Some(folio) = memory.huge_folio(pgoff) else {
            return FALLBACK;
        };
        // A 4 KiB fault of this unit may have put a page table there since the mm found the
        // PMD empty: the PMD is not ours to set then (`insert_pmd()` would warn), and the kernel
        // maps the page through `fault` instead. Checked and set under the unit lock.
        let _unit = memory.unit_mapping_lock().lock();
        // SAFETY: `vmf` is the live fault, whose PMD pointer the mm set before `huge_fault`.
        if unsafe { pmd_holds(vmf) } == PmdHolds::PageTable {
            return FALLBACK;
        }
        let write = flags & bindings::fault_flag_FAULT_FLAG_WRITE != 0;
        // SAFETY: `vmf` is valid; the folio is order `HUGE_ORDER`, neither anonymous nor
        // hugetlb, and stays allocated while the VMA holds `memory`; the PMD takes its own
        // reference. The VMA is neither `VM_PFNMAP` nor `VM_MIXEDMAP`, so splitting the PMD
        // later drops that reference (`__split_huge_pmd_locked()`).
        let ret = unsafe { bindings::vmf_insert_folio_pmd(vmf, folio.as_ptr(), write) };
        if ret & OOM != 0 {
            return SIGBUS;
        }
        ret
    }
}

/// What a fault's PMD holds.
#[derive(PartialEq, Eq)]
enum PmdHolds {
    Nothing,
    /// A table of 4 KiB entries.
    PageTable,
    /// A 2 MiB mapping.
    Huge,
}

/// Reads the PMD of fault `vmf` (`pmd_none()`, `pmd_trans_huge()`: inline functions, so their
/// x86-64 definitions are repeated here). Only [`PmdHolds::Nothing`] elsewhere, where the race
/// it guards against stays open.
///
/// # Safety
///
/// `vmf` is a live fault whose `pmd` the mm has set (`fault`, `huge_fault`).
unsafe fn pmd_holds(vmf: *const bindings::vm_fault) -> PmdHolds {
    #[cfg(CONFIG_X86_64)]
    {
        // SAFETY: per the contract; the PMD's page stays while the fault holds the VMA, and a
        // 64-bit load of it is atomic (`pmdp_get()` is `READ_ONCE()`).
        let value = unsafe {
            let pmd = (*vmf).pmd;
            if pmd.is_null() {
                return PmdHolds::Nothing;
            }
            core::ptr::read_volatile(&raw const (*pmd).pmd)
        };
        // `_PAGE_KNL_ERRATUM_MASK`: bits that Knights Landing may set in an empty entry.
        let erratum: usize = (1 << bindings::_PAGE_BIT_DIRTY) | (1 << bindings::_PAGE_BIT_ACCESSED);
        if value & (1 << bindings::_PAGE_BIT_PSE) != 0 {
            PmdHolds::Huge
        } else if value & !erratum == 0 {
            PmdHolds::Nothing
        } else {
            PmdHolds::PageTable
        }
    }
    #[cfg(not(CONFIG_X86_64))]
    {
        let _ = vmf;
        PmdHolds::Nothing
    }
}

const SIGBUS: bindings::vm_fault_t =
    bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
const OOM: bindings::vm_fault_t = bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t;
const NOPAGE: bindings::vm_fault_t =
    bindings::vm_fault_reason_VM_FAULT_NOPAGE as bindings::vm_fault_t;
#[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
const FALLBACK: bindings::vm_fault_t =
    bindings::vm_fault_reason_VM_FAULT_FALLBACK as bindings::vm_fault_t;

/// Sets up a new shared VMA over `memory`: no copy into children (`fork`), no growth
/// (`mremap`), pages inserted on fault, or all of them at the first fault when `whole` (eager
/// memory, whose pages exist already). The caller has counted this mapping with
/// [`Mappable::mapped`] (under whatever lock orders it against freeing); on error it is
/// uncounted here.
pub(crate) fn map<M: Mappable>(vma: &VmaNew, memory: Arc<M>, whole: bool) -> Result {
    let result = install(vma, &*memory, whole);
    if result.is_err() {
        memory.unmapped();
        return result;
    }
    let raw = Arc::into_raw(memory);
    // SAFETY: in `f_op->mmap` the VMA is ours to set up; `OPS` and its callbacks are static, and
    // the private data is the counted `Arc<M>` they expect (given back in `close`).
    unsafe {
        (*vma.as_ptr()).vm_private_data = raw.cast_mut().cast();
        (*vma.as_ptr()).vm_ops = if whole {
            &VmOps::<M, true>::OPS
        } else {
            &VmOps::<M, false>::OPS
        };
    }
    Ok(())
}

/// Pages inserted per `vm_insert_pages` call when prefaulting: one page-table lock per batch.
const PREFAULT_BATCH: usize = 64;

fn install<M: Mappable>(vma: &VmaNew, memory: &M, whole: bool) -> Result {
    // A lost card is refused here already (`EIO`).
    memory.gate().enter().ok_or(EIO)?;
    vma.set_dontcopy();
    vma.set_dontexpand();
    if whole {
        // Mapped by the first fault with `vm_insert_pages()`, which needs `VM_MIXEDMAP` (set
        // here, where the mmap lock is held for writing); such a VMA never gets 2 MiB mappings
        // (`Mappable::huge_folio` of memory that exists up front).
        vma.set_mixedmap();
        return Ok(());
    }
    // Memory mapped on fault, 2 MiB at a time where it can: like a device's own memory
    // (dev_dax), the mapping asks for huge pages itself, so it gets them when transparent huge
    // pages are `always` or `madvise`, not when they are `never` or the program says
    // `MADV_NOHUGEPAGE`. Not `VM_MIXEDMAP`: splitting a PMD there would leak its folio.
    #[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
    // SAFETY: in `f_op->mmap` the new VMA is ours to set up, and not yet visible to anyone.
    unsafe {
        (*vma.as_ptr()).__bindgen_anon_2.vm_flags |= bindings::VM_HUGEPAGE
    };
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

/// `f_op->get_unmapped_area`: places a mapping so that file offsets and addresses agree modulo
/// 2 MiB, which a PMD needs (the kernel does this for anonymous memory only). Mappings of
/// under 2 MiB, and any with an address hint or `MAP_FIXED`, are placed as usual. As dev_dax's
/// `dax_get_unmapped_area()`.
///
/// # Safety
///
/// Called by the mm as `get_unmapped_area` of a file, with the mmap lock held.
#[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
pub(crate) unsafe extern "C" fn get_unmapped_area(
    file: *mut bindings::file,
    addr: kernel::ffi::c_ulong,
    len: kernel::ffi::c_ulong,
    pgoff: kernel::ffi::c_ulong,
    flags: kernel::ffi::c_ulong,
) -> kernel::ffi::c_ulong {
    let huge_size = HUGE_SIZE as kernel::ffi::c_ulong;
    let offset = pgoff.checked_mul(PAGE_SIZE as kernel::ffi::c_ulong);
    let whole_unit = offset.and_then(|offset| {
        let end = offset.checked_add(len)?;
        let first_unit = offset.checked_next_multiple_of(huge_size)?;
        (end >= first_unit.checked_add(huge_size)?).then_some(offset)
    });
    if let (Some(offset), 0) = (whole_unit, addr) {
        if let Some(padded) = len.checked_add(huge_size) {
            // SAFETY: the mm's own search, with this call's arguments and a longer length.
            let area = unsafe { bindings::mm_get_unmapped_area(file, 0, padded, pgoff, flags) };
            // Errors are small negative numbers (`IS_ERR_VALUE`).
            if area < (-(bindings::MAX_ERRNO as isize)) as kernel::ffi::c_ulong {
                return area + (offset.wrapping_sub(area) & (huge_size - 1));
            }
        }
    }
    // SAFETY: as above, the mm's own search with this call's arguments.
    unsafe { bindings::mm_get_unmapped_area(file, addr, len, pgoff, flags) }
}
