// SPDX-License-Identifier: GPL-2.0

//! The emulated GPU as users see it: `/dev/emuv` and `/sys/class/emuv/emuv/`.

use crate::{
    glue::{
        chrdev::FileHandler,
        sysfs::{attribute_groups, Attribute},
    },
    gpu_db::{GpuModel, NVIDIA_VENDOR_ID},
    report::write_report,
    vram_pool::{PoolStats, Tier, VramPool},
};
use core::fmt::{self, Write};
use kernel::{new_mutex, prelude::*, str::Formatter, sync::Mutex, uaccess::UserSliceWriter};

/// One emulated GPU.
pub(crate) struct EmuvDevice {
    pub(crate) model: &'static GpuModel,
    pub(crate) pool: Pin<KBox<VramPool>>,
    pub(crate) debug: bool,
}

/// State of one open `/dev/emuv`.
#[pin_data]
pub(crate) struct OpenFile {
    /// The report as it was when this file read from offset 0, so a read in several chunks (or
    /// after an `lseek`) sees one consistent text.
    #[pin]
    snapshot: Mutex<KVec<u8>>,
}

/// Collects formatted text in a vector, failing instead of cutting.
struct VecWriter<'a>(&'a mut KVec<u8>);

impl Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), GFP_KERNEL)
            .map_err(|_| fmt::Error)
    }
}

impl EmuvDevice {
    fn write_report(&self, out: &mut impl Write) -> fmt::Result {
        write_report(
            out,
            self.model,
            self.pool.config().strategy,
            &self.pool.stats(),
        )
    }

    fn stats(&self) -> PoolStats {
        self.pool.stats()
    }
}

impl FileHandler for EmuvDevice {
    type OpenFile = OpenFile;

    fn open(&self) -> impl PinInit<OpenFile, Error> {
        if self.debug {
            pr_info!("/dev/emuv opened\n");
        }
        try_pin_init!(OpenFile {
            snapshot <- new_mutex!(KVec::new()),
        })
    }

    fn read(&self, file: &OpenFile, out: &mut UserSliceWriter, offset: &mut i64) -> Result<usize> {
        let mut snapshot = file.snapshot.lock();
        if *offset == 0 || snapshot.is_empty() {
            snapshot.clear();
            self.write_report(&mut VecWriter(&mut snapshot))
                .map_err(|_| ENOMEM)?;
        }
        let start = usize::try_from(*offset).map_err(|_| EINVAL)?;
        let Some(rest) = snapshot.get(start..) else {
            return Ok(0);
        };
        let len = rest.len().min(out.len());
        out.write_slice(&rest[..len])?;
        *offset += len as i64;
        Ok(len)
    }
}

// One value per file, as sysfs wants; `vram_info` is the whole report.
macro_rules! attributes {
    ($($static:ident: $name:literal => |$dev:ident, $out:ident| $body:expr;)+) => {
        $(static $static: Attribute<EmuvDevice> =
            Attribute::read_only($name, |$dev: &EmuvDevice, $out: &mut Formatter<'_>| $body);)+
        attribute_groups! {
            pub(crate) static GROUPS: EmuvDevice = [$($static),+];
        }
    };
}

attributes! {
    VRAM_INFO: c"vram_info" => |dev, out| dev.write_report(out);
    GPU_NAME: c"gpu_name" => |dev, out| writeln!(out, "{}", dev.model.name);
    GPU_MODEL: c"gpu_model" => |dev, out| writeln!(out, "{}", dev.model.key);
    VENDOR_ID: c"vendor_id" => |_dev, out| writeln!(out, "0x{:04x}", NVIDIA_VENDOR_ID);
    DEVICE_ID: c"device_id" => |dev, out| writeln!(out, "0x{:04x}", dev.model.device_id);
    TOTAL_VRAM_BYTES: c"total_vram_bytes" => |dev, out| writeln!(out, "{}", dev.stats().capacity());
    PHYSICAL_VRAM_BYTES: c"physical_vram_bytes" =>
        |dev, out| writeln!(out, "{}", dev.stats().tier(Tier::Physical).capacity);
    VIRTUAL_VRAM_BYTES: c"virtual_vram_bytes" =>
        |dev, out| writeln!(out, "{}", dev.stats().tier(Tier::Virtual).capacity);
    USED_BYTES: c"used_bytes" => |dev, out| writeln!(out, "{}", dev.stats().used());
    FREE_BYTES: c"free_bytes" => |dev, out| writeln!(out, "{}", dev.stats().free());
    RESIDENT_BYTES: c"resident_bytes" => |dev, out| writeln!(out, "{}", dev.stats().resident());
    ALLOCATION_STRATEGY: c"allocation_strategy" =>
        |dev, out| writeln!(out, "{}", dev.pool.config().strategy.name());
}
