// SPDX-License-Identifier: GPL-2.0

//! emuv's module parameters, with the seed's names and meanings.
//!
//! They appear read-only under `/sys/module/emuv/parameters/`, the last value given wins (so
//! `emuv.conf` and the `modprobe` command line combine), and bad input fails the load with
//! `EINVAL` and one `dmesg` line naming the parameter, the value and what is accepted.

use crate::{
    client::Limits,
    glue::param::{module_param, Param},
    gpu_db::{self, GpuModel, MODELS},
    vram_pool::{PoolConfig, Strategy, Tier, MAX_TIER_BYTES},
};
use core::fmt::{self, Write};
use kernel::{
    prelude::*,
    str::{BStr, Formatter},
    sync::atomic::{Atomic, Relaxed},
};

/// Stored for a parameter that was not given.
const UNSET: u64 = u64::MAX;

/// Default size of the virtual tier, as in the seed.
const DEFAULT_VIRTUAL_GIB: u64 = 2;

/// `gpu_model`: which card to emulate.
struct ModelParam {
    index: Atomic<u64>,
}

/// The list of accepted model names, for error messages.
struct AcceptedModels;

impl kernel::fmt::Display for AcceptedModels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, model) in MODELS.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}", model.key)?;
        }
        Ok(())
    }
}

impl ModelParam {
    fn model(&self) -> &'static GpuModel {
        let index = self.index.load(Relaxed);
        usize::try_from(index)
            .ok()
            .and_then(|i| MODELS.get(i))
            .unwrap_or_else(gpu_db::default_model)
    }
}

/// The model `value` names (any accepted spelling); `EINVAL` with a `dmesg` line listing the
/// accepted ones otherwise. `prefix` starts the line ("" or "card 3: ").
pub(crate) fn parse_model(prefix: &str, value: &[u8]) -> Result<usize> {
    gpu_db::find_index_by_key(value).ok_or_else(|| {
        pr_err!(
            "{prefix}invalid gpu_model={}: unknown model; accepted (case-insensitive, 'RTX' prefix, spaces, '-' and '_' ignored): {}\n",
            BStr::from_bytes(value),
            AcceptedModels
        );
        EINVAL
    })
}

/// A decimal number in `min..=max`, or `EINVAL` with a `dmesg` line naming `name`, the value
/// and what is accepted (`unit`, and what 0 means if it is allowed).
pub(crate) fn parse_number(
    prefix: &str,
    name: &str,
    value: &[u8],
    (min, max): (u64, u64),
    unit: &str,
    zero_means: Option<&str>,
) -> Result<u64> {
    let parsed = core::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|n| (min..=max).contains(n));
    parsed.ok_or_else(|| {
        pr_err!(
            "{prefix}invalid {name}={}: not a decimal number in range; accepted: {min} to {max} {unit}{}{}\n",
            BStr::from_bytes(value),
            if zero_means.is_some() { ", 0 = " } else { "" },
            zero_means.unwrap_or("")
        );
        EINVAL
    })
}

impl Param for ModelParam {
    fn set(&self, value: &[u8]) -> Result {
        let index = parse_model("", value)?;
        self.index.store(index as u64, Relaxed);
        Ok(())
    }

    fn get(&self, out: &mut Formatter<'_>) -> fmt::Result {
        out.write_str(self.model().key)
    }
}

/// One of `{physical,virtual}_vram_{gb,mb}`.
struct SizeParam {
    name: &'static str,
    tier: Tier,
    /// log2 of the unit: 30 for GiB, 20 for MiB.
    unit_shift: u32,
    value: Atomic<u64>,
    /// The same tier's parameter in the other unit; giving both is an error.
    other_unit: &'static SizeParam,
}

impl SizeParam {
    fn bytes(&self) -> Option<u64> {
        let value = self.value.load(Relaxed);
        (value != UNSET).then(|| value << self.unit_shift)
    }

    fn unit(&self) -> &'static str {
        if self.unit_shift == 30 {
            "GiB"
        } else {
            "MiB"
        }
    }

    fn reject(&self, value: &[u8], reason: &str) -> Result {
        let (min, max) = (
            u64::from(self.tier == Tier::Physical),
            MAX_TIER_BYTES >> self.unit_shift,
        );
        pr_err!(
            "invalid {}={}: {}; accepted: an integer from {} to {} ({}), and not together with {}\n",
            self.name,
            BStr::from_bytes(value),
            reason,
            min,
            max,
            self.unit(),
            self.other_unit.name
        );
        Err(EINVAL)
    }
}

