// SPDX-License-Identifier: GPL-2.0

//! A character device that is the `dev` node of a device in a class of its own:
//! `/sys/class/<name>/<name>/dev` and `/dev/<name>`.
//!
//! 7.2's `MiscDevice` cannot give this: its node lives under `/sys/class/misc`, and its
//! `file_operations` have no `.owner` (so `rmmod` while open is a use-after-free) and no
//! `llseek`. Here the file operations carry `.owner = THIS_MODULE`, so the VFS pins the module
//! while a file is open, and `default_llseek`, so `lseek` works on the report.

use super::sysfs::Groups;
use kernel::{
    bindings,
    error::{from_err_ptr, to_result},
    ffi::{c_char, c_int},
    mm::virt::VmaNew,
    prelude::*,
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice, UserSliceWriter},
};

/// What a device does with its open files.
pub(crate) trait FileHandler: Send + Sync + Sized + 'static {
    /// Per-open-file state, dropped on the last `close`.
    type OpenFile: Send + Sync;

    /// Called on `open`; `writable` when the file was opened for writing.
    fn open(&self, writable: bool) -> impl PinInit<Self::OpenFile, Error>;

    /// Called on `read` at `*offset`; advances `*offset` by what it wrote.
    fn read(
        &self,
        file: &Self::OpenFile,
        out: &mut UserSliceWriter,
        offset: &mut i64,
    ) -> Result<usize>;

    /// Called on `ioctl` (and, with the same structures, on 32-bit callers' `ioctl`).
    fn ioctl(&self, file: &Self::OpenFile, cmd: u32, arg: UserPtr) -> Result<isize>;

    /// Called on `mmap`.
    fn mmap(&self, file: &Self::OpenFile, vma: &VmaNew) -> Result;

    /// Called on the last `close`, before the open file's state is dropped.
    fn release(&self, file: &Self::OpenFile);
}

/// A registered dev_t range of one minor.
struct ChrdevRegion(bindings::dev_t);

impl ChrdevRegion {
    fn new(name: &'static CStr) -> Result<Self> {
        let mut devt = 0;
        // SAFETY: `devt` is a valid out-pointer and `name` outlives the registration.
        to_result(unsafe { bindings::alloc_chrdev_region(&mut devt, 0, 1, name.as_char_ptr()) })?;
        Ok(Self(devt))
    }
}

impl Drop for ChrdevRegion {
    fn drop(&mut self) {
        // SAFETY: the region was registered in `new`.
        unsafe { bindings::unregister_chrdev_region(self.0, 1) };
    }
}

/// A device class, `/sys/class/<name>`.
struct Class(*mut bindings::class);

impl Class {
    fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: `name` is a static C string, as `class_create` requires.
        let class = from_err_ptr(unsafe { bindings::class_create(name.as_char_ptr()) })?;
        Ok(Self(class))
    }
}

impl Drop for Class {
    fn drop(&mut self) {
        // SAFETY: created in `new`; every device in it is destroyed before (field order).
        unsafe { bindings::class_destroy(self.0) };
    }
}

/// The `struct cdev`, removed on drop.
#[pin_data(PinnedDrop)]
struct Cdev {
    #[pin]
    inner: Opaque<bindings::cdev>,
}

#[pinned_drop]
impl PinnedDrop for Cdev {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `inner` was initialised and added by `ClassDevice::new`; after `cdev_del`
        // no new `open` reaches it, and open files pin the module and so this memory.
        unsafe { bindings::cdev_del(self.inner.get()) };
    }
}

/// The class device that owns the node; destroyed on drop.
struct DeviceNode {
    class: *mut bindings::class,
    devt: bindings::dev_t,
}

impl Drop for DeviceNode {
    fn drop(&mut self) {
        // SAFETY: the device was created in this class with this `devt` by `ClassDevice::new`.
        unsafe { bindings::device_destroy(self.class, self.devt) };
    }
}

