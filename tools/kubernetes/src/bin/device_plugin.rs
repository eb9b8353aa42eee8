// SPDX-License-Identifier: GPL-2.0
//! `emuv-device-plugin`: kubelet's device plugin for emuv's cards.
//!
//! It serves `v1beta1.DevicePlugin` on its own socket in kubelet's device plugin directory and
//! registers with kubelet there. kubelet deletes every socket in that directory when it starts
//! and makes a new `kubelet.sock`; the plugin notices either (its own socket gone, a different
//! `kubelet.sock`), serves a fresh socket and registers again.

use clap::Parser;
use emuv_kubernetes::{
    api::deviceplugin::{
        device_plugin_server::DevicePluginServer, registration_client::RegistrationClient,
        DevicePluginOptions, RegisterRequest,
    },
    cards,
    plugin::{self, Config, Plugin, Strategy},
    unix, API_VERSION, DEVICE_PLUGIN_DIR, KUBELET_SOCKET,
};
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::wrappers::UnixListenerStream;

#[derive(Parser)]
#[command(
    name = "emuv-device-plugin",
    about = "kubelet device plugin: emuv's emulated GPUs as an extended resource"
)]
struct Cli {
    /// The extended resource: nvidia.com/gpu, so that unchanged pod specs get emulated cards.
    #[arg(long, default_value = "nvidia.com/gpu")]
    resource_name: String,
    /// kubelet's device plugin directory.
    #[arg(long, default_value = DEVICE_PLUGIN_DIR)]
    plugin_dir: PathBuf,
    /// kubelet's registration socket in --plugin-dir; empty: serve without registering (for
    /// tests and kubelets that are told about the plugin otherwise).
    #[arg(long, default_value = KUBELET_SOCKET)]
    kubelet_socket: String,
    /// This plugin's socket in --plugin-dir (default: emuv-<domain>-<name>.sock, e.g.
    /// emuv-nvidia.com-gpu.sock, so that plugins of different resources never share one).
    #[arg(long)]
    socket: Option<String>,
    /// The CDI kind the cards are named in: the spec emuv-ctk writes (/var/run/cdi/emuv.json).
    #[arg(long, default_value = "emuv.dev/gpu")]
    cdi_kind: String,
    /// How Allocate hands the cards over: CDI names in CRI's field and in annotations by
    /// default; device-specs for runtimes without CDI (nodes, library mounts, environment).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cdi-cri,cdi-annotations"
    )]
    device_list_strategy: Vec<Strategy>,
    /// How often the card list is re-read besides the kernel's notifications, in milliseconds.
    #[arg(long, default_value_t = 200)]
    poll_ms: u64,
}

/// How often the sockets are checked for a kubelet restart.
const SOCKET_CHECK: Duration = Duration::from_millis(200);
/// How long one call to kubelet may take.
const KUBELET_DEADLINE: Duration = Duration::from_secs(5);

/// Whether `name` is an extended resource name kubelet accepts: `domain/name`, not in
/// kubernetes.io, DNS characters.
fn valid_resource_name(name: &str) -> bool {
    let Some((domain, short)) = name.split_once('/') else {
        return false;
    };
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    dns(domain)
        && dns(short)
        && domain.contains('.')
        && !domain.ends_with("kubernetes.io")
        && !short.contains('.')
}

async fn register(cli: &Cli, kubelet: &Path, endpoint: &str) -> Result<(), String> {
    let channel = unix::channel(kubelet, KUBELET_DEADLINE).await?;
    RegistrationClient::new(channel)
        .register(RegisterRequest {
            version: API_VERSION.into(),
            endpoint: endpoint.into(),
            resource_name: cli.resource_name.clone(),
            options: Some(DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// What ended one generation of the server.
enum End {
    Restart(&'static str),
    Terminate,
}

/// A flag that turns true on SIGTERM or SIGINT. The handlers are installed once, before any
/// wait: a signal that came between two waits on fresh handlers would be lost (and, the
/// default action replaced, never end the process).
fn termination() -> Result<watch::Receiver<bool>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("emuv-device-plugin: {name}: stopping");
        let _ = sender.send(true);
    });
    Ok(receiver)
}

async fn terminated(flag: &watch::Receiver<bool>) {
    let mut flag = flag.clone();
    if flag.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How long a stopping server may take to let its connections go before it is dropped: a
/// client that never finishes its connection must not keep the plugin from serving again.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves one socket until kubelet restarts (or the socket is deleted) or a signal comes.
async fn generation(
    cli: &Cli,
    config: &Config,
    cards: &watch::Receiver<Vec<cards::Card>>,
    endpoint: &str,
    termination: &watch::Receiver<bool>,
) -> Result<End, String> {
    let socket = cli.plugin_dir.join(endpoint);
    let kubelet =
        (!cli.kubelet_socket.is_empty()).then(|| cli.plugin_dir.join(&cli.kubelet_socket));
    // Wait for kubelet before serving, as its restart would delete the socket anyway.
    if let Some(kubelet) = &kubelet {
        let mut said = false;
        while unix::identity(kubelet).is_none() {
            if !said {
                eprintln!("emuv-device-plugin: waiting for {}", kubelet.display());
                said = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(SOCKET_CHECK) => {}
                _ = terminated(termination) => return Ok(End::Terminate),
            }
        }
    }
    // A socket someone answers on is another plugin's (two plugins of one resource, or a
    // --socket given twice): taking it over would cut that plugin off from kubelet.
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(format!(
            "{} is served by another process (another device plugin?)",
            socket.display()
        ));
    }
    match std::fs::remove_file(&socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", socket.display()))
        }
        _ => {}
    }
    let listener = UnixListener::bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let ours = unix::identity(&socket);
    let kubelet_identity = kubelet.as_deref().and_then(unix::identity);
    let (stop, stopping) = watch::channel(false);
    let plugin = Plugin::new(config.clone(), cards.clone(), stopping.clone());
    let mut server_stopping = stopping.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = server_stopping.wait_for(|s| *s).await;
            }),
    );
    if let Some(kubelet) = &kubelet {
        // kubelet dials back the endpoint while answering, so the server runs meanwhile.
        match register(cli, kubelet, endpoint).await {
            Ok(()) => eprintln!(
                "emuv-device-plugin: registered {} ({} cards) with {} as {endpoint}",
                cli.resource_name,
                cards.borrow().len(),
                kubelet.display()
            ),
            Err(e) => {
                eprintln!("emuv-device-plugin: registration failed: {e}; trying again");
                let _ = stop.send(true);
                stop_server(server).await;
                if unix::identity(&socket) == ours {
                    let _ = std::fs::remove_file(&socket);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = terminated(termination) => return Ok(End::Terminate),
                }
                return Ok(End::Restart("registration failed"));
            }
        }
    } else {
        eprintln!(
            "emuv-device-plugin: serving {} on {}",
            cli.resource_name,
            socket.display()
        );
    }
    let end = loop {
        tokio::select! {
            _ = tokio::time::sleep(SOCKET_CHECK) => {}
            _ = terminated(termination) => break End::Terminate,
        }
        if unix::identity(&socket) != ours {
            break End::Restart("its socket was deleted");
        }
        if kubelet.is_some() && kubelet.as_deref().and_then(unix::identity) != kubelet_identity {
            break End::Restart("kubelet restarted");
        }
    };
    let _ = stop.send(true);
    stop_server(server).await;
    if unix::identity(&socket) == ours {
        let _ = std::fs::remove_file(&socket);
    }
    Ok(end)
}

