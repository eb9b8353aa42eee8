// SPDX-License-Identifier: GPL-2.0
//! `emuv-ctk`: emuv's container toolkit, after `nvidia-ctk`.
//!
//!   emuv-ctk cdi generate [--kind emuv.dev/gpu] [--output /var/run/cdi/emuv.json] [--nvidia-smi]
//!   emuv-ctk cdi list [--kind ...]

use clap::{Args, Parser, Subcommand};
use emuv_ctk::{
    find_host,
    spec::{generate, qualified_names, valid_kind, Host},
};
use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

#[derive(Parser)]
#[command(
    name = "emuv-ctk",
    about = "emuv's container toolkit: emulated GPUs in containers (CDI)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Container Device Interface specs.
    #[command(subcommand)]
    Cdi(Cdi),
}

#[derive(Subcommand)]
enum Cdi {
    /// Writes the CDI spec of the cards present (stdout, or --output).
    Generate(GenerateArgs),
    /// Lists the CDI device names the spec would have.
    List(KindArg),
}

#[derive(Args)]
struct KindArg {
    /// The CDI kind: emuv.dev/gpu, or nvidia.com/gpu so that command lines written for
    /// NVIDIA's toolkit work unchanged on machines without NVIDIA hardware.
    #[arg(long, default_value = "emuv.dev/gpu")]
    kind: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    kind: KindArg,
    /// Where to write it (atomically); `-` or nothing for stdout. CDI reads /etc/cdi and
    /// /var/run/cdi.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// emuv's libnvidia-ml.so.1 (default: the package's, else the checkout's target/nvml).
    #[arg(long)]
    nvml: Option<PathBuf>,
    /// emuv's libcuda.so.1 (default: the package's, else the checkout's target/cuda).
    #[arg(long)]
    cuda: Option<PathBuf>,
    /// emuv-smi (default: beside this program, else /usr/bin/emuv-smi).
    #[arg(long)]
    smi: Option<PathBuf>,
    /// Also put emuv-smi in containers as /usr/bin/nvidia-smi.
    #[arg(long)]
    nvidia_smi: bool,
}

fn cards() -> Vec<emuv::gpus::Gpu> {
    match emuv::gpus::list() {
        Ok(gpus) => gpus,
        Err(e) => {
            // A spec without cards still names `all` (with nothing in it): a runtime then refuses
            // a card by name clearly, and the spec is rewritten when cards appear.
            eprintln!("emuv-ctk: no emulated GPU ({e}); the spec lists none");
            Vec::new()
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a runtime reading the
/// directory never sees half a spec.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn check_kind(kind: &str) -> Result<(), String> {
    if valid_kind(kind) {
        Ok(())
    } else {
        Err(format!(
            "--kind {kind}: a CDI kind is vendor.tld/class, e.g. emuv.dev/gpu or nvidia.com/gpu"
        ))
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Cdi(Cdi::Generate(args)) => {
            check_kind(&args.kind.kind)?;
            let spec = generate(
                &args.kind.kind,
                &cards(),
                &find_host(
                    args.nvml.clone(),
                    args.cuda.clone(),
                    args.smi.clone(),
                    args.nvidia_smi,
                ),
            );
            let mut text = serde_json::to_string_pretty(&spec).map_err(|e| e.to_string())?;
            text.push('\n');
            match args.output.as_deref() {
                None => io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| e.to_string()),
                Some(p) if p == Path::new("-") => io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(|e| e.to_string()),
                Some(p) => write_atomically(p, &text).map_err(|e| format!("{}: {e}", p.display())),
            }
        }
        Command::Cdi(Cdi::List(kind)) => {
            check_kind(&kind.kind)?;
            let spec = generate(
                &kind.kind,
                &cards(),
                &Host {
                    nvml: None,
                    cuda: None,
                    smi: None,
                    as_nvidia_smi: false,
                    machine_id: None,
                },
            );
            for name in qualified_names(&spec) {
                println!("{name}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emuv-ctk: {e}");
            ExitCode::from(2)
        }
    }
}
