// SPDX-License-Identifier: GPL-2.0
//! emuv's cards in Kubernetes, in the guest whose root is the Debian sid chroot
//! (`scripts/containers.sh`): `emuv-device-plugin` against a harness playing kubelet's device
//! manager (`tests/src/kubelet.rs`: no kubelet can be built or fetched here), its allocations
//! handed to a real containerd 2.1 through CRI as kubelet does; `emuv-exporter` scraped by a
//! real Prometheus 3.5 and checked with `promtool`.
//!
//! - Registration (`v1beta1`, `nvidia.com/gpu`, its own socket); `ListAndWatch` lists the four
//!   cards by UUID, healthy.
//! - Pods asking 1 and 2 cards: `GetPreferredAllocation` picks the cards with the most free
//!   memory; `Allocate`'s CDI names (CRI field and annotation) reach containerd, and each pod's
//!   `emuv-smi` lists exactly its cards. A second plugin (`emuv.dev/gpu`, device specs for
//!   runtimes without CDI) gives a pod its card through the node, mounts and environment.
//! - The exporter: `promtool check metrics`; dashboard 12239's framebuffer query through
//!   Prometheus' API returns what NVML (pynvml on emuv's NVML) reports on four cards holding
//!   memory; pod labels from the pod resources socket; a lost card's Xid is 79.
//! - Health: a lost card `Unhealthy` within 1 s, `Healthy` within 1 s of its recovery; a configfs
//!   card appears as a device and goes.
//! - Bad requests get gRPC errors; garbage on the socket is survived; a kubelet restart is
//!   followed by a new registration; 100 random restart/allocate/lose/prefer cycles leave no
//!   leaked socket, stream or file descriptor.

