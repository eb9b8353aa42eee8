// SPDX-License-Identifier: GPL-2.0
//! A harness that plays kubelet's device manager for device plugin tests, as kubelet's own
//! code does it (`pkg/kubelet/cm/devicemanager`), since no kubelet can be built or fetched here:
//!
//! - it serves `v1beta1.Registration` on `kubelet.sock` in the plugin directory, and accepts a
//!   `Register` only for version `v1beta1` and an extended resource name (`domain/name`, not in
//!   kubernetes.io); it then dials the plugin's endpoint back, asks its options and keeps a
//!   `ListAndWatch` stream open, taking each list as the node's devices of that resource; a
//!   plugin registering the same resource again replaces the old endpoint;
//! - on a pod, it gives the healthy devices no container holds to `GetPreferredAllocation`
//!   (when the plugin offers it), checks the answer is among them and of the size asked, calls
//!   `Allocate` and turns the answer into a CRI container config: environment, mounts (read-only
//!   as said), device nodes, annotations and CDI names, as kubelet's container manager does;
//! - it answers `v1.PodResourcesLister/List` with the pods it allocated for, as kubelet's pod
//!   resources socket does for monitoring agents;
//! - a restart deletes every file in the plugin directory except `kubelet_internal_checkpoint`
//!   and serves a new `kubelet.sock`, as kubelet does when it starts.

use crate::containerd::ContainerEdits;
use emuv_kubernetes::{
    api::{
        deviceplugin::{
            device_plugin_client::DevicePluginClient,
            registration_server::{Registration, RegistrationServer},
            AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
            ContainerPreferredAllocationRequest, Device, Empty, PreferredAllocationRequest,
            RegisterRequest,
        },
        podresources::{
            pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer},
            ContainerDevices, ContainerResources, ListPodResourcesRequest,
            ListPodResourcesResponse, PodResources,
        },
    },
    unix, API_VERSION, HEALTHY, KUBELET_SOCKET,
};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::{wrappers::UnixListenerStream, StreamExt};
use tonic::transport::Channel;

/// What kubelet keeps in the plugin directory across restarts.
pub const CHECKPOINT: &str = "kubelet_internal_checkpoint";
/// How long one call to a plugin may take.
const PLUGIN_DEADLINE: Duration = Duration::from_secs(10);

/// A call's failure as kubelet sees it (boxed: `Status` is large).
pub type CallError = Box<tonic::Status>;

/// One registered plugin: its endpoint and the devices its stream last listed.
pub struct Endpoint {
    pub socket: PathBuf,
    pub client: DevicePluginClient<Channel>,
    pub preferred_allocation: bool,
    /// Which registration this is (counting from 1).
    pub generation: usize,
}

/// A pod's container and the devices it was given (pod resources' view).
#[derive(Clone, Debug)]
pub struct Assignment {
    pub pod: String,
    pub namespace: String,
    pub container: String,
    pub resource: String,
    pub devices: Vec<String>,
}

#[derive(Default)]
pub struct State {
    pub endpoints: HashMap<String, Endpoint>,
    pub assignments: Vec<Assignment>,
    pub log: Vec<String>,
    pub registrations: usize,
}

/// The devices of every resource as the streams last said, and when.
pub type Devices = HashMap<String, (Vec<Device>, Instant)>;

#[derive(Clone)]
struct Shared {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    devices: Arc<watch::Sender<Devices>>,
    open_streams: Arc<AtomicUsize>,
    started: Instant,
}

impl Shared {
    fn log(&self, line: String) {
        let line = format!("[{:7.3}] {line}", self.started.elapsed().as_secs_f64());
        if let Ok(mut state) = self.state.lock() {
            state.log.push(line);
        }
    }
}

/// Whether kubelet takes `name` as an extended resource: `domain/name`, outside kubernetes.io.
fn extended_resource(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, short)) => {
            domain.contains('.')
                && !domain.ends_with("kubernetes.io")
                && !short.is_empty()
                && !short.contains('/')
        }
        None => false,
    }
}

