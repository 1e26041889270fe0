//! The daemon: one gRPC server per resource on its own socket in the device-plugin
//! directory, each registered with kubelet once it listens.
//!
//! [`Daemon::apply`] takes freshly computed [`Pools`] and reconciles: new resources get a
//! server and a registration, gone ones are stopped (socket removed), changed ones get
//! their new device list pushed into their watch channel (so every `ListAndWatch`
//! stream resends). Startup, a config reload and a rescan all go through it.
//! [`Daemon::restart_resource`] recreates one resource's socket and registration (after
//! a kubelet restart wiped the directory).
//!
//! [`run_with`] is the daemon's life: an event loop over [`crate::events`] (a new
//! `kubelet.sock` -> re-register everything; config edits and SIGHUP -> reload, keeping
//! the running config when the new one is invalid; link events and the periodic rescan
//! -> recompute the pools, with [`crate::health`] judging devices across scans), a slow
//! safety poll (our sockets gone, `kubelet.sock` replaced unseen), and SIGTERM -> stop
//! serving and remove our sockets. With [`Lifecycle::plugins_registry`] each resource is
//! found by kubelet's plugin watcher ([`crate::registration`]) instead of `Register`.
//!
//! With [`DaemonOptions::dra`] the same daemon is also a DRA driver ([`crate::dra`]): its
//! kubelet plugin is started after the first scan, gets the served VF pools after every
//! [`Daemon::apply`], and this node's ResourceSlices follow every scan (start, rescan,
//! reload; health included) through a [`SliceFeed`] ([`Daemon::dra_rescanned`]). On a
//! clean shutdown the slices are deleted unless a claim is still prepared.

use crate::allocate::AllocateOptions;
use crate::cdi;
use crate::config::{Config, ConfigError};
use crate::device_info_gc;
use crate::dra::claims::{ClaimSource, KubeClaims, KubeClientError, kube_client};
use crate::dra::devices::DraDevices;
use crate::dra::plugin::{DraOptions, DraPlugin, DraStartError};
use crate::dra::publish::{Backoff, PublishError, Publisher, SliceFeed};
use crate::dra::slices::{SliceSource, node_devices};
use crate::events::{self, Event};
use crate::health;
use crate::pools::{Pools, Resource};
use crate::registration::{RegistrationOutcome, RegistryService};
use crate::service::PluginService;
use proto::deviceplugin::v1beta1 as dp;
use proto::pluginregistration as pr;
use proto::unix::{UnixError, UnixServer, connect_unix};
use rdma_hca::{HcaError, Host, Inventory};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tracing::{debug, error, info, warn};

/// Errors that stop the daemon (at startup); each names its input.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The host tree could not be read.
    #[error("read host inventory: {0}")]
    Inventory(#[from] HcaError),
    /// A resource's socket could not be served.
    #[error("resource {resource}: {source}")]
    Serve {
        /// Full resource name.
        resource: String,
        /// The socket error (names the path).
        #[source]
        source: UnixError,
    },
    /// A plugins_registry socket could not be put in place.
    #[error("resource {resource}: publish socket {path}: {source}")]
    Publish {
        /// Full resource name.
        resource: String,
        /// The socket path kubelet's plugin watcher looks at.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The DRA kubelet plugin could not start.
    #[error(transparent)]
    Dra(#[from] DraStartError),
    /// No API server client for the DRA driver.
    #[error("DRA driver: API server client: {0}")]
    DraClient(#[from] KubeClientError),
    /// DRA is on but this node's name is unknown.
    #[error(
        "DRA driver: the node name is needed for its ResourceSlices: pass --node-name or set NODE_NAME (the downward API's spec.nodeName)"
    )]
    DraNodeName,
    /// The node or driver name cannot make valid ResourceSlices.
    #[error("DRA driver: {0}")]
    DraPublisher(#[from] PublishError),
    /// The device-plugin directory could not be created.
    #[error("create device-plugin directory {path}: {source}")]
    PluginDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Host root (`/`).
    pub root: PathBuf,
    /// Config file; `None` = the default path, falling back to the embedded config.
    pub config_file: Option<PathBuf>,
    /// Kubelet's device-plugin directory (our sockets and `kubelet.sock`).
    pub device_plugin_path: PathBuf,
    /// Device-info directory; `None` = write none.
    pub device_info_dir: Option<PathBuf>,
    /// CDI spec directory when `--cdi` is on.
    pub cdi_dir: Option<PathBuf>,
    /// First delay between `Register` attempts.
    pub register_backoff: Duration,
    /// Longest delay between `Register` attempts.
    pub register_backoff_max: Duration,
    /// Kubelet's pod-resources socket, asked which devices are still allocated.
    pub pod_resources_socket: PathBuf,
    /// How often device-info files of unallocated devices are swept (`ZERO` = never).
    pub device_info_gc_interval: Duration,
    /// How long a new device-info file is kept even when no pod lists its device.
    pub device_info_gc_grace: Duration,
    /// Also serve the VF pools as this DRA driver (`--dra`).
    pub dra: Option<DraOptions>,
}

impl DaemonOptions {
    /// The config this daemon should run with now.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        match &self.config_file {
            Some(f) => Config::load(f),
            None => Config::load_or_default(Path::new(crate::config::DEFAULT_CONFIG_FILE)),
        }
    }

    /// Read the host and compute the pools of `config`.
    pub fn compute(&self, config: &Config) -> Result<Pools, HcaError> {
        let host = Host::new(&self.root);
        let inv = host.inventory()?;
        let vhost = host.root().join("dev/vhost-net").exists();
        Ok(Pools::compute(&inv, config, vhost))
    }

    /// The kubelet registration socket.
    pub fn kubelet_socket(&self) -> PathBuf {
        self.device_plugin_path.join(proto::KUBELET_SOCKET_NAME)
    }
}

