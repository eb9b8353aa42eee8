// SPDX-License-Identifier: GPL-2.0
//! The device plugin's service (`v1beta1.DevicePlugin`): one device per card, its ID the card's
//! UUID; `ListAndWatch` streams every change of the cards; `Allocate` answers with the cards' CDI
//! names (CRI's `CDI_devices` field and CDI annotations) and, for runtimes without CDI, their
//! device nodes, emuv's libraries as mounts and the environment, all taken from the CDI spec
//! `emuv-ctk` writes, so that both paths give a container the same things.

use crate::{
    api::deviceplugin::{
        device_plugin_server::DevicePlugin, AllocateRequest, AllocateResponse, CdiDevice,
        ContainerAllocateResponse, ContainerPreferredAllocationResponse, Device,
        DevicePluginOptions, DeviceSpec, Empty, ListAndWatchResponse, Mount,
        PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
        PreferredAllocationResponse,
    },
    cards::Card,
    HEALTHY, UNHEALTHY,
};
use emuv_ctk::spec::{generate, Host};
use std::{collections::HashSet, pin::Pin};
use tokio::sync::{mpsc, watch};
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status};

/// How `Allocate` tells the runtime about the cards (NVIDIA's plugin calls this its device list
/// strategy; several can be given).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    /// CRI's `CDI_devices` field (kubelet 1.28 and later pass it on).
    CdiCri,
    /// A `cdi.k8s.io/…` annotation, for runtimes that read CDI names only from annotations.
    CdiAnnotations,
    /// Device nodes, mounts and environment, for runtimes without CDI.
    DeviceSpecs,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The extended resource served: `nvidia.com/gpu`, so unchanged pod specs get emulated
    /// cards, or e.g. `emuv.dev/gpu`.
    pub resource_name: String,
    /// The CDI kind of the spec the cards are named in (`emuv-ctk cdi generate --kind`).
    pub cdi_kind: String,
    pub strategies: Vec<Strategy>,
    /// What the host puts into containers, for [`Strategy::DeviceSpecs`].
    pub host: Host,
}

pub struct Plugin {
    config: Config,
    cards: watch::Receiver<Vec<Card>>,
    /// Ends the streams of this server when it is replaced (a kubelet restart), so that a
    /// graceful shutdown does not wait for `ListAndWatch` streams that never end.
    stopping: watch::Receiver<bool>,
}

/// `nvidia.com/gpu` as a file or annotation name part: `nvidia.com-gpu`.
pub fn resource_slug(resource_name: &str) -> String {
    resource_name.replace('/', "-")
}

/// The CDI annotation a container's devices go in, for runtimes that read CDI names there.
pub fn annotation_key(resource_name: &str) -> String {
    format!(
        "cdi.k8s.io/emuv-device-plugin_{}",
        resource_slug(resource_name)
    )
}

/// The devices kubelet is told about.
pub fn devices(cards: &[Card]) -> Vec<Device> {
    cards
        .iter()
        .map(|card| Device {
            id: card.uuid.clone(),
            health: if card.lost { UNHEALTHY } else { HEALTHY }.into(),
            topology: None,
        })
        .collect()
}

/// Why a request is refused: the gRPC code and message it becomes.
#[derive(Debug)]
pub struct Refusal {
    pub code: tonic::Code,
    pub message: String,
}

impl Refusal {
    fn invalid(message: String) -> Self {
        Refusal {
            code: tonic::Code::InvalidArgument,
            message,
        }
    }
}

impl From<Refusal> for Status {
    fn from(refusal: Refusal) -> Self {
        Status::new(refusal.code, refusal.message)
    }
}

/// The cards `ids` name, in request order; an error names the first ID that is not a card's or
/// is given twice.
fn resolve<'a>(cards: &'a [Card], ids: &[String]) -> Result<Vec<&'a Card>, Refusal> {
    let mut seen = HashSet::new();
    ids.iter()
        .map(|id| {
            if !seen.insert(id.as_str()) {
                return Err(Refusal::invalid(format!(
                    "device {} is requested twice",
                    printable(id)
                )));
            }
            cards.iter().find(|c| &c.uuid == id).ok_or_else(|| Refusal {
                code: tonic::Code::NotFound,
                message: format!(
                    "no emulated GPU has the ID {:?} (this node has {})",
                    printable(id),
                    cards.len()
                ),
            })
        })
        .collect()
}

/// An ID from a request, fit for a message: at most 80 characters, control characters escaped.
fn printable(id: &str) -> String {
    id.chars().take(80).flat_map(char::escape_debug).collect()
}

impl Plugin {
    pub fn new(
        config: Config,
        cards: watch::Receiver<Vec<Card>>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Plugin {
            config,
            cards,
            stopping,
        }
    }

