// SPDX-License-Identifier: GPL-2.0
//! GPU tools see the emulated card: the unmodified pynvml, gpustat and nvitop, loading emuv's
//! libnvidia-ml.so.1, and emuv-smi report what emuv's own sysfs and the test's allocations say,
//! live; the library's C ABI keeps NVIDIA's contracts; without emuv, NVIDIA's errors. The
//! process list is data (`EMUV_IOCTL_PROCESSES`): a process whose name reads like rows of the
//! old text report forges nothing, and a file whose opener has exited is PID 0 (N/A).
//!
//! Needs `EMUV_GPU_TOOLS` (the venv of tests/gpu-tools/requirements.txt); emuv-smi and
//! `nvml/libnvidia-ml.so.1` are found next to this program's directory (target/release, target/nvml).

use emuv::{Device, Tier};
use emuv_tests::{
    attr, attr_u64, err, module,
    tap::{check, check_eq, Tap},
    target_dir,
};
use libloading::{Library, Symbol};
use nix::{
    errno::Errno,
    libc,
    sys::{
        prctl,
        wait::{waitpid, WaitStatus},
    },
    unistd::{fork, setgid, setuid, ForkResult, Gid, Uid},
};
use serde_json::Value;
use std::{
    ffi::{c_char, c_uint, c_void, CStr},
    io::{BufRead, BufReader, Write},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
};

const MIB: u64 = 1 << 20;
/// A 4090 with small tiers, so the numbers are easy to read in the log.
const PARAMS: &str = "gpu_model=4090 physical_vram_mb=1024 virtual_vram_mb=512";
/// What this process holds: two allocations.
const OWN_ALLOCATIONS: [u64; 2] = [64 * MIB, 32 * MIB];
/// What the helper process holds.
const HELPER_BYTES: u64 = 16 * MIB;
/// A command name that reads as rows of `cat /dev/emuv`'s process table: printed raw there (as
/// it was before the kernel escaped it), it broke its row in two, the second naming a PID 4242.
const FORGED_NAME: &CStr = c"ev\n4242 fake 9";
const FORGED_PID: u32 = 4242;

type TestResult = Result<(), String>;

/// The driver version GPU tools must report: emuv's `driver_version` parameter.
fn driver_version() -> Result<String, String> {
    emuv_tests::param("driver_version").map_err(err("driver_version"))
}

fn nvml_dir() -> PathBuf {
    target_dir().join("nvml")
}

fn emuv_smi() -> PathBuf {
    target_dir().join("release/emuv-smi")
}

fn venv_bin(tool: &str) -> Result<PathBuf, String> {
    let venv = std::env::var_os("EMUV_GPU_TOOLS").ok_or("EMUV_GPU_TOOLS is not set")?;
    Ok(PathBuf::from(venv).join("bin").join(tool))
}

