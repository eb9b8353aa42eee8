// SPDX-License-Identifier: GPL-2.0

//! What 7.2's Rust configfs API (`kernel::configfs`) lacks for emuv's card directories:
//!
//! - **A subsystem whose `mkdir` reaches its data.** `kernel::configfs::Subsystem` finds its
//!   data in `make_group` by testing `cg_subsys` for NULL, but registration sets the root
//!   group's `cg_subsys` to the subsystem itself (`link_group()`), so the data it hands over is
//!   read from the wrong place (seen as a refcount warning on Debian's 7.2 kernel). [`Root`] is
//!   the subsystem done by hand; the card directories under it are the API's `Group`s.
//! - **Refusing `rmdir`.** The API's `drop_item` cannot fail; configfs refuses `rmdir` of an
//!   item something depends on (`configfs_depend_item_unlocked`), and that takes the item,
//!   which the API keeps private. [`placed`] learns it when the group is created.
//! - **Directories the kernel creates** (the cards of `gpu_count`): the API makes groups only
//!   on `mkdir`; [`KernelGroup`] registers one under the subsystem (`configfs_register_group`),
//!   where configfs refuses `rmdir` by itself.

use kernel::{
    bindings,
    configfs::{Group, HasGroup},
    error::to_result,
    ffi::c_char,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Relaxed, Release},
        Arc,
    },
    types::Opaque,
};

/// What a [`Root`] does on `mkdir`.
pub(crate) trait RootOps: Send + Sync + Sized + 'static {
    /// The data of the directories `mkdir` makes.
    type Child: 'static;

    /// The group for a new directory `name`, or the error `mkdir` fails with.
    fn make_group(&self, name: &CStr) -> Result<impl PinInit<Group<Self::Child>, Error>>;
}

/// A configfs subsystem, `/sys/kernel/config/<name>`, whose `mkdir` makes `Group`s through
/// `D`; unregistered on drop.
#[pin_data(PinnedDrop)]
pub(crate) struct Root<D: RootOps> {
    #[pin]
    subsystem: Opaque<bindings::configfs_subsystem>,
    data: D,
    /// Set once registered: a failed registration drops the value too, with nothing to undo.
    registered: Atomic<bool>,
    /// Set by [`Root::accept_mkdir`]: until then `mkdir` fails with `EAGAIN`.
    accepting: Atomic<bool>,
}

// SAFETY: configfs serialises its use of the subsystem; `D` is `Send`.
unsafe impl<D: RootOps> Send for Root<D> {}
// SAFETY: `&Root` exposes only `&D`, and `D` is `Sync`.
unsafe impl<D: RootOps> Sync for Root<D> {}

impl<D: RootOps> Root<D> {
    const GROUP_OPS: bindings::configfs_group_operations = bindings::configfs_group_operations {
        make_group: Some(Self::make_group),
        drop_item: Some(Self::drop_item),
        ..pin_init::zeroed()
    };

    const ITEM_TYPE: bindings::config_item_type = bindings::config_item_type {
        ct_owner: (&raw const bindings::__this_module).cast_mut(),
        ct_group_ops: &Self::GROUP_OPS,
        ..pin_init::zeroed()
    };

    /// Registers subsystem `name` over `data`.
    pub(crate) fn new(name: &'static CStr, data: D) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            subsystem <- pin_init::init_zeroed().chain(
                |place: &mut Opaque<bindings::configfs_subsystem>| {
                    // SAFETY: the subsystem is zeroed, as `config_group_init_type_name` wants;
                    // the name and item type are static.
                    unsafe {
                        bindings::config_group_init_type_name(
                            &raw mut (*place.get()).su_group,
                            name.as_char_ptr(),
                            &Self::ITEM_TYPE,
                        );
                        bindings::__mutex_init(
                            &raw mut (*place.get()).su_mutex,
                            kernel::optional_name!().as_char_ptr(),
                            kernel::static_lock_class!().as_ptr(),
                        );
                    }
                    Ok(())
                }
            ),
            data,
            registered: Atomic::new(false),
            accepting: Atomic::new(false),
        })
        .pin_chain(|this| {
            // SAFETY: initialised above, at its final, pinned place.
            to_result(unsafe { bindings::configfs_register_subsystem(this.subsystem.get()) })?;
            this.registered.store(true, Relaxed);
            Ok(())
        })
    }

    /// Lets `mkdir` make directories from now on. Call once nothing can fail the module's
    /// `init` any more: a directory made during `init` pins the module (configfs takes a
    /// reference on a module that is still coming), but a failing `init` frees the module
    /// whatever its references, leaving the directory pointing into freed code.
    pub(crate) fn accept_mkdir(&self) {
        self.accepting.store(true, Release);
    }

    fn root_group(&self) -> *mut bindings::config_group {
        // SAFETY: a field projection inside our own subsystem.
        unsafe { &raw mut (*self.subsystem.get()).su_group }
    }

    /// `configfs_group_operations.make_group` of the root directory.
    ///
    /// # Safety
    ///
    /// Called by configfs with our root group and a NUL-terminated name.
    unsafe extern "C" fn make_group(
        group: *mut bindings::config_group,
        name: *const c_char,
    ) -> *mut bindings::config_group {
        // SAFETY: only our root group has these operations; it is the `su_group` of the
        // `subsystem` field of a live `Root<D>`.
        let this = unsafe {
            let subsystem = kernel::container_of!(group, bindings::configfs_subsystem, su_group);
            &*kernel::container_of!(
                subsystem.cast::<Opaque<bindings::configfs_subsystem>>(),
                Self,
                subsystem
            )
        };
        if !this.accepting.load(Acquire) {
            return EAGAIN.to_ptr();
        }
        // SAFETY: configfs passes the new directory's NUL-terminated name.
        let name = unsafe { CStr::from_char_ptr(name) };
        let made = this
            .data
            .make_group(name)
            .and_then(|init| Arc::pin_init(init, GFP_KERNEL));
        match made {
            // The item's reference: its type's `release` takes it back (`Arc::from_raw`).
            // SAFETY: `Arc::into_raw` gives a pointer to a live `Group`.
            Ok(child) => unsafe {
                <Group<D::Child> as HasGroup<D::Child>>::group(Arc::into_raw(child)).cast_mut()
            },
            Err(e) => e.to_ptr(),
        }
    }

    /// `configfs_group_operations.drop_item`: `rmdir` done; the directory's reference goes.
    ///
    /// # Safety
    ///
    /// Called by configfs once per item that `make_group` made.
    unsafe extern "C" fn drop_item(
        _group: *mut bindings::config_group,
        item: *mut bindings::config_item,
    ) {
        // SAFETY: the reference that `make_group` handed to configfs.
        unsafe { bindings::config_item_put(item) };
    }
}

