//! The kubelet plugin-watcher path (`--plugins-registry DIR`): instead of calling
//! `Register`, each resource serves `pluginregistration.Registration` on a socket in the
//! registry directory, next to its `DevicePlugin` service on the same socket. The kubelet
//! finds the socket, asks `GetInfo` (type `DevicePlugin`, name = resource, endpoint = the
//! same socket, versions `v1beta1`), dials the endpoint, and reports the outcome with
//! `NotifyRegistrationStatus`. A failure is sent to the daemon, which recreates the
//! socket after a backoff so the watcher tries again.

use proto::pluginregistration as pr;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// What the kubelet said about one resource's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationOutcome {
    /// Full resource name.
    pub resource: String,
    /// `None` when registered, else the kubelet's error.
    pub error: Option<String>,
}

/// The `pluginregistration.Registration` service of one resource (or DRA driver).
#[derive(Debug, Clone)]
pub struct RegistryService {
    resource: String,
    endpoint: PathBuf,
    outcomes: mpsc::UnboundedSender<RegistrationOutcome>,
    plugin_type: &'static str,
    versions: Vec<String>,
}

impl RegistryService {
    /// The service for `resource`, whose `DevicePlugin` API is served at `endpoint`;
    /// outcomes go to `outcomes`.
    pub fn new(
        resource: String,
        endpoint: PathBuf,
        outcomes: mpsc::UnboundedSender<RegistrationOutcome>,
    ) -> Self {
        RegistryService {
            resource,
            endpoint,
            outcomes,
            plugin_type: proto::DEVICE_PLUGIN_TYPE,
            versions: proto::SUPPORTED_VERSIONS
                .iter()
                .map(|v| (*v).to_string())
                .collect(),
        }
    }

    /// The service of the DRA driver `driver`, whose `DRAPlugin` services are served at
    /// `endpoint`: type `DRAPlugin`, versions [`proto::dra::SUPPORTED_SERVICES`] (the
    /// kubelet takes the first it knows).
    pub fn dra(
        driver: String,
        endpoint: PathBuf,
        outcomes: mpsc::UnboundedSender<RegistrationOutcome>,
    ) -> Self {
        RegistryService {
            plugin_type: proto::dra::PLUGIN_TYPE,
            versions: proto::dra::SUPPORTED_SERVICES
                .iter()
                .map(|v| (*v).to_string())
                .collect(),
            ..RegistryService::new(driver, endpoint, outcomes)
        }
    }

    /// The `GetInfo` answer.
    pub fn info(&self) -> pr::PluginInfo {
        pr::PluginInfo {
            r#type: self.plugin_type.into(),
            name: self.resource.clone(),
            endpoint: self.endpoint.display().to_string(),
            supported_versions: self.versions.clone(),
        }
    }
}

#[tonic::async_trait]
impl pr::registration_server::Registration for RegistryService {
    async fn get_info(
        &self,
        _: Request<pr::InfoRequest>,
    ) -> Result<Response<pr::PluginInfo>, Status> {
        info!(resource = %self.resource, r#type = self.plugin_type, endpoint = %self.endpoint.display(), "plugin watcher: GetInfo");
        Ok(Response::new(self.info()))
    }

    async fn notify_registration_status(
        &self,
        req: Request<pr::RegistrationStatus>,
    ) -> Result<Response<pr::RegistrationStatusResponse>, Status> {
        let s = req.into_inner();
        let error = if s.plugin_registered {
            info!(resource = %self.resource, "registered with kubelet (plugin watcher)");
            None
        } else {
            warn!(resource = %self.resource, error = %s.error, "kubelet refused the registration (plugin watcher)");
            Some(s.error)
        };
        // the daemon may be shutting down; then nobody needs to know
        let _ = self.outcomes.send(RegistrationOutcome {
            resource: self.resource.clone(),
            error,
        });
        Ok(Response::new(pr::RegistrationStatusResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pr::registration_server::Registration;

    #[tokio::test]
    async fn info_and_status() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = RegistryService::new("rdma/hca".into(), "/r/rdma_hca.sock".into(), tx);
        let i = s.get_info(Request::new(pr::InfoRequest {})).await.unwrap();
        let i = i.into_inner();
        assert_eq!(i.r#type, "DevicePlugin");
        assert_eq!(i.name, "rdma/hca");
        assert_eq!(i.endpoint, "/r/rdma_hca.sock");
        assert_eq!(i.supported_versions, vec!["v1beta1"]);
        let d = RegistryService::dra("x.io".into(), "/p/x.io/dra.sock".into(), s.outcomes.clone());
        let d = d.get_info(Request::new(pr::InfoRequest {})).await.unwrap();
        let d = d.into_inner();
        assert_eq!(d.r#type, "DRAPlugin");
        assert_eq!(d.name, "x.io");
        assert_eq!(d.endpoint, "/p/x.io/dra.sock");
        assert_eq!(
            d.supported_versions,
            vec!["v1.DRAPlugin", "v1beta1.DRAPlugin"]
        );
        s.notify_registration_status(Request::new(pr::RegistrationStatus {
            plugin_registered: false,
            error: "nope".into(),
        }))
        .await
        .unwrap();
        assert_eq!(
            rx.recv().await.unwrap(),
            RegistrationOutcome {
                resource: "rdma/hca".into(),
                error: Some("nope".into())
            }
        );
    }
}
