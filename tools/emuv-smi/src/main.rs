// SPDX-License-Identifier: GPL-2.0
//! emuv-smi: emuv's emulated GPUs in nvidia-smi's formats, read live from the kernel (sysfs for
//! identity and memory, the device node for processes).

mod details;
mod query;
mod table;

use clap::Parser;
use details::Sections;
use emuv::{
    gpus::{Gpu, Memory, Roots},
    printable, ProcessEntry,
};
use query::{AppQuery, Format, GpuQuery};
use std::{io, os::unix::ffi::OsStrExt, process::ExitCode, thread, time::Duration};

/// emuv-smi's own version (the table's title), and the driver version a module without the
/// `driver_version` parameter leaves.
pub const EMUV_VERSION: &str = env!("CARGO_PKG_VERSION");

/// nvidia-smi's exit code when the driver is not loaded.
const EXIT_DRIVER_NOT_LOADED: u8 = 9;
/// nvidia-smi's exit code when no GPU matched.
const EXIT_NO_DEVICES: u8 = 6;
/// nvidia-smi's exit code when a GPU has fallen off the bus (NVML_ERROR_GPU_IS_LOST): the
/// other GPUs are printed all the same.
const EXIT_GPU_IS_LOST: u8 = 15;
const MISSING_FORMAT: &str = "\"--format=\" switch is missing. Please run 'emuv-smi -h' for help.";
const INVALID_COMBINATION: &str =
    "Invalid combination of input arguments. Please run 'emuv-smi -h' for help.";

/// nvidia-smi's exit code for a bad argument or field.
const EXIT_INVALID_ARGUMENT: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Reports emuv's emulated GPUs the way nvidia-smi reports real ones",
    after_help = "Without options, prints a table of every GPU and the processes using it.\n\
                  The process list needs read access to the device node (root by default)."
)]
struct Args {
    /// List the GPUs, one line each, with their UUIDs.
    #[arg(short = 'L', long = "list-gpus")]
    list_gpus: bool,
    /// GPU fields to print, comma-separated (see --help-query-gpu).
    #[arg(long = "query-gpu", value_name = "FIELDS")]
    query_gpu: Option<String>,
    /// Per-process fields to print: pid, process_name, used_memory, gpu_name, gpu_uuid,
    /// gpu_bus_id, timestamp.
    #[arg(long = "query-compute-apps", value_name = "FIELDS")]
    query_compute_apps: Option<String>,
    /// Output format for the queries: csv, with noheader and nounits options.
    #[arg(long = "format", value_name = "csv[,noheader][,nounits]")]
    format: Option<String>,
    /// Only these GPUs: indexes, UUIDs or PCI bus IDs, comma-separated.
    #[arg(short = 'i', long = "id", value_name = "ID")]
    id: Option<String>,
    /// Print again every SECONDS seconds until interrupted.
    #[arg(short = 'l', long = "loop", value_name = "SECONDS")]
    loop_seconds: Option<u64>,
    /// List the fields --query-gpu accepts.
    #[arg(long = "help-query-gpu")]
    help_query_gpu: bool,
    /// Print every GPU's details, as nvidia-smi -q does.
    #[arg(short = 'q', long = "query")]
    query: bool,
    /// With -q, only these sections, comma-separated: MEMORY, UTILIZATION, ECC, POWER, CLOCK,
    /// COMPUTE, PIDS, PERFORMANCE (and nvidia-smi's other names, which have no values here).
    #[arg(
        short = 'd',
        long = "display",
        value_name = "TYPES",
        requires = "query"
    )]
    display: Option<String>,
}

/// One GPU at one moment.
pub struct GpuState {
    pub gpu: Gpu,
    pub memory: Memory,
    /// `None` when the device node cannot be read (not root).
    pub processes: Option<Vec<ProcessEntry>>,
    /// Uncorrected ECC errors since load; `None` on a module that does not count them.
    pub ecc_errors: Option<u64>,
}

/// Every selected GPU at one moment.
pub struct Snapshot {
    /// `--query-*`'s `timestamp`: `2026/11/22 06:40:00.123`.
    pub timestamp: String,
    /// The table's first line, in ctime's format: `Sun Nov 22 06:40:00 2026`.
    pub date: String,
    /// The module's `driver_version` parameter, or emuv's version.
    pub driver_version: String,
    /// All GPUs this process sees, selected or not, lost or not (nvidia-smi's `count`).
    pub count: usize,
    /// The selected GPUs that answer, in index order.
    pub gpus: Vec<GpuState>,
    /// The selected GPUs that have fallen off the bus: reported, not printed.
    pub lost: Vec<Gpu>,
}