/// How the daemon lives with the node: registration path and rescan cadence.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// Serve `pluginregistration` sockets in this directory (kubelet's plugin watcher,
    /// `/var/lib/kubelet/plugins_registry`) instead of calling `Register`.
    pub plugins_registry: Option<PathBuf>,
    /// Periodic rescan interval; `None` = the config's `periodicUpdateInterval`, else
    /// [`DEFAULT_RESCAN_INTERVAL`]. `ZERO` = off.
    pub rescan_interval: Option<Duration>,
    /// Safety poll: our sockets still there, `kubelet.sock` not replaced unseen. Events
    /// are the primary mechanism; this only catches what inotify missed. `ZERO` = off.
    pub safety_poll: Duration,
    /// First delay before recreating a registry socket the kubelet refused.
    pub registry_retry: Duration,
}

/// First `Register` retry delay after a kubelet restart.
const RESTART_REGISTER_BACKOFF: Duration = Duration::from_millis(5);

/// `periodicUpdateInterval` default of k8s-rdma-shared-dev-plugin.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(60);

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            plugins_registry: None,
            rescan_interval: None,
            safety_poll: Duration::from_secs(15),
            registry_retry: Duration::from_millis(500),
        }
    }
}

impl Lifecycle {
    /// The rescan interval in force with `config`.
    pub fn rescan_interval(&self, config: &Config) -> Duration {
        self.rescan_interval
            .or(config.periodic_update_interval)
            .unwrap_or(DEFAULT_RESCAN_INTERVAL)
    }
}

struct Running {
    tx: watch::Sender<Arc<Resource>>,
    server: Option<UnixServer>,
    /// The `Register` task (none in plugins_registry mode).
    register: Option<JoinHandle<()>>,
    /// The socket kubelet dials, and its inode (device, inode number).
    socket: PathBuf,
    socket_inode: Option<(u64, u64)>,
}