impl Param for SizeParam {
    fn set(&self, value: &[u8]) -> Result {
        let parsed = core::str::from_utf8(value)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok());
        let Some(number) = parsed else {
            return self.reject(value, "not a decimal number");
        };
        if number == 0 && self.tier == Tier::Physical {
            return self.reject(value, "the physical tier cannot be empty");
        }
        if number > MAX_TIER_BYTES >> self.unit_shift {
            return self.reject(value, "a tier is at most 1 TiB");
        }
        if self.other_unit.bytes().is_some() {
            return self.reject(value, "both GiB and MiB given for one tier");
        }
        self.value.store(number, Relaxed);
        Ok(())
    }

    /// The tier's effective size in this parameter's unit, rounded down.
    fn get(&self, out: &mut Formatter<'_>) -> fmt::Result {
        let bytes = settings().tier_bytes(self.tier);
        write!(out, "{}", bytes >> self.unit_shift)
    }
}

/// `lazy_allocation` and `debug_mode`.
struct BoolParam {
    name: &'static str,
    value: Atomic<bool>,
}

impl BoolParam {
    fn get(&self) -> bool {
        self.value.load(Relaxed)
    }
}

impl Param for BoolParam {
    fn set(&self, value: &[u8]) -> Result {
        let mut lower = [0u8; 8];
        let lower = match lower.get_mut(..value.len()) {
            Some(lower) => {
                lower.copy_from_slice(value);
                lower.make_ascii_lowercase();
                &*lower
            }
            None => value,
        };
        let parsed = match lower {
            // A bare `name` means yes, as for the kernel's own bool parameters.
            b"" | b"1" | b"y" | b"yes" | b"on" | b"true" => true,
            b"0" | b"n" | b"no" | b"off" | b"false" => false,
            _ => {
                pr_err!(
                    "invalid {}={}: not a boolean; accepted: 1/0, y/n, yes/no, on/off, true/false\n",
                    self.name,
                    BStr::from_bytes(value)
                );
                return Err(EINVAL);
            }
        };
        self.value.store(parsed, Relaxed);
        Ok(())
    }

    fn get(&self, out: &mut Formatter<'_>) -> fmt::Result {
        out.write_str(if BoolParam::get(self) { "1" } else { "0" })
    }
}

static GPU_MODEL: ModelParam = ModelParam {
    index: Atomic::new(UNSET),
};

macro_rules! size_params {
    ($($gb:ident $gb_name:literal, $mb:ident $mb_name:literal, $tier:expr;)+) => {$(
        static $gb: SizeParam = SizeParam {
            name: $gb_name,
            tier: $tier,
            unit_shift: 30,
            value: Atomic::new(UNSET),
            other_unit: &$mb,
        };
        static $mb: SizeParam = SizeParam {
            name: $mb_name,
            tier: $tier,
            unit_shift: 20,
            value: Atomic::new(UNSET),
            other_unit: &$gb,
        };
    )+};
}
size_params! {
    PHYSICAL_VRAM_GB "physical_vram_gb", PHYSICAL_VRAM_MB "physical_vram_mb", Tier::Physical;
    VIRTUAL_VRAM_GB "virtual_vram_gb", VIRTUAL_VRAM_MB "virtual_vram_mb", Tier::Virtual;
}

/// A limit given as a decimal number in `0..=max` (or `1..=max` when 0 is not allowed).
struct LimitParam {
    name: &'static str,
    /// What the number counts, for the error line: "MiB", "allocations".
    unit: &'static str,
    /// What 0 means, or `None` when 0 is refused.
    zero_means: Option<&'static str>,
    max: u64,
    value: Atomic<u64>,
}

impl LimitParam {
    fn get(&self) -> u64 {
        self.value.load(Relaxed)
    }
}

impl Param for LimitParam {
    fn set(&self, value: &[u8]) -> Result {
        let min = if self.zero_means.is_some() { 0 } else { 1 };
        let n = parse_number(
            "",
            self.name,
            value,
            (min, self.max),
            self.unit,
            self.zero_means,
        )?;
        self.value.store(n, Relaxed);
        Ok(())
    }

    fn get(&self, out: &mut Formatter<'_>) -> fmt::Result {
        write!(out, "{}", LimitParam::get(self))
    }
}

