// SPDX-License-Identifier: GPL-2.0
//! The default report: nvidia-smi's boxed table (91 columns, the 580 driver's layout), with
//! `N/A` where an emulated card has nothing to say (fans, temperature, power draw, MIG).

use crate::{process_name, Snapshot, EMUV_VERSION};
use std::fmt::Write;

const MIB: u64 = 1 << 20;
const SEPARATOR: &str =
    "+-----------------------------------------+------------------------+----------------------+";
const FULL_RULE: &str =
    "+-----------------------------------------------------------------------------------------+";

/// Cuts `text` to `width` characters, marking the cut with "..." at `from_left` or right.
fn fit(text: &str, width: usize, from_left: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width {
        return text.to_owned();
    }
    let keep = width.saturating_sub(3);
    if from_left {
        format!(
            "...{}",
            chars[chars.len() - keep..].iter().collect::<String>()
        )
    } else {
        format!("{}...", chars[..keep].iter().collect::<String>())
    }
}

/// MiB as nvidia-smi rounds memory: up.
pub fn mib_up(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}

pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    // Infallible: writing to a String.
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    line(s.date.clone());
    line(FULL_RULE.into());
    line(format!(
        "| {:<88}|",
        format!(
            "EMUV-SMI {EMUV_VERSION:<24}Driver Version: {:<15}CUDA Version: N/A",
            s.driver_version
        )
    ));
    line(SEPARATOR.into());
    line("| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |".into());
    line("| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |".into());
    line("|=========================================+========================+======================|".into());
    for g in &s.gpus {
        // The uncorrected ECC errors since load, which emuv can raise; N/A on a module that does
        // not count them.
        let ecc = g
            .ecc_errors
            .map_or_else(|| "N/A".to_owned(), |n| n.to_string());
        // No power draw, but the board's limit: "N/A /  450W".
        let power = g
            .gpu
            .facts
            .power_limit_mw
            .map_or_else(|| "N/A".to_owned(), |mw| format!("N/A / {:>4}W", mw / 1000));
        line(format!(
            "| {:>3}  {:<30}{:>3}  |   {:<16} {:>3} | {:>20} |",
            g.gpu.index,
            fit(&g.gpu.name, 30, false),
            "N/A",
            g.gpu.pci_bus_id(),
            "N/A",
            ecc
        ));
        line(format!(
            "| {:<4}  {:<4}  {:<4}  {:>21} |{:>8}MiB / {:>6}MiB | {:>8}{:>12} |",
            "N/A",
            "N/A",
            "N/A",
            power,
            mib_up(g.memory.used),
            mib_up(g.memory.total),
            "0%",
            "Default"
        ));
        line(SEPARATOR.into());
    }
    line(String::new());
    line(FULL_RULE.into());
    line(format!("| {:<88}|", "Processes:"));
    line("|  GPU   GI   CI              PID   Type   Process name                        GPU Memory |".into());
    line("|        ID   ID                                                               Usage      |".into());
    line("|=========================================================================================|".into());
    let mut any = false;
    for g in &s.gpus {
        let Some(processes) = &g.processes else {
            line(format!(
                "| {:<88}|",
                format!(
                    "GPU {}: no access to {}",
                    g.gpu.index,
                    g.gpu.device_node.display()
                )
            ));
            any = true;
            continue;
        };
        for p in processes {
            any = true;
            // A file whose opener has exited has no PID to show.
            let pid = p
                .pid
                .map_or_else(|| "N/A".to_owned(), |pid| pid.to_string());
            // A long name is cut to keep one space before the memory, which can take 5 digits.
            line(format!(
                "|{:>5}   N/A  N/A{:>16}{:>7}   {:<37} {:>5}MiB |",
                g.gpu.index,
                pid,
                "C",
                fit(&process_name(p), 37, true),
                mib_up(p.bytes)
            ));
        }
    }
    if !any {
        line(format!("|  {:<87}|", "No running processes found"));
    }
    line(FULL_RULE.into());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::GpuState;
    use emuv::{
        gpus::{Gpu, Memory, ModelFacts, PciLocation},
        ProcessEntry,
    };

    /// No process has this PID (above the kernel's highest `pid_max`): its name comes from
    /// its command name.
    pub(crate) const NO_SUCH_PID: u32 = 4_194_304;

    /// A 4070 Ti SUPER with two processes: one with a name made to forge a row, and a file
    /// whose opener has exited.
    pub(crate) fn snapshot() -> Snapshot {
        let gpu = Gpu {
            index: 0,
            kernel_index: 0,
            sysfs_dir: "/sys/class/emuv/emuv".into(),
            device_node: "/dev/emuv".into(),
            name: "NVIDIA GeForce RTX 4070 Ti SUPER".into(),
            model: "4070tisuper".into(),
            vendor_id: 0x10de,
            device_id: 0x2705,
            pci: PciLocation::for_kernel_index(0),
            facts: ModelFacts {
                architecture: Some("Ada Lovelace".into()),
                compute_capability: Some((8, 9)),
                memory_bus_width_bits: Some(256),
                cuda_cores: Some(8448),
                max_graphics_clock_mhz: Some(2610),
                max_memory_clock_mhz: Some(10501),
                power_limit_mw: Some(285_000),
                bar1_bytes: Some(16 << 30),
                chip: Some("AD103".into()),
            },
        };
        let memory = Memory {
            total: 16 << 30,
            reserved: 0,
            used: 4 << 20,
            free: (16 << 30) - (4 << 20),
        };
        let forged = ProcessEntry {
            pid: Some(NO_SUCH_PID),
            comm: b"ev\n4242 fake, 9".to_vec(),
            bytes: (3 << 20) - 1,
            allocations: 1,
        };
        let exited = ProcessEntry {
            pid: None,
            comm: b"worker\xff".to_vec(),
            bytes: 1 << 20,
            allocations: 2,
        };
        Snapshot {
            timestamp: "2026/11/22 06:40:00.000".into(),
            date: "Sun Nov 22 06:40:00 2026".into(),
            driver_version: "580.159.04".into(),
            count: 1,
            gpus: vec![GpuState {
                gpu,
                memory,
                processes: Some(vec![forged, exited]),
                ecc_errors: Some(0),
            }],
            lost: Vec::new(),
        }
    }

    #[test]
    fn every_line_is_91_columns() {
        let text = render(&snapshot());
        for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
            assert_eq!(line.chars().count(), 91, "{line:?}");
        }
        assert!(text.contains("       4MiB /  16384MiB"), "{text}");
        assert!(text.contains("Driver Version: 580.159.04"), "{text}");
        assert!(
            text.contains("| N/A   N/A   N/A             N/A /  285W |"),
            "{text}"
        );
        assert!(
            text.contains("00000000:01:00.0 N/A |                    0 |"),
            "{text}"
        );
        assert!(text.contains("NVIDIA GeForce RTX 4070 Ti ..."), "{text}");
    }

    #[test]
    fn process_rows_cannot_be_forged() {
        let text = render(&snapshot());
        let rows: Vec<&str> = text.lines().filter(|l| l.contains("   C   ")).collect();
        assert_eq!(
            rows,
            [
                "|    0   N/A  N/A         4194304      C   ev\\n4242 fake, 9                          3MiB |",
                "|    0   N/A  N/A             N/A      C   worker\\xff                                1MiB |",
            ],
            "{text}"
        );
        assert!(!text.contains("\n4242"), "{text}");
    }

    #[test]
    fn a_long_name_leaves_room_for_five_digits_of_memory() {
        let mut s = snapshot();
        if let Some(processes) = s.gpus[0].processes.as_mut() {
            processes[0].comm = b"python3.11-with-a-name-longer-than-the-column".to_vec();
            processes[0].bytes = 23554 << 20;
        }
        let text = render(&s);
        let row = text
            .lines()
            .find(|l| l.contains("   C   ") && l.contains("23554MiB"))
            .unwrap_or_default();
        assert!(row.ends_with(" 23554MiB |"), "{text}");
        assert_eq!(row.chars().count(), FULL_RULE.chars().count(), "{row}");
    }
}
