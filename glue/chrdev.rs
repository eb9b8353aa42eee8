// SPDX-License-Identifier: GPL-2.0

//! Character devices that are the `dev` nodes of the devices of a class of their own:
//! `/sys/class/<name>/<name>/dev` and `/dev/<name>`, `/dev/<name>1`, ... added and removed at
//! run time.
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
    new_mutex,
    prelude::*,
    str::CString,
    sync::{Arc, Mutex},
    types::{ForeignOwnable, Opaque},
    uaccess::{UserPtr, UserSlice, UserSliceWriter},
};

/// What a device does with its open files.
pub(crate) trait FileHandler: Send + Sync + Sized + 'static {
    /// Per-open-file state, dropped on the last `close`.
    type OpenFile: Send + Sync;

    /// Called on `open`; `writable` when the file was opened for writing; `mapping` reaches
    /// the file's mappings.
    fn open(&self, writable: bool, mapping: FileMapping) -> impl PinInit<Self::OpenFile, Error>;

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

/// Most devices one class can hold: its minors, `0..MAX_DEVICES`.
pub(crate) const MAX_DEVICES: u32 = 32;

/// A registered dev_t range of [`MAX_DEVICES`] minors.
struct ChrdevRegion(bindings::dev_t);

impl ChrdevRegion {
    fn new(name: &'static CStr) -> Result<Self> {
        let mut devt = 0;
        // SAFETY: `devt` is a valid out-pointer and `name` outlives the registration.
        to_result(unsafe {
            bindings::alloc_chrdev_region(&mut devt, 0, MAX_DEVICES, name.as_char_ptr())
        })?;
        Ok(Self(devt))
    }

    fn devt(&self, minor: u32) -> bindings::dev_t {
        self.0 + minor
    }
}

impl Drop for ChrdevRegion {
    fn drop(&mut self) {
        // SAFETY: the region was registered in `new`.
        unsafe { bindings::unregister_chrdev_region(self.0, MAX_DEVICES) };
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

/// The `struct cdev` serving every minor of the region, removed on drop.
#[pin_data(PinnedDrop)]
struct Cdev {
    #[pin]
    inner: Opaque<bindings::cdev>,
}

#[pinned_drop]
impl PinnedDrop for Cdev {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: `inner` was initialised and added by `DeviceClass::new`; after `cdev_del`
        // no new `open` reaches it, and open files pin the module and so this memory.
        unsafe { bindings::cdev_del(self.inner.get()) };
    }
}

/// A device of the class with sysfs attributes over its `T`; unregistered on drop, which
/// removes `/dev/<name>` and waits for running sysfs callbacks.
struct DeviceNode(*mut bindings::device);

impl DeviceNode {
    // Cards at run time (configfs) only.
    #[cfg(CONFIG_CONFIGFS_FS)]
    /// Sends `poll()` waiters on the device's attribute `attr` a change.
    fn notify(&self, attr: &CStr) {
        // SAFETY: the device is registered while `self` exists; `attr` is a C string.
        unsafe {
            bindings::sysfs_notify(
                &raw mut (*self.0).kobj,
                core::ptr::null(),
                attr.as_char_ptr(),
            )
        };
    }
}

impl Drop for DeviceNode {
    fn drop(&mut self) {
        // SAFETY: created by `device_create_with_groups` in `DeviceClass::add`, dropped once.
        unsafe { bindings::device_unregister(self.0) };
    }
}

/// One device of a [`DeviceClass`]: its node first, so the data outlives the sysfs files.
struct Registered<T> {
    /// Held for its `Drop`, which unregisters the device.
    _node: DeviceNode,
    data: Arc<T>,
}

/// A minor of a [`DeviceClass`].
enum Slot<T> {
    Empty,
    Live(Registered<T>),
    /// Removed, its device being unregistered (outside the lock): not free yet, or a new device
    /// of the same name would meet the old one's sysfs directory (`EEXIST`).
    Going,
}

/// A class `/sys/class/<name>` with up to [`MAX_DEVICES`] devices, each `/dev/<name>` (minor
/// 0) or `/dev/<name><minor>`, served by an `Arc<T>`. Devices come and go at run time; an open
/// file holds its own `Arc<T>`, so a device removed while open keeps serving that file.
///
/// Fields drop in declaration order: the devices, then the cdev, then the class and region.
#[pin_data]
pub(crate) struct DeviceClass<T: FileHandler> {
    #[pin]
    devices: Mutex<KVec<Slot<T>>>,
    #[pin]
    cdev: Cdev,
    class: Class,
    region: ChrdevRegion,
    name: &'static CStr,
    groups: &'static Groups<T>,
}

// SAFETY: the raw pointers are only handed to the C functions that own them; `T` is `Send`.
unsafe impl<T: FileHandler> Send for DeviceClass<T> {}
// SAFETY: the device table is behind a mutex; `T` is `Sync`.
unsafe impl<T: FileHandler> Sync for DeviceClass<T> {}

/// What `file.private_data` points at.
#[pin_data]
struct OpenState<T: FileHandler> {
    #[pin]
    file: T::OpenFile,
    device: Arc<T>,
}

/// The address space of an open file's inode, which every mapping of the file hangs off.
/// Holds a reference to the inode.
pub(crate) struct FileMapping(*mut bindings::inode);

// SAFETY: the inode reference may be used and dropped from any thread.
unsafe impl Send for FileMapping {}
// SAFETY: `unmap_all` may run concurrently; the kernel serialises it.
unsafe impl Sync for FileMapping {}

impl FileMapping {
    /// # Safety
    ///
    /// `inode` is a live inode.
    unsafe fn new(inode: *mut bindings::inode) -> Self {
        // SAFETY: per the contract; the reference is dropped in `drop`.
        unsafe { bindings::ihold(inode) };
        Self(inode)
    }