#[pinned_drop]
impl<D: RootOps> PinnedDrop for Root<D> {
    fn drop(self: Pin<&mut Self>) {
        if self.registered.load(Relaxed) {
            // SAFETY: registered in `new`; every directory in it is gone (each pins the
            // module).
            unsafe { bindings::configfs_unregister_subsystem(self.subsystem.get()) };
        }
        // SAFETY: initialised in `new`, before registration could fail.
        unsafe { bindings::mutex_destroy(&raw mut (*self.subsystem.get()).su_mutex) };
    }
}

/// The item of a group that configfs holds: a directory under the subsystem.
pub(crate) struct Item(*mut bindings::config_group);

// SAFETY: the pointer is only handed to configfs functions, which may run on any thread.
unsafe impl Send for Item {}
// SAFETY: as above.
unsafe impl Sync for Item {}

impl Item {
    /// Makes `rmdir` of the directory fail with `EBUSY` until [`Item::release_rmdir`].
    ///
    /// Call from a configfs callback of the item itself (an attribute's `store`), as
    /// `configfs_depend_item_unlocked` requires.
    pub(crate) fn refuse_rmdir(&self) -> Result {
        // SAFETY: the group is live: configfs calls the item's `store` only while its directory
        // exists, and the group was linked into the subsystem (`cg_subsys` set) by `mkdir`.
        to_result(unsafe {
            bindings::configfs_depend_item_unlocked((*self.0).cg_subsys, &raw mut (*self.0).cg_item)
        })
    }

    /// Undoes one [`Item::refuse_rmdir`].
    ///
    /// # Safety
    ///
    /// A successful `refuse_rmdir` of this item was not undone yet (so the directory, pinned
    /// by it, still exists).
    pub(crate) unsafe fn release_rmdir(&self) {
        // SAFETY: per the contract, the item is pinned by our dependency.
        unsafe { bindings::configfs_undepend_item(&raw mut (*self.0).cg_item) };
    }
}

/// Wraps the initializer of a group so that `found` learns the group's [`Item`] once it is
/// built in place.
pub(crate) fn placed<D: 'static>(
    init: impl PinInit<Group<D>, Error>,
    found: impl FnOnce(Item),
) -> impl PinInit<Group<D>, Error> {
    // SAFETY: the closure initialises `slot` fully with `init` or fails without touching it
    // further; on success the group stays where it was built (pinned).
    unsafe {
        pin_init::pin_init_from_closure(move |slot: *mut Group<D>| {
            init.__pinned_init(slot)?;
            // SAFETY: `slot` now holds an initialised `Group<D>`.
            let group = <Group<D> as HasGroup<D>>::group(slot).cast_mut();
            found(Item(group));
            Ok(())
        })
    }
}

/// A directory of `Group<D>` that the kernel, not `mkdir`, put under a subsystem; removed on
/// drop. configfs refuses its `rmdir` (`EPERM`).
pub(crate) struct KernelGroup(*mut bindings::config_group);

// SAFETY: the pointer is only handed to configfs functions, which may run on any thread.
unsafe impl Send for KernelGroup {}
// SAFETY: `&KernelGroup` exposes nothing.
unsafe impl Sync for KernelGroup {}

impl KernelGroup {
    /// Builds `group` and registers it under `parent`'s root directory.
    ///
    /// `parent` must outlive the returned value (drop it first).
    pub(crate) fn register<P: RootOps, D: 'static>(
        parent: &Root<P>,
        group: impl PinInit<Group<D>, Error>,
    ) -> Result<Self> {
        let group = Arc::pin_init(group, GFP_KERNEL)?;
        // The reference the group's item holds: the item type's `release` (when configfs drops
        // the last reference of the item) takes it back with `Arc::from_raw`, as for groups
        // made by `mkdir`.
        let raw = Arc::into_raw(group);
        // SAFETY: `raw` points at a live `Group<D>`.
        let group = unsafe { <Group<D> as HasGroup<D>>::group(raw).cast_mut() };
        let root = parent.root_group();
        // SAFETY: both groups are initialised; `group` is linked to no parent yet.
        let result = to_result(unsafe { bindings::configfs_register_group(root, group) });
        if let Err(e) = result {
            // SAFETY: the item's one reference, from its initialisation: its release frees it.
            unsafe { bindings::config_item_put(&raw mut (*group).cg_item) };
            return Err(e);
        }
        Ok(Self(group))
    }
}

impl Drop for KernelGroup {
    fn drop(&mut self) {
        // SAFETY: registered in `register`; then the item's own reference goes, which frees
        // the group through its release.
        unsafe {
            bindings::configfs_unregister_group(self.0);
            bindings::config_item_put(&raw mut (*self.0).cg_item);
        }
    }
}
