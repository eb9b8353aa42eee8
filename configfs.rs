// SPDX-License-Identifier: GPL-2.0

//! Cards at run time: `/sys/kernel/config/emuv/<name>/`.
//!
//! `mkdir` makes a card's settings (`gpu_model`, `physical_vram_mb`, `virtual_vram_mb`,
//! `lazy_allocation`, `vram_limit_per_file_mb`; defaults from the module parameters), `enabled`
//! 1 creates the card at the lowest free index (`index` says which), 0 removes it: `EBUSY`
//! while a file is open on it (a mapping keeps its file open). While enabled, the settings are
//! `EBUSY` and `rmdir` is refused (`EBUSY`). `fail` and `ecc_errors` are the card's sysfs
//! attributes of the same names. The cards of `gpu_count` are here too, as `emuv`, `emuv1`,
//! ...: enabled, read-only, not removable (configfs refuses their `rmdir`).

use crate::{
    client::{Limits, UserCharges},
    device::{node_name, show_ecc_errors, show_fail, store_ecc_errors, store_fail, EmuvDevice},
    glue::{
        chrdev::DeviceClass,
        configfs::{placed, Item, KernelGroup, Root, RootOps},
    },
    gpu_db::{GpuModel, MODELS},
    params::{parse_model, parse_number, Settings},
    vram_pool::{PoolConfig, Strategy, VramPool, MAX_TIER_BYTES},
    THIS_MODULE,
};
use core::fmt::Write;
use kernel::{
    configfs::{self, AttributeOperations, ItemType},
    configfs_attrs, new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    str::{kstrtobool_bytes, Formatter},
    sync::{Arc, Mutex},
};

/// The subsystem's data: where cards go, and the module's settings, which new cards start
/// from.
pub(crate) struct CardsDir {
    cards: Arc<DeviceClass<EmuvDevice>>,
    settings: Settings,
}

/// `/sys/kernel/config/emuv`.
pub(crate) fn subsystem(
    cards: Arc<DeviceClass<EmuvDevice>>,
    settings: Settings,
) -> impl PinInit<Root<CardsDir>, Error> {
    Root::new(c"emuv", CardsDir { cards, settings })
}

/// A card's settings, as its directory holds them.
#[derive(Clone, Copy)]
struct CardSettings {
    model: &'static GpuModel,
    physical_mb: u64,
    virtual_mb: u64,
    lazy: bool,
    file_limit_mb: u64,
}

impl CardSettings {
    fn from_module(settings: &Settings) -> Self {
        Self {
            model: settings.model,
            physical_mb: settings.pool.physical_bytes >> 20,
            virtual_mb: settings.pool.virtual_bytes >> 20,
            lazy: settings.pool.strategy == Strategy::Lazy,
            file_limit_mb: settings.limits.file_bytes >> 20,
        }
    }
}

/// Where a directory's card stands.
enum State {
    /// Settings only (`enabled` 0).
    Disabled,
    /// A card made through `enabled`; `rmdir` is refused until it goes.
    Enabled(Arc<EmuvDevice>),
    /// One of `gpu_count`'s cards: there for the module's lifetime.
    FromParameters(Arc<EmuvDevice>),
}

struct CardDirInner {
    settings: CardSettings,
    state: State,
    /// The directory, once configfs has built it.
    item: Option<Item>,
}

/// A card's directory: its data is shared with the closure that gives it its item.
#[pin_data]
pub(crate) struct CardDir {
    shared: Arc<CardDirShared>,
}

#[pin_data]
struct CardDirShared {
    #[pin]
    inner: Mutex<CardDirInner>,
    cards: Arc<DeviceClass<EmuvDevice>>,
    module: Settings,
}

/// The item type of card directories, shared by `mkdir`'s and the kernel's.
fn card_item_type() -> &'static ItemType<configfs::Group<CardDir>, CardDir> {
    configfs_attrs! {
        container: configfs::Group<CardDir>,
        data: CardDir,
        attributes: [
            gpu_model: 0,
            physical_vram_mb: 1,
            virtual_vram_mb: 2,
            lazy_allocation: 3,
            vram_limit_per_file_mb: 4,
            enabled: 5,
            index: 6,
            fail: 7,
            ecc_errors: 8,
        ],
    }
}

