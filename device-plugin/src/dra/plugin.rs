//! The kubelet plugin of the DRA driver: `DRAPlugin` (v1 and v1beta1, one adapter over
//! [`Driver`]) on `<plugin dir>/dra.sock`, and `pluginregistration.Registration` on
//! `<plugins_registry>/<driver>-reg.sock` (the upstream kubelet-plugin helper's layout).
//! The kubelet's plugin watcher finds the registration socket, calls `GetInfo` (type
//! `DRAPlugin`, name = driver, endpoint = `dra.sock`, services `v1.DRAPlugin`,
//! `v1beta1.DRAPlugin`), dials the endpoint, and reports with
//! `NotifyRegistrationStatus`. Both sockets go through [`proto::unix::UnixServer`] (the
//! kubelet's grpc-go dials them with whatever `:authority` it likes).

use super::checkpoint::{CHECKPOINT_FILE, CheckpointError, PreparedDevice};
use super::claims::{ClaimRef, ClaimSource};
use super::devices::DraDevices;
use super::prepare::{Driver, PrepareOptions};
use crate::daemon::{ServeLinkedError, serve_linked};
use crate::registration::{RegistrationOutcome, RegistryService};
use proto::dra::{v1, v1beta1};
use proto::pluginregistration as pr;
use proto::unix::UnixServer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// Where the kubelet plugin lives and writes.
#[derive(Debug, Clone)]
pub struct DraOptions {
    /// The driver name.
    pub driver: String,
    /// The plugin's own dir: `dra.sock` and the checkpoint
    /// (`/var/lib/kubelet/plugins/<driver>`).
    pub plugin_dir: PathBuf,
    /// The kubelet's plugin-watcher dir (`/var/lib/kubelet/plugins_registry`).
    pub registry_dir: PathBuf,
    /// CDI spec dir.
    pub cdi_dir: PathBuf,
    /// Device-info dir; `None` = write none.
    pub device_info_dir: Option<PathBuf>,
    /// This node's name (the ResourceSlices' `nodeName` and pool): `--node-name`, else
    /// `$NODE_NAME`. Required by [`crate::daemon::run_with`].
    pub node_name: Option<String>,
    /// The kubeconfig for the API server (`--kubeconfig`); `None` = what kube infers.
    pub kubeconfig: Option<PathBuf>,
}

impl DraOptions {
    /// The defaults for `driver`.
    pub fn new(driver: &str) -> Self {
        DraOptions {
            driver: driver.to_string(),
            plugin_dir: Path::new(proto::dra::KUBELET_PLUGINS_DIR).join(driver),
            registry_dir: PathBuf::from(proto::PLUGINS_REGISTRY_PATH),
            cdi_dir: PathBuf::from(crate::cdi::DEFAULT_CDI_DIR),
            device_info_dir: Some(PathBuf::from(super::prepare::DEFAULT_DEVICE_INFO_DIR)),
            node_name: None,
            kubeconfig: None,
        }
    }

    /// The `DRAPlugin` socket.
    pub fn socket(&self) -> PathBuf {
        self.plugin_dir.join(proto::dra::DRA_SOCKET_NAME)
    }

    /// The registration socket.
    pub fn registration_socket(&self) -> PathBuf {
        self.registry_dir.join(format!("{}-reg.sock", self.driver))
    }

    /// The checkpoint file.
    pub fn checkpoint(&self) -> PathBuf {
        self.plugin_dir.join(CHECKPOINT_FILE)
    }

    fn prepare_options(&self) -> PrepareOptions {
        PrepareOptions {
            driver: self.driver.clone(),
            cdi_dir: self.cdi_dir.clone(),
            device_info_dir: self.device_info_dir.clone(),
            checkpoint: self.checkpoint(),
        }
    }
}

/// The kubelet plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum DraStartError {
    /// A directory could not be created.
    #[error("DRA driver {driver}: create {path}: {source}")]
    Dir {
        /// The driver.
        driver: String,
        /// The dir.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The checkpoint is unreadable.
    #[error("DRA driver {driver}: {source}")]
    Checkpoint {
        /// The driver.
        driver: String,
        /// The error.
        #[source]
        source: CheckpointError,
    },
    /// A socket could not be served.
    #[error("DRA driver {driver}: socket {path}: {source}")]
    Serve {
        /// The driver.
        driver: String,
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: ServeLinkedError,
    },
}

