// SPDX-License-Identifier: GPL-2.0
//! 2 MiB pages: a lazy allocation's whole, aligned 2 MiB units are mapped with one PMD each
//! (the kernel's own `FilePmdMapped` in smaps says so), tails and unaligned mappings get 4 KiB
//! pages, a 2 MiB page that cannot be had falls back to 4 KiB pages (counted), and the memory
//! is one memory whichever way it is mapped: through a second, misaligned mapping, after a
//! partial unmap that splits a PMD, `MADV_DONTNEED`, `mremap` and a remap. A 2 MiB page that a
//! pipe still holds is never handed to another allocation. `MADV_NOHUGEPAGE` and THP `never`
//! are obeyed.

use emuv::{Device, Tier};
use emuv_tests::{
    attr_u64, err, fault, module,
    tap::{check, check_eq, Tap},
};
use nix::{
    errno::Errno,
    fcntl::{vmsplice, SpliceFFlags},
    sys::mman::{madvise, mmap, mremap, munmap, MRemapFlags, MapFlags, MmapAdvise, ProtFlags},
    unistd::{pipe, read},
};
use std::{ffi::c_void, fs, io::IoSlice, num::NonZeroUsize, os::fd::AsFd, ptr::NonNull};

const PAGE: usize = 4096;
const HUGE: usize = 2 << 20;
const PARAMS: &str = "physical_vram_mb=64 virtual_vram_mb=0 lazy_allocation=1";
const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// A shared read-write mapping of `len` bytes at file offset `offset`, at `at` if given
/// (`MAP_FIXED`); unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(dev: &Device, offset: u64, len: usize, at: Option<usize>) -> Result<Self, String> {
        let mut flags = MapFlags::MAP_SHARED;
        if at.is_some() {
            flags |= MapFlags::MAP_FIXED;
        }
        // SAFETY: a new shared mapping of the device; at a fixed address only over a range
        // this test reserved itself.
        let ptr = unsafe {
            mmap(
                at.and_then(NonZeroUsize::new),
                NonZeroUsize::new(len).ok_or("empty mapping")?,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                flags,
                dev.as_fd(),
                offset as i64,
            )
        }
        .map_err(err("mmap"))?;
        Ok(Self {
            ptr: ptr.as_ptr().cast(),
            len,
        })
    }

    fn addr(&self) -> usize {
        self.ptr as usize
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len);
        // SAFETY: in bounds of a live read-write mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) };
    }

    fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        assert!(offset + len <= self.len);
        let mut out = vec![0; len];
        // SAFETY: in bounds of a live mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), out.as_mut_ptr(), len) };
        out
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if let Some(ptr) = NonNull::new(self.ptr.cast::<c_void>()) {
            // SAFETY: the range this value mapped (holes in it are fine for munmap).
            let _ = unsafe { munmap(ptr, self.len) };
        }
    }
}

/// An address range of `len` bytes, aligned to 2 MiB plus `skew`, reserved by an anonymous
/// mapping that `MAP_FIXED` mappings then replace.
fn reserve(len: usize, skew: usize) -> Result<usize, String> {
    let padded = NonZeroUsize::new(len + 2 * HUGE).ok_or("empty reservation")?;
    // SAFETY: a fresh anonymous reservation, never touched.
    let area = unsafe {
        nix::sys::mman::mmap_anonymous(
            None,
            padded,
            ProtFlags::PROT_NONE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
        )
    }
    .map_err(err("reserve an address range"))?;
    Ok((area.as_ptr() as usize).next_multiple_of(HUGE) + skew)
}

/// The byte at `offset` of the pattern: differs per byte, per page and per 2 MiB.
fn pattern(offset: usize) -> u8 {
    (offset as u8)
        ^ ((offset / PAGE) as u8).wrapping_mul(31)
        ^ ((offset / HUGE) as u8).wrapping_mul(7)
}

fn pattern_of(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(pattern).collect()
}

/// Compares what a mapping shows at allocation offset `offset` with the pattern.
fn check_pattern(what: &str, got: &[u8], offset: usize) -> Result<(), String> {
    match got
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern(offset + i))
    {
        None => Ok(()),
        Some((i, &b)) => Err(format!(
            "{what}: byte {} of the allocation is {b:#04x}, expected {:#04x}",
            offset + i,
            pattern(offset + i)
        )),
    }
}