#[tonic::async_trait]
impl Registration for Shared {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let r = request.into_inner();
        self.log(format!(
            "Register version={} endpoint={} resource={} options={:?}",
            r.version, r.endpoint, r.resource_name, r.options
        ));
        if r.version != API_VERSION {
            return Err(tonic::Status::invalid_argument(format!(
                "invalid version {:?}, supported: {API_VERSION}",
                r.version
            )));
        }
        if !extended_resource(&r.resource_name) {
            return Err(tonic::Status::invalid_argument(format!(
                "invalid resource name {:?}",
                r.resource_name
            )));
        }
        if r.endpoint.contains('/') || r.endpoint.is_empty() {
            return Err(tonic::Status::invalid_argument(
                "endpoint is not a file name",
            ));
        }
        let socket = self.dir.join(&r.endpoint);
        let channel = unix::channel(&socket, PLUGIN_DEADLINE)
            .await
            .map_err(tonic::Status::unavailable)?;
        let mut client = DevicePluginClient::new(channel);
        let options = client
            .get_device_plugin_options(Empty {})
            .await?
            .into_inner();
        // The stream has no deadline: a channel of its own without one.
        let stream_channel = unix::channel(&socket, Duration::from_secs(24 * 3600))
            .await
            .map_err(tonic::Status::unavailable)?;
        let mut stream = DevicePluginClient::new(stream_channel)
            .list_and_watch(Empty {})
            .await?
            .into_inner();
        let generation = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| tonic::Status::internal("lock"))?;
            state.registrations += 1;
            let generation = state.registrations;
            state.endpoints.insert(
                r.resource_name.clone(),
                Endpoint {
                    socket,
                    client,
                    preferred_allocation: options.get_preferred_allocation_available,
                    generation,
                },
            );
            generation
        };
        let shared = self.clone();
        let resource = r.resource_name.clone();
        self.open_streams.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            while let Some(Ok(list)) = stream.next().await {
                let replaced = shared
                    .state
                    .lock()
                    .map(|s| s.endpoints.get(&resource).map(|e| e.generation) != Some(generation))
                    .unwrap_or(true);
                if replaced {
                    break;
                }
                let summary: Vec<String> = list
                    .devices
                    .iter()
                    .map(|d| format!("{}:{}", &d.id[..d.id.len().min(12)], d.health))
                    .collect();
                shared.log(format!("ListAndWatch {resource}: {}", summary.join(" ")));
                shared.devices.send_modify(|all| {
                    all.insert(resource.clone(), (list.devices, Instant::now()));
                });
            }
            shared.open_streams.fetch_sub(1, Ordering::SeqCst);
            shared.log(format!(
                "ListAndWatch {resource}: stream {generation} ended"
            ));
        });
        Ok(tonic::Response::new(Empty {}))
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Shared {
    async fn list(
        &self,
        _: tonic::Request<ListPodResourcesRequest>,
    ) -> Result<tonic::Response<ListPodResourcesResponse>, tonic::Status> {
        let state = self
            .state
            .lock()
            .map_err(|_| tonic::Status::internal("lock"))?;
        let pod_resources = state
            .assignments
            .iter()
            .map(|a| PodResources {
                name: a.pod.clone(),
                namespace: a.namespace.clone(),
                containers: vec![ContainerResources {
                    name: a.container.clone(),
                    devices: vec![ContainerDevices {
                        resource_name: a.resource.clone(),
                        device_ids: a.devices.clone(),
                    }],
                }],
            })
            .collect();
        Ok(tonic::Response::new(ListPodResourcesResponse {
            pod_resources,
        }))
    }
}

pub struct Kubelet {
    runtime: tokio::runtime::Runtime,
    shared: Shared,
    devices: watch::Receiver<Devices>,
    registration: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    pod_resources: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

fn serve<S>(
    runtime: &tokio::runtime::Runtime,
    socket: &Path,
    service: S,
) -> Result<(watch::Sender<bool>, tokio::task::JoinHandle<()>), String>
where
    S: tower::Service<
            http::Request<tonic::body::BoxBody>,
            Response = http::Response<tonic::body::BoxBody>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _ = std::fs::remove_file(socket);
    let listener = {
        let _guard = runtime.enter();
        UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?
    };
    let (stop, mut stopping) = watch::channel(false);
    let task = runtime.spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok((stop, task))
}