    /// The answer for one container given `cards`.
    pub fn container_response(&self, cards: &[&Card]) -> ContainerAllocateResponse {
        let mut response = ContainerAllocateResponse::default();
        let names: Vec<String> = cards
            .iter()
            .map(|c| format!("{}={}", self.config.cdi_kind, c.uuid))
            .collect();
        for strategy in &self.config.strategies {
            match strategy {
                Strategy::CdiCri => {
                    response.cdi_devices = names
                        .iter()
                        .map(|name| CdiDevice { name: name.clone() })
                        .collect();
                }
                Strategy::CdiAnnotations => {
                    // CDI's annotation key: cdi.k8s.io/<plugin>_<request>, unique per plugin
                    // and container; its value the comma-separated device names.
                    response
                        .annotations
                        .insert(annotation_key(&self.config.resource_name), names.join(","));
                }
                Strategy::DeviceSpecs => {
                    let gpus: Vec<_> = cards.iter().map(|c| c.gpu.clone()).collect();
                    let spec = generate(&self.config.cdi_kind, &gpus, &self.config.host);
                    // The spec's `all` device holds every given card's node.
                    if let Some(all) = spec.devices.iter().find(|d| d.name == "all") {
                        for node in &all.container_edits.device_nodes {
                            response.devices.push(DeviceSpec {
                                container_path: node.path.clone(),
                                host_path: node.host_path.clone().unwrap_or(node.path.clone()),
                                permissions: "rw".into(),
                            });
                        }
                    }
                    for mount in &spec.container_edits.mounts {
                        response.mounts.push(Mount {
                            container_path: mount.container_path.clone(),
                            host_path: mount.host_path.clone(),
                            read_only: mount.options.iter().any(|o| o == "ro"),
                        });
                    }
                    for variable in &spec.container_edits.env {
                        if let Some((name, value)) = variable.split_once('=') {
                            response.envs.insert(name.into(), value.into());
                        }
                    }
                }
            }
        }
        response
    }
}