impl Running {
    /// Remove our socket file unless something else has replaced it since.
    fn remove_socket(&self) {
        let now = file_id(&self.socket).map(|f| (f.dev, f.ino));
        if now.is_some() && now == self.socket_inode {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Identity of a file: a recreated `kubelet.sock` has a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime_ns: i128,
}

fn file_id(p: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// The running daemon.
pub struct Daemon {
    opts: DaemonOptions,
    lifecycle: Lifecycle,
    alloc: Arc<AllocateOptions>,
    running: BTreeMap<String, Running>,
    outcomes: mpsc::UnboundedSender<RegistrationOutcome>,
    outcomes_rx: Option<mpsc::UnboundedReceiver<RegistrationOutcome>>,
    /// The `kubelet.sock` our registrations went to.
    kubelet_id: Option<FileId>,
    /// The DRA kubelet plugin, once started.
    dra: Option<DraPlugin>,
    /// The ResourceSlice publisher's feed, once started.
    slices: Option<SliceFeed>,
}

impl Daemon {
    /// A daemon with nothing served yet.
    pub fn new(opts: DaemonOptions) -> Result<Daemon, DaemonError> {
        Daemon::with_lifecycle(opts, Lifecycle::default())
    }

    /// A daemon with nothing served yet, living by `lifecycle`.
    pub fn with_lifecycle(
        opts: DaemonOptions,
        lifecycle: Lifecycle,
    ) -> Result<Daemon, DaemonError> {
        let mut dirs = vec![opts.device_plugin_path.clone()];
        dirs.extend(lifecycle.plugins_registry.clone());
        for path in dirs {
            std::fs::create_dir_all(&path)
                .map_err(|source| DaemonError::PluginDir { path, source })?;
        }
        let alloc = Arc::new(AllocateOptions {
            device_info_dir: opts.device_info_dir.clone(),
            cdi: opts.cdi_dir.is_some(),
        });
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        let kubelet_id = file_id(&opts.kubelet_socket());
        Ok(Daemon {
            opts,
            lifecycle,
            alloc,
            running: BTreeMap::new(),
            outcomes,
            outcomes_rx: Some(outcomes_rx),
            kubelet_id,
            dra: None,
            slices: None,
        })
    }

    /// Start the DRA kubelet plugin with `opts`, reading claims from `claims`, offering
    /// the VF pools served now (call after the first [`Daemon::apply`]).
    pub fn start_dra(
        &mut self,
        opts: DraOptions,
        claims: Arc<dyn ClaimSource>,
    ) -> Result<(), DaemonError> {
        let devices = self.dra_devices();
        let p = DraPlugin::start(opts, claims, devices.clone(), self.outcomes.clone())?;
        self.dra = Some(p);
        self.dra_devices_changed(&devices);
        Ok(())
    }

    /// Publish this node's ResourceSlices through `publisher` from now on (on its own
    /// task; failed syncs retried by `backoff`): every [`Daemon::dra_rescanned`] feeds
    /// it, [`Daemon::shutdown`] stops it.
    pub fn publish_slices(&mut self, publisher: Publisher, backoff: Backoff) {
        info!(node = %publisher.node(), driver = %publisher.driver(), "DRA: publishing ResourceSlices");
        self.slices = Some(SliceFeed::spawn(publisher, backoff));
    }

    /// The DRA kubelet plugin, when running.
    pub fn dra(&self) -> Option<&DraPlugin> {
        self.dra.as_ref()
    }

    /// The DRA devices of the pools served now (health as judged across scans).
    fn dra_devices(&self) -> DraDevices {
        DraDevices::from_resources(self.running.values().map(|r| r.tx.borrow().clone()))
    }

    /// The kubelet plugin's device view changed (DRA start, or an [`Daemon::apply`] that
    /// changed a served resource).
    fn dra_devices_changed(&mut self, devices: &DraDevices) {
        let Some(p) = &self.dra else {
            return;
        };
        debug!(driver = %p.name(), devices = devices.len(), "DRA devices changed");
    }

    /// Feed the ResourceSlice publisher (when [`Daemon::publish_slices`] started one):
    /// called with DRA on, after the DRA start and after every rescan and config reload
    /// ([`Daemon::rescan`]), with the inventory and the health-refined pools just applied
    /// (unhealthy and vanished VFs are not in them, so they leave their slice). Every
    /// call, changed or not: the feed syncs only the latest list, and a sync of an
    /// unchanged pool is one list, no writes.
    pub fn dra_rescanned(&mut self, inventory: &Inventory, pools: &Pools) {
        let (Some(p), Some(feed)) = (&self.dra, &self.slices) else {
            return;
        };
        let src = SliceSource {
            inventory,
            pools,
            root: &self.opts.root,
        };
        let devices = node_devices(&src, p.name());
        debug!(driver = %p.name(), devices = devices.len(), "DRA: devices for the ResourceSlices");
        feed.publish(devices);
    }

    /// The lifecycle settings.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The kubelet's answers to plugin-watcher registrations (once; `None` after).
    pub fn take_registration_outcomes(
        &mut self,
    ) -> Option<mpsc::UnboundedReceiver<RegistrationOutcome>> {
        self.outcomes_rx.take()
    }

    /// Where `socket` lives: the plugins_registry dir in that mode, else the
    /// device-plugin dir.
    fn socket_path(&self, socket: &str) -> PathBuf {
        self.lifecycle
            .plugins_registry
            .as_deref()
            .unwrap_or(&self.opts.device_plugin_path)
            .join(socket)
    }

    /// The options.
    pub fn options(&self) -> &DaemonOptions {
        &self.opts
    }

    /// Full names of the resources being served.
    pub fn resources(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Reconcile the served resources with `pools`.
    pub fn apply(&mut self, pools: Pools) -> Result<(), DaemonError> {
        let wanted: BTreeSet<String> = pools.resources.iter().map(Resource::full_name).collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        let mut changed = !gone.is_empty();
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                info!(resource = %name, "resource removed");
                stop(r);
            }
        }
        for r in pools.resources {
            let name = r.full_name();
            let r = Arc::new(r);
            if let Some(run) = self.running.get(&name) {
                let same =
                    run.tx.borrow().devices == r.devices && run.tx.borrow().config == r.config;
                if !same {
                    changed = true;
                    self.side_files(&r);
                    let healthy = r.advertised().iter().filter(|a| a.healthy).count();
                    info!(resource = %name, devices = r.advertised().len(), healthy, "resource updated");
                    run.tx.send_replace(r);
                }
                continue;
            }
            self.side_files(&r);
            let run = self.start(r)?;
            self.running.insert(name, run);
            changed = true;
        }
        if changed && let Some(p) = &self.dra {
            let devices = self.dra_devices();
            p.driver().set_devices(devices.clone());
            self.dra_devices_changed(&devices);
        }
        Ok(())
    }

    /// The CDI spec of a resource (best effort, logged). Device-info files are not
    /// touched here: a VF whose netdev moved into a pod may leave the pool while the pod
    /// still needs its file; [`Daemon::sweep_device_info`] removes them by allocation.
    fn side_files(&self, r: &Resource) {
        if let Some(dir) = &self.opts.cdi_dir {
            match cdi::write_spec(dir, r) {
                Ok(p) => info!(resource = %r.full_name(), path = %p.display(), "CDI spec written"),
                Err(e) => warn!(resource = %r.full_name(), error = %e, "CDI spec"),
            }
        }
    }

    fn start(&self, r: Arc<Resource>) -> Result<Running, DaemonError> {
        let name = r.full_name();
        let socket = r.socket_name();
        let (tx, rx) = watch::channel(r);
        let service = PluginService::new(rx, self.alloc.clone());
        let (server, path) = self.serve(&name, &socket, service)?;
        let register = self.spawn_register(name, socket, self.opts.register_backoff);
        Ok(Running {
            tx,
            server: Some(server),
            register,
            socket_inode: file_id(&path).map(|f| (f.dev, f.ino)),
            socket: path,
        })
    }

    fn serve(
        &self,
        name: &str,
        socket: &str,
        service: PluginService,
    ) -> Result<(UnixServer, PathBuf), DaemonError> {
        let path = self.socket_path(socket);
        let mut routes = Routes::new(dp::device_plugin_server::DevicePluginServer::new(service));
        if self.lifecycle.plugins_registry.is_some() {
            // GetInfo names this same socket as the DevicePlugin endpoint
            let reg = RegistryService::new(name.to_string(), path.clone(), self.outcomes.clone());
            routes = routes.add_service(pr::registration_server::RegistrationServer::new(reg));
        }
        let server = serve_linked(&path, routes).map_err(|e| match e {
            ServeLinkedError::Serve(source) => DaemonError::Serve {
                resource: name.to_string(),
                source,
            },
            ServeLinkedError::Publish(source) => DaemonError::Publish {
                resource: name.to_string(),
                path: path.clone(),
                source,
            },
        })?;
        info!(resource = %name, socket = %path.display(), "serving");
        Ok((server, path))
    }

    fn spawn_register(
        &self,
        name: String,
        socket: String,
        first: Duration,
    ) -> Option<JoinHandle<()>> {
        if self.lifecycle.plugins_registry.is_some() {
            return None; // kubelet's plugin watcher finds the socket
        }
        let kubelet = self.opts.kubelet_socket();
        let max = self.opts.register_backoff_max;
        Some(tokio::spawn(register_with_backoff(
            kubelet, name, socket, first, max,
        )))
    }

    /// Recreate the socket of `name` and register it again (kubelet restarted).
    pub fn restart_resource(&mut self, name: &str) -> Result<(), DaemonError> {
        if let Some(p) = self.dra.as_mut().filter(|p| p.name() == name) {
            // the kubelet refused the DRA registration: a new socket makes it try again
            p.restart_registration()?;
            return Ok(());
        }
        let Some(run) = self.running.get_mut(name) else {
            return Ok(());
        };
        if let Some(t) = run.register.take() {
            t.abort();
        }
        if let Some(s) = run.server.take() {
            drop(s); // aborts the task; the new bind replaces the file
        }
        let r = run.tx.borrow().clone();
        let service = PluginService::new(run.tx.subscribe(), self.alloc.clone());
        let socket = r.socket_name();
        let (server, path) = self.serve(name, &socket, service)?;
        // a new kubelet.sock exists a moment before kubelet listens on it: retry soon
        let first = RESTART_REGISTER_BACKOFF.min(self.opts.register_backoff);
        let register = self.spawn_register(name.to_string(), socket, first);
        if let Some(run) = self.running.get_mut(name) {
            run.server = Some(server);
            run.register = register;
            run.socket_inode = file_id(&path).map(|f| (f.dev, f.ino));
            run.socket = path;
        }
        Ok(())
    }

    /// Recreate every socket and register every resource again.
    pub fn restart_all(&mut self) -> Result<(), DaemonError> {
        self.kubelet_id = file_id(&self.opts.kubelet_socket());
        for name in self.resources() {
            self.restart_resource(&name)?;
        }
        Ok(())
    }

    /// Read the host and compute the pools of `config`, health judged against what is
    /// served now (see [`crate::health`]).
    pub fn scan(&self, config: &Config) -> Result<(Inventory, Pools), HcaError> {
        let host = Host::new(&self.opts.root);
        let inv = host.inventory()?;
        let vhost = host.root().join("dev/vhost-net").exists();
        let mut pools = Pools::compute(&inv, config, vhost);
        let before: BTreeMap<String, Arc<Resource>> = self
            .running
            .iter()
            .map(|(k, r)| (k.clone(), r.tx.borrow().clone()))
            .collect();
        let dir = self.opts.device_info_dir.as_deref();
        health::refine(&mut pools, &inv, &before, |r, id| {
            // a device-info file = allocated to a pod (its netdev may be in the pod)
            dir.is_none_or(|d| {
                d.join(crate::allocate::device_info_file(
                    &r.config.prefix,
                    &r.config.name,
                    id,
                ))
                .exists()
            })
        });
        Ok((inv, pools))
    }

    /// Re-read the host and apply `config` (a rescan, or a reload with a new config).
    pub fn rescan(&mut self, config: &Config) -> Result<(), DaemonError> {
        let (inv, pools) = self.scan(config)?;
        let snapshot = self.dra.is_some().then(|| pools.clone());
        self.apply(pools)?;
        if let Some(p) = snapshot {
            self.dra_rescanned(&inv, &p);
        }
        Ok(())
    }

    /// A kubelet restart was signalled: re-register everything if `kubelet.sock` is
    /// there and is not the one we registered with. Returns whether it did.
    pub fn on_kubelet_socket(&mut self) -> Result<bool, DaemonError> {
        if self.lifecycle.plugins_registry.is_some() {
            // the plugin watcher re-reads the registry dir, which kubelet does not wipe
            return Ok(false);
        }
        let now = file_id(&self.opts.kubelet_socket());
        if now.is_none() || now == self.kubelet_id {
            return Ok(false);
        }
        info!("kubelet.sock recreated: kubelet restarted; re-registering every resource");
        self.restart_all()?;
        Ok(true)
    }

    /// The safety poll: recreate sockets that vanished, and re-register when
    /// `kubelet.sock` was replaced without our noticing.
    pub fn check_sockets(&mut self) -> Result<(), DaemonError> {
        if self.on_kubelet_socket()? {
            return Ok(());
        }
        let kubelet_up =
            self.lifecycle.plugins_registry.is_some() || self.opts.kubelet_socket().exists();
        if !kubelet_up {
            return Ok(()); // nothing to register with; the new kubelet.sock will tell us
        }
        let missing: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| {
                r.server
                    .as_ref()
                    .is_none_or(|s| s.is_finished() || !r.socket.exists())
            })
            .map(|(k, _)| k.clone())
            .collect();
        for name in missing {
            warn!(resource = %name, "socket gone; serving and registering again");
            self.restart_resource(&name)?;
        }
        if let Some(p) = self.dra.as_mut().filter(|p| p.needs_restart()) {
            warn!(driver = %p.name(), "DRA socket gone; serving both again");
            p.restart()?;
        }
        Ok(())
    }

    /// Remove device-info files of our resources whose device no pod holds (per the
    /// pod-resources API), logging each removal and failure. Skipped (`None`) when there
    /// is no device-info dir or the pod-resources socket is absent or unanswering.
    pub async fn sweep_device_info(&self) -> Option<device_info_gc::Sweep> {
        let dir = self.opts.device_info_dir.as_ref()?;
        let socket = &self.opts.pod_resources_socket;
        if !socket.exists() {
            return None;
        }
        let allocated = match device_info_gc::list_allocated(socket).await {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "device-info sweep skipped");
                return None;
            }
        };
        let resources: Vec<(String, String)> = self
            .running
            .values()
            .map(|r| {
                let r = r.tx.borrow();
                (r.config.prefix.clone(), r.config.name.clone())
            })
            .collect();
        let s = device_info_gc::sweep(
            dir,
            &resources,
            &allocated,
            self.opts.device_info_gc_grace,
            std::time::SystemTime::now(),
        );
        for p in &s.removed {
            info!(path = %p.display(), "device-info file removed: device no longer allocated");
        }
        for (p, e) in &s.failed {
            warn!(path = %p.display(), error = %e, "device-info file not removed");
        }
        Some(s)
    }

    /// Stop every server and remove the sockets.
    pub async fn shutdown(mut self) {
        if let Some(feed) = self.slices.take() {
            let prepared = match &self.dra {
                Some(p) => p.driver().prepared().await.len(),
                None => 0,
            };
            if prepared > 0 {
                info!(
                    claims = prepared,
                    "DRA: claims still prepared: ResourceSlices stay"
                );
            }
            feed.shutdown(prepared > 0, SLICE_SHUTDOWN_TIMEOUT).await;
        }
        if let Some(p) = self.dra.take() {
            p.shutdown().await;
        }
        // all at once: each open ListAndWatch stream holds its server for the grace period
        let stops = std::mem::take(&mut self.running)
            .into_iter()
            .filter_map(|(name, mut r)| {
                if let Some(t) = r.register.take() {
                    t.abort();
                }
                r.server.take().map(|s| async move {
                    if let Err(e) = s.shutdown().await {
                        warn!(resource = %name, error = %e, "shutdown");
                    }
                    r.remove_socket();
                })
            });
        futures::future::join_all(stops).await;
    }
}

