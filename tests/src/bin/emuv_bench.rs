// SPDX-License-Identifier: GPL-2.0
//! `make bench`: emuv measured side by side with the kernel's own baselines in one VM boot.
//! Warms up, repeats, and reports medians of per-round ratios, so the slowness of the VM
//! (QEMU TCG) cancels out. Writes the figures as JSON to the path given as the argument.

use emuv::{Device, Tier};
use emuv_tests::{kernel_memory, meminfo, module, settled_kernel_memory};
use nix::{
    fcntl::{fcntl, FcntlArg},
    sys::{
        memfd::{memfd_create, MFdFlags},
        mman::{madvise, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags},
    },
    unistd::{ftruncate, pipe, write},
};
use std::{num::NonZeroUsize, os::fd::OwnedFd, ptr::NonNull, time::Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const PAGE: usize = 4096;
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `f` once to warm up, then `ROUNDS` times; returns the median of `f`'s ratios.
fn rounds(mut f: impl FnMut() -> f64) -> f64 {
    f();
    median((0..ROUNDS).map(|_| f()).collect())
}

fn touch(ptr: *mut u8, len: usize) {
    for off in (0..len).step_by(PAGE) {
        // SAFETY: `ptr..ptr+len` is a live read-write mapping of ours.
        unsafe { ptr.add(off).write_volatile(1) };
    }
}

/// Times mmap + `toucher` + munmap of `len` bytes of anonymous memory.
fn anon_touch(len: usize, toucher: fn(*mut u8, usize)) -> f64 {
    let start = Instant::now();
    // SAFETY: a fresh private anonymous mapping, unmapped below.
    let p = unsafe {
        mmap_anonymous(
            None,
            NonZeroUsize::new(len).expect("len"),
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }
    .expect("mmap anon");
    toucher(p.as_ptr().cast(), len);
    // SAFETY: unmapping what we mapped.
    unsafe { munmap(p, len) }.expect("munmap");
    start.elapsed().as_secs_f64()
}

/// Times alloc + mmap + `toucher` + munmap + free of `len` bytes of emulated VRAM.
fn emuv_touch(dev: &Device, len: usize, toucher: fn(*mut u8, usize)) -> f64 {
    let start = Instant::now();
    let a = dev.alloc(len as u64, Tier::Any).expect("alloc");
    let m = dev.map(&a).expect("mmap");
    toucher(m.as_ptr(), len);
    drop(m);
    dev.free(a.handle).expect("free");
    start.elapsed().as_secs_f64()
}

/// Whole lives timed back to back per side and round: the scrubbing an eager FREE leaves runs
/// beside the next lives, and costs them what it costs.
const LIVES: usize = 3;

/// anon time / emuv time, touching with `toucher`: above 1 means emuv is faster. Each side
/// runs [`LIVES`] lives back to back; each starts once the card's scrubber is idle, so that
/// scrubbing left over from emuv's last FREE never runs beside (and slows) the baseline, and
/// emuv's lives meet only the scrubbing of their own FREEs.
fn touch_vs_anon(params: &str, len: usize, toucher: fn(*mut u8, usize)) -> f64 {
    module::load(params).expect("insmod");
    let dev = Device::open().expect("open");
    let ratio = rounds(|| {
        emuv_tests::settle_scrubbing().expect("scrubber idle");
        let anon: f64 = (0..LIVES).map(|_| anon_touch(len, toucher)).sum();
        emuv_tests::settle_scrubbing().expect("scrubber idle");
        let emuv: f64 = (0..LIVES).map(|_| emuv_touch(&dev, len, toucher)).sum();
        anon / emuv
    });
    drop(dev);
    module::unload().expect("rmmod");
    ratio
}

/// Threads that first-touch one mapping together, each its own slice, as a multi-threaded
/// loader fills a buffer: the faults run in parallel only if the mm need not serialise them.
const THREADS: usize = 4;

fn touch_in_threads(ptr: *mut u8, len: usize) {
    let base = ptr as usize;
    let slice = len / THREADS;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || touch((base + t * slice) as *mut u8, slice));
        }
    });
}

