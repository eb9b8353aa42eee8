// SPDX-License-Identifier: GPL-2.0
//! containerd 2.1 driven through CRI as kubelet drives it, and pods whose one container runs
//! the allocating program (`emuv_containers alloc`), for the container and Kubernetes tests
//! (`scripts/containers.sh` boots a guest with the Debian sid chroot as root, where containerd
//! and podman come from).

use crate::{
    cri::{
        CdiDevice, ContainerConfig, ContainerMetadata, Cri, Device, ImageSpec, KeyValue,
        LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
        LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceOption,
        PodSandboxConfig, PodSandboxMetadata, NAMESPACE_CONTAINER, NAMESPACE_NODE,
    },
    err,
    tap::check,
    tool,
};
use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    process::{Command, Output},
    time::{Duration, Instant},
};

/// The container image: a root filesystem made from the chroot (`scripts/containers.sh`).
pub fn image() -> String {
    std::env::var("EMUV_CONTAINER_ROOTFS").unwrap_or_else(|_| "/tmp/emuv-containers/rootfs".into())
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout).trim_end(),
        text(&out.stderr).trim_end()
    )
}

/// podman's state in the guest's tmpfs, and no systemd.
pub const PODMAN_OPTIONS: [&str; 5] = [
    "--root=/tmp/emuv-podman/root",
    "--runroot=/tmp/emuv-podman/run",
    "--storage-driver=vfs",
    "--cgroup-manager=cgroupfs",
    "--events-backend=file",
];

/// Where the allocating program (this binary) is inside a container.
pub const ALLOC: &str = "/usr/local/bin/emuv-alloc";

/// The UUIDs of the host's cards, in index order, as `emuv-smi -L` lists them.
pub fn host_uuids() -> Result<Vec<String>, String> {
    let out = Command::new(tool("emuv-smi"))
        .arg("-L")
        .output()
        .map_err(err("emuv-smi"))?;
    check(out.status.success(), || describe("emuv-smi -L", &out))?;
    Ok(crate::smi_uuids(&text(&out.stdout)))
}

pub struct Containerd {
    child: std::process::Child,
    pub cri: Cri,
    pub dir: PathBuf,
}

const CONTAINERD_DIR: &str = "/tmp/emuv-podman/containerd";
/// The image, also the pod sandbox ("pause") image: catatonit in pause mode by default.
pub const CRI_IMAGE: &str = "localhost/emuv-test:1";

impl Containerd {
    pub fn start() -> Result<Self, String> {
        let dir = PathBuf::from(CONTAINERD_DIR);
        fs::create_dir_all(dir.join("logs")).map_err(err("mkdir containerd"))?;
        let socket = dir.join("containerd.sock");
        // Config version 3 (containerd 2.x): CDI on (the default, said here), the pause image
        // ours, runc with cgroupfs (no systemd in the guest); snapshotters that probe for
        // filesystems the guest lacks are left out.
        let config = format!(
            r#"version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.snapshotter.v1.erofs"]
[grpc]
  address = "{s}"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{CRI_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  enable_cdi = true
  cdi_spec_dirs = ["/var/run/cdi"]
"#,
            d = dir.display(),
            s = socket.display()
        );
        fs::write(dir.join("config.toml"), config).map_err(err("containerd config"))?;
        let log = fs::File::create(dir.join("containerd.log")).map_err(err("containerd log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().map_err(err("log"))?)
            .stderr(log)
            .spawn()
            .map_err(err("start containerd"))?;
        let start = Instant::now();
        while !socket.exists() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // The image: the chroot's files as one layer, through podman (import, save) into
        // containerd's k8s.io namespace, where CRI looks.
        let tar = dir.join("image.tar");
        let rootfs = image();
        let imported = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {rootfs} -c . | podman {opts} import \
                 --change 'CMD [\"/usr/bin/catatonit\", \"-P\"]' - {CRI_IMAGE} >/dev/null && \
                 podman {opts} save --format docker-archive -o {tar} {CRI_IMAGE} && \
                 ctr --address {sock} -n k8s.io images import {tar} && rm -f {tar}",
                opts = PODMAN_OPTIONS.join(" "),
                tar = tar.display(),
                sock = socket.display()
            ))
            .output()
            .map_err(err("image import"))?;
        // Serving can lag the socket's creation: retried for a while.
        let cri = loop {
            match Cri::connect(&socket).and_then(|cri| cri.version().map(|_| cri)) {
                Ok(cri) => break cri,
                Err(e) if start.elapsed() > Duration::from_secs(90) => {
                    let log = fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    return Err(format!(
                        "{e}\ncontainerd's log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let started = Self { child, cri, dir };
        check(imported.status.success(), || {
            describe("building and importing the image", &imported)
        })?;
        Ok(started)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn sandbox_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "emuv-test".into(),
                attempt: 0,
            }),
            hostname: String::new(),
            log_directory: self.dir.join("logs").join(name).display().to_string(),
            // The node's network, as kubelet asks for hostNetwork pods: no CNI needed.
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NAMESPACE_NODE,
                        pid: NAMESPACE_CONTAINER,
                        ipc: 0,
                    }),
                }),
            }),
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod with one container running `emuv-alloc --hold SIZES`, as kubelet would create it for
/// a pod given `devices` by a device plugin; removed on drop.
pub struct Pod<'a> {
    containerd: &'a Containerd,
    sandbox: String,
    pub container: Result<String, String>,
    log: PathBuf,
}

