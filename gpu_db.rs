// SPDX-License-Identifier: GPL-2.0

//! The GeForce RTX 40xx/50xx desktop cards that emuv can emulate.
//!
//! One table, [`MODELS`]; every lookup is derived from it. PCI device IDs are the real ones from
//! pci.ids (the seed's RTX 50xx IDs were placeholders). Pure data: no locking, no allocation.

/// PCI vendor ID of NVIDIA.
pub(crate) const NVIDIA_VENDOR_ID: u16 = 0x10de;

/// GPU architecture generation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Architecture {
    /// RTX 40 series.
    AdaLovelace,
    /// RTX 50 series.
    Blackwell,
}

impl Architecture {
    /// Marketing name of the architecture.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Architecture::AdaLovelace => "Ada Lovelace",
            Architecture::Blackwell => "Blackwell",
        }
    }

    /// CUDA compute capability (major, minor) of its GeForce chips.
    pub(crate) const fn compute_capability(self) -> (u32, u32) {
        match self {
            Architecture::AdaLovelace => (8, 9),
            Architecture::Blackwell => (12, 0),
        }
    }
}

/// Memory technology of the card.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MemoryType {
    Gddr6,
    Gddr6x,
    Gddr7,
}

impl MemoryType {
    /// Name as printed on spec sheets.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            MemoryType::Gddr6 => "GDDR6",
            MemoryType::Gddr6x => "GDDR6X",
            MemoryType::Gddr7 => "GDDR7",
        }
    }
}

/// One emulatable card.
#[derive(Debug)]
pub(crate) struct GpuModel {
    /// Canonical `gpu_model=` value: the seed's number plus `ti`/`super`/`16` suffixes.
    pub(crate) key: &'static str,
    /// Other spellings users type for this card (after normalisation, see [`normalize`]).
    pub(crate) aliases: &'static [&'static str],
    /// Marketing name, as NVML and nvidia-smi report it (without the memory size, which the
    /// driver does not put in the name: both RTX 5060 Ti sizes are "NVIDIA GeForce RTX 5060 Ti").
    pub(crate) name: &'static str,
    /// PCI device ID (vendor is always [`NVIDIA_VENDOR_ID`]).
    pub(crate) device_id: u16,
    /// Chip, e.g. "AD102".
    pub(crate) chip: &'static str,
    pub(crate) architecture: Architecture,
    /// On-board memory in GiB.
    pub(crate) vram_gib: u32,
    pub(crate) memory_type: MemoryType,
    /// Memory bus width in bits.
    pub(crate) bus_width_bits: u32,
    /// Peak memory bandwidth in MB/s (integer: the kernel forbids floats).
    pub(crate) bandwidth_mbps: u32,
    /// CUDA cores.
    pub(crate) cuda_cores: u32,
    /// Rated boost clock in MHz: what emuv reports as the maximum graphics clock (a real card
    /// reports its VBIOS limit, a few hundred MHz higher and not published).
    pub(crate) boost_clock_mhz: u32,
    /// Total graphics power (the default power limit) in watts.
    pub(crate) power_watts: u32,
}

macro_rules! gpu {
    ($key:literal [$($alias:literal),*], $name:literal, $id:literal, $chip:literal, $arch:ident,
     $gib:literal, $mem:ident, $bus:literal, $bw:literal, $cores:literal, $boost:literal,
     $watts:literal) => {
        GpuModel {
            key: $key,
            aliases: &[$($alias),*],
            name: concat!("NVIDIA GeForce ", $name),
            device_id: $id,
            chip: $chip,
            architecture: Architecture::$arch,
            vram_gib: $gib,
            memory_type: MemoryType::$mem,
            bus_width_bits: $bus,
            bandwidth_mbps: $bw,
            cuda_cores: $cores,
            boost_clock_mhz: $boost,
            power_watts: $watts,
        }
    };
}

