// SPDX-License-Identifier: GPL-2.0
//! Emulated cards in real containers: podman 5 (crun) with `emuv-ctk`'s CDI spec, in a guest
//! whose root is the Debian sid chroot (`scripts/containers.sh`).
//!
//! - `--device emuv.dev/gpu=1`: `emuv-smi -L` and pynvml list exactly card 1, as GPU 0; `=all`
//!   every card; a card named by UUID; the same under `--kind nvidia.com/gpu`.
//! - A process allocating in a container is listed by the host under its host PID and by the
//!   container's `emuv-smi` under its own; killing the container frees its memory.
//! - dmem (kernels with the controller): `--cgroup-conf dmem.max=…` limits a container to 1 GiB
//!   of a 4 GiB card while another container allocates 2 GiB; the container's `dmem.current`
//!   is what NVML reports for it; the container cannot raise its own limit.
//! - Bad input: the spec regenerated while a container runs, a card lost while a container maps
//!   it (`SIGBUS` there, the host unharmed), a stale spec naming a removed card (the runtime's
//!   clear error, nothing else affected).
//!
//! Run as `emuv_containers alloc [--hold] MIB...` inside a container it is the allocating
//! program: it opens the first `/dev/emuv*` node it sees, allocates each size in turn and
//! prints one word per size (`ok`, or the errno's name), then with `--hold` maps and keeps
//! touching the first allocation.

use emuv::{Device, Tier};
use emuv_tests::{
    containerd::{describe, host_uuids, image, text, Containerd, Pod, ALLOC, PODMAN_OPTIONS},
    cri::Cri,
    err, module, smi_uuids,
    tap::{check, check_eq, Tap},
    tool,
};
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Four 4 GiB lazy cards: nothing is touched but the pages a test writes.
const CARDS: &str =
    "gpu_count=4 gpu_model=4090 physical_vram_mb=4096 virtual_vram_mb=0 lazy_allocation=1";
const SPEC: &str = "/var/run/cdi/emuv.json";
const NVIDIA_SPEC: &str = "/var/run/cdi/emuv-nvidia.json";
type TestResult = Result<(), String>;

/// `podman` with [`PODMAN_OPTIONS`].
fn podman(args: &[&str]) -> Result<Output, String> {
    Command::new("podman")
        .args(PODMAN_OPTIONS)
        .args(args)
        .output()
        .map_err(err("run podman"))
}

fn podman_ok(args: &[&str]) -> Result<String, String> {
    let out = podman(args)?;
    check(out.status.success(), || {
        describe(&format!("podman {}", args.join(" ")), &out)
    })?;
    Ok(text(&out.stdout))
}

/// `podman run` of `cmd` in a new container from the image, with `options` before it.
fn run_args<'a>(
    options: &[&'a str],
    cmd: &[&'a str],
    rootfs: &'a str,
    volume: &'a str,
) -> Vec<&'a str> {
    let mut args = vec!["run", "--network=none", "-v", volume];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--rootfs", rootfs]);
    args.extend_from_slice(cmd);
    args
}

fn in_container(options: &[&str], cmd: &[&str]) -> Result<Output, String> {
    let rootfs = image();
    let volume = format!("{}:{ALLOC}:ro", tool("emuv_containers").display());
    let mut opts = vec!["--rm"];
    opts.extend_from_slice(options);
    podman(&run_args(&opts, cmd, &rootfs, &volume))
}

fn in_container_ok(options: &[&str], cmd: &[&str]) -> Result<String, String> {
    let out = in_container(options, cmd)?;
    check(out.status.success(), || {
        describe(
            &format!("podman run {} {}", options.join(" "), cmd.join(" ")),
            &out,
        )
    })?;
    Ok(text(&out.stdout))
}

/// A detached container running `emuv-alloc --hold SIZES`, killed and removed on drop.
struct Holder {
    name: String,
}

