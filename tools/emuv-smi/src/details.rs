// SPDX-License-Identifier: GPL-2.0
//! `-q` (and `-q -d TYPES`): nvidia-smi's "NVSMI LOG" of every selected GPU, in the 580
//! driver's layout (keys padded to 54 columns, nested sections indented by four), with the
//! sections that apply to an emulated card: identity, PCI, memory (FB, BAR1, confidential
//! compute), compute mode, utilisation, ECC errors, power limits, maximum clocks, processes.
//! What the card has no value for is `N/A`, as on a real card without it.

use crate::{process_name, query::watts, table::mib_up, GpuState, Snapshot};
use std::fmt::Write;

/// The sections `-d` selects; all of them without `-d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sections {
    /// Product, UUID, PCI: only in the whole log (no `-d` type selects them).
    identity: bool,
    memory: bool,
    utilization: bool,
    ecc: bool,
    power: bool,
    clock: bool,
    compute: bool,
    pids: bool,
    performance: bool,
}

/// nvidia-smi's `-d` types that emuv has no values for: accepted, printing nothing.
const OTHER_TYPES: &[&str] = &[
    "TEMPERATURE",
    "SUPPORTED_CLOCKS",
    "PAGE_RETIREMENT",
    "ACCOUNTING",
    "ENCODER_STATS",
    "SUPPORTED_GPU_TARGET_TEMP",
    "VOLTAGE",
    "FBC_STATS",
    "ROW_REMAPPER",
    "RESET_STATUS",
    "GSP_FIRMWARE_VERSION",
    "POWER_SMOOTHING",
    "POWER_PROFILES",
];

impl Sections {
    /// `-d`'s comma-separated types (any case); everything without it.
    pub fn parse(display: Option<&str>) -> Result<Self, String> {
        let Some(list) = display else {
            return Ok(Sections {
                identity: true,
                memory: true,
                utilization: true,
                ecc: true,
                power: true,
                clock: true,
                compute: true,
                pids: true,
                performance: true,
            });
        };
        let mut s = Sections {
            identity: false,
            memory: false,
            utilization: false,
            ecc: false,
            power: false,
            clock: false,
            compute: false,
            pids: false,
            performance: false,
        };
        for name in list.split(',').map(|n| n.trim().to_ascii_uppercase()) {
            match name.as_str() {
                "MEMORY" => s.memory = true,
                "UTILIZATION" => s.utilization = true,
                "ECC" => s.ecc = true,
                "POWER" => s.power = true,
                "CLOCK" => s.clock = true,
                "COMPUTE" => s.compute = true,
                "PIDS" => s.pids = true,
                "PERFORMANCE" => s.performance = true,
                other if OTHER_TYPES.contains(&other) => {}
                _ => return Err(crate::INVALID_COMBINATION.into()),
            }
        }
        Ok(s)
    }
}

/// The log's lines, each key padded as nvidia-smi pads it.
struct Log(String);

impl Log {
    /// `key : value` at `depth` (four spaces each), the key padded to 54 columns.
    fn kv(&mut self, depth: usize, key: &str, value: impl std::fmt::Display) {
        self.kv_in(54, depth, key, value);
    }

    /// As [`Log::kv`] with the key padded to `width` (the processes' block is narrower).
    fn kv_in(&mut self, width: usize, depth: usize, key: &str, value: impl std::fmt::Display) {
        let key = format!("{:indent$}{key}", "", indent = 4 * depth);
        // Infallible: writing to a String.
        let _ = writeln!(self.0, "{key:<width$} : {value}");
    }

    fn section(&mut self, depth: usize, title: &str) {
        let _ = writeln!(self.0, "{:indent$}{title}", "", indent = 4 * depth);
    }

    fn blank(&mut self) {
        self.0.push('\n');
    }
}

/// A value or nvidia-smi's `N/A`.
fn or_na(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "N/A".to_owned(), |v| v.to_string())
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", mib_up(bytes))
}

pub fn render(s: &Snapshot, sections: Sections) -> String {
    let mut log = Log(String::new());
    log.blank();
    log.section(0, "==============NVSMI LOG==============");
    log.blank();
    log.kv(0, "Timestamp", &s.date);
    log.kv(0, "Driver Version", &s.driver_version);
    // There is no CUDA driver behind an emulated GPU (NVML says "not supported").
    log.kv(0, "CUDA Version", "Not Found");
    log.blank();
    log.kv(0, "Attached GPUs", s.count);
    for g in &s.gpus {
        gpu(&mut log, g, sections);
        log.blank();
    }
    log.0
}

