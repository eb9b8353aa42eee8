// SPDX-License-Identifier: GPL-2.0
//! The kernel log, read from `/dev/kmsg`, from a point on.

use nix::{
    fcntl::{open, OFlag},
    sys::stat::Mode,
    unistd::{lseek, read, Whence},
};
use std::os::fd::OwnedFd;

/// Kernel log messages written after [`Kmsg::new`].
pub struct Kmsg {
    fd: OwnedFd,
}

impl Kmsg {
    /// Starts at the end of the log: only later messages are returned.
    pub fn new() -> Self {
        let fd = open(
            "/dev/kmsg",
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .expect("open /dev/kmsg");
        lseek(&fd, 0, Whence::SeekEnd).expect("seek /dev/kmsg");
        Kmsg { fd }
    }

    /// The message texts written since the last call (or since `new`).
    pub fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match read(&self.fd, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => break,
                // The reader fell behind and records were overwritten: keep reading.
                Err(nix::errno::Errno::EPIPE) => continue,
                Err(e) => panic!("read /dev/kmsg: {e}"),
                Ok(n) => {
                    let record = String::from_utf8_lossy(&buf[..n]);
                    // "prio,seq,time,flags;text\n continuation lines"
                    if let Some((_, text)) = record.split_once(';') {
                        out.push(text.lines().next().unwrap_or("").to_owned());
                    }
                }
            }
        }
        out
    }
}

impl Default for Kmsg {
    fn default() -> Self {
        Self::new()
    }
}