/// Why [`serve_linked`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeLinkedError {
    /// The hidden socket could not be served.
    #[error(transparent)]
    Serve(UnixError),
    /// It could not be linked into place.
    #[error("publish socket: {0}")]
    Publish(std::io::Error),
}

/// Serve `routes` on `path`: create the socket under a hidden name, listen, then link it
/// into place. Kubelet's plugin watcher dials a socket as soon as it appears (and skips
/// hidden ones), and the server's own cleanup then only ever removes the hidden name,
/// never a newer socket at `path` (see `Running::remove_socket`).
pub fn serve_linked(path: &Path, routes: Routes) -> Result<UnixServer, ServeLinkedError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hidden = path.with_file_name(format!(".{name}.tmp"));
    // Log lines about this socket's connections name where the kubelet dials it.
    let label = path.display().to_string();
    let server = UnixServer::spawn_labelled(&hidden, &label, routes, std::future::pending())
        .map_err(ServeLinkedError::Serve)?;
    let publish = || -> std::io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        std::fs::hard_link(&hidden, path)?;
        std::fs::remove_file(&hidden)
    };
    publish().map_err(ServeLinkedError::Publish)?;
    Ok(server)
}

fn stop(mut r: Running) {
    if let Some(t) = r.register.take() {
        t.abort();
    }
    if let Some(s) = r.server.take() {
        tokio::spawn(async move {
            let _ = s.shutdown().await;
            r.remove_socket();
        });
    }
}

