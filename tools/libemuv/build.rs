// SPDX-License-Identifier: GPL-2.0
//! Takes emuv's types from the one uapi header: bindgen for the structs and constants, and a
//! C file compiled against the header for the ioctl numbers (function-like macros that bindgen
//! cannot evaluate).

use std::{env, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let include = manifest.join("../../include");
    let header = include.join("uapi/emuv.h");
    println!("cargo:rerun-if-changed={}", header.display());
    println!("cargo:rerun-if-changed=src/ioctl_numbers.c");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_type("emuv_.*")
        .allowlist_var("EMUV_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen of include/uapi/emuv.h")
        .write_to_file(out.join("uapi.rs"))
        .expect("write uapi.rs");

    cc::Build::new()
        .file("src/ioctl_numbers.c")
        .include(&include)
        .compile("emuv_ioctl_numbers");
}
