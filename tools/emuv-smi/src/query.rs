// SPDX-License-Identifier: GPL-2.0
//! `--query-gpu` and `--query-compute-apps` with nvidia-smi's CSV conventions: fields joined
//! by ", ", a header naming each field with its unit (`memory.total [MiB]`, kept with
//! `nounits`), memory in MiB rounded up, `[N/A]` for a field an emulated GPU does not have.

use crate::{table::mib_up, Snapshot};
use emuv::ProcessEntry;

/// What a `--query-gpu` field reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GpuValue {
    Timestamp,
    DriverVersion,
    Count,
    Name,
    Index,
    Uuid,
    PciBusId,
    PciDomain,
    PciBus,
    PciDevice,
    PciDeviceId,
    MemoryTotal,
    MemoryReserved,
    MemoryUsed,
    MemoryFree,
    /// `8.9`, from the model table.
    ComputeCap,
    /// The boost clock, from the model table.
    MaxGraphicsClock,
    MaxMemoryClock,
    /// The board's default power limit (nothing changes it), in W with two decimals.
    PowerLimit,
    /// The card's uncorrected ECC errors since load (volatile and aggregate alike).
    EccUncorrected,
    /// emuv raises uncorrected errors only.
    EccCorrected,
    /// Nothing runs on an emulated GPU: 0 %.
    Idle,
    /// A real nvidia-smi field that an emulated card has no value for.
    NotAvailable,
}

/// A field as nvidia-smi names it (first name) and its aliases, with its unit.
struct FieldSpec {
    names: &'static [&'static str],
    unit: Option<&'static str>,
    value: GpuValue,
}

const fn field(
    names: &'static [&'static str],
    unit: Option<&'static str>,
    value: GpuValue,
) -> FieldSpec {
    FieldSpec { names, unit, value }
}

const MIB_UNIT: Option<&str> = Some("MiB");

/// The `--query-gpu` fields emuv-smi knows (see `emuv-smi --help-query-gpu`).
const GPU_FIELDS: &[FieldSpec] = &[
    field(&["timestamp"], None, GpuValue::Timestamp),
    field(&["driver_version"], None, GpuValue::DriverVersion),
    field(&["count"], None, GpuValue::Count),
    field(&["name", "gpu_name"], None, GpuValue::Name),
    field(&["index"], None, GpuValue::Index),
    field(&["uuid", "gpu_uuid"], None, GpuValue::Uuid),
    field(&["pci.bus_id", "gpu_bus_id"], None, GpuValue::PciBusId),
    field(&["pci.domain"], None, GpuValue::PciDomain),
    field(&["pci.bus"], None, GpuValue::PciBus),
    field(&["pci.device"], None, GpuValue::PciDevice),
    field(&["pci.device_id"], None, GpuValue::PciDeviceId),
    field(&["memory.total"], MIB_UNIT, GpuValue::MemoryTotal),
    field(&["memory.reserved"], MIB_UNIT, GpuValue::MemoryReserved),
    field(&["memory.used"], MIB_UNIT, GpuValue::MemoryUsed),
    field(&["memory.free"], MIB_UNIT, GpuValue::MemoryFree),
    field(&["utilization.gpu"], Some("%"), GpuValue::Idle),
    field(&["utilization.memory"], Some("%"), GpuValue::Idle),
    field(&["compute_cap"], None, GpuValue::ComputeCap),
    field(
        &["clocks.max.graphics", "clocks.max.gr"],
        Some("MHz"),
        GpuValue::MaxGraphicsClock,
    ),
    field(&["clocks.max.sm"], Some("MHz"), GpuValue::MaxGraphicsClock),
    field(
        &["clocks.max.memory", "clocks.max.mem"],
        Some("MHz"),
        GpuValue::MaxMemoryClock,
    ),
    field(&["power.limit"], Some("W"), GpuValue::PowerLimit),
    field(&["enforced.power.limit"], Some("W"), GpuValue::PowerLimit),
    field(&["power.default_limit"], Some("W"), GpuValue::PowerLimit),
    field(
        &["ecc.errors.uncorrected.volatile.total"],
        None,
        GpuValue::EccUncorrected,
    ),
    field(
        &["ecc.errors.uncorrected.aggregate.total"],
        None,
        GpuValue::EccUncorrected,
    ),
    field(
        &["ecc.errors.corrected.volatile.total"],
        None,
        GpuValue::EccCorrected,
    ),
    field(
        &["ecc.errors.corrected.aggregate.total"],
        None,
        GpuValue::EccCorrected,
    ),
    field(&["pci.sub_device_id"], None, GpuValue::NotAvailable),
    field(&["serial"], None, GpuValue::NotAvailable),
    field(&["vbios_version"], None, GpuValue::NotAvailable),
    field(&["fan.speed"], Some("%"), GpuValue::NotAvailable),
    field(&["pstate"], None, GpuValue::NotAvailable),
    field(&["temperature.gpu"], None, GpuValue::NotAvailable),
    field(&["power.draw"], Some("W"), GpuValue::NotAvailable),
    field(&["power.min_limit"], Some("W"), GpuValue::NotAvailable),
    field(&["power.max_limit"], Some("W"), GpuValue::NotAvailable),
    field(&["ecc.mode.current"], None, GpuValue::NotAvailable),
    field(
        &["clocks.current.graphics", "clocks.gr"],
        Some("MHz"),
        GpuValue::NotAvailable,
    ),
    field(
        &["clocks.current.memory", "clocks.mem"],
        Some("MHz"),
        GpuValue::NotAvailable,
    ),
];

