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

/// What one process holds, for the process list.
pub(crate) struct ProcessUsage {
    pub(crate) pid: i32,
    comm: [u8; 16],
    comm_len: usize,
    pub(crate) bytes: u64,
    pub(crate) allocations: u64,
}

impl ProcessUsage {
    pub(crate) fn new(pid: i32, comm: &[u8]) -> Self {
        let mut entry = Self {
            pid,
            comm: [0; 16],
            comm_len: comm.len().min(16),
            bytes: 0,
            allocations: 0,
        };
        entry.comm[..entry.comm_len].copy_from_slice(&comm[..entry.comm_len]);
        entry
    }

    fn comm(&self) -> &str {
        core::str::from_utf8(&self.comm[..self.comm_len]).unwrap_or("?")
    }
}

/// Writes the report for `model` and a snapshot of its pool, and the process list if given
/// (like nvidia-smi's: pid, command, memory, allocations).
pub(crate) fn write_report(
    out: &mut impl Write,
    model: &GpuModel,
    strategy: Strategy,
    stats: &PoolStats,
    processes: Option<&[ProcessUsage]>,
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
    )?;
    let Some(processes) = processes else {
        return Ok(());
    };
    writeln!(out, "Processes: {}", processes.len())?;
    if !processes.is_empty() {
        writeln!(
            out,
            "  {:>7}  {:<16}  {:>14}  {:>11}",
            "PID", "COMMAND", "USED BYTES", "ALLOCATIONS"
        )?;
    }
    for p in processes {
        writeln!(
            out,
            "  {:>7}  {:<16}  {:>14}  {:>11}",
            p.pid,
            p.comm(),
            p.bytes,
            p.allocations
        )?;
    }
    Ok(())
}