    /// Removes every page of every mapping of the file from page tables, so the next access
    /// faults.
    pub(crate) fn unmap_all(&self) {
        // SAFETY: the inode is live while we hold a reference, and with it its `i_mapping`.
        unsafe { bindings::unmap_mapping_range((*self.0).i_mapping, 0, 0, 1) };
    }
}

impl Drop for FileMapping {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `new`.
        unsafe { bindings::iput(self.0) };
    }
}

impl<T: FileHandler> DeviceClass<T> {
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

    /// Creates class `name` and the character device region behind its devices, with none yet;
    /// each device gets sysfs `groups`.
    pub(crate) fn new(name: &'static CStr, groups: &'static Groups<T>) -> Result<Arc<Self>> {
        let region = ChrdevRegion::new(name)?;
        let class = Class::new(name)?;
        let first = region.0;
        let mut devices = KVec::with_capacity(MAX_DEVICES as usize, GFP_KERNEL)?;
        for _ in 0..MAX_DEVICES {
            devices.push(Slot::Empty, GFP_KERNEL)?;
        }
        Arc::pin_init(
            try_pin_init!(Self {
                devices <- new_mutex!(devices),
                cdev <- pin_init!(Cdev {
                    // SAFETY: `slot` is the cdev's final, pinned location; `FOPS` is static.
                    inner <- Opaque::try_ffi_init(|slot: *mut bindings::cdev| unsafe {
                        bindings::cdev_init(slot, &Self::FOPS);
                        (*slot).owner = Self::FOPS.owner;
                        to_result(bindings::cdev_add(slot, first, MAX_DEVICES))
                    }),
                }? Error),
                class,
                region,
                name,
                groups,
            }),
            GFP_KERNEL,
        )
    }

    /// Adds device `minor` (`/dev/<name>` for 0, `/dev/<name><minor>` otherwise) serving
    /// `data`. `EBUSY` if the minor is taken, `EINVAL` past [`MAX_DEVICES`].
    pub(crate) fn add(&self, minor: u32, data: Arc<T>) -> Result {
        if minor >= MAX_DEVICES {
            return Err(EINVAL);
        }
        let name = if minor == 0 {
            CString::try_from_fmt(fmt!("{}", self.name.to_str()?))?
        } else {
            CString::try_from_fmt(fmt!("{}{}", self.name.to_str()?, minor))?
        };
        let mut devices = self.devices.lock();
        let slot = devices.get_mut(minor as usize).ok_or(EINVAL)?;
        if !matches!(slot, Slot::Empty) {
            return Err(EBUSY);
        }
        // SAFETY: the class is live; `groups` is static; the driver data is the `T` that the
        // registration keeps alive until after the device is unregistered; the name is the
        // class name and a number, so it has no `%` conversions.
        let dev = from_err_ptr(unsafe {
            bindings::device_create_with_groups(
                self.class.0,
                core::ptr::null_mut(),
                self.region.devt(minor),
                Arc::as_ptr(&data).cast_mut().cast(),
                self.groups.as_raw(),
                name.as_char_ptr(),
            )
        })?;
        *slot = Slot::Live(Registered {
            _node: DeviceNode(dev),
            data,
        });
        Ok(())
    }

