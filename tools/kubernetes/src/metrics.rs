// SPDX-License-Identifier: GPL-2.0
//! The exporter's metrics, in dcgm-exporter's format: its metric names, types, help texts and
//! units (framebuffer in MiB), and its labels (`gpu`, `UUID`, `pci_bus_id`, `device`,
//! `modelName`, `Hostname` and `hostname`, `DCGM_FI_DRIVER_VERSION`, and `pod`, `namespace`,
//! `container` where kubelet says which pod holds the card). Only what emuv models is exported,
//! as dcgm-exporter leaves out the fields a card does not support: no temperatures, power or
//! clocks. A lost card, whose fields NVML no longer reads, reports only its Xid.

use crate::cards::Card;
use prometheus::{Encoder, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};
use std::collections::HashMap;

/// Who holds a card: a pod's container, from kubelet's pod resources API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

/// What every metric's labels are made of besides the card.
#[derive(Clone, Debug, Default)]
pub struct Node {
    pub hostname: String,
    pub driver_version: String,
    /// The holders of cards by UUID: `Some` when kubelet's pod resources socket answered (the
    /// pod labels are then present on every metric, empty for a card no pod holds).
    pub holders: Option<HashMap<String, Holder>>,
}

const MIB: u64 = 1 << 20;

/// Name, help (dcgm-exporter's default-counters.csv wording) of each gauge.
const FB_FREE: (&str, &str) = ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).");
const FB_USED: (&str, &str) = ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).");
const FB_RESERVED: (&str, &str) = (
    "DCGM_FI_DEV_FB_RESERVED",
    "Framebuffer memory reserved (in MiB).",
);
const FB_TOTAL: (&str, &str) = ("DCGM_FI_DEV_FB_TOTAL", "Total framebuffer memory (in MiB).");
const GPU_UTIL: (&str, &str) = ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).");
const MEM_COPY_UTIL: (&str, &str) = ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).");
const XID_ERRORS: (&str, &str) = (
    "DCGM_FI_DEV_XID_ERRORS",
    "Value of the last XID error encountered.",
);
/// Counters: emuv counts uncorrected (double-bit) errors since load; it has no corrected ones
/// and nothing outlives a reload, so the aggregate counts are the volatile ones, as its NVML
/// reports them.
const SBE_VOL: (&str, &str) = (
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "Total number of single-bit volatile ECC errors.",
);
const DBE_VOL: (&str, &str) = (
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "Total number of double-bit volatile ECC errors.",
);
const SBE_AGG: (&str, &str) = (
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "Total number of single-bit persistent ECC errors.",
);
const DBE_AGG: (&str, &str) = (
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    "Total number of double-bit persistent ECC errors.",
);

/// The labels, in dcgm-exporter's order.
fn label_names(node: &Node) -> Vec<&'static str> {
    let mut names = vec![
        "gpu",
        "UUID",
        "pci_bus_id",
        "device",
        "modelName",
        "Hostname",
        "hostname",
        "DCGM_FI_DRIVER_VERSION",
    ];
    if node.holders.is_some() {
        names.extend(["container", "namespace", "pod"]);
    }
    names
}

fn label_values(card: &Card, node: &Node) -> Vec<String> {
    let gpu = &card.gpu;
    let mut values = vec![
        gpu.index.to_string(),
        card.uuid.clone(),
        gpu.pci_bus_id(),
        format!("nvidia{}", gpu.index),
        gpu.name.clone(),
        node.hostname.clone(),
        node.hostname.clone(),
        node.driver_version.clone(),
    ];
    if let Some(holders) = &node.holders {
        let holder = holders.get(&card.uuid).cloned().unwrap_or_default();
        values.extend([holder.container, holder.namespace, holder.pod]);
    }
    values
}