/// Register `resource` (served on `socket`) with the kubelet at `kubelet`, retrying with
/// exponential backoff from `first` up to `max` until it succeeds. Never gives up: the
/// kubelet may simply not be up yet.
pub async fn register_with_backoff(
    kubelet: PathBuf,
    resource: String,
    socket: String,
    first: Duration,
    max: Duration,
) {
    let mut delay = first;
    let mut attempt = 1u32;
    let started = Instant::now();
    loop {
        match register_once(&kubelet, &resource, &socket).await {
            Ok(()) => {
                info!(resource = %resource, endpoint = %socket, attempt,
                      elapsed_ms = started.elapsed().as_millis() as u64, "registered with kubelet");
                return;
            }
            Err(e) => {
                warn!(resource = %resource, kubelet = %kubelet.display(), attempt, error = %e,
                      retry_in_ms = delay.as_millis() as u64, "register failed");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
        attempt = attempt.saturating_add(1);
    }
}

/// Why one `Register` call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The kubelet socket could not be reached.
    #[error(transparent)]
    Connect(#[from] UnixError),
    /// Kubelet answered with an error.
    #[error("kubelet refused: {0}")]
    Refused(#[from] tonic::Status),
}

/// One `Register` call.
pub async fn register_once(
    kubelet: &Path,
    resource: &str,
    socket: &str,
) -> Result<(), RegisterError> {
    let ch = connect_unix(kubelet).await?;
    let mut client = dp::registration_client::RegistrationClient::new(ch);
    client
        .register(dp::RegisterRequest {
            version: proto::VERSION.into(),
            endpoint: socket.into(),
            resource_name: resource.into(),
            options: Some(PluginService::options()),
        })
        .await?;
    Ok(())
}

/// Load the config, compute the pools, serve and register every resource, then run
/// until `shutdown` completes (then remove the sockets), with the default [`Lifecycle`].
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_with(opts, Lifecycle::default(), shutdown).await
}

fn log_config(config: &Config) {
    match &config.source {
        Some(f) => {
            info!(file = %f.display(), format = ?config.format, resources = config.resources.len(), "config loaded")
        }
        None => info!(
            resources = config.resources.len(),
            "no config file: embedded default"
        ),
    }
    for w in &config.warnings {
        warn!(file = ?config.source, key = %w.path, "config: {}", w.message);
    }
}

/// What one turn of the event loop has to do (events coalesced).
#[derive(Debug, Default)]
struct Todo {
    kubelet: bool,
    reload: bool,
    rescan: bool,
    safety: bool,
}

impl Todo {
    fn add(&mut self, ev: Event) {
        match ev {
            Event::KubeletRestarted => self.kubelet = true,
            Event::ConfigChanged => self.reload = true,
            Event::LinksChanged => self.rescan = true,
        }
    }
}

/// A ticker every `every` (none when zero), first tick after one period.
fn ticker(every: Duration) -> Option<tokio::time::Interval> {
    if every.is_zero() {
        return None;
    }
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Some(t)
}

async fn tick(t: &mut Option<tokio::time::Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// How long a clean stop waits for the API server to delete this node's ResourceSlices.
const SLICE_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest delay before recreating a refused registry socket.
const REGISTRY_RETRY_MAX: Duration = Duration::from_secs(30);

/// Config events come in bursts (truncate + write, ConfigMap's link swaps): let them
/// settle before reading the file.
const CONFIG_SETTLE: Duration = Duration::from_millis(50);

impl Daemon {
    /// Start the file and link watches feeding `tx`; failures are logged (the safety
    /// poll and the periodic rescan still run).
    fn watch(&self, tx: mpsc::Sender<Event>) -> Option<events::Watches> {
        let cfg = self
            .opts
            .config_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_FILE));
        let w = match events::watch_files(&self.opts.device_plugin_path, Some(&cfg), tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, "file watches unavailable: kubelet restarts and config edits are seen by the safety poll and SIGHUP only");
                None
            }
        };
        if let Err(e) = events::watch_links(tx) {
            warn!(error = %e, "no link events: device changes are seen by the periodic rescan only");
        }
        w
    }

    /// Reload the config: on success apply it and return it; on error keep the
    /// running one (logged with the file and field).
    fn reload(&mut self, running: &Config) -> Option<Config> {
        let new = match self.opts.load_config() {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "config reload failed: keeping the running config");
                return None;
            }
        };
        for w in &new.warnings {
            warn!(file = ?new.source, key = %w.path, "config: {}", w.message);
        }
        if let Err(e) = self.rescan(&new) {
            error!(error = %e, "applying the reloaded config failed");
            return None;
        }
        if &new != running {
            info!(resources = ?self.resources(), "config reloaded");
        }
        Some(new)
    }
}

