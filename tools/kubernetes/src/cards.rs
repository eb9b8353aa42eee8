// SPDX-License-Identifier: GPL-2.0
//! The node's cards as the device plugin and the exporter see them, kept current by a thread
//! that sleeps in `poll` on the cards' `fail` and `ecc_errors` attributes (the notifications
//! NVML's events are made of) and re-reads the card list at least every interval, which is how
//! configfs cards coming and going are noticed.

use emuv::gpus::{wait_for_change, Gpu, Roots};
use std::{collections::HashMap, time::Duration};
use tokio::sync::watch;

/// The Xid NVIDIA's driver reports for a GPU that has fallen off the bus.
pub const XID_FALLEN_OFF_THE_BUS: u32 = 79;

/// One card, read at one moment.
#[derive(Clone, Debug)]
pub struct Card {
    pub gpu: Gpu,
    /// `GPU-…`: the device ID kubelet knows it by.
    pub uuid: String,
    /// Fallen off the bus (`fail=lost`): unhealthy until it comes back.
    pub lost: bool,
    /// The last Xid seen on it since the monitor started (0: none), kept after a recovery as
    /// DCGM keeps it.
    pub last_xid: u32,
}

impl Card {
    /// What a change of the list is judged by (memory use changes all the time and is read on
    /// demand instead).
    fn key(&self) -> (&str, u32, bool, u32) {
        (&self.uuid, self.gpu.kernel_index, self.lost, self.last_xid)
    }
}

/// The cards of `roots` now, in kernel-index order; none when emuv is not loaded.
pub(crate) fn read(roots: &Roots, last_xid: &mut HashMap<String, u32>) -> Vec<Card> {
    let gpus = roots.list().unwrap_or_default();
    gpus.into_iter()
        .map(|gpu| {
            let uuid = gpu.uuid();
            let lost = gpu.is_lost();
            let xid = last_xid.entry(uuid.clone()).or_insert(0);
            if lost {
                *xid = XID_FALLEN_OFF_THE_BUS;
            }
            Card {
                last_xid: *xid,
                uuid,
                lost,
                gpu,
            }
        })
        .collect()
}

fn same(a: &[Card], b: &[Card]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.key() == y.key())
}

/// Starts the monitor thread of `roots`' cards: the receiver holds the list, and changes
/// (a card lost or back, added or removed) reach it as soon as the kernel notifies them, and
/// within `interval` where it does not.
pub fn monitor(roots: Roots, interval: Duration) -> watch::Receiver<Vec<Card>> {
    let mut last_xid = HashMap::new();
    let (sender, receiver) = watch::channel(read(&roots, &mut last_xid));
    std::thread::Builder::new()
        .name("emuv-cards".into())
        .spawn(move || loop {
            let watches: Vec<_> = sender.borrow().iter().map(|c| c.gpu.watch()).collect();
            // A failed poll (no watchable attribute) still waits out the interval.
            if wait_for_change(&watches, interval).is_err() {
                std::thread::sleep(interval);
            }
            let cards = read(&roots, &mut last_xid);
            let changed = !same(&sender.borrow(), &cards);
            if changed && sender.send(cards).is_err() {
                // Nobody listens any more.
                return;
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| eprintln!("emuv: cannot start the card monitor: {e}"));
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;
    use emuv::gpus::fake::Tree;

    #[test]
    fn a_lost_card_is_seen_and_its_xid_stays_after_recovery() {
        let tree = Tree::new("cards-monitor");
        let dir = tree.add_card(0, "4090");
        tree.add_card(1, "5090");
        let mut receiver = monitor(tree.roots(), Duration::from_millis(20));
        assert_eq!(receiver.borrow().len(), 2);
        assert!(receiver.borrow().iter().all(|c| !c.lost && c.last_xid == 0));
        tree.set(&dir, "fail", "lost");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), receiver.changed())
                .await
                .unwrap()
                .unwrap()
        });
        let cards = receiver.borrow_and_update().clone();
        assert!(cards[0].lost);
        assert_eq!(cards[0].last_xid, XID_FALLEN_OFF_THE_BUS);
        assert!(!cards[1].lost);
        tree.set(&dir, "fail", "none");
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), receiver.changed())
                .await
                .unwrap()
                .unwrap()
        });
        let cards = receiver.borrow().clone();
        assert!(!cards[0].lost);
        assert_eq!(cards[0].last_xid, XID_FALLEN_OFF_THE_BUS);
    }
}