    // Cards at run time (configfs) only.
    #[cfg(CONFIG_CONFIGFS_FS)]
    /// Adds the device that `make` makes for the lowest free minor, and returns it; `ENOSPC`
    /// when all minors are taken.
    pub(crate) fn add_first_free(&self, make: impl Fn(u32) -> Result<Arc<T>>) -> Result<Arc<T>> {
        for minor in 0..MAX_DEVICES {
            if !matches!(self.devices.lock().get(minor as usize), Some(Slot::Empty)) {
                continue;
            }
            let data = make(minor)?;
            match self.add(minor, data.clone()) {
                // Taken by a racing add since: try the next one.
                Err(e) if e == EBUSY => continue,
                result => return result.map(|()| data),
            }
        }
        Err(ENOSPC)
    }

    // Cards at run time (configfs) only.
    #[cfg(CONFIG_CONFIGFS_FS)]
    /// Removes device `minor` (its node and sysfs directory), returning its data; files open
    /// on it keep their own reference.
    pub(crate) fn remove(&self, minor: u32) -> Option<Arc<T>> {
        let registered = {
            let mut devices = self.devices.lock();
            let slot = devices.get_mut(minor as usize)?;
            match core::mem::replace(slot, Slot::Going) {
                Slot::Live(registered) => registered,
                other => {
                    *slot = other;
                    return None;
                }
            }
        };
        // Unregistered outside the lock: it waits for running sysfs callbacks, which may
        // look devices up. The minor is free again only once its device is gone.
        let Registered { _node, data } = registered;
        drop(_node);
        if let Some(slot) = self.devices.lock().get_mut(minor as usize) {
            *slot = Slot::Empty;
        }
        Some(data)
    }

    /// The data of device `minor`, if there is one.
    pub(crate) fn get(&self, minor: u32) -> Option<Arc<T>> {
        let devices = self.devices.lock();
        match devices.get(minor as usize)? {
            Slot::Live(registered) => Some(registered.data.clone()),
            Slot::Empty | Slot::Going => None,
        }
    }

    /// Every device as `(minor, data)`, in minor order.
    pub(crate) fn all(&self) -> Result<KVec<(u32, Arc<T>)>> {
        let devices = self.devices.lock();
        let mut out = KVec::new();
        for (minor, slot) in devices.iter().enumerate() {
            if let Slot::Live(registered) = slot {
                out.push((minor as u32, registered.data.clone()), GFP_KERNEL)?;
            }
        }
        Ok(out)
    }

    // Cards at run time (configfs) only.
    #[cfg(CONFIG_CONFIGFS_FS)]
    /// Wakes `poll()` waiters on attribute `attr` of device `minor`.
    pub(crate) fn notify(&self, minor: u32, attr: &CStr) {
        let devices = self.devices.lock();
        if let Some(Slot::Live(registered)) = devices.get(minor as usize) {
            registered._node.notify(attr);
        }
    }

    /// `file_operations.open`: finds the device by minor; `ENODEV` once it is removed.
    ///
    /// # Safety
    ///
    /// Called by `chrdev_open` with a valid inode of this cdev and a valid file.
    unsafe extern "C" fn open(inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `chrdev_open` only calls us for inodes of our cdev, which is the `inner` field
        // of the `cdev` field of a live `DeviceClass<T>` (open files keep the module, so it,
        // alive).
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
        // SAFETY: `inode` is valid during `open`.
        let minor = unsafe { (*inode).i_rdev } - this.region.0;
        let Some(device) = this.get(minor) else {
            return ENODEV.to_errno();
        };
        // SAFETY: `file` is valid during `open`; `f_flags` is set before `open` is called.
        let access = unsafe { (*file).f_flags } & bindings::O_ACCMODE;
        let writable = access != bindings::O_RDONLY;
        // SAFETY: `inode` is valid during `open`.
        let mapping = unsafe { FileMapping::new(inode) };
        let state = KBox::try_pin_init(
            try_pin_init!(OpenState {
                file <- device.open(writable, mapping),
                device,
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
        state.device.release(&state.file);
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
        let device = &state.device;
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
        let device = &state.device;
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
        let device = &state.device;
        // SAFETY: this is `f_op->mmap`, where the VMA is new and ours to set up.
        let vma = unsafe { VmaNew::from_raw(vma) };
        match device.mmap(&state.file, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}
