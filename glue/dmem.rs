// SPDX-License-Identifier: GPL-2.0

//! The dmem cgroup controller (`kernel/cgroup/dmem.c`): each card is one region, and every
//! allocation is charged to the allocating task's cgroup before it is made, so `dmem.max`
//! bounds what a container takes of a card and `dmem.current` shows what it holds.
//!
//! 7.2's bindings do not include `<linux/cgroup_dmem.h>`, so its four functions are declared
//! here. On kernels without the controller (Debian's 7.2) a region is nothing and every charge
//! succeeds: the per-user limit is then the only quota.

use kernel::prelude::*;

#[cfg(CONFIG_CGROUP_DMEM)]
mod raw {
    use kernel::ffi::{c_char, c_int};

    /// `struct dmem_cgroup_region`, opaque.
    #[repr(C)]
    pub(super) struct Region {
        _opaque: [u8; 0],
    }

    /// `struct dmem_cgroup_pool_state`, opaque.
    #[repr(C)]
    pub(super) struct PoolState {
        _opaque: [u8; 0],
    }

    extern "C" {
        pub(super) fn dmem_cgroup_register_region(
            size: u64,
            name_fmt: *const c_char,
            ...
        ) -> *mut Region;
        pub(super) fn dmem_cgroup_unregister_region(region: *mut Region);
        pub(super) fn dmem_cgroup_try_charge(
            region: *mut Region,
            size: u64,
            ret_pool: *mut *mut PoolState,
            ret_limit_pool: *mut *mut PoolState,
        ) -> c_int;
        pub(super) fn dmem_cgroup_uncharge(pool: *mut PoolState, size: u64);
    }
}

/// A card's region, unregistered on drop.
///
/// # Invariants
///
/// `region` is NULL or a region `dmem_cgroup_register_region` returned and nothing has
/// unregistered.
pub(crate) struct DmemRegion {
    #[cfg(CONFIG_CGROUP_DMEM)]
    region: *mut raw::Region,
}

// SAFETY: the controller serialises its use of a region with its own lock; the pointer may be
// used and unregistered from any thread.
unsafe impl Send for DmemRegion {}
// SAFETY: `&DmemRegion` only charges, which the controller makes safe to do concurrently.
unsafe impl Sync for DmemRegion {}

impl DmemRegion {
    /// Registers region `name` (as `dmem.capacity` lists it) of `bytes`. Without the
    /// controller, or for an empty card, there is no region and charges always succeed.
    pub(crate) fn register(name: &CStr, bytes: u64) -> Result<Self> {
        #[cfg(CONFIG_CGROUP_DMEM)]
        {
            // SAFETY: the format is a literal `%s` taking exactly `name`, a valid C string that
            // the controller copies before returning.
            let region = unsafe {
                raw::dmem_cgroup_register_region(bytes, c"%s".as_char_ptr(), name.as_char_ptr())
            };
            // NULL (an empty card) is no region; an ERR_PTR is the error.
            let region = kernel::error::from_err_ptr(region)?;
            Ok(Self { region })
        }
        #[cfg(not(CONFIG_CGROUP_DMEM))]
        {
            let _ = (name, bytes);
            Ok(Self {})
        }
    }

    /// Charges `bytes` to the calling task's cgroup: `ENOMEM` when that would take it (or an
    /// ancestor) past `dmem.max`, as a full card would.
    pub(crate) fn try_charge(&self, bytes: u64) -> Result<DmemCharge> {
        #[cfg(CONFIG_CGROUP_DMEM)]
        {
            if self.region.is_null() {
                return Ok(DmemCharge {
                    pool: core::ptr::null_mut(),
                    bytes,
                });
            }
            let mut pool = core::ptr::null_mut();
            // SAFETY: `region` is registered (invariant); `pool` is a valid place for the
            // charged pool; no limit pool is asked for, so none needs putting.
            let ret = unsafe {
                raw::dmem_cgroup_try_charge(self.region, bytes, &mut pool, core::ptr::null_mut())
            };
            match kernel::error::to_result(ret) {
                Ok(()) => Ok(DmemCharge { pool, bytes }),
                Err(e) if e == EAGAIN => Err(ENOMEM),
                Err(e) => Err(e),
            }
        }
        #[cfg(not(CONFIG_CGROUP_DMEM))]
        Ok(DmemCharge { bytes })
    }
}

impl Drop for DmemRegion {
    fn drop(&mut self) {
        #[cfg(CONFIG_CGROUP_DMEM)]
        // SAFETY: `region` is NULL (which the function ignores) or registered and, by the
        // invariant, not yet unregistered. Charges still outstanding keep their pools, and the
        // pools the region, alive: uncharging them later stays valid.
        unsafe {
            raw::dmem_cgroup_unregister_region(self.region)
        };
    }
}

/// Bytes charged to a cgroup's pool of a region, uncharged on drop.
///
/// # Invariants
///
/// `pool` is NULL or the pool `dmem_cgroup_try_charge` charged `bytes` to, not yet uncharged.
pub(crate) struct DmemCharge {
    #[cfg(CONFIG_CGROUP_DMEM)]
    pool: *mut raw::PoolState,
    bytes: u64,
}

// SAFETY: a charged pool is counted (it holds its css) and may be uncharged from any thread.
unsafe impl Send for DmemCharge {}
// SAFETY: `&DmemCharge` only reads `bytes`.
unsafe impl Sync for DmemCharge {}

impl Drop for DmemCharge {
    fn drop(&mut self) {
        #[cfg(CONFIG_CGROUP_DMEM)]
        // SAFETY: by the invariant, `pool` is NULL (ignored) or holds exactly this charge.
        unsafe {
            raw::dmem_cgroup_uncharge(self.pool, self.bytes)
        };
    }
}
