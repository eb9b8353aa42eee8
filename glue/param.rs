// SPDX-License-Identifier: GPL-2.0

//! Module parameters that show up under `/sys/module/emuv/parameters/` and accept text.
//!
//! 7.2's `module!` parameters are integers registered with permission 0 and a set-once store
//! (a second value fails with `EEXIST`, which breaks modprobe when `emuv.conf` and the command
//! line both give one). [`module_param!`] emits the same `__param` and `.modinfo` entries that
//! `rust/macros/module.rs` does, but with permission 0444 and a [`Param`]'s own `set`/`get`.

use core::fmt::Write;
use kernel::{
    bindings,
    ffi::{c_char, c_int},
    page::PAGE_SIZE,
    prelude::*,
    str::Formatter,
};

/// The behaviour of one parameter.
pub(crate) trait Param: Sync {
    /// Parses and stores `value`; on bad input logs one line saying what was wrong and what is
    /// accepted, and returns `EINVAL`. The kernel calls this once per occurrence on the command
    /// line, in order, so the last value given wins.
    fn set(&self, value: &[u8]) -> Result;

    /// Writes the current value (without a newline).
    fn get(&self, out: &mut Formatter<'_>) -> core::fmt::Result;
}

/// What a `kernel_param`'s `arg` points at: a thin pointer to a `dyn Param`.
pub(crate) struct ParamSlot(pub(crate) &'static dyn Param);

/// `set` and `get` shared by every emuv parameter.
pub(crate) static PARAM_OPS: bindings::kernel_param_ops = bindings::kernel_param_ops {
    flags: 0,
    set: Some(param_set),
    get: Some(param_get),
    free: None,
};

/// The same for booleans, which may be given bare (`insmod emuv.ko debug_mode`): without
/// `NOARG` the kernel refuses a bare name before `set` can accept it.
pub(crate) static BOOL_PARAM_OPS: bindings::kernel_param_ops = bindings::kernel_param_ops {
    flags: bindings::KERNEL_PARAM_OPS_FL_NOARG,
    ..PARAM_OPS
};

/// The ops for a parameter of C type `ty`.
pub(crate) const fn ops_for(ty: &str) -> &'static bindings::kernel_param_ops {
    let (ty, bool_) = (ty.as_bytes(), b"bool");
    let mut same = ty.len() == bool_.len();
    let mut i = 0;
    while same && i < ty.len() {
        same = ty[i] == bool_[i];
        i += 1;
    }
    if same {
        &BOOL_PARAM_OPS
    } else {
        &PARAM_OPS
    }
}

/// # Safety
///
/// `kp` must be a `kernel_param` emitted by [`module_param!`], whose `arg` is a `ParamSlot`.
unsafe fn slot(kp: *const bindings::kernel_param) -> &'static ParamSlot {
    // SAFETY: per the function's contract `arg` points to a `static ParamSlot`.
    unsafe { &*(*kp).__bindgen_anon_1.arg.cast::<ParamSlot>() }
}

/// `kernel_param_ops.set`.
///
/// # Safety
///
/// Called by the kernel with a `kp` from [`module_param!`] and `val` null or a NUL-terminated
/// string valid for the call.
unsafe extern "C" fn param_set(val: *const c_char, kp: *const bindings::kernel_param) -> c_int {
    let value: &[u8] = if val.is_null() {
        // A bare `name` with no `=value`.
        b""
    } else {
        // SAFETY: the kernel passes a NUL-terminated argument that lives for this call.
        unsafe { CStr::from_char_ptr(val) }.to_bytes()
    };
    // SAFETY: these ops are only used by entries from `module_param!`.
    match unsafe { slot(kp) }.0.set(value) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `kernel_param_ops.get`.
///
/// # Safety
///
/// Called by sysfs with a `kp` from [`module_param!`] and a `buffer` of one page.
unsafe extern "C" fn param_get(buffer: *mut c_char, kp: *const bindings::kernel_param) -> c_int {
    // SAFETY: sysfs hands `get` a buffer of one page that nothing else touches during the call.
    let page = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), PAGE_SIZE) };
    let mut out = Formatter::new(page);
    // SAFETY: these ops are only used by entries from `module_param!`.
    let param = unsafe { slot(kp) };
    // A value longer than a page is cut by the formatter; the length below is then clamped.
    let _ = param.0.get(&mut out).and_then(|()| out.write_char('\n'));
    out.bytes_written().min(PAGE_SIZE) as c_int
}

/// Copies a `&str` into a fixed array at compile time, for `.modinfo` entries.
pub(crate) const fn modinfo<const N: usize>(s: &str) -> [u8; N] {
    let bytes = s.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() && i < N {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Declares a module parameter `$name` served by `$param: &'static dyn Param`, with a `modinfo`
/// description and type.
macro_rules! module_param {
    ($name:ident, $param:expr, $ty:literal, $desc:literal) => {
        const _: () = {
            use kernel::bindings;
            use $crate::glue::param::{modinfo, ops_for, ParamSlot};

            static SLOT: ParamSlot = ParamSlot($param);

            #[link_section = "__param"]
            #[used(compiler)]
            static PARAM: kernel::module_param::KernelParam =
                kernel::module_param::KernelParam::new(bindings::kernel_param {
                    name: concat!(stringify!($name), "\0").as_ptr().cast(),
                    // `__this_module` is set up by the module loader and lives as long as the
                    // module.
                    mod_: (&raw const bindings::__this_module).cast_mut(),
                    ops: ops_for($ty),
                    perm: 0o444,
                    level: -1,
                    flags: 0,
                    __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                        arg: core::ptr::from_ref(&SLOT).cast_mut().cast(),
                    },
                });

            const PARM: &str = concat!("parm=", stringify!($name), ":", $desc, "\0");
            const PARMTYPE: &str = concat!("parmtype=", stringify!($name), ":", $ty, "\0");
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO_PARM: [u8; PARM.len()] = modinfo(PARM);
            #[link_section = ".modinfo"]
            #[used(compiler)]
            static MODINFO_PARMTYPE: [u8; PARMTYPE.len()] = modinfo(PARMTYPE);
        };
    };
}
pub(crate) use module_param;
