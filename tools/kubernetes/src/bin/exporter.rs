// SPDX-License-Identifier: GPL-2.0
//! `emuv-exporter`: emuv's cards as Prometheus metrics in dcgm-exporter's format, so that its
//! dashboards and alerts work unchanged. Every scrape reads the cards then; the last Xid comes
//! from a monitor that watches the cards between scrapes.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use clap::Parser;
use emuv_kubernetes::{
    api::podresources::{
        pod_resources_lister_client::PodResourcesListerClient, ListPodResourcesRequest,
    },
    cards::{self, Card},
    metrics::{render, Holder, Node},
    unix, POD_RESOURCES_SOCKET,
};
use std::{
    collections::HashMap, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc,
    time::Duration,
};
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "emuv-exporter",
    about = "Prometheus metrics of emuv's cards, in dcgm-exporter's format"
)]
struct Cli {
    /// Where to listen: [HOST]:PORT, as dcgm-exporter's --address.
    #[arg(long, short, default_value = ":9400")]
    address: String,
    /// kubelet's pod resources socket: when it answers, metrics carry the pod, namespace and
    /// container holding each card.
    #[arg(long, default_value = POD_RESOURCES_SOCKET)]
    pod_resources_socket: PathBuf,
    /// The node's name in the Hostname/hostname labels (default: $NODE_NAME, else the host's).
    #[arg(long)]
    hostname: Option<String>,
}

struct Exporter {
    cards: watch::Receiver<Vec<Card>>,
    pod_resources: PathBuf,
    hostname: String,
    driver_version: String,
}

/// How long a scrape waits for kubelet.
const KUBELET_DEADLINE: Duration = Duration::from_secs(1);

/// Which pod's container holds which card, by UUID; `None` without kubelet.
async fn holders(socket: &std::path::Path) -> Option<HashMap<String, Holder>> {
    if !socket.exists() {
        return None;
    }
    let channel = unix::channel(socket, KUBELET_DEADLINE).await.ok()?;
    let pods = PodResourcesListerClient::new(channel)
        .list(ListPodResourcesRequest {})
        .await
        .ok()?
        .into_inner()
        .pod_resources;
    let mut holders = HashMap::new();
    for pod in pods {
        for container in &pod.containers {
            for devices in &container.devices {
                for id in &devices.device_ids {
                    holders.insert(
                        id.clone(),
                        Holder {
                            pod: pod.name.clone(),
                            namespace: pod.namespace.clone(),
                            container: container.name.clone(),
                        },
                    );
                }
            }
        }
    }
    Some(holders)
}

async fn metrics(State(exporter): State<Arc<Exporter>>) -> impl IntoResponse {
    let node = Node {
        hostname: exporter.hostname.clone(),
        driver_version: exporter.driver_version.clone(),
        holders: holders(&exporter.pod_resources).await,
    };
    let cards = exporter.cards.borrow().clone();
    // The cards' state is read from sysfs: blocking, but brief.
    match tokio::task::spawn_blocking(move || render(&cards, &node)).await {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        ),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("emuv-exporter: {e}\n"),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("emuv-exporter: {e}\n"),
        ),
    }
}

/// `:9400` (every address), `127.0.0.1:9400`, `[::1]:9400`.
fn parse_address(address: &str) -> Result<SocketAddr, String> {
    let full = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_owned(),
    };
    full.parse().map_err(|_| {
        format!("--address {address}: expected [HOST]:PORT, e.g. :9400 or 127.0.0.1:9400")
    })
}

fn hostname() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| nix::unistd::gethostname().ok()?.into_string().ok())
        .unwrap_or_default()
}

async fn run(cli: Cli) -> Result<(), String> {
    let address = parse_address(&cli.address)?;
    let exporter = Arc::new(Exporter {
        cards: cards::monitor(emuv::gpus::Roots::default(), Duration::from_millis(200)),
        pod_resources: cli.pod_resources_socket,
        hostname: cli.hostname.unwrap_or_else(hostname),
        driver_version: emuv::gpus::driver_version().unwrap_or_default(),
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(exporter);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("{address}: {e}"))?;
    eprintln!("emuv-exporter: serving http://{address}/metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    emuv_kubernetes::run_daemon("emuv-exporter", run(Cli::parse()))
}

#[cfg(test)]
#[path = "../manifest.rs"]
mod manifest;

#[cfg(test)]
mod tests {
    use super::manifest;
    use super::{parse_address, Cli};
    use clap::Parser;

    #[test]
    fn the_daemonset_args_are_accepted() {
        let args = manifest::args("emuv-exporter");
        let cli = Cli::try_parse_from(&args).unwrap();
        assert_eq!(parse_address(&cli.address).unwrap().port(), 9400);
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_address(":9400").unwrap().to_string(), "0.0.0.0:9400");
        assert_eq!(parse_address("127.0.0.1:9401").unwrap().port(), 9401);
        assert!(parse_address("[::1]:9400").is_ok());
        assert!(parse_address("9400").is_err());
        assert!(parse_address(":http").is_err());
    }
}
