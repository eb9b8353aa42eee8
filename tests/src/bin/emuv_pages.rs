// SPDX-License-Identifier: GPL-2.0
//! No page of emulated VRAM is ever shared between allocations. The attack: file A maps an
//! allocation, lets something else take a reference to a page of it (a pipe through
//! `vmsplice()`, an io_uring fixed buffer, direct I/O), unmaps and frees it; file B then fills
//! the whole card with its own data; what A still holds must show A's data, never B's. Eager
//! pools quarantine such a page until it is let go; lazy pools never reuse a page the kernel
//! has not freed. Counters stay exact throughout (used + free + quarantined + scrubbing =
//! total, read once the scrubber is done), a quarantined page is released once let go, and at
//! the latest at unload.

use emuv::{Device, Mapping, Tier};
use emuv_tests::{
    attr_u64, err, module, settle_scrubbing,
    tap::{check, check_eq, Tap},
};
use io_uring::{opcode, types, IoUring};
use nix::{
    errno::Errno,
    fcntl::{vmsplice, SpliceFFlags},
    sys::uio::{pread, pwrite},
    unistd::{pipe, read},
};
use std::{
    fs::OpenOptions,
    io::IoSlice,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::OpenOptionsExt,
    },
};

const PAGE: usize = 4096;
/// A small card, so that B can fill all of it.
const EAGER: &str = "physical_vram_mb=4 virtual_vram_mb=0 lazy_allocation=0";
const LAZY: &str = "physical_vram_mb=4 virtual_vram_mb=0 lazy_allocation=1";
/// Size of A's allocation and of each of B's.
const CHUNK: u64 = 64 * 1024;
const A_DATA: u8 = 0xa1;
const B_DATA: u8 = 0xb2;

type TestFn = fn(&str) -> Result<(), String>;

/// The pool's counters once the scrubber has zeroed what was freed, which must add up.
fn counters() -> Result<(u64, u64, u64, u64), String> {
    settle_scrubbing()?;
    let total = attr_u64("total_vram_bytes")?;
    let used = attr_u64("used_bytes")?;
    let free = attr_u64("free_bytes")?;
    let quarantined = attr_u64("quarantined_bytes")?;
    let scrubbing = attr_u64("scrubbing_bytes")?;
    check(used + free + quarantined + scrubbing == total, || {
        format!(
            "used {used} + free {free} + quarantined {quarantined} + scrubbing {scrubbing} != total {total}"
        )
    })?;
    Ok((total, used, free, quarantined))
}

fn eager(params: &str) -> bool {
    params.contains("lazy_allocation=0")
}

/// A's allocation, mapped and filled with A's data.
fn a_allocation(dev: &Device) -> Result<(u32, Mapping), String> {
    let a = dev.alloc(CHUNK, Tier::Any).map_err(err("A: alloc"))?;
    let mut m = dev.map(&a).map_err(err("A: mmap"))?;
    m.as_mut_slice().fill(A_DATA);
    Ok((a.handle, m))
}

/// A lets go of its allocation: unmap, then FREE, which must work although a page is held.
fn a_unmap_and_free(dev: &Device, handle: u32, m: Mapping) -> Result<(), String> {
    m.unmap().map_err(|(e, _)| format!("A: munmap: {e}"))?;
    dev.free(handle)
        .map_err(err("A: free while a page is held elsewhere"))
}

/// After A freed with one page held: it is quarantined (eager) or simply gone from the pool
/// (lazy), and the counters add up.
fn check_one_page_held(params: &str) -> Result<(), String> {
    let (total, used, free, quarantined) = counters()?;
    let expected = if eager(params) { PAGE as u64 } else { 0 };
    check_eq("used after A's free", used, 0)?;
    check_eq("quarantined after A's free", quarantined, expected)?;
    check_eq("free after A's free", free, total - expected)?;
    // What NVML and emuv-smi read: a quarantined page is reserved (part of used), not free.
    let gpu = emuv::gpus::list()
        .map_err(err("list GPUs"))?
        .into_iter()
        .next()
        .ok_or("no GPU listed")?;
    let tools = gpu.memory().map_err(err("GPU memory"))?;
    check_eq(
        "tools' memory (total, reserved, used, free)",
        (tools.total, tools.reserved, tools.used, tools.free),
        (total, expected, expected, total - expected),
    )
}