/// Runs a tool with emuv's NVML library first on the search path, as users do.
fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<Output, String> {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .env("LD_LIBRARY_PATH", nvml_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TERM", "dumb")
        .env("COLUMNS", "200")
        .output()
        .map_err(err(&format!("run {}", program.to_string_lossy())))
}

fn stdout_of(what: &str, output: Output) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    check(output.status.success(), || {
        format!(
            "{what}: {}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    Ok(stdout)
}

/// emuv's own numbers, from sysfs: the truth every tool must match.
struct Truth {
    name: String,
    device_id: u16,
    total: u64,
    used: u64,
    free: u64,
    /// (pid, bytes) of every process holding VRAM, sorted.
    processes: Vec<(u32, u64)>,
}

/// emuv's numbers now, with `processes` the (pid, bytes) of every process holding VRAM.
fn truth(mut processes: Vec<(u32, u64)>) -> Result<Truth, String> {
    processes.sort();
    let device_id = attr("device_id").map_err(err("device_id"))?;
    Ok(Truth {
        name: attr("gpu_name").map_err(err("gpu_name"))?,
        device_id: u16::from_str_radix(device_id.trim_start_matches("0x"), 16)
            .map_err(err("device_id"))?,
        total: attr_u64("total_vram_bytes")?,
        used: attr_u64("used_bytes")?,
        free: attr_u64("free_bytes")?,
        processes,
    })
}

/// Another process holding VRAM: this program again, with `--hold BYTES` (or
/// `--hold-renamed BYTES`, named [`FORGED_NAME`]). It exits when its stdin closes, which
/// dropping this does, and waits for, so that emuv can be unloaded after a failed test too.
struct Holder {
    child: Child,
    /// Its open `/dev/emuv`, as a descriptor of its own.
    fd: i32,
}

impl Holder {
    fn spawn(mode: &str, bytes: u64) -> Result<Self, String> {
        Self::spawn_on(mode, bytes, "/dev/emuv")
    }

    /// The same on the card of device node `node`.
    fn spawn_on(mode: &str, bytes: u64, node: &str) -> Result<Self, String> {
        let mut child = Command::new(std::env::current_exe().map_err(err("own path"))?)
            .args([mode, &bytes.to_string(), node])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(err("spawn holder"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("holder stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(err("holder ready"))?;
        let fd = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|fd| fd.parse().ok());
        let fd = fd.ok_or_else(|| format!("the holder says {line:?}, not \"ready FD\""))?;
        Ok(Holder { child, fd })
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Lets it exit, and reaps it.
    fn stop(mut self) -> TestResult {
        drop(self.child.stdin.take());
        let status = self.child.wait().map_err(err("wait for the holder"))?;
        check(status.success(), || {
            format!("the holder ended with {status}")
        })
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A holder's life: allocates `bytes`, maps and writes them as a GPU program would, says
/// "ready FD" and holds them until its stdin closes. Renamed first if asked: emuv records the
/// command name at open.
fn hold(bytes: u64, name: Option<&CStr>, node: &str) -> ! {
    if let Some(name) = name {
        prctl::set_name(name).unwrap_or_else(|e| panic!("PR_SET_NAME: {e}"));
    }
    let device = Device::open_path(node, true).unwrap_or_else(|e| panic!("open {node}: {e}"));
    let allocation = device
        .alloc(bytes, Tier::Any)
        .unwrap_or_else(|e| panic!("alloc: {e}"));
    let mut mapping = device
        .map(&allocation)
        .unwrap_or_else(|e| panic!("mmap: {e}"));
    mapping.as_mut_slice().fill(0xe7);
    println!("ready {}", device.as_fd().as_raw_fd());
    let _ = std::io::stdout().flush();
    let mut rest = String::new();
    let _ = std::io::stdin().read_line(&mut rest);
    std::process::exit(0)
}

const PYNVML_SCRIPT: &str = r#"
import json, pynvml as n
def text(v):
    return v.decode() if isinstance(v, bytes) else v
n.nvmlInit()
out = {"count": n.nvmlDeviceGetCount(), "driver": text(n.nvmlSystemGetDriverVersion()), "gpus": []}
for i in range(out["count"]):
    h = n.nvmlDeviceGetHandleByIndex(i)
    m = n.nvmlDeviceGetMemoryInfo(h)
    m2 = n.nvmlDeviceGetMemoryInfo(h, version=n.nvmlMemory_v2)
    pci = n.nvmlDeviceGetPciInfo(h)
    uuid = text(n.nvmlDeviceGetUUID(h))
    try:
        n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)
        temperature = "a value"
    except n.NVMLError_NotSupported as e:
        temperature = str(e)
    out["gpus"].append({
        "index": n.nvmlDeviceGetIndex(h),
        "name": text(n.nvmlDeviceGetName(h)),
        "uuid": uuid,
        "uuid_index": n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByUUID(uuid)),
        "bus_id": text(pci.busId),
        "pci_device_id": pci.pciDeviceId,
        "memory": [m.total, m.used, m.free],
        "memory_v2": [m2.total, m2.reserved, m2.used, m2.free],
        "compute": sorted([p.pid, p.usedGpuMemory] for p in n.nvmlDeviceGetComputeRunningProcesses(h)),
        "graphics": len(n.nvmlDeviceGetGraphicsRunningProcesses(h)),
        "temperature": temperature,
    })
n.nvmlShutdown()
print(json.dumps(out))
"#;

fn pynvml_json() -> Result<Value, String> {
    let out = stdout_of("pynvml", run(venv_bin("python")?, &["-c", PYNVML_SCRIPT])?)?;
    serde_json::from_str(&out).map_err(err(&format!("pynvml output {out:?}")))
}

fn json_u64(v: &Value) -> u64 {
    v.as_u64().unwrap_or(u64::MAX)
}

/// `nvmlDeviceGetComputeRunningProcesses` of GPU 0 in pynvml's answer: (pid, bytes), sorted.
fn pynvml_compute(v: &Value) -> Vec<(u32, u64)> {
    v["gpus"][0]["compute"].as_array().map_or(vec![], |a| {
        a.iter()
            .map(|p| (json_u64(&p[0]) as u32, json_u64(&p[1])))
            .collect()
    })
}

fn pynvml_matches(t: &Truth) -> TestResult {
    let v = pynvml_json()?;
    check_eq("count", json_u64(&v["count"]), 1)?;
    check_eq(
        "driver version",
        v["driver"].as_str(),
        Some(driver_version()?.as_str()),
    )?;
    let g = &v["gpus"][0];
    check_eq("index", json_u64(&g["index"]), 0)?;
    check_eq("name", g["name"].as_str(), Some(t.name.as_str()))?;
    check_eq(
        "PCI device ID",
        json_u64(&g["pci_device_id"]),
        u64::from(t.device_id) << 16 | 0x10de,
    )?;
    check_eq("bus ID", g["bus_id"].as_str(), Some("00000000:01:00.0"))?;
    let uuid = g["uuid"].as_str().unwrap_or("");
    check(uuid.starts_with("GPU-") && uuid.len() == 40, || {
        format!("UUID {uuid:?}")
    })?;
    check_eq("handle by UUID", json_u64(&g["uuid_index"]), 0)?;
    let memory: Vec<u64> = g["memory"]
        .as_array()
        .map_or(vec![], |a| a.iter().map(json_u64).collect());
    check_eq(
        "memory (total, used, free)",
        memory,
        vec![t.total, t.used, t.free],
    )?;
    let v2: Vec<u64> = g["memory_v2"]
        .as_array()
        .map_or(vec![], |a| a.iter().map(json_u64).collect());
    check_eq(
        "memory v2 (total, reserved, used, free)",
        v2,
        vec![t.total, 0, t.used, t.free],
    )?;
    check_eq(
        "compute processes (pid, bytes)",
        pynvml_compute(&v),
        t.processes.clone(),
    )?;
    check_eq("graphics processes", json_u64(&g["graphics"]), 0)?;
    check_eq(
        "temperature",
        g["temperature"].as_str(),
        Some("Not Supported"),
    )
}

/// Prints a tool's output into the log, for people reading it (and docs/gpu-tools.md).
/// `emuv-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader`.
fn compute_apps_csv() -> Result<String, String> {
    let out = stdout_of(
        "emuv-smi --query-compute-apps",
        run(
            emuv_smi(),
            &[
                "--query-compute-apps=pid,process_name,used_memory",
                "--format=csv,noheader",
            ],
        )?,
    )?;
    show("emuv-smi --query-compute-apps", &out);
    Ok(out)
}

fn show(what: &str, out: &str) {
    println!("# {what}:");
    for line in out.lines() {
        println!("#   {line}");
    }
}

fn gpustat_matches(t: &Truth) -> TestResult {
    show(
        "gpustat",
        &stdout_of("gpustat", run(venv_bin("gpustat")?, &[])?)?,
    );
    let out = stdout_of("gpustat --json", run(venv_bin("gpustat")?, &["--json"])?)?;
    let v: Value = serde_json::from_str(&out).map_err(err(&format!("gpustat output {out:?}")))?;
    let g = &v["gpus"][0];
    check_eq("GPUs", v["gpus"].as_array().map(Vec::len), Some(1))?;
    check_eq("name", g["name"].as_str(), Some(t.name.as_str()))?;
    // gpustat prints MiB, rounded down.
    check_eq(
        "memory.total [MiB]",
        json_u64(&g["memory.total"]),
        t.total / MIB,
    )?;
    check_eq(
        "memory.used [MiB]",
        json_u64(&g["memory.used"]),
        t.used / MIB,
    )?;
    let mut processes: Vec<(u32, u64)> = g["processes"].as_array().map_or(vec![], |a| {
        a.iter()
            .map(|p| {
                (
                    json_u64(&p["pid"]) as u32,
                    json_u64(&p["gpu_memory_usage"]) * MIB,
                )
            })
            .collect()
    });
    processes.sort();
    check_eq("processes (pid, bytes)", processes, t.processes.clone())
}

fn nvitop_matches(t: &Truth) -> TestResult {
    let out = stdout_of("nvitop --once", run(venv_bin("nvitop")?, &["--once"])?)?;
    show("nvitop --once", &out);
    // nvitop's card row: "112.0MiB / 1536MiB"; a process row: "... 96.00MiB ...".
    let mib = |word: &str| word.strip_suffix("MiB").and_then(|n| n.parse::<f64>().ok());
    let near = |shown: f64, bytes: u64| (shown - bytes as f64 / MIB as f64).abs() < 0.5;
    let card = out
        .lines()
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.windows(3).find_map(|w| match w {
                [used, "/", total] => Some((mib(used)?, mib(total)?)),
                _ => None,
            })
        })
        .ok_or("no \"used / total\" memory in nvitop's output")?;
    check(near(card.0, t.used) && near(card.1, t.total), || {
        format!(
            "nvitop shows {card:?} MiB, emuv says used {} total {}",
            t.used, t.total
        )
    })?;
    check(out.contains(t.name.trim_start_matches("NVIDIA ")), || {
        format!("no {:?} in nvitop's output", t.name)
    })?;
    for (pid, bytes) in &t.processes {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(&pid.to_string()))
            .ok_or_else(|| format!("no row for pid {pid} in nvitop's output"))?;
        let shown = row.split_whitespace().find_map(mib);
        check(shown.is_some_and(|m| near(m, *bytes)), || {
            format!("pid {pid}'s row {row:?} does not show {bytes} bytes")
        })?;
    }
    Ok(())
}

/// Splits a CSV line of nvidia-smi's format.
fn cells(line: &str) -> Vec<&str> {
    line.split(", ").collect()
}

fn emuv_smi_matches(t: &Truth, pynvml_uuid: &str) -> TestResult {
    let fields = "index,name,uuid,pci.bus_id,pci.device_id,memory.total,memory.used,memory.free,\
                  memory.reserved,driver_version,count";
    let out = stdout_of(
        "emuv-smi --query-gpu",
        run(
            emuv_smi(),
            &[&format!("--query-gpu={fields}"), "--format=csv"],
        )?,
    )?;
    let lines: Vec<&str> = out.lines().collect();
    check_eq(
        "header",
        lines.first().copied(),
        Some(
            "index, name, uuid, pci.bus_id, pci.device_id, memory.total [MiB], memory.used [MiB], \
              memory.free [MiB], memory.reserved [MiB], driver_version, count",
        ),
    )?;
    let mib = |bytes: u64| format!("{} MiB", bytes.div_ceil(MIB));
    let expected = vec![
        "0".to_owned(),
        t.name.clone(),
        pynvml_uuid.to_owned(),
        "00000000:01:00.0".to_owned(),
        format!("0x{:04X}10DE", t.device_id),
        mib(t.total),
        mib(t.used),
        mib(t.free),
        "0 MiB".to_owned(),
        driver_version()?,
        "1".to_owned(),
    ];
    check_eq(
        "row",
        lines.get(1).map(|l| cells(l)),
        Some(expected.iter().map(String::as_str).collect()),
    )?;
    check_eq("lines", lines.len(), 2)?;

    let out = stdout_of(
        "emuv-smi --query-compute-apps",
        run(
            emuv_smi(),
            &[
                "--query-compute-apps=pid,process_name,used_memory",
                "--format=csv,noheader,nounits",
            ],
        )?,
    )?;
    let mut apps: Vec<(u32, u64)> = Vec::new();
    for line in out.lines() {
        let c = cells(line);
        check_eq("cells", c.len(), 3)?;
        check(c[1].ends_with("emuv_gpu_tools"), || {
            format!("process name {:?}", c[1])
        })?;
        apps.push((
            c[0].parse().map_err(err("pid"))?,
            c[2].parse::<u64>().map_err(err("MiB"))? * MIB,
        ));
    }
    apps.sort();
    check_eq("compute apps (pid, bytes)", apps, t.processes.clone())?;

    let out = stdout_of("emuv-smi -L", run(emuv_smi(), &["-L"])?)?;
    check_eq(
        "-L",
        out,
        format!("GPU 0: {} (UUID: {pynvml_uuid})\n", t.name),
    )?;

    let out = stdout_of("emuv-smi", run(emuv_smi(), &[])?)?;
    show("emuv-smi", &out);
    for (pid, _) in &t.processes {
        check(out.contains(&format!(" {pid} ")), || {
            format!("no pid {pid} in the table:\n{out}")
        })?;
    }
    check(
        out.contains(&format!("{}MiB / ", t.used.div_ceil(MIB))),
        || format!("no used memory in:\n{out}"),
    )
}

fn emuv_smi_rejects_bad_fields() -> TestResult {
    let out = run(
        emuv_smi(),
        &["--query-gpu=memory.used,bogus", "--format=csv"],
    )?;
    check_eq("exit code", out.status.code(), Some(2))?;
    check_eq(
        "stdout",
        String::from_utf8_lossy(&out.stdout).as_ref(),
        "Field \"bogus\" is not a valid field to query.\n\n",
    )
}

/// The library's C ABI, called directly: NVIDIA's contracts that the Python tools do not probe.
mod abi {
    use super::*;

    pub type Ret = c_uint;
    type Handle = *const c_void;

    pub struct Nvml(Library);

    impl Nvml {
        pub fn load() -> Result<Self, String> {
            let path = nvml_dir().join("libnvidia-ml.so.1");
            // SAFETY: our own library; its initialisers only set up Rust statics.
            unsafe { Library::new(&path) }
                .map(Nvml)
                .map_err(err(&path.to_string_lossy()))
        }

        fn sym<T>(&self, name: &str) -> Result<Symbol<'_, T>, String> {
            // SAFETY: every use below gives the symbol its nvml.h type.
            unsafe { self.0.get(name.as_bytes()) }.map_err(err(name))
        }

        pub fn init(&self) -> Result<Ret, String> {
            // SAFETY: `nvmlReturn_t nvmlInit_v2(void)`.
            Ok(unsafe { self.sym::<unsafe extern "C" fn() -> Ret>("nvmlInit_v2")?() })
        }

        pub fn shutdown(&self) -> Result<Ret, String> {
            // SAFETY: `nvmlReturn_t nvmlShutdown(void)`.
            Ok(unsafe { self.sym::<unsafe extern "C" fn() -> Ret>("nvmlShutdown")?() })
        }

        pub fn error_string(&self, code: Ret) -> Result<String, String> {
            let f = self.sym::<unsafe extern "C" fn(Ret) -> *const c_char>("nvmlErrorString")?;
            // SAFETY: returns a static NUL-terminated string.
            Ok(unsafe { CStr::from_ptr(f(code)) }
                .to_string_lossy()
                .into_owned())
        }

        pub fn handle(&self, index: c_uint) -> Result<(Ret, Handle), String> {
            let f = self.sym::<unsafe extern "C" fn(c_uint, *mut Handle) -> Ret>(
                "nvmlDeviceGetHandleByIndex_v2",
            )?;
            let mut h: Handle = std::ptr::null();
            // SAFETY: a valid out pointer.
            Ok((unsafe { f(index, &mut h) }, h))
        }

        pub fn name(&self, h: Handle, len: c_uint) -> Result<(Ret, String), String> {
            let f = self.sym::<unsafe extern "C" fn(Handle, *mut c_char, c_uint) -> Ret>(
                "nvmlDeviceGetName",
            )?;
            let mut buf = [0 as c_char; 96];
            // SAFETY: `buf` holds at least `len` bytes.
            let ret = unsafe { f(h, buf.as_mut_ptr(), len.min(96)) };
            // SAFETY: NUL-terminated: zero-filled and written with its NUL.
            Ok((
                ret,
                unsafe { CStr::from_ptr(buf.as_ptr()) }
                    .to_string_lossy()
                    .into_owned(),
            ))
        }

        /// `nvmlDeviceGetComputeRunningProcesses_v3` with room for `room` entries (NULL for 0).
        pub fn processes(&self, h: Handle, room: c_uint) -> Result<(Ret, c_uint), String> {
            let f = self.sym::<unsafe extern "C" fn(Handle, *mut c_uint, *mut [u8; 24]) -> Ret>(
                "nvmlDeviceGetComputeRunningProcesses_v3",
            )?;
            let mut entries = vec![[0u8; 24]; room as usize];
            let mut count = room;
            let ptr = if room == 0 {
                std::ptr::null_mut()
            } else {
                entries.as_mut_ptr()
            };
            // SAFETY: `ptr` has `count` entries of nvmlProcessInfo_t's size.
            Ok((unsafe { f(h, &mut count, ptr) }, count))
        }

        /// `nvmlDeviceGetMemoryInfo_v2` with `version`; returns (ret, used).
        pub fn memory_v2(&self, h: Handle, version: c_uint) -> Result<(Ret, u64), String> {
            let f = self.sym::<unsafe extern "C" fn(Handle, *mut [u64; 5]) -> Ret>(
                "nvmlDeviceGetMemoryInfo_v2",
            )?;
            let mut m = [0u64; 5];
            m[0] = u64::from(version);
            // SAFETY: 40 bytes, nvmlMemory_v2_t's size.
            Ok((unsafe { f(h, &mut m) }, m[4]))
        }

        pub fn stub(&self, name: &str, h: Handle) -> Result<Ret, String> {
            let f = self.sym::<unsafe extern "C" fn(Handle, *mut c_void) -> Ret>(name)?;
            let mut out = [0u64; 16];
            // SAFETY: a stub ignores its arguments; a real getter would get room enough.
            Ok(unsafe { f(h, out.as_mut_ptr().cast()) })
        }
    }

    pub const SUCCESS: Ret = 0;
    pub const UNINITIALIZED: Ret = 1;
    pub const INVALID_ARGUMENT: Ret = 2;
    pub const NOT_SUPPORTED: Ret = 3;
    pub const INSUFFICIENT_SIZE: Ret = 7;
    pub const DRIVER_NOT_LOADED: Ret = 9;
    pub const ARGUMENT_VERSION_MISMATCH: Ret = 25;
}

fn c_abi_contracts(t: &Truth) -> TestResult {
    use abi::*;
    let nvml = Nvml::load()?;
    check_eq("handle before init", nvml.handle(0)?.0, UNINITIALIZED)?;
    check_eq("init", nvml.init()?, SUCCESS)?;
    check_eq("second init (counted)", nvml.init()?, SUCCESS)?;
    let (ret, h) = nvml.handle(0)?;
    check_eq("handle 0", ret, SUCCESS)?;
    check_eq("handle 1 of 1", nvml.handle(1)?.0, INVALID_ARGUMENT)?;
    check_eq("name", nvml.name(h, 64)?, (SUCCESS, t.name.clone()))?;
    check_eq(
        "name in a short buffer",
        nvml.name(h, t.name.len() as c_uint)?.0,
        INSUFFICIENT_SIZE,
    )?;
    check_eq(
        "name of a foreign handle",
        nvml.name(std::ptr::dangling(), 64)?.0,
        INVALID_ARGUMENT,
    )?;
    let n = t.processes.len() as c_uint;
    check_eq(
        "process count query",
        nvml.processes(h, 0)?,
        (INSUFFICIENT_SIZE, n),
    )?;
    check_eq(
        "processes, one slot short",
        nvml.processes(h, n - 1)?,
        (INSUFFICIENT_SIZE, n),
    )?;
    check_eq(
        "processes with room",
        nvml.processes(h, n + 5)?,
        (SUCCESS, n),
    )?;
    check_eq(
        "memory v2",
        nvml.memory_v2(h, 0x0200_0028)?,
        (SUCCESS, t.used),
    )?;
    check_eq(
        "memory v2, wrong version",
        nvml.memory_v2(h, 0x0100_0028)?.0,
        ARGUMENT_VERSION_MISMATCH,
    )?;
    for stub in [
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetFanSpeed",
    ] {
        check_eq(stub, nvml.stub(stub, h)?, NOT_SUPPORTED)?;
    }
    check_eq(
        "error string",
        nvml.error_string(INSUFFICIENT_SIZE)?,
        "Insufficient Size".into(),
    )?;
    check_eq("shutdown", nvml.shutdown()?, SUCCESS)?;
    check_eq("still initialised", nvml.handle(0)?.0, SUCCESS)?;
    check_eq("last shutdown", nvml.shutdown()?, SUCCESS)?;
    check_eq("shutdown too many", nvml.shutdown()?, UNINITIALIZED)
}

/// Without access to the device node, the library reports totals and no processes.
fn unprivileged_gets_totals(t: &Truth) -> TestResult {
    use abi::*;
    let nvml = Nvml::load()?;
    // SAFETY: single-threaded here; the child only calls the library and exits.
    match unsafe { fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            let nobody = (setgid(Gid::from_raw(65534)), setuid(Uid::from_raw(65534)));
            let result = (|| -> TestResult {
                check(nobody.0.is_ok() && nobody.1.is_ok(), || {
                    "setuid(nobody)".into()
                })?;
                check_eq("init as nobody", nvml.init()?, SUCCESS)?;
                let (_, h) = nvml.handle(0)?;
                check_eq(
                    "used as nobody",
                    nvml.memory_v2(h, 0x0200_0028)?,
                    (SUCCESS, t.used),
                )?;
                check_eq("processes as nobody", nvml.processes(h, 0)?, (SUCCESS, 0))
            })();
            if let Err(e) = &result {
                println!("# child: {e}");
            }
            std::process::exit(i32::from(result.is_err()))
        }
        ForkResult::Parent { child } => match waitpid(child, None).map_err(err("waitpid"))? {
            WaitStatus::Exited(_, 0) => Ok(()),
            status => Err(format!("the unprivileged child ended with {status:?}")),
        },
    }
}

/// `Device::processes()` on a read-only open, as monitoring tools use it: every holder with
/// its bytes and allocations, this process's two files as one entry; ALLOC needs a writable
/// open.
fn processes_read_only(t: &Truth) -> TestResult {
    let ro = Device::open_read_only().map_err(err("open /dev/emuv O_RDONLY"))?;
    check_eq(
        "ALLOC on a read-only open",
        ro.alloc(MIB, Tier::Any).err(),
        Some(Errno::EBADF),
    )?;
    let listed = ro.processes().map_err(err("EMUV_IOCTL_PROCESSES"))?;
    let me = std::process::id();
    let own = listed.iter().find(|p| p.pid == Some(me));
    check_eq(
        "this process (comm, bytes, allocations)",
        own.map(|p| (p.comm_lossy(), p.bytes, p.allocations)),
        Some((
            "emuv_gpu_tools".to_owned(),
            OWN_ALLOCATIONS.iter().sum(),
            OWN_ALLOCATIONS.len() as u64,
        )),
    )?;
    check_eq(
        "entries of this process",
        listed.iter().filter(|p| p.pid == Some(me)).count(),
        1,
    )?;
    let mut holders: Vec<(u32, u64)> = listed
        .iter()
        .filter(|p| p.allocations > 0)
        .map(|p| (p.pid.unwrap_or(0), p.bytes))
        .collect();
    holders.sort();
    check_eq("holders (pid, bytes)", holders, t.processes.clone())
}

/// A holder named "ev\n4242 fake 9", 1 MiB allocated and mapped: every tool lists its real PID
/// and 1 MiB, and no process 4242. When the tools parsed `cat /dev/emuv`, whose rows carried
/// the name raw, the row broke in two ("... ev" and "4242 fake 9 ..."), the report no longer
/// parsed: NVML answered "GPU is lost" (pynvml raised, gpustat and nvitop lost the process list)
/// and emuv-smi listed no process at all.
fn forged_name_forges_nothing(t: &Truth, uuid: &str) -> TestResult {
    let child = Holder::spawn("--hold-renamed", MIB)?;
    let pid = child.id();
    let mut holders = t.processes.clone();
    holders.push((pid, MIB));
    let t = truth(holders)?;
    // Unless the child really is 4242 (PIDs wrap), that PID must be nowhere.
    let forged_is_real = t.processes.iter().any(|&(p, _)| p == FORGED_PID);
    let no_forged = |what: &str, pids: &[u32]| {
        check(forged_is_real || !pids.contains(&FORGED_PID), || {
            format!("{what} lists the forged PID {FORGED_PID}: {pids:?}")
        })
    };

    let ro = Device::open_read_only().map_err(err("open /dev/emuv O_RDONLY"))?;
    let listed = ro.processes().map_err(err("EMUV_IOCTL_PROCESSES"))?;
    let entry = listed.iter().find(|p| p.pid == Some(pid));
    check_eq(
        "the child's entry (comm, bytes, allocations)",
        entry.map(|p| (p.comm.as_slice(), p.bytes, p.allocations)),
        Some((FORGED_NAME.to_bytes(), MIB, 1)),
    )?;

    let v = pynvml_json()?;
    check_eq(
        "pynvml compute processes (pid, bytes)",
        pynvml_compute(&v),
        t.processes.clone(),
    )?;
    let pids: Vec<u32> = pynvml_compute(&v).iter().map(|&(p, _)| p).collect();
    no_forged("pynvml", &pids)?;
    gpustat_matches(&t)?;
    nvitop_matches(&t)?;
    emuv_smi_matches(&t, uuid)?;

    let out = compute_apps_csv()?;
    let rows: Vec<Vec<&str>> = out.lines().map(cells).collect();
    check_eq("CSV lines", rows.len(), t.processes.len())?;
    let pid_text = pid.to_string();
    let own_rows: Vec<_> = rows.iter().filter(|c| c[0] == pid_text).collect();
    check_eq("the child's CSV lines", own_rows.len(), 1)?;
    check(
        own_rows[0].len() == 3
            && own_rows[0][1].ends_with("emuv_gpu_tools")
            && own_rows[0][2] == "1 MiB",
        || format!("the child's CSV line {:?}", own_rows[0]),
    )?;
    let pids: Vec<u32> = rows.iter().filter_map(|c| c[0].parse().ok()).collect();
    no_forged("emuv-smi", &pids)?;
    drop(ro);
    child.stop()
}

/// Duplicates a descriptor of another process into this one (`pidfd_getfd`, root may).
fn take_fd(pid: u32, fd: i32) -> Result<OwnedFd, String> {
    // SAFETY: plain system calls with integer arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let pidfd = Errno::result(pidfd).map_err(err("pidfd_open"))?;
    // SAFETY: a new descriptor, ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: as above.
    let file = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    let file = Errno::result(file).map_err(err("pidfd_getfd"))?;
    // SAFETY: a new descriptor (close-on-exec), ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(file as i32) })
}

/// A file whose opener has exited (here taken over before it exits; inherited files are the
/// same): NVML lists its memory under PID 0, emuv-smi under N/A with its command name, never
/// under the opener's old PID, which may name another process by now; gpustat and nvitop
/// still run. (`cat /dev/emuv` writes "-" for its PID: the old text parser failed on that row,
/// and NVML answered "GPU is lost".)
fn exited_opener_is_pid_0(t: &Truth) -> TestResult {
    let opener = Holder::spawn("--hold", MIB)?;
    let opener_pid = opener.id();
    let file = take_fd(opener_pid, opener.fd)?;
    opener.stop()?;

    let ro = Device::open_read_only().map_err(err("open /dev/emuv O_RDONLY"))?;
    let listed = ro.processes().map_err(err("EMUV_IOCTL_PROCESSES"))?;
    let exited: Vec<_> = listed
        .iter()
        .filter(|p| p.exited())
        .map(|p| (p.comm_lossy(), p.bytes, p.allocations))
        .collect();
    check_eq(
        "exited openers' entries (comm, bytes, allocations)",
        exited,
        vec![("emuv_gpu_tools".to_owned(), MIB, 1)],
    )?;
    check(!listed.iter().any(|p| p.pid == Some(opener_pid)), || {
        format!("the exited opener's PID {opener_pid} is listed: {listed:?}")
    })?;

    let mut expected = t.processes.clone();
    expected.push((0, MIB));
    expected.sort();
    check_eq(
        "pynvml compute processes (pid, bytes)",
        pynvml_compute(&pynvml_json()?),
        expected,
    )?;
    let out = compute_apps_csv()?;
    let exited: Vec<&str> = out.lines().filter(|l| l.starts_with("[N/A], ")).collect();
    check_eq(
        "emuv-smi's lines without a PID",
        exited,
        vec!["[N/A], emuv_gpu_tools, 1 MiB"],
    )?;
    let out = stdout_of("emuv-smi", run(emuv_smi(), &[])?)?;
    show("emuv-smi", &out);
    check(
        out.lines()
            .any(|l| l.contains(" N/A      C   emuv_gpu_tools ") && l.ends_with(" 1MiB |")),
        || format!("no N/A row for the exited opener in the table:\n{out}"),
    )?;
    stdout_of("gpustat --json", run(venv_bin("gpustat")?, &["--json"])?)?;
    stdout_of("nvitop --once", run(venv_bin("nvitop")?, &["--once"])?)?;
    drop(file);
    Ok(())
}

fn with_emuv_and_holders(tap: &mut Tap) {
    let mut uuid = String::new();
    let result = module::with_loaded(PARAMS, || {
        let device = Device::open().map_err(err("open /dev/emuv"))?;
        let _own: Vec<_> = OWN_ALLOCATIONS
            .iter()
            .map(|&bytes| device.alloc(bytes, Tier::Any))
            .collect::<Result<_, _>>()
            .map_err(err("alloc"))?;
        let helper = Holder::spawn("--hold", HELPER_BYTES)?;
        let truth = truth(vec![
            (std::process::id(), OWN_ALLOCATIONS.iter().sum()),
            (helper.id(), HELPER_BYTES),
        ]);
        if let Ok(t) = &truth {
            tap.note(format!(
                "emuv: {} total {} used {} free {} processes {:?}",
                t.name, t.total, t.used, t.free, t.processes
            ));
            check_eq(
                "used",
                t.used,
                OWN_ALLOCATIONS.iter().sum::<u64>() + HELPER_BYTES,
            )
            .ok();
        }
        let t = truth?;
        let pynvml_uuid = pynvml_json()
            .ok()
            .and_then(|v| v["gpus"][0]["uuid"].as_str().map(str::to_owned));
        uuid = pynvml_uuid.clone().unwrap_or_default();
        tap.test(
            "pynvml reports emuv's name, PCI ID, memory and processes",
            pynvml_matches(&t),
        );
        tap.test(
            "gpustat --json reports the same card, memory and processes",
            gpustat_matches(&t),
        );
        tap.test(
            "nvitop --once shows the same memory and processes",
            nvitop_matches(&t),
        );
        tap.test(
            "emuv-smi's CSV, -L and table carry the same numbers",
            emuv_smi_matches(&t, &uuid),
        );
        tap.test(
            "the C ABI keeps NVML's contracts (two-call lists, sizes, versions, refcount)",
            c_abi_contracts(&t),
        );
        tap.test(
            "without access to /dev/emuv: totals, and no process list",
            unprivileged_gets_totals(&t),
        );
        tap.test(
            "Device::processes() on a read-only open lists the holders; ALLOC there is EBADF",
            processes_read_only(&t),
        );
        tap.test(
            "a process named \"ev\\n4242 fake 9\" is listed by its real PID, and no PID 4242",
            forged_name_forges_nothing(&t, &uuid),
        );
        tap.test(
            "a file whose opener exited: PID 0 in NVML, N/A in emuv-smi, the tools still run",
            exited_opener_is_pid_0(&t),
        );
        helper.stop()
    });
    tap.test("emuv loads, the holders allocate, emuv unloads", result);

    let again = module::with_loaded(PARAMS, || {
        let v = pynvml_json()?;
        check_eq(
            "UUID after a reload",
            v["gpus"][0]["uuid"].as_str(),
            Some(uuid.as_str()),
        )
    });
    tap.test("the GPU's UUID is the same after a reload", again);
}

/// Cards of [`eight_cards`] that hold memory, and how much (a holder process each).
const CARD_HOLDINGS: [(u32, u64); 3] = [(0, 8 * MIB), (3, 24 * MIB), (7, 40 * MIB)];

/// The sysfs directory of card `index`.
fn card_dir(index: u32) -> PathBuf {
    match index {
        0 => PathBuf::from("/sys/class/emuv/emuv"),
        i => PathBuf::from(format!("/sys/class/emuv/emuv{i}")),
    }
}

fn card_u64(index: u32, name: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(card_dir(index).join(name)).map_err(err(name))?;
    text.trim().parse().map_err(err(name))
}

const PYNVML_CARDS: &str = r#"
import json, pynvml as n
def text(v):
    return v.decode() if isinstance(v, bytes) else v
n.nvmlInit()
out = []
for i in range(n.nvmlDeviceGetCount()):
    h = n.nvmlDeviceGetHandleByIndex(i)
    out.append({
        "name": text(n.nvmlDeviceGetName(h)),
        "uuid": text(n.nvmlDeviceGetUUID(h)),
        "bus_id": text(n.nvmlDeviceGetPciInfo(h).busId),
        "minor": n.nvmlDeviceGetMinorNumber(h),
        "used": n.nvmlDeviceGetMemoryInfo(h).used,
        "compute": sorted([p.pid, p.usedGpuMemory] for p in n.nvmlDeviceGetComputeRunningProcesses(h)),
        "arch": n.nvmlDeviceGetArchitecture(h),
        "cc": list(n.nvmlDeviceGetCudaComputeCapability(h)),
        "cores": n.nvmlDeviceGetNumGpuCores(h),
        "bus_width": n.nvmlDeviceGetMemoryBusWidth(h),
    })
n.nvmlShutdown()
print(json.dumps(out))
"#;

/// Waits for an Xid event on any card, after saying "ready"; then what the lost card and the
/// others answer.
const PYNVML_XID: &str = r#"
import json, pynvml as n
def text(v):
    return v.decode() if isinstance(v, bytes) else v
def err(f):
    try:
        f()
        return "ok"
    except n.NVMLError as e:
        return type(e).__name__
n.nvmlInit()
handles = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
events = n.nvmlEventSetCreate()
for h in handles:
    n.nvmlDeviceRegisterEvents(h, n.nvmlEventTypeXidCriticalError, events)
print("ready", flush=True)
d = n.nvmlEventSetWait_v2(events, 30000)
lost = [i for i, h in enumerate(handles) if err(lambda: n.nvmlDeviceGetMemoryInfo(h)) != "ok"]
print(json.dumps({
    "type": d.eventType, "data": d.eventData, "uuid": text(n.nvmlDeviceGetUUID(d.device)),
    "lost": lost, "by_index_5": err(lambda: n.nvmlDeviceGetHandleByIndex(5)),
    "memory_4": err(lambda: n.nvmlDeviceGetMemoryInfo(handles[4])),
}))
n.nvmlEventSetFree(events)
n.nvmlShutdown()
"#;

/// pynvml's view of every card, checked against sysfs and the holders; returns the UUIDs.
fn pynvml_sees_every_card(holders: &[(u32, u32, u64)]) -> Result<Vec<String>, String> {
    let out = stdout_of("pynvml", run(venv_bin("python")?, &["-c", PYNVML_CARDS])?)?;
    let v: Value = serde_json::from_str(&out).map_err(err(&format!("pynvml output {out:?}")))?;
    let gpus = v.as_array().ok_or("not a list")?;
    check_eq("pynvml's count", gpus.len(), 8)?;
    let mut uuids = Vec::new();
    for (i, g) in gpus.iter().enumerate() {
        let i = i as u32;
        let what = |field: &str| format!("GPU {i} {field}");
        check_eq(
            &what("name"),
            g["name"].as_str(),
            Some("NVIDIA GeForce RTX 4090"),
        )?;
        check_eq(
            &what("bus ID"),
            g["bus_id"].as_str().map(str::to_owned),
            Some(format!("00000000:{:02X}:00.0", i + 1)),
        )?;
        check_eq(&what("minor"), json_u64(&g["minor"]), u64::from(i))?;
        check_eq(
            &what("used"),
            json_u64(&g["used"]),
            card_u64(i, "used_bytes")?,
        )?;
        let want: Vec<(u64, u64)> = holders
            .iter()
            .filter(|h| h.0 == i)
            .map(|h| (u64::from(h.1), h.2))
            .collect();
        let got: Vec<(u64, u64)> = g["compute"].as_array().map_or(vec![], |a| {
            a.iter()
                .map(|p| (json_u64(&p[0]), json_u64(&p[1])))
                .collect()
        });
        check_eq(&what("processes"), got, want)?;
        check_eq(
            &what("architecture (NVML_DEVICE_ARCH_ADA)"),
            json_u64(&g["arch"]),
            8,
        )?;
        check_eq(
            &what("compute capability"),
            g["cc"].clone(),
            serde_json::json!([8, 9]),
        )?;
        check_eq(&what("CUDA cores"), json_u64(&g["cores"]), 16384)?;
        check_eq(&what("bus width"), json_u64(&g["bus_width"]), 384)?;
        uuids.push(g["uuid"].as_str().unwrap_or_default().to_owned());
    }
    let mut distinct = uuids.clone();
    distinct.sort();
    distinct.dedup();
    check_eq("distinct UUIDs", distinct.len(), 8)?;
    Ok(uuids)
}

fn gpustat_and_nvitop_see_every_card(holders: &[(u32, u32, u64)]) -> TestResult {
    let out = stdout_of("gpustat --json", run(venv_bin("gpustat")?, &["--json"])?)?;
    let v: Value = serde_json::from_str(&out).map_err(err(&format!("gpustat output {out:?}")))?;
    let gpus = v["gpus"].as_array().ok_or("gpustat: no gpus")?;
    check_eq("gpustat's GPUs", gpus.len(), 8)?;
    for (i, g) in gpus.iter().enumerate() {
        let i = i as u32;
        check_eq(
            &format!("gpustat GPU {i} index"),
            json_u64(&g["index"]),
            u64::from(i),
        )?;
        check_eq(
            &format!("gpustat GPU {i} memory.used"),
            json_u64(&g["memory.used"]),
            card_u64(i, "used_bytes")? / MIB,
        )?;
        let pids: Vec<u64> = g["processes"]
            .as_array()
            .map_or(vec![], |a| a.iter().map(|p| json_u64(&p["pid"])).collect());
        let want: Vec<u64> = holders
            .iter()
            .filter(|h| h.0 == i)
            .map(|h| u64::from(h.1))
            .collect();
        check_eq(&format!("gpustat GPU {i} processes"), pids, want)?;
    }
    show(
        "gpustat",
        &stdout_of("gpustat", run(venv_bin("gpustat")?, &[])?)?,
    );
    let out = stdout_of("nvitop --once", run(venv_bin("nvitop")?, &["--once"])?)?;
    show("nvitop --once", &out);
    let used_totals = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .collect::<Vec<_>>()
                .windows(3)
                .any(|w| w[1] == "/" && w[0].ends_with('B') && w[2].ends_with("MiB"))
        })
        .count();
    check_eq("nvitop's card rows", used_totals, 8)?;
    for (card, pid, _) in holders {
        check(
            out.lines()
                .any(|l| l.split_whitespace().nth(2) == Some(&pid.to_string())),
            || format!("no row for card {card}'s holder {pid} in nvitop's output"),
        )?;
    }
    Ok(())
}