/// emuv alloc+map+unmap+free / memfd create+truncate+map+unmap+close, 2 MiB, many times a round.
fn alloc_cycle_vs_memfd() -> f64 {
    const LEN: usize = 2 << 20;
    const N: usize = 50;
    module::load("physical_vram_mb=64").expect("insmod");
    let dev = Device::open().expect("open");
    let ratio = rounds(|| {
        let start = Instant::now();
        for _ in 0..N {
            let a = dev.alloc(LEN as u64, Tier::Any).expect("alloc");
            drop(dev.map(&a).expect("mmap"));
            dev.free(a.handle).expect("free");
        }
        let emuv = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..N {
            let fd = memfd_create(c"bench", MFdFlags::MFD_CLOEXEC).expect("memfd");
            ftruncate(&fd, LEN as i64).expect("ftruncate");
            // SAFETY: a fresh shared mapping of our memfd, unmapped right away.
            let p = unsafe {
                nix::sys::mman::mmap(
                    None,
                    NonZeroUsize::new(LEN).expect("len"),
                    ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                    MapFlags::MAP_SHARED,
                    &fd,
                    0,
                )
            }
            .expect("mmap memfd");
            // SAFETY: unmapping what we mapped.
            unsafe { munmap(p, LEN) }.expect("munmap");
        }
        emuv / start.elapsed().as_secs_f64()
    });
    drop(dev);
    module::unload().expect("rmmod");
    ratio
}

fn load_time(params: &str) -> f64 {
    let start = Instant::now();
    module::load(params).expect("insmod");
    let t = start.elapsed().as_secs_f64();
    module::unload().expect("rmmod");
    t
}

/// Kernel memory added by loading `params`, minus that of a 1 GiB pool, per extra GiB.
/// Slab+VmallocUsed+PageTables that loading emuv with `params` adds.
fn kmem_added_by_load(params: &str) -> f64 {
    let before = kernel_memory();
    module::load(params).expect("insmod");
    let after = kernel_memory();
    module::unload().expect("rmmod");
    after as f64 - before as f64
}

/// Gives every slab cache's empty slabs back to the page allocator, so that `Slab` counts the
/// pages live objects need, not what earlier loads left cached.
fn shrink_slab_caches() {
    let Ok(caches) = std::fs::read_dir("/sys/kernel/slab") else {
        return;
    };
    for cache in caches.flatten() {
        // Aliases are symlinks to a cache already in the list.
        if cache.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::write(cache.path().join("shrink"), "1");
        }
    }
}

/// Slab+VmallocUsed+PageTables that loading emuv with `params` adds, each reading taken right
/// after shrinking the slab caches: without that, objects freed by the previous round's unload
/// sit in cached slabs, the next load reuses them, and a card's few KiB of objects read as 0.
fn kmem_added_by_load_shrunk(params: &str) -> f64 {
    shrink_slab_caches();
    let before = kernel_memory();
    module::load(params).expect("insmod");
    shrink_slab_caches();
    let after = kernel_memory();
    module::unload().expect("rmmod");
    after as f64 - before as f64
}

/// What one more card costs the kernel at load (its device, sysfs and configfs directories,
/// pool and bookkeeping): 16 lazy cards against 1, per extra card.
fn kmem_per_extra_card() -> f64 {
    // A kernel without /sys/kernel/slab (SLUB_TINY, as our test kernel) cannot shrink its
    // caches, so a card's objects hide in cached slabs: no figure rather than a wrong one.
    if !std::path::Path::new("/sys/kernel/slab").is_dir() {
        return f64::NAN;
    }
    let params = |count: u32| format!("gpu_count={count} physical_vram_gb=1 virtual_vram_gb=0");
    let one = median(
        (0..ROUNDS)
            .map(|_| kmem_added_by_load_shrunk(&params(1)))
            .collect(),
    );
    let sixteen = median(
        (0..ROUNDS)
            .map(|_| kmem_added_by_load_shrunk(&params(16)))
            .collect(),
    );
    (sixteen - one) / 15.0
}