/// The exposition (Prometheus text format 0.0.4) of `cards` on `node`, read now.
pub fn render(cards: &[Card], node: &Node) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let names = label_names(node);
    let gauge = |(name, help): (&str, &str)| -> Result<GaugeVec, prometheus::Error> {
        let g = GaugeVec::new(Opts::new(name, help), &names)?;
        registry.register(Box::new(g.clone()))?;
        Ok(g)
    };
    let counter = |(name, help): (&str, &str)| -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), &names)?;
        registry.register(Box::new(c.clone()))?;
        Ok(c)
    };
    let [free, used, reserved, total, gpu_util, copy_util, xid] = [
        FB_FREE,
        FB_USED,
        FB_RESERVED,
        FB_TOTAL,
        GPU_UTIL,
        MEM_COPY_UTIL,
        XID_ERRORS,
    ]
    .map(gauge);
    let [sbe_vol, dbe_vol, sbe_agg, dbe_agg] = [SBE_VOL, DBE_VOL, SBE_AGG, DBE_AGG].map(counter);
    let (free, used, reserved, total, gpu_util, copy_util, xid) =
        (free?, used?, reserved?, total?, gpu_util?, copy_util?, xid?);
    let (sbe_vol, dbe_vol, sbe_agg, dbe_agg) = (sbe_vol?, dbe_vol?, sbe_agg?, dbe_agg?);
    for card in cards {
        let values = label_values(card, node);
        let labels: Vec<&str> = values.iter().map(String::as_str).collect();
        xid.with_label_values(&labels).set(f64::from(card.last_xid));
        if card.lost || card.gpu.is_lost() {
            continue;
        }
        let Ok(memory) = card.gpu.memory() else {
            continue;
        };
        // DCGM reports whole MiB, rounded down.
        let mib = |bytes: u64| (bytes / MIB) as f64;
        free.with_label_values(&labels).set(mib(memory.free));
        used.with_label_values(&labels).set(mib(memory.used));
        reserved
            .with_label_values(&labels)
            .set(mib(memory.reserved));
        total.with_label_values(&labels).set(mib(memory.total));
        // Nothing executes on an emulated card: its engines and copy engines are idle.
        gpu_util.with_label_values(&labels).set(0.0);
        copy_util.with_label_values(&labels).set(0.0);
        if let Ok(uncorrected) = card.gpu.ecc_errors() {
            sbe_vol.with_label_values(&labels).reset();
            sbe_agg.with_label_values(&labels).reset();
            dbe_vol.with_label_values(&labels).inc_by(uncorrected);
            dbe_agg.with_label_values(&labels).inc_by(uncorrected);
        }
    }
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text)?;
    String::from_utf8(text).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use emuv::gpus::fake::Tree;

    fn cards(tree: &Tree) -> Vec<Card> {
        crate::cards::read(&tree.roots(), &mut Default::default())
    }

    fn line<'a>(text: &'a str, name: &str, uuid: &str) -> Option<&'a str> {
        text.lines().find(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("UUID=\"{uuid}\""))
        })
    }

    #[test]
    fn dcgm_names_labels_and_mib() {
        let tree = Tree::new("metrics-render");
        tree.add_card(0, "4090");
        let lost = tree.add_card(1, "5090");
        tree.set(&lost, "fail", "lost");
        let cards = cards(&tree);
        let node = Node {
            hostname: "node-a".into(),
            driver_version: "580.159.04".into(),
            holders: None,
        };
        let text = render(&cards, &node).unwrap();
        assert!(text.contains("# TYPE DCGM_FI_DEV_FB_USED gauge"));
        assert!(text.contains("# TYPE DCGM_FI_DEV_ECC_DBE_VOL_TOTAL counter"));
        let used = line(&text, "DCGM_FI_DEV_FB_USED", &cards[0].uuid).unwrap();
        for label in [
            "gpu=\"0\"",
            "pci_bus_id=\"00000000:01:00.0\"",
            "device=\"nvidia0\"",
            "modelName=\"NVIDIA GeForce RTX 4090\"",
            "Hostname=\"node-a\"",
            "hostname=\"node-a\"",
            "DCGM_FI_DRIVER_VERSION=\"580.159.04\"",
        ] {
            assert!(used.contains(label), "{label} in {used}");
        }
        // The fake card has 300 MiB used of 1 GiB.
        assert!(used.ends_with(" 300"), "{used}");
        assert!(line(&text, "DCGM_FI_DEV_FB_FREE", &cards[0].uuid)
            .unwrap()
            .ends_with(" 724"));
        assert!(!used.contains("pod="));
        // The lost card: its Xid, nothing NVML cannot read.
        assert!(line(&text, "DCGM_FI_DEV_XID_ERRORS", &cards[1].uuid)
            .unwrap()
            .ends_with(" 79"));
        assert!(line(&text, "DCGM_FI_DEV_FB_USED", &cards[1].uuid).is_none());
    }

    #[test]
    fn pod_labels_when_kubelet_answers() {
        let tree = Tree::new("metrics-pods");
        tree.add_card(0, "4090");
        tree.add_card(1, "4090");
        let cards = cards(&tree);
        let holder = Holder {
            pod: "trainer-0".into(),
            namespace: "ml".into(),
            container: "main".into(),
        };
        let node = Node {
            hostname: "n".into(),
            driver_version: "580.159.04".into(),
            holders: Some(HashMap::from([(cards[1].uuid.clone(), holder)])),
        };
        let text = render(&cards, &node).unwrap();
        let held = line(&text, "DCGM_FI_DEV_FB_USED", &cards[1].uuid).unwrap();
        assert!(held.contains("pod=\"trainer-0\"") && held.contains("namespace=\"ml\""));
        assert!(held.contains("container=\"main\""));
        let free = line(&text, "DCGM_FI_DEV_FB_USED", &cards[0].uuid).unwrap();
        assert!(free.contains("pod=\"\""), "{free}");
    }
}
