//! The kubelet `DevicePlugin` gRPC service of one resource: a thin adapter over
//! [`crate::allocate`] and [`crate::preferred`], fed by a `tokio::sync::watch` channel
//! that always holds the resource's current devices. Whoever recomputes the pools sends
//! the new [`Resource`] into the channel; every `ListAndWatch` stream then sends the new
//! list.

use crate::allocate::{AllocateError, AllocateOptions, ContainerAllocation, allocate};
use crate::pools::{Advertised, Resource};
use crate::preferred::preferred;
use futures::Stream;
use proto::deviceplugin::v1beta1 as dp;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// The service for one resource.
#[derive(Debug, Clone)]
pub struct PluginService {
    name: String,
    devices: watch::Receiver<Arc<Resource>>,
    opts: Arc<AllocateOptions>,
}

impl PluginService {
    /// A service answering from `devices` (the current resource).
    pub fn new(devices: watch::Receiver<Arc<Resource>>, opts: Arc<AllocateOptions>) -> Self {
        let name = devices.borrow().full_name();
        PluginService {
            name,
            devices,
            opts,
        }
    }

    /// The options kubelet gets (also sent in `Register`).
    pub fn options() -> dp::DevicePluginOptions {
        dp::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }
    }
}

/// The ListAndWatch message for a device list.
pub fn list_response(devices: &[Advertised]) -> dp::ListAndWatchResponse {
    dp::ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|a| dp::Device {
                id: a.id.clone(),
                health: if a.healthy {
                    proto::HEALTHY
                } else {
                    proto::UNHEALTHY
                }
                .into(),
                topology: (!a.numa_nodes.is_empty()).then(|| dp::TopologyInfo {
                    nodes: a
                        .numa_nodes
                        .iter()
                        .map(|n| dp::NumaNode { id: i64::from(*n) })
                        .collect(),
                }),
            })
            .collect(),
    }
}

/// Convert one container's allocation to the wire message.
pub fn container_response(a: ContainerAllocation) -> dp::ContainerAllocateResponse {
    dp::ContainerAllocateResponse {
        envs: a.envs.into_iter().collect(),
        mounts: a
            .mounts
            .into_iter()
            .map(|m| dp::Mount {
                container_path: m.container_path,
                host_path: m.host_path,
                read_only: m.read_only,
            })
            .collect(),
        devices: a
            .devices
            .into_iter()
            .map(|d| dp::DeviceSpec {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        annotations: a.annotations.into_iter().collect(),
        cdi_devices: a
            .cdi_devices
            .into_iter()
            .map(|name| dp::CdiDevice { name })
            .collect(),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<dp::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl dp::device_plugin_server::DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<dp::DevicePluginOptions>, Status> {
        Ok(Response::new(Self::options()))
    }

    type ListAndWatchStream = ListStream;

    async fn list_and_watch(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        info!(resource = %self.name, "ListAndWatch opened");
        let name = self.name.clone();
        let mut last: Option<Vec<Advertised>> = None;
        // WatchStream yields the current value first, then every change.
        let stream = WatchStream::new(self.devices.clone()).filter_map(move |r| {
            let list = r.advertised();
            if last.as_ref() == Some(&list) {
                return None;
            }
            let healthy = list.iter().filter(|a| a.healthy).count();
            info!(resource = %name, devices = list.len(), healthy, "ListAndWatch send");
            let msg = list_response(&list);
            last = Some(list);
            Some(Ok(msg))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<dp::PreferredAllocationRequest>,
    ) -> Result<Response<dp::PreferredAllocationResponse>, Status> {
        let r = self.devices.borrow().clone();
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            let size = usize::try_from(c.allocation_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "resource {}: allocation_size {} is negative",
                    self.name, c.allocation_size
                ))
            })?;
            let ids = preferred(
                &r,
                &c.available_device_i_ds,
                &c.must_include_device_i_ds,
                size,
            );
            info!(resource = %self.name, devices = ?ids, size, "GetPreferredAllocation");
            out.push(dp::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(dp::PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        req: Request<dp::AllocateRequest>,
    ) -> Result<Response<dp::AllocateResponse>, Status> {
        let r = self.devices.borrow().clone();
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            match allocate(&r, &c.devices_ids, &self.opts) {
                Ok(a) => {
                    info!(resource = %self.name, devices = ?c.devices_ids, "Allocate");
                    out.push(container_response(a));
                }
                Err(e @ AllocateError::UnknownDevices { .. }) => {
                    warn!(resource = %self.name, devices = ?c.devices_ids, error = %e, "Allocate rejected");
                    return Err(Status::invalid_argument(e.to_string()));
                }
                Err(e) => {
                    warn!(resource = %self.name, devices = ?c.devices_ids, error = %e, "Allocate failed");
                    return Err(Status::internal(e.to_string()));
                }
            }
        }
        Ok(Response::new(dp::AllocateResponse {
            container_responses: out,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<dp::PreStartContainerRequest>,
    ) -> Result<Response<dp::PreStartContainerResponse>, Status> {
        Ok(Response::new(dp::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocate::{DeviceSpec, Mount};

    #[test]
    fn list_response_health_and_topology() {
        let m = list_response(&[
            Advertised {
                id: "0000:3b:00.2".into(),
                healthy: true,
                numa_nodes: vec![1],
            },
            Advertised {
                id: "0000:3b:00.3".into(),
                healthy: false,
                numa_nodes: vec![],
            },
        ]);
        assert_eq!(m.devices[0].health, "Healthy");
        assert_eq!(m.devices[0].topology.as_ref().unwrap().nodes[0].id, 1);
        assert_eq!(m.devices[1].health, "Unhealthy");
        assert!(m.devices[1].topology.is_none());
    }

    #[test]
    fn container_response_carries_everything() {
        let mut a = ContainerAllocation::default();
        a.envs.insert("K".into(), "V".into());
        a.devices.push(DeviceSpec {
            container_path: "/dev/x".into(),
            host_path: "/dev/y".into(),
            permissions: "rw".into(),
        });
        a.mounts.push(Mount {
            container_path: "/c".into(),
            host_path: "/h".into(),
            read_only: true,
        });
        a.cdi_devices.push("v/c=d".into());
        let r = container_response(a);
        assert_eq!(r.envs["K"], "V");
        assert_eq!(r.devices[0].host_path, "/dev/y");
        assert!(r.mounts[0].read_only);
        assert_eq!(r.cdi_devices[0].name, "v/c=d");
    }
}