/// `FilePmdMapped` of the mapping starting at `addr`, in bytes: what the kernel maps with PMDs.
fn pmd_mapped(addr: usize) -> Result<u64, String> {
    let smaps = fs::read_to_string("/proc/self/smaps").map_err(err("smaps"))?;
    let head = format!("{addr:x}-");
    let mut inside = false;
    for line in smaps.lines() {
        if line.contains('-') && line.split_whitespace().count() >= 5 && !line.ends_with(" kB") {
            inside = line.starts_with(&head);
        } else if inside && line.starts_with("FilePmdMapped:") {
            let kb: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad smaps line {line:?}"))?;
            return Ok(kb * 1024);
        }
    }
    Err(format!("no mapping at {addr:#x} in smaps"))
}

struct Counters {
    resident: u64,
    huge: u64,
    fallbacks: u64,
}

fn counters() -> Result<Counters, String> {
    Ok(Counters {
        resident: attr_u64("resident_bytes")?,
        huge: attr_u64("huge_bytes")?,
        fallbacks: attr_u64("huge_fallbacks")?,
    })
}

/// Writes one byte per 4 KiB page of `map` from `offset` on, with the pattern.
fn touch(map: &Map, offset: usize, len: usize) {
    for page in (0..len).step_by(PAGE) {
        map.write(page, &[pattern(offset + page)]);
    }
}

/// Whole 2 MiB units get one PMD each; the counters say so, and give everything back on FREE.
fn whole_units_are_pmd_mapped() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let before = counters()?;
    let a = dev.alloc(8 << 20, Tier::Any).map_err(err("alloc 8 MiB"))?;
    check_eq("handle alignment (pages)", a.mmap_offset as usize % HUGE, 0)?;
    let map = Map::new(&dev, a.mmap_offset, 8 << 20, None)?;
    check_eq("mapping address modulo 2 MiB", map.addr() % HUGE, 0)?;
    touch(&map, 0, 8 << 20);
    let after = counters()?;
    check_eq("PMD-mapped bytes (smaps)", pmd_mapped(map.addr())?, 8 << 20)?;
    check_eq("huge_bytes", after.huge - before.huge, 8 << 20)?;
    check_eq("resident_bytes", after.resident - before.resident, 8 << 20)?;
    check_eq("huge_fallbacks", after.fallbacks, before.fallbacks)?;
    let query = dev.query(a.handle).map_err(err("query"))?;
    check_eq("QUERY resident", query.resident, 8 << 20)?;
    drop(map);
    dev.free(a.handle).map_err(err("free"))?;
    let end = counters()?;
    check_eq("huge_bytes after FREE", end.huge, before.huge)?;
    check_eq("resident_bytes after FREE", end.resident, before.resident)
}

/// The tail of an allocation and the parts of a misaligned mapping that do not cover a whole
/// unit get 4 KiB pages; the whole units among them still get PMDs.
fn tails_and_partial_units_get_4k_pages() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let before = counters()?;
    // 2 MiB + 12 KiB: one unit and a 3-page tail.
    let a = dev
        .alloc((HUGE + 3 * PAGE) as u64, Tier::Any)
        .map_err(err("alloc"))?;
    let map = Map::new(&dev, a.mmap_offset, HUGE + 3 * PAGE, None)?;
    touch(&map, 0, HUGE + 3 * PAGE);
    let mid = counters()?;
    check_eq("tail: huge_bytes", mid.huge - before.huge, HUGE as u64)?;
    check_eq(
        "tail: resident_bytes",
        mid.resident - before.resident,
        (HUGE + 3 * PAGE) as u64,
    )?;
    check_eq(
        "tail: PMD-mapped bytes",
        pmd_mapped(map.addr())?,
        HUGE as u64,
    )?;
    drop(map);
    dev.free(a.handle).map_err(err("free"))?;

    // 6 MiB mapped from its second page for 4 MiB: units 0 and 2 are covered in part (4 KiB
    // pages), unit 1 whole (a PMD: the kernel placed the mapping congruent to its offset).
    let before = counters()?;
    let b = dev.alloc(6 << 20, Tier::Any).map_err(err("alloc 6 MiB"))?;
    let map = Map::new(&dev, b.mmap_offset + PAGE as u64, 4 << 20, None)?;
    check_eq(
        "offset mapping's address modulo 2 MiB",
        map.addr() % HUGE,
        PAGE,
    )?;
    touch(&map, PAGE, 4 << 20);
    let after = counters()?;
    check_eq("partial: huge_bytes", after.huge - before.huge, HUGE as u64)?;
    check_eq(
        "partial: resident_bytes",
        after.resident - before.resident,
        4 << 20,
    )?;
    check_eq(
        "partial: PMD-mapped bytes",
        pmd_mapped(map.addr())?,
        HUGE as u64,
    )?;
    drop(map);
    dev.free(b.handle).map_err(err("free"))
}

