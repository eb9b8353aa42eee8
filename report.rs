// SPDX-License-Identifier: GPL-2.0

//! The human-readable state report of `cat /dev/emuv` and `/sys/class/emuv/emuv/vram_info`.
//!
//! One `Key: value` per line, sizes in MiB, so people can read it and scripts can `grep` it.

use crate::{
    gpu_db::{GpuModel, NVIDIA_VENDOR_ID},
    vram_pool::{PoolStats, Strategy, Tier},
};
use core::fmt::{self, Write};

const MIB: u64 = 1 << 20;

/// Writes the report for `model` and a snapshot of its pool.
pub(crate) fn write_report(
    out: &mut impl Write,
    model: &GpuModel,
    strategy: Strategy,
    stats: &PoolStats,
) -> fmt::Result {
    writeln!(out, "GPU: {}", model.name)?;
    writeln!(out, "Model: {}", model.key)?;
    writeln!(
        out,
        "PCI ID: {:04x}:{:04x}",
        NVIDIA_VENDOR_ID, model.device_id
    )?;
    writeln!(out, "Chip: {} ({})", model.chip, model.architecture.name())?;
    writeln!(
        out,
        "Card memory: {} GiB {}, {}-bit, {}.{} GB/s",
        model.vram_gib,
        model.memory_type.name(),
        model.bus_width_bits,
        model.bandwidth_mbps / 1000,
        model.bandwidth_mbps % 1000 / 100
    )?;
    for tier in Tier::ALL {
        let t = stats.tier(tier);
        let label = match tier {
            Tier::Physical => "Physical VRAM",
            Tier::Virtual => "Virtual VRAM",
        };
        writeln!(
            out,
            "{label}: {} MiB (used {} MiB, resident {} MiB)",
            t.capacity / MIB,
            t.used / MIB,
            t.resident / MIB
        )?;
    }
    writeln!(out, "Total VRAM: {} MiB", stats.capacity() / MIB)?;
    writeln!(out, "Used VRAM: {} MiB", stats.used() / MIB)?;
    writeln!(out, "Free VRAM: {} MiB", stats.free() / MIB)?;
    writeln!(out, "Resident memory: {} MiB", stats.resident() / MIB)?;
    writeln!(out, "Allocation strategy: {}", strategy.name())?;
    writeln!(
        out,
        "Allocations: {} (peak used {} MiB)",
        stats.allocations,
        stats.peak_used / MIB
    )
}