/// `vram_limit_per_file_mb`: how much one open file may hold, for slicing a card between
/// tenants; 0 means no limit.
static VRAM_LIMIT_PER_FILE_MB: LimitParam = LimitParam {
    name: "vram_limit_per_file_mb",
    unit: "MiB",
    zero_means: Some("no limit"),
    max: MAX_TIER_BYTES >> 19,
    value: Atomic::new(0),
};

/// `vram_limit_per_user_mb`: how much all open files of one user may hold together, the
/// per-tenant slice that a per-file limit alone cannot give (a tenant can open the device
/// again); 0 means no limit.
static VRAM_LIMIT_PER_USER_MB: LimitParam = LimitParam {
    name: "vram_limit_per_user_mb",
    unit: "MiB",
    zero_means: Some("no limit"),
    max: MAX_TIER_BYTES >> 19,
    value: Atomic::new(0),
};

/// Allocations one open file may hold by default: each costs the kernel about 100 bytes.
const DEFAULT_MAX_ALLOCATIONS_PER_FILE: u64 = 65_536;

/// `max_allocations_per_file`: bounds the kernel memory one open file's bookkeeping takes.
static MAX_ALLOCATIONS_PER_FILE: LimitParam = LimitParam {
    name: "max_allocations_per_file",
    unit: "allocations",
    zero_means: None,
    max: 1 << 24,
    value: Atomic::new(DEFAULT_MAX_ALLOCATIONS_PER_FILE),
};

/// Most cards `gpu_count` may ask for (a big node has 8; configfs may add more up to
/// `glue::chrdev::MAX_DEVICES`).
pub(crate) const MAX_GPU_COUNT: u64 = 16;

/// `gpu_count`: how many identical cards one load creates.
static GPU_COUNT: LimitParam = LimitParam {
    name: "gpu_count",
    unit: "cards",
    zero_means: None,
    max: MAX_GPU_COUNT,
    value: Atomic::new(1),
};

/// Longest `driver_version` kept (NVML's buffers take 80 bytes).
const MAX_DRIVER_VERSION_LEN: usize = 32;

/// `driver_version`: what GPU tools report as NVIDIA's driver version. Programs check it
/// against the minimum their CUDA needs, so the default is a current release.
struct DriverVersionParam {
    text: [Atomic<i8>; MAX_DRIVER_VERSION_LEN],
    len: Atomic<i32>,
}

/// The default `driver_version`: a 580-series release (the reference output's).
const DEFAULT_DRIVER_VERSION: &[u8] = b"580.159.04";

impl DriverVersionParam {
    const fn new() -> Self {
        let mut text = [const { Atomic::new(0i8) }; MAX_DRIVER_VERSION_LEN];
        let mut i = 0;
        while i < DEFAULT_DRIVER_VERSION.len() {
            text[i] = Atomic::new(DEFAULT_DRIVER_VERSION[i] as i8);
            i += 1;
        }
        Self {
            text,
            len: Atomic::new(DEFAULT_DRIVER_VERSION.len() as i32),
        }
    }

    /// Numbers separated by dots, as NVIDIA's (`580.159.04`): two to four of them.
    fn valid(value: &[u8]) -> bool {
        let parts = value.split(|&c| c == b'.');
        value.len() < MAX_DRIVER_VERSION_LEN
            && (2..=4).contains(&parts.clone().count())
            && parts
                .into_iter()
                .all(|p| !p.is_empty() && p.len() <= 6 && p.iter().all(u8::is_ascii_digit))
    }
}

impl Param for DriverVersionParam {
    fn set(&self, value: &[u8]) -> Result {
        if !Self::valid(value) {
            pr_err!(
                "invalid driver_version={}: accepted: 2 to 4 dot-separated numbers, such as {}\n",
                BStr::from_bytes(value),
                BStr::from_bytes(DEFAULT_DRIVER_VERSION)
            );
            return Err(EINVAL);
        }
        // Parameters are set before the module runs, one at a time: no reader yet.
        for (slot, &c) in self.text.iter().zip(value) {
            slot.store(c as i8, Relaxed);
        }
        self.len.store(value.len() as i32, Relaxed);
        Ok(())
    }

    fn get(&self, out: &mut Formatter<'_>) -> fmt::Result {
        let len = usize::try_from(self.len.load(Relaxed)).unwrap_or(0);
        for slot in self.text.iter().take(len) {
            out.write_char(char::from(slot.load(Relaxed) as u8))?;
        }
        Ok(())
    }
}

static DRIVER_VERSION: DriverVersionParam = DriverVersionParam::new();