fn gpu(log: &mut Log, g: &GpuState, sections: Sections) {
    let (gpu, facts) = (&g.gpu, &g.gpu.facts);
    log.section(0, &format!("GPU {}", gpu.pci_bus_id()));
    if sections.identity {
        log.kv(1, "Product Name", &gpu.name);
        // What nvidia-smi prints for GeForce RTX cards (NVML_BRAND_GEFORCE).
        log.kv(1, "Product Brand", "GeForce");
        log.kv(
            1,
            "Product Architecture",
            or_na(facts.architecture.as_ref()),
        );
        log.kv(1, "Persistence Mode", "N/A");
        log.section(1, "MIG Mode");
        log.kv(2, "Current", "N/A");
        log.kv(2, "Pending", "N/A");
        log.kv(1, "Serial Number", "N/A");
        log.kv(1, "GPU UUID", gpu.uuid());
        log.kv(1, "Minor Number", gpu.minor_number());
        log.kv(1, "VBIOS Version", "N/A");
        log.kv(1, "MultiGPU Board", "No");
        log.section(1, "PCI");
        log.kv(2, "Bus", format!("0x{:02X}", gpu.pci.bus));
        log.kv(2, "Device", format!("0x{:02X}", gpu.pci.device));
        log.kv(2, "Domain", format!("0x{:04X}", gpu.pci.domain));
        log.kv(
            2,
            "Device Id",
            format!("0x{:04X}{:04X}", gpu.device_id, gpu.vendor_id),
        );
        log.kv(2, "Bus Id", gpu.pci_bus_id());
        // An emulated card has no board vendor.
        log.kv(2, "Sub System Id", "N/A");
    }
    if sections.performance {
        log.kv(1, "Performance State", "N/A");
    }
    if sections.memory {
        let m = &g.memory;
        log.section(1, "FB Memory Usage");
        log.kv(2, "Total", mib(m.total));
        log.kv(2, "Reserved", mib(m.reserved));
        // As in NVIDIA's log, Used here leaves Reserved out: the four lines add up.
        log.kv(2, "Used", mib(m.used - m.reserved.min(m.used)));
        log.kv(2, "Free", mib(m.free));
        log.section(1, "BAR1 Memory Usage");
        // emuv maps nothing through a BAR1 aperture: all of the model's is free.
        log.kv(2, "Total", or_na(facts.bar1_bytes.map(mib)));
        log.kv(2, "Used", or_na(facts.bar1_bytes.map(|_| mib(0))));
        log.kv(2, "Free", or_na(facts.bar1_bytes.map(mib)));
        log.section(1, "Conf Compute Protected Memory Usage");
        for key in ["Total", "Used", "Free"] {
            log.kv(2, key, mib(0));
        }
    }
    if sections.compute {
        log.kv(1, "Compute Mode", "Default");
    }
    if sections.utilization {
        // Nothing executes on an emulated GPU; it has no video engines.
        log.section(1, "Utilization");
        log.kv(2, "GPU", "0 %");
        log.kv(2, "Memory", "0 %");
        for engine in ["Encoder", "Decoder", "JPEG", "OFA"] {
            log.kv(2, engine, "N/A");
        }
    }
    if sections.ecc {
        ecc(log, g.ecc_errors);
    }
    if sections.power {
        let limit = facts.power_limit_mw.map(|mw| format!("{} W", watts(mw)));
        log.section(1, "GPU Power Readings");
        log.kv(2, "Average Power Draw", "N/A");
        log.kv(2, "Instantaneous Power Draw", "N/A");
        // Nothing changes an emulated board's limit: current, requested and default are one.
        for key in [
            "Current Power Limit",
            "Requested Power Limit",
            "Default Power Limit",
        ] {
            log.kv(2, key, or_na(limit.as_ref()));
        }
        log.kv(2, "Min Power Limit", "N/A");
        log.kv(2, "Max Power Limit", "N/A");
    }
    if sections.clock {
        let graphics = facts.max_graphics_clock_mhz.map(|c| format!("{c} MHz"));
        log.section(1, "Max Clocks");
        log.kv(2, "Graphics", or_na(graphics.as_ref()));
        log.kv(2, "SM", or_na(graphics.as_ref()));
        log.kv(
            2,
            "Memory",
            or_na(facts.max_memory_clock_mhz.map(|c| format!("{c} MHz"))),
        );
        log.kv(2, "Video", "N/A");
    }
    if sections.pids {
        processes(log, g);
    }
}