/// What nvidia-smi says for a GPU it cannot open because it is lost.
pub fn lost_message(gpu: &Gpu) -> String {
    format!(
        "Unable to determine the device handle for GPU{}: {}: GPU is lost.  \
         Reboot the system to recover this GPU",
        gpu.index,
        gpu.pci.bus_id_legacy()
    )
}

/// Now, in UTC, in nvidia-smi's two formats: (`2026/11/22 06:40:00.123`,
/// `Sun Nov 22 06:40:00 2026`).
fn timestamps() -> (String, String) {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (days, secs) = (now.as_secs() / 86_400, now.as_secs() % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let time = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    (
        format!("{y:04}/{m:02}/{d:02} {time}.{:03}", now.subsec_millis()),
        format!(
            "{} {} {d:2} {time} {y}",
            WEEKDAYS[(days % 7) as usize],
            MONTHS[m as usize - 1]
        ),
    )
}

/// Days since 1970-01-01 to a UTC date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The full path of a process's program, as nvidia-smi prints it; the kernel's command name when
/// /proc does not say, and for a file whose opener has exited (its PID is gone). Both may hold
/// any byte, newlines included: escaped by [`printable`], neither can break a row.
pub fn process_name(p: &ProcessEntry) -> String {
    p.pid
        .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
        .map(|path| printable(path.as_os_str().as_bytes()))
        .unwrap_or_else(|| p.comm_lossy())
}

/// Whether `-i`'s comma-separated list names `gpu`: by its index in this process, its UUID or
/// its PCI bus ID (either form, any case), as nvidia-smi's `-i` does.
fn selected(gpu: &Gpu, ids: Option<&str>) -> bool {
    let Some(ids) = ids else { return true };
    ids.split(',')
        .map(str::trim)
        .any(|id| id.parse::<u32>().is_ok_and(|i| i == gpu.index) || gpu.is_named_by(id))
}

fn snapshot(roots: &Roots, ids: Option<&str>) -> io::Result<Snapshot> {
    let all = roots.list()?;
    let count = all.len();
    let (mut states, mut lost) = (Vec::new(), Vec::new());
    for gpu in all.into_iter().filter(|g| selected(g, ids)) {
        if gpu.is_lost() {
            lost.push(gpu);
            continue;
        }
        let memory = match gpu.memory() {
            Ok(memory) => memory,
            // Lost (or removed) between the two reads.
            Err(_) if gpu.is_lost() => {
                lost.push(gpu);
                continue;
            }
            Err(e) => return Err(e),
        };
        states.push(GpuState {
            memory,
            processes: gpu.processes().ok(),
            ecc_errors: gpu.ecc_errors().ok(),
            gpu,
        });
    }
    let (timestamp, date) = timestamps();
    Ok(Snapshot {
        timestamp,
        date,
        driver_version: roots
            .driver_version()
            .unwrap_or_else(|| EMUV_VERSION.to_owned()),
        count,
        gpus: states,
        lost,
    })
}

/// What one run prints each time round.
enum Report {
    Table,
    List,
    Gpus(GpuQuery, Format),
    Apps(AppQuery, Format),
    Details(Sections),
}

impl Report {
    fn from_args(args: &Args) -> Result<Self, String> {
        let format = || -> Result<Format, String> {
            Format::parse(args.format.as_deref().ok_or(MISSING_FORMAT)?)
        };
        if args.format.is_some() && args.query_gpu.is_none() && args.query_compute_apps.is_none() {
            return Err(INVALID_COMBINATION.into());
        }
        if args.query {
            if args.query_gpu.is_some() || args.query_compute_apps.is_some() || args.list_gpus {
                return Err(INVALID_COMBINATION.into());
            }
            return Ok(Report::Details(Sections::parse(args.display.as_deref())?));
        }
        match (&args.query_gpu, &args.query_compute_apps) {
            (Some(_), Some(_)) => Err("Only one --query-* switch may be given.".into()),
            (Some(fields), None) => Ok(Report::Gpus(GpuQuery::parse(fields)?, format()?)),
            (None, Some(fields)) => Ok(Report::Apps(AppQuery::parse(fields)?, format()?)),
            (None, None) if args.list_gpus => Ok(Report::List),
            (None, None) => Ok(Report::Table),
        }
    }

    /// The header is printed once, before the first round (as nvidia-smi does with `-l`).
    fn header(&self) -> Option<String> {
        match self {
            Report::Gpus(q, f) if f.header => Some(q.header()),
            Report::Apps(q, f) if f.header => Some(q.header()),
            _ => None,
        }
    }

    fn render(&self, s: &Snapshot) -> String {
        let lines = match self {
            Report::Table => return table::render(s),
            Report::List => s
                .gpus
                .iter()
                .map(|g| {
                    format!(
                        "GPU {}: {} (UUID: {})",
                        g.gpu.index,
                        g.gpu.name,
                        g.gpu.uuid()
                    )
                })
                .collect(),
            Report::Gpus(q, f) => q.rows(s, *f),
            Report::Apps(q, f) => q.rows(s, *f),
            Report::Details(sections) => return details::render(s, *sections),
        };
        lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.help_query_gpu {
        print!("{}", query::help_query_gpu());
        return ExitCode::SUCCESS;
    }
    let report = match Report::from_args(&args) {
        Ok(report) => report,
        Err(message) => {
            // nvidia-smi writes these to stdout, followed by an empty line.
            println!("{message}\n");
            return ExitCode::from(EXIT_INVALID_ARGUMENT);
        }
    };
    if let Some(header) = report.header() {
        println!("{header}");
    }
    let roots = Roots::default();
    loop {
        let mut status = ExitCode::SUCCESS;
        match snapshot(&roots, args.id.as_deref()) {
            Ok(s) if s.gpus.is_empty() && s.lost.is_empty() => {
                eprintln!("No devices were found");
                return ExitCode::from(EXIT_NO_DEVICES);
            }
            Ok(s) => {
                // As nvidia-smi: each lost GPU said, the others printed, and the run fails.
                for gpu in &s.lost {
                    eprintln!("{}", lost_message(gpu));
                    status = ExitCode::from(EXIT_GPU_IS_LOST);
                }
                if !s.gpus.is_empty() {
                    print!("{}", report.render(&s));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!(
                    "EMUV-SMI has failed because it couldn't communicate with the emuv driver. \
                     Make sure that the emuv module is loaded ({e})."
                );
                return ExitCode::from(EXIT_DRIVER_NOT_LOADED);
            }
            Err(e) => {
                eprintln!("emuv-smi: reading emuv's state failed: {e}");
                return ExitCode::FAILURE;
            }
        }
        match args.loop_seconds {
            Some(seconds) => thread::sleep(Duration::from_secs(seconds.max(1))),
            None => return status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emuv::gpus::fake::Tree;

    fn kernel_indices(s: &Snapshot) -> Vec<u32> {
        s.gpus.iter().map(|g| g.gpu.kernel_index).collect()
    }

    #[test]
    fn every_card_is_listed_and_selected_as_nvidia_smi_selects() {
        let tree = Tree::new("smi-select");
        for i in [10, 0, 2] {
            tree.add_card(i, "4090");
        }
        let roots = tree.roots();
        let all = snapshot(&roots, None).unwrap();
        assert_eq!(kernel_indices(&all), [0, 2, 10]);
        assert_eq!(all.count, 3);
        let uuid = all.gpus[2].gpu.uuid();
        let pick = |ids: &str| kernel_indices(&snapshot(&roots, Some(ids)).unwrap());
        assert_eq!(pick("1"), [2]);
        assert_eq!(pick(&format!("{},0", uuid.to_lowercase())), [0, 10]);
        assert_eq!(pick("0000:0B:00.0"), [10]);
        assert_eq!(pick("00000000:03:00.0, 2"), [2, 10]);
        assert!(pick("3").is_empty());
        let list = Report::List.render(&all);
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2],
            format!("GPU 2: NVIDIA GeForce RTX 4090 (UUID: {uuid})")
        );
    }

    #[test]
    fn a_lost_card_is_said_and_the_others_printed() {
        let tree = Tree::new("smi-lost");
        for i in [0, 2, 3] {
            tree.add_card(i, "4090");
        }
        let lost = tree.roots().class_dir.join("emuv2");
        tree.set(&lost, "fail", "lost");
        let s = snapshot(&tree.roots(), None).unwrap();
        assert_eq!(kernel_indices(&s), [0, 3]);
        assert_eq!(s.count, 3);
        assert_eq!(s.lost.len(), 1);
        assert_eq!(
            lost_message(&s.lost[0]),
            "Unable to determine the device handle for GPU1: 0000:03:00.0: GPU is lost.  \
             Reboot the system to recover this GPU"
        );
        let table = table::render(&s);
        assert!(table.contains("|   0  NVIDIA GeForce RTX 4090"), "{table}");
        assert!(table.contains("|   2  NVIDIA GeForce RTX 4090"), "{table}");
        assert!(!table.contains("|   1  "), "{table}");
        // Selected alone: nothing printed but the message.
        let only = snapshot(&tree.roots(), Some("1")).unwrap();
        assert!(only.gpus.is_empty() && only.lost.len() == 1);
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
