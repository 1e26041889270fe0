//! The daemon: one gRPC server per resource on its own socket in the device-plugin
//! directory, each registered with kubelet once it listens.
//!
//! [`Daemon::apply`] takes freshly computed [`Pools`] and reconciles: new resources get a
//! server and a registration, gone ones are stopped (socket removed), changed ones get
//! their new device list pushed into their watch channel (so every `ListAndWatch`
//! stream resends). Startup, a config reload and a rescan all go through it.
//! [`Daemon::restart_resource`] recreates one resource's socket and registration (after
//! a kubelet restart wiped the directory).

use crate::allocate::AllocateOptions;
use crate::cdi;
use crate::config::{Config, ConfigError};
use crate::device_info_gc;
use crate::pools::{Pools, Resource};
use crate::service::PluginService;
use proto::deviceplugin::v1beta1 as dp;
use proto::unix::{UnixError, UnixServer, connect_unix};
use rdma_hca::{HcaError, Host};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tracing::{info, warn};

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

struct Running {
    tx: watch::Sender<Arc<Resource>>,
    server: Option<UnixServer>,
    register: JoinHandle<()>,
}

/// The running daemon.
pub struct Daemon {
    opts: DaemonOptions,
    alloc: Arc<AllocateOptions>,
    running: BTreeMap<String, Running>,
}

impl Daemon {
    /// A daemon with nothing served yet.
    pub fn new(opts: DaemonOptions) -> Result<Daemon, DaemonError> {
        std::fs::create_dir_all(&opts.device_plugin_path).map_err(|source| {
            DaemonError::PluginDir {
                path: opts.device_plugin_path.clone(),
                source,
            }
        })?;
        let alloc = Arc::new(AllocateOptions {
            device_info_dir: opts.device_info_dir.clone(),
            cdi: opts.cdi_dir.is_some(),
        });
        Ok(Daemon {
            opts,
            alloc,
            running: BTreeMap::new(),
        })
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
        for name in gone {
            if let Some(r) = self.running.remove(&name) {
                info!(resource = %name, "resource removed");
                stop(r);
            }
        }
        for r in pools.resources {
            let name = r.full_name();
            self.side_files(&r);
            let r = Arc::new(r);
            if let Some(run) = self.running.get(&name) {
                let same =
                    run.tx.borrow().devices == r.devices && run.tx.borrow().config == r.config;
                if !same {
                    info!(resource = %name, devices = r.advertised().len(), "resource updated");
                    run.tx.send_replace(r);
                }
                continue;
            }
            let run = self.start(r)?;
            self.running.insert(name, run);
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
        let server = self.serve(&name, &socket, service)?;
        let register = self.spawn_register(name, socket);
        Ok(Running {
            tx,
            server: Some(server),
            register,
        })
    }

    fn serve(
        &self,
        name: &str,
        socket: &str,
        service: PluginService,
    ) -> Result<UnixServer, DaemonError> {
        let path = self.opts.device_plugin_path.join(socket);
        let routes = Routes::new(dp::device_plugin_server::DevicePluginServer::new(service));
        let server = UnixServer::spawn(&path, routes).map_err(|source| DaemonError::Serve {
            resource: name.to_string(),
            source,
        })?;
        info!(resource = %name, socket = %path.display(), "serving");
        Ok(server)
    }

    fn spawn_register(&self, name: String, socket: String) -> JoinHandle<()> {
        let kubelet = self.opts.kubelet_socket();
        let (first, max) = (self.opts.register_backoff, self.opts.register_backoff_max);
        tokio::spawn(register_with_backoff(kubelet, name, socket, first, max))
    }

    /// Recreate the socket of `name` and register it again (kubelet restarted).
    pub fn restart_resource(&mut self, name: &str) -> Result<(), DaemonError> {
        let Some(run) = self.running.get_mut(name) else {
            return Ok(());
        };
        run.register.abort();
        if let Some(s) = run.server.take() {
            drop(s); // aborts the task; the new bind replaces the file
        }
        let r = run.tx.borrow().clone();
        let service = PluginService::new(run.tx.subscribe(), self.alloc.clone());
        let socket = r.socket_name();
        let server = self.serve(name, &socket, service)?;
        let register = self.spawn_register(name.to_string(), socket);
        if let Some(run) = self.running.get_mut(name) {
            run.server = Some(server);
            run.register = register;
        }
        Ok(())
    }

    /// Recreate every socket and register every resource again.
    pub fn restart_all(&mut self) -> Result<(), DaemonError> {
        for name in self.resources() {
            self.restart_resource(&name)?;
        }
        Ok(())
    }

    /// Re-read the host and apply `config` (a rescan, or a reload with a new config).
    pub fn rescan(&mut self, config: &Config) -> Result<(), DaemonError> {
        let pools = self.opts.compute(config)?;
        self.apply(pools)
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
        // all at once: each open ListAndWatch stream holds its server for the grace period
        let stops = std::mem::take(&mut self.running)
            .into_iter()
            .filter_map(|(name, mut r)| {
                r.register.abort();
                r.server.take().map(|s| async move {
                    if let Err(e) = s.shutdown().await {
                        warn!(resource = %name, error = %e, "shutdown");
                    }
                })
            });
        futures::future::join_all(stops).await;
    }
}

fn stop(mut r: Running) {
    r.register.abort();
    if let Some(s) = r.server.take() {
        tokio::spawn(async move {
            let _ = s.shutdown().await;
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
/// until `shutdown` completes (then remove the sockets).
pub async fn run(
    opts: DaemonOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let t0 = Instant::now();
    let config = opts.load_config()?;
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
    let pools = opts.compute(&config)?;
    for r in &pools.resources {
        info!(resource = %r.full_name(), devices = r.advertised().len(), "resource");
    }
    let mut daemon = Daemon::new(opts)?;
    daemon.apply(pools)?;
    info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "all resources served"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    let every = daemon.options().device_info_gc_interval;
    if every.is_zero() {
        shutdown.await;
    } else {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {
                    daemon.sweep_device_info().await;
                }
            }
        }
    }
    info!("shutting down");
    daemon.shutdown().await;
    Ok(())
}
