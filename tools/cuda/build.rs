// SPDX-License-Identifier: GPL-2.0
//! Types and constants from NVIDIA's public `cuda.h` (bindgen, at build time, from the wheel
//! pinned in headers.txt: scripts/cuda-headers.sh fetches it, `EMUV_CUDA_INCLUDE` overrides), and
//! two lists read from the headers: every driver function `cuda.h` declares (those this crate
//! does not define are exported as stubs answering CUDA_ERROR_NOT_SUPPORTED) and the ABI versions
//! `cudaTypedefs.h` names for each (the entry-point table is checked against them).

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
};

fn include_dir(manifest: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=EMUV_CUDA_INCLUDE");
    if let Some(dir) = env::var_os("EMUV_CUDA_INCLUDE") {
        return dir.into();
    }
    let pins = fs::read_to_string(manifest.join("headers.txt")).expect("headers.txt");
    let pin = pins
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .expect("a pin in headers.txt");
    let version = pin.split("==").nth(1).expect("headers.txt: name==version");
    let cache = env::var_os("EMUV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").expect("HOME")).join(".cache"))
                .join("emuv")
        });
    cache.join("cuda-headers").join(version).join("include")
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let include = include_dir(&manifest);
    let cuda_h = include.join("cuda.h");
    if !cuda_h.is_file() {
        panic!(
            "{} missing: run scripts/cuda-headers.sh (it fetches NVIDIA's public headers), \
             or point EMUV_CUDA_INCLUDE at a CUDA 13 include directory",
            cuda_h.display()
        );
    }
    println!("cargo:rerun-if-changed={}", cuda_h.display());
    println!("cargo:rerun-if-changed=headers.txt");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcuda.so.1");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    bindgen::Builder::default()
        .header(cuda_h.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .allowlist_type("CU.*|cu.*")
        .allowlist_var("CU.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen of cuda.h")
        .write_to_file(out.join("cuda.rs"))
        .expect("write cuda.rs");

    // Every function cuda.h declares, by its exported name (cuMemAlloc_v2, cuMemcpy_ptds...).
    let functions = bindgen::Builder::default()
        .header(cuda_h.to_string_lossy())
        .clang_arg(format!("-I{}", include.display()))
        .clang_arg("-D__CUDA_API_VERSION_INTERNAL")
        .allowlist_function("cu.*")
        .generate()
        .expect("bindgen of cuda.h's functions")
        .to_string();
    let declared: BTreeSet<String> = functions
        .split("pub fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_owned())
        .collect();

    // The functions this crate defines itself, by module: `extern "C" fn cuXxx(` in src/, and
    // the pairs `both_flavours!(cuXxx, cuXxx_ptsz, ...)` makes.
    let mut defined = std::collections::BTreeMap::new();
    for entry in fs::read_dir(manifest.join("src")).expect("src/") {
        let path = entry.expect("src entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name");
        let module = if stem == "lib" {
            "crate".to_owned()
        } else {
            format!("crate::{stem}")
        };
        let text = fs::read_to_string(&path).expect("read source");
        let mut add = |name: &str| {
            let name = name.trim();
            if name.starts_with("cu") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                defined.insert(name.to_owned(), module.clone());
            }
        };
        for rest in text.split("extern \"C\" fn ").skip(1) {
            if let Some(name) = rest.split(['(', '<']).next() {
                add(name);
            }
        }
        // Entry points made by this crate's macros: every `cuXxx` in their invocations.
        for mac in ["both_flavours!(", "copy_fn!(", "memset_fns!("] {
            for rest in text.split(mac).skip(1) {
                let args = rest.split(");").next().unwrap_or("");
                for word in args.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if word.len() > 2
                        && word.starts_with("cu")
                        && word.as_bytes()[2].is_ascii_uppercase()
                    {
                        add(word);
                    }
                }
            }
        }
    }
    let mut stubs = String::new();
    for name in declared.iter().filter(|n| !defined.contains_key(*n)) {
        stubs.push_str(&format!("unsupported!({name});\n"));
    }
    fs::write(out.join("unsupported.rs"), stubs).expect("write unsupported.rs");

    // (base name, version, flavour) of every PFN_<base>_v<version>[_ptds|_ptsz] typedef.
    let typedefs_h = include.join("cudaTypedefs.h");
    println!("cargo:rerun-if-changed={}", typedefs_h.display());
    let typedefs = fs::read_to_string(&typedefs_h).expect("cudaTypedefs.h");
    let mut versions = BTreeSet::new();
    for rest in typedefs.split("(CUDAAPI *PFN_").skip(1) {
        let Some(name) = rest.split(')').next() else {
            continue;
        };
        let (name, flavour) = match name.rsplit_once('_') {
            Some((n, f @ ("ptds" | "ptsz"))) => (n, f),
            _ => (name, ""),
        };
        if let Some((base, version)) = name.rsplit_once("_v") {
            if let Ok(version) = version.parse::<u32>() {
                versions.insert((base.to_owned(), version, flavour.to_owned()));
            }
        }
    }
    let table: String = versions
        .iter()
        .map(|(b, v, f)| format!("(\"{b}\", {v}, \"{f}\"),\n"))
        .collect();
    fs::write(out.join("pfn_versions.rs"), format!("&[\n{table}]")).expect("write pfn_versions.rs");

    // cuGetProcAddress's table: for each ABI version of a base name, the exported function
    // that implements it. cuda.h names the n-th version of `cuXxx` `cuXxx` (n = 1) or
    // `cuXxx_v<n>`, and a `_ptds`/`_ptsz` version is the per-thread-stream flavour of the
    // newest plain version at or before it. Only names this crate defines enter the table, so
    // the stubs are never handed out.
    let mut entries = String::new();
    let bases: BTreeSet<&str> = versions.iter().map(|(b, _, _)| b.as_str()).collect();
    for base in bases {
        let plain: Vec<u32> = versions
            .iter()
            .filter(|(b, _, f)| b == base && f.is_empty())
            .map(|(_, v, _)| *v)
            .collect();
        let name_of = |version: u32| -> Option<String> {
            let rank = plain.iter().filter(|v| **v <= version).count();
            match rank {
                0 => None,
                1 => Some(base.to_owned()),
                n => Some(format!("{base}_v{n}")),
            }
        };
        for (b, version, flavour) in &versions {
            if b != base {
                continue;
            }
            let Some(mut name) = name_of(*version) else {
                continue;
            };
            if !flavour.is_empty() {
                name = format!("{name}_{flavour}");
            }
            if !declared.contains(&name) && !defined.contains_key(&name) {
                println!("cargo:warning=cudaTypedefs.h names {base} v{version} {flavour}, cuda.h no {name}");
                continue;
            }
            if let Some(module) = defined.get(&name) {
                entries.push_str(&format!(
                    "Entry {{ base: \"{base}\", version: {version}, per_thread: {}, name: \"{name}\", \
                     function: {module}::{name} as *const std::ffi::c_void }},\n",
                    !flavour.is_empty()
                ));
            }
        }
    }
    fs::write(out.join("entries.rs"), format!("vec![\n{entries}]")).expect("write entries.rs");
    let declared_list: String = declared.iter().map(|n| format!("\"{n}\",\n")).collect();
    fs::write(out.join("declared.rs"), format!("&[\n{declared_list}]")).expect("write declared.rs");
}
