// SPDX-License-Identifier: GPL-2.0
//! The emulated GPUs as GPU tools see them (emuv-smi, the NVML library): found in
//! `/sys/class/emuv/`, read live from emuv's sysfs attributes, with the per-process list from
//! the device node's `EMUV_IOCTL_PROCESSES`.
//!
//! Every card is a device of the class: card 0 is `emuv` (`/dev/emuv`), card i is `emuv<i>`
//! (`/dev/emuv<i>`). Cards come and go at run time, and their kernel indices can have gaps. A
//! process sees the cards whose device node exists for it (a container given only `/dev/emuv3`
//! sees one GPU), and numbers them 0, 1, ... in the order of their kernel indices, as NVIDIA's
//! containers renumber the GPUs they are given. What belongs to the card itself (UUID, PCI bus
//! ID, minor number) comes from its kernel index, so it is the same in every process.

use crate::{Device, ProcessEntry};
use std::{
    fs::{self, File},
    io,
    os::{fd::AsFd, unix::fs::FileExt},
    path::{Path, PathBuf},
    time::Duration,
};
use uuid::Uuid;

/// Where emuv's class lives in sysfs.
pub const CLASS_DIR: &str = "/sys/class/emuv";
/// Where the device nodes are.
pub const DEV_DIR: &str = "/dev";
/// emuv's module parameters.
pub const PARAMS_DIR: &str = "/sys/module/emuv/parameters";

/// Where to look for emuv: the system's paths, or a fake tree in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// emuv's class directory: [`CLASS_DIR`].
    pub class_dir: PathBuf,
    /// The directory holding the device nodes: [`DEV_DIR`].
    pub dev_dir: PathBuf,
    /// emuv's module parameters: [`PARAMS_DIR`].
    pub params_dir: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            class_dir: CLASS_DIR.into(),
            dev_dir: DEV_DIR.into(),
            params_dir: PARAMS_DIR.into(),
        }
    }
}

impl Roots {
    /// Every card this process can see (its device node exists), in kernel-index order,
    /// numbered from 0 in that order. `NotFound` when emuv is not loaded (no card at all); an
    /// empty list when there are cards but none of their nodes is here.
    pub fn list(&self) -> io::Result<Vec<Gpu>> {
        let mut cards = Vec::new();
        let mut any = false;
        for entry in fs::read_dir(&self.class_dir)? {
            let dir = entry?.path();
            any = true;
            match Card::read(dir, &self.dev_dir) {
                Ok(Some(card)) => cards.push(card),
                Ok(None) => {}
                // Removed (configfs) between the listing and the read: not a card any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if !any {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no emulated GPU in {}", self.class_dir.display()),
            ));
        }
        // emuv < emuv1 < emuv2 < ... < emuv10, gaps kept out of the per-process numbering.
        cards.sort_by_key(|c| c.kernel_index);
        cards
            .into_iter()
            .enumerate()
            .map(|(index, card)| card.into_gpu(index as u32))
            .collect()
    }

    /// The driver version emuv reports (`driver_version` parameter, e.g. `580.159.04`); `None`
    /// when the module does not have the parameter or it is empty.
    pub fn driver_version(&self) -> Option<String> {
        let text = fs::read_to_string(self.params_dir.join("driver_version")).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }
}

/// Every emulated GPU this process can see, in index order: see [`Roots::list`].
pub fn list() -> io::Result<Vec<Gpu>> {
    Roots::default().list()
}

/// The driver version emuv's module reports: see [`Roots::driver_version`].
pub fn driver_version() -> Option<String> {
    Roots::default().driver_version()
}

/// Sizes in bytes, one consistent snapshot: `used + free == total`. As in NVML, `used` includes
/// `reserved`: the pool's quarantined pages (freed, but still held by a pipe, io_uring or direct
/// I/O), which no allocation can have until they are let go, and its pages being scrubbed
/// (freed, zeroed in the background before reuse), as a real card's driver holds freed VRAM
/// back until it is scrubbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub reserved: u64,
    pub used: u64,
    pub free: u64,
}

/// A card's PCI location: `domain:bus:device.function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciLocation {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
    pub function: u32,
}

