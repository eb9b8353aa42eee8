// SPDX-License-Identifier: GPL-2.0
//! CUDA runtime programs on emulated cards, through emuv's libcudart.so.13 and .so.12 on emuv's
//! driver: a CUDA C program built with `nvcc -cudart shared` (tests/cudart/runtime_suite.cu), a C
//! program built against CUDA 12's headers (runtime12.c), NVIDIA's own runtime refused with a
//! clear message (nvidia_runtime.c), and PyTorch's CUDA 13 wheel, unchanged, run with emuv-run
//! (tests/torch/torch_suite.py): properties, memory, copies, a model's weights, running out of
//! memory with PyTorch's own message, both allocator back-ends, several cards, and a killed job
//! giving all its memory back.
//!
//! The programs are built by scripts/check.sh (target/cudart/); `EMUV_CUDA_CLIENTS` (NVIDIA's
//! runtime wheel) and `EMUV_TORCH` (the venv of tests/torch/requirements.txt) name what they run.

use emuv_tests::{
    attr_u64, err, module,
    tap::{check, check_eq, Tap},
    target_dir,
};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    cell::RefCell,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::{
        mpsc::{self, Receiver},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

const MIB: u64 = 1 << 20;
/// A lazy card, so that what the tests allocate costs the guest only what they touch.
const ONE_CARD: &str = "gpu_model=4090 physical_vram_mb=1024 virtual_vram_mb=512 lazy_allocation=1";
/// An RTX 4090 as sold: 24 GiB.
const TORCH_CARD: &str = "gpu_model=4090 physical_vram_gb=24 virtual_vram_gb=0 lazy_allocation=1";
const TWO_CARDS: &str =
    "gpu_count=2 gpu_model=4090 physical_vram_mb=2048 virtual_vram_mb=0 lazy_allocation=1";
const CARD_NAME: &str = "NVIDIA GeForce RTX 4090";

type TestResult = Result<(), String>;

fn program(name: &str) -> PathBuf {
    target_dir().join("cudart").join(name)
}

fn lib_dirs() -> String {
    let t = target_dir();
    format!("{}:{}", t.join("cuda").display(), t.join("nvml").display())
}

fn emuv_run() -> PathBuf {
    target_dir()
        .parent()
        .map(|top| top.join("tools/emuv-run/emuv-run"))
        .expect("checkout")
}

/// `cmd` (emuv-run, or a command running it) with the checkout's libraries and a clean CUDA
/// environment.
fn with_emuv_env(cmd: &mut Command) -> &mut Command {
    cmd.env("EMUV_LIB_DIR", lib_dirs())
        .env("EMUV_SMI", target_dir().join("release/emuv-smi"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("PYTORCH_CUDA_ALLOC_CONF")
}

/// Runs `args` under emuv-run, within `limit`.
fn run(args: &[&str], limit: Duration) -> Result<Output, String> {
    let mut cmd = Command::new("timeout");
    cmd.arg("-s")
        .arg("KILL")
        .arg(limit.as_secs().to_string())
        .arg(emuv_run())
        .args(args);
    with_emuv_env(&mut cmd)
        .output()
        .map_err(err("run under emuv-run"))
}

/// A suite's verdict: it `ended` well (`how` says how it ended), every `ok`/`not ok` line it
/// printed is `ok`, at least `min_checks` of them. Gives back its `stderr`.
fn verdict<'a>(
    what: &str,
    ended: bool,
    how: &str,
    lines: impl Iterator<Item = &'a str>,
    min_checks: usize,
    stderr: String,
) -> Result<String, String> {
    let (mut passed, mut failed) = (0, Vec::new());
    for line in lines {
        if line.starts_with("ok - ") {
            passed += 1;
        } else if line.starts_with("not ok") {
            failed.push(line);
        }
    }
    check(ended && failed.is_empty() && passed >= min_checks, || {
        format!(
            "{what}: {how} ({passed} checks passed, {} failed)\n{}\nstderr: {stderr}",
            failed.len(),
            failed.join("\n"),
        )
    })
    .map(|()| stderr)
}

/// A program's run as a suite; its lines are shown as notes.
fn suite(output: Output, what: &str, min_checks: usize) -> Result<String, String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    for line in stdout.lines() {
        println!("#   {line}");
    }
    let how = output.status.to_string();
    verdict(
        what,
        output.status.success(),
        &how,
        stdout.lines(),
        min_checks,
        stderr,
    )
}

fn venv_python(var: &str) -> Result<PathBuf, String> {
    let venv = std::env::var_os(var).ok_or_else(|| format!("{var} is not set"))?;
    Ok(PathBuf::from(venv).join("bin/python3"))
}

/// PyTorch imported once (minutes under TCG), each test a child of it forked before CUDA
/// starts (tests/torch/torch_suite.py `serve`).
struct TorchServer {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    ready: bool,
}

impl TorchServer {
    /// Starts the server; `env` is set before PyTorch loads (its allocator back-end is chosen
    /// then). `ready` waits for its import.
    fn spawn(env: &[(&str, &str)]) -> Result<TorchServer, String> {
        let python = venv_python("EMUV_TORCH")?;
        let script = target_dir()
            .parent()
            .map(|top| top.join("tests/torch/torch_suite.py"))
            .expect("checkout");
        let mut cmd = Command::new(emuv_run());
        cmd.arg(&python).arg(&script).arg("serve");
        let mut child = with_emuv_env(&mut cmd)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(err("start torch_suite.py serve"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr_pipe = child.stderr.take().ok_or("no stderr")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Ok(TorchServer {
            child,
            stdin,
            lines,
            stderr,
            ready: false,
        })
    }

    fn ready(&mut self) -> TestResult {
        if !self.ready {
            self.until(Duration::from_secs(900), |l| l == "### ready")?;
            self.ready = true;
        }
        Ok(())
    }

    /// Lines up to the first that `done` accepts (included), shown as notes.
    fn until(
        &mut self,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|e| {
                format!(
                    "torch_suite.py: {e} after {got:?}; stderr: {}",
                    self.stderr_text()
                )
            })?;
            println!("#   {line}");
            let last = done(&line);
            got.push(line);
            if last {
                return Ok(got);
            }
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn send(&mut self, request: &str) -> TestResult {
        writeln!(self.stdin, "{request}").map_err(err("write to torch_suite.py"))
    }

    /// Runs one request; all its checks must pass, at least `min_checks`. Gives back what the
    /// server wrote on stderr meanwhile.
    fn request(&mut self, request: &str, min_checks: usize) -> Result<String, String> {
        let mark = self.stderr_text().len();
        self.send(request)?;
        let lines = self.until(Duration::from_secs(900), |l| l.starts_with("### rc "))?;
        let rc = lines.last().cloned().unwrap_or_default();
        let stderr = self
            .stderr_text()
            .get(mark..)
            .unwrap_or_default()
            .to_owned();
        let body = lines.iter().map(String::as_str);
        verdict(request, rc == "### rc 0", &rc, body, min_checks, stderr)
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The servers: one with PyTorch's default allocator, one with `backend:cudaMallocAsync`, both
/// started together on first use so that their imports overlap (the guest has two CPUs).
type Servers = RefCell<Option<(TorchServer, TorchServer)>>;

const MALLOC_ASYNC: &str = "backend:cudaMallocAsync";

/// Runs `f` with the default server (`async_backend` false) or the other one.
fn with_torch(
    servers: &Servers,
    async_backend: bool,
    f: impl FnOnce(&mut TorchServer) -> TestResult,
) -> TestResult {
    let mut slot = servers.borrow_mut();
    if slot.is_none() {
        let default = TorchServer::spawn(&[])?;
        let other = TorchServer::spawn(&[("PYTORCH_CUDA_ALLOC_CONF", MALLOC_ASYNC)])?;
        *slot = Some((default, other));
    }
    let (default, other) = slot.as_mut().ok_or("no server")?;
    let server = if async_backend { other } else { default };
    server.ready()?;
    f(server)
}

fn nvcc_program() -> TestResult {
    let output = run(
        &[
            program("runtime_suite").to_str().unwrap_or_default(),
            CARD_NAME,
        ],
        Duration::from_secs(300),
    )?;
    let stderr = suite(output, "runtime_suite", 60)?;
    check_eq(
        "times emuv said why the launch failed",
        stderr.matches("emulated cards run no kernels").count(),
        1,
    )?;
    // The card is as it was: everything the program held is back.
    check_eq("bytes used after it", attr_u64("used_bytes")?, 0)
}

fn runtime12() -> TestResult {
    let output = run(
        &[program("runtime12").to_str().unwrap_or_default(), CARD_NAME],
        Duration::from_secs(120),
    )?;
    suite(output, "runtime12", 6).map(drop)
}

/// NVIDIA's runtime on emuv's driver: errors and emuv's message, no crash, no hang.
fn nvidia_runtime() -> TestResult {
    let venv = std::env::var_os("EMUV_CUDA_CLIENTS").ok_or("EMUV_CUDA_CLIENTS is not set")?;
    let lib =
        PathBuf::from(venv).join("lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13");
    check(lib.is_file(), || format!("{} missing", lib.display()))?;
    let started = Instant::now();
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "60"])
        .arg(program("nvidia_runtime"))
        .arg(&lib)
        .env("LD_LIBRARY_PATH", target_dir().join("cuda"));
    let output = cmd.output().map_err(err("run nvidia_runtime"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!(
        "# NVIDIA's libcudart.so.13 on emuv's driver, {:?}:",
        started.elapsed()
    );
    for line in stdout.lines().chain(stderr.lines()) {
        println!("#   {line}");
    }
    check(output.status.success(), || {
        format!("{}: {stdout} {stderr}", output.status)
    })?;
    let count = stdout
        .lines()
        .find(|l| l.starts_with("cudaGetDeviceCount "))
        .ok_or("no cudaGetDeviceCount line")?;
    check(!count.starts_with("cudaGetDeviceCount 0 "), || {
        format!("NVIDIA's runtime should fail on emuv's driver: {count}")
    })?;
    check(
        stderr.contains("this program uses NVIDIA's own CUDA runtime")
            && stderr.contains("emuv-run"),
        || format!("emuv's message missing: {stderr}"),
    )
}

/// A PyTorch job killed while it holds memory: the kernel gives all of it back.
fn killed_torch_job(server: &mut TorchServer) -> TestResult {
    server.send("hold 3072")?;
    let lines = server.until(Duration::from_secs(600), |l| {
        l.starts_with("holding ") || l.starts_with("### rc ")
    })?;
    let pid: i32 = lines
        .last()
        .and_then(|l| l.strip_prefix("holding "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("the job did not start: {lines:?}"))?;
    let used = attr_u64("used_bytes")?;
    check(used >= 3072 * MIB, || {
        format!("{used} bytes used while the job holds 3 GiB")
    })?;
    kill(Pid::from_raw(pid), Signal::SIGKILL).map_err(err("kill the job"))?;
    let end = server.until(Duration::from_secs(60), |l| l.starts_with("### rc "))?;
    check_eq(
        "the job's status",
        end.last().map(String::as_str),
        Some("### rc -9"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while attr_u64("used_bytes")? != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    check_eq("bytes used after SIGKILL", attr_u64("used_bytes")?, 0)
}

fn uuid_of(index: usize) -> Result<String, String> {
    let out = Command::new(target_dir().join("release/emuv-smi"))
        .arg("-L")
        .env("LD_LIBRARY_PATH", target_dir().join("nvml"))
        .output()
        .map_err(err("emuv-smi -L"))?;
    let listing = String::from_utf8_lossy(&out.stdout);
    emuv_tests::smi_uuids(&listing)
        .get(index)
        .map(|u| u.trim_start_matches("GPU-").replace('-', ""))
        .ok_or_else(|| format!("no card {index} in {listing}"))
}

fn main() {
    type Test<'a> = Box<dyn FnOnce() -> TestResult + 'a>;
    let server: Servers = RefCell::new(None);
    let (s1, s2, s3, s4, s5) = (&server, &server, &server, &server, &server);
    let tests: Vec<(&str, Test)> = vec![
        (
            "nvcc -cudart shared: memory, symbols, streams, managed memory, OOM, errors as on the card",
            Box::new(|| module::with_loaded(ONE_CARD, nvcc_program)),
        ),
        (
            "libcudart.so.12: CUDA 12's version and cudaDeviceProp",
            Box::new(|| module::with_loaded(ONE_CARD, runtime12)),
        ),
        (
            "NVIDIA's libcudart.so.13 on emuv's driver: an error and emuv's message",
            Box::new(|| module::with_loaded(ONE_CARD, nvidia_runtime)),
        ),
        (
            "PyTorch on a 24 GiB RTX 4090: properties, memory, weights, OOM, a kernel refused",
            Box::new(|| {
                module::with_loaded(TORCH_CARD, || {
                    with_torch(s1, false, |t| {
                        let stderr = t.request("card", 25)?;
                        check(stderr.contains("emulated cards run no kernels"), || {
                            format!("emuv's message about kernels missing: {stderr}")
                        })
                    })
                })
            }),
        ),
        (
            "PyTorch: expandable segments (VMM)",
            Box::new(|| {
                module::with_loaded(ONE_CARD, || {
                    with_torch(s2, false, |t| {
                        let conf = "expandable_segments:True";
                        t.request(&format!("allocator {conf} PYTORCH_CUDA_ALLOC_CONF={conf}"), 4)
                            .map(drop)
                    })
                })
            }),
        ),
        (
            "PyTorch: the cudaMallocAsync back-end",
            Box::new(|| {
                module::with_loaded(ONE_CARD, || {
                    with_torch(s3, true, |t| {
                        t.request(&format!("allocator {MALLOC_ASYNC}"), 4).map(drop)
                    })
                })
            }),
        ),
        (
            "PyTorch: two cards, and CUDA_VISIBLE_DEVICES=1",
            Box::new(|| {
                module::with_loaded(TWO_CARDS, || {
                    with_torch(s4, false, |t| {
                        t.request(&format!("cards 2 {}", uuid_of(0)?), 3)?;
                        t.request(&format!("cards 1 {} CUDA_VISIBLE_DEVICES=1", uuid_of(1)?), 2)
                            .map(drop)
                    })
                })
            }),
        ),
        (
            "PyTorch: a job killed holding 3 GiB gives all of it back",
            Box::new(move || {
                module::with_loaded(TORCH_CARD, || with_torch(s5, false, killed_torch_job))
            }),
        ),
    ];
    // EMUV_CUDART_ONLY=word runs only the tests whose names contain it (the others are skipped).
    let only = std::env::var("EMUV_CUDART_ONLY").unwrap_or_default();
    let mut tap = Tap::new(tests.len());
    for (name, test) in tests {
        if name.contains(only.as_str()) {
            tap.test(name, test());
        } else {
            tap.skip(name, "not in EMUV_CUDART_ONLY");
        }
    }
    drop(server);
    tap.finish()
}