/// What a container gets besides its image and command: what kubelet takes from a device
/// plugin's `Allocate` answer (CDI names, annotations, environment, mounts, device nodes) and
/// from the pod spec (cgroup files).
#[derive(Clone, Debug, Default)]
pub struct ContainerEdits {
    pub cdi_devices: Vec<String>,
    pub annotations: HashMap<String, String>,
    pub envs: Vec<(String, String)>,
    /// (container path, host path, read-only).
    pub mounts: Vec<(String, String, bool)>,
    /// (container path, host path, permissions).
    pub devices: Vec<(String, String, String)>,
    pub unified: Vec<(String, String)>,
}

impl<'a> Pod<'a> {
    /// A pod given the CDI `devices`, its container's cgroup files `unified`.
    pub fn start(
        containerd: &'a Containerd,
        name: &str,
        devices: &[&str],
        unified: &[(&str, &str)],
        sizes: &[&str],
    ) -> Result<Self, String> {
        let edits = ContainerEdits {
            cdi_devices: devices.iter().map(|d| (*d).to_owned()).collect(),
            unified: unified
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..ContainerEdits::default()
        };
        Self::start_with(containerd, name, &edits, sizes)
    }

    /// A pod whose container has `edits`; it allocates `sizes` (MiB) and holds them.
    pub fn start_with(
        containerd: &'a Containerd,
        name: &str,
        edits: &ContainerEdits,
        sizes: &[&str],
    ) -> Result<Self, String> {
        let sandbox_config = containerd.sandbox_config(name);
        let sandbox = containerd.cri.run_pod_sandbox(&sandbox_config)?;
        let mut args = vec!["alloc".to_owned(), "--hold".to_owned()];
        args.extend(sizes.iter().map(|s| (*s).to_owned()));
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "main".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: CRI_IMAGE.into(),
            }),
            command: vec![ALLOC.into()],
            args,
            envs: edits
                .envs
                .iter()
                .map(|(key, value)| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            mounts: std::iter::once(Mount {
                container_path: ALLOC.into(),
                host_path: tool("emuv_containers").display().to_string(),
                readonly: true,
            })
            .chain(
                edits
                    .mounts
                    .iter()
                    .map(|(container, host, readonly)| Mount {
                        container_path: container.clone(),
                        host_path: host.clone(),
                        readonly: *readonly,
                    }),
            )
            .collect(),
            devices: edits
                .devices
                .iter()
                .map(|(container, host, permissions)| Device {
                    container_path: container.clone(),
                    host_path: host.clone(),
                    permissions: permissions.clone(),
                })
                .collect(),
            annotations: edits.annotations.clone(),
            log_path: "main.log".into(),
            linux: Some(LinuxContainerConfig {
                resources: Some(LinuxContainerResources {
                    unified: edits.unified.iter().cloned().collect(),
                }),
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NAMESPACE_NODE,
                        pid: NAMESPACE_CONTAINER,
                        ipc: 0,
                    }),
                }),
            }),
            cdi_devices: edits
                .cdi_devices
                .iter()
                .map(|name| CdiDevice { name: name.clone() })
                .collect(),
        };
        let log = containerd.dir.join("logs").join(name).join("main.log");
        let container = containerd
            .cri
            .create_container(&sandbox, config, &sandbox_config)
            .and_then(|id| containerd.cri.start_container(&id).map(|()| id));
        let pod = Self {
            containerd,
            sandbox,
            container,
            log,
        };
        if pod.container.is_ok() {
            pod.wait_for("holding")?;
        }
        Ok(pod)
    }

    pub fn id(&self) -> Result<&str, String> {
        self.container.as_deref().map_err(Clone::clone)
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for(&self, word: &str) -> Result<(), String> {
        let start = Instant::now();
        while !self.output().contains(word) {
            if start.elapsed() > Duration::from_secs(60) || self.output().contains("cannot") {
                return Err(format!(
                    "the pod's container never said {word:?}: {}",
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// What `emuv-alloc` answered per size.
    pub fn results(&self) -> Result<Vec<String>, String> {
        let out = self.output();
        out.lines()
            .find_map(|l| {
                l.split_once("results ")
                    .map(|(_, r)| r.split(' ').map(str::to_owned).collect())
            })
            .ok_or_else(|| format!("no results in the container's log: {out}"))
    }

    pub fn host_pid(&self) -> Result<u32, String> {
        let status = self.containerd.cri.container_status(self.id()?)?;
        let info = status.info.get("info").ok_or("no verbose info")?;
        let json: serde_json::Value = serde_json::from_str(info).map_err(err("info JSON"))?;
        json["pid"]
            .as_u64()
            .map(|p| p as u32)
            .ok_or_else(|| format!("no pid in {info}"))
    }

    pub fn exec(&self, cmd: &[&str]) -> Result<String, String> {
        let out = self.containerd.cri.exec_sync(self.id()?, cmd)?;
        check(out.exit_code == 0, || {
            format!("{cmd:?} exited {}: {}", out.exit_code, text(&out.stderr))
        })?;
        Ok(text(&out.stdout))
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let _ = self.containerd.cri.remove_pod_sandbox(&self.sandbox);
    }
}