/// Every card emuv emulates. Device IDs: pci.ids 2026.05.24. CUDA cores, boost clocks and
/// total graphics power: NVIDIA's specification pages of each card
/// (nvidia.com/en-us/geforce/graphics-cards/40-series/ and .../50-series/, "Full Specs").
#[rustfmt::skip]
pub(crate) static MODELS: [GpuModel; 17] = [
    //   key            aliases       name                 PCI ID  chip     arch         GiB mem     bus  MB/s       cores   MHz   W
    gpu!("4060"        [],           "RTX 4060",          0x2882, "AD107", AdaLovelace, 8,  Gddr6,  128, 272_000,  3_072, 2460, 115),
    gpu!("4060ti"      ["4060ti8"],  "RTX 4060 Ti",       0x2803, "AD106", AdaLovelace, 8,  Gddr6,  128, 288_000,  4_352, 2535, 160),
    gpu!("4060ti16"    [],           "RTX 4060 Ti",       0x2805, "AD106", AdaLovelace, 16, Gddr6,  128, 288_000,  4_352, 2535, 165),
    gpu!("4070"        [],           "RTX 4070",          0x2786, "AD104", AdaLovelace, 12, Gddr6x, 192, 504_000,  5_888, 2475, 200),
    gpu!("4070super"   ["4070s"],    "RTX 4070 SUPER",    0x2783, "AD104", AdaLovelace, 12, Gddr6x, 192, 504_000,  7_168, 2475, 220),
    gpu!("4070ti"      [],           "RTX 4070 Ti",       0x2782, "AD104", AdaLovelace, 12, Gddr6x, 192, 504_000,  7_680, 2610, 285),
    gpu!("4070tisuper" ["4070tis"],  "RTX 4070 Ti SUPER", 0x2705, "AD103", AdaLovelace, 16, Gddr6x, 256, 672_000,  8_448, 2610, 285),
    gpu!("4080"        [],           "RTX 4080",          0x2704, "AD103", AdaLovelace, 16, Gddr6x, 256, 716_800,  9_728, 2505, 320),
    gpu!("4080super"   ["4080s"],    "RTX 4080 SUPER",    0x2702, "AD103", AdaLovelace, 16, Gddr6x, 256, 736_000, 10_240, 2550, 320),
    gpu!("4090"        [],           "RTX 4090",          0x2684, "AD102", AdaLovelace, 24, Gddr6x, 384, 1_008_000, 16_384, 2520, 450),
    gpu!("5060"        [],           "RTX 5060",          0x2d05, "GB206", Blackwell,   8,  Gddr7,  128, 448_000,  3_840, 2497, 145),
    gpu!("5060ti"      ["5060ti8"],  "RTX 5060 Ti",       0x2d04, "GB206", Blackwell,   8,  Gddr7,  128, 448_000,  4_608, 2572, 180),
    gpu!("5060ti16"    [],           "RTX 5060 Ti",       0x2d04, "GB206", Blackwell,   16, Gddr7,  128, 448_000,  4_608, 2572, 180),
    gpu!("5070"        [],           "RTX 5070",          0x2f04, "GB205", Blackwell,   12, Gddr7,  192, 672_000,  6_144, 2512, 250),
    gpu!("5070ti"      [],           "RTX 5070 Ti",       0x2c05, "GB203", Blackwell,   16, Gddr7,  256, 896_000,  8_960, 2452, 300),
    gpu!("5080"        [],           "RTX 5080",          0x2c02, "GB203", Blackwell,   16, Gddr7,  256, 960_000, 10_752, 2617, 360),
    gpu!("5090"        [],           "RTX 5090",          0x2b85, "GB202", Blackwell,   32, Gddr7,  512, 1_792_000, 21_760, 2407, 575),
];

/// Index in [`MODELS`] of the card loaded when `gpu_model` is not given: the seed's RTX 4070.
pub(crate) const DEFAULT_MODEL_INDEX: usize = 3;

/// Longest `gpu_model=` value worth looking at; anything longer is not a model.
pub(crate) const MAX_KEY_LEN: usize = 32;

/// Normalises a user-typed model name into `out`: lower case, no `rtx`/`geforce` prefix, no
/// spaces, `-` or `_`, no trailing `gb`. Returns the used part of `out`, or `None` if too long.
pub(crate) fn normalize<'a>(input: &[u8], out: &'a mut [u8; MAX_KEY_LEN]) -> Option<&'a [u8]> {
    let mut len = 0;
    for &c in input.trim_ascii() {
        if matches!(c, b' ' | b'-' | b'_') {
            continue;
        }
        *out.get_mut(len)? = c.to_ascii_lowercase();
        len += 1;
    }
    let mut s = &out[..len];
    for prefix in [b"nvidia".as_slice(), b"geforce", b"rtx"] {
        s = s.strip_prefix(prefix).unwrap_or(s);
    }
    Some(s.strip_suffix(b"gb").unwrap_or(s))
}

impl GpuModel {
    /// Whether `normalized` (see [`normalize`]) names this card.
    fn answers_to(&self, normalized: &[u8]) -> bool {
        self.key.as_bytes() == normalized || self.aliases.iter().any(|a| a.as_bytes() == normalized)
    }

    /// Size of the card's memory in bytes.
    pub(crate) fn vram_bytes(&self) -> u64 {
        u64::from(self.vram_gib) << 30
    }