/// The group of a new card directory `name` in `state`.
fn card_group(
    name: &CStr,
    cards: Arc<DeviceClass<EmuvDevice>>,
    module: Settings,
    state: State,
) -> Result<impl PinInit<configfs::Group<CardDir>, Error>> {
    let shared = Arc::pin_init(
        try_pin_init!(CardDirShared {
            inner <- new_mutex!(CardDirInner {
                settings: CardSettings::from_module(&module),
                state,
                item: None,
            }),
            cards,
            module,
        }),
        GFP_KERNEL,
    )?;
    let found = shared.clone();
    let group = configfs::Group::new(
        name.try_into()?,
        card_item_type(),
        try_pin_init!(CardDir { shared }),
    );
    Ok(placed(group, move |item| {
        found.inner.lock().item = Some(item)
    }))
}

impl RootOps for CardsDir {
    type Child = CardDir;

    fn make_group(&self, name: &CStr) -> Result<impl PinInit<configfs::Group<CardDir>, Error>> {
        card_group(name, self.cards.clone(), self.settings, State::Disabled)
    }
}

impl CardDirShared {
    /// Changes a setting: `EBUSY` while the card exists.
    fn set(&self, change: impl FnOnce(&mut CardSettings) -> Result) -> Result {
        let mut inner = self.inner.lock();
        if !matches!(inner.state, State::Disabled) {
            return Err(EBUSY);
        }
        change(&mut inner.settings)
    }

    /// The card, or `ENODEV` while there is none.
    fn card(&self) -> Result<Arc<EmuvDevice>> {
        match &self.inner.lock().state {
            State::Enabled(card) | State::FromParameters(card) => Ok(card.clone()),
            State::Disabled => Err(ENODEV),
        }
    }

    fn enable(&self, inner: &mut CardDirInner) -> Result {
        if !matches!(inner.state, State::Disabled) {
            return Ok(());
        }
        let settings = inner.settings;
        let pool = VramPool::new(PoolConfig {
            physical_bytes: settings.physical_mb << 20,
            virtual_bytes: settings.virtual_mb << 20,
            strategy: if settings.lazy {
                Strategy::Lazy
            } else {
                Strategy::Eager
            },
        })?;
        let limits = Limits {
            file_bytes: settings.file_limit_mb << 20,
            ..self.module.limits
        };
        // `rmdir` is refused before the card exists, so no card can ever exist unpinned: if the
        // card cannot be made, the refusal is undone, and there is no card to take back (which
        // a file opened meanwhile would hold).
        let item = inner.item.as_ref().ok_or(EBUSY)?;
        item.refuse_rmdir()?;
        let made = self.cards.add_first_free(|index| {
            Arc::pin_init(
                EmuvDevice::new(
                    index,
                    settings.model,
                    pool.clone(),
                    self.module.debug,
                    limits,
                    UserCharges::new(self.module.user_limit)?,
                ),
                GFP_KERNEL,
            )
        });
        let card = match made {
            Ok(card) => card,
            Err(e) => {
                // SAFETY: the `refuse_rmdir` just above succeeded and is undone only here.
                unsafe { item.release_rmdir() };
                return Err(e);
            }
        };
        pr_info!(
            "card {}: {} with {} MiB physical + {} MiB virtual VRAM, {} allocation (configfs)\n",
            card.index,
            settings.model.name,
            settings.physical_mb,
            settings.virtual_mb,
            if settings.lazy { "lazy" } else { "eager" }
        );
        inner.state = State::Enabled(card);
        Ok(())
    }

    fn disable(&self, inner: &mut CardDirInner) -> Result {
        let card = match &inner.state {
            State::Disabled => return Ok(()),
            State::FromParameters(card) => {
                pr_err!(
                    "card {}: made by gpu_count, not configfs: unload emuv to remove it\n",
                    card.index
                );
                return Err(EPERM);
            }
            State::Enabled(card) => card.clone(),
        };
        card.retire_if_unused()?;
        self.cards.remove(card.index);
        if let Some(item) = &inner.item {
            // SAFETY: `enable` made the `refuse_rmdir` this undoes (a card is `Enabled` only
            // after it succeeded), and it is undone only here, once per card.
            unsafe { item.release_rmdir() };
        }
        pr_info!("card {}: removed (configfs)\n", card.index);
        inner.state = State::Disabled;
        Ok(())
    }
}

/// Writes `args` and a newline into a configfs page.
fn show(page: &mut [u8; PAGE_SIZE], args: core::fmt::Arguments<'_>) -> Result<usize> {
    let mut out = Formatter::new(page);
    out.write_fmt(args)?;
    out.write_str("\n")?;
    Ok(out.bytes_written())
}

/// A boolean setting: `EINVAL` with a `dmesg` line unless `kstrtobool` takes it.
fn parse_bool(name: &str, value: &[u8]) -> Result<bool> {
    kstrtobool_bytes(value).inspect_err(|_| {
        pr_err!(
            "configfs: invalid {name}={}: accepted: 1, 0, y, n, on, off\n",
            kernel::str::BStr::from_bytes(value.trim_ascii())
        );
    })
}

