// SPDX-License-Identifier: GPL-2.0
//! The examples users copy from (`examples/vram_fill.c`, `tools/libemuv/examples/vram_fill.rs`)
//! compile (scripts/check.sh builds them into target/examples) and run: allocate, fill, verify,
//! free, leaving nothing behind.

use emuv_tests::{
    attr, module,
    tap::{check, check_eq, Tap},
};
use std::{path::PathBuf, process::Command};

fn run(name: &str) -> Result<(), String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/examples")
        .join(name);
    module::with_loaded("physical_vram_mb=64 virtual_vram_mb=64", || {
        let out = Command::new(&path)
            .arg("24")
            .output()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        check(out.status.success(), || {
            format!(
                "{name} failed: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        check(stdout.contains("filled and verified 24 MiB"), || {
            format!("unexpected output: {stdout}")
        })?;
        check_eq(
            "used_bytes afterwards",
            attr("used_bytes").map_err(|e| e.to_string())?,
            "0".into(),
        )
    })
}

fn main() {
    let mut tap = Tap::new(2);
    if module::is_loaded() {
        let _ = module::unload();
    }
    tap.test(
        "C example allocates, fills, verifies and frees",
        run("vram_fill_c"),
    );
    tap.test(
        "Rust example allocates, fills, verifies and frees",
        run("vram_fill_rs"),
    );
    tap.finish()
}
