//! A `podresources.v1` server over the simulator's admitted pods, and a small client.
//!
//! Device entries are laid out as the kubelet lays them out: one `ContainerDevices` per
//! device and NUMA node (a device without topology gets one entry without topology),
//! with the topology taken from the plugin's latest device list.

use std::path::Path;

use proto::deviceplugin::v1beta1 as dp;
use proto::podresources::v1::{
    self as pr,
    pod_resources_lister_client::PodResourcesListerClient,
    pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer},
};
use proto::unix::{UnixServer, connect_unix};
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

use crate::SimError;
use crate::kubelet::{KubeletSim, SimState};
use crate::pods::PodAllocation;

impl KubeletSim {
    /// Serves `podresources.v1.PodResourcesLister` on the unix socket `path` (its parent
    /// must exist), answering from the pods this simulator admitted and the devices its
    /// plugins list. Stops when the returned server is shut down or dropped.
    pub fn serve_pod_resources(&self, path: &Path) -> Result<UnixServer, SimError> {
        let svc = PodResourcesService {
            state: self.subscribe(),
        };
        Ok(UnixServer::spawn(
            path,
            Routes::new(PodResourcesListerServer::new(svc)),
        )?)
    }
}

/// A client of a pod-resources socket.
pub async fn client(
    path: &Path,
) -> Result<PodResourcesListerClient<tonic::transport::Channel>, SimError> {
    Ok(PodResourcesListerClient::new(connect_unix(path).await?))
}

/// Calls `List` on the pod-resources socket at `path`.
pub async fn list(path: &Path) -> Result<pr::ListPodResourcesResponse, SimError> {
    let mut c = client(path).await?;
    crate::kubelet::call(
        "List",
        &path.display().to_string(),
        c.list(pr::ListPodResourcesRequest {}),
    )
    .await
}

/// The device IDs of `resource` that pod `namespace/name` holds, per container, read from
/// a `List` answer: what multus looks up to find a pod's VF.
pub fn devices_of(
    list: &pr::ListPodResourcesResponse,
    namespace: &str,
    name: &str,
    resource: &str,
) -> Vec<String> {
    list.pod_resources
        .iter()
        .filter(|p| p.namespace == namespace && p.name == name)
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
        .filter(|d| d.resource_name == resource)
        .flat_map(|d| d.device_ids.iter().cloned())
        .collect()
}

struct PodResourcesService {
    state: watch::Receiver<SimState>,
}

/// One entry per device and NUMA node, as kubelet's `containerDevicesFromResourceDeviceInstances`.
fn container_devices(
    state: &SimState,
    resource: &str,
    ids: &[String],
) -> Vec<pr::ContainerDevices> {
    let list = state.devices.get(resource);
    let mut out = Vec::new();
    for id in ids {
        let nodes: Vec<i64> = list
            .and_then(|l| l.get(id))
            .and_then(|d| d.topology.as_ref())
            .map(|t| t.nodes.iter().map(|n| n.id).collect())
            .unwrap_or_default();
        if nodes.is_empty() {
            out.push(pr::ContainerDevices {
                resource_name: resource.to_string(),
                device_ids: vec![id.clone()],
                topology: None,
            });
        }
        for node in nodes {
            out.push(pr::ContainerDevices {
                resource_name: resource.to_string(),
                device_ids: vec![id.clone()],
                topology: Some(pr::TopologyInfo {
                    nodes: vec![pr::NumaNode { id: node }],
                }),
            });
        }
    }
    out
}

fn pod_resources(state: &SimState, pod: &PodAllocation) -> pr::PodResources {
    pr::PodResources {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        containers: pod
            .containers
            .iter()
            .map(|c| pr::ContainerResources {
                name: c.name.clone(),
                devices: c
                    .resources
                    .iter()
                    .flat_map(|(res, a)| container_devices(state, res, &a.device_ids))
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesService {
    async fn list(
        &self,
        _: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let state = self.state.borrow();
        let pod_resources = state
            .pods
            .iter()
            .map(|p| pod_resources(&state, p))
            .collect();
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources,
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        let state = self.state.borrow();
        let devices = state
            .devices
            .iter()
            .flat_map(|(res, l)| {
                let ids: Vec<String> = l
                    .devices
                    .iter()
                    .map(|d: &dp::Device| d.id.clone())
                    .collect();
                container_devices(&state, res, &ids)
            })
            .collect();
        Ok(Response::new(pr::AllocatableResourcesResponse {
            devices,
            ..Default::default()
        }))
    }

    async fn get(
        &self,
        req: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        let req = req.into_inner();
        let state = self.state.borrow();
        let pod = state
            .pods
            .iter()
            .find(|p| p.name == req.pod_name && p.namespace == req.pod_namespace)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pod {} in namespace {} not found",
                    req.pod_name, req.pod_namespace
                ))
            })?;
        Ok(Response::new(pr::GetPodResourcesResponse {
            pod_resources: Some(pod_resources(&state, pod)),
        }))
    }
}