/// What a `--query-compute-apps` field reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppValue {
    Timestamp,
    GpuName,
    GpuBusId,
    GpuUuid,
    Pid,
    ProcessName,
    UsedMemory,
}

struct AppFieldSpec {
    names: &'static [&'static str],
    header: &'static str,
    value: AppValue,
}

const APP_FIELDS: &[AppFieldSpec] = &[
    AppFieldSpec {
        names: &["timestamp"],
        header: "timestamp",
        value: AppValue::Timestamp,
    },
    AppFieldSpec {
        names: &["gpu_name"],
        header: "gpu_name",
        value: AppValue::GpuName,
    },
    AppFieldSpec {
        names: &["gpu_bus_id"],
        header: "gpu_bus_id",
        value: AppValue::GpuBusId,
    },
    AppFieldSpec {
        names: &["gpu_uuid"],
        header: "gpu_uuid",
        value: AppValue::GpuUuid,
    },
    AppFieldSpec {
        names: &["pid"],
        header: "pid",
        value: AppValue::Pid,
    },
    AppFieldSpec {
        names: &["process_name", "name"],
        header: "process_name",
        value: AppValue::ProcessName,
    },
    AppFieldSpec {
        names: &["used_memory", "used_gpu_memory"],
        header: "used_gpu_memory [MiB]",
        value: AppValue::UsedMemory,
    },
];

/// `--format=csv[,noheader][,nounits]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub header: bool,
    pub units: bool,
}

impl Format {
    /// Parses the `--format` value as nvidia-smi does: `csv` is required, options in any order.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut format = Format {
            header: true,
            units: true,
        };
        let mut csv = false;
        for option in text.split(',').map(str::trim) {
            match option {
                "csv" => csv = true,
                "noheader" => format.header = false,
                "nounits" => format.units = false,
                _ => return Err(format!("\"{option}\" is not a valid format option.")),
            }
        }
        if !csv {
            return Err("CSV format is required (--format=csv).".into());
        }
        Ok(format)
    }
}