/// The card's uncorrected errors count as device memory's (DRAM), since load, so volatile and
/// aggregate are the same; emuv raises no corrected ones, and has no SRAM errors.
fn ecc(log: &mut Log, errors: Option<u64>) {
    log.section(1, "ECC Mode");
    log.kv(2, "Current", "N/A");
    log.kv(2, "Pending", "N/A");
    log.section(1, "ECC Errors");
    for kind in ["Volatile", "Aggregate"] {
        log.section(2, kind);
        for key in [
            "SRAM Correctable",
            "SRAM Uncorrectable Parity",
            "SRAM Uncorrectable SEC-DED",
        ] {
            log.kv(3, key, "N/A");
        }
        log.kv(3, "DRAM Correctable", or_na(errors.map(|_| 0)));
        log.kv(3, "DRAM Uncorrectable", or_na(errors));
    }
}

/// The processes' block: its keys are padded to 41 columns, as in NVIDIA's log.
fn processes(log: &mut Log, g: &GpuState) {
    const WIDTH: usize = 41;
    match &g.processes {
        None => log.kv(1, "Processes", "N/A"),
        Some(list) if list.is_empty() => log.kv(1, "Processes", "None"),
        Some(list) => {
            log.section(1, "Processes");
            for p in list {
                log.kv_in(WIDTH, 2, "GPU instance ID", "N/A");
                log.kv_in(WIDTH, 2, "Compute instance ID", "N/A");
                // A file whose opener has exited has no PID to show.
                log.kv_in(WIDTH, 2, "Process ID", or_na(p.pid));
                log.kv_in(WIDTH, 3, "Type", "C");
                log.kv_in(WIDTH, 3, "Name", process_name(p));
                log.kv_in(WIDTH, 3, "Used GPU Memory", mib(p.bytes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's `-q -d MEMORY`, line for line, with the snapshot's values.
    #[test]
    fn memory_is_shaped_as_nvidia_smi_shapes_it() {
        let s = crate::table::tests::snapshot();
        let text = render(&s, Sections::parse(Some("memory")).unwrap());
        let expected = "
==============NVSMI LOG==============

Timestamp                                              : Sun Nov 22 06:40:00 2026
Driver Version                                         : 580.159.04
CUDA Version                                           : Not Found

Attached GPUs                                          : 1
GPU 00000000:01:00.0
    FB Memory Usage
        Total                                          : 16384 MiB
        Reserved                                       : 0 MiB
        Used                                           : 4 MiB
        Free                                           : 16380 MiB
    BAR1 Memory Usage
        Total                                          : 16384 MiB
        Used                                           : 0 MiB
        Free                                           : 16384 MiB
    Conf Compute Protected Memory Usage
        Total                                          : 0 MiB
        Used                                           : 0 MiB
        Free                                           : 0 MiB

";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_whole_log_has_the_sections_that_apply() {
        let s = crate::table::tests::snapshot();
        let text = render(&s, Sections::parse(None).unwrap());
        for line in [
            "    Product Name                                       : NVIDIA GeForce RTX 4070 Ti SUPER",
            "    Product Brand                                      : GeForce",
            "    Product Architecture                               : Ada Lovelace",
            "    Minor Number                                       : 0",
            "        Device Id                                      : 0x270510DE",
            "        Bus Id                                         : 00000000:01:00.0",
            "            DRAM Uncorrectable                         : 0",
            "        Current Power Limit                            : 285.00 W",
            "        Graphics                                       : 2610 MHz",
            "        Memory                                         : 10501 MHz",
            "    Processes",
            "        Process ID                        : N/A",
            "            Used GPU Memory               : 1 MiB",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        assert!(Sections::parse(Some("MEMORY,bogus")).is_err());
        assert!(Sections::parse(Some("temperature")).is_ok());
    }
}