use emuv::{Device, Tier};
use emuv_tests::{
    containerd::{describe, host_uuids, text, Containerd, Pod},
    err,
    kubelet::{Kubelet, CHECKPOINT},
    module, smi_uuids,
    tap::{check, check_eq, Tap},
    tool,
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const MIB: u64 = 1 << 20;
/// Four 4 GiB lazy cards: nothing is touched but the pages a test writes.
const CARDS: &str =
    "gpu_count=4 gpu_model=4090 physical_vram_mb=4096 virtual_vram_mb=0 lazy_allocation=1";
const SPEC: &str = "/var/run/cdi/emuv.json";
const KUBELET_DIR: &str = "/tmp/emuv-podman/kubelet";
const RESOURCE: &str = "nvidia.com/gpu";
const EMUV_RESOURCE: &str = "emuv.dev/gpu";
/// The first plugin's socket: its default for nvidia.com/gpu.
const PLUGIN_SOCKET: &str = "emuv-nvidia.com-gpu.sock";
const EXPORTER: &str = "127.0.0.1:9400";
const PROMETHEUS: &str = "127.0.0.1:9090";
/// What the issue asks of health changes.
const HEALTH_DEADLINE: Duration = Duration::from_secs(1);

type TestResult = Result<(), String>;

fn plugin_dir() -> PathBuf {
    Path::new(KUBELET_DIR).join("device-plugins")
}

fn pod_resources() -> PathBuf {
    Path::new(KUBELET_DIR).join("pod-resources/kubelet.sock")
}

fn sysfs(kernel_index: u32) -> PathBuf {
    match kernel_index {
        0 => PathBuf::from("/sys/class/emuv/emuv"),
        i => PathBuf::from(format!("/sys/class/emuv/emuv{i}")),
    }
}

fn set_fail(kernel_index: u32, state: &str) -> TestResult {
    fs::write(sysfs(kernel_index).join("fail"), state)
        .map_err(err(&format!("card {kernel_index} fail={state}")))
}

/// A program of ours running in the background; its stderr in a log; SIGTERM on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(program: &Path, args: &[&str], log: &Path) -> Result<Self, String> {
        let file = fs::File::create(log).map_err(err("log"))?;
        let child = Command::new(program)
            .args(args)
            .stdout(file.try_clone().map_err(err("log"))?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .map_err(err(&program.display().to_string()))?;
        Ok(Daemon {
            child,
            log: log.to_path_buf(),
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Running (not exited, not a zombie waiting to be reaped).
    fn alive(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(state != 'Z' && state != 'X')
            })
            .unwrap_or(false)
    }

    fn fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn threads(&self) -> usize {
        fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGTERM, and its exit status.
    fn stop(&mut self) -> Result<std::process::ExitStatus, String> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Ok(status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                return Err("did not exit within 10 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.stop();
        }
    }
}

fn start_plugin(name: &str, args: &[&str]) -> Result<Daemon, String> {
    let dir = plugin_dir();
    let dir = dir.display().to_string();
    let mut all = vec!["--plugin-dir", &dir];
    all.extend_from_slice(args);
    Daemon::start(
        &tool("emuv-device-plugin"),
        &all,
        &Path::new(KUBELET_DIR).join(format!("{name}.log")),
    )
}

/// The files in the plugin directory.
fn plugin_files() -> BTreeSet<String> {
    fs::read_dir(plugin_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

struct Ctx {
    kubelet: Kubelet,
    plugin: Daemon,
    containerd: Result<Containerd, String>,
    uuids: Vec<String>,
    /// The plugin's file descriptors and threads once it has registered.
    baseline: (usize, usize),
}

fn all_healthy(n: usize) -> impl Fn(&[emuv_kubernetes::api::deviceplugin::Device]) -> bool {
    move |d| d.len() == n && d.iter().all(|d| d.health == "Healthy")
}

fn registration(tap: &Tap, ctx: &mut Ctx) -> TestResult {
    ctx.kubelet
        .wait_registration(RESOURCE, 0, Duration::from_secs(30))?;
    let (socket, _) = ctx.kubelet.endpoint(RESOURCE).ok_or("no endpoint")?;
    check_eq("its endpoint", socket, plugin_dir().join(PLUGIN_SOCKET))?;
    let log = ctx.kubelet.log().join("\n");
    check(
        log.contains(
            "Register version=v1beta1 endpoint=emuv-nvidia.com-gpu.sock resource=nvidia.com/gpu",
        ) && log.contains("get_preferred_allocation_available: true"),
        || format!("the registration: {log}"),
    )?;
    ctx.kubelet
        .wait_devices(RESOURCE, Duration::from_secs(10), all_healthy(4))?;
    let ids: Vec<String> = ctx
        .kubelet
        .devices(RESOURCE)
        .into_iter()
        .map(|d| d.id)
        .collect();
    check_eq("the devices, by UUID", ids, ctx.uuids.clone())?;
    ctx.baseline = (ctx.plugin.fds(), ctx.plugin.threads());
    tap.note(format!(
        "the plugin: {} file descriptors, {} threads",
        ctx.baseline.0, ctx.baseline.1
    ));
    Ok(())
}

fn containerd(ctx: &Ctx) -> Result<&Containerd, String> {
    ctx.containerd.as_ref().map_err(Clone::clone)
}

fn cdi_pods(tap: &Tap, ctx: &mut Ctx) -> TestResult {
    let containerd = containerd(ctx)?;
    // Card 0 busier than the others: the preference goes to the next one.
    let card0 = Device::open_path("/dev/emuv", true).map_err(err("open card 0"))?;
    card0
        .alloc(100 * MIB, Tier::Any)
        .map_err(err("100 MiB on card 0"))?;
    let (chosen, edits) = ctx
        .kubelet
        .admit("emuv-test", "one-gpu", "main", RESOURCE, 1)?;
    check_eq(
        "the preferred card",
        chosen.clone(),
        vec![ctx.uuids[1].clone()],
    )?;
    check_eq(
        "the CDI names",
        edits.cdi_devices.clone(),
        vec![format!("emuv.dev/gpu={}", ctx.uuids[1])],
    )?;
    check_eq(
        "the CDI annotation",
        edits
            .annotations
            .get("cdi.k8s.io/emuv-device-plugin_nvidia.com-gpu")
            .cloned(),
        Some(format!("emuv.dev/gpu={}", ctx.uuids[1])),
    )?;
    let pod = Pod::start_with(containerd, "k8s-one", &edits, &["64"])?;
    check_eq("its allocation", pod.results()?, vec!["ok".to_owned()])?;
    check_eq(
        "the cards the pod's emuv-smi lists",
        smi_uuids(&pod.exec(&["emuv-smi", "-L"])?),
        chosen,
    )?;
    let (two, edits) = ctx
        .kubelet
        .admit("emuv-test", "two-gpus", "main", RESOURCE, 2)?;
    check_eq(
        "two cards, the held one left out",
        two.clone(),
        vec![ctx.uuids[2].clone(), ctx.uuids[3].clone()],
    )?;
    let pod2 = Pod::start_with(containerd, "k8s-two", &edits, &["32"])?;
    check_eq(
        "the cards the second pod lists",
        smi_uuids(&pod2.exec(&["emuv-smi", "-L"])?),
        two,
    )?;
    drop((pod, pod2));
    ctx.kubelet.forget("one-gpu");
    ctx.kubelet.forget("two-gpus");
    for line in ctx.kubelet.log().iter().filter(|l| l.contains("admitted")) {
        tap.note(line);
    }
    Ok(())
}

fn device_specs_pod(ctx: &mut Ctx) -> TestResult {
    let containerd = containerd(ctx)?;
    let before = ctx.kubelet.registrations();
    let mut second = start_plugin(
        "plugin-emuv",
        &[
            "--resource-name",
            EMUV_RESOURCE,
            "--device-list-strategy",
            "device-specs",
        ],
    )?;
    ctx.kubelet
        .wait_registration(EMUV_RESOURCE, before, Duration::from_secs(30))
        .map_err(|e| format!("{e}\n{}", second.log()))?;
    ctx.kubelet
        .wait_devices(EMUV_RESOURCE, Duration::from_secs(10), all_healthy(4))?;
    let (chosen, edits) = ctx
        .kubelet
        .admit("emuv-test", "no-cdi", "main", EMUV_RESOURCE, 1)?;
    check(
        edits.cdi_devices.is_empty() && edits.annotations.is_empty(),
        || format!("no CDI for device specs: {edits:?}"),
    )?;
    check(
        edits
            .envs
            .contains(&("NVIDIA_VISIBLE_DEVICES".into(), "void".into())),
        || format!("the environment: {:?}", edits.envs),
    )?;
    check(
        edits
            .mounts
            .iter()
            .any(|(c, _, ro)| c == "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1" && *ro),
        || format!("NVML among the mounts: {:?}", edits.mounts),
    )?;
    check(plugin_files().contains("emuv-emuv.dev-gpu.sock"), || {
        format!("the second plugin's socket among {:?}", plugin_files())
    })?;
    // A second plugin of the same resource finds its socket served and leaves it alone.
    let out = Command::new(tool("emuv-device-plugin"))
        .args(["--plugin-dir", &plugin_dir().display().to_string()])
        .output()
        .map_err(err("a third plugin"))?;
    check(
        out.status.code() == Some(2) && text(&out.stderr).contains("served by another process"),
        || describe("a plugin whose socket is taken", &out),
    )?;
    check(
        ctx.kubelet.endpoint(RESOURCE).is_some() && ctx.plugin.alive(),
        || "the first plugin lost its endpoint".to_owned(),
    )?;
    let pod = Pod::start_with(containerd, "k8s-no-cdi", &edits, &["16"])?;
    check_eq("its allocation", pod.results()?, vec!["ok".to_owned()])?;
    check_eq(
        "the cards the pod's emuv-smi lists",
        smi_uuids(&pod.exec(&["emuv-smi", "-L"])?),
        chosen,
    )?;
    drop(pod);
    ctx.kubelet.forget("no-cdi");
    let status = second.stop()?;
    check(status.success(), || {
        format!("the second plugin exited {status}")
    })?;
    let files = plugin_files();
    // The stopped plugin removed its socket; the first one's is still there.
    check_eq(
        "the plugin directory after SIGTERM",
        files,
        BTreeSet::from([
            CHECKPOINT.to_owned(),
            PLUGIN_SOCKET.to_owned(),
            "kubelet.sock".to_owned(),
        ]),
    )
}

/// A plain HTTP/1.0 GET (the response is not chunked then): status and body.
fn http_get(address: &str, path: &str) -> Result<(u32, String), String> {
    let mut stream = TcpStream::connect(address).map_err(err(address))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err("timeout"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").map_err(err("request"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(err("response"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's answer: each series' labels and value.
type Series = Vec<(BTreeMap<String, String>, f64)>;

/// An instant query through Prometheus' HTTP API.
fn query(promql: &str) -> Result<Series, String> {
    let (status, body) = http_get(
        PROMETHEUS,
        &format!("/api/v1/query?query={}", url_encode(promql)),
    )?;
    check(status == 200, || format!("{promql}: HTTP {status}: {body}"))?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(err("query JSON"))?;
    let series = json["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("{promql}: {body}"))?;
    series
        .iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            let value = s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{promql}: no value in {s}"))?;
            Ok((labels, value))
        })
        .collect()
}

/// Waits until `promql` gives something `done` accepts.
fn query_until(
    promql: &str,
    timeout: Duration,
    done: impl Fn(&[(BTreeMap<String, String>, f64)]) -> bool,
) -> Result<Series, String> {
    let start = Instant::now();
    loop {
        let result = query(promql);
        match &result {
            Ok(r) if done(r) => return result,
            _ if start.elapsed() > timeout => {
                return Err(format!("{promql} after {timeout:?}: {result:?}"))
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// NVML's view through pynvml on emuv's NVML: index → (UUID, used MiB, free MiB); lost cards
/// are left out.
fn nvml_memory() -> Result<BTreeMap<u32, (String, u64, u64)>, String> {
    let script = "import pynvml as n\n\
        n.nvmlInit()\n\
        for i in range(n.nvmlDeviceGetCount()):\n\
        \x20   h = n.nvmlDeviceGetHandleByIndex(i)\n\
        \x20   try:\n\
        \x20       m = n.nvmlDeviceGetMemoryInfo(h)\n\
        \x20       print(i, n.nvmlDeviceGetUUID(h), m.used // 2**20, m.free // 2**20)\n\
        \x20   except n.NVMLError as e:\n\
        \x20       print(i, 'error', e)\n";
    let rootfs = emuv_tests::containerd::image();
    let out = Command::new("python3")
        .args(["-c", script])
        .env(
            "PYTHONPATH",
            format!("{rootfs}/usr/lib/python3/dist-packages"),
        )
        .env("LD_LIBRARY_PATH", emuv_tests::target_dir().join("nvml"))
        .output()
        .map_err(err("python3"))?;
    check(out.status.success(), || describe("pynvml", &out))?;
    let mut cards = BTreeMap::new();
    for line in text(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [i, uuid, used, free] = f[..] {
            if let (Ok(i), Ok(used), Ok(free)) = (i.parse(), used.parse(), free.parse()) {
                cards.insert(i, (uuid.to_owned(), used, free));
            }
        }
    }
    Ok(cards)
}

fn prometheus_config(dir: &Path) -> Result<PathBuf, String> {
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: emuv\n    static_configs:\n      - targets: ['{EXPORTER}']\n"
        ),
    )
    .map_err(err("prometheus.yml"))?;
    Ok(config)
}

fn exporter_and_prometheus(tap: &Tap, ctx: &mut Ctx) -> TestResult {
    // Four cards holding 100, 200, 300 and 400 MiB; one pod holds a card.
    let mut held = Vec::new();
    for (i, mib) in [(0u32, 100u64), (1, 200), (2, 300), (3, 400)] {
        let node = match i {
            0 => "/dev/emuv".to_owned(),
            i => format!("/dev/emuv{i}"),
        };
        let dev = Device::open_path(node, true).map_err(err("open"))?;
        dev.alloc(mib * MIB, Tier::Any).map_err(err("alloc"))?;
        held.push(dev);
    }
    let (trainer, _) = ctx.kubelet.admit("ml", "trainer-0", "main", RESOURCE, 1)?;
    let dir = Path::new(KUBELET_DIR);
    let podres = pod_resources().display().to_string();
    let _exporter = Daemon::start(
        &tool("emuv-exporter"),
        &[
            "--address",
            EXPORTER,
            "--pod-resources-socket",
            &podres,
            "--hostname",
            "emuv-node",
        ],
        &dir.join("exporter.log"),
    )?;
    let start = Instant::now();
    let metrics = loop {
        match http_get(EXPORTER, "/metrics") {
            Ok((200, body)) => break body,
            other if start.elapsed() > Duration::from_secs(30) => {
                return Err(format!("the exporter: {other:?}\n{}", _exporter.log()))
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err("promtool"))?;
    promtool
        .stdin
        .take()
        .ok_or("promtool stdin")?
        .write_all(metrics.as_bytes())
        .map_err(err("promtool stdin"))?;
    let checked = promtool.wait_with_output().map_err(err("promtool"))?;
    // promtool parses the exposition (exit 1 on a format error) and lints it (exit 3 on
    // findings). dcgm-exporter's own names break two lint rules, and dashboards depend on
    // them: its label names (UUID, modelName, Hostname, DCGM_FI_DRIVER_VERSION) are not
    // snake_case, and its ECC counters end in _TOTAL rather than _total. Those are allowed;
    // any other finding fails.
    let findings = text(&checked.stderr);
    let inherent = |line: &str| {
        line.ends_with("label names should be written in 'snake_case' not 'camelCase'")
            || (line.ends_with("counter metrics should have \"_total\" suffix")
                && line
                    .split_whitespace()
                    .next()
                    .is_some_and(|m| m.ends_with("_TOTAL")))
    };
    let other: Vec<&str> = findings.lines().filter(|l| !inherent(l)).collect();
    check(
        matches!(checked.status.code(), Some(0 | 3)) && other.is_empty(),
        || describe("promtool check metrics", &checked),
    )?;
    tap.note(format!(
        "promtool check metrics: exit {:?}, {} findings, all from dcgm-exporter's names",
        checked.status.code(),
        findings.lines().count()
    ));
    let sample: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("DCGM_FI_DEV_FB_USED"))
        .take(3)
        .collect();
    tap.note(format!("the exposition has:\n{}", sample.join("\n")));

    let data = dir.join("prometheus");
    let _ = fs::remove_dir_all(&data);
    let config = prometheus_config(dir)?;
    let prometheus = Daemon::start(
        Path::new("/usr/bin/prometheus"),
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address={PROMETHEUS}"),
        ],
        &dir.join("prometheus.log"),
    )?;
    // Dashboard 12239's "GPU Framebuffer Mem Used" panel, its variables at "All".
    let panel = r#"DCGM_FI_DEV_FB_USED{instance=~".*", gpu=~".*"}"#;
    let mut series =
        query_until(panel, Duration::from_secs(120), |r| r.len() == 4).map_err(|e| {
            format!(
                "{e}\nprometheus:\n{}",
                prometheus
                    .log()
                    .lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
    series.sort_by_key(|(labels, _)| labels["gpu"].parse::<u32>().unwrap_or(u32::MAX));
    let nvml = nvml_memory()?;
    let mut table = vec![
        "gpu UUID                                     FB_USED  NVML used  FB_FREE  NVML free"
            .to_owned(),
    ];
    let free = query("DCGM_FI_DEV_FB_FREE")?;
    for (labels, value) in &series {
        let gpu: u32 = labels["gpu"].parse().map_err(err("gpu label"))?;
        let (uuid, used, nvml_free) = nvml
            .get(&gpu)
            .ok_or_else(|| format!("NVML has no GPU {gpu}"))?;
        check_eq("the UUID label", &labels["UUID"], uuid)?;
        check_eq(
            &format!("GPU {gpu}'s FB_USED against NVML"),
            *value as u64,
            *used,
        )?;
        let fb_free = free
            .iter()
            .find(|(l, _)| l["gpu"] == labels["gpu"])
            .map(|(_, v)| *v as u64)
            .ok_or("no FB_FREE")?;
        check_eq(
            &format!("GPU {gpu}'s FB_FREE against NVML"),
            fb_free,
            *nvml_free,
        )?;
        check_eq(
            "modelName",
            labels["modelName"].as_str(),
            "NVIDIA GeForce RTX 4090",
        )?;
        check_eq("Hostname", labels["Hostname"].as_str(), "emuv-node")?;
        table.push(format!(
            "{gpu}   {uuid} {value:7}  {used:9}  {fb_free:7}  {nvml_free:9}"
        ));
    }
    let used: Vec<u64> = (0..4)
        .map(|g| nvml.get(&g).map(|c| c.1).unwrap_or(0))
        .collect();
    check(
        used.windows(2).all(|w| w[0] < w[1]) && used[0] >= 100 && used[3] < 500,
        || format!("the cards hold 100 < 200 < 300 < 400 MiB: {used:?}"),
    )?;
    tap.note(format!("{panel}:\n{}", table.join("\n")));
    let pods = query(r#"DCGM_FI_DEV_FB_USED{pod!=""}"#)?;
    check(
        pods.len() == 1
            && pods[0].0["pod"] == "trainer-0"
            && pods[0].0["namespace"] == "ml"
            && pods[0].0["container"] == "main"
            && pods[0].0["UUID"] == trainer[0],
        || format!("the pod's card ({trainer:?}): {pods:?}"),
    )?;
    let sum = query("sum(DCGM_FI_DEV_FB_USED)")?;
    tap.note(format!(
        "sum(DCGM_FI_DEV_FB_USED) = {:?}; the pod's card: {:?}",
        sum.first().map(|s| s.1),
        pods.first().map(|p| (&p.0["pod"], &p.0["gpu"], p.1))
    ));
    // A card lost: its Xid is 79, its framebuffer no longer read.
    set_fail(3, "lost")?;
    let lost = query_until(
        r#"DCGM_FI_DEV_XID_ERRORS{gpu="3"}"#,
        Duration::from_secs(60),
        |r| r.len() == 1 && r[0].1 == 79.0,
    );
    let gone = lost.as_ref().map_err(Clone::clone).and_then(|_| {
        query_until(
            r#"DCGM_FI_DEV_FB_USED{gpu="3"}"#,
            Duration::from_secs(60),
            |r| r.is_empty(),
        )
    });
    let xids = query("DCGM_FI_DEV_XID_ERRORS");
    let used_while_lost = query(panel);
    // A lost card comes back only once nothing holds memory on it (EBUSY before).
    drop(held);
    set_fail(3, "none")?;
    lost?;
    gone?;
    let xids = xids?;
    let mut used_while_lost: Vec<(String, f64)> = used_while_lost?
        .iter()
        .map(|(l, v)| (l["gpu"].clone(), *v))
        .collect();
    used_while_lost.sort_by(|a, b| a.0.cmp(&b.0));
    tap.note(format!("with card 3 lost, {panel}: {used_while_lost:?}"));
    let mut xids: Vec<(String, f64)> = xids.iter().map(|(l, v)| (l["gpu"].clone(), *v)).collect();
    xids.sort_by(|a, b| a.0.cmp(&b.0));
    tap.note(format!(
        "with card 3 lost, DCGM_FI_DEV_XID_ERRORS: {xids:?}"
    ));
    ctx.kubelet.forget("trainer-0");
    Ok(())
}

fn health(tap: &Tap, ctx: &mut Ctx) -> TestResult {
    let card2 = ctx.uuids[2].clone();
    set_fail(2, "lost")?;
    let id = card2.clone();
    let lost = ctx
        .kubelet
        .wait_devices(RESOURCE, Duration::from_secs(5), move |d| {
            d.iter().any(|d| d.id == id && d.health == "Unhealthy")
        });
    let refused = ctx.kubelet.allocate(RESOURCE, std::slice::from_ref(&card2));
    set_fail(2, "none")?;
    let lost = lost?;
    let id = card2.clone();
    let back = ctx
        .kubelet
        .wait_devices(RESOURCE, Duration::from_secs(5), move |d| {
            d.iter().any(|d| d.id == id && d.health == "Healthy")
        })?;
    tap.note(format!(
        "Unhealthy after {lost:?}, Healthy again after {back:?}"
    ));
    check(lost <= HEALTH_DEADLINE, || {
        format!("Unhealthy only after {lost:?}")
    })?;
    check(back <= HEALTH_DEADLINE, || {
        format!("Healthy only after {back:?}")
    })?;
    match refused {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(()),
        other => Err(format!("Allocate of the lost card: {other:?}")),
    }
}

fn configfs_card(ctx: &mut Ctx) -> TestResult {
    let dir = Path::new("/sys/kernel/config/emuv/k8s");
    fs::create_dir(dir).map_err(err("mkdir configfs card"))?;
    let made = (|| {
        for (attr, value) in [
            ("physical_vram_mb", "64"),
            ("virtual_vram_mb", "0"),
            ("enabled", "1"),
        ] {
            fs::write(dir.join(attr), value).map_err(err(attr))?;
        }
        let index: u32 = fs::read_to_string(dir.join("index"))
            .map_err(err("index"))?
            .trim()
            .parse()
            .map_err(err("index"))?;
        let uuid = emuv::gpus::list()
            .map_err(err("list"))?
            .into_iter()
            .find(|g| g.kernel_index == index)
            .map(|g| g.uuid())
            .ok_or("the new card is not listed")?;
        let id = uuid.clone();
        ctx.kubelet
            .wait_devices(RESOURCE, Duration::from_secs(5), move |d| {
                d.len() == 5 && d.iter().any(|d| d.id == id && d.health == "Healthy")
            })?;
        Ok::<_, String>(uuid)
    })();
    let _ = fs::write(dir.join("enabled"), "0");
    let removed = fs::remove_dir(dir).map_err(err("rmdir configfs card"));
    let uuid = made?;
    removed?;
    ctx.kubelet
        .wait_devices(RESOURCE, Duration::from_secs(5), move |d| {
            d.len() == 4 && !d.iter().any(|d| d.id == uuid)
        })?;
    Ok(())
}

/// Garbage on the plugin's socket: bytes that are no HTTP/2, then a hang-up.
fn garbage(seed: u64) -> TestResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stream = std::os::unix::net::UnixStream::connect(plugin_dir().join(PLUGIN_SOCKET))
        .map_err(err("connect"))?;
    let bytes: Vec<u8> = (0..rng.random_range(1..4096))
        .map(|_| rng.random())
        .collect();
    let _ = stream.write_all(&bytes);
    Ok(())
}

fn code<T>(r: Result<T, emuv_tests::kubelet::CallError>) -> Result<(), tonic::Code> {
    r.map(|_| ()).map_err(|s| s.code())
}

fn bad_requests(ctx: &mut Ctx) -> TestResult {
    let k = &ctx.kubelet;
    let real = ctx.uuids.clone();
    check_eq(
        "Allocate of an unknown ID",
        code(k.allocate(
            RESOURCE,
            &["GPU-00000000-0000-0000-0000-000000000000".into()],
        )),
        Err(tonic::Code::NotFound),
    )?;
    check_eq(
        "Allocate of a card twice",
        code(k.allocate(RESOURCE, &[real[0].clone(), real[0].clone()])),
        Err(tonic::Code::InvalidArgument),
    )?;
    let mut five = real.clone();
    five.push("GPU-\u{0}\n\u{7f}".repeat(500));
    check_eq(
        "Allocate of more cards than exist",
        code(k.allocate(RESOURCE, &five)),
        Err(tonic::Code::NotFound),
    )?;
    check_eq(
        "Allocate of nothing",
        code(k.allocate(RESOURCE, &[])),
        Err(tonic::Code::InvalidArgument),
    )?;
    check_eq(
        "GetPreferredAllocation of 5 out of 4",
        code(k.preferred(RESOURCE, &real, &[], 5)),
        Err(tonic::Code::InvalidArgument),
    )?;
    check_eq(
        "GetPreferredAllocation of -1",
        code(k.preferred(RESOURCE, &real, &[], -1)),
        Err(tonic::Code::InvalidArgument),
    )?;
    check_eq(
        "GetPreferredAllocation that must include an unavailable card",
        code(k.preferred(RESOURCE, &real[..2], &[real[3].clone()], 2)),
        Err(tonic::Code::InvalidArgument),
    )?;
    for seed in 0..20 {
        garbage(seed)?;
    }
    check_eq(
        "Allocate after all that",
        code(k.allocate(RESOURCE, &[real[0].clone()])),
        Ok(()),
    )?;
    check(ctx.plugin.alive(), || {
        format!("the plugin died: {}", ctx.plugin.log())
    })
}

fn kubelet_restart(tap: &Tap, ctx: &mut Ctx) -> TestResult {
    let before = ctx.kubelet.registrations();
    // A client that opens an HTTP/2 connection and never goes on: it must not keep the
    // plugin's old server from stopping, and so the plugin from registering again.
    let mut idle = std::os::unix::net::UnixStream::connect(plugin_dir().join(PLUGIN_SOCKET))
        .map_err(err("connect"))?;
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .map_err(err("preface"))?;
    ctx.kubelet.restart()?;
    let took = ctx
        .kubelet
        .wait_registration(RESOURCE, before, Duration::from_secs(10))?;
    ctx.kubelet
        .wait_devices(RESOURCE, Duration::from_secs(10), all_healthy(4))?;
    drop(idle);
    tap.note(format!(
        "registered again {took:?} after the restart, a stalled client connected"
    ));
    check_eq(
        "the plugin directory",
        plugin_files(),
        BTreeSet::from([
            CHECKPOINT.to_owned(),
            PLUGIN_SOCKET.to_owned(),
            "kubelet.sock".to_owned(),
        ]),
    )?;
    settle_streams(ctx, 1)
}

/// Waits until exactly `n` ListAndWatch streams are open.
fn settle_streams(ctx: &Ctx, n: usize) -> TestResult {
    let start = Instant::now();
    while ctx.kubelet.open_streams() != n && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    check_eq("ListAndWatch streams open", ctx.kubelet.open_streams(), n)
}

fn random_cycles(tap: &Tap, ctx: &mut Ctx) -> TestResult {
    let seed: u64 = std::env::var("EMUV_K8S_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(26);
    tap.note(format!("seed {seed} (EMUV_K8S_SEED replays it)"));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut lost = [false; 4];
    let mut counts = [0usize; 5];
    let result: TestResult = (|| {
        for cycle in 0..100 {
            let op = rng.random_range(0..5);
            counts[op] += 1;
            let at = |e: String| format!("cycle {cycle} (op {op}): {e}");
            match op {
                0 => {
                    let before = ctx.kubelet.registrations();
                    ctx.kubelet.restart().map_err(at)?;
                    ctx.kubelet
                        .wait_registration(RESOURCE, before, Duration::from_secs(10))
                        .map_err(at)?;
                }
                1 => {
                    let mut ids: Vec<String> = ctx
                        .uuids
                        .iter()
                        .filter(|_| rng.random_bool(0.5))
                        .cloned()
                        .collect();
                    if rng.random_bool(0.2) {
                        ids.push(format!("GPU-{}", rng.random::<u64>()));
                    }
                    if rng.random_bool(0.1) && !ids.is_empty() {
                        ids.push(ids[0].clone());
                    }
                    let unique: BTreeSet<&String> = ids.iter().collect();
                    let valid = !ids.is_empty()
                        && unique.len() == ids.len()
                        && ids.iter().all(|id| {
                            ctx.uuids
                                .iter()
                                .position(|u| u == id)
                                .is_some_and(|i| !lost[i])
                        });
                    let got = ctx.kubelet.allocate(RESOURCE, &ids);
                    check(got.is_ok() == valid, || {
                        at(format!("Allocate {ids:?} (lost {lost:?}): {got:?}"))
                    })?;
                }
                2 => {
                    let card = rng.random_range(0..4);
                    lost[card] = !lost[card];
                    set_fail(card as u32, if lost[card] { "lost" } else { "none" })?;
                    let want = lost;
                    let uuids = ctx.uuids.clone();
                    ctx.kubelet
                        .wait_devices(RESOURCE, Duration::from_secs(5), move |d| {
                            d.len() == 4
                                && d.iter().zip(&uuids).zip(want).all(|((d, u), lost)| {
                                    &d.id == u && (d.health == "Unhealthy") == lost
                                })
                        })
                        .map_err(at)?;
                }
                3 => {
                    let size = rng.random_range(-1..=5);
                    let got = ctx.kubelet.preferred(RESOURCE, &ctx.uuids, &[], size);
                    check(got.is_ok() == (0..=4).contains(&size), || {
                        at(format!("GetPreferredAllocation of {size}: {got:?}"))
                    })?;
                }
                _ => garbage(rng.random()).map_err(at)?,
            }
            check(ctx.plugin.alive(), || {
                at(format!("the plugin died: {}", ctx.plugin.log()))
            })?;
        }
        Ok(())
    })();
    for (card, is_lost) in lost.iter().enumerate() {
        if *is_lost {
            set_fail(card as u32, "none")?;
        }
    }
    result?;
    tap.note(format!(
        "restarts {}, allocations {}, losses/recoveries {}, preferences {}, garbage {}",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    ));
    ctx.kubelet
        .wait_devices(RESOURCE, Duration::from_secs(10), all_healthy(4))?;
    settle_streams(ctx, 1)?;
    check_eq(
        "the plugin directory",
        plugin_files(),
        BTreeSet::from([
            CHECKPOINT.to_owned(),
            PLUGIN_SOCKET.to_owned(),
            "kubelet.sock".to_owned(),
        ]),
    )?;
    // Allow for the connections of the moment; a leak of one per cycle is far above it.
    let (fds, threads) = (ctx.plugin.fds(), ctx.plugin.threads());
    tap.note(format!(
        "the plugin after the cycles: {fds} file descriptors (was {}), {threads} threads (was {})",
        ctx.baseline.0, ctx.baseline.1
    ));
    check(fds <= ctx.baseline.0 + 6, || {
        format!("{fds} file descriptors, {} at first", ctx.baseline.0)
    })?;
    check(threads <= ctx.baseline.1 + 2, || {
        format!("{threads} threads, {} at first", ctx.baseline.1)
    })
}

type TestFn = dyn Fn(&Tap, &mut Ctx) -> TestResult;

fn main() {
    let tests: [(&str, &TestFn); 9] = [
        ("device plugin: registers nvidia.com/gpu with kubelet (v1beta1, its own socket); ListAndWatch lists the 4 cards by UUID, healthy", &registration),
        ("pods asking nvidia.com/gpu 1 and 2: GetPreferredAllocation picks the least used cards; Allocate's CDI names reach containerd through CRI; each pod's emuv-smi lists exactly its cards", &cdi_pods),
        ("a second plugin (emuv.dev/gpu, device specs for runtimes without CDI): node, NVML mount and environment; the pod sees its card; SIGTERM removes its socket", &|_, c| device_specs_pod(c)),
        ("emuv-exporter: promtool check metrics passes; dashboard 12239's FB_USED query through Prometheus 3.5 = NVML's used and free on 4 cards; pod labels from pod resources; a lost card's Xid is 79", &exporter_and_prometheus),
        ("health: a lost card is Unhealthy in ListAndWatch within 1 s and Healthy within 1 s of its recovery; Allocate refuses it meanwhile", &health),
        ("a configfs card appears as a fifth device and goes when it is removed", &|_, c| configfs_card(c)),
        ("bad requests (unknown IDs, a card twice, more cards than exist, bad sizes) are gRPC errors; garbage on the socket is survived", &|_, c| bad_requests(c)),
        ("kubelet restart (every socket but the checkpoint deleted, a new kubelet.sock), a stalled client connected: the plugin serves a new socket and registers again; one stream", &kubelet_restart),
        ("100 random restart/allocate/lose/prefer/garbage cycles: no crash, no leaked socket, stream, file descriptor or thread", &random_cycles),
    ];
    let mut tap = Tap::new(tests.len());
    let Ok(version) = Command::new("prometheus").arg("--version").output() else {
        for (name, _) in tests {
            tap.skip(name, "Prometheus is not installed in this guest");
        }
        tap.finish()
    };
    tap.note(text(&version.stdout).lines().next().unwrap_or_default());
    let result = module::with_loaded(CARDS, || {
        let out = Command::new(tool("emuv-ctk"))
            .args(["cdi", "generate", "--output", SPEC])
            .output()
            .map_err(err("emuv-ctk"))?;
        check(out.status.success(), || {
            describe("emuv-ctk cdi generate", &out)
        })?;
        let _ = fs::remove_dir_all(KUBELET_DIR);
        let kubelet = Kubelet::start(&plugin_dir(), &pod_resources())?;
        let plugin = start_plugin("plugin", &[])?;
        let mut ctx = Ctx {
            kubelet,
            plugin,
            containerd: Containerd::start(),
            uuids: host_uuids()?,
            baseline: (0, 0),
        };
        for (name, test) in tests {
            let result = test(&tap, &mut ctx);
            if result.is_err() {
                tap.note(format!("the plugin's log:\n{}", ctx.plugin.log()));
                tap.note(format!(
                    "the harness's log:\n{}",
                    ctx.kubelet.log().join("\n")
                ));
            }
            tap.test(name, result);
        }
        let stopped = ctx.plugin.stop();
        check(matches!(stopped, Ok(s) if s.success()), || {
            format!("the plugin's exit on SIGTERM: {stopped:?}")
        })?;
        Ok(())
    });
    if let Err(e) = result {
        tap.test(
            "emuv loaded, the harness and the plugin started and stopped cleanly",
            Err(e),
        );
    }
    let _ = fs::remove_file(SPEC);
    tap.finish()
}
