// SPDX-License-Identifier: GPL-2.0
//! Storms: 200 load/unload cycles with random valid parameters in one boot, each one used
//! (open, allocate, map, touch) and each refused unload while open and while mapped; then an
//! eager pool sized to leave the VM nearly out of memory, filled and released. MemAvailable,
//! the kernel's own memory and the pool's counters are checked throughout.
//!
//!   EMUV_STORM_CYCLES (default 200), EMUV_STORM_SEED (default: from the clock, printed).

use emuv::{Device, Tier};
use emuv_tests::{
    attr, attr_u64, err, kasan_quarantine, kasan_shadow, mem_available, module,
    settled_kernel_memory,
    tap::{check, check_eq, Tap},
};
use nix::errno::Errno;
use rand::{rngs::StdRng, Rng, SeedableRng};

const MIB: u64 = 1 << 20;
const PAGE: usize = 4096;
/// MemAvailable moves for reasons of its own (page cache, per-CPU lists): this much is noise,
/// plus, on a KASAN kernel, what its quarantine may hold back.
const NOISE: u64 = 24 * MIB;
const MODELS: &[&str] = &[
    "4060",
    "4060ti",
    "4060ti16",
    "4070",
    "4070super",
    "4070ti",
    "4070tisuper",
    "4080",
    "4080super",
    "4090",
    "5060",
    "5060ti",
    "5060ti16",
    "5070",
    "5070ti",
    "5080",
    "5090",
];

type TestResult = Result<(), String>;

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// One random valid configuration and what sysfs must then say.
struct Config {
    params: String,
    model: &'static str,
    total: u64,
    eager: bool,
    file_limit: u64,
}

fn random_config(rng: &mut StdRng) -> Config {
    let model = MODELS[rng.random_range(0..MODELS.len())];
    let eager = rng.random_bool(0.3);
    // Eager pools are reserved at load: keep them small. Lazy ones may be huge.
    let (physical, virt) = if eager {
        (
            rng.random_range(1..=32) * MIB,
            rng.random_range(0..=16) * MIB,
        )
    } else if rng.random_bool(0.5) {
        (
            rng.random_range(1..=64) << 30,
            rng.random_range(0..=64) << 30,
        )
    } else {
        (
            rng.random_range(1..=512) * MIB,
            rng.random_range(0..=256) * MIB,
        )
    };
    let file_limit = if rng.random_bool(0.3) {
        rng.random_range(1..=8) * MIB
    } else {
        0
    };
    let size = |name: &str, bytes: u64| match bytes % (1 << 30) {
        0 if bytes > 0 => format!("{name}_gb={}", bytes >> 30),
        _ => format!("{name}_mb={}", bytes / MIB),
    };
    let params = format!(
        "gpu_model={model} {} {} lazy_allocation={} debug_mode={} vram_limit_per_file_mb={}",
        size("physical_vram", physical),
        size("virtual_vram", virt),
        u8::from(!eager),
        u8::from(rng.random_bool(0.2)),
        file_limit / MIB
    );
    Config {
        params,
        model,
        total: physical + virt,
        eager,
        file_limit,
    }
}

/// One cycle: load, check, use, refuse unload while open and while mapped, unload.
fn cycle(rng: &mut StdRng, c: &Config) -> TestResult {
    module::load(&c.params).map_err(err(&format!("insmod {}", c.params)))?;
    let result = (|| -> TestResult {
        check_eq(
            "gpu_model",
            attr("gpu_model").map_err(err("gpu_model"))?,
            c.model.to_owned(),
        )?;
        check_eq("total_vram_bytes", attr_u64("total_vram_bytes")?, c.total)?;
        let strategy = if c.eager { "eager" } else { "lazy" };
        check_eq(
            "strategy",
            attr("allocation_strategy").map_err(err("strategy"))?,
            strategy.into(),
        )?;
        let device = Device::open().map_err(err("open"))?;
        let bytes = rng.random_range(1..=64) * PAGE as u64;
        let allowed = c.file_limit == 0 || bytes <= c.file_limit;
        let a = match device.alloc(bytes, Tier::Any) {
            Ok(a) => a,
            Err(Errno::ENOMEM) if !allowed || bytes > c.total => return Ok(()),
            Err(e) => return Err(format!("alloc {bytes}: {e}")),
        };
        check_eq("used", attr_u64("used_bytes")?, bytes)?;
        let mut m = device.map(&a).map_err(err("mmap"))?;
        m.as_mut_slice()
            .iter_mut()
            .step_by(PAGE)
            .for_each(|b| *b = 0x5a);
        check_eq(
            "rmmod while mapped",
            module::unload(),
            Err(Errno::EWOULDBLOCK),
        )?;
        drop(m);
        check_eq(
            "rmmod while open",
            module::unload(),
            Err(Errno::EWOULDBLOCK),
        )?;
        drop(device);
        check_eq("used after close", attr_u64("used_bytes")?, 0)?;
        if !c.eager {
            check_eq("resident after close", attr_u64("resident_bytes")?, 0)?;
        }
        Ok(())
    })();
    let unloaded = module::unload().map_err(err("rmmod"));
    result.map_err(|e| format!("{}: {e}", c.params))?;
    unloaded
}