/// The gRPC adapter: kubelet messages in, [`Driver`] calls, kubelet messages out.
#[derive(Clone)]
pub struct DraService {
    driver: Arc<Driver>,
}

impl DraService {
    /// Over `driver`.
    pub fn new(driver: Arc<Driver>) -> Self {
        DraService { driver }
    }

    /// Prepare each claim; UID -> devices or the error text.
    async fn prepare(
        &self,
        claims: Vec<ClaimRef>,
    ) -> Vec<(String, Result<Vec<PreparedDevice>, String>)> {
        let calls = claims.into_iter().map(|c| async move {
            let r = match missing_field(&c) {
                Some(f) => Err(format!("claim {c}: {f} is empty")),
                None => self.driver.prepare(&c).await.map_err(|e| e.to_string()),
            };
            if let Err(e) = &r {
                warn!(error = %e, "DRA: NodePrepareResources");
            }
            (c.uid, r)
        });
        futures::future::join_all(calls).await
    }

    async fn unprepare(&self, claims: Vec<ClaimRef>) -> Vec<(String, String)> {
        let calls = claims.into_iter().map(|c| async move {
            let r = match missing_field(&c) {
                Some("uid") => Err(format!("claim {c}: uid is empty")),
                _ => self.driver.unprepare(&c).await.map_err(|e| e.to_string()),
            };
            let err = r.err().unwrap_or_default();
            if !err.is_empty() {
                warn!(error = %err, "DRA: NodeUnprepareResources");
            }
            (c.uid, err)
        });
        futures::future::join_all(calls).await
    }
}

fn missing_field(c: &ClaimRef) -> Option<&'static str> {
    [
        ("namespace", &c.namespace),
        ("uid", &c.uid),
        ("name", &c.name),
    ]
    .into_iter()
    .find(|(_, v)| v.is_empty())
    .map(|(f, _)| f)
}

/// Conversions of one DRA API package; v1 and v1beta1 have the same messages.
macro_rules! dra_api {
    ($pkg:ident) => {
        #[tonic::async_trait]
        impl $pkg::dra_plugin_server::DraPlugin for DraService {
            async fn node_prepare_resources(
                &self,
                req: Request<$pkg::NodePrepareResourcesRequest>,
            ) -> Result<Response<$pkg::NodePrepareResourcesResponse>, Status> {
                let claims = req.into_inner().claims.into_iter().map(|c| ClaimRef {
                    namespace: c.namespace,
                    uid: c.uid,
                    name: c.name,
                });
                let out = self.prepare(claims.collect()).await;
                let claims: HashMap<String, $pkg::NodePrepareResourceResponse> = out
                    .into_iter()
                    .map(|(uid, r)| {
                        let resp = match r {
                            Ok(devs) => $pkg::NodePrepareResourceResponse {
                                devices: devs
                                    .into_iter()
                                    .map(|d| $pkg::Device {
                                        request_names: vec![d.request],
                                        pool_name: d.pool,
                                        device_name: d.device,
                                        cdi_device_ids: d.cdi_device_ids,
                                    })
                                    .collect(),
                                error: String::new(),
                            },
                            Err(error) => $pkg::NodePrepareResourceResponse {
                                devices: vec![],
                                error,
                            },
                        };
                        (uid, resp)
                    })
                    .collect();
                Ok(Response::new($pkg::NodePrepareResourcesResponse { claims }))
            }

            async fn node_unprepare_resources(
                &self,
                req: Request<$pkg::NodeUnprepareResourcesRequest>,
            ) -> Result<Response<$pkg::NodeUnprepareResourcesResponse>, Status> {
                let claims = req.into_inner().claims.into_iter().map(|c| ClaimRef {
                    namespace: c.namespace,
                    uid: c.uid,
                    name: c.name,
                });
                let out = self.unprepare(claims.collect()).await;
                let claims = out
                    .into_iter()
                    .map(|(uid, error)| (uid, $pkg::NodeUnprepareResourceResponse { error }))
                    .collect();
                Ok(Response::new($pkg::NodeUnprepareResourcesResponse {
                    claims,
                }))
            }
        }
    };
}

dra_api!(v1);
dra_api!(v1beta1);

/// The running kubelet plugin.
pub struct DraPlugin {
    opts: DraOptions,
    driver: Arc<Driver>,
    dra: Option<UnixServer>,
    registration: Option<UnixServer>,
    outcomes: mpsc::UnboundedSender<RegistrationOutcome>,
}