impl PciLocation {
    /// The location emuv gives card `kernel_index` (for a kernel without `pci_bus_id`): domain 0,
    /// bus 1 + index, device 0, function 0.
    pub fn for_kernel_index(kernel_index: u32) -> Self {
        PciLocation {
            domain: 0,
            bus: kernel_index + 1,
            device: 0,
            function: 0,
        }
    }

    /// Parses `00000000:01:00.0`, `0000:01:00.0` or `01:00.0` (hex, any case).
    pub fn parse(text: &str) -> Option<Self> {
        let (rest, function) = text.trim().rsplit_once('.')?;
        let mut parts: Vec<&str> = rest.split(':').collect();
        let device = parts.pop()?;
        let bus = parts.pop()?;
        let domain = match parts.as_slice() {
            [] => "0",
            [domain] => domain,
            _ => return None,
        };
        let hex = |s: &str, max_len: usize| {
            (!s.is_empty() && s.len() <= max_len)
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        Some(PciLocation {
            domain: hex(domain, 8)?,
            bus: hex(bus, 2)?,
            device: hex(device, 2)?,
            function: hex(function, 1)?,
        })
    }

    /// As NVML's `busId` and nvidia-smi print it: `00000000:01:00.0`.
    pub fn bus_id(&self) -> String {
        format!(
            "{:08X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }

    /// NVML's `busIdLegacy`, as nvidia-smi names a GPU it cannot open: `0000:01:00.0`.
    pub fn bus_id_legacy(&self) -> String {
        format!(
            "{:04X}:{:02X}:{:02X}.{:X}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// What emuv's model table says about the card's model (the kernel's attributes). `None` for
/// a fact the kernel does not provide (an older module) or provides in a form not understood:
/// tools then say "not supported", as NVML does for a fact a card does not have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelFacts {
    /// `Ada Lovelace` or `Blackwell`.
    pub architecture: Option<String>,
    /// CUDA compute capability (major, minor): (8, 9) for RTX 40xx.
    pub compute_capability: Option<(u32, u32)>,
    pub memory_bus_width_bits: Option<u32>,
    pub cuda_cores: Option<u32>,
    /// Boost clock.
    pub max_graphics_clock_mhz: Option<u32>,
    pub max_memory_clock_mhz: Option<u32>,
    /// Default board power limit.
    pub power_limit_mw: Option<u32>,
    pub bar1_bytes: Option<u64>,
    /// e.g. `AD102`.
    pub chip: Option<String>,
}

impl ModelFacts {
    fn read(dir: &Path) -> Self {
        let text = |name| read_attr(dir, name).ok().filter(|t| !t.is_empty());
        let number = |name| text(name).and_then(|t| t.parse().ok());
        ModelFacts {
            architecture: text("architecture"),
            compute_capability: text("compute_capability").and_then(|t| {
                let (major, minor) = t.split_once('.')?;
                Some((major.parse().ok()?, minor.parse().ok()?))
            }),
            memory_bus_width_bits: number("memory_bus_width"),
            cuda_cores: number("cuda_cores"),
            max_graphics_clock_mhz: number("max_graphics_clock_mhz"),
            max_memory_clock_mhz: number("max_memory_clock_mhz"),
            power_limit_mw: number("power_limit_mw"),
            bar1_bytes: text("bar1_bytes").and_then(|t| t.parse().ok()),
            chip: text("chip"),
        }
    }
}

/// One emulated GPU: its identity and model facts, read once; its state (memory, processes,
/// lost, ECC errors) is read on each call.
#[derive(Clone, Debug)]
pub struct Gpu {
    /// Its index in this process: its position among the cards this process can see.
    pub index: u32,
    /// The card's own index in the kernel (0 for `emuv`, i for `emuv<i>`): its minor number,
    /// and what its UUID and PCI bus ID derive from.
    pub kernel_index: u32,
    /// Its directory under [`CLASS_DIR`].
    pub sysfs_dir: PathBuf,
    /// Its device node, e.g. `/dev/emuv`.
    pub device_node: PathBuf,
    /// As NVML reports it: "NVIDIA GeForce RTX 4090".
    pub name: String,
    /// emuv's model key: "4090".
    pub model: String,
    pub vendor_id: u16,
    pub device_id: u16,
    pub pci: PciLocation,
    pub facts: ModelFacts,
}

/// A class directory read, before the per-process numbering.
struct Card {
    kernel_index: u32,
    sysfs_dir: PathBuf,
    device_node: PathBuf,
}

/// Whether `node` is this card's device node for this process: there, and, when it is a
/// character device, the one the card's `MAJOR`/`MINOR` (from `uevent`) name. A container can
/// hide a card by leaving its node out or by putting something else at its name (a bind-mounted
/// `/dev/null`). A plain file stands for a node in test trees.
fn node_is_the_card(node: &Path, uevent: &str) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = fs::metadata(node) else {
        return false;
    };
    if !meta.file_type().is_char_device() {
        return meta.is_file();
    }
    let number = |key: &str| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let rdev = meta.rdev();
    matches!(
        (number("MAJOR="), number("MINOR=")),
        (Some(major), Some(minor))
            if nix::sys::stat::major(rdev) == major && nix::sys::stat::minor(rdev) == minor
    )
}

impl Card {
    /// `None` when the card's device node is not in `dev_dir` (not given to this process).
    fn read(sysfs_dir: PathBuf, dev_dir: &Path) -> io::Result<Option<Self>> {
        let uevent = read_attr(&sysfs_dir, "uevent")?;
        let devname = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .ok_or_else(|| invalid(format!("{}/uevent: no DEVNAME", sysfs_dir.display())))?;
        let device_node = dev_dir.join(devname);
        if !node_is_the_card(&device_node, &uevent) {
            return Ok(None);
        }
        let kernel_index = match read_attr(&sysfs_dir, "index") {
            Ok(text) => text.parse().map_err(|_| {
                invalid(format!(
                    "{}/index: not a number: {text:?}",
                    sysfs_dir.display()
                ))
            })?,
            // A module without the attribute: the index is in the name.
            Err(e) if e.kind() == io::ErrorKind::NotFound => index_from_name(&sysfs_dir)
                .ok_or_else(|| invalid(format!("{}: no card index", sysfs_dir.display())))?,
            Err(e) => return Err(e),
        };
        Ok(Some(Card {
            kernel_index,
            sysfs_dir,
            device_node,
        }))
    }

    fn into_gpu(self, index: u32) -> io::Result<Gpu> {
        let dir = self.sysfs_dir;
        let pci = match read_attr(&dir, "pci_bus_id") {
            Ok(text) => PciLocation::parse(&text).ok_or_else(|| {
                invalid(format!(
                    "{}/pci_bus_id: not a bus ID: {text:?}",
                    dir.display()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                PciLocation::for_kernel_index(self.kernel_index)
            }
            Err(e) => return Err(e),
        };
        Ok(Gpu {
            index,
            kernel_index: self.kernel_index,
            device_node: self.device_node,
            name: read_attr(&dir, "gpu_name")?,
            model: read_attr(&dir, "gpu_model")?,
            vendor_id: parse_hex_u16(&dir, "vendor_id")?,
            device_id: parse_hex_u16(&dir, "device_id")?,
            pci,
            facts: ModelFacts::read(&dir),
            sysfs_dir: dir,
        })
    }
}

/// `emuv` is card 0, `emuv7` card 7.
fn index_from_name(dir: &Path) -> Option<u32> {
    let digits = dir.file_name()?.to_str()?.strip_prefix("emuv")?;
    if digits.is_empty() {
        Some(0)
    } else {
        digits.parse().ok()
    }
}

fn read_attr(dir: &Path, name: &str) -> io::Result<String> {
    let text = fs::read_to_string(dir.join(name))?;
    Ok(text.trim_end_matches('\n').to_owned())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn parse_u64(dir: &Path, name: &str) -> io::Result<u64> {
    let text = read_attr(dir, name)?;
    text.parse()
        .map_err(|_| invalid(format!("{}/{name}: not a number: {text:?}", dir.display())))
}

fn parse_hex_u16(dir: &Path, name: &str) -> io::Result<u16> {
    let text = read_attr(dir, name)?;
    u16::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| invalid(format!("{}/{name}: not a hex ID: {text:?}", dir.display())))
}

/// Where a container finds the host's `/etc/machine-id` (emuv-ctk's CDI spec mounts it there),
/// so that a card has the same UUID inside a container as outside.
pub const HOST_MACHINE_ID: &str = "/run/emuv/machine-id";

/// Names of the per-host identity that the UUIDs derive from: the same on every reload, different
/// between machines (as real GPU UUIDs are). In a container, the host's.
fn machine_id() -> String {
    [HOST_MACHINE_ID, "/etc/machine-id"]
        .iter()
        .find_map(|path| fs::read_to_string(path).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Namespace of emuv's name-based (v5) GPU UUIDs.
const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6d75_7665_2d67_7075_8000_656d_7576_0001);

/// `fail`'s value for a card that fell off the bus.
const FAIL_LOST: &str = "lost";

impl Gpu {
    /// The pool's counters now. `free` is derived, so the figures always add up even while
    /// other processes allocate (a FREE between the two reads can count a range both as used
    /// and as quarantined for an instant: the sum is capped at the total).
    pub fn memory(&self) -> io::Result<Memory> {
        let total = parse_u64(&self.sysfs_dir, "total_vram_bytes")?;
        let allocated = parse_u64(&self.sysfs_dir, "used_bytes")?;
        let quarantined = parse_u64(&self.sysfs_dir, "quarantined_bytes")?;
        // Older modules have no scrubber, and so no `scrubbing_bytes`.
        let scrubbing = match parse_u64(&self.sysfs_dir, "scrubbing_bytes") {
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            other => other?,
        };
        let reserved = quarantined.saturating_add(scrubbing).min(total);
        if allocated > total {
            return Err(invalid(format!("used {allocated} above total {total}")));
        }
        let used = allocated.saturating_add(reserved).min(total);
        Ok(Memory {
            total,
            reserved,
            used,
            free: total - used,
        })
    }

    /// Whether the card has fallen off the bus (`fail` is `lost`), read now. A card whose
    /// directory has gone (removed at run time) is lost too; a module without the attribute
    /// never loses a card.
    pub fn is_lost(&self) -> bool {
        match read_attr(&self.sysfs_dir, "fail") {
            Ok(state) => state == FAIL_LOST,
            Err(e) if e.kind() == io::ErrorKind::NotFound => !self.sysfs_dir.exists(),
            Err(_) => true,
        }
    }

    /// The uncorrected ECC errors since load (`ecc_errors`), read now; `NotFound` on a module
    /// without the attribute.
    pub fn ecc_errors(&self) -> io::Result<u64> {
        parse_u64(&self.sysfs_dir, "ecc_errors")
    }

    /// Whether the module counts ECC errors for this card (so they can be reported at all).
    pub fn has_ecc_counter(&self) -> bool {
        self.sysfs_dir.join("ecc_errors").exists()
    }

    /// Stable across reloads of the same card at the same kernel index on this machine, and
    /// the same in every process whatever cards it sees:
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid(&self) -> String {
        let name = format!("emuv:{}:{}:{}", machine_id(), self.kernel_index, self.model);
        format!(
            "GPU-{}",
            Uuid::new_v5(&UUID_NAMESPACE, name.as_bytes()).hyphenated()
        )
    }

    /// The card's PCI location: (domain, bus, device).
    pub fn pci_location(&self) -> (u32, u32, u32) {
        (self.pci.domain, self.pci.bus, self.pci.device)
    }

    /// As NVML and nvidia-smi print it: `00000000:01:00.0`.
    pub fn pci_bus_id(&self) -> String {
        self.pci.bus_id()
    }

    /// Whether `id` names this card: its UUID or its PCI bus ID (either NVML form, or without
    /// a domain), in any case.
    pub fn is_named_by(&self, id: &str) -> bool {
        let id = id.trim();
        id.eq_ignore_ascii_case(&self.uuid())
            || PciLocation::parse(id).is_some_and(|location| location == self.pci)
    }

    /// The card's minor number: its kernel index (`/dev/emuv<i>`).
    pub fn minor_number(&self) -> u32 {
        self.kernel_index
    }

    /// Processes holding at least one allocation, from `EMUV_IOCTL_PROCESSES` on a read-only
    /// open of the device node: entries as data, which no process name can forge. Needs read
    /// access to the node (root, unless a packaging rule grants a group): `PermissionDenied`
    /// otherwise, which tools turn into "no process list". A file whose opener has exited is
    /// an entry without a PID.
    pub fn processes(&self) -> io::Result<Vec<ProcessEntry>> {
        let device = Device::open_path(&self.device_node, false)?;
        let mut processes = device.processes()?;
        // An open file without allocations (such as this reader's own) is not a GPU user.
        processes.retain(|p| p.allocations > 0);
        Ok(processes)
    }

    /// Opens the card's `fail` and `ecc_errors` for watching: see [`Watch`].
    pub fn watch(&self) -> Watch {
        let open = |name| File::open(self.sysfs_dir.join(name)).ok();
        let mut watch = Watch {
            fail: open("fail"),
            ecc: open("ecc_errors"),
            sysfs_dir: self.sysfs_dir.clone(),
        };
        // sysfs wakes a poller only after it has read the attribute once.
        let _ = watch.lost();
        let _ = watch.ecc_errors();
        watch
    }
}

/// A card's `fail` and `ecc_errors`, kept open: the kernel wakes a `poll` for `POLLPRI` on
/// them (`sysfs_notify`) when they change, once they have been read through the same file.
pub struct Watch {
    fail: Option<File>,
    ecc: Option<File>,
    sysfs_dir: PathBuf,
}

/// Reads a whole attribute from the start of an open file (how sysfs re-arms its notification).
fn read_open(file: &File) -> io::Result<String> {
    let mut buf = [0u8; 64];
    let n = file.read_at(&mut buf, 0)?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| invalid("not text"))?;
    Ok(text.trim_end_matches('\n').to_owned())
}

impl Watch {
    /// Whether the card is lost now. A card that cannot be read any more (removed at run time)
    /// is lost; a module without `fail` never loses one.
    pub fn lost(&mut self) -> bool {
        match &self.fail {
            Some(file) => read_open(file).map_or(true, |state| state == FAIL_LOST),
            None => !self.sysfs_dir.exists(),
        }
    }

    /// The uncorrected ECC error count now; `None` without the attribute or when unreadable.
    pub fn ecc_errors(&mut self) -> Option<u64> {
        read_open(self.ecc.as_ref()?).ok()?.parse().ok()
    }
}

/// Waits until the kernel notifies a change of one of `watches`' attributes, or `timeout`
/// passes (`Ok` either way: callers re-read the values, which is also what makes this work on
/// files that never notify).
pub fn wait_for_change<'a>(
    watches: impl IntoIterator<Item = &'a Watch>,
    timeout: Duration,
) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let files: Vec<&File> = watches
        .into_iter()
        .flat_map(|w| [w.fail.as_ref(), w.ecc.as_ref()])
        .flatten()
        .collect();
    let mut fds: Vec<PollFd> = files
        .iter()
        .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLPRI | PollFlags::POLLERR))
        .collect();
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Fake sysfs and /dev trees for tests of the tools (this crate's and theirs).
#[cfg(any(test, feature = "fake"))]
pub mod fake {
    use super::Roots;
    use std::{fs, path::PathBuf};

    /// A temporary directory with `class/`, `dev/` and `params/`; removed on drop.
    pub struct Tree {
        pub root: PathBuf,
    }

    impl Tree {
        /// An empty tree under the temporary directory, unique to `name` and this process.
        pub fn new(name: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("emuv-fake-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            for dir in ["class", "dev", "params"] {
                fs::create_dir_all(root.join(dir)).expect("create fake tree");
            }
            Tree { root }
        }

        pub fn roots(&self) -> Roots {
            Roots {
                class_dir: self.root.join("class"),
                dev_dir: self.root.join("dev"),
                params_dir: self.root.join("params"),
            }
        }

        /// Card `kernel_index` of `model` ("4090" or "5090"), with every attribute the current
        /// module has and its device node; returns its sysfs directory.
        pub fn add_card(&self, kernel_index: u32, model: &str) -> PathBuf {
            let name = match kernel_index {
                0 => "emuv".to_owned(),
                i => format!("emuv{i}"),
            };
            let dir = self.root.join("class").join(&name);
            fs::create_dir_all(&dir).expect("create fake card");
            let blackwell = model.starts_with('5');
            let facts: [(&str, String); 10] = [
                (
                    "architecture",
                    if blackwell {
                        "Blackwell"
                    } else {
                        "Ada Lovelace"
                    }
                    .into(),
                ),
                (
                    "compute_capability",
                    if blackwell { "12.0" } else { "8.9" }.into(),
                ),
                (
                    "memory_bus_width",
                    if blackwell { "512" } else { "384" }.into(),
                ),
                (
                    "cuda_cores",
                    if blackwell { "21760" } else { "16384" }.into(),
                ),
                ("max_graphics_clock_mhz", "2520".into()),
                ("max_memory_clock_mhz", "10501".into()),
                (
                    "power_limit_mw",
                    if blackwell { "575000" } else { "450000" }.into(),
                ),
                ("bar1_bytes", (32u64 << 30).to_string()),
                ("chip", if blackwell { "GB202" } else { "AD102" }.into()),
                (
                    "device_id",
                    if blackwell { "0x2b85" } else { "0x2684" }.into(),
                ),
            ];
            let attrs = [
                (
                    "uevent",
                    format!("MAJOR=240\nMINOR={kernel_index}\nDEVNAME={name}\n"),
                ),
                ("index", kernel_index.to_string()),
                (
                    "pci_bus_id",
                    format!("00000000:{:02X}:00.0", kernel_index + 1),
                ),
                ("gpu_name", format!("NVIDIA GeForce RTX {model}")),
                ("gpu_model", model.to_owned()),
                ("vendor_id", "0x10de".into()),
                ("total_vram_bytes", (1u64 << 30).to_string()),
                ("used_bytes", (300u64 << 20).to_string()),
                ("quarantined_bytes", "0".into()),
                ("scrubbing_bytes", "0".into()),
                ("fail", "none".into()),
                ("ecc_errors", "0".into()),
            ];
            for (attr, value) in attrs.into_iter().chain(facts) {
                fs::write(dir.join(attr), format!("{value}\n")).expect("write fake attribute");
            }
            fs::write(self.root.join("dev").join(&name), "").expect("create fake node");
            dir
        }

        /// Sets `attr` of the card in `dir`, in place (as sysfs does: the same file).
        pub fn set(&self, dir: &std::path::Path, attr: &str, value: &str) {
            fs::write(dir.join(attr), format!("{value}\n")).expect("write fake attribute");
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fake::Tree, *};

    #[test]
    fn cards_are_numbered_in_kernel_order_with_gaps_left_out() {
        let tree = Tree::new("order");
        tree.add_card(10, "5090");
        tree.add_card(0, "4090");
        tree.add_card(2, "4090");
        let five = tree.add_card(5, "4090");
        fs::write(
            tree.roots().params_dir.join("driver_version"),
            "580.159.04\n",
        )
        .unwrap();
        let gpus = tree.roots().list().unwrap();
        let keys: Vec<_> = gpus.iter().map(|g| (g.index, g.kernel_index)).collect();
        assert_eq!(keys, [(0, 0), (1, 2), (2, 5), (3, 10)]);
        let g = &gpus[2];
        assert_eq!(g.device_node, tree.roots().dev_dir.join("emuv5"));
        assert_eq!(g.sysfs_dir, five);
        assert_eq!(g.pci_bus_id(), "00000000:06:00.0");
        assert_eq!(g.pci.bus_id_legacy(), "0000:06:00.0");
        assert_eq!(g.minor_number(), 5);
        assert_eq!(gpus[3].pci_bus_id(), "00000000:0B:00.0");
        assert_eq!(gpus[3].facts.architecture.as_deref(), Some("Blackwell"));
        assert_eq!(gpus[3].facts.compute_capability, Some((12, 0)));
        assert_eq!(gpus[0].facts.compute_capability, Some((8, 9)));
        assert_eq!(gpus[0].facts.power_limit_mw, Some(450_000));
        assert_eq!(gpus[0].facts.bar1_bytes, Some(32 << 30));
        assert_eq!(gpus[0].device_id, 0x2684);
        let m = gpus[0].memory().unwrap();
        assert_eq!(
            (m.total, m.used, m.free),
            (1 << 30, 300 << 20, (1 << 30) - (300 << 20))
        );
        assert_eq!(tree.roots().driver_version().as_deref(), Some("580.159.04"));
    }

    #[test]
    fn a_process_sees_the_cards_whose_nodes_it_has() {
        let tree = Tree::new("container");
        for i in [0, 1, 3] {
            tree.add_card(i, "4090");
        }
        let all = tree.roots().list().unwrap();
        for name in ["emuv", "emuv1"] {
            fs::remove_file(tree.roots().dev_dir.join(name)).unwrap();
        }
        let seen = tree.roots().list().unwrap();
        assert_eq!(seen.len(), 1);
        let (g, card) = (&seen[0], &all[2]);
        // Numbered 0 here, but the same card: UUID, bus ID and minor number are its own.
        assert_eq!((g.index, g.kernel_index), (0, 3));
        assert_eq!(g.uuid(), card.uuid());
        assert_ne!(g.uuid(), all[0].uuid());
        assert_eq!(g.pci_bus_id(), "00000000:04:00.0");
        assert_eq!(g.minor_number(), 3);
        // Cards, but no node at all: nothing to see, emuv is loaded all the same.
        fs::remove_file(tree.roots().dev_dir.join("emuv3")).unwrap();
        assert!(tree.roots().list().unwrap().is_empty());
        drop(tree);
        let gone = Tree::new("container-none");
        assert_eq!(
            gone.roots().list().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn an_older_module_still_lists_its_card() {
        let tree = Tree::new("old");
        let dir = tree.add_card(2, "4090");
        for attr in ["index", "pci_bus_id", "fail", "ecc_errors", "architecture"] {
            fs::remove_file(dir.join(attr)).unwrap();
        }
        tree.set(&dir, "cuda_cores", "many");
        let gpus = tree.roots().list().unwrap();
        let g = &gpus[0];
        assert_eq!((g.index, g.kernel_index), (0, 2));
        assert_eq!(g.pci_bus_id(), "00000000:03:00.0");
        assert!(!g.is_lost());
        assert_eq!(g.ecc_errors().unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(
            (g.facts.architecture.as_ref(), g.facts.cuda_cores),
            (None, None)
        );
        assert_eq!(tree.roots().driver_version(), None);
    }

    #[test]
    fn lost_and_ecc_are_read_live() {
        let tree = Tree::new("live");
        let dir = tree.add_card(0, "4090");
        let g = tree.roots().list().unwrap().remove(0);
        let mut watch = g.watch();
        assert!(!g.is_lost() && !watch.lost());
        tree.set(&dir, "fail", "lost");
        tree.set(&dir, "ecc_errors", "3");
        assert!(g.is_lost() && watch.lost());
        assert_eq!((g.ecc_errors().unwrap(), watch.ecc_errors()), (3, Some(3)));
        // A regular file never notifies: the wait ends at its timeout.
        let start = std::time::Instant::now();
        wait_for_change([&watch], Duration::from_millis(20)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(15));
        fs::remove_dir_all(&dir).unwrap();
        assert!(g.is_lost(), "a removed card is lost");
    }

    #[test]
    fn bus_ids_parse_in_every_form() {
        let one = PciLocation::for_kernel_index(0);
        for id in [
            "00000000:01:00.0",
            "0000:01:00.0",
            "01:00.0",
            "0000:01:00.0 ",
        ] {
            assert_eq!(PciLocation::parse(id), Some(one), "{id}");
        }
        assert_eq!(PciLocation::parse("0000:0a:00.0").map(|p| p.bus), Some(10));
        for bad in [
            "",
            "1",
            "0000:01:00",
            "x:01:00.0",
            "0:0:01:00.0",
            "000000000:01:00.0",
        ] {
            assert_eq!(PciLocation::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn cards_are_named_by_uuid_or_bus_id() {
        let tree = Tree::new("names");
        tree.add_card(0, "4090");
        tree.add_card(1, "4090");
        let gpus = tree.roots().list().unwrap();
        let uuid = gpus[1].uuid();
        assert!(gpus[1].is_named_by(&uuid.to_lowercase()));
        assert!(gpus[1].is_named_by(&uuid.to_uppercase().replace("GPU-", "gpu-")));
        assert!(gpus[1].is_named_by("0000:02:00.0"));
        assert!(gpus[1].is_named_by("00000000:02:00.0"));
        assert!(!gpus[0].is_named_by("0000:02:00.0"));
        assert!(!gpus[0].is_named_by(&uuid));
        assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
    }
}
