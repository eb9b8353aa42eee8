// SPDX-License-Identifier: GPL-2.0

//! The human-readable state report of `cat /dev/emuv` and `/sys/class/emuv/emuv/vram_info`.
//!
//! One `Key: value` per line, sizes in MiB, so people can read it and scripts can `grep` it.

use crate::{
    gpu_db::{GpuModel, NVIDIA_VENDOR_ID},
    uapi,
    vram_pool::{PoolStats, Strategy, Tier},
};
use core::fmt::{self, Write};

const MIB: u64 = 1 << 20;

/// What one process holds, for the process list.
pub(crate) struct ProcessUsage {
    /// As the reader sees it; `None` when the process that opened the file has exited.
    pub(crate) pid: Option<i32>,
    comm: [u8; 16],
    pub(crate) bytes: u64,
    pub(crate) allocations: u64,
}

impl ProcessUsage {
    pub(crate) fn new(pid: Option<i32>, comm: &[u8]) -> Self {
        let mut entry = Self {
            pid,
            comm: [0; 16],
            bytes: 0,
            allocations: 0,
        };
        let len = comm.len().min(entry.comm.len());
        entry.comm[..len].copy_from_slice(&comm[..len]);
        entry
    }

    /// As `struct emuv_process`.
    pub(crate) fn to_uapi(&self) -> uapi::Process {
        uapi::Process {
            pid: self.pid.unwrap_or(0),
            flags: if self.pid.is_none() {
                uapi::PROCESS_EXITED
            } else {
                0
            },
            comm: self.comm,
            bytes: self.bytes,
            allocations: self.allocations,
            reserved: [0; 2],
        }
    }
}

/// A command name made safe to print on one line: any user can name a process anything,
/// newlines included, and a raw name could forge rows. Printable ASCII stays, a backslash and
/// a newline become `\\` and `\n` (as `/proc/PID/status` writes them), any other byte `\ooo`.
struct EscapedComm {
    text: [u8; 16 * 4],
    len: usize,
}

impl EscapedComm {
    fn new(comm: &[u8]) -> Self {
        let mut out = Self {
            text: [0; 16 * 4],
            len: 0,
        };
        for &byte in comm.iter().take_while(|&&b| b != 0) {
            let octal;
            let piece: &[u8] = match byte {
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                0x20..=0x7e => core::slice::from_ref(&byte),
                _ => {
                    octal = [
                        b'\\',
                        b'0' + (byte >> 6),
                        b'0' + (byte >> 3 & 7),
                        b'0' + (byte & 7),
                    ];
                    &octal
                }
            };
            out.text[out.len..out.len + piece.len()].copy_from_slice(piece);
            out.len += piece.len();
        }
        out
    }

    fn as_str(&self) -> &str {
        // Only ASCII was written.
        core::str::from_utf8(&self.text[..self.len]).unwrap_or("?")
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
    writeln!(
        out,
        "In 2 MiB pages: {} MiB ({} fell back to 4 KiB pages)",
        stats.huge() / MIB,
        stats.huge_fallbacks
    )?;
    writeln!(
        out,
        "Quarantined: {} KiB (freed, still held by a pipe, io_uring or I/O)",
        stats.quarantined() >> 10
    )?;
    writeln!(
        out,
        "Scrubbing: {} KiB (freed, being zeroed before reuse)",
        stats.scrubbing() >> 10
    )?;
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
        let comm = EscapedComm::new(&p.comm);
        match p.pid {
            Some(pid) => write!(out, "  {pid:>7}")?,
            None => write!(out, "  {:>7}", "-")?,
        }
        writeln!(
            out,
            "  {:<16}  {:>14}  {:>11}",
            comm.as_str(),
            p.bytes,
            p.allocations
        )?;
    }
    Ok(())
}

#[cfg(emuv_kunit)]
#[kernel::prelude::kunit_tests(emuv_report)]
mod tests {
    use super::*;

    #[test]
    fn command_names_cannot_break_a_line() {
        assert_eq!(EscapedComm::new(b"python3").as_str(), "python3");
        assert_eq!(
            EscapedComm::new(b"ev\n4242 fake 9").as_str(),
            "ev\\n4242 fake 9"
        );
        assert_eq!(
            EscapedComm::new(b"a\\b\t\x7f\xff").as_str(),
            "a\\\\b\\011\\177\\377"
        );
        // Stops at the first NUL, and a full 16-byte name of escapes fits.
        assert_eq!(EscapedComm::new(b"ab\0cd").as_str(), "ab");
        assert_eq!(EscapedComm::new(&[0xff; 16]).as_str().len(), 64);
    }

    #[test]
    fn exited_openers_have_no_pid() {
        let gone = ProcessUsage::new(None, b"worker");
        assert_eq!(gone.to_uapi().pid, 0);
        assert_eq!(gone.to_uapi().flags, uapi::PROCESS_EXITED);
        let live = ProcessUsage::new(Some(42), b"worker");
        assert_eq!(live.to_uapi().pid, 42);
        assert_eq!(live.to_uapi().flags, 0);
        assert_eq!(&live.to_uapi().comm[..7], b"worker\0");
    }
}
