// SPDX-License-Identifier: GPL-2.0
//! The emulated GPUs as GPU tools see them (emuv-smi, the NVML library): found in
//! `/sys/class/emuv/`, read live from emuv's sysfs attributes, with the per-process list from
//! the device node's `EMUV_IOCTL_PROCESSES`.
//!
//! Written for N cards: each device directory under the class is one GPU, ordered by name
//! (`emuv`, `emuv1`, ...), and its position is its index. emuv creates one per load today.

use crate::{Device, ProcessEntry};
use std::{
    fs, io,
    path::{Path, PathBuf},
};
use uuid::Uuid;

/// Where emuv's class lives in sysfs.
pub const CLASS_DIR: &str = "/sys/class/emuv";

/// Sizes in bytes, one consistent snapshot: `used + free == total`. As in NVML, `used` includes
/// `reserved`: the pool's quarantined pages (freed, but still held by a pipe, io_uring or direct
/// I/O), which no allocation can have until they are let go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub reserved: u64,
    pub used: u64,
    pub free: u64,
}

/// One emulated GPU: its identity, read once; memory and processes are read on each call.
#[derive(Clone, Debug)]
pub struct Gpu {
    pub index: u32,
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
}

/// Every emulated GPU, in index order. `NotFound` when emuv is not loaded.
pub fn list() -> io::Result<Vec<Gpu>> {
    list_in(Path::new(CLASS_DIR))
}

fn list_in(class_dir: &Path) -> io::Result<Vec<Gpu>> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(class_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    // emuv < emuv1 < emuv2 < ... < emuv10
    dirs.sort_by_key(|d| (d.as_os_str().len(), d.clone()));
    if dirs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no emulated GPU in /sys/class/emuv",
        ));
    }
    dirs.into_iter()
        .enumerate()
        .map(|(index, dir)| Gpu::read(index as u32, dir))
        .collect()
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

/// Names of the per-host identity that the UUIDs derive from: the same on every reload, different
/// between machines (as real GPU UUIDs are).
fn machine_id() -> String {
    fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Namespace of emuv's name-based (v5) GPU UUIDs.
const UUID_NAMESPACE: Uuid = Uuid::from_u128(0x6d75_7665_2d67_7075_8000_656d_7576_0001);

impl Gpu {
    fn read(index: u32, sysfs_dir: PathBuf) -> io::Result<Self> {
        let uevent = read_attr(&sysfs_dir, "uevent")?;
        let devname = uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .ok_or_else(|| invalid(format!("{}/uevent: no DEVNAME", sysfs_dir.display())))?;
        Ok(Gpu {
            index,
            device_node: Path::new("/dev").join(devname),
            name: read_attr(&sysfs_dir, "gpu_name")?,
            model: read_attr(&sysfs_dir, "gpu_model")?,
            vendor_id: parse_hex_u16(&sysfs_dir, "vendor_id")?,
            device_id: parse_hex_u16(&sysfs_dir, "device_id")?,
            sysfs_dir,
        })
    }

    /// The pool's counters now. `free` is derived, so the figures always add up even while
    /// other processes allocate (a FREE between the two reads can count a range both as used
    /// and as quarantined for an instant: the sum is capped at the total).
    pub fn memory(&self) -> io::Result<Memory> {
        let total = parse_u64(&self.sysfs_dir, "total_vram_bytes")?;
        let allocated = parse_u64(&self.sysfs_dir, "used_bytes")?;
        let reserved = parse_u64(&self.sysfs_dir, "quarantined_bytes")?.min(total);
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

    /// Stable across reloads of the same card at the same index on this machine:
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid(&self) -> String {
        let name = format!("emuv:{}:{}:{}", machine_id(), self.index, self.model);
        format!(
            "GPU-{}",
            Uuid::new_v5(&UUID_NAMESPACE, name.as_bytes()).hyphenated()
        )
    }

    /// The emulated PCI location: domain 0, bus 1 + index, device 0, function 0.
    pub fn pci_location(&self) -> (u32, u32, u32) {
        (0, 1 + self.index, 0)
    }

    /// As NVML and nvidia-smi print it: `00000000:01:00.0`.
    pub fn pci_bus_id(&self) -> String {
        let (domain, bus, device) = self.pci_location();
        format!("{domain:08X}:{bus:02X}:{device:02X}.0")
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_listed_in_index_order_from_sysfs() {
        let root = std::env::temp_dir().join(format!("emuv-gpus-{}", std::process::id()));
        for (dir, dev, key) in [
            ("emuv10", "emuv10", "5090"),
            ("emuv", "emuv", "4090"),
            ("emuv2", "emuv2", "4060"),
        ] {
            let d = root.join(dir);
            fs::create_dir_all(&d).unwrap();
            for (attr, value) in [
                ("uevent", format!("MAJOR=240\nMINOR=0\nDEVNAME={dev}\n")),
                ("gpu_name", format!("NVIDIA GeForce RTX {key}\n")),
                ("gpu_model", format!("{key}\n")),
                ("vendor_id", "0x10de\n".into()),
                ("device_id", "0x2684\n".into()),
                ("total_vram_bytes", "1000\n".into()),
                ("used_bytes", "300\n".into()),
                ("quarantined_bytes", "100\n".into()),
            ] {
                fs::write(d.join(attr), value).unwrap();
            }
        }
        let gpus = list_in(&root).unwrap();
        let keys: Vec<_> = gpus.iter().map(|g| (g.index, g.model.as_str())).collect();
        assert_eq!(keys, [(0, "4090"), (1, "4060"), (2, "5090")]);
        assert_eq!(gpus[1].device_node, Path::new("/dev/emuv2"));
        assert_eq!(gpus[1].pci_bus_id(), "00000000:02:00.0");
        assert_eq!(gpus[0].device_id, 0x2684);
        let m = gpus[0].memory().unwrap();
        assert_eq!((m.total, m.reserved, m.used, m.free), (1000, 100, 400, 600));
        let uuid = gpus[0].uuid();
        assert_eq!(uuid, gpus[0].uuid(), "stable");
        assert_ne!(uuid, gpus[1].uuid());
        assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(list_in(&root).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