fn kmem_per_gib_capacity() -> f64 {
    let added = kmem_added_by_load;
    let small = median(
        (0..ROUNDS)
            .map(|_| added("physical_vram_gb=1 virtual_vram_gb=0"))
            .collect(),
    );
    let large = median(
        (0..ROUNDS)
            .map(|_| added("physical_vram_gb=1024 virtual_vram_gb=1024"))
            .collect(),
    );
    (large - small) / 2047.0
}

/// Asks for 4 KiB pages on a mapping of emulated VRAM (`MADV_NOHUGEPAGE`), before its first touch.
fn no_huge_pages(m: &emuv::Mapping) {
    // SAFETY: advice on our own live mapping, which it does not change.
    unsafe {
        madvise(
            NonNull::new(m.as_ptr().cast()).expect("mapping"),
            m.len(),
            MmapAdvise::MADV_NOHUGEPAGE,
        )
    }
    .expect("MADV_NOHUGEPAGE");
}

/// Kernel memory beyond the pages themselves, per GiB of resident lazy pages: in 2 MiB pages
/// (the default), or in 4 KiB pages (`MADV_NOHUGEPAGE` on the mapping).
fn kmem_per_gib_resident(huge: bool) -> f64 {
    const LEN: u64 = 256 * MIB;
    module::load("physical_vram_mb=512").expect("insmod");
    let dev = Device::open().expect("open");
    let per_gib = median(
        (0..ROUNDS)
            .map(|_| {
                let before = settled_kernel_memory();
                let a = dev.alloc(LEN, Tier::Any).expect("alloc");
                let m = dev.map(&a).expect("mmap");
                if !huge {
                    no_huge_pages(&m);
                }
                touch(m.as_ptr(), LEN as usize);
                drop(m);
                let after = settled_kernel_memory();
                dev.free(a.handle).expect("free");
                (after as f64 - before as f64) * (GIB / LEN) as f64
            })
            .collect(),
    );
    drop(dev);
    module::unload().expect("rmmod");
    per_gib
}

/// Fragments free memory: fills it with pipe pages, two pipes written in turn a page at a time
/// so that their pages interleave, until `MemFree` is down to `leave`, then closes every
/// second pipe. Pipe pages are unmovable, so compaction cannot undo it. Returns the pipes kept:
/// dropping them ends the fragmentation.
fn fragment_memory(leave: u64) -> Vec<OwnedFd> {
    const PIPE_PAGES: usize = 16384;
    let page = [0x5au8; PAGE];
    let mut kept = Vec::new();
    // Closed only once all memory is taken, or their pages would fill up again.
    let mut holes = Vec::new();
    'fill: loop {
        let (a_rx, a_tx) = pipe().expect("pipe");
        let (b_rx, b_tx) = pipe().expect("pipe");
        for tx in [&a_tx, &b_tx] {
            fcntl(tx, FcntlArg::F_SETPIPE_SZ((PIPE_PAGES * PAGE) as i32)).expect("F_SETPIPE_SZ");
        }
        for i in 0..PIPE_PAGES {
            if i % 256 == 0 && meminfo("MemFree") < leave {
                kept.extend([a_rx, a_tx]);
                holes.extend([b_rx, b_tx]);
                break 'fill;
            }
            write(&a_tx, &page).expect("write pipe");
            write(&b_tx, &page).expect("write pipe");
        }
        kept.extend([a_rx, a_tx]);
        holes.extend([b_rx, b_tx]);
    }
    drop(holes);
    kept
}

