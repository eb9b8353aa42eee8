// SPDX-License-Identifier: GPL-2.0
//! emuv in Kubernetes: kubelet's APIs (device plugins, pod resources), the device plugin's
//! service and the exporter's metrics. The binaries (`src/bin/`) only parse flags and run these.

pub mod cards;
pub mod metrics;
pub mod plugin;
pub mod unix;

pub mod api {
    /// kubelet's device plugin API (`v1beta1.Registration`, `v1beta1.DevicePlugin`).
    pub mod deviceplugin {
        tonic::include_proto!("v1beta1");
    }
    /// kubelet's pod resources API (`v1.PodResourcesLister`).
    pub mod podresources {
        tonic::include_proto!("v1");
    }
}

/// Runs a daemon's `run` on a two-thread runtime: its error on stderr as `name: error` and exit
/// status 2, as both binaries report failures.
pub fn run_daemon(
    name: &str,
    run: impl std::future::Future<Output = Result<(), String>>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The device plugin API's version, the only one kubelet accepts.
pub const API_VERSION: &str = "v1beta1";
/// Where kubelet and its device plugins keep their sockets.
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// kubelet's registration socket, in [`DEVICE_PLUGIN_DIR`].
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// kubelet's pod resources socket.
pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// The device health values of the API.
pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// Reads `deploy/kubernetes/emuv.yaml` for the tests (the binaries' too, through `#[path]`).
#[cfg(test)]
pub mod manifest;

#[cfg(test)]
mod tests {
    #[test]
    fn the_manifest_mounts_the_sockets_where_the_binaries_look() {
        let manifest = super::manifest::TEXT;
        assert!(manifest.contains(&format!("mountPath: {}", super::DEVICE_PLUGIN_DIR)));
        let pod_resources_dir = std::path::Path::new(super::POD_RESOURCES_SOCKET)
            .parent()
            .unwrap();
        assert!(manifest.contains(&format!("mountPath: {}", pod_resources_dir.display())));
        assert!(manifest.contains(&format!("mountPath: {}", emuv::gpus::HOST_MACHINE_ID)));
    }
}
