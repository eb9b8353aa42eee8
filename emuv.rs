// SPDX-License-Identifier: GPL-2.0

//! emuv: emulated NVIDIA GeForce GPU memory.
//!
//! Picks a card from the model table, builds `gpu_count` cards of it, each with its own VRAM
//! pool (physical plus virtual, lazy or eager), from the module parameters, and shows them
//! through `/dev/emuv`, `/dev/emuv1`, ... and `/sys/class/emuv/`. This file only wires the
//! parts together.

mod client;
#[cfg(CONFIG_CONFIGFS_FS)]
mod configfs;
mod device;
mod gate;
mod glue;
mod gpu_db;
mod page_ranges;
mod params;
mod report;
mod uapi;
mod vram_pool;

use client::UserCharges;
use device::{EmuvDevice, GROUPS};
use glue::chrdev::DeviceClass;
use kernel::{prelude::*, sync::Arc};
use vram_pool::VramPool;

module! {
    type: EmuvModule,
    name: "emuv",
    authors: ["emuv developers"],
    description: "Emulated NVIDIA GeForce GPU memory (RTX 40xx/50xx)",
    license: "GPL",
}

struct EmuvModule {
    /// `gpu_count`'s cards in configfs, removed before the subsystem.
    #[cfg(CONFIG_CONFIGFS_FS)]
    _module_card_dirs: KVec<glue::configfs::KernelGroup>,
    /// `/sys/kernel/config/emuv`: cards at run time.
    #[cfg(CONFIG_CONFIGFS_FS)]
    _configfs: Pin<KBox<glue::configfs::Root<configfs::CardsDir>>>,
    cards: Arc<DeviceClass<EmuvDevice>>,
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
        if pool_config.strategy == vram_pool::Strategy::Eager {
            VramPool::check_eager_fits(&pool_config, u64::from(settings.gpu_count))?;
        }
        let cards = DeviceClass::new(c"emuv", &GROUPS)?;
        for index in 0..settings.gpu_count {
            let card = Arc::pin_init(
                EmuvDevice::new(
                    index,
                    model,
                    VramPool::new(pool_config)?,
                    settings.debug,
                    settings.limits,
                    UserCharges::new(settings.user_limit)?,
                ),
                GFP_KERNEL,
            )?;
            cards.add(index, card)?;
        }
        pr_info!(
            "emulating {}{} [{:04x}:{:04x}]: {} MiB physical + {} MiB virtual VRAM{}, {} allocation\n",
            model.name,
            if settings.gpu_count > 1 { " cards" } else { "" },
            gpu_db::NVIDIA_VENDOR_ID,
            model.device_id,
            pool_config.physical_bytes >> 20,
            pool_config.virtual_bytes >> 20,
            if settings.gpu_count > 1 { " each" } else { "" },
            pool_config.strategy.name()
        );
        if settings.gpu_count > 1 {
            pr_info!(
                "{} cards: /dev/emuv to /dev/emuv{}\n",
                settings.gpu_count,
                settings.gpu_count - 1
            );
        }
        #[cfg(CONFIG_CONFIGFS_FS)]
        let (configfs, module_card_dirs) = {
            let subsystem =
                KBox::pin_init(configfs::subsystem(cards.clone(), settings), GFP_KERNEL)?;
            let dirs = configfs::module_card_dirs(&subsystem, &cards, settings)?;
            // Nothing below can fail `init`.
            subsystem.accept_mkdir();
            (subsystem, dirs)
        };
        Ok(Self {
            #[cfg(CONFIG_CONFIGFS_FS)]
            _module_card_dirs: module_card_dirs,
            #[cfg(CONFIG_CONFIGFS_FS)]
            _configfs: configfs,
            cards,
        })
    }
}

impl Drop for EmuvModule {
    fn drop(&mut self) {
        for (index, card) in self.cards.all().unwrap_or_default() {
            if card.debug {
                pr_info!("unloading card {index}: {:?}\n", card.pool.stats());
            }
        }
        pr_info!("unloaded\n");
    }
}
