// SPDX-License-Identifier: GPL-2.0
//! A CDI spec (cncf-tags/container-device-interface SPEC.md) for the emuv cards present: one
//! device per card, named by index and by UUID, and `all`. Each device brings its `/dev/emuv*`
//! node; the spec brings emuv's libraries and tools, bind-mounted read-only where programs look
//! for NVIDIA's. Inside a container given one card, emuv's NVML (which numbers the cards a
//! process can open) shows one GPU, index 0, with that card's UUID.

use emuv::gpus::Gpu;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The spec version written: the one NVIDIA's toolkit writes (`nvidia-ctk cdi generate`), which
/// podman 5 and containerd 2.1 load; the fields used here need 0.5.0 or later.
pub const CDI_VERSION: &str = "0.8.0";
/// Where the libraries go in the container: the multiarch directory the dynamic loader of
/// Debian- and Ubuntu-based images searches.
pub const CONTAINER_LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<Device>,
    pub container_edits: Edits,
}

#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    pub container_edits: Edits,
}

#[derive(Serialize, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

#[derive(Serialize, Debug, PartialEq, Clone)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
}

#[derive(Serialize, Debug, PartialEq, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub options: Vec<String>,
}

/// What the host has to put into containers.
#[derive(Debug, Clone)]
pub struct Host {
    /// emuv's `libnvidia-ml.so.1`, if installed.
    pub nvml: Option<PathBuf>,
    /// emuv's `libcuda.so.1`, if installed.
    pub cuda: Option<PathBuf>,
    /// `emuv-smi`, if installed.
    pub smi: Option<PathBuf>,
    /// Also put `emuv-smi` at `/usr/bin/nvidia-smi`.
    pub as_nvidia_smi: bool,
    /// The host's `/etc/machine-id`, if it has one: the cards' UUIDs derive from it.
    pub machine_id: Option<PathBuf>,
}

fn bind(host: &Path, container: &str) -> Mount {
    Mount {
        host_path: host.to_string_lossy().into_owned(),
        container_path: container.to_owned(),
        options: ["ro", "nosuid", "nodev", "bind"].map(String::from).to_vec(),
    }
}

/// The node a device brings: at the same path in the container, so that emuv's tools (which
/// look for `/dev/emuv*`) find it there.
fn node(gpu: &Gpu) -> DeviceNode {
    DeviceNode {
        path: format!(
            "/dev/{}",
            gpu.device_node
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
        host_path: Some(gpu.device_node.to_string_lossy().into_owned()),
    }
}

#[cfg(test)]
/// Whether `name` is a valid CDI device name: alphanumerics, `_`, `-`, `.` and `:`, beginning
/// and ending with an alphanumeric.
pub fn valid_device_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty()
        && name.chars().all(ok_char)
        && ends(name.chars().next())
        && ends(name.chars().last())
}

/// Whether `kind` is a valid CDI kind: `vendor.tld/class`.
pub fn valid_kind(kind: &str) -> bool {
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    let label = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    vendor.contains('.') && label(vendor) && label(class)
}

/// The spec of `kind` for `gpus`, in their index order.
pub fn generate(kind: &str, gpus: &[Gpu], host: &Host) -> Spec {
    let mut devices = Vec::new();
    for gpu in gpus {
        let edits = || Edits {
            device_nodes: vec![node(gpu)],
            ..Edits::default()
        };
        devices.push(Device {
            name: gpu.index.to_string(),
            container_edits: edits(),
        });
        devices.push(Device {
            name: gpu.uuid(),
            container_edits: edits(),
        });
    }
    devices.push(Device {
        name: "all".into(),
        container_edits: Edits {
            device_nodes: gpus.iter().map(node).collect(),
            ..Edits::default()
        },
    });
    let mut mounts = Vec::new();
    if let Some(nvml) = &host.nvml {
        mounts.push(bind(
            nvml,
            &format!("{CONTAINER_LIB_DIR}/libnvidia-ml.so.1"),
        ));
        mounts.push(bind(nvml, &format!("{CONTAINER_LIB_DIR}/libnvidia-ml.so")));
    }
    if let Some(cuda) = &host.cuda {
        mounts.push(bind(cuda, &format!("{CONTAINER_LIB_DIR}/libcuda.so.1")));
        mounts.push(bind(cuda, &format!("{CONTAINER_LIB_DIR}/libcuda.so")));
    }
    if let Some(id) = &host.machine_id {
        mounts.push(bind(id, emuv::gpus::HOST_MACHINE_ID));
    }
    if let Some(smi) = &host.smi {
        mounts.push(bind(smi, "/usr/bin/emuv-smi"));
        if host.as_nvidia_smi {
            mounts.push(bind(smi, "/usr/bin/nvidia-smi"));
        }
    }
    Spec {
        cdi_version: CDI_VERSION.into(),
        kind: kind.into(),
        devices,
        container_edits: Edits {
            // What NVIDIA's images test to decide that a GPU was given; "void" as nvidia-ctk
            // writes it: the devices themselves are the CDI edits.
            env: vec!["NVIDIA_VISIBLE_DEVICES=void".into()],
            mounts,
            ..Edits::default()
        },
    }
}