/// One memory, whichever way it is mapped: written through 2 MiB mappings, read through 4 KiB
/// ones and back, across a 2 MiB boundary, after a partial unmap (a split PMD), a remap,
/// `MADV_DONTNEED` and `mremap`.
fn one_memory_through_every_mapping() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let before = counters()?;
    let len = 6 << 20;
    let a = dev
        .alloc(len as u64, Tier::Any)
        .map_err(err("alloc 6 MiB"))?;
    let first = Map::new(&dev, a.mmap_offset, len, None)?;
    first.write(0, &pattern_of(0, len));
    check_eq(
        "first mapping: PMD-mapped bytes",
        pmd_mapped(first.addr())?,
        len as u64,
    )?;

    // A second mapping one page off 2 MiB alignment: no PMD can map it, so it maps the same
    // 2 MiB pages 4 KiB at a time.
    let at = reserve(len, PAGE)?;
    let second = Map::new(&dev, a.mmap_offset, len, Some(at))?;
    check_pattern("misaligned mapping", &second.read(0, len), 0)?;
    check_eq(
        "misaligned mapping: PMD-mapped bytes",
        pmd_mapped(second.addr())?,
        0,
    )?;
    // Across the boundary between units 0 and 1, written through the 4 KiB mapping.
    let edge = HUGE - 100;
    let changed: Vec<u8> = pattern_of(edge, 200).iter().map(|b| !b).collect();
    second.write(edge, &changed);
    check_eq(
        "2 MiB mapping sees the 4 KiB mapping's write",
        first.read(edge, 200),
        changed.clone(),
    )?;
    second.write(edge, &pattern_of(edge, 200));

    // Unmapping one page in the middle of unit 0 splits its PMD; the rest of the unit is
    // mapped again, 4 KiB at a time, from the same 2 MiB page.
    let hole = HUGE / 2;
    // SAFETY: a page inside `first`, which only this test uses.
    unsafe { munmap(NonNull::new_unchecked(first.ptr.add(hole).cast()), PAGE) }
        .map_err(err("munmap one page"))?;
    check_pattern("after partial unmap, below", &first.read(0, hole), 0)?;
    check_pattern(
        "after partial unmap, above",
        &first.read(hole + PAGE, len - hole - PAGE),
        hole + PAGE,
    )?;
    let remap = Map::new(
        &dev,
        a.mmap_offset + hole as u64,
        PAGE,
        Some(first.addr() + hole),
    )?;
    check_pattern("remapped hole", &remap.read(0, PAGE), hole)?;
    std::mem::forget(remap); // part of `first` again: unmapped with it

    // MADV_DONTNEED drops part of unit 1's mapping; the memory stays (it is shared).
    // SAFETY: inside `first`.
    unsafe {
        madvise(
            NonNull::new_unchecked(first.ptr.add(HUGE + 64 * PAGE).cast()),
            16 * PAGE,
            MmapAdvise::MADV_DONTNEED,
        )
    }
    .map_err(err("MADV_DONTNEED"))?;
    check_pattern("after MADV_DONTNEED", &first.read(HUGE, HUGE), HUGE)?;

    // Unit 2 moves to another 2 MiB-aligned address.
    let target = reserve(HUGE, 0)?;
    // SAFETY: moving the last 2 MiB of `first` onto the reserved range.
    let moved = unsafe {
        mremap(
            NonNull::new_unchecked(first.ptr.add(2 * HUGE).cast()),
            HUGE,
            HUGE,
            MRemapFlags::MREMAP_MAYMOVE | MRemapFlags::MREMAP_FIXED,
            NonNull::new(target as *mut c_void),
        )
    }
    .map_err(err("mremap"))?;
    let moved = Map {
        ptr: moved.as_ptr().cast(),
        len: HUGE,
    };
    check_pattern("after mremap", &moved.read(0, HUGE), 2 * HUGE)?;
    check_pattern("4 KiB mapping at the end", &second.read(0, len), 0)?;

    let after = counters()?;
    check_eq(
        "resident_bytes",
        after.resident - before.resident,
        len as u64,
    )?;
    check_eq("huge_bytes", after.huge - before.huge, len as u64)?;
    drop((first, second, moved));
    dev.free(a.handle)
        .map_err(err("free after every mapping went"))
}

