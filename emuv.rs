// SPDX-License-Identifier: GPL-2.0

//! emuv: emulated NVIDIA GeForce GPU memory.
//!
//! Picks a card from the model table, builds its VRAM pool (physical plus virtual, lazy or
//! eager) from the module parameters, and shows it through `/dev/emuv` and
//! `/sys/class/emuv/emuv/`. This file only wires the parts together.

mod client;
mod device;
mod glue;
mod gpu_db;
mod page_ranges;
mod params;
mod report;
mod uapi;
mod vram_pool;

use client::UserCharges;
use device::{EmuvDevice, GROUPS};
use glue::chrdev::ClassDevice;
use kernel::prelude::*;
use vram_pool::VramPool;

module! {
    type: EmuvModule,
    name: "emuv",
    authors: ["emuv developers"],
    description: "Emulated NVIDIA GeForce GPU memory (RTX 40xx/50xx)",
    license: "GPL",
}

struct EmuvModule {
    device: Pin<KBox<ClassDevice<EmuvDevice>>>,
}

impl kernel::Module for EmuvModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let settings = params::settings();
        let model = settings.model;
        let pool_config = settings.pool;
        if pool_config.physical_bytes != model.vram_bytes() {
            pr_notice!(
                "physical VRAM set to {} MiB; a real {} has {} GiB\n",
                pool_config.physical_bytes >> 20,
                model.name,
                model.vram_gib
            );
        }
        for twin in gpu_db::find_by_device_id(model.device_id).filter(|m| m.key != model.key) {
            pr_notice!(
                "PCI ID {:04x}:{:04x} is shared with the {} GiB {}: tools tell them apart by memory size\n",
                gpu_db::NVIDIA_VENDOR_ID,
                model.device_id,
                twin.vram_gib,
                twin.name
            );
        }
        let pool = VramPool::new(pool_config)?;
        let user_charges = UserCharges::new(settings.user_limit)?;
        let device = ClassDevice::new(
            c"emuv",
            EmuvDevice::new(model, pool, settings.debug, settings.limits, user_charges),
            &GROUPS,
        )?;
        pr_info!(
            "emulating {} [{:04x}:{:04x}]: {} MiB physical + {} MiB virtual VRAM, {} allocation\n",
            model.name,
            gpu_db::NVIDIA_VENDOR_ID,
            model.device_id,
            pool_config.physical_bytes >> 20,
            pool_config.virtual_bytes >> 20,
            pool_config.strategy.name()
        );
        Ok(Self { device })
    }
}

impl Drop for EmuvModule {
    fn drop(&mut self) {
        let device = self.device.data();
        if device.debug {
            pr_info!("unloading: {:?}\n", device.pool.stats());
        }
        pr_info!("unloaded {}\n", device.model.name);
    }
}
