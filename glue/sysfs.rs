// SPDX-License-Identifier: GPL-2.0

//! sysfs attributes of a class device whose driver data is a `T`: read-only ones, and
//! root-writable ones whose writers wake `poll()` waiters.
//!
//! `struct device_attribute` changes shape with the kernel config (CFI, lockdep), so entries are
//! zero-initialised and filled field by field instead of written as struct literals.

use super::AssertSync;
use core::marker::PhantomData;
use kernel::{bindings, ffi::c_char, page::PAGE_SIZE, prelude::*, str::Formatter};

/// Writes an attribute's value for `T` (its text, newline included).
pub(crate) type ShowFn<T> = fn(&T, &mut Formatter<'_>) -> core::fmt::Result;

/// Takes a written value (the bytes as written, newline included); an error is the `write`'s.
pub(crate) type StoreFn<T> = fn(&T, &[u8]) -> Result;

/// One attribute file.
#[repr(C)]
pub(crate) struct Attribute<T> {
    pub(crate) raw: bindings::device_attribute,
    show: ShowFn<T>,
    store: Option<StoreFn<T>>,
}

// SAFETY: never mutated after its constant initialisation; the function pointer is `Sync`.
unsafe impl<T> Sync for Attribute<T> {}

impl<T: Sync> Attribute<T> {
    /// A 0444 attribute `name` whose text `show` writes.
    pub(crate) const fn read_only(name: &'static CStr, show: ShowFn<T>) -> Self {
        let mut raw: bindings::device_attribute = pin_init::zeroed();
        raw.attr.name = kernel::str::as_char_ptr_in_const_context(name);
        raw.attr.mode = 0o444;
        raw.__bindgen_anon_1.show = Some(Self::show_raw);
        Self {
            raw,
            show,
            store: None,
        }
    }

    /// A 0644 attribute `name`: `show` writes its text, `store` takes what root writes. A
    /// successful write wakes `poll()` waiters on the file, as a change does.
    pub(crate) const fn read_write(
        name: &'static CStr,
        show: ShowFn<T>,
        store: StoreFn<T>,
    ) -> Self {
        let mut this = Self::read_only(name, show);
        this.raw.attr.mode = 0o644;
        this.raw.__bindgen_anon_2.store = Some(Self::store_raw);
        this.store = Some(store);
        this
    }

    /// `device_attribute.store`.
    ///
    /// # Safety
    ///
    /// Called by sysfs with a device made by `DeviceClass::<T>::add`, one of our attributes,
    /// and `count` bytes at `buf`.
    unsafe extern "C" fn store_raw(
        dev: *mut bindings::device,
        attr: *mut bindings::device_attribute,
        buf: *const c_char,
        count: usize,
    ) -> isize {
        // SAFETY: sysfs passes back the `raw` field of one of our `Attribute<T>` statics.
        let attr = unsafe { &*kernel::container_of!(attr, Self, raw) };
        // SAFETY: as in `show_raw`.
        let data = unsafe { &*bindings::dev_get_drvdata(dev).cast::<T>() };
        // SAFETY: sysfs hands `store` `count` bytes that nothing else touches during the call.
        let value = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), count) };
        let Some(store) = attr.store else {
            return EACCES.to_errno() as isize;
        };
        match store(data, value) {
            Ok(()) => {
                // SAFETY: the device is live during the callback; the name is a C string.
                unsafe {
                    bindings::sysfs_notify(
                        &raw mut (*dev).kobj,
                        core::ptr::null(),
                        attr.raw.attr.name,
                    )
                };
                count as isize
            }
            Err(e) => e.to_errno() as isize,
        }
    }

    /// `device_attribute.show`.
    ///
    /// # Safety
    ///
    /// Called by sysfs with a device made by `DeviceClass::<T>::add`, one of our attributes
    /// and a buffer of one page.
    unsafe extern "C" fn show_raw(
        dev: *mut bindings::device,
        attr: *mut bindings::device_attribute,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: sysfs passes back the `raw` field of one of our `Attribute<T>` statics.
        let attr = unsafe { &*kernel::container_of!(attr, Self, raw) };
        // SAFETY: devices get these attributes only through `DeviceClass::<T>::add`, which sets
        // the driver data to its `T` and keeps it alive until the device and so its files are
        // gone.
        let data = unsafe { &*bindings::dev_get_drvdata(dev).cast::<T>() };
        // SAFETY: sysfs hands `show` one page that nothing else touches during the call.
        let page = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), PAGE_SIZE) };
        let mut out = Formatter::new(page);
        // Text past a page is cut by the formatter; the length is clamped below.
        let _ = (attr.show)(data, &mut out);
        out.bytes_written().min(PAGE_SIZE) as isize
    }
}

/// The NULL-terminated group list that `device_create_with_groups` takes.
pub(crate) struct Groups<T> {
    raw: AssertSync<[*const bindings::attribute_group; 2]>,
    _data: PhantomData<fn(&T)>,
}

impl<T> Groups<T> {
    #[doc(hidden)]
    pub(crate) const fn new(group: *const bindings::attribute_group) -> Self {
        Self {
            // SAFETY: a list of a static group and the terminator, read only by sysfs.
            raw: unsafe { AssertSync::new([group, core::ptr::null()]) },
            _data: PhantomData,
        }
    }

    pub(crate) fn as_raw(&self) -> *mut *const bindings::attribute_group {
        self.raw
            .as_ptr()
            .cast::<*const bindings::attribute_group>()
            .cast_mut()
    }
}

/// Builds the unnamed attribute group of a list of `Attribute<T>` statics.
#[doc(hidden)]
pub(crate) const fn group(attrs: *mut *mut bindings::attribute) -> bindings::attribute_group {
    let mut group: bindings::attribute_group = pin_init::zeroed();
    group.__bindgen_anon_2.attrs = attrs;
    group
}

/// `static NAME: Groups<T> = groups![A, B, ...];` from `Attribute<T>` statics.
macro_rules! attribute_groups {
    ($vis:vis static $name:ident: $t:ty = [$($attr:path),+ $(,)?];) => {
        $vis static $name: $crate::glue::sysfs::Groups<$t> = {
            use $crate::glue::AssertSync;
            use kernel::bindings::{attribute, attribute_group};
            const N: usize = [$(stringify!($attr)),+].len() + 1;
            // SAFETY: sysfs only reads these tables of static attributes; the `*mut` is what
            // the C type says.
            static ATTRS: AssertSync<[*mut attribute; N]> = unsafe {
                AssertSync::new([
                    $((&raw const $attr.raw.attr).cast_mut(),)+
                    core::ptr::null_mut(),
                ])
            };
            // SAFETY: as above.
            static GROUP: AssertSync<attribute_group> = unsafe {
                AssertSync::new($crate::glue::sysfs::group(ATTRS.as_ptr().cast_mut().cast()))
            };
            $crate::glue::sysfs::Groups::new(GROUP.as_ptr())
        };
    };
}
pub(crate) use attribute_groups;