/// With no 2 MiB page to be had (fault injection fails order-9 allocations of this task), the
/// range gets 4 KiB pages, each failure is counted, and the data is right.
fn no_2mib_page_falls_back_to_4k() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let a = dev.alloc(4 << 20, Tier::Any).map_err(err("alloc 4 MiB"))?;
    let map = Map::new(&dev, a.mmap_offset, 4 << 20, None)?;
    let before = counters()?;
    fault::configure_large_pages(9, 100).map_err(err("fault injection"))?;
    let mark = fault::MakeItFail::open().map_err(err("make-it-fail"))?;
    mark.set(true).map_err(err("make-it-fail"))?;
    touch(&map, 0, 4 << 20);
    let unmark = mark.set(false);
    fault::configure(0, true).map_err(err("fault injection off"))?;
    unmark.map_err(err("make-it-fail off"))?;
    let after = counters()?;
    check_eq("huge_fallbacks", after.fallbacks - before.fallbacks, 2)?;
    check_eq("huge_bytes", after.huge - before.huge, 0)?;
    check_eq("resident_bytes", after.resident - before.resident, 4 << 20)?;
    check_eq("PMD-mapped bytes", pmd_mapped(map.addr())?, 0)?;
    map.write(0, &pattern_of(0, 4 << 20));
    check_pattern("4 KiB fallback", &map.read(0, 4 << 20), 0)?;
    drop(map);
    dev.free(a.handle).map_err(err("free"))?;
    // The next allocation gets 2 MiB pages again.
    let b = dev.alloc(2 << 20, Tier::Any).map_err(err("alloc"))?;
    let map = Map::new(&dev, b.mmap_offset, 2 << 20, None)?;
    touch(&map, 0, 2 << 20);
    check_eq(
        "PMD-mapped bytes once pages are there",
        pmd_mapped(map.addr())?,
        HUGE as u64,
    )?;
    drop(map);
    dev.free(b.handle).map_err(err("free"))
}

/// `MADV_NOHUGEPAGE` on a mapping, and THP `never` for the machine, give 4 KiB pages.
fn nohugepage_and_never_are_obeyed() -> Result<(), String> {
    let dev = Device::open().map_err(err("open"))?;
    let before = counters()?;
    let a = dev.alloc(4 << 20, Tier::Any).map_err(err("alloc"))?;
    let map = Map::new(&dev, a.mmap_offset, 2 << 20, None)?;
    // SAFETY: the whole of `map`.
    unsafe {
        madvise(
            NonNull::new_unchecked(map.ptr.cast()),
            HUGE,
            MmapAdvise::MADV_NOHUGEPAGE,
        )
    }
    .map_err(err("MADV_NOHUGEPAGE"))?;
    touch(&map, 0, HUGE);
    check_eq("NOHUGEPAGE: huge_bytes", counters()?.huge - before.huge, 0)?;
    drop(map);

    let mode = fs::read_to_string(THP).map_err(err(THP))?;
    let saved = mode
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .ok_or_else(|| format!("no mode in {mode:?}"))?
        .to_string();
    fs::write(THP, "never").map_err(err("THP never"))?;
    let map = Map::new(&dev, a.mmap_offset + HUGE as u64, HUGE, None);
    let result = map.inspect(|map| touch(map, HUGE, HUGE));
    fs::write(THP, &saved).map_err(err("THP restore"))?;
    let map = result?;
    check_eq("never: huge_bytes", counters()?.huge - before.huge, 0)?;
    check_eq(
        "never: resident_bytes",
        counters()?.resident - before.resident,
        4 << 20,
    )?;
    drop(map);
    dev.free(a.handle).map_err(err("free"))
}

