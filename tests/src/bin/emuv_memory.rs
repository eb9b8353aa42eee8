// SPDX-License-Identifier: GPL-2.0
//! Where emuv's memory comes from: an eager pool is taken at load and given back at unload, a
//! pool that cannot fit is refused with `ENOMEM` (and the machine lives on), a lazy pool costs
//! nothing at load however large, and load/unload cycles do not grow the kernel's memory.

use emuv_tests::{
    attr, kasan_quarantine, kasan_shadow,
    kmsg::Kmsg,
    mem_available, module, settled_kernel_memory,
    tap::{check, check_eq, Tap},
};
use nix::errno::Errno;
use std::time::Instant;

const MIB: u64 = 1 << 20;

/// MemAvailable moves for reasons of its own (page cache, per-CPU lists): this much is noise.
const TOLERANCE: u64 = 24 * MIB;

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes as f64 / MIB as f64)
}

fn main() {
    let mut tap = Tap::new(4);
    if module::is_loaded() {
        let _ = module::unload();
    }

    // Eager: 256 + 128 MiB reserved at load, visible in MemAvailable, returned by rmmod.
    let before = mem_available();
    let result = module::with_loaded(
        "lazy_allocation=0 physical_vram_mb=256 virtual_vram_mb=128",
        || {
            let during = mem_available();
            let taken = before.saturating_sub(during);
            tap.note(format!(
                "eager 384 MiB: MemAvailable {} -> {} (taken {})",
                mib(before),
                mib(during),
                mib(taken)
            ));
            // On the debug kernel, KASAN shadows the vmalloc areas too.
            let expected = 384 * MIB + kasan_shadow(384 * MIB);
            check(
                taken + TOLERANCE >= expected && taken <= expected + TOLERANCE,
                || {
                    format!(
                        "MemAvailable fell by {}, expected {} +- {}",
                        mib(taken),
                        mib(expected),
                        mib(TOLERANCE)
                    )
                },
            )?;
            check_eq(
                "allocation_strategy",
                attr("allocation_strategy").map_err(|e| e.to_string())?,
                "eager".into(),
            )?;
            check_eq(
                "resident_bytes",
                attr("resident_bytes").map_err(|e| e.to_string())?,
                (384 * MIB).to_string(),
            )
        },
    )
    .and_then(|()| {
        let after = mem_available();
        tap.note(format!("after rmmod: MemAvailable {}", mib(after)));
        check(after + TOLERANCE + kasan_quarantine() >= before, || {
            format!("rmmod returned only {} of {}", mib(after), mib(before))
        })
    });
    tap.test(
        "eager reservation shows in MemAvailable and is returned by rmmod",
        result,
    );

    // Eager larger than the machine: ENOMEM with the numbers, and the machine lives on.
    let mut kmsg = Kmsg::new();
    let loaded = module::load("lazy_allocation=0 physical_vram_gb=64 virtual_vram_gb=64");
    if loaded.is_ok() {
        let _ = module::unload();
    }
    let log = kmsg.read_new();
    let result = check_eq("insmod result", loaded, Err(Errno::ENOMEM)).and_then(|()| {
        let line = log
            .iter()
            .find(|l| l.contains("does not fit") && l.contains("131072 MiB"))
            .ok_or_else(|| format!("no dmesg line with the numbers: {log:?}"))?;
        // The overhead it names is the one this kernel has.
        check(line.contains("KASAN") == emuv_tests::kasan(), || {
            format!(
                "KASAN named on a kernel with KASAN={}: {line}",
                emuv_tests::kasan()
            )
        })
    });
    tap.test("eager pool larger than memory fails with ENOMEM", result);

    // Lazy 24 + 96 GiB on a small VM: bookkeeping only.
    let before = mem_available();
    let start = Instant::now();
    let result = module::with_loaded(
        "gpu_model=4090 physical_vram_gb=24 virtual_vram_gb=96",
        || {
            let elapsed = start.elapsed();
            let taken = before.saturating_sub(mem_available());
            tap.note(format!(
                "lazy 120 GiB: insmod took {elapsed:?}, MemAvailable fell by {}",
                mib(taken)
            ));
            check_eq(
                "total_vram_bytes",
                attr("total_vram_bytes").map_err(|e| e.to_string())?,
                (120u64 << 30).to_string(),
            )?;
            check_eq(
                "resident_bytes",
                attr("resident_bytes").map_err(|e| e.to_string())?,
                "0".into(),
            )?;
            check(taken < TOLERANCE, || {
                format!("a lazy pool took {} at load", mib(taken))
            })
        },
    );
    tap.test("lazy pool of 24+96 GiB loads without taking memory", result);

    // 50 cycles: after a warm-up, kernel memory must not grow with the count of cycles.
    let cycle = |params: &str| module::with_loaded(params, || Ok(()));
    let params = [
        "",
        "lazy_allocation=0 physical_vram_mb=64 virtual_vram_mb=32",
        "gpu_model=5090",
    ];
    let result = (0..5)
        .try_for_each(|i| cycle(params[i % params.len()]))
        .and_then(|()| {
            let (kmem_before, avail_before) = (settled_kernel_memory(), mem_available());
            (0..50).try_for_each(|i| cycle(params[i % params.len()]))?;
            let (kmem_after, avail_after) = (settled_kernel_memory(), mem_available());
            tap.note(format!(
                "50 cycles: Slab+Vmalloc+PageTables {} -> {}, MemAvailable {} -> {}",
                mib(kmem_before),
                mib(kmem_after),
                mib(avail_before),
                mib(avail_after)
            ));
            // On a KASAN kernel, freed objects wait in its quarantine.
            let slack = kasan_quarantine();
            check(kmem_after <= kmem_before + 2 * MIB + slack, || {
                format!("kernel memory grew by more than 2 MiB + {}", mib(slack))
            })?;
            check(avail_after + TOLERANCE + slack >= avail_before, || {
                "MemAvailable fell".into()
            })
        });
    tap.test("50 load/unload cycles without memory growth", result);
    tap.finish()
}