/// What the DRA side talks to: where claims are read, and the ResourceSlice publisher
/// (none: no slices published).
pub struct DraBackends {
    /// Where ResourceClaims are read from.
    pub claims: Arc<dyn ClaimSource>,
    /// This node's ResourceSlice publisher.
    pub publisher: Option<Publisher>,
    /// Delays between failed slice syncs.
    pub backoff: Backoff,
}

/// [`run`] living by `lifecycle`: the event loop of the module docs. With
/// [`DaemonOptions::dra`], one API server client (its `kubeconfig`, else what kube
/// infers: `$KUBECONFIG`, `~/.kube/config`, in-cluster) reads the claims and publishes
/// the ResourceSlices of its `node_name` (required).
pub async fn run_with(
    opts: DaemonOptions,
    lifecycle: Lifecycle,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let backends = match &opts.dra {
        None => None,
        Some(d) => {
            let node = d
                .node_name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or(DaemonError::DraNodeName)?;
            let client = kube_client(d.kubeconfig.as_deref()).await?;
            let publisher = Publisher::new(client.clone(), node, d.driver.clone())?;
            Some(DraBackends {
                claims: Arc::new(KubeClaims::new(client)),
                publisher: Some(publisher),
                backoff: Backoff::default(),
            })
        }
    };
    run_with_dra(opts, lifecycle, backends, shutdown).await
}