/// A class with one device `name`, whose `/dev/name` node is served by `T`.
///
/// Fields drop in declaration order: the node, then the cdev, then the class and region, and
/// the data last, so nothing can reach `data` after it is gone.
#[pin_data]
pub(crate) struct ClassDevice<T: FileHandler> {
    node: DeviceNode,
    #[pin]
    cdev: Cdev,
    class: Class,
    region: ChrdevRegion,
    #[pin]
    data: T,
}

// SAFETY: the raw pointers are only handed to the C functions that own them; `T` is `Send`.
unsafe impl<T: FileHandler> Send for ClassDevice<T> {}
// SAFETY: `&ClassDevice` exposes only `&T`, and `T` is `Sync`.
unsafe impl<T: FileHandler> Sync for ClassDevice<T> {}

/// What `file.private_data` points at.
#[pin_data]
struct OpenState<T: FileHandler> {
    device: *const T,
    #[pin]
    file: T::OpenFile,
}

// SAFETY: `device` points at a `T: Sync` that outlives the state; `file` is `Send`.
unsafe impl<T: FileHandler> Send for OpenState<T> {}
// SAFETY: as above; `file` is `Sync`.
unsafe impl<T: FileHandler> Sync for OpenState<T> {}

impl<T: FileHandler> ClassDevice<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: (&raw const bindings::__this_module).cast_mut(),
        open: Some(Self::open),
        release: Some(Self::release),
        read: Some(Self::read),
        llseek: Some(bindings::default_llseek),
        unlocked_ioctl: Some(Self::ioctl),
        // The structures have one layout for 32- and 64-bit callers; only the pointer differs.
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: bindings::compat_ptr_ioctl,
        mmap: Some(Self::mmap),
        #[cfg(CONFIG_TRANSPARENT_HUGEPAGE)]
        get_unmapped_area: Some(super::vma::get_unmapped_area),
        ..pin_init::zeroed()
    };

    /// Creates class `name`, device `name` in it with sysfs `groups`, and `/dev/name`.
    pub(crate) fn new(
        name: &'static CStr,
        data: impl PinInit<T, Error>,
        groups: &'static Groups<T>,
    ) -> Result<Pin<KBox<Self>>> {
        let region = ChrdevRegion::new(name)?;
        let class = Class::new(name)?;
        let (devt, class_ptr) = (region.0, class.0);
        KBox::try_pin_init(
            try_pin_init!(&this in Self {
                region,
                class,
                data <- data,
                cdev <- pin_init!(Cdev {
                    // SAFETY: `slot` is the cdev's final, pinned location; `FOPS` is static.
                    inner <- Opaque::try_ffi_init(|slot: *mut bindings::cdev| unsafe {
                        bindings::cdev_init(slot, &Self::FOPS);
                        (*slot).owner = Self::FOPS.owner;
                        to_result(bindings::cdev_add(slot, devt, 1))
                    }),
                }? Error),
                node: {
                    // SAFETY: `data` was written above (fields initialise in this order), and
                    // it lives as long as the node, which is dropped first.
                    let data = unsafe { &raw const (*this.as_ptr()).data };
                    // SAFETY: the class is live, `groups` is static, and the format string has
                    // no conversions.
                    from_err_ptr(unsafe {
                        bindings::device_create_with_groups(
                            class_ptr,
                            core::ptr::null_mut(),
                            devt,
                            data.cast_mut().cast(),
                            groups.as_raw(),
                            name.as_char_ptr(),
                        )
                    })?;
                    DeviceNode { class: class_ptr, devt }
                },
            }),
            GFP_KERNEL,
        )
    }

    /// The device's data.
    pub(crate) fn data(&self) -> &T {
        &self.data
    }

    /// `file_operations.open`.
    ///
    /// # Safety
    ///
    /// Called by `chrdev_open` with a valid inode of this cdev and a valid file.
    unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `chrdev_open` only calls us for inodes of our cdev, which is the `inner` field
        // of the `cdev` field of a live `ClassDevice<T>` (open files keep the module, so it, alive).
        let this = unsafe {
            &*kernel::container_of!(
                (*inode)
                    .__bindgen_anon_5
                    .i_cdev
                    .cast::<Opaque<bindings::cdev>>(),
                Self,
                cdev.inner
            )
        };
        // SAFETY: `file` is valid during `open`; `f_flags` is set before `open` is called.
        let access = unsafe { (*file).f_flags } & bindings::O_ACCMODE;
        let writable = access != bindings::O_RDONLY;
        let state = KBox::try_pin_init(
            try_pin_init!(OpenState {
                device: &this.data,
                file <- this.data.open(writable),
            }),
            GFP_KERNEL_ACCOUNT,
        );
        match state {
            Ok(state) => {
                // SAFETY: `file` is valid during `open`; `release` takes the state back.
                unsafe { (*file).private_data = state.into_foreign() };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// `file_operations.release`.
    ///
    /// # Safety
    ///
    /// Called by the VFS once per file that `open` succeeded on.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `private_data` was set by `into_foreign` in `open` and is released once.
        let state = unsafe { Pin::<KBox<OpenState<T>>>::from_foreign((*file).private_data) };
        // SAFETY: the device outlives every open file (`.owner` pins the module).
        unsafe { &*state.device }.release(&state.file);
        drop(state);
        0
    }

    /// `file_operations.read`.
    ///
    /// # Safety
    ///
    /// Called by the VFS on a file that `open` succeeded on, with a user buffer of `len`
    /// bytes and a valid position.
    unsafe extern "C" fn read(
        file: *mut bindings::file,
        buf: *mut c_char,
        len: usize,
        pos: *mut bindings::loff_t,
    ) -> isize {
        // SAFETY: `open` set `private_data`; it lives until `release`, after every `read`.
        let state = unsafe { Pin::<KBox<OpenState<T>>>::borrow((*file).private_data) };
        // SAFETY: the device outlives every open file (`.owner` pins the module).
        let device = unsafe { &*state.device };
        let mut out = UserSlice::new(UserPtr::from_ptr(buf.cast()), len).writer();
        // SAFETY: the VFS passes a valid position that it serialises for this file.
        let mut offset = unsafe { *pos };
        match device.read(&state.file, &mut out, &mut offset) {
            Ok(n) => {
                // SAFETY: as above.
                unsafe { *pos = offset };
                n as isize
            }
            Err(e) => e.to_errno() as isize,
        }
    }

    /// `file_operations.unlocked_ioctl`.
    ///
    /// # Safety
    ///
    /// Called by the VFS on a file that `open` succeeded on.
    unsafe extern "C" fn ioctl(
        file: *mut bindings::file,
        cmd: kernel::ffi::c_uint,
        arg: kernel::ffi::c_ulong,
    ) -> kernel::ffi::c_long {
        // SAFETY: `open` set `private_data`; it lives until `release`, after every `ioctl`.
        let state = unsafe { Pin::<KBox<OpenState<T>>>::borrow((*file).private_data) };
        // SAFETY: the device outlives every open file (`.owner` pins the module).
        let device = unsafe { &*state.device };
        match device.ioctl(&state.file, cmd, UserPtr::from_addr(arg)) {
            Ok(ret) => ret as kernel::ffi::c_long,
            Err(e) => e.to_errno() as kernel::ffi::c_long,
        }
    }

    /// `file_operations.mmap`.
    ///
    /// # Safety
    ///
    /// Called by `mmap_region` on a file that `open` succeeded on, with a new VMA.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: `open` set `private_data`; the VMA being set up holds a reference to the file.
        let state = unsafe { Pin::<KBox<OpenState<T>>>::borrow((*file).private_data) };
        // SAFETY: the device outlives every open file (`.owner` pins the module).
        let device = unsafe { &*state.device };
        // SAFETY: this is `f_op->mmap`, where the VMA is new and ours to set up.
        let vma = unsafe { VmaNew::from_raw(vma) };
        match device.mmap(&state.file, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}
