// SPDX-License-Identifier: GPL-2.0
//! emuv's container toolkit as a library: the CDI spec of the cards present, and where the host
//! keeps what goes into containers. `emuv-ctk` writes the spec; the device plugin answers
//! kubelet from the same spec.

pub mod spec;

use spec::Host;
use std::path::{Path, PathBuf};

/// The package's library directory.
pub const PACKAGE_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu/emuv";

/// `given`, else the first of `candidates` that exists.
fn find(given: Option<PathBuf>, candidates: &[PathBuf]) -> Option<PathBuf> {
    given.or_else(|| candidates.iter().find(|p| p.is_file()).cloned())
}

/// What the host puts into containers: each path `given`, else the package's, else the
/// checkout's (beside this program's `target/` directory).
pub fn find_host(
    nvml: Option<PathBuf>,
    cuda: Option<PathBuf>,
    smi: Option<PathBuf>,
    as_nvidia_smi: bool,
) -> Host {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let target = exe_dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let package = Path::new(PACKAGE_LIB_DIR);
    Host {
        nvml: find(
            nvml,
            &[
                package.join("libnvidia-ml.so.1"),
                target.join("nvml/libnvidia-ml.so.1"),
            ],
        ),
        cuda: find(
            cuda,
            &[
                package.join("libcuda.so.1"),
                target.join("cuda/libcuda.so.1"),
            ],
        ),
        smi: find(
            smi,
            &[exe_dir.join("emuv-smi"), PathBuf::from("/usr/bin/emuv-smi")],
        ),
        as_nvidia_smi,
        machine_id: Some(PathBuf::from("/etc/machine-id")).filter(|p| p.is_file()),
    }
}