/// Under fragmentation, mmap + first touch of 512 MiB lazy, twice what is free outside the holes:
/// returns (2 MiB pages that fell back in the last pass, median time with 4 KiB pages only /
/// median time trying 2 MiB pages).
fn fragmented_touch() -> (f64, f64) {
    const LEN: usize = 512 << 20;
    module::load("physical_vram_mb=512").expect("insmod");
    let dev = Device::open().expect("open");
    let fallbacks = || emuv_tests::attr_u64("huge_fallbacks").expect("huge_fallbacks") as f64;
    // `MemFree`, not `MemAvailable`, which counts page cache that cannot go (the binaries in
    // use), and with room for them: going lower wakes the OOM killer (seen on Debian's kernel).
    // What emuv touches is twice what stays free outside the holes.
    let pipes = fragment_memory(LEN as u64 / 2);
    let timed = |huge: bool| {
        let start = Instant::now();
        let a = dev.alloc(LEN as u64, Tier::Any).expect("alloc");
        let m = dev.map(&a).expect("mmap");
        if !huge {
            no_huge_pages(&m);
        }
        touch(m.as_ptr(), LEN);
        drop(m);
        dev.free(a.handle).expect("free");
        start.elapsed().as_secs_f64()
    };
    // Filling memory left kswapd at work for a while: let it settle, then alternate which way
    // goes first, so neither pays for the other's aftermath.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut fell_back = 0.0;
    let (mut huge, mut small) = (Vec::new(), Vec::new());
    for round in 0..4 {
        if round % 2 == 0 {
            small.push(timed(false));
        }
        let before = fallbacks();
        huge.push(timed(true));
        fell_back = fallbacks() - before;
        if round % 2 == 1 {
            small.push(timed(false));
        }
    }
    let (huge, small) = (median(huge), median(small));
    drop(pipes);
    drop(dev);
    module::unload().expect("rmmod");
    (fell_back, small / huge)
}

/// What anonymous memory, the baseline, is backed by: the kernel's THP mode decides whether a
/// first touch of 64 MiB faults 2 MiB or 4 KiB at a time.
fn anon_baseline() -> String {
    match std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled") {
        Ok(modes) => {
            let mode = modes
                .split_whitespace()
                .find_map(|m| m.strip_prefix('[')?.strip_suffix(']'))
                .unwrap_or("?")
                .to_owned();
            let pages = if mode == "always" {
                "2 MiB pages"
            } else {
                "4 KiB pages unless madvised"
            };
            format!("THP {mode} ({pages})")
        }
        Err(_) => "no THP (4 KiB pages)".to_owned(),
    }
}

/// `emuv_bench table A.json B.json...`: the runs' figures side by side, one column per kernel.
fn table(paths: &[String]) {
    let runs: Vec<serde_json::Value> = paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
        })
        .collect();
    for (i, run) in runs.iter().enumerate() {
        println!(
            "[{}] {}: anonymous memory with {}",
            i + 1,
            run["kernel"].as_str().unwrap_or("?"),
            run["anon_baseline"].as_str().unwrap_or("?")
        );
    }
    print!("{:<30}", "figure");
    for i in 0..runs.len() {
        print!(" {:>14}", format!("[{}]", i + 1));
    }
    println!("  {:<12} method", "goal");
    let Some(first) = runs.first().and_then(|r| r["figures"].as_array()) else {
        return;
    };
    for (row, figure) in first.iter().enumerate() {
        print!("{:<30}", figure["key"].as_str().unwrap_or("?"));
        for run in &runs {
            match run["figures"][row]["value"].as_f64() {
                Some(v) => print!(" {v:>14.3}"),
                None => print!(" {:>14}", "-"),
            }
        }
        println!(
            "  {:<12} {}",
            figure["goal"].as_str().unwrap_or(""),
            figure["method"].as_str().unwrap_or("")
        );
    }
}

/// Whether figure `key` is to be measured: all of them, or those starting with one of the
/// comma-separated prefixes in `EMUV_BENCH_ONLY` (to measure one figure again, e.g. in an
/// experiment).
fn wanted(key: &str) -> bool {
    std::env::var("EMUV_BENCH_ONLY").map_or(true, |only| {
        only.split(',').any(|prefix| key.starts_with(prefix))
    })
}

/// One figure: measured with `measure` if wanted, otherwise NaN (`-` in the table).
fn fig(
    key: &'static str,
    goal: &'static str,
    method: &'static str,
    measure: impl FnOnce() -> f64,
) -> (&'static str, f64, &'static str, &'static str) {
    let value = if wanted(key) { measure() } else { f64::NAN };
    (key, value, goal, method)
}