impl Holder {
    fn start(name: &str, options: &[&str], sizes: &[&str]) -> Result<Self, String> {
        let rootfs = image();
        let volume = format!("{}:{ALLOC}:ro", tool("emuv_containers").display());
        let _ = podman(&["rm", "-f", name]);
        let mut opts = vec!["-d", "--name", name];
        opts.extend_from_slice(options);
        let mut cmd = vec![ALLOC, "alloc", "--hold"];
        cmd.extend_from_slice(sizes);
        podman_ok(&run_args(&opts, &cmd, &rootfs, &volume))?;
        let holder = Self {
            name: name.to_owned(),
        };
        let start = Instant::now();
        loop {
            let logs = holder.logs()?;
            if logs.contains("holding") {
                return Ok(holder);
            }
            if start.elapsed() > Duration::from_secs(60) || logs.contains("cannot") {
                return Err(format!(
                    "container {name} never held its allocation: {logs}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> Result<String, String> {
        let out = podman(&["logs", &self.name])?;
        Ok(text(&out.stdout) + &text(&out.stderr))
    }

    /// The allocation results it printed: one word per size.
    fn results(&self) -> Result<Vec<String>, String> {
        let logs = self.logs()?;
        let line = logs
            .lines()
            .find_map(|l| l.strip_prefix("results "))
            .ok_or_else(|| format!("no results from {}: {logs}", self.name))?;
        Ok(line.split(' ').map(str::to_owned).collect())
    }

    /// Its main process's PID on the host.
    fn host_pid(&self) -> Result<u32, String> {
        podman_ok(&["inspect", "-f", "{{.State.Pid}}", &self.name])?
            .trim()
            .parse()
            .map_err(err("the container's PID"))
    }

    /// Its cgroup directory on the host.
    fn cgroup(&self) -> Result<PathBuf, String> {
        let pid = self.host_pid()?;
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(err("its cgroup"))?;
        let path = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("no cgroup v2 line")?;
        Ok(Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')))
    }

    fn exec(&self, cmd: &[&str]) -> Result<Output, String> {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(cmd);
        podman(&args)
    }

    /// Waits for it to end; its exit code.
    fn wait(&self) -> Result<i32, String> {
        podman_ok(&["wait", &self.name])?
            .trim()
            .parse()
            .map_err(err("podman wait"))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.name]);
    }
}

fn generate(extra: &[&str], output: &str) -> TestResult {
    let mut args = vec!["cdi", "generate", "--output", output];
    args.extend_from_slice(extra);
    let out = Command::new(tool("emuv-ctk"))
        .args(&args)
        .output()
        .map_err(err("emuv-ctk"))?;
    check(out.status.success(), || {
        describe("emuv-ctk cdi generate", &out)
    })
}

/// What pynvml sees in a container with `options`: the count and the UUIDs.
fn pynvml_uuids(options: &[&str]) -> Result<Vec<String>, String> {
    let script = "import pynvml as n\nn.nvmlInit()\nfor i in range(n.nvmlDeviceGetCount()):\n    print(n.nvmlDeviceGetUUID(n.nvmlDeviceGetHandleByIndex(i)))\n";
    let out = in_container_ok(options, &["python3", "-c", script])?;
    Ok(out.lines().map(str::to_owned).collect())
}

fn one_card_by_index() -> TestResult {
    let host = host_uuids()?;
    check_eq("cards on the host", host.len(), 4)?;
    let listing = in_container_ok(&["--device", "emuv.dev/gpu=1"], &["emuv-smi", "-L"])?;
    check(
        listing.lines().count() == 1 && listing.starts_with("GPU 0:"),
        || format!("emuv-smi -L in the container: {listing:?}"),
    )?;
    check_eq(
        "the card emuv-smi lists",
        smi_uuids(&listing),
        vec![host[1].clone()],
    )?;
    check_eq(
        "the card pynvml lists",
        pynvml_uuids(&["--device", "emuv.dev/gpu=1"])?,
        vec![host[1].clone()],
    )?;
    let nodes = in_container_ok(
        &["--device", "emuv.dev/gpu=1"],
        &["sh", "-c", "for n in /dev/emuv*; do echo ${n#/dev/}; done"],
    )?;
    check_eq("emuv nodes in the container", nodes.trim(), "emuv1")
}

fn all_cards_and_by_uuid() -> TestResult {
    let host = host_uuids()?;
    let listing = in_container_ok(&["--device", "emuv.dev/gpu=all"], &["emuv-smi", "-L"])?;
    check_eq(
        "=all: the cards emuv-smi lists",
        smi_uuids(&listing),
        host.clone(),
    )?;
    check_eq(
        "=all: pynvml",
        pynvml_uuids(&["--device", "emuv.dev/gpu=all"])?,
        host.clone(),
    )?;
    let by_uuid = format!("emuv.dev/gpu={}", host[2]);
    let listing = in_container_ok(&["--device", &by_uuid], &["emuv-smi", "-L"])?;
    check_eq("by UUID", smi_uuids(&listing), vec![host[2].clone()])?;
    let two = in_container_ok(
        &["--device", "emuv.dev/gpu=3", "--device", "emuv.dev/gpu=0"],
        &["emuv-smi", "-L"],
    )?;
    check_eq(
        "two cards, in the host's order",
        smi_uuids(&two),
        vec![host[0].clone(), host[3].clone()],
    )
}

fn nvidia_kind() -> TestResult {
    let host = host_uuids()?;
    generate(&["--kind", "nvidia.com/gpu", "--nvidia-smi"], NVIDIA_SPEC)?;
    let result = in_container_ok(&["--device", "nvidia.com/gpu=2"], &["nvidia-smi", "-L"]);
    let _ = fs::remove_file(NVIDIA_SPEC);
    check_eq(
        "nvidia.com/gpu=2 through nvidia-smi",
        smi_uuids(&result?),
        vec![host[2].clone()],
    )
}

/// `pid used_memory` pairs of `emuv-smi --query-compute-apps`.
fn compute_apps(output: &str) -> Vec<(u32, u64)> {
    output
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(',').map(str::trim);
            let pid = fields.next()?.parse().ok()?;
            let mib = fields
                .next()?
                .trim_end_matches(" MiB")
                .parse::<u64>()
                .ok()?;
            Some((pid, mib))
        })
        .collect()
}

const APPS: [&str; 3] = [
    "--query-compute-apps=pid,used_memory",
    "--format=csv,noheader",
    "-i",
];

fn processes_by_namespace(tap: &Tap) -> TestResult {
    let holder = Holder::start("emuv-pids", &["--device", "emuv.dev/gpu=0"], &["64"])?;
    check_eq(
        "the holder's allocation",
        holder.results()?,
        vec!["ok".to_owned()],
    )?;
    let pid = holder.host_pid()?;
    let host_view = Device::open_read_only()
        .and_then(|d| d.processes())
        .map_err(err("PROCESSES on the host"))?;
    let listed = host_view.iter().find(|p| p.pid == Some(pid));
    check(listed.is_some_and(|p| p.bytes == 64 * MIB), || {
        format!("host PID {pid} with 64 MiB not among {host_view:?}")
    })?;
    let mut args = vec!["emuv-smi"];
    args.extend_from_slice(&APPS);
    args.push("0");
    let inside = holder.exec(&args)?;
    check(inside.status.success(), || {
        describe("emuv-smi in the container", &inside)
    })?;
    check_eq(
        "the container's emuv-smi",
        compute_apps(&text(&inside.stdout)),
        vec![(1, 64)],
    )?;
    // The two views side by side, for the record.
    let host_smi = Command::new(tool("emuv-smi"))
        .output()
        .map_err(err("emuv-smi"))?;
    let container_smi = holder.exec(&["emuv-smi"])?;
    for (who, out) in [("host", &host_smi), ("container", &container_smi)] {
        tap.note(format!("emuv-smi on the {who}:"));
        for line in text(&out.stdout).lines() {
            tap.note(line);
        }
    }
    podman_ok(&["kill", "emuv-pids"])?;
    holder.wait()?;
    let dev = Device::open_read_only().map_err(err("open"))?;
    let start = Instant::now();
    while dev.info().map_err(err("INFO"))?.used != 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    check_eq(
        "card 0's used memory after podman kill",
        dev.info().map_err(err("INFO"))?.used,
        0,
    )
}

fn dmem_quota(tap: &Tap) -> TestResult {
    let limited = Holder::start(
        "emuv-quota",
        &[
            "--device",
            "emuv.dev/gpu=0",
            "--cgroup-conf",
            "dmem.max=emuv/emuv 1073741824",
        ],
        &["768", "512", "256"],
    )?;
    let results = limited.results()?;
    tap.note(format!(
        "under dmem.max=emuv/emuv 1073741824: 768 MiB {}, 512 MiB more {}, 256 MiB more {}",
        results.first().map_or("-", String::as_str),
        results.get(1).map_or("-", String::as_str),
        results.get(2).map_or("-", String::as_str)
    ));
    check_eq(
        "768 MiB, 512 MiB past the 1 GiB limit, then 256 MiB",
        results,
        vec!["ok".to_owned(), "ENOMEM".to_owned(), "ok".to_owned()],
    )?;
    let other = in_container_ok(&["--device", "emuv.dev/gpu=0"], &[ALLOC, "alloc", "2048"])?;
    check_eq(
        "2 GiB in another container meanwhile",
        other.trim(),
        "results ok",
    )?;
    let cgroup = limited.cgroup()?;
    let current = card0_line(&cgroup, "dmem.current")?;
    tap.note(format!("the limited container's dmem.current: {current}"));
    check_eq("dmem.current", current, format!("emuv/emuv {GIB}"))?;
    let mut args = vec!["emuv-smi"];
    args.extend_from_slice(&APPS);
    args.push("0");
    let inside = limited.exec(&args)?;
    check_eq(
        "what NVML reports for the container",
        compute_apps(&text(&inside.stdout)),
        vec![(1, GIB / MIB)],
    )?;
    let raise = limited.exec(&["sh", "-c", "echo 'emuv/emuv max' > /sys/fs/cgroup/dmem.max"])?;
    check(!raise.status.success(), || {
        "the container raised its own dmem.max".to_owned()
    })?;
    tap.note(format!(
        "raising it from inside: {}",
        text(&raise.stderr).trim()
    ));
    check_eq(
        "dmem.max after the attempt",
        card0_line(&cgroup, "dmem.max")?,
        format!("emuv/emuv {GIB}"),
    )
}

/// Card 0's line of one of a cgroup's dmem files.
fn card0_line(cgroup: &Path, file: &str) -> Result<String, String> {
    let text = fs::read_to_string(cgroup.join(file)).map_err(err(file))?;
    text.lines()
        .find(|l| l.starts_with("emuv/emuv "))
        .map(str::to_owned)
        .ok_or_else(|| format!("{file} has no emuv/emuv: {text:?}"))
}

fn spec_regenerated_while_running() -> TestResult {
    let holder = Holder::start("emuv-respec", &["--device", "emuv.dev/gpu=0"], &["32"])?;
    generate(&[], SPEC)?;
    let host = host_uuids()?;
    let listing = in_container_ok(&["--device", "emuv.dev/gpu=0"], &["emuv-smi", "-L"])?;
    check_eq(
        "a new container after the regeneration",
        smi_uuids(&listing),
        vec![host[0].clone()],
    )?;
    let still = holder.exec(&["emuv-smi", "-L"])?;
    check(still.status.success(), || {
        describe("the running container's emuv-smi", &still)
    })?;
    check_eq(
        "the running container keeps its card",
        smi_uuids(&text(&still.stdout)),
        vec![host[0].clone()],
    )
}

fn card_lost_while_mapped() -> TestResult {
    let holder = Holder::start("emuv-lost", &["--device", "emuv.dev/gpu=1"], &["16"])?;
    let lost = fs::write("/sys/class/emuv/emuv1/fail", "lost").map_err(err("fail=lost"));
    let code = holder.wait();
    drop(holder);
    let restored = fs::write("/sys/class/emuv/emuv1/fail", "none").map_err(err("fail=none"));
    lost?;
    check_eq("the container's exit code (128 + SIGBUS)", code?, 128 + 7)?;
    restored?;
    let dev = Device::open().map_err(err("open card 0"))?;
    dev.alloc(8 * MIB, Tier::Any)
        .map_err(err("card 0 after card 1 was lost"))?;
    check_eq("host cards after the loss", host_uuids()?.len(), 4)
}

fn stale_spec(tap: &Tap) -> TestResult {
    let dir = Path::new("/sys/kernel/config/emuv/emuv-stale");
    fs::create_dir(dir).map_err(err("mkdir configfs card"))?;
    let made = (|| {
        fs::write(dir.join("physical_vram_mb"), "256").map_err(err("physical_vram_mb"))?;
        fs::write(dir.join("enabled"), "1").map_err(err("enabled"))?;
        generate(&[], SPEC)?;
        let index = fs::read_to_string(dir.join("index")).map_err(err("index"))?;
        let listing = in_container_ok(&["--device", "emuv.dev/gpu=4"], &["emuv-smi", "-L"])?;
        check_eq("the new card in a container", smi_uuids(&listing).len(), 1)?;
        Ok::<_, String>(index.trim().to_owned())
    })();
    let _ = fs::write(dir.join("enabled"), "0");
    let _ = fs::remove_dir(dir);
    let index = made?;
    let refused = in_container(&["--device", "emuv.dev/gpu=4"], &["emuv-smi", "-L"])?;
    let message = text(&refused.stderr);
    let node = format!("/dev/emuv{index}");
    check(!refused.status.success() && message.contains(&node), || {
        describe("a container asking for the removed card", &refused)
    })?;
    tap.note(format!("podman on the removed card: {}", message.trim()));
    let listing = in_container_ok(&["--device", "emuv.dev/gpu=0"], &["emuv-smi", "-L"])?;
    check_eq(
        "card 0 still goes into containers",
        smi_uuids(&listing).len(),
        1,
    )?;
    generate(&[], SPEC)
}

/// containerd 2.1, started for the tests with its state in memory and the image imported
/// from the chroot's root filesystem; stopped on drop.
fn cri_one_card(tap: &Tap, containerd: &Containerd) -> TestResult {
    let version = containerd.cri.version()?;
    tap.note(format!(
        "CRI: {} {} (API {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    ));
    let host = host_uuids()?;
    let pod = Pod::start(containerd, "emuv-one", &["emuv.dev/gpu=1"], &[], &["64"])?;
    check_eq("its allocation", pod.results()?, vec!["ok".to_owned()])?;
    let listing = pod.exec(&["emuv-smi", "-L"])?;
    check_eq(
        "the cards the pod's emuv-smi lists",
        smi_uuids(&listing),
        vec![host[1].clone()],
    )?;
    let mut args = vec!["emuv-smi"];
    args.extend_from_slice(&APPS);
    args.push("0");
    check_eq(
        "the pod's own view of its process",
        compute_apps(&pod.exec(&args)?),
        vec![(1, 64)],
    )?;
    let pid = pod.host_pid()?;
    let card1 = Device::open_path("/dev/emuv1", false).map_err(err("open card 1"))?;
    let listed = card1.processes().map_err(err("PROCESSES"))?;
    check(
        listed
            .iter()
            .any(|p| p.pid == Some(pid) && p.bytes == 64 * MIB),
        || format!("host PID {pid} with 64 MiB not among {listed:?}"),
    )?;
    containerd.cri.stop_container(pod.id()?)?;
    let start = Instant::now();
    while card1.info().map_err(err("INFO"))?.used != 0 && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    check_eq(
        "card 1's used memory after StopContainer",
        card1.info().map_err(err("INFO"))?.used,
        0,
    )
}

fn cri_quota(containerd: &Containerd) -> TestResult {
    let pod = Pod::start(
        containerd,
        "emuv-quota",
        &["emuv.dev/gpu=2"],
        &[("dmem.max", "emuv/emuv2 268435456")],
        &["200", "100", "56"],
    )?;
    check_eq(
        "200 MiB, 100 MiB past the 256 MiB limit, then 56 MiB",
        pod.results()?,
        vec!["ok".to_owned(), "ENOMEM".to_owned(), "ok".to_owned()],
    )
}

fn cri_unknown_device(containerd: &Containerd) -> TestResult {
    let pod = Pod::start(containerd, "emuv-unknown", &["emuv.dev/gpu=9"], &[], &["1"])?;
    let refused = pod.id().err().unwrap_or_default();
    check(refused.contains("emuv.dev/gpu=9"), || {
        format!(
            "CreateContainer with an unknown CDI device: {:?}",
            pod.container
        )
    })?;
    drop(pod);
    let ok = Pod::start(containerd, "emuv-after", &["emuv.dev/gpu=0"], &[], &["1"])?;
    check_eq(
        "a pod after the refusal",
        ok.results()?,
        vec!["ok".to_owned()],
    )
}

/// `emuv_containers alloc [--hold] MIB...` inside a container.
fn alloc_main(args: &[String]) -> ! {
    let hold = args.first().is_some_and(|a| a == "--hold");
    let sizes = &args[usize::from(hold)..];
    let mut nodes: Vec<PathBuf> = fs::read_dir("/dev")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    nodes.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("emuv"))
    });
    nodes.sort();
    let Some(dev) = nodes.first().and_then(|n| Device::open_path(n, true).ok()) else {
        println!("cannot open an emuv node among {nodes:?}");
        std::process::exit(1)
    };
    let mut words = Vec::new();
    let mut first = None;
    for size in sizes {
        match dev.alloc(size.parse::<u64>().unwrap_or(0) * MIB, Tier::Any) {
            Ok(a) => {
                first.get_or_insert(a);
                words.push("ok".to_owned());
            }
            Err(e) => words.push(format!("{e:?}")),
        }
    }
    println!("results {}", words.join(" "));
    if !hold {
        std::process::exit(0)
    }
    let Some(mut map) = first.and_then(|a| dev.map(&a).ok()) else {
        println!("cannot map");
        std::process::exit(1)
    };
    println!("holding");
    let _ = std::io::stdout().flush();
    let mut round = 0u8;
    loop {
        // Touched again and again, so that a lost card's SIGBUS arrives.
        map.as_mut_slice()
            .iter_mut()
            .step_by(4096)
            .for_each(|b| *b = round);
        round = round.wrapping_add(1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// podman's 8 tests and containerd's 3.
const PLANNED: usize = 11;

fn containerd_tests(tap: &mut Tap, dmem: bool) {
    let names = [
        "containerd 2.1 through CRI: CDI_devices [emuv.dev/gpu=1] gives a pod exactly card 1; the host lists its process under its host PID; StopContainer frees it",
        "containerd through CRI: LinuxContainerResources.unified dmem.max=256 MiB, ENOMEM past it",
        "containerd through CRI: a CDI name no spec has fails CreateContainer naming it; the next pod runs",
    ];
    let containerd = match Containerd::start() {
        Ok(c) => c,
        Err(e) => {
            for name in names {
                tap.test(name, Err(e.clone()));
            }
            return;
        }
    };
    let one = cri_one_card(tap, &containerd);
    if one.is_err() {
        tap.note(format!("containerd's log:\n{}", containerd.log()));
    }
    tap.test(names[0], one);
    if dmem {
        tap.test(names[1], cri_quota(&containerd));
    } else {
        tap.skip(
            names[1],
            "this kernel has no dmem cgroup controller (CONFIG_CGROUP_DMEM)",
        );
    }
    tap.test(names[2], cri_unknown_device(&containerd));
}

/// One test: its TAP line's name and what it runs.
type TestFn = dyn Fn(&Tap) -> TestResult;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "alloc") {
        alloc_main(&args[1..]);
    }
    if args.first().is_some_and(|a| a == "cri-version") {
        match Cri::connect(Path::new(&args[1])).and_then(|c| c.version()) {
            Ok(v) => println!("{v:?}"),
            Err(e) => println!("{e}"),
        }
        std::process::exit(0)
    }
    let mut tap = Tap::new(PLANNED);
    let podman_version = Command::new("podman").arg("--version").output();
    let Ok(version) = podman_version else {
        for _ in 0..PLANNED {
            tap.skip("podman", "podman is not installed in this guest");
        }
        tap.finish()
    };
    tap.note(text(&version.stdout).trim());
    let dmem = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "dmem"));
    let result = module::with_loaded(CARDS, || {
        generate(&[], SPEC)?;
        let tests: [(&str, &TestFn); 7] = [
            ("podman --device emuv.dev/gpu=1: emuv-smi -L and pynvml list exactly card 1, as GPU 0", &|_| one_card_by_index()),
            ("podman --device emuv.dev/gpu=all lists every card; by UUID and two by index too", &|_| all_cards_and_by_uuid()),
            ("podman --device nvidia.com/gpu=2 under --kind nvidia.com/gpu, through nvidia-smi", &|_| nvidia_kind()),
            ("a container's allocation: the host lists it under its host PID, the container under PID 1; podman kill frees it", &processes_by_namespace),
            ("the spec regenerated while a container runs: the running one keeps its card, new ones start", &|_| spec_regenerated_while_running()),
            ("a card lost while a container maps it: SIGBUS in the container, the host unharmed", &|_| card_lost_while_mapped()),
            ("a stale spec naming a removed card: podman refuses it naming the node, other cards unaffected", &stale_spec),
        ];
        // EMUV_CONTAINERS_ONLY=containerd: containerd's tests only (while working on them).
        let only_containerd =
            std::env::var("EMUV_CONTAINERS_ONLY").is_ok_and(|v| v == "containerd");
        for (name, test) in tests {
            if only_containerd {
                tap.skip(name, "EMUV_CONTAINERS_ONLY=containerd");
                continue;
            }
            tap.test(name, test(&tap));
        }
        let name = "podman --cgroup-conf dmem.max: 1 GiB of a 4 GiB card, ENOMEM past it while another container allocates 2 GiB; dmem.current = NVML's count; the container cannot raise it";
        if only_containerd {
            tap.skip(name, "EMUV_CONTAINERS_ONLY=containerd");
        } else if dmem {
            tap.test(name, dmem_quota(&tap));
        } else {
            tap.skip(
                name,
                "this kernel has no dmem cgroup controller (CONFIG_CGROUP_DMEM)",
            );
        }
        containerd_tests(&mut tap, dmem);
        Ok(())
    });
    if let Err(e) = result {
        tap.test("loading emuv for the container tests", Err(e));
    }
    let _ = fs::remove_file(SPEC);
    tap.finish()
}