fn emuv_smi_selects_and_queries(holders: &[(u32, u32, u64)], uuids: &[String]) -> TestResult {
    let out = stdout_of("emuv-smi -L", run(emuv_smi(), &["-L"])?)?;
    check_eq("-L lines", out.lines().count(), 8)?;
    check(
        out.lines()
            .nth(7)
            .is_some_and(|l| l.starts_with("GPU 7: ") && l.contains(&uuids[7])),
        || format!("-L's last line: {out}"),
    )?;
    let fields = [
        "--query-gpu=index,pci.bus_id,memory.used",
        "--format=csv,noheader",
    ];
    let by_index = stdout_of(
        "-i 3",
        run(emuv_smi(), &[&["-i", "3"][..], &fields].concat())?,
    )?;
    check_eq("-i 3", by_index.as_str(), "3, 00000000:04:00.0, 24 MiB\n")?;
    let by_uuid = stdout_of(
        "-i UUID",
        run(emuv_smi(), &[&["-i", &uuids[3]][..], &fields].concat())?,
    )?;
    check_eq("-i UUID of card 3", by_uuid, by_index.clone())?;
    let by_bus = stdout_of(
        "-i bus ID",
        run(
            emuv_smi(),
            &[&["-i", "00000000:04:00.0,7"][..], &fields].concat(),
        )?,
    )?;
    check_eq(
        "-i bus ID,7",
        by_bus,
        format!("{by_index}7, 00000000:08:00.0, 40 MiB\n"),
    )?;
    let apps = stdout_of(
        "-i 7 --query-compute-apps",
        run(
            emuv_smi(),
            &[
                "-i",
                "7",
                "--query-compute-apps=pid,used_memory",
                "--format=csv,noheader,nounits",
            ],
        )?,
    )?;
    let holder7 = holders
        .iter()
        .find(|h| h.0 == 7)
        .ok_or("no holder on card 7")?;
    check_eq("-i 7's compute apps", apps, format!("{}, 40\n", holder7.1))?;
    let memory = stdout_of("-q -d MEMORY", run(emuv_smi(), &["-q", "-d", "MEMORY"])?)?;
    check_eq(
        "-q -d MEMORY's GPU sections",
        memory.lines().filter(|l| l.starts_with("GPU 0000")).count(),
        8,
    )?;
    let q = stdout_of("-q -i 3", run(emuv_smi(), &["-q", "-i", "3"])?)?;
    show("emuv-smi -q -i 3", &q);
    for want in [
        "Product Name",
        "NVIDIA GeForce RTX 4090",
        "Driver Version",
        "00000000:04:00.0",
        "FB Memory Usage",
    ] {
        check(q.contains(want), || format!("no {want:?} in -q -i 3:\n{q}"))?;
    }
    check(q.contains(&driver_version()?), || {
        format!("-q does not show the driver version:\n{q}")
    })
}