/// A pipe still holding a page of a freed 2 MiB page keeps A's data: another file that fills
/// the card with its own never gets that 2 MiB page.
fn held_2mib_page_is_never_reused() -> Result<(), String> {
    const A: u8 = 0xa1;
    const B: u8 = 0xb2;
    let before = counters()?;
    let dev = Device::open().map_err(err("A: open"))?;
    let a = dev.alloc(4 << 20, Tier::Any).map_err(err("A: alloc"))?;
    let map = Map::new(&dev, a.mmap_offset, 4 << 20, None)?;
    map.write(0, &vec![A; 4 << 20]);
    check_eq("A: PMD-mapped bytes", pmd_mapped(map.addr())?, 4 << 20)?;
    let (rx, tx) = pipe().map_err(err("pipe"))?;
    // SAFETY: a page inside A's mapping, read by the kernel.
    let page = unsafe { std::slice::from_raw_parts(map.ptr.add(HUGE + 5 * PAGE), PAGE) };
    let spliced =
        vmsplice(&tx, &[IoSlice::new(page)], SpliceFFlags::empty()).map_err(err("vmsplice"))?;
    check_eq("vmspliced bytes", spliced, PAGE)?;
    drop(map);
    dev.free(a.handle).map_err(err("A: free"))?;
    check_eq(
        "resident after A's free",
        counters()?.resident,
        before.resident,
    )?;

    let other = Device::open().map_err(err("B: open"))?;
    let mut maps = Vec::new();
    loop {
        match other.alloc(HUGE as u64, Tier::Any) {
            Ok(b) => {
                let m = Map::new(&other, b.mmap_offset, HUGE, None)?;
                check(m.read(0, HUGE).iter().all(|&x| x == 0), || {
                    "B's memory is not zeroed".into()
                })?;
                m.write(0, &vec![B; HUGE]);
                maps.push(m);
            }
            Err(Errno::ENOMEM) => break,
            Err(e) => return Err(format!("B: alloc: {e}")),
        }
    }
    check(maps.len() >= 16, || {
        format!("B got only {} units", maps.len())
    })?;
    let mut got = vec![0; PAGE];
    let n = read(&rx, &mut got).map_err(err("read the pipe"))?;
    check_eq("bytes read from the pipe", n, PAGE)?;
    check(got.iter().all(|&x| x == A), || {
        format!(
            "the pipe gave {:#x}, not A's {A:#x}{}",
            got.iter().find(|&&x| x != A).copied().unwrap_or(0),
            if got.contains(&B) {
                ": B's data leaked to A"
            } else {
                ""
            }
        )
    })
}

/// Makes free 2 MiB blocks, as a machine that has been up a while has them: emuv takes 2 MiB
/// pages from free memory only (no reclaim or compaction at fault time), so what earlier tests
/// left in the page cache or fragmented must not decide these tests.
fn free_2mib_blocks() -> Result<(), String> {
    fs::write("/proc/sys/vm/drop_caches", "3").map_err(err("drop_caches"))?;
    fs::write("/proc/sys/vm/compact_memory", "1").map_err(err("compact_memory"))
}

fn main() {
    type Test = fn() -> Result<(), String>;
    let tests: [(&str, Test); 6] = [
        (
            "whole 2 MiB units are PMD-mapped and counted",
            whole_units_are_pmd_mapped,
        ),
        (
            "tails and partly covered units get 4 KiB pages",
            tails_and_partial_units_get_4k_pages,
        ),
        (
            "one memory through 2 MiB and 4 KiB mappings, split, remap, DONTNEED, mremap",
            one_memory_through_every_mapping,
        ),
        (
            "no 2 MiB page: 4 KiB fallback, counted",
            no_2mib_page_falls_back_to_4k,
        ),
        (
            "MADV_NOHUGEPAGE and THP never give 4 KiB pages",
            nohugepage_and_never_are_obeyed,
        ),
        (
            "a 2 MiB page a pipe holds is never reused",
            held_2mib_page_is_never_reused,
        ),
    ];
    let mut tap = Tap::new(tests.len());
    if module::is_loaded() {
        let _ = module::unload();
    }
    if fs::metadata(THP).is_err() {
        for (name, _) in tests {
            tap.skip(
                name,
                "this kernel has no transparent huge pages (CONFIG_TRANSPARENT_HUGEPAGE)",
            );
        }
        tap.finish();
    }
    for (name, test) in tests {
        if name.starts_with("no 2 MiB page") && !fault::available() {
            tap.skip(name, "this kernel has no fault injection (FAIL_PAGE_ALLOC)");
            continue;
        }
        let result = free_2mib_blocks().and_then(|()| module::with_loaded(PARAMS, test));
        tap.test(name, result);
    }
    tap.finish();
}
