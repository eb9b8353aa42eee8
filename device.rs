// SPDX-License-Identifier: GPL-2.0

//! One emulated GPU as users see it: `/dev/emuv` and `/sys/class/emuv/emuv/` for card 0,
//! `/dev/emuv<i>` and `/sys/class/emuv/emuv<i>/` for card i.

use crate::{
    client::{placement_from_uapi, Buffer, Client, Limits, UserCharges},
    glue::{
        chrdev::{FileHandler, FileMapping},
        dmem::DmemRegion,
        sysfs::{attribute_groups, Attribute},
        vma,
    },
    gpu_db::{GpuModel, BAR1_BYTES, NVIDIA_VENDOR_ID},
    report::{write_report, ProcessUsage},
    uapi,
    vram_pool::{PoolStats, Strategy, Tier, VramPool},
};
use core::fmt::{self, Write};
use kernel::{
    mm::virt::VmaNew,
    new_mutex,
    page::PAGE_SHIFT,
    prelude::*,
    str::{BStr, CString, Formatter},
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex,
    },
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice, UserSliceWriter},
};

/// One emulated GPU.
#[pin_data(PinnedDrop)]
pub(crate) struct EmuvDevice {
    /// Its number: the minor of its node, `N` in `/dev/emuvN`, 0 for `/dev/emuv`.
    pub(crate) index: u32,
    pub(crate) model: &'static GpuModel,
    pub(crate) pool: Arc<VramPool>,
    pub(crate) debug: bool,
    limits: Limits,
    /// Bytes per user across all of their files.
    user_charges: Arc<UserCharges>,
    /// The card as a dmem cgroup region, `emuv/<node>`: every allocation is charged to the
    /// allocating task's cgroup.
    dmem: DmemRegion,
    /// Set when the card is taken away (configfs `enabled=0`): no new opens.
    removed: Atomic<bool>,
    /// Uncorrected ECC errors injected through `ecc_errors`.
    ecc_errors: Atomic<u64>,
    /// Every open file, for the per-process report and for unmapping a lost card.
    #[pin]
    clients: Mutex<KVec<OpenEntry>>,
}

#[pinned_drop]
impl PinnedDrop for EmuvDevice {
    fn drop(self: Pin<&mut Self>) {
        // The card goes (unload, configfs): its scrubber runs module code, so it must be done
        // before the module can go. Nothing can free memory of the card any more.
        self.pool.wait_for_scrubber();
    }
}

/// An open file of the card as the card sees it.
struct OpenEntry {
    client: Arc<Client>,
    mapping: FileMapping,
}

/// The name of card `index`'s node, sysfs directory and configfs directory: `emuv` for card 0,
/// `emuv<i>` for card i.
pub(crate) fn node_name(index: u32) -> Result<CString> {
    if index == 0 {
        CString::try_from_fmt(fmt!("emuv"))
    } else {
        CString::try_from_fmt(fmt!("emuv{index}"))
    }
}

/// Bus number of card `index` on the emulated PCI bus: 1 + index, as a real card sits behind
/// a root port; stable across reloads because the index is.
fn pci_bus(index: u32) -> u32 {
    index + 1
}

/// State of one open `/dev/emuv`.
#[pin_data]
pub(crate) struct OpenFile {
    client: Arc<Client>,
    /// Opened for writing: only such files may allocate and free.
    writable: bool,
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
            .extend_from_slice(s.as_bytes(), GFP_KERNEL_ACCOUNT)
            .map_err(|_| fmt::Error)
    }
}

/// Copies `s` into a fixed, NUL-terminated C string field.
fn copy_c_string(dst: &mut [u8], s: &str) {
    let len = s.len().min(dst.len().saturating_sub(1));
    dst[..len].copy_from_slice(&s.as_bytes()[..len]);
    dst[len..].fill(0);
}

/// Reads a `T` from `arg`, lets `f` work on it, writes it back.
fn with_user_struct<T: FromBytes + AsBytes>(
    arg: UserPtr,
    f: impl FnOnce(&mut T) -> Result,
) -> Result<isize> {
    let (mut reader, mut writer) = UserSlice::new(arg, core::mem::size_of::<T>()).reader_writer();
    let mut value: T = reader.read()?;
    f(&mut value)?;
    writer.write(&value)?;
    Ok(0)
}