    /// Memory clock in MHz as the driver reports it: half the per-pin data rate (GDDR moves
    /// data twice per clock in those terms), which the bandwidth and bus width give.
    pub(crate) fn memory_clock_mhz(&self) -> u32 {
        let data_rate_mbps =
            (u64::from(self.bandwidth_mbps) * 8).checked_div(u64::from(self.bus_width_bits));
        data_rate_mbps.map_or(0, |rate| (rate / 2) as u32)
    }
}

/// BAR1 (the CPU's window onto VRAM) of a GeForce card without Resizable BAR: 256 MiB.
pub(crate) const BAR1_BYTES: u64 = 256 << 20;

/// Index in [`MODELS`] of the card any accepted spelling names, case-insensitively.
pub(crate) fn find_index_by_key(input: &[u8]) -> Option<usize> {
    let mut buf = [0u8; MAX_KEY_LEN];
    let wanted = normalize(input, &mut buf)?;
    MODELS.iter().position(|m| m.answers_to(wanted))
}

/// Cards with a given PCI device ID; not unique (both 5060 Ti sizes are 0x2d04).
pub(crate) fn find_by_device_id(device_id: u16) -> impl Iterator<Item = &'static GpuModel> {
    MODELS.iter().filter(move |m| m.device_id == device_id)
}

/// The default card.
pub(crate) fn default_model() -> &'static GpuModel {
    &MODELS[DEFAULT_MODEL_INDEX]
}

#[cfg(emuv_kunit)]
#[kernel::prelude::kunit_tests(emuv_gpu_db)]
mod tests {
    use super::*;
    use kernel::prelude::*;

    #[test]
    fn every_key_and_alias_is_unique() -> Result {
        let mut names = KVec::new();
        for model in MODELS.iter() {
            names.push(model.key, GFP_KERNEL)?;
            for alias in model.aliases {
                names.push(*alias, GFP_KERNEL)?;
            }
        }
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
        Ok(())
    }

    #[test]
    fn every_key_finds_its_own_entry() {
        for (i, model) in MODELS.iter().enumerate() {
            assert_eq!(find_index_by_key(model.key.as_bytes()), Some(i));
            for alias in model.aliases {
                assert_eq!(find_index_by_key(alias.as_bytes()), Some(i));
            }
        }
    }

    #[test]
    fn spellings_users_type_are_accepted() {
        let key = |s: &str| find_index_by_key(s.as_bytes()).map(|i| MODELS[i].key);
        assert_eq!(key("4070"), Some("4070"));
        assert_eq!(key("RTX 4070 Ti SUPER"), Some("4070tisuper"));
        assert_eq!(key("rtx-4070-ti"), Some("4070ti"));
        assert_eq!(key("4060Ti16GB"), Some("4060ti16"));
        assert_eq!(key("4060ti8"), Some("4060ti"));
        assert_eq!(key("5060ti_16"), Some("5060ti16"));
        assert_eq!(key("NVIDIA GeForce RTX 5090"), Some("5090"));
        assert_eq!(key(" 4090\n"), Some("4090"));
        assert_eq!(key("4075"), None);
        assert_eq!(key(""), None);
        assert_eq!(key("rtx"), None);
        assert_eq!(key("40704070407040704070407040704070407040704070"), None);
    }

    #[test]
    fn real_pci_ids_and_sizes() {
        let model = |k: &str| find_index_by_key(k.as_bytes()).map(|i| &MODELS[i]);
        assert_eq!(
            model("5090").map(|m| (m.device_id, m.vram_gib)),
            Some((0x2b85, 32))
        );
        assert_eq!(
            model("4090").map(|m| (m.device_id, m.vram_gib)),
            Some((0x2684, 24))
        );
        assert_eq!(
            model("4070").map(|m| (m.device_id, m.vram_gib)),
            Some((0x2786, 12))
        );
        assert_eq!(model("4060ti16").map(|m| m.device_id), Some(0x2805));
        for model in MODELS.iter() {
            assert!(model.name.starts_with("NVIDIA GeForce RTX "));
            assert!(model.vram_gib >= 8 && model.vram_gib <= 32);
            assert!(model.bandwidth_mbps > 0 && model.bus_width_bits >= 128);
        }
    }

    #[test]
    fn device_id_lookup_is_not_unique() {
        assert_eq!(find_by_device_id(0x2d04).count(), 2);
        assert_eq!(find_by_device_id(0x2b85).count(), 1);
        assert_eq!(find_by_device_id(0x1234).count(), 0);
    }

    #[test]
    fn default_is_the_seeds_rtx_4070() {
        assert_eq!(default_model().key, "4070");
        assert_eq!(default_model().vram_gib, 12);
    }
}