/// B fills the whole card with its data, as any other tenant could; returns its file and
/// mappings (kept, so its data stays there while A's holder is read).
fn b_fills_the_card() -> Result<(Device, Vec<Mapping>), String> {
    let b = Device::open().map_err(err("B: open"))?;
    let mut maps = Vec::new();
    loop {
        match b.alloc(CHUNK, Tier::Any) {
            Ok(a) => {
                let mut m = b.map(&a).map_err(err("B: mmap"))?;
                check(m.as_slice().iter().all(|&x| x == 0), || {
                    "B's new allocation is not zeroed".into()
                })?;
                m.as_mut_slice().fill(B_DATA);
                maps.push(m);
            }
            Err(Errno::ENOMEM) => break,
            Err(e) => return Err(format!("B: alloc: {e}")),
        }
    }
    check(!maps.is_empty(), || "B got nothing".into())?;
    Ok((b, maps))
}

/// What A's holder gave back must be A's data.
fn check_a_data(what: &str, got: &[u8]) -> Result<(), String> {
    check_eq(&format!("{what}: bytes"), got.len(), PAGE)?;
    match got.iter().position(|&x| x != A_DATA) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: byte {i} is {:#x}, not A's {A_DATA:#x}{}",
            got[i],
            if got[i] == B_DATA {
                ": B's data leaked to A"
            } else {
                ""
            }
        )),
    }
}

/// B goes and the pool is whole again: the held page was let go before, so it is released.
fn check_all_back(b: Device, maps: Vec<Mapping>) -> Result<(), String> {
    drop(maps);
    drop(b);
    let (total, used, free, quarantined) = counters()?;
    check_eq("used at the end", used, 0)?;
    check_eq("quarantined at the end", quarantined, 0)?;
    check_eq("free at the end", free, total)
}

fn vmsplice_into_a_pipe(params: &str) -> Result<(), String> {
    module::with_loaded(params, || {
        let a = Device::open().map_err(err("A: open"))?;
        let (handle, m) = a_allocation(&a)?;
        let (rx, tx) = pipe().map_err(err("pipe"))?;
        let n = vmsplice(
            &tx,
            &[IoSlice::new(&m.as_slice()[..PAGE])],
            SpliceFFlags::empty(),
        )
        .map_err(err("vmsplice"))?;
        check_eq("vmspliced bytes", n, PAGE)?;
        a_unmap_and_free(&a, handle, m)?;
        // Checked after the data: the leak itself is what this test is about.
        let counted = check_one_page_held(params);
        let (b, maps) = b_fills_the_card()?;
        let mut got = vec![0u8; PAGE];
        let n = read(&rx, &mut got).map_err(err("read the pipe"))?;
        check_a_data("the pipe", &got[..n])?;
        counted?;
        drop((rx, tx));
        check_all_back(b, maps)
    })
}

fn io_uring_fixed_buffer(params: &str) -> Result<(), String> {
    module::with_loaded(params, || {
        let a = Device::open().map_err(err("A: open"))?;
        let (handle, m) = a_allocation(&a)?;
        let addr = m.as_ptr();
        let mut ring = IoUring::new(4).map_err(err("io_uring_setup"))?;
        let iov = nix::libc::iovec {
            iov_base: addr.cast(),
            iov_len: PAGE,
        };
        // SAFETY: the buffer is A's mapping, registered (pinned) by the kernel; it is used
        // below only through the ring, whose pin outlives the mapping on purpose.
        unsafe { ring.submitter().register_buffers(&[iov]) }
            .map_err(err("IORING_REGISTER_BUFFERS of emulated VRAM"))?;
        a_unmap_and_free(&a, handle, m)?;
        let counted = check_one_page_held(params);
        let (b, maps) = b_fills_the_card()?;
        // The ring writes its fixed buffer, A's pinned page, into a pipe.
        let (rx, tx) = pipe().map_err(err("pipe"))?;
        let write = opcode::WriteFixed::new(types::Fd(tx.as_raw_fd()), addr, PAGE as u32, 0)
            .build()
            .user_data(1);
        // SAFETY: the fixed buffer (index 0) stays registered until the completion is reaped.
        unsafe { ring.submission().push(&write) }.map_err(|e| format!("push: {e}"))?;
        ring.submit_and_wait(1).map_err(err("io_uring_enter"))?;
        let result = ring
            .completion()
            .next()
            .map(|c| c.result())
            .ok_or("no completion")?;
        check_eq("WRITE_FIXED result", result, PAGE as i32)?;
        let mut got = vec![0u8; PAGE];
        let n = read(&rx, &mut got).map_err(err("read the pipe"))?;
        check_a_data("the ring's fixed buffer", &got[..n])?;
        counted?;
        ring.submitter()
            .unregister_buffers()
            .map_err(err("IORING_UNREGISTER_BUFFERS"))?;
        drop(ring);
        check_all_back(b, maps)
    })
}