type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Waits for a stopping server, at most [`SHUTDOWN_GRACE`].
async fn stop_server(mut server: ServerTask) {
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(Ok(Err(e))) => eprintln!("emuv-device-plugin: server: {}", unix::error_chain(&e)),
        Ok(Err(e)) => eprintln!("emuv-device-plugin: server task: {e}"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => {
            eprintln!(
                "emuv-device-plugin: connections still open after {SHUTDOWN_GRACE:?}: dropped"
            );
            server.abort();
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if !valid_resource_name(&cli.resource_name) {
        return Err(format!(
            "--resource-name {}: an extended resource is domain/name outside kubernetes.io, e.g. \
             nvidia.com/gpu or emuv.dev/gpu",
            cli.resource_name
        ));
    }
    if !emuv_ctk::spec::valid_kind(&cli.cdi_kind) {
        return Err(format!(
            "--cdi-kind {}: a CDI kind is vendor.tld/class, e.g. emuv.dev/gpu",
            cli.cdi_kind
        ));
    }
    let endpoint = cli
        .socket
        .clone()
        .unwrap_or_else(|| format!("emuv-{}.sock", plugin::resource_slug(&cli.resource_name)));
    // An annotation key's name part has at most 63 characters.
    if cli.device_list_strategy.contains(&Strategy::CdiAnnotations)
        && plugin::annotation_key(&cli.resource_name)
            .split_once('/')
            .is_some_and(|(_, name)| name.len() > 63)
    {
        return Err(format!(
            "--resource-name {}: too long for a CDI annotation key (drop cdi-annotations from \
             --device-list-strategy)",
            cli.resource_name
        ));
    }
    if endpoint.contains('/') || endpoint.is_empty() || endpoint == cli.kubelet_socket {
        return Err(format!(
            "--socket {endpoint}: a file name in --plugin-dir other than kubelet's"
        ));
    }
    let config = Config {
        resource_name: cli.resource_name.clone(),
        cdi_kind: cli.cdi_kind.clone(),
        strategies: cli.device_list_strategy.clone(),
        host: emuv_ctk::find_host(None, None, None, false),
    };
    let cards = cards::monitor(
        emuv::gpus::Roots::default(),
        Duration::from_millis(cli.poll_ms.clamp(10, 10_000)),
    );
    let termination = termination()?;
    loop {
        match generation(&cli, &config, &cards, &endpoint, &termination).await? {
            End::Terminate => return Ok(()),
            End::Restart(why) => eprintln!("emuv-device-plugin: {why}: serving again"),
        }
    }
}

fn main() -> ExitCode {
    emuv_kubernetes::run_daemon("emuv-device-plugin", run(Cli::parse()))
}

#[cfg(test)]
#[path = "../manifest.rs"]
mod manifest;

#[cfg(test)]
mod tests {
    use super::manifest;
    use super::{valid_resource_name, Cli};
    use clap::Parser;

    #[test]
    fn the_daemonset_args_are_accepted() {
        let args = manifest::args("emuv-device-plugin");
        let cli = Cli::try_parse_from(&args).unwrap();
        assert!(valid_resource_name(&cli.resource_name));
    }

    #[test]
    fn resource_names() {
        assert!(valid_resource_name("nvidia.com/gpu"));
        assert!(valid_resource_name("emuv.dev/gpu"));
        assert!(!valid_resource_name("gpu"));
        assert!(!valid_resource_name("kubernetes.io/gpu"));
        assert!(!valid_resource_name("example.com/a/b"));
        assert!(!valid_resource_name("nodomain/gpu"));
    }
}