/// A checked `--query-gpu` list.
pub struct GpuQuery(Vec<&'static FieldSpec>);

/// A checked `--query-compute-apps` list.
pub struct AppQuery(Vec<&'static AppFieldSpec>);

/// The entries of `table` that a comma-separated field list names, in its order; nvidia-smi's
/// error for the first name that is none of them.
fn lookup<T>(
    list: &str,
    table: &'static [T],
    names: impl Fn(&T) -> &[&str],
) -> Result<Vec<&'static T>, String> {
    list.split(',')
        .map(str::trim)
        .map(|name| {
            table
                .iter()
                .find(|f| names(f).contains(&name))
                .ok_or_else(|| format!("Field \"{name}\" is not a valid field to query."))
        })
        .collect()
}

impl GpuQuery {
    pub fn parse(list: &str) -> Result<Self, String> {
        lookup(list, GPU_FIELDS, |f| f.names).map(GpuQuery)
    }

    pub fn header(&self) -> String {
        let names = self.0.iter().map(|f| match f.unit {
            Some(unit) => format!("{} [{unit}]", f.names[0]),
            None => f.names[0].to_owned(),
        });
        names.collect::<Vec<_>>().join(", ")
    }

    /// One CSV row per GPU of `snapshot`.
    pub fn rows(&self, snapshot: &Snapshot, format: Format) -> Vec<String> {
        snapshot
            .gpus
            .iter()
            .map(|g| {
                let cells = self.0.iter().map(|f| {
                    let value = gpu_value(f.value, snapshot, g);
                    match (f.unit, value) {
                        (Some(unit), Some(v)) if format.units => format!("{v} {unit}"),
                        (_, Some(v)) => v,
                        (_, None) => "[N/A]".to_owned(),
                    }
                });
                cells.collect::<Vec<_>>().join(", ")
            })
            .collect()
    }
}

fn gpu_value(value: GpuValue, s: &Snapshot, g: &crate::GpuState) -> Option<String> {
    let (domain, bus, device) = g.gpu.pci_location();
    let facts = &g.gpu.facts;
    Some(match value {
        GpuValue::Timestamp => s.timestamp.clone(),
        GpuValue::DriverVersion => s.driver_version.clone(),
        GpuValue::Count => s.count.to_string(),
        GpuValue::Name => g.gpu.name.clone(),
        GpuValue::Index => g.gpu.index.to_string(),
        GpuValue::Uuid => g.gpu.uuid(),
        GpuValue::PciBusId => g.gpu.pci_bus_id(),
        GpuValue::PciDomain => format!("0x{domain:04X}"),
        GpuValue::PciBus => format!("0x{bus:02X}"),
        GpuValue::PciDevice => format!("0x{device:02X}"),
        GpuValue::PciDeviceId => format!("0x{:04X}{:04X}", g.gpu.device_id, g.gpu.vendor_id),
        GpuValue::MemoryTotal => mib_up(g.memory.total).to_string(),
        GpuValue::MemoryReserved => mib_up(g.memory.reserved).to_string(),
        GpuValue::MemoryUsed => mib_up(g.memory.used).to_string(),
        GpuValue::MemoryFree => mib_up(g.memory.free).to_string(),
        GpuValue::ComputeCap => {
            let (major, minor) = facts.compute_capability?;
            format!("{major}.{minor}")
        }
        GpuValue::MaxGraphicsClock => facts.max_graphics_clock_mhz?.to_string(),
        GpuValue::MaxMemoryClock => facts.max_memory_clock_mhz?.to_string(),
        GpuValue::PowerLimit => watts(facts.power_limit_mw?),
        GpuValue::EccUncorrected => g.ecc_errors?.to_string(),
        GpuValue::EccCorrected => g.ecc_errors.map(|_| 0)?.to_string(),
        GpuValue::Idle => "0".to_owned(),
        GpuValue::NotAvailable => return None,
    })
}

/// Milliwatts as nvidia-smi prints watts: `450.00`.
pub fn watts(milliwatts: u32) -> String {
    format!("{}.{:02}", milliwatts / 1000, milliwatts % 1000 / 10)
}

impl AppQuery {
    pub fn parse(list: &str) -> Result<Self, String> {
        lookup(list, APP_FIELDS, |f| f.names).map(AppQuery)
    }

    pub fn header(&self) -> String {
        let names = self.0.iter().map(|f| f.header);
        names.collect::<Vec<_>>().join(", ")
    }

    /// One row per process per GPU; nothing for a GPU whose process list cannot be read.
    pub fn rows(&self, snapshot: &Snapshot, format: Format) -> Vec<String> {
        let mut rows = Vec::new();
        for g in &snapshot.gpus {
            for p in g.processes.as_deref().unwrap_or_default() {
                let cells = self
                    .0
                    .iter()
                    .map(|f| app_value(f.value, snapshot, g, p, format));
                rows.push(cells.collect::<Vec<_>>().join(", "));
            }
        }
        rows
    }
}

fn app_value(
    value: AppValue,
    s: &Snapshot,
    g: &crate::GpuState,
    p: &ProcessEntry,
    format: Format,
) -> String {
    match value {
        AppValue::Timestamp => s.timestamp.clone(),
        AppValue::GpuName => g.gpu.name.clone(),
        AppValue::GpuBusId => g.gpu.pci_bus_id(),
        AppValue::GpuUuid => g.gpu.uuid(),
        // A file whose opener has exited has no PID to show.
        AppValue::Pid => p
            .pid
            .map_or_else(|| "[N/A]".to_owned(), |pid| pid.to_string()),
        // Cells are separated by ", " and never quoted (nvidia-smi's CSV): a comma in a name
        // is escaped so that it cannot add a cell.
        AppValue::ProcessName => crate::process_name(p).replace(',', "\\x2c"),
        AppValue::UsedMemory if format.units => format!("{} MiB", mib_up(p.bytes)),
        AppValue::UsedMemory => mib_up(p.bytes).to_string(),
    }
}

/// `--help-query-gpu`: the fields and what they mean.
pub fn help_query_gpu() -> String {
    let mut text =
        String::from("List of valid properties to query for the switch \"--query-gpu=\":\n\n");
    for f in GPU_FIELDS {
        let names: Vec<String> = f.names.iter().map(|n| format!("\"{n}\"")).collect();
        let note = match f.value {
            GpuValue::NotAvailable => " (emulated GPU: always [N/A])",
            GpuValue::Idle => " (emulated GPU: nothing runs on it, 0)",
            _ => "",
        };
        text.push_str(&format!("{}{note}\n", names.join(" or ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_fields_follow_nvidia_smi() {
        assert_eq!(
            Format::parse("csv").unwrap(),
            Format {
                header: true,
                units: true
            }
        );
        assert_eq!(
            Format::parse("csv,noheader,nounits").unwrap(),
            Format {
                header: false,
                units: false
            }
        );
        assert!(Format::parse("json").is_err());
        assert!(Format::parse("csv,bogus").is_err());
        let q = GpuQuery::parse("index,gpu_name,memory.total,pci.device_id").unwrap();
        assert_eq!(q.header(), "index, name, memory.total [MiB], pci.device_id");
        assert_eq!(
            GpuQuery::parse("memory.total,bogus").err().unwrap(),
            "Field \"bogus\" is not a valid field to query."
        );
        let a = AppQuery::parse("pid,process_name,used_memory").unwrap();
        assert_eq!(a.header(), "pid, process_name, used_gpu_memory [MiB]");
    }

    #[test]
    fn model_facts_and_ecc_errors_are_fields() {
        let s = crate::table::tests::snapshot();
        let q = GpuQuery::parse(
            "driver_version,compute_cap,clocks.max.graphics,clocks.max.memory,power.limit,\
             ecc.errors.uncorrected.volatile.total,ecc.errors.corrected.aggregate.total,\
             pci.sub_device_id",
        )
        .unwrap();
        assert_eq!(
            q.header(),
            "driver_version, compute_cap, clocks.max.graphics [MHz], clocks.max.memory [MHz], \
             power.limit [W], ecc.errors.uncorrected.volatile.total, \
             ecc.errors.corrected.aggregate.total, pci.sub_device_id"
        );
        let row = |format| q.rows(&s, Format::parse(format).unwrap());
        assert_eq!(
            row("csv"),
            ["580.159.04, 8.9, 2610 MHz, 10501 MHz, 285.00 W, 0, 0, [N/A]"]
        );
        assert_eq!(
            row("csv,nounits"),
            ["580.159.04, 8.9, 2610, 10501, 285.00, 0, 0, [N/A]"]
        );
        assert_eq!(watts(575_000), "575.00");
        assert_eq!(watts(117_990), "117.99");
    }

    #[test]
    fn one_line_of_three_cells_per_process_whatever_its_name() {
        let a = AppQuery::parse("pid,process_name,used_memory").unwrap();
        let format = Format::parse("csv,noheader").unwrap();
        let rows = a.rows(&crate::table::tests::snapshot(), format);
        assert_eq!(
            rows,
            [
                "4194304, ev\\n4242 fake\\x2c 9, 3 MiB",
                "[N/A], worker\\xff, 1 MiB"
            ]
        );
        for row in &rows {
            assert!(!row.contains('\n'), "{row:?}");
            assert_eq!(row.split(", ").count(), 3, "{row:?}");
        }
    }
}