fn load_storm(tap: &Tap, seed: u64, cycles: u32) -> TestResult {
    let mut rng = StdRng::seed_from_u64(seed);
    // Warm-up cycles: the first loads fill caches that stay (slabs, sysfs, module loader).
    for _ in 0..10 {
        let warm_up = random_config(&mut rng);
        cycle(&mut rng, &warm_up)?;
    }
    let settled = || (settled_kernel_memory(), mem_available());
    let (kmem_before, avail_before) = settled();
    let (mut eager, mut huge) = (0, 0);
    for n in 0..cycles {
        let c = random_config(&mut rng);
        eager += u32::from(c.eager);
        huge += u32::from(c.total >= 1 << 30);
        cycle(&mut rng, &c).map_err(|e| format!("cycle {n}: {e}"))?;
    }
    let (kmem_after, avail_after) = settled();
    let slack = kasan_quarantine();
    tap.note(format!(
        "{cycles} cycles ({eager} eager, {huge} of 1 GiB or more): Slab+Vmalloc+PageTables {} -> {}, \
         MemAvailable {} -> {} (KASAN quarantine allowance {})",
        mib(kmem_before),
        mib(kmem_after),
        mib(avail_before),
        mib(avail_after),
        mib(slack)
    ));
    check(kmem_after <= kmem_before + 2 * MIB + slack, || {
        "kernel memory grew".into()
    })?;
    check(avail_after + NOISE + slack >= avail_before, || {
        "MemAvailable fell".into()
    })
}

/// An eager pool of all but 64 MiB of what is available, allocated to the last page, touched,
/// released, unloaded.
fn near_oom(tap: &Tap) -> TestResult {
    let before = mem_available();
    // On the debug kernel the pool's vmalloc areas cost 1/8 more in KASAN shadow.
    let room = before - 64 * MIB;
    let pool = room - kasan_shadow(room) * 8 / 9;
    // Tiers in whole chunks, so that filling with chunks leaves nothing free (an allocation
    // lives in one tier).
    let chunk = 4 * MIB;
    let physical = pool / 4 * 3 / chunk * chunk / MIB;
    let virt = (pool - physical * MIB) / chunk * chunk / MIB;
    let pool = (physical + virt) * MIB;
    let params = format!("lazy_allocation=0 physical_vram_mb={physical} virtual_vram_mb={virt}");
    module::with_loaded(&params, || {
        let during = mem_available();
        let device = Device::open().map_err(err("open"))?;
        let mut held = Vec::new();
        loop {
            match device.alloc(chunk, Tier::Any) {
                Ok(a) => held.push(a),
                Err(Errno::ENOMEM) => break,
                Err(e) => return Err(format!("alloc: {e}")),
            }
        }
        let used = attr_u64("used_bytes")?;
        check_eq("used", used, held.len() as u64 * chunk)?;
        check(attr_u64("free_bytes")? < chunk, || {
            "ENOMEM with a chunk still free".into()
        })?;
        // Every page is there already (eager): touching costs page tables only.
        for a in held.iter().step_by(8) {
            let mut m = device.map(a).map_err(err("mmap"))?;
            m.as_mut_slice()
                .iter_mut()
                .step_by(PAGE)
                .for_each(|b| *b = 1);
        }
        tap.note(format!(
            "near OOM: MemAvailable {} -> {} with a {} eager pool, {} allocated",
            mib(before),
            mib(during),
            mib(pool),
            mib(used)
        ));
        drop(device);
        check_eq("used after close", attr_u64("used_bytes")?, 0)
    })?;
    let after = mem_available();
    tap.note(format!("near OOM: after rmmod MemAvailable {}", mib(after)));
    check(after + NOISE + kasan_quarantine() >= before, || {
        format!("rmmod gave back only {} of {}", mib(after), mib(before))
    })
}

fn main() {
    let cycles = std::env::var("EMUV_STORM_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed = std::env::var("EMUV_STORM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let mut tap = Tap::new(2);
    tap.note(format!(
        "replay with EMUV_STORM_SEED={seed} EMUV_STORM_CYCLES={cycles}"
    ));
    tap.test(
        &format!("{cycles} load/unload cycles with random parameters, used and refused unload while held"),
        load_storm(&tap, seed, cycles),
    );
    tap.test(
        "an eager pool leaving the VM nearly out of memory: filled, released, returned",
        near_oom(&tap),
    );
    tap.finish()
}