/// Direct I/O pins pages only while the I/O runs: it works into and out of emulated VRAM, and
/// leaves nothing quarantined behind.
fn o_direct_read_and_write(params: &str) -> Result<(), String> {
    module::with_loaded(params, || {
        let ram = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open("/dev/ram0")
            .map_err(err("open /dev/ram0 with O_DIRECT"))?;
        let a = Device::open().map_err(err("A: open"))?;
        let (handle, mut m) = a_allocation(&a)?;
        let n = pwrite(&ram, &m.as_slice()[..4 * PAGE], 0).map_err(err("O_DIRECT write"))?;
        check_eq("O_DIRECT write from emulated VRAM", n, 4 * PAGE)?;
        m.as_mut_slice().fill(0);
        let n = pread(&ram, &mut m.as_mut_slice()[..4 * PAGE], 0).map_err(err("O_DIRECT read"))?;
        check_eq("O_DIRECT read into emulated VRAM", n, 4 * PAGE)?;
        check(
            m.as_slice()[..4 * PAGE].iter().all(|&x| x == A_DATA),
            || "O_DIRECT read did not land in the mapping".into(),
        )?;
        a_unmap_and_free(&a, handle, m)?;
        let (_, used, _, quarantined) = counters()?;
        check_eq("used after A's free", used, 0)?;
        check_eq("quarantined after finished direct I/O", quarantined, 0)?;
        let (b, maps) = b_fills_the_card()?;
        // What A put on the device stays A's: no pin of B's pages reached it.
        let mut got = vec![0u8; PAGE];
        let ram_buffered = std::fs::File::open("/dev/ram0").map_err(err("open /dev/ram0"))?;
        let n = pread(&ram_buffered, &mut got, 0).map_err(err("read /dev/ram0"))?;
        check_a_data("/dev/ram0", &got[..n])?;
        check_all_back(b, maps)
    })
}

/// A page quarantined when the module goes is let go by unload, and what held it keeps
/// reading A's data (the kernel log must stay clean: the runner checks it).
fn quarantine_released_at_unload(params: &str) -> Result<(), String> {
    module::load(params).map_err(|e| format!("insmod emuv.ko {params}: {e}"))?;
    let held = (|| {
        let a = Device::open().map_err(err("A: open"))?;
        let (handle, m) = a_allocation(&a)?;
        let (rx, tx): (OwnedFd, OwnedFd) = pipe().map_err(err("pipe"))?;
        vmsplice(
            &tx,
            &[IoSlice::new(&m.as_slice()[..PAGE])],
            SpliceFFlags::empty(),
        )
        .map_err(err("vmsplice"))?;
        a_unmap_and_free(&a, handle, m)?;
        check_one_page_held(params)?;
        Ok::<_, String>((rx, tx))
    })();
    let unloaded = module::unload();
    let (rx, _tx) = held?;
    check_eq("rmmod with a quarantined page", unloaded, Ok(()))?;
    let mut got = vec![0u8; PAGE];
    let n = read(&rx, &mut got).map_err(err("read the pipe after rmmod"))?;
    check_a_data("the pipe after rmmod", &got[..n])
}

fn main() {
    let tests: &[(&str, TestFn)] = &[
        ("vmsplice into a pipe", vmsplice_into_a_pipe),
        ("io_uring fixed buffer", io_uring_fixed_buffer),
        ("O_DIRECT read and write", o_direct_read_and_write),
    ];
    let pools = [("eager", EAGER), ("lazy", LAZY)];
    let mut tap = Tap::new(tests.len() * pools.len() + 1);
    if module::is_loaded() {
        let _ = module::unload();
    }
    for (name, test) in tests {
        for (pool, params) in pools {
            tap.test(
                &format!("{name} ({pool} pool): the holder never sees the next owner's data"),
                test(params),
            );
        }
    }
    tap.test(
        "a quarantined page is let go at unload, its holder unharmed",
        quarantine_released_at_unload(EAGER),
    );
    tap.finish()
}