impl Kubelet {
    /// kubelet's device manager on `dir` (made if needed, with a checkpoint file) and its pod
    /// resources socket at `pod_resources`.
    pub fn start(dir: &Path, pod_resources: &Path) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("tokio: {e}"))?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(parent) = pod_resources.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(dir.join(CHECKPOINT), "{}\n").map_err(|e| format!("checkpoint: {e}"))?;
        let (sender, devices) = watch::channel(Devices::new());
        let shared = Shared {
            dir: dir.to_path_buf(),
            state: Arc::default(),
            devices: Arc::new(sender),
            open_streams: Arc::default(),
            started: Instant::now(),
        };
        let pod_resources = serve(
            &runtime,
            pod_resources,
            PodResourcesListerServer::new(shared.clone()),
        )?;
        let mut kubelet = Kubelet {
            runtime,
            shared,
            devices,
            registration: None,
            pod_resources: Some(pod_resources),
        };
        kubelet.serve_registration()?;
        Ok(kubelet)
    }

    fn serve_registration(&mut self) -> Result<(), String> {
        let socket = self.shared.dir.join(KUBELET_SOCKET);
        self.registration = Some(serve(
            &self.runtime,
            &socket,
            RegistrationServer::new(self.shared.clone()),
        )?);
        self.shared.log(format!("serving {}", socket.display()));
        Ok(())
    }

    fn stop_registration(&mut self) {
        if let Some((stop, task)) = self.registration.take() {
            let _ = stop.send(true);
            let _ = self.runtime.block_on(task);
        }
    }

    /// kubelet restarting: the registration server goes, every endpoint is dropped, every
    /// file but the checkpoint is deleted, and a new `kubelet.sock` is served.
    pub fn restart(&mut self) -> Result<(), String> {
        self.shared.log("restart".into());
        self.stop_registration();
        if let Ok(mut state) = self.shared.state.lock() {
            state.endpoints.clear();
        }
        let entries = std::fs::read_dir(&self.shared.dir).map_err(|e| format!("read dir: {e}"))?;
        for entry in entries.flatten() {
            if entry.file_name() != CHECKPOINT {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.serve_registration()
    }

    pub fn log(&self) -> Vec<String> {
        self.shared
            .state
            .lock()
            .map(|s| s.log.clone())
            .unwrap_or_default()
    }

    pub fn note(&self, line: String) {
        self.shared.log(line);
    }

    pub fn registrations(&self) -> usize {
        self.shared
            .state
            .lock()
            .map(|s| s.registrations)
            .unwrap_or(0)
    }

    /// The registered endpoint of `resource`: its socket and registration number.
    pub fn endpoint(&self, resource: &str) -> Option<(PathBuf, usize)> {
        let state = self.shared.state.lock().ok()?;
        state
            .endpoints
            .get(resource)
            .map(|e| (e.socket.clone(), e.generation))
    }

    /// `ListAndWatch` streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// The devices of `resource` the stream last listed.
    pub fn devices(&self, resource: &str) -> Vec<Device> {
        self.devices
            .borrow()
            .get(resource)
            .map(|(d, _)| d.clone())
            .unwrap_or_default()
    }

    /// Waits until the devices of `resource` satisfy `done`; how long it took.
    pub fn wait_devices(
        &self,
        resource: &str,
        timeout: Duration,
        done: impl Fn(&[Device]) -> bool,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        let resource = resource.to_owned();
        let mut devices = self.devices.clone();
        self.runtime.block_on(async {
            loop {
                if let Some((list, _)) = devices.borrow_and_update().get(&resource) {
                    if done(list) {
                        return Ok(start.elapsed());
                    }
                }
                let left = timeout.saturating_sub(start.elapsed());
                if left.is_zero() || tokio::time::timeout(left, devices.changed()).await.is_err() {
                    let now = devices.borrow().get(&resource).map(|(d, _)| d.clone());
                    return Err(format!(
                        "after {:?} the devices of {resource} are {now:?}",
                        start.elapsed()
                    ));
                }
            }
        })
    }

    /// Waits until `resource` has been registered more than `after` times in all.
    pub fn wait_registration(
        &self,
        resource: &str,
        after: usize,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let start = Instant::now();
        loop {
            if self
                .endpoint(resource)
                .is_some_and(|(_, generation)| generation > after)
            {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{resource} not registered again within {timeout:?}; log:\n{}",
                    self.log().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self, resource: &str) -> Result<(DevicePluginClient<Channel>, bool), CallError> {
        let state = self
            .shared
            .state
            .lock()
            .map_err(|_| Box::new(tonic::Status::internal("lock")))?;
        let endpoint = state.endpoints.get(resource).ok_or_else(|| {
            Box::new(tonic::Status::unavailable(format!(
                "no plugin registered for {resource}"
            )))
        })?;
        Ok((endpoint.client.clone(), endpoint.preferred_allocation))
    }

    /// Calls `GetPreferredAllocation` as kubelet does at admission.
    pub fn preferred(
        &self,
        resource: &str,
        available: &[String],
        must_include: &[String],
        size: i32,
    ) -> Result<Vec<String>, CallError> {
        let (mut client, _) = self.client(resource)?;
        let request = PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: available.to_vec(),
                must_include_device_i_ds: must_include.to_vec(),
                allocation_size: size,
            }],
        };
        let response = self
            .runtime
            .block_on(client.get_preferred_allocation(request))?
            .into_inner();
        Ok(response
            .container_responses
            .into_iter()
            .next()
            .map(|r| r.device_i_ds)
            .unwrap_or_default())
    }

    /// Calls `Allocate` for one container.
    pub fn allocate(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<ContainerAllocateResponse, CallError> {
        let (mut client, _) = self.client(resource)?;
        let request = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: ids.to_vec(),
            }],
        };
        let response = self
            .runtime
            .block_on(client.allocate(request))?
            .into_inner();
        response
            .container_responses
            .into_iter()
            .next()
            .ok_or_else(|| Box::new(tonic::Status::internal("Allocate answered no container")))
    }

    /// Admits a pod's container asking `count` devices of `resource`: picks them as kubelet
    /// does (healthy, held by no container, the plugin's preference if it has one), allocates,
    /// records the assignment and returns the container's edits.
    pub fn admit(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        resource: &str,
        count: usize,
    ) -> Result<(Vec<String>, ContainerEdits), String> {
        let held: Vec<String> = self
            .shared
            .state
            .lock()
            .map_err(|_| "lock")?
            .assignments
            .iter()
            .filter(|a| a.resource == resource)
            .flat_map(|a| a.devices.clone())
            .collect();
        let available: Vec<String> = self
            .devices(resource)
            .into_iter()
            .filter(|d| d.health == HEALTHY && !held.contains(&d.id))
            .map(|d| d.id)
            .collect();
        if available.len() < count {
            return Err(format!(
                "UnexpectedAdmissionError: {count} {resource} asked, {} healthy and free",
                available.len()
            ));
        }
        let (_, preference) = self.client(resource).map_err(|s| s.message().to_owned())?;
        let size = i32::try_from(count).map_err(|_| "count")?;
        let mut chosen = available[..count].to_vec();
        if preference {
            let preferred = self
                .preferred(resource, &available, &[], size)
                .map_err(|s| format!("GetPreferredAllocation: {s:?}"))?;
            // kubelet takes the preference only if it is a valid allocation.
            if preferred.len() == count && preferred.iter().all(|p| available.contains(p)) {
                chosen = preferred;
            } else {
                self.shared.log(format!(
                    "GetPreferredAllocation's {preferred:?} not valid: ignored"
                ));
            }
        }
        let response = self
            .allocate(resource, &chosen)
            .map_err(|s| format!("Allocate: {:?}: {}", s.code(), s.message()))?;
        self.shared.log(format!(
            "admitted {namespace}/{pod}/{container}: {resource} {chosen:?} -> cdi_devices={:?} annotations={:?} devices={:?} mounts={} envs={:?}",
            response.cdi_devices.iter().map(|d| &d.name).collect::<Vec<_>>(),
            response.annotations,
            response.devices.iter().map(|d| &d.host_path).collect::<Vec<_>>(),
            response.mounts.len(),
            response.envs,
        ));
        if let Ok(mut state) = self.shared.state.lock() {
            state.assignments.push(Assignment {
                pod: pod.into(),
                namespace: namespace.into(),
                container: container.into(),
                resource: resource.into(),
                devices: chosen.clone(),
            });
        }
        let mut envs: Vec<(String, String)> = response.envs.into_iter().collect();
        envs.sort();
        let edits = ContainerEdits {
            cdi_devices: response.cdi_devices.into_iter().map(|d| d.name).collect(),
            annotations: response.annotations,
            envs,
            mounts: response
                .mounts
                .into_iter()
                .map(|m| (m.container_path, m.host_path, m.read_only))
                .collect(),
            devices: response
                .devices
                .into_iter()
                .map(|d| (d.container_path, d.host_path, d.permissions))
                .collect(),
            unified: Vec::new(),
        };
        Ok((chosen, edits))
    }

    /// The pod's containers are gone: their devices are free again.
    pub fn forget(&self, pod: &str) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.assignments.retain(|a| a.pod != pod);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop_registration();
        if let Some((stop, task)) = self.pod_resources.take() {
            let _ = stop.send(true);
            let _ = self.runtime.block_on(task);
        }
    }
}