impl DraPlugin {
    /// Restore the checkpoint, serve `DRAPlugin`, then the registration socket (so the
    /// endpoint answers as soon as the watcher sees the registration). Claims are read
    /// from `claims`; the kubelet's registration answers go to `outcomes` (name = driver).
    pub fn start(
        opts: DraOptions,
        claims: Arc<dyn ClaimSource>,
        devices: DraDevices,
        outcomes: mpsc::UnboundedSender<RegistrationOutcome>,
    ) -> Result<DraPlugin, DraStartError> {
        for d in [&opts.plugin_dir, &opts.registry_dir] {
            std::fs::create_dir_all(d).map_err(|source| DraStartError::Dir {
                driver: opts.driver.clone(),
                path: d.clone(),
                source,
            })?;
        }
        let n = devices.len();
        let driver = Driver::new(opts.prepare_options(), claims, devices).map_err(|source| {
            DraStartError::Checkpoint {
                driver: opts.driver.clone(),
                source,
            }
        })?;
        let driver = Arc::new(driver);
        let mut p = DraPlugin {
            opts,
            driver,
            dra: None,
            registration: None,
            outcomes,
        };
        p.serve_dra()?;
        p.serve_registration()?;
        info!(driver = %p.opts.driver, socket = %p.opts.socket().display(),
              registration = %p.opts.registration_socket().display(), devices = n, "DRA kubelet plugin serving");
        Ok(p)
    }

    fn serve_dra(&mut self) -> Result<(), DraStartError> {
        let svc = DraService::new(self.driver.clone());
        let routes = Routes::new(v1::dra_plugin_server::DraPluginServer::new(svc.clone()))
            .add_service(v1beta1::dra_plugin_server::DraPluginServer::new(svc));
        let socket = self.opts.socket();
        let server = serve_linked(&socket, routes).map_err(|source| DraStartError::Serve {
            driver: self.opts.driver.clone(),
            path: socket.clone(),
            source,
        })?;
        self.dra = Some(server);
        Ok(())
    }

    fn serve_registration(&mut self) -> Result<(), DraStartError> {
        let path = self.opts.registration_socket();
        let reg = RegistryService::dra(
            self.opts.driver.clone(),
            self.opts.socket(),
            self.outcomes.clone(),
        );
        let routes = Routes::new(pr::registration_server::RegistrationServer::new(reg));
        let server = serve_linked(&path, routes).map_err(|source| DraStartError::Serve {
            driver: self.opts.driver.clone(),
            path: path.clone(),
            source,
        })?;
        self.registration = Some(server);
        Ok(())
    }

    /// Recreate the registration socket (the kubelet refused, or it vanished), so the
    /// plugin watcher tries again.
    pub fn restart_registration(&mut self) -> Result<(), DraStartError> {
        drop(self.registration.take());
        self.serve_registration()
    }

    /// Serve both sockets anew (one vanished or its server stopped): `dra.sock` first.
    pub fn restart(&mut self) -> Result<(), DraStartError> {
        drop(self.registration.take());
        drop(self.dra.take());
        self.serve_dra()?;
        self.serve_registration()
    }

    /// Whether a socket is gone or its server stopped.
    pub fn needs_restart(&self) -> bool {
        let gone = |s: &Option<UnixServer>, p: &Path| {
            s.as_ref().is_none_or(UnixServer::is_finished) || !p.exists()
        };
        gone(&self.registration, &self.opts.registration_socket())
            || gone(&self.dra, &self.opts.socket())
    }

    /// The driver name.
    pub fn name(&self) -> &str {
        &self.opts.driver
    }

    /// The options.
    pub fn options(&self) -> &DraOptions {
        &self.opts
    }

    /// The domain driver (prepared claims, device view).
    pub fn driver(&self) -> &Arc<Driver> {
        &self.driver
    }

    /// Stop serving: the registration socket first (the watcher deregisters), then
    /// `dra.sock`. Prepared claims stay in the checkpoint.
    pub async fn shutdown(mut self) {
        for s in [self.registration.take(), self.dra.take()]
            .into_iter()
            .flatten()
        {
            let path = s.path().to_path_buf();
            if let Err(e) = s.shutdown().await {
                warn!(driver = %self.opts.driver, error = %e, "DRA: shutdown");
            }
            let _ = std::fs::remove_file(&path);
        }
        for p in [self.opts.registration_socket(), self.opts.socket()] {
            let _ = std::fs::remove_file(p);
        }
    }
}
