// SPDX-License-Identifier: GPL-2.0
//! Allocates emulated VRAM through /dev/emuv, maps it, fills it, verifies it, frees it.
//!
//!   cargo run --example vram_fill -- [MiB]    (as root)

use emuv::{c_field, Device, Tier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: u64 = std::env::args().nth(1).map_or(Ok(16), |s| s.parse())?;
    let dev = Device::open()?;
    let info = dev.info()?;
    println!(
        "{}: {} MiB free of {} MiB",
        c_field(&info.name),
        info.free >> 20,
        info.total >> 20
    );
    let allocation = dev.alloc(mib << 20, Tier::Any)?;
    let mut mapping = dev.map(&allocation)?;
    let pattern = |i: usize| (i * 7 + (i >> 12)) as u8;
    for (i, b) in mapping.as_mut_slice().iter_mut().enumerate() {
        *b = pattern(i);
    }
    if let Some(i) = (0..mapping.len()).find(|&i| mapping.as_slice()[i] != pattern(i)) {
        return Err(format!("mismatch at byte {i}").into());
    }
    drop(mapping);
    dev.free(allocation.handle)?;
    println!(
        "filled and verified {} MiB in the {:?} tier",
        allocation.bytes >> 20,
        allocation.tier
    );
    Ok(())
}