static LAZY_ALLOCATION: BoolParam = BoolParam {
    name: "lazy_allocation",
    value: Atomic::new(true),
};
static DEBUG_MODE: BoolParam = BoolParam {
    name: "debug_mode",
    value: Atomic::new(false),
};

module_param!(gpu_model, &GPU_MODEL, "charp",
    "GPU to emulate: 4060, 4060ti, 4060ti16, 4070 (default), 4070super, 4070ti, 4070tisuper, 4080, 4080super, 4090, 5060, 5060ti, 5060ti16, 5070, 5070ti, 5080, 5090");
module_param!(
    physical_vram_gb,
    &PHYSICAL_VRAM_GB,
    "ulong",
    "Physical VRAM in GiB (default: the model's memory; 1..1024)"
);
module_param!(
    physical_vram_mb,
    &PHYSICAL_VRAM_MB,
    "ulong",
    "Physical VRAM in MiB, instead of physical_vram_gb"
);
module_param!(
    virtual_vram_gb,
    &VIRTUAL_VRAM_GB,
    "ulong",
    "Virtual VRAM from system RAM in GiB (default 2; 0..1024)"
);
module_param!(
    virtual_vram_mb,
    &VIRTUAL_VRAM_MB,
    "ulong",
    "Virtual VRAM in MiB, instead of virtual_vram_gb"
);
module_param!(
    lazy_allocation,
    &LAZY_ALLOCATION,
    "bool",
    "1: allocate pages on first use (default); 0: reserve all VRAM at load"
);
module_param!(
    vram_limit_per_file_mb,
    &VRAM_LIMIT_PER_FILE_MB,
    "ulong",
    "Most VRAM one open /dev/emuv may hold, in MiB (0: no limit, the default)"
);
module_param!(
    vram_limit_per_user_mb,
    &VRAM_LIMIT_PER_USER_MB,
    "ulong",
    "Most VRAM all open /dev/emuv files of one user may hold together, in MiB (0: no limit, the default)"
);
module_param!(
    max_allocations_per_file,
    &MAX_ALLOCATIONS_PER_FILE,
    "ulong",
    "Most allocations one open /dev/emuv may hold at once (default 65536; 1..16777216)"
);
module_param!(
    gpu_count,
    &GPU_COUNT,
    "ulong",
    "Cards to create, each with these settings: /dev/emuv, /dev/emuv1, ... (default 1; 1..16)"
);
module_param!(
    driver_version,
    &DRIVER_VERSION,
    "charp",
    "NVIDIA driver version that GPU tools report (default 580.159.04)"
);
module_param!(
    debug_mode,
    &DEBUG_MODE,
    "bool",
    "1: log allocations and file events"
);

/// The configuration the parameters describe.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub(crate) model: &'static GpuModel,
    pub(crate) pool: PoolConfig,
    pub(crate) debug: bool,
    pub(crate) limits: Limits,
    /// Bytes all files of one user may hold on a card; 0 for no limit.
    pub(crate) user_limit: u64,
    /// Cards to create.
    pub(crate) gpu_count: u32,
}

impl Settings {
    pub(crate) fn tier_bytes(&self, tier: Tier) -> u64 {
        match tier {
            Tier::Physical => self.pool.physical_bytes,
            Tier::Virtual => self.pool.virtual_bytes,
        }
    }
}

/// The settings in force: parameters given, defaults for the rest.
pub(crate) fn settings() -> Settings {
    let model = GPU_MODEL.model();
    let physical = PHYSICAL_VRAM_GB
        .bytes()
        .or(PHYSICAL_VRAM_MB.bytes())
        .unwrap_or(u64::from(model.vram_gib) << 30);
    let virtual_ = VIRTUAL_VRAM_GB
        .bytes()
        .or(VIRTUAL_VRAM_MB.bytes())
        .unwrap_or(DEFAULT_VIRTUAL_GIB << 30);
    Settings {
        model,
        pool: PoolConfig {
            physical_bytes: physical,
            virtual_bytes: virtual_,
            strategy: if LAZY_ALLOCATION.get() {
                Strategy::Lazy
            } else {
                Strategy::Eager
            },
        },
        debug: DEBUG_MODE.get(),
        limits: Limits {
            file_bytes: VRAM_LIMIT_PER_FILE_MB.get() << 20,
            file_allocations: u32::try_from(MAX_ALLOCATIONS_PER_FILE.get()).unwrap_or(u32::MAX),
        },
        user_limit: VRAM_LIMIT_PER_USER_MB.get() << 20,
        gpu_count: GPU_COUNT.get() as u32,
    }
}