/// emuv's CUDA driver (target/cuda/libcuda.so.1), measured by `emuv_cuda --bench` in a process
/// of its own (the library keeps the card open until it exits).
fn cuda_figures(params: &str) -> Vec<(&'static str, f64, &'static str, &'static str)> {
    const FIGURES: [(&str, &str, &str); 6] = [
        (
            "cuda_htod_256m_vs_memcpy",
            ">= 0.5",
            "memcpy time / cuMemcpyHtoD time, 256 MiB from pageable host memory, lazy",
        ),
        (
            "cuda_dtoh_256m_vs_memcpy",
            ">= 0.5",
            "memcpy time / cuMemcpyDtoH time, 256 MiB to pageable host memory",
        ),
        (
            "cuda_alloc_free_256b_vs_malloc",
            "report",
            "cuMemAlloc+cuMemFree time / malloc+free time, 1000 x 256 B then their frees",
        ),
        (
            "cuda_alloc_free_64k_vs_malloc",
            "report",
            "the same, 64 KiB",
        ),
        (
            "cuda_alloc_free_2m_vs_mmap",
            "report",
            "cuMemAlloc+cuMemFree time / anonymous mmap+munmap time, 100 x 2 MiB",
        ),
        (
            "cuda_meminfo_calls_per_s",
            "report",
            "cuMemGetInfo calls per second (the kernel's count, read from sysfs)",
        ),
    ];
    let wanted_any = FIGURES.iter().any(|(k, _, _)| wanted(k));
    let mut values = std::collections::HashMap::new();
    if wanted_any {
        let exe = std::env::current_exe().expect("own path");
        let cuda_test = exe.with_file_name("emuv_cuda");
        let output = module::with_loaded(params, || {
            std::process::Command::new(&cuda_test)
                .arg("--bench")
                .output()
                .map_err(|e| format!("{}: {e}", cuda_test.display()))
        });
        match output {
            Ok(o) if o.status.success() => {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    if let Some((k, v)) = line.split_once(' ') {
                        values.insert(k.to_owned(), v.parse::<f64>().unwrap_or(f64::NAN));
                    }
                }
            }
            Ok(o) => eprintln!(
                "emuv_cuda --bench: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("emuv_cuda --bench: {e}"),
        }
    }
    FIGURES
        .iter()
        .map(|(k, goal, method)| {
            (
                *k,
                values.get(*k).copied().unwrap_or(f64::NAN),
                *goal,
                *method,
            )
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("table") {
        table(&args[1..]);
        return;
    }
    let out = args
        .first()
        .expect("usage: emuv_bench RESULTS.json | emuv_bench table RUN.json...");
    if module::is_loaded() {
        let _ = module::unload();
    }
    let (small, large) = ((128 * MIB) as usize, GIB as usize);
    let lazy = "physical_vram_mb=1536 virtual_vram_mb=0";
    let eager_small = "lazy_allocation=0 physical_vram_mb=128 virtual_vram_mb=0";
    let eager_large = "lazy_allocation=0 physical_vram_mb=1024 virtual_vram_mb=0";
    // Room for the next allocation beside the one being scrubbed, as on a card with more VRAM
    // than one allocation: the life-cycle figures.
    let eager_life_small = "lazy_allocation=0 physical_vram_mb=256 virtual_vram_mb=0";
    let eager_life_large = "lazy_allocation=0 physical_vram_mb=2048 virtual_vram_mb=0";
    let mut figures = vec![
        fig(
            "lazy_touch_128m_vs_anon",
            ">= 1.5",
            "anon time / emuv time, 3 whole lives back to back (emuv: ALLOC, mmap, first touch, munmap, FREE; anon: mmap, touch, munmap), 128 MiB, lazy",
            || touch_vs_anon(lazy, small, touch),
        ),
        fig(
            "lazy_touch_1g_vs_anon",
            ">= 1.5",
            "the same, 1 GiB, lazy",
            || touch_vs_anon(lazy, large, touch),
        ),
        fig(
            "eager_touch_128m_vs_anon",
            ">= 2.5",
            "the same, 128 MiB of a 128 MiB eager card (each ALLOC scrubs what the last FREE left)",
            || touch_vs_anon(eager_small, small, touch),
        ),
        fig(
            "eager_touch_1g_vs_anon",
            ">= 2.5",
            "the same, 1 GiB of a 1 GiB eager card",
            || touch_vs_anon(eager_large, large, touch),
        ),
        fig(
            "eager_life_128m_vs_anon",
            ">= 1.5",
            "the same, 128 MiB of a 256 MiB eager card (room beside what is being scrubbed)",
            || touch_vs_anon(eager_life_small, small, touch),
        ),
        fig(
            "eager_life_1g_vs_anon",
            ">= 1.5",
            "the same, 1 GiB of a 2 GiB eager card",
            || touch_vs_anon(eager_life_large, large, touch),
        ),
        fig(
            "lazy_touch_4_threads_vs_anon",
            ">= 1.5",
            "anon time / emuv time, 4 threads first-touching quarters of 128 MiB, lazy",
            || touch_vs_anon(lazy, small, touch_in_threads),
        ),
        fig(
            "eager_touch_4_threads_vs_anon",
            ">= 2.5",
            "anon time / emuv time, 4 threads touching quarters of 128 MiB, eager",
            || touch_vs_anon(eager_small, small, touch_in_threads),
        ),
        fig(
            "alloc_cycle_vs_memfd",
            "<= 1.0",
            "emuv time / memfd time, 2 MiB alloc+map+unmap+free",
            alloc_cycle_vs_memfd,
        ),
        fig(
            "lazy_load_1tib_vs_1gib",
            "<= 2.0",
            "insmod time, 1 TiB lazy pool / 1 GiB lazy pool",
            || {
                let small = median(
                    (0..ROUNDS)
                        .map(|_| load_time("physical_vram_gb=1 virtual_vram_gb=0"))
                        .collect(),
                );
                let large = median(
                    (0..ROUNDS)
                        .map(|_| load_time("physical_vram_gb=1024 virtual_vram_gb=0"))
                        .collect(),
                );
                large / small
            },
        ),
        fig(
            "kmem_bytes_per_gib_capacity",
            "<= 65536",
            "Slab+VmallocUsed+PageTables added per GiB of lazy capacity at load",
            kmem_per_gib_capacity,
        ),
        fig(
            "kmem_bytes_per_extra_card",
            "report",
            "Slab+VmallocUsed+PageTables added per card at load, gpu_count=16 against 1, lazy",
            kmem_per_extra_card,
        ),
        fig(
            "kmem_bytes_per_gib_resident",
            "<= 65536",
            "Slab+VmallocUsed+PageTables added per GiB of touched lazy memory (2 MiB pages)",
            || kmem_per_gib_resident(true),
        ),
        fig(
            "kmem_bytes_per_gib_resident_4k",
            "<= 2097152",
            "the same in 4 KiB pages (MADV_NOHUGEPAGE)",
            || kmem_per_gib_resident(false),
        ),
    ];
    figures.extend(cuda_figures(lazy));
    // Last: the pageblocks it fragments stay marked unmovable after it.
    let fragmented = wanted("fragmented").then(fragmented_touch);
    figures.push(fig(
        "fragmented_fallbacks_of_256",
        "report",
        "2 MiB pages of 256 that fell back to 4 KiB, 512 MiB lazy, memory fragmented",
        || fragmented.map_or(f64::NAN, |f| f.0),
    ));
    figures.push(fig(
        "fragmented_touch_vs_4k",
        ">= 0.9",
        "4 KiB-only time / time trying 2 MiB pages, the same 512 MiB under fragmentation",
        || fragmented.map_or(f64::NAN, |f| f.1),
    ));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .unwrap_or_default();
    let baseline = anon_baseline();
    println!("kernel {kernel}, anonymous memory with {baseline}");
    println!("{:<30} {:>14}  {:<12} method", "figure", "measured", "goal");
    let rows: Vec<serde_json::Value> = figures
        .iter()
        .map(|(key, value, goal, method)| {
            println!("{key:<30} {value:>14.3}  {goal:<12} {method}");
            serde_json::json!({ "key": key, "value": value, "goal": goal, "method": method })
        })
        .collect();
    let json = serde_json::json!({ "kernel": kernel, "anon_baseline": baseline, "figures": rows });
    std::fs::write(out, format!("{json:#}\n")).expect("write results");
}