/// [`run_with`] reading DRA claims from `claims`, publishing no ResourceSlices (used
/// when [`DaemonOptions::dra`] is set).
pub async fn run_with_claims(
    opts: DaemonOptions,
    lifecycle: Lifecycle,
    claims: Option<Arc<dyn ClaimSource>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let backends = claims.map(|claims| DraBackends {
        claims,
        publisher: None,
        backoff: Backoff::default(),
    });
    run_with_dra(opts, lifecycle, backends, shutdown).await
}

/// [`run_with`] with the DRA side talking to `dra` (used when [`DaemonOptions::dra`] is
/// set).
pub async fn run_with_dra(
    opts: DaemonOptions,
    lifecycle: Lifecycle,
    dra: Option<DraBackends>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let t0 = Instant::now();
    let mut config = opts.load_config()?;
    log_config(&config);
    let mut daemon = Daemon::with_lifecycle(opts, lifecycle)?;
    // watches before the first scan: nothing that changes after it goes unseen
    let (tx, mut events) = mpsc::channel(64);
    let _watches = daemon.watch(tx);
    let (inv, pools) = daemon.scan(&config)?;
    for r in &pools.resources {
        info!(resource = %r.full_name(), devices = r.advertised().len(), "resource");
    }
    let first = daemon.options().dra.is_some().then(|| pools.clone());
    daemon.apply(pools)?;
    if let (Some(dra), Some(b)) = (daemon.options().dra.clone(), dra) {
        daemon.start_dra(dra, b.claims)?;
        if let Some(p) = b.publisher {
            daemon.publish_slices(p, b.backoff);
        }
        if let Some(p) = &first {
            daemon.dra_rescanned(&inv, p);
        }
    }
    info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        plugins_registry = ?daemon.lifecycle().plugins_registry,
        "all resources served"
    );
    let mut outcomes = daemon.take_registration_outcomes();
    let (retry_tx, mut retries) = mpsc::unbounded_channel::<String>();
    let mut backoff: BTreeMap<String, Duration> = BTreeMap::new();
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "no SIGHUP handler: config reloads come from file events only");
            None
        }
    };
    let mut every = daemon.lifecycle().rescan_interval(&config);
    info!(
        rescan_interval_s = every.as_secs_f64(),
        "periodic rescan (0 = off)"
    );
    let mut rescan = ticker(every);
    let mut safety = ticker(daemon.lifecycle().safety_poll);
    let mut gc = match daemon.options().device_info_gc_interval {
        d if d.is_zero() => None,
        d => {
            // the first sweep right away, as before
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(t)
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let mut todo = Todo::default();
        tokio::select! {
            () = &mut shutdown => break,
            Some(ev) = events.recv() => todo.add(ev),
            Some(()) = recv_signal(&mut hup) => {
                info!("SIGHUP: reloading config");
                todo.reload = true;
            }
            () = tick(&mut rescan) => todo.rescan = true,
            () = tick(&mut safety) => todo.safety = true,
            () = tick(&mut gc) => {
                daemon.sweep_device_info().await;
            }
            Some(o) = recv_opt(&mut outcomes) => {
                let RegistrationOutcome { resource, error } = o;
                match error {
                    None => {
                        backoff.remove(&resource);
                    }
                    Some(e) => {
                        let d = backoff
                            .entry(resource.clone())
                            .or_insert(daemon.lifecycle().registry_retry);
                        let delay = *d;
                        *d = (*d * 2).min(REGISTRY_RETRY_MAX);
                        warn!(resource = %resource, error = %e, retry_in_ms = delay.as_millis() as u64,
                              "plugin watcher registration failed: recreating the socket");
                        let tx = retry_tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(resource);
                        });
                    }
                }
            }
            Some(name) = retries.recv() => {
                if let Err(e) = daemon.restart_resource(&name) {
                    error!(resource = %name, error = %e, "recreating the socket failed");
                }
            }
        }
        if todo.reload {
            tokio::time::sleep(CONFIG_SETTLE).await;
        }
        while let Ok(ev) = events.try_recv() {
            todo.add(ev);
        }
        if todo.kubelet
            && let Err(e) = daemon.on_kubelet_socket()
        {
            error!(error = %e, "re-registering after a kubelet restart failed; the safety poll retries");
        }
        if todo.reload {
            if let Some(new) = daemon.reload(&config) {
                config = new;
                let now = daemon.lifecycle().rescan_interval(&config);
                if now != every {
                    info!(
                        rescan_interval_s = now.as_secs_f64(),
                        "periodic rescan interval changed"
                    );
                    every = now;
                    rescan = ticker(every);
                }
            }
        } else if todo.rescan {
            debug!("rescan");
            if let Err(e) = daemon.rescan(&config) {
                error!(error = %e, "rescan failed: keeping the current device lists");
            }
        }
        if todo.safety
            && let Err(e) = daemon.check_sockets()
        {
            error!(error = %e, "safety poll: recreating sockets failed");
        }
    }
    info!("shutting down");
    daemon.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescan_interval_flag_then_config_then_default() {
        let mut cfg = Config::embedded();
        let mut lc = Lifecycle::default();
        assert_eq!(lc.rescan_interval(&cfg), DEFAULT_RESCAN_INTERVAL);
        cfg.periodic_update_interval = Some(Duration::from_secs(300));
        assert_eq!(lc.rescan_interval(&cfg), Duration::from_secs(300));
        cfg.periodic_update_interval = Some(Duration::ZERO);
        assert_eq!(lc.rescan_interval(&cfg), Duration::ZERO);
        lc.rescan_interval = Some(Duration::from_secs(1));
        assert_eq!(lc.rescan_interval(&cfg), Duration::from_secs(1));
        assert!(ticker(Duration::ZERO).is_none());
    }

    #[test]
    fn events_coalesce_into_one_turn() {
        let mut t = Todo::default();
        for e in [
            Event::LinksChanged,
            Event::LinksChanged,
            Event::KubeletRestarted,
        ] {
            t.add(e);
        }
        assert!(t.rescan && t.kubelet && !t.reload && !t.safety);
        t.add(Event::ConfigChanged);
        assert!(t.reload);
    }

    #[test]
    fn file_id_changes_when_a_socket_is_recreated() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("kubelet.sock");
        assert_eq!(file_id(&p), None);
        let l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        let a = file_id(&p).unwrap();
        assert_eq!(file_id(&p), Some(a));
        drop(l);
        std::fs::remove_file(&p).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert_ne!(file_id(&p), Some(a));
    }
}
