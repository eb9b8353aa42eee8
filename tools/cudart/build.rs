// SPDX-License-Identifier: GPL-2.0
//! Types and constants from NVIDIA's public headers, by bindgen at build time: the CUDA 13
//! runtime and driver API (`cuda_runtime_api.h`, `cuda.h`, `cudaTypedefs.h` for the driver's
//! function types) and the CUDA 12 `cudaDeviceProp`, from the wheels pinned in
//! tools/cuda/headers.txt and headers.txt (scripts/cuda-headers.sh fetches them;
//! `EMUV_CUDA_INCLUDE` overrides the first). Also two lists read from the
//! headers: the name of every `cudaError` value, and the runtime functions this crate does not
//! define, exported as stubs that answer `cudaErrorNotSupported`.

use std::{
    collections::BTreeSet,
    env, fs,
    path::{Path, PathBuf},
};

fn cache() -> PathBuf {
    env::var_os("EMUV_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env::var_os("HOME").expect("HOME")).join(".cache"))
                .join("emuv")
        })
}

/// The pins (`name==version`) of a headers.txt.
fn pins(path: &Path) -> Vec<String> {
    println!("cargo:rerun-if-changed={}", path.display());
    fs::read_to_string(path)
        .expect("headers.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Where scripts/cuda-headers.sh unpacked a pin's include/: the driver's CUDA 13 runtime wheel
/// as `VERSION`, the others as `NAME-VERSION`.
fn pin_dir(pin: &str, first_of_driver: bool) -> PathBuf {
    let (name, version) = pin.split_once("==").expect("headers.txt: name==version");
    let leaf = if first_of_driver {
        version.to_owned()
    } else {
        format!("{name}-{version}")
    };
    let dir = cache().join("cuda-headers").join(leaf).join("include");
    if !dir.is_dir() {
        panic!(
            "{} missing: run scripts/cuda-headers.sh (it fetches NVIDIA's public headers)",
            dir.display()
        );
    }
    dir
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-env-changed=EMUV_CUDA_INCLUDE");
    let include13 = match env::var_os("EMUV_CUDA_INCLUDE") {
        Some(dir) => PathBuf::from(dir),
        None => pin_dir(&pins(&manifest.join("../cuda/headers.txt"))[0], true),
    };
    let ours = pins(&manifest.join("headers.txt"));
    let find = |prefix: &str| {
        ours.iter()
            .find(|p| p.starts_with(prefix))
            .map(|p| pin_dir(p, false))
            .unwrap_or_else(|| panic!("headers.txt: no {prefix} pin"))
    };
    let include12 = find("nvidia-cuda-runtime-cu12==");
    let crt13 = find("nvidia-cuda-crt==");

    let wrapper = out.join("runtime.h");
    fs::write(
        &wrapper,
        "#include <cuda.h>\n#include <cudaTypedefs.h>\n#include <cuda_runtime_api.h>\n",
    )
    .expect("write runtime.h");
    bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_arg(format!("-I{}", include13.display()))
        .clang_arg(format!("-I{}", crt13.display()))
        .allowlist_type("cuda.*|CU.*|PFN_cu.*|dim3")
        .allowlist_var("cuda.*|CU.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen of cuda_runtime_api.h")
        .write_to_file(out.join("runtime.rs"))
        .expect("write runtime.rs");

    bindgen::Builder::default()
        .header(include12.join("cuda_runtime_api.h").to_string_lossy())
        .clang_arg(format!("-I{}", include12.display()))
        // The CUDA 12 wheel has no crt/; its host_defines.h macros are CUDA 13's.
        .clang_arg(format!("-I{}", crt13.display()))
        .allowlist_type("cudaDeviceProp")
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen of CUDA 12's cudaDeviceProp")
        .write_to_file(out.join("device_prop12.rs"))
        .expect("write device_prop12.rs");

    // Every cudaError value's name, for cudaGetErrorName.
    let driver_types =
        fs::read_to_string(include13.join("driver_types.h")).expect("read driver_types.h");
    let body = driver_types
        .split("enum __device_builtin__ cudaError")
        .nth(1)
        .and_then(|rest| rest.split("};").next())
        .expect("enum cudaError in driver_types.h");
    let names: BTreeSet<String> = body
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.starts_with("cuda") && word.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .collect();
    let table: String = names
        .iter()
        .map(|n| format!("(sys::{n}, c\"{n}\"),\n"))
        .collect();
    fs::write(out.join("error_names.rs"), format!("&[\n{table}]")).expect("write error_names.rs");

    // Every function cuda_runtime_api.h declares that returns cudaError_t...
    let functions = bindgen::Builder::default()
        .header(include13.join("cuda_runtime_api.h").to_string_lossy())
        .clang_arg(format!("-I{}", include13.display()))
        .clang_arg(format!("-I{}", crt13.display()))
        .allowlist_function("cuda.*")
        .generate()
        .expect("bindgen of cuda_runtime_api.h's functions")
        .to_string();
    let declared: BTreeSet<String> = functions
        .split("pub fn ")
        .skip(1)
        .filter(|rest| {
            rest.split(";")
                .next()
                .is_some_and(|decl| decl.contains("-> cudaError_t"))
        })
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_owned())
        .collect();
    // ...and those this crate defines: `extern "C" fn cudaXxx(` in src/.
    let mut defined = BTreeSet::new();
    for entry in fs::read_dir(manifest.join("src")).expect("src/") {
        let path = entry.expect("src entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let text = fs::read_to_string(&path).expect("read source");
        for rest in text.split("extern \"C\" fn ").skip(1) {
            if let Some(name) = rest.split(['(', '<']).next() {
                defined.insert(name.trim().to_owned());
            }
        }
    }
    let stubs: String = declared
        .difference(&defined)
        .map(|name| format!("unsupported!({name});\n"))
        .collect();
    fs::write(out.join("unsupported.rs"), stubs).expect("write unsupported.rs");
}
