// SPDX-License-Identifier: GPL-2.0
//! Loading and unloading `emuv.ko` with the system calls `insmod` and `rmmod` use, so tests
//! see the kernel's exact error numbers.

use nix::{
    errno::Errno,
    kmod::{delete_module, finit_module, DeleteModuleFlags, ModuleInitFlags},
};
use std::{ffi::CString, fs::File, path::PathBuf};

/// Where the module under test is: `$EMUV_MODULE_DIR/NAME.ko`, default the checkout's root.
pub fn module_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("EMUV_MODULE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    dir.join(format!("{name}.ko"))
}

/// `insmod NAME.ko PARAMS`.
pub fn load_named(name: &str, params: &str) -> Result<(), Errno> {
    load_file(&open_module(name), params)
}

/// The module file, opened (for loads that must not open it themselves).
pub fn open_module(name: &str) -> File {
    let path = module_path(name);
    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// `insmod` of an opened module file: only `finit_module` enters the kernel.
pub fn load_file(file: &File, params: &str) -> Result<(), Errno> {
    let params = CString::new(params).expect("parameters without NUL");
    finit_module(file, &params, ModuleInitFlags::empty())
}

/// `rmmod NAME`.
pub fn unload_named(name: &str) -> Result<(), Errno> {
    let name = CString::new(name).expect("name without NUL");
    delete_module(&name, DeleteModuleFlags::O_NONBLOCK)
}

/// `insmod emuv.ko PARAMS`.
pub fn load(params: &str) -> Result<(), Errno> {
    load_named("emuv", params)
}

/// `rmmod emuv`.
pub fn unload() -> Result<(), Errno> {
    unload_named("emuv")
}

/// Whether emuv is loaded now.
pub fn is_loaded() -> bool {
    std::path::Path::new("/sys/module/emuv").exists()
}

/// Loads emuv with `params`, runs `f`, and unloads it again (also when `f` fails).
pub fn with_loaded<T>(params: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    load(params).map_err(|e| format!("insmod emuv.ko {params}: {e}"))?;
    let result = f();
    let unloaded = unload().map_err(|e| format!("rmmod emuv: {e}"));
    let value = result?;
    unloaded?;
    Ok(value)
}

/// Loads emuv with `params` and checks that `rmmod` is refused while what `hold` returns (an
/// open file, a mapping) lives, as "in use" (`EWOULDBLOCK`), and succeeds once it is dropped.
pub fn check_pinned_by<T>(
    params: &str,
    hold: impl FnOnce() -> Result<T, String>,
) -> Result<(), String> {
    load(params).map_err(|e| format!("insmod emuv.ko {params}: {e}"))?;
    let held = hold();
    let busy = unload();
    let held = held.map(drop);
    let after = unload();
    held?;
    crate::tap::check_eq("rmmod while held", busy, Err(Errno::EWOULDBLOCK))?;
    crate::tap::check_eq("rmmod after release", after, Ok(()))
}