/// The fully qualified names of the spec's devices (`kind=name`), as `cdi list` prints them.
pub fn qualified_names(spec: &Spec) -> Vec<String> {
    spec.devices
        .iter()
        .map(|d| format!("{}={}", spec.kind, d.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use emuv::gpus::fake::Tree;

    fn host(dir: &Path) -> Host {
        Host {
            nvml: Some(dir.join("libnvidia-ml.so.1")),
            cuda: None,
            smi: Some(dir.join("emuv-smi")),
            as_nvidia_smi: true,
            machine_id: Some(dir.join("machine-id")),
        }
    }

    #[test]
    fn a_device_per_card_by_index_and_uuid_and_all() {
        let tree = Tree::new("cdi-three");
        for i in [0, 1, 3] {
            tree.add_card(i, "4090");
        }
        let gpus = tree.roots().list().unwrap();
        let spec = generate("emuv.dev/gpu", &gpus, &host(&tree.root));
        let names = qualified_names(&spec);
        assert_eq!(names.len(), 7);
        assert_eq!(names[0], "emuv.dev/gpu=0");
        assert_eq!(names[1], format!("emuv.dev/gpu={}", gpus[0].uuid()));
        assert_eq!(names[4], "emuv.dev/gpu=2");
        assert_eq!(names[6], "emuv.dev/gpu=all");
        for d in &spec.devices {
            assert!(valid_device_name(&d.name), "{}", d.name);
        }
        // Index 2 is kernel card 3: its node.
        let third = &spec.devices[4].container_edits.device_nodes;
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].path, "/dev/emuv3");
        assert_eq!(
            third[0].host_path.as_deref(),
            Some(tree.root.join("dev/emuv3").to_str().unwrap())
        );
        assert_eq!(spec.devices[6].container_edits.device_nodes.len(), 3);
    }

    #[test]
    fn the_spec_is_what_cdi_loads() {
        let tree = Tree::new("cdi-json");
        tree.add_card(0, "5090");
        let gpus = tree.roots().list().unwrap();
        let spec = generate("nvidia.com/gpu", &gpus, &host(&tree.root));
        let json: serde_json::Value = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["cdiVersion"], CDI_VERSION);
        assert_eq!(json["kind"], "nvidia.com/gpu");
        assert_eq!(
            json["devices"][0]["containerEdits"]["deviceNodes"][0]["path"],
            "/dev/emuv"
        );
        let mounts = json["containerEdits"]["mounts"].as_array().unwrap();
        let targets: Vec<&str> = mounts
            .iter()
            .map(|m| m["containerPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            [
                "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
                "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so",
                "/run/emuv/machine-id",
                "/usr/bin/emuv-smi",
                "/usr/bin/nvidia-smi"
            ]
        );
        assert_eq!(
            mounts[0]["options"],
            serde_json::json!(["ro", "nosuid", "nodev", "bind"])
        );
        // Empty lists are left out: CDI refuses no field, but keeps the spec short.
        assert!(json["devices"][0]["containerEdits"].get("mounts").is_none());
    }

    #[test]
    fn no_cards_still_a_valid_spec_with_all() {
        let tree = Tree::new("cdi-none");
        let spec = generate("emuv.dev/gpu", &[], &host(&tree.root));
        assert_eq!(qualified_names(&spec), ["emuv.dev/gpu=all"]);
    }

    #[test]
    fn kinds_and_names() {
        assert!(valid_kind("emuv.dev/gpu"));
        assert!(valid_kind("nvidia.com/gpu"));
        assert!(!valid_kind("gpu"));
        assert!(!valid_kind("emuv/gpu"));
        assert!(!valid_kind("emuv.dev/"));
        assert!(!valid_kind("emuv.dev/g pu"));
        assert!(valid_device_name(
            "GPU-8a41ac4d-9248-584b-92cc-ee2596248594"
        ));
        assert!(!valid_device_name("-0"));
        assert!(!valid_device_name(""));
    }
}