/// pynvml in a mount namespace where only card 3's node is its own (the others are
/// `/dev/null`, bind-mounted over them), as a container given one GPU: one device, index 0,
/// card 3's UUID and memory.
fn one_node_one_gpu(uuids: &[String]) -> TestResult {
    use nix::{
        mount::{mount, MsFlags},
        sched::{unshare, CloneFlags},
    };
    let python = venv_bin("python")?;
    let script = "import pynvml as n, json\nn.nvmlInit()\nh = n.nvmlDeviceGetHandleByIndex(0)\nu = n.nvmlDeviceGetUUID(h)\nprint(json.dumps([n.nvmlDeviceGetCount(), u if isinstance(u, str) else u.decode(), n.nvmlDeviceGetMemoryInfo(h).used]))";
    let answer = emuv_tests::in_child(None, || {
        unshare(CloneFlags::CLONE_NEWNS).map_err(err("unshare"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(err("make / private"))?;
        for i in (0..8).filter(|&i| i != 3) {
            let node = if i == 0 {
                "/dev/emuv".to_owned()
            } else {
                format!("/dev/emuv{i}")
            };
            mount(
                Some("/dev/null"),
                node.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(err(&format!("hide {node}")))?;
        }
        stdout_of("pynvml with one node", run(&python, &["-c", script])?)
    })?;
    let v: Value = serde_json::from_str(&answer).map_err(err(&format!("answer {answer:?}")))?;
    check_eq("GPUs seen", json_u64(&v[0]), 1)?;
    check_eq("its UUID", v[1].as_str(), Some(uuids[3].as_str()))?;
    check_eq(
        "its used memory",
        json_u64(&v[2]),
        card_u64(3, "used_bytes")?,
    )
}

/// Card 5 is lost while pynvml waits for Xid events: event 79 for card 5, GPU_IS_LOST for it
/// only; recovery with `fail=none`.
fn lost_card_in_nvml(uuids: &[String]) -> TestResult {
    let mut waiter = Command::new(venv_bin("python")?)
        .args(["-c", PYNVML_XID])
        .env("LD_LIBRARY_PATH", nvml_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(err("spawn the waiter"))?;
    let mut stdout = BufReader::new(waiter.stdout.take().ok_or("waiter stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(err("waiter ready"))?;
    let lost = check_eq("waiter", line.as_str(), "ready\n")
        .and_then(|()| std::fs::write(card_dir(5).join("fail"), "lost").map_err(err("fail=lost")));
    let mut answer = String::new();
    let _ = stdout.read_line(&mut answer);
    let status = waiter.wait().map_err(err("wait for the waiter"))?;
    let result = (|| -> TestResult {
        lost?;
        check(status.success(), || {
            format!("the waiter ended with {status}: {answer:?}")
        })?;
        let v: Value =
            serde_json::from_str(&answer).map_err(err(&format!("waiter output {answer:?}")))?;
        check_eq(
            "event type (nvmlEventTypeXidCriticalError)",
            json_u64(&v["type"]),
            8,
        )?;
        check_eq("Xid", json_u64(&v["data"]), 79)?;
        check_eq(
            "the event's GPU",
            v["uuid"].as_str(),
            Some(uuids[5].as_str()),
        )?;
        check_eq(
            "cards answering GPU_IS_LOST",
            v["lost"].clone(),
            serde_json::json!([5]),
        )?;
        check_eq(
            "handle by index 5",
            v["by_index_5"].as_str(),
            Some("NVMLError_GpuIsLost"),
        )?;
        check_eq("card 4's memory", v["memory_4"].as_str(), Some("ok"))?;
        let smi = run(emuv_smi(), &["--query-gpu=index", "--format=csv,noheader"])?;
        check_eq(
            "emuv-smi's cards with one lost",
            String::from_utf8_lossy(&smi.stdout).lines().count(),
            7,
        )?;
        // What users see of an 8-card node with a lost card (for the log, not checked).
        for (what, out) in [
            ("emuv-smi with card 5 lost", run(emuv_smi(), &[])?),
            ("gpustat with card 5 lost", run(venv_bin("gpustat")?, &[])?),
        ] {
            let text = format!(
                "{}{}exit: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                out.status
            );
            show(what, &text);
        }
        Ok(())
    })();
    std::fs::write(card_dir(5).join("fail"), "none").map_err(err("fail=none"))?;
    result?;
    let out = stdout_of(
        "pynvml after recovery",
        run(venv_bin("python")?, &["-c", PYNVML_CARDS])?,
    )?;
    check(out.matches("NVIDIA GeForce RTX 4090").count() == 8, || {
        format!("after recovery: {out}")
    })
}

fn eight_cards(tap: &mut Tap) {
    let result = module::with_loaded(
        "gpu_count=8 gpu_model=4090 physical_vram_mb=256 virtual_vram_mb=0",
        || {
            let mut holders = Vec::new();
            let mut records = Vec::new();
            for (card, bytes) in CARD_HOLDINGS {
                let node = if card == 0 {
                    "/dev/emuv".to_owned()
                } else {
                    format!("/dev/emuv{card}")
                };
                let holder = Holder::spawn_on("--hold", bytes, &node)?;
                records.push((card, holder.id(), bytes));
                holders.push(holder);
            }
            let uuids = pynvml_sees_every_card(&records);
            tap.test(
                "8 cards: pynvml sees each one's name, bus ID, facts, memory and processes",
                uuids.as_ref().map(drop).map_err(Clone::clone),
            );
            let uuids = uuids.unwrap_or_else(|_| vec![String::new(); 8]);
            tap.test(
                "8 cards: gpustat and nvitop show each one's memory and processes",
                gpustat_and_nvitop_see_every_card(&records),
            );
            tap.test(
                "emuv-smi -L, -i by index, UUID and bus ID, compute apps, -q",
                emuv_smi_selects_and_queries(&records, &uuids),
            );
            tap.test(
                "a process given only /dev/emuv3 sees one GPU: card 3",
                one_node_one_gpu(&uuids),
            );
            tap.test(
                "a lost card: Xid 79 through pynvml's events, GPU_IS_LOST for it only, recovery",
                lost_card_in_nvml(&uuids),
            );
            for holder in holders {
                holder.stop()?;
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        tap.note(format!("8 cards: {e}"));
    }
}

fn without_emuv() -> TestResult {
    check(!module::is_loaded(), || "emuv is loaded".into())?;
    let out = run(
        venv_bin("python")?,
        &["-c", "import pynvml\ntry:\n    pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n    print(type(e).__name__, e.value, e)"],
    )?;
    check_eq(
        "pynvml",
        stdout_of("python", out)?,
        "NVMLError_DriverNotLoaded 9 Driver Not Loaded\n".to_owned(),
    )?;
    check_eq("C init", abi::Nvml::load()?.init()?, abi::DRIVER_NOT_LOADED)?;
    let out = run(emuv_smi(), &[])?;
    check_eq("emuv-smi exit code", out.status.code(), Some(9))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = || args.get(2).and_then(|b| b.parse().ok()).unwrap_or(MIB);
    let node = args.get(3).map_or("/dev/emuv", String::as_str);
    match args.get(1).map(String::as_str) {
        Some("--hold") => hold(bytes(), None, node),
        Some("--hold-renamed") => hold(bytes(), Some(FORGED_NAME), node),
        _ => {}
    }
    let mut tap = Tap::new(18);
    tap.test(
        "without emuv: NVIDIA's \"Driver Not Loaded\" and emuv-smi's exit code 9",
        without_emuv(),
    );
    tap.test(
        "emuv-smi rejects an unknown field as nvidia-smi does",
        emuv_smi_rejects_bad_fields(),
    );
    with_emuv_and_holders(&mut tap);
    eight_cards(&mut tap);
    tap.finish()
}