/// The preferred `size` cards out of `available`, `must_include` among them: the cards that
/// must be included, then healthy before lost, then the most free memory (the least used card
/// first, so that pods spread over the node), then the lowest index.
pub fn prefer(
    cards: &[Card],
    available: &[String],
    must_include: &[String],
    size: i32,
) -> Result<Vec<String>, Refusal> {
    let available_cards = resolve(cards, available)?;
    let required = resolve(cards, must_include)?;
    let size = usize::try_from(size)
        .map_err(|_| Refusal::invalid(format!("allocation size {size} is negative")))?;
    if size > available_cards.len() {
        return Err(Refusal::invalid(format!(
            "{size} devices asked for, {} available",
            available_cards.len()
        )));
    }
    if required.len() > size {
        return Err(Refusal::invalid(format!(
            "{} devices must be included in an allocation of {size}",
            required.len()
        )));
    }
    if let Some(missing) = required
        .iter()
        .find(|r| !available_cards.iter().any(|a| a.uuid == r.uuid))
    {
        return Err(Refusal::invalid(format!(
            "device {} must be included but is not available",
            missing.uuid
        )));
    }
    let free = |card: &Card| card.gpu.memory().map(|m| m.free).unwrap_or(0);
    let mut rest: Vec<(&Card, u64)> = available_cards
        .into_iter()
        .filter(|a| !required.iter().any(|r| r.uuid == a.uuid))
        .map(|c| (c, free(c)))
        .collect();
    rest.sort_by(|(a, a_free), (b, b_free)| {
        a.lost
            .cmp(&b.lost)
            .then(b_free.cmp(a_free))
            .then(a.gpu.kernel_index.cmp(&b.gpu.kernel_index))
    });
    Ok(required
        .into_iter()
        .chain(rest.into_iter().map(|(c, _)| c))
        .take(size)
        .map(|c| c.uuid.clone())
        .collect())
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = DeviceStream;

    /// The cards now, then the list again on every change, until kubelet hangs up or this
    /// server is replaced.
    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut stopping = self.stopping.clone();
        let mut cards = self.cards.clone();
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let list = ListAndWatchResponse {
                    devices: devices(&cards.borrow_and_update()),
                };
                if sender.send(Ok(list)).await.is_err() {
                    return; // kubelet hung up.
                }
                tokio::select! {
                    changed = cards.changed() => if changed.is_err() { return },
                    _ = stopping.wait_for(|stop| *stop) => return,
                    _ = sender.closed() => return,
                }
            }
        });
        let updates = ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(updates)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let cards = self.cards.borrow().clone();
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|r| {
                prefer(
                    &cards,
                    &r.available_device_i_ds,
                    &r.must_include_device_i_ds,
                    r.allocation_size,
                )
                .map(|device_i_ds| ContainerPreferredAllocationResponse { device_i_ds })
            })
            .collect::<Result<_, Refusal>>()?;
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let cards = self.cards.borrow().clone();
        let requests = request.into_inner().container_requests;
        if requests.is_empty() {
            return Err(Status::invalid_argument("no container in the request"));
        }
        let mut container_responses = Vec::with_capacity(requests.len());
        for r in &requests {
            if r.devices_ids.is_empty() {
                return Err(Status::invalid_argument("a container asks for no device"));
            }
            let given = resolve(&cards, &r.devices_ids).map_err(Status::from)?;
            // kubelet gives only healthy devices; a card lost since then is refused, and
            // the list kubelet holds already says so.
            if let Some(lost) = given.iter().find(|c| c.lost) {
                return Err(Status::failed_precondition(format!(
                    "device {} has fallen off the bus (Xid 79)",
                    lost.uuid
                )));
            }
            container_responses.push(self.container_response(&given));
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emuv::gpus::fake::Tree;
    use std::path::PathBuf;

    fn cards(tree: &Tree) -> Vec<Card> {
        crate::cards::read(&tree.roots(), &mut Default::default())
    }

    fn plugin(cards: Vec<Card>, strategies: Vec<Strategy>) -> Plugin {
        let (_, stopping) = watch::channel(false);
        Plugin::new(
            Config {
                resource_name: "nvidia.com/gpu".into(),
                cdi_kind: "emuv.dev/gpu".into(),
                strategies,
                host: Host {
                    nvml: Some(PathBuf::from("/usr/lib/emuv/libnvidia-ml.so.1")),
                    cuda: None,
                    smi: None,
                    as_nvidia_smi: false,
                    machine_id: None,
                },
            },
            watch::channel(cards).1,
            stopping,
        )
    }

    #[test]
    fn preference_must_include_then_healthy_then_free_then_index() {
        let tree = Tree::new("plugin-prefer");
        let dirs: Vec<_> = (0..4).map(|i| tree.add_card(i, "4090")).collect();
        tree.set(&dirs[1], "used_bytes", &(100u64 << 20).to_string());
        tree.set(&dirs[2], "fail", "lost");
        let cards = cards(&tree);
        let ids: Vec<String> = cards.iter().map(|c| c.uuid.clone()).collect();
        // Card 1 has the most free memory; card 2 is lost and comes last.
        assert_eq!(
            prefer(&cards, &ids, &[], 2).unwrap(),
            [ids[1].clone(), ids[0].clone()]
        );
        assert_eq!(
            prefer(&cards, &ids, &[ids[2].clone()], 2).unwrap(),
            [ids[2].clone(), ids[1].clone()]
        );
        assert_eq!(prefer(&cards, &ids, &[], 4).unwrap()[3], ids[2]);
        assert!(prefer(&cards, &ids, &[], 5).is_err());
        assert!(prefer(&cards, &ids, &[], -1).is_err());
        assert!(prefer(&cards, &ids[..2], &[ids[3].clone()], 2).is_err());
        assert!(prefer(&cards, &["GPU-nope".into()], &[], 1).is_err());
    }

    #[test]
    fn allocate_names_the_cards_each_way() {
        let tree = Tree::new("plugin-allocate");
        tree.add_card(0, "4090");
        tree.add_card(3, "5090");
        let cards = cards(&tree);
        let given: Vec<&Card> = cards.iter().collect();
        let p = plugin(
            cards.clone(),
            vec![
                Strategy::CdiCri,
                Strategy::CdiAnnotations,
                Strategy::DeviceSpecs,
            ],
        );
        let r = p.container_response(&given);
        let names: Vec<_> = r.cdi_devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            [
                format!("emuv.dev/gpu={}", cards[0].uuid),
                format!("emuv.dev/gpu={}", cards[1].uuid)
            ]
        );
        assert_eq!(
            r.annotations["cdi.k8s.io/emuv-device-plugin_nvidia.com-gpu"],
            names.join(",")
        );
        let nodes: Vec<_> = r
            .devices
            .iter()
            .map(|d| d.container_path.as_str())
            .collect();
        assert_eq!(nodes, ["/dev/emuv", "/dev/emuv3"]);
        assert!(r.mounts.iter().any(|m| m.read_only
            && m.container_path.ends_with("/libnvidia-ml.so.1")
            && m.host_path == "/usr/lib/emuv/libnvidia-ml.so.1"));
        assert_eq!(r.envs["NVIDIA_VISIBLE_DEVICES"], "void");
        let only_cri = plugin(cards.clone(), vec![Strategy::CdiCri]).container_response(&given);
        assert!(only_cri.annotations.is_empty() && only_cri.devices.is_empty());
    }

    #[test]
    fn bad_requests_are_errors() {
        let tree = Tree::new("plugin-bad");
        let dir = tree.add_card(0, "4090");
        tree.set(&dir, "fail", "lost");
        let cards = cards(&tree);
        let id = cards[0].uuid.clone();
        assert_eq!(
            resolve(&cards, &["x\n".repeat(100)]).unwrap_err().code,
            tonic::Code::NotFound
        );
        assert_eq!(
            resolve(&cards, &[id.clone(), id.clone()]).unwrap_err().code,
            tonic::Code::InvalidArgument
        );
        let p = plugin(cards, vec![Strategy::CdiCri]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let allocate = |ids: Vec<String>| {
            runtime
                .block_on(p.allocate(Request::new(AllocateRequest {
                    container_requests: vec![crate::api::deviceplugin::ContainerAllocateRequest {
                        devices_ids: ids,
                    }],
                })))
                .map(|_| ())
                .map_err(|s| s.code())
        };
        assert_eq!(
            allocate(vec![id]).unwrap_err(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(allocate(vec![]).unwrap_err(), tonic::Code::InvalidArgument);
    }
}