const PREFIX: &str = "configfs: ";

#[vtable]
impl AttributeOperations<0> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(
            page,
            format_args!("{}", this.shared.inner.lock().settings.model.key),
        )
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let model = &MODELS[parse_model(PREFIX, value.trim_ascii())?];
        this.shared.set(|s| {
            // A new model brings its memory size unless one was chosen.
            if s.physical_mb == s.model.vram_bytes() >> 20 {
                s.physical_mb = model.vram_bytes() >> 20;
            }
            s.model = model;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<1> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(
            page,
            format_args!("{}", this.shared.inner.lock().settings.physical_mb),
        )
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let mb = parse_number(
            PREFIX,
            "physical_vram_mb",
            value.trim_ascii(),
            (1, MAX_TIER_BYTES >> 20),
            "MiB",
            None,
        )?;
        this.shared.set(|s| {
            s.physical_mb = mb;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<2> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(
            page,
            format_args!("{}", this.shared.inner.lock().settings.virtual_mb),
        )
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let mb = parse_number(
            PREFIX,
            "virtual_vram_mb",
            value.trim_ascii(),
            (0, MAX_TIER_BYTES >> 20),
            "MiB",
            None,
        )?;
        this.shared.set(|s| {
            s.virtual_mb = mb;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<3> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(
            page,
            format_args!("{}", u8::from(this.shared.inner.lock().settings.lazy)),
        )
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let lazy = parse_bool("lazy_allocation", value)?;
        this.shared.set(|s| {
            s.lazy = lazy;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<4> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        show(
            page,
            format_args!("{}", this.shared.inner.lock().settings.file_limit_mb),
        )
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let mb = parse_number(
            PREFIX,
            "vram_limit_per_file_mb",
            value.trim_ascii(),
            (0, MAX_TIER_BYTES >> 19),
            "MiB",
            Some("no limit"),
        )?;
        this.shared.set(|s| {
            s.file_limit_mb = mb;
            Ok(())
        })
    }
}

#[vtable]
impl AttributeOperations<5> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let enabled = !matches!(this.shared.inner.lock().state, State::Disabled);
        show(page, format_args!("{}", u8::from(enabled)))
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let enable = parse_bool("enabled", value)?;
        let mut inner = this.shared.inner.lock();
        if enable {
            this.shared.enable(&mut inner)
        } else {
            this.shared.disable(&mut inner)
        }
    }
}

#[vtable]
impl AttributeOperations<6> for CardDir {
    type Data = CardDir;

    /// The card's index, `-1` while there is no card.
    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        match this.shared.card() {
            Ok(card) => show(page, format_args!("{}", card.index)),
            Err(_) => show(page, format_args!("-1")),
        }
    }
}

#[vtable]
impl AttributeOperations<7> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let Ok(card) = this.shared.card() else {
            return show(page, format_args!("none"));
        };
        let mut out = Formatter::new(page);
        show_fail(&card, &mut out)?;
        Ok(out.bytes_written())
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let card = this.shared.card()?;
        store_fail(&card, value)?;
        this.shared.cards.notify(card.index, c"fail");
        Ok(())
    }
}

#[vtable]
impl AttributeOperations<8> for CardDir {
    type Data = CardDir;

    fn show(this: &CardDir, page: &mut [u8; PAGE_SIZE]) -> Result<usize> {
        let Ok(card) = this.shared.card() else {
            return show(page, format_args!("0"));
        };
        let mut out = Formatter::new(page);
        show_ecc_errors(&card, &mut out)?;
        Ok(out.bytes_written())
    }

    fn store(this: &CardDir, value: &[u8]) -> Result {
        let card = this.shared.card()?;
        store_ecc_errors(&card, value)?;
        this.shared.cards.notify(card.index, c"ecc_errors");
        Ok(())
    }
}

/// The directories of `gpu_count`'s cards, `emuv`, `emuv1`, ...
pub(crate) fn module_card_dirs(
    subsystem: &Root<CardsDir>,
    cards: &Arc<DeviceClass<EmuvDevice>>,
    settings: Settings,
) -> Result<KVec<KernelGroup>> {
    let mut dirs = KVec::new();
    for (index, card) in cards.all()? {
        let name = node_name(index)?;
        let group = card_group(&name, cards.clone(), settings, State::FromParameters(card))?;
        dirs.push(KernelGroup::register(subsystem, group)?, GFP_KERNEL)?;
    }
    Ok(dirs)
}