impl EmuvDevice {
    /// Initialises card `index` for `model` over `pool`.
    pub(crate) fn new(
        index: u32,
        model: &'static GpuModel,
        pool: Arc<VramPool>,
        debug: bool,
        limits: Limits,
        user_charges: Arc<UserCharges>,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            dmem: {
                let node = node_name(index)?;
                let config = pool.config();
                let bytes = config.physical_bytes.saturating_add(config.virtual_bytes);
                DmemRegion::register(&CString::try_from_fmt(fmt!("emuv/{}", &*node))?, bytes)?
            },
            index,
            model,
            pool,
            debug,
            limits,
            user_charges,
            removed: Atomic::new(false),
            ecc_errors: Atomic::new(0),
            clients <- new_mutex!(KVec::new()),
        })
    }

    /// Whether the card is lost (`fail=lost`): it fell off the bus, as far as programs can
    /// tell.
    pub(crate) fn lost(&self) -> bool {
        self.pool.gate.is_closed()
    }

    /// `EIO` on a lost card, for calls on files opened before it was lost.
    fn check_present(&self) -> Result {
        if self.lost() {
            Err(EIO)
        } else {
            Ok(())
        }
    }

    #[cfg(CONFIG_CONFIGFS_FS)]
    /// Takes the card out of service if no file is open on it (and so none maps it): `EBUSY`
    /// otherwise. Opens that found the card before it went are refused (`ENODEV`).
    pub(crate) fn retire_if_unused(&self) -> Result {
        let clients = self.clients.lock();
        if !clients.is_empty() {
            return Err(EBUSY);
        }
        self.removed.store(true, Relaxed);
        Ok(())
    }

    /// `fail=lost`: no new opens (`ENODEV`), `EIO` on open files, and every mapping loses its
    /// pages and `SIGBUS`es on its next access; memory goes back as its files close.
    /// `fail=none` brings the card back once no file is open on it (`EBUSY` before).
    pub(crate) fn set_fail(&self, lost: bool) -> Result {
        let clients = self.clients.lock();
        if !lost {
            if self.lost() && !clients.is_empty() {
                return Err(EBUSY);
            }
            if self.lost() {
                pr_info!("card {}: back (fail=none)\n", self.index);
            }
            self.pool.gate.open();
            return Ok(());
        }
        if self.pool.gate.close() {
            for entry in clients.iter() {
                entry.mapping.unmap_all();
            }
            // As NVIDIA's driver logs it, which log watchers (node-problem-detector's NVIDIA
            // rules, DCGM) look for.
            pr_err!(
                "NVRM: Xid (PCI:0000:{:02x}:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n",
                pci_bus(self.index)
            );
        }
        Ok(())
    }

    /// `ecc_errors=N`: N more uncorrected ECC errors.
    pub(crate) fn add_ecc_errors(&self, count: u64) {
        let mut current = self.ecc_errors.load(Relaxed);
        loop {
            let new = current.saturating_add(count);
            match self.ecc_errors.cmpxchg(current, new, Relaxed) {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        pr_err!(
            "NVRM: Xid (PCI:0000:{:02x}:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU ({} injected).\n",
            pci_bus(self.index),
            count
        );
    }

    pub(crate) fn ecc_errors(&self) -> u64 {
        self.ecc_errors.load(Relaxed)
    }

    fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    fn strategy(&self) -> Strategy {
        self.pool.config().strategy
    }

    /// The report; with the per-process list only for readers of `/dev/emuv` (root).
    fn write_report(&self, out: &mut impl Write, with_processes: bool) -> fmt::Result {
        let mut processes = KVec::new();
        if with_processes {
            self.process_usage(&mut processes).map_err(|_| fmt::Error)?;
        }
        write_report(
            out,
            self.model,
            self.strategy(),
            &self.stats(),
            with_processes.then_some(&processes[..]),
        )
    }

    /// Usage per process (a process may hold several open files), as the reader's PID
    /// namespace sees it: processes outside it are left out, and a file whose opener has exited
    /// is a row of its own without a PID (its number may belong to another process by now).
    fn process_usage(&self, out: &mut KVec<ProcessUsage>) -> Result {
        let clients = self.clients.lock();
        for (i, OpenEntry { client, .. }) in clients.iter().enumerate() {
            let process = &client.process;
            let Some(pid) = process.pid_for_current_reader() else {
                continue;
            };
            let alive = process.alive();
            if alive && clients[..i].iter().any(|c| c.client.process.is(process)) {
                continue;
            }
            let mut entry = ProcessUsage::new(alive.then_some(pid), process.comm());
            let same_process = clients[i..].iter().filter(|c| c.client.process.is(process));
            for same in same_process.take(if alive { usize::MAX } else { 1 }) {
                let usage = same.client.usage();
                entry.bytes += usage.bytes;
                entry.allocations += u64::from(usage.allocations);
            }
            out.push(entry, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(())
    }

    /// `EMUV_IOCTL_PROCESSES`: the process list as data, for tools that must not parse text.
    fn processes(&self, req: &mut uapi::Processes) -> Result {
        if req.size as usize != core::mem::size_of::<uapi::Processes>()
            || req.entry_size as usize != core::mem::size_of::<uapi::Process>()
            || req.reserved != [0; 2]
        {
            return Err(EINVAL);
        }
        let mut list = KVec::new();
        self.process_usage(&mut list)?;
        let written = list.len().min(req.count as usize);
        let entries = usize::try_from(req.entries).map_err(|_| EFAULT)?;
        let len = written * core::mem::size_of::<uapi::Process>();
        let mut out = UserSlice::new(UserPtr::from_addr(entries), len).writer();
        for entry in &list[..written] {
            out.write(&entry.to_uapi())?;
        }
        req.count = written as u32;
        req.total = u32::try_from(list.len()).unwrap_or(u32::MAX);
        Ok(())
    }

    fn info(&self, file: &OpenFile, info: &mut uapi::Info) -> Result {
        if info.size as usize != core::mem::size_of::<uapi::Info>() {
            return Err(EINVAL);
        }
        let stats = self.stats();
        info.abi_version = uapi::ABI_VERSION;
        info.vendor_id = NVIDIA_VENDOR_ID;
        info.device_id = self.model.device_id;
        info.strategy = match self.strategy() {
            Strategy::Lazy => uapi::STRATEGY_LAZY,
            Strategy::Eager => uapi::STRATEGY_EAGER,
        };
        copy_c_string(&mut info.name, self.model.name);
        copy_c_string(&mut info.model, self.model.key);
        for tier in Tier::ALL {
            let t = stats.tier(tier);
            info.tiers[tier as usize] = uapi::TierInfo {
                capacity: t.capacity,
                used: t.used,
                resident: t.resident,
            };
        }
        info.total = stats.capacity();
        info.used = stats.used();
        // What an ALLOC can have now: pages still being scrubbed too (it takes them as soon as
        // they are zeroed), as a real driver reports freed VRAM free at once.
        info.free = stats.free().saturating_add(stats.scrubbing());
        let usage = file.client.usage();
        info.file_limit = self.limits.file_bytes;
        info.file_used = usage.bytes;
        info.user_limit = self.user_charges.limit();
        info.user_used = self.user_charges.used(file.client.user);
        info.file_allocations_limit = self.limits.file_allocations;
        info.file_allocations = usage.allocations;
        info.reserved = [0; 1];
        Ok(())
    }

    fn alloc(&self, file: &OpenFile, req: &mut uapi::Alloc) -> Result<Arc<Buffer>> {
        if !file.writable {
            return Err(EBADF);
        }
        if req.size as usize != core::mem::size_of::<uapi::Alloc>()
            || req.flags != 0
            || req.reserved != [0; 2]
        {
            return Err(EINVAL);
        }
        let placement = placement_from_uapi(req.tier)?;
        let buffer =
            file.client
                .allocate(&self.pool, &self.dmem, req.bytes, placement, self.limits)?;
        let mut query = uapi::Query::default();
        buffer.query(&mut query)?;
        req.bytes = query.bytes;
        req.tier = query.tier;
        req.handle = buffer.handle();
        req.mmap_offset = query.mmap_offset;
        if self.debug {
            let tier = buffer.tier().name();
            pr_info!(
                "{} allocated {} bytes ({tier}) as handle {}\n",
                client_name(&file.client),
                req.bytes,
                req.handle
            );
        }
        Ok(buffer)
    }

    fn free(&self, file: &OpenFile, req: &uapi::Free) -> Result {
        if !file.writable {
            return Err(EBADF);
        }
        if req.flags != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let bytes = file.client.free(req.handle)?;
        if self.debug {
            pr_info!(
                "{} freed handle {} ({} bytes)\n",
                client_name(&file.client),
                req.handle,
                bytes
            );
        }
        Ok(())
    }

    fn query(&self, file: &OpenFile, req: &mut uapi::Query) -> Result {
        if req.flags != 0 {
            return Err(EINVAL);
        }
        file.client.buffer(req.handle)?.query(req)?;
        req.reserved = [0; 2];
        Ok(())
    }
}

/// The command name of a client's process, for log lines.
fn client_name(client: &Client) -> &BStr {
    BStr::from_bytes(client.process.comm())
}

impl FileHandler for EmuvDevice {
    type OpenFile = OpenFile;

    fn open(&self, writable: bool, mapping: FileMapping) -> impl PinInit<OpenFile, Error> {
        let client = Client::new(&self.user_charges).and_then(|client| {
            let mut clients = self.clients.lock();
            // Checked under the lock that `set_fail` holds: a file is either refused here or
            // seen by the loss (and then `fail=none` waits for it).
            if self.lost() || self.removed.load(Relaxed) {
                return Err(ENODEV);
            }
            let entry = OpenEntry {
                client: client.clone(),
                mapping,
            };
            clients.push(entry, GFP_KERNEL_ACCOUNT)?;
            Ok(client)
        });
        if self.debug {
            pr_info!("card {} opened\n", self.index);
        }
        try_pin_init!(OpenFile {
            client: client?,
            writable,
            snapshot <- new_mutex!(KVec::new()),
        })
    }

    fn release(&self, file: &OpenFile) {
        let mut clients = self.clients.lock();
        if let Some(i) = clients
            .iter()
            .position(|c| Arc::ptr_eq(&c.client, &file.client))
        {
            let _ = clients.remove(i);
        }
        if self.debug {
            let usage = file.client.usage();
            pr_info!(
                "card {} closed by {}: returning {} bytes in {} allocations\n",
                self.index,
                client_name(&file.client),
                usage.bytes,
                usage.allocations
            );
        }
    }

    fn read(&self, file: &OpenFile, out: &mut UserSliceWriter, offset: &mut i64) -> Result<usize> {
        self.check_present()?;
        let mut snapshot = file.snapshot.lock();
        if *offset == 0 || snapshot.is_empty() {
            snapshot.clear();
            self.write_report(&mut VecWriter(&mut snapshot), true)
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

    fn ioctl(&self, file: &OpenFile, cmd: u32, arg: UserPtr) -> Result<isize> {
        self.check_present()?;
        match cmd {
            uapi::IOCTL_INFO => with_user_struct(arg, |info| self.info(file, info)),
            uapi::IOCTL_ALLOC => {
                // If the result cannot be copied out, the caller never learns the handle: free
                // that very buffer (by handle, a concurrent FREE and ALLOC could name another).
                let mut made = None;
                let result = with_user_struct(arg, |req: &mut uapi::Alloc| {
                    made = Some(self.alloc(file, req)?);
                    Ok(())
                });
                if let (Err(_), Some(buffer)) = (&result, made) {
                    let _ = file.client.free_buffer(&buffer);
                }
                result
            }
            uapi::IOCTL_FREE => {
                let req: uapi::Free = UserSlice::new(arg, core::mem::size_of::<uapi::Free>())
                    .reader()
                    .read()?;
                self.free(file, &req).map(|()| 0)
            }
            uapi::IOCTL_QUERY => with_user_struct(arg, |req| self.query(file, req)),
            uapi::IOCTL_PROCESSES => with_user_struct(arg, |req| self.processes(req)),
            _ => Err(ENOTTY),
        }
    }

    fn mmap(&self, file: &OpenFile, vma: &VmaNew) -> Result {
        // Private mappings would copy pages on write and hide them from other mappings.
        // `VM_MAYSHARE`, not `VM_SHARED`: the kernel clears the latter for a shared mapping of
        // a file opened read-only, which may still map its allocations to read them.
        if !vma::is_shared(vma) {
            return Err(EINVAL);
        }
        self.check_present()?;
        let pgoff = vma::pgoff(vma);
        let pages = (vma.end() - vma.start()) >> PAGE_SHIFT;
        let buffer = file.client.buffer_for_mapping(pgoff).map_err(|_| EINVAL)?;
        // The offsets just before a buffer may be its alignment padding: none of its pages.
        let first = pgoff.checked_sub(buffer.handle() as usize);
        if first
            .and_then(|first| first.checked_add(pages))
            .is_none_or(|end| end > buffer.pages())
        {
            buffer.mappings_undo();
            return Err(EINVAL);
        }
        vma::map(vma, buffer, self.strategy() == Strategy::Eager)
    }
}

// One value per file, as sysfs wants; `vram_info` is the whole report, totals only (the file is
// world-readable; the per-process list is root's, through /dev/emuv).
macro_rules! attributes {
    (
        $($static:ident: $name:literal => |$dev:ident, $out:ident| $body:expr;)+
        [writable] $($wstatic:ident: $wname:literal => $show:expr, $store:expr;)+
    ) => {
        $(static $static: Attribute<EmuvDevice> =
            Attribute::read_only($name, |$dev: &EmuvDevice, $out: &mut Formatter<'_>| $body);)+
        $(static $wstatic: Attribute<EmuvDevice> = Attribute::read_write($wname, $show, $store);)+
        attribute_groups! {
            pub(crate) static GROUPS: EmuvDevice = [$($static,)+ $($wstatic),+];
        }
    };
}

/// `fail`: `none` or `lost`.
pub(crate) fn show_fail(dev: &EmuvDevice, out: &mut Formatter<'_>) -> fmt::Result {
    writeln!(out, "{}", if dev.lost() { "lost" } else { "none" })
}

pub(crate) fn store_fail(dev: &EmuvDevice, value: &[u8]) -> Result {
    match value.trim_ascii() {
        b"none" => dev.set_fail(false),
        b"lost" => dev.set_fail(true),
        _ => {
            pr_err!(
                "card {}: invalid fail={}: accepted: none, lost\n",
                dev.index,
                BStr::from_bytes(value.trim_ascii())
            );
            Err(EINVAL)
        }
    }
}

pub(crate) fn show_ecc_errors(dev: &EmuvDevice, out: &mut Formatter<'_>) -> fmt::Result {
    writeln!(out, "{}", dev.ecc_errors())
}

/// `ecc_errors`: writing N adds N uncorrected errors (reading gives the total).
pub(crate) fn store_ecc_errors(dev: &EmuvDevice, value: &[u8]) -> Result {
    let text = value.trim_ascii();
    let count = core::str::from_utf8(text)
        .ok()
        .filter(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok());
    match count {
        Some(count) => {
            dev.add_ecc_errors(count);
            Ok(())
        }
        None => {
            pr_err!(
                "card {}: invalid ecc_errors={}: accepted: a decimal count of errors to add\n",
                dev.index,
                BStr::from_bytes(text)
            );
            Err(EINVAL)
        }
    }
}

attributes! {
    VRAM_INFO: c"vram_info" => |dev, out| dev.write_report(out, false);
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
    QUARANTINED_BYTES: c"quarantined_bytes" =>
        |dev, out| writeln!(out, "{}", dev.stats().quarantined());
    SCRUBBING_BYTES: c"scrubbing_bytes" =>
        |dev, out| writeln!(out, "{}", dev.stats().scrubbing());
    HUGE_BYTES: c"huge_bytes" => |dev, out| writeln!(out, "{}", dev.stats().huge());
    HUGE_FALLBACKS: c"huge_fallbacks" =>
        |dev, out| writeln!(out, "{}", dev.stats().huge_fallbacks);
    ALLOCATION_STRATEGY: c"allocation_strategy" =>
        |dev, out| writeln!(out, "{}", dev.strategy().name());
    INDEX: c"index" => |dev, out| writeln!(out, "{}", dev.index);
    PCI_BUS_ID: c"pci_bus_id" => |dev, out| writeln!(out, "00000000:{:02X}:00.0", pci_bus(dev.index));
    CHIP: c"chip" => |dev, out| writeln!(out, "{}", dev.model.chip);
    ARCHITECTURE: c"architecture" => |dev, out| writeln!(out, "{}", dev.model.architecture.name());
    COMPUTE_CAPABILITY: c"compute_capability" => |dev, out| {
        let (major, minor) = dev.model.architecture.compute_capability();
        writeln!(out, "{major}.{minor}")
    };
    MEMORY_BUS_WIDTH: c"memory_bus_width" => |dev, out| writeln!(out, "{}", dev.model.bus_width_bits);
    CUDA_CORES: c"cuda_cores" => |dev, out| writeln!(out, "{}", dev.model.cuda_cores);
    MAX_GRAPHICS_CLOCK_MHZ: c"max_graphics_clock_mhz" =>
        |dev, out| writeln!(out, "{}", dev.model.boost_clock_mhz);
    MAX_MEMORY_CLOCK_MHZ: c"max_memory_clock_mhz" =>
        |dev, out| writeln!(out, "{}", dev.model.memory_clock_mhz());
    POWER_LIMIT_MW: c"power_limit_mw" =>
        |dev, out| writeln!(out, "{}", u64::from(dev.model.power_watts) * 1000);
    BAR1_BYTES_ATTR: c"bar1_bytes" => |_dev, out| writeln!(out, "{}", BAR1_BYTES);
    [writable]
    FAIL: c"fail" => show_fail, store_fail;
    ECC_ERRORS: c"ecc_errors" => show_ecc_errors, store_ecc_errors;
}
