//! The fake kubelet: device-plugin registration, the kubelet's calls into plugins, pod
//! admission, and restarts.
//!
//! It follows the kubelet's device manager where a plugin can tell the difference:
//! `Register` checks the version and the resource name, dials the plugin's endpoint and
//! calls `GetDevicePluginOptions` *before* answering (so a plugin that only serves after
//! `Register` returns hangs here as it would on a node), then runs `ListAndWatch` in the
//! background. A restart stops the server, removes every file in the directory (kubelet
//! keeps only its checkpoint and subdirectories) and listens on a new `kubelet.sock`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use proto::deviceplugin::v1beta1::{
    self as dp, ContainerAllocateResponse, Device, DevicePluginOptions, RegisterRequest,
    device_plugin_client::DevicePluginClient,
    registration_server::{Registration as RegistrationApi, RegistrationServer},
};
use proto::unix::{UnixServer, connect_unix_timeout};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Channel;

use crate::pods::{ContainerAllocation, PodAllocation, PodSpec, ResourceAllocation};
use crate::{SimError, plugin_watcher};

/// How long the simulator waits to connect to a plugin socket (kubelet: 10 s).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the simulator waits for any single unary call to a plugin.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping registration server may finish in-flight calls.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How a plugin came to be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisteredVia {
    /// It called `Register` on `kubelet.sock`.
    Register,
    /// The plugin watcher found its socket in `plugins_registry` (`GetInfo`).
    PluginWatcher,
}

/// One registration request as received, successful or not.
#[derive(Debug, Clone)]
pub struct RegisterAttempt {
    /// The request (for the plugin-watcher path: built from `PluginInfo`).
    pub request: RegisterRequest,
    /// How it arrived.
    pub via: RegisteredVia,
    /// The kubelet epoch (1 at start, +1 per restart) it arrived in.
    pub epoch: u64,
    /// When it was answered.
    pub at: Instant,
    /// Why it was refused, or `None` when accepted.
    pub error: Option<String>,
}

/// A successful registration: the plugin is connected and its `ListAndWatch` runs.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The resource name.
    pub resource: String,
    /// The plugin socket the simulator connected to.
    pub endpoint: PathBuf,
    /// The request as received (see [`RegisterAttempt::request`]).
    pub request: RegisterRequest,
    /// What `GetDevicePluginOptions` answered (the kubelet uses this, not the request's).
    pub options: DevicePluginOptions,
    /// How it arrived.
    pub via: RegisteredVia,
    /// The kubelet epoch it belongs to.
    pub epoch: u64,
    /// Unique number of this registration (each re-registration gets a new one).
    pub seq: u64,
    /// When it was accepted.
    pub at: Instant,
    /// Time from the creation of this epoch's `kubelet.sock` to acceptance.
    pub since_socket: Duration,
}

/// The latest `ListAndWatch` state of one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceList {
    /// The devices of the latest message (empty before the first).
    pub devices: Vec<Device>,
    /// Messages received on the current registration's stream.
    pub updates: u64,
    /// The [`Registration::seq`] whose stream feeds this list.
    pub seq: u64,
    /// Whether the stream is still open.
    pub open: bool,
    /// How the stream ended, when it ended with an error.
    pub error: Option<String>,
}

impl DeviceList {
    /// Devices whose health is `Healthy`.
    pub fn healthy(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(|d| d.health == proto::HEALTHY)
    }

    /// Number of healthy devices.
    pub fn healthy_count(&self) -> usize {
        self.healthy().count()
    }

    /// The device with `id`, if listed.
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }
}

/// Everything the simulator has seen, as published to waiters.
#[derive(Debug, Clone, Default)]
pub struct SimState {
    /// 1 after start, +1 per restart.
    pub epoch: u64,
    /// When this epoch's `kubelet.sock` was created; `None` while stopped.
    pub socket_created_at: Option<Instant>,
    /// Every registration request ever received, in order.
    pub attempts: Vec<RegisterAttempt>,
    /// Every successful registration ever, in order.
    pub registrations: Vec<Registration>,
    /// The registration in force per resource in the current epoch.
    pub active: BTreeMap<String, Registration>,
    /// The device list per active resource.
    pub devices: BTreeMap<String, DeviceList>,
    /// Admitted pods (kept across restarts, as kubelet's checkpoint keeps them).
    pub pods: Vec<PodAllocation>,
}

impl SimState {
    /// Device IDs of `resource` held by admitted pods.
    pub fn allocated(&self, resource: &str) -> BTreeSet<String> {
        self.pods
            .iter()
            .flat_map(|p| p.device_ids(resource))
            .collect()
    }
}

/// A connected plugin.
struct PluginConn {
    client: DevicePluginClient<Channel>,
    list_and_watch: JoinHandle<()>,
}

pub(crate) struct Inner {
    dir: PathBuf,
    state: watch::Sender<SimState>,
    plugins: Mutex<BTreeMap<String, PluginConn>>,
    reject: Mutex<Option<String>>,
    seq: AtomicU64,
    /// Admissions run one at a time, as the kubelet's do, so two pods never get one device.
    admit: tokio::sync::Mutex<()>,
    /// The plugins_registry directory watched, kept across restarts.
    registry_dir: Mutex<Option<PathBuf>>,
    /// The running watch of it (none while the kubelet is down).
    registry: Mutex<Option<plugin_watcher::Watch>>,
}

/// Locks a std mutex, carrying on with the data if a panicking test thread poisoned it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The in-process fake kubelet. See the [crate docs](crate).
///
/// All methods take `&self`; share it between tasks with an `Arc`. Dropping it stops the
/// server and every background task.
pub struct KubeletSim {
    inner: Arc<Inner>,
    server: tokio::sync::Mutex<Option<UnixServer>>,
}

impl std::fmt::Debug for KubeletSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletSim")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl KubeletSim {
    /// Starts the simulator in the device-plugin directory `dir` (created if missing):
    /// wipes its files as kubelet does, and serves `Registration` on `<dir>/kubelet.sock`,
    /// which is listening when this returns.
    pub async fn start(dir: impl AsRef<Path>) -> Result<Self, SimError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| SimError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let (state, _) = watch::channel(SimState::default());
        let sim = Self {
            inner: Arc::new(Inner {
                dir,
                state,
                plugins: Mutex::new(BTreeMap::new()),
                reject: Mutex::new(None),
                seq: AtomicU64::new(0),
                admit: tokio::sync::Mutex::new(()),
                registry_dir: Mutex::new(None),
                registry: Mutex::new(None),
            }),
            server: tokio::sync::Mutex::new(None),
        };
        sim.start_server().await?;
        Ok(sim)
    }

    /// The device-plugin directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// `<dir>/kubelet.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.inner.dir.join(proto::KUBELET_SOCKET_NAME)
    }

    /// A snapshot of everything seen so far.
    pub fn state(&self) -> SimState {
        self.inner.state.borrow().clone()
    }

    /// A receiver of every state change, for waits the helpers here do not cover.
    pub fn subscribe(&self) -> watch::Receiver<SimState> {
        self.inner.state.subscribe()
    }

    /// The current kubelet epoch (1 after start, +1 per restart).
    pub fn epoch(&self) -> u64 {
        self.inner.state.borrow().epoch
    }

    /// Every registration request received so far.
    pub fn attempts(&self) -> Vec<RegisterAttempt> {
        self.inner.state.borrow().attempts.clone()
    }

    /// Every successful registration so far, all epochs.
    pub fn registrations(&self) -> Vec<Registration> {
        self.inner.state.borrow().registrations.clone()
    }

    /// The latest device list of `resource`, if it is registered.
    pub fn devices(&self, resource: &str) -> Option<DeviceList> {
        self.inner.state.borrow().devices.get(resource).cloned()
    }

    /// Makes `Register` refuse every request with `reason` (a kubelet that is not ready),
    /// or accept again with `None`. Refused requests are still recorded.
    pub fn set_reject_registrations(&self, reason: Option<String>) {
        *lock(&self.inner.reject) = reason;
    }

    /// Waits until `f` returns `Some` for the state, at most `timeout`; `what` names the
    /// event in the timeout error.
    pub async fn wait_for<T>(
        &self,
        what: impl Into<String>,
        timeout: Duration,
        f: impl FnMut(&SimState) -> Option<T>,
    ) -> Result<T, SimError> {
        wait_state(&self.inner.state, what.into(), timeout, f).await
    }

    /// Waits until `resource` is registered in the current epoch.
    pub async fn wait_registered(
        &self,
        resource: &str,
        timeout: Duration,
    ) -> Result<Registration, SimError> {
        self.wait_for(format!("{resource} to register"), timeout, |s| {
            s.active.get(resource).cloned()
        })
        .await
    }

    /// Waits until every one of `resources` is registered in the current epoch.
    pub async fn wait_all_registered(
        &self,
        resources: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Registration>, SimError> {
        let what = format!("{} to register", resources.join(", "));
        self.wait_for(what, timeout, |s| {
            resources
                .iter()
                .map(|r| s.active.get(*r).cloned())
                .collect::<Option<Vec<_>>>()
        })
        .await
    }

    /// Waits until `resource` registers anew: a registration with a `seq` above `after`
    /// (e.g. a plugin restarting while the kubelet stays up).
    pub async fn wait_reregistered(
        &self,
        resource: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<Registration, SimError> {
        self.wait_for(format!("{resource} to register again"), timeout, |s| {
            s.active.get(resource).filter(|r| r.seq > after).cloned()
        })
        .await
    }

    /// Waits until `resource`'s stream has delivered a list and `pred` holds for it.
    pub async fn wait_devices(
        &self,
        resource: &str,
        timeout: Duration,
        mut pred: impl FnMut(&[Device]) -> bool,
    ) -> Result<DeviceList, SimError> {
        self.wait_for(format!("device list of {resource}"), timeout, |s| {
            s.devices
                .get(resource)
                .filter(|l| l.updates > 0 && pred(&l.devices))
                .cloned()
        })
        .await
    }

    /// Waits until `resource` lists exactly `count` healthy devices.
    pub async fn wait_healthy_count(
        &self,
        resource: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<DeviceList, SimError> {
        self.wait_for(
            format!("{resource} to list {count} healthy devices"),
            timeout,
            |s| {
                s.devices
                    .get(resource)
                    .filter(|l| l.updates > 0 && l.healthy_count() == count)
                    .cloned()
            },
        )
        .await
    }

    /// Waits until each of `resources` has registered in the current epoch and returns,
    /// per resource, the time from the creation of this epoch's `kubelet.sock` to its
    /// registration: the re-registration time after [`KubeletSim::restart`].
    pub async fn reregistration_times(
        &self,
        resources: &[&str],
        timeout: Duration,
    ) -> Result<BTreeMap<String, Duration>, SimError> {
        Ok(self
            .wait_all_registered(resources, timeout)
            .await?
            .into_iter()
            .map(|r| (r.resource, r.since_socket))
            .collect())
    }

    /// Simulates a kubelet restart: [`KubeletSim::stop`], then remove every file in the
    /// directory (plugin sockets included; subdirectories stay, as kubelet leaves them),
    /// then listen on a new `kubelet.sock`. Registered resources are forgotten until they
    /// register again; admitted pods are kept. Returns the new epoch.
    pub async fn restart(&self) -> Result<u64, SimError> {
        self.stop().await?;
        self.start_server().await?;
        Ok(self.epoch())
    }

    /// Simulates the kubelet going down: the registration server stops (its socket file
    /// is removed), connections to plugins close, registrations are forgotten.
    pub async fn stop(&self) -> Result<(), SimError> {
        let server = self.server.lock().await.take();
        // A stopped kubelet watches nothing.
        drop(lock(&self.inner.registry).take());
        let result = match server {
            Some(s) => s.shutdown_within(SHUTDOWN_GRACE).await,
            None => Ok(()),
        };
        let conns = std::mem::take(&mut *lock(&self.inner.plugins));
        for conn in conns.values() {
            conn.list_and_watch.abort();
        }
        self.inner.state.send_modify(|s| {
            s.socket_created_at = None;
            s.active.clear();
            s.devices.clear();
        });
        Ok(result?)
    }

    /// Removes the directory's files and listens on a new `kubelet.sock`.
    async fn start_server(&self) -> Result<(), SimError> {
        let mut server = self.server.lock().await;
        wipe_dir(&self.inner.dir)?;
        // Taken just before bind creates the file, so measured times are never short.
        let created = Instant::now();
        self.inner.state.send_modify(|s| {
            s.epoch += 1;
            s.socket_created_at = Some(created);
        });
        let routes = Routes::new(RegistrationServer::new(RegistrationService {
            inner: Arc::downgrade(&self.inner),
        }));
        match UnixServer::spawn(self.socket_path(), routes) {
            Ok(s) => *server = Some(s),
            Err(e) => {
                self.inner.state.send_modify(|s| s.socket_created_at = None);
                return Err(e.into());
            }
        }
        drop(server);
        let registry = lock(&self.inner.registry_dir).clone();
        if let Some(dir) = registry {
            // The kubelet's plugin watcher re-reads the registry directory on start.
            self.watch_plugins_registry(&dir)?;
        }
        Ok(())
    }

    /// Stops everything; as dropping, but waits for the server to finish.
    pub async fn shutdown(self) -> Result<(), SimError> {
        *lock(&self.inner.registry_dir) = None;
        self.stop().await
    }

    /// A client of the plugin registered for `resource`.
    pub fn client(&self, resource: &str) -> Result<DevicePluginClient<Channel>, SimError> {
        lock(&self.inner.plugins)
            .get(resource)
            .map(|c| c.client.clone())
            .ok_or_else(|| SimError::NotRegistered {
                resource: resource.to_string(),
            })
    }

    /// Calls `GetDevicePluginOptions` on `resource`'s plugin.
    pub async fn options(&self, resource: &str) -> Result<DevicePluginOptions, SimError> {
        let mut c = self.client(resource)?;
        call(
            "GetDevicePluginOptions",
            resource,
            c.get_device_plugin_options(dp::Empty {}),
        )
        .await
    }

    /// Calls `GetPreferredAllocation` for one container and returns its device IDs.
    pub async fn preferred_allocation(
        &self,
        resource: &str,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Result<Vec<String>, SimError> {
        let mut c = self.client(resource)?;
        let req = dp::PreferredAllocationRequest {
            container_requests: vec![dp::ContainerPreferredAllocationRequest {
                available_device_i_ds: available.to_vec(),
                must_include_device_i_ds: must_include.to_vec(),
                allocation_size: i32::try_from(size).unwrap_or(i32::MAX),
            }],
        };
        let resp = call(
            "GetPreferredAllocation",
            resource,
            c.get_preferred_allocation(req),
        )
        .await?;
        match <[_; 1]>::try_from(resp.container_responses) {
            Ok([one]) => Ok(one.device_i_ds),
            Err(v) => Err(SimError::BadAnswer {
                target: resource.to_string(),
                reason: format!(
                    "GetPreferredAllocation answered {} container responses for 1 request",
                    v.len()
                ),
            }),
        }
    }

    /// Calls `Allocate` for one container with `ids` and returns its response.
    pub async fn allocate(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<ContainerAllocateResponse, SimError> {
        let req = dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: ids.to_vec(),
            }],
        };
        let resp = self.allocate_request(resource, req).await?;
        match <[_; 1]>::try_from(resp.container_responses) {
            Ok([one]) => Ok(one),
            Err(v) => Err(SimError::BadAnswer {
                target: resource.to_string(),
                reason: format!(
                    "Allocate answered {} container responses for 1 request",
                    v.len()
                ),
            }),
        }
    }

    /// Calls `Allocate` with a whole request.
    pub async fn allocate_request(
        &self,
        resource: &str,
        req: dp::AllocateRequest,
    ) -> Result<dp::AllocateResponse, SimError> {
        let mut c = self.client(resource)?;
        call("Allocate", resource, c.allocate(req)).await
    }

    /// Calls `PreStartContainer` with `ids`.
    pub async fn pre_start_container(
        &self,
        resource: &str,
        ids: &[String],
    ) -> Result<(), SimError> {
        let mut c = self.client(resource)?;
        let req = dp::PreStartContainerRequest {
            devices_ids: ids.to_vec(),
        };
        call("PreStartContainer", resource, c.pre_start_container(req)).await?;
        Ok(())
    }

    /// Admits a pod as the kubelet's device manager does, container by container and
    /// resource by resource: the free devices are the listed healthy ones no admitted pod
    /// holds; when the plugin offers it, `GetPreferredAllocation` picks among them (its
    /// answer is used where valid and topped up in ID order, as kubelet does); then
    /// `Allocate` for that container, and `PreStartContainer` when the plugin asked for
    /// it. The pod is recorded (and shows in pod-resources) only if every step succeeds.
    pub async fn admit_pod(&self, pod: &PodSpec) -> Result<PodAllocation, SimError> {
        let _one_at_a_time = self.inner.admit.lock().await;
        let key = pod.key();
        let state = self.state();
        if state.pods.iter().any(|p| p.key() == key) {
            return Err(SimError::PodExists { pod: key });
        }
        let mut taken: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut out = PodAllocation {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            containers: Vec::new(),
        };
        for c in &pod.containers {
            let mut ca = ContainerAllocation {
                name: c.name.clone(),
                resources: BTreeMap::new(),
            };
            for (resource, &wanted) in &c.limits {
                let reg = state
                    .active
                    .get(resource)
                    .ok_or_else(|| SimError::NotRegistered {
                        resource: resource.clone(),
                    })?;
                let taken_here = taken
                    .entry(resource.clone())
                    .or_insert_with(|| state.allocated(resource));
                let mut free: Vec<String> = state
                    .devices
                    .get(resource)
                    .map(|l| {
                        l.healthy()
                            .map(|d| d.id.clone())
                            .filter(|id| !taken_here.contains(id))
                            .collect()
                    })
                    .unwrap_or_default();
                free.sort();
                if free.len() < wanted {
                    return Err(SimError::NotEnoughDevices {
                        pod: key,
                        container: c.name.clone(),
                        resource: resource.clone(),
                        wanted,
                        free: free.len(),
                    });
                }
                let preferred = if reg.options.get_preferred_allocation_available {
                    Some(
                        self.preferred_allocation(resource, &free, &[], wanted)
                            .await?,
                    )
                } else {
                    None
                };
                let ids = choose(&free, preferred.as_deref(), wanted);
                let response = self.allocate(resource, &ids).await?;
                if reg.options.pre_start_required {
                    self.pre_start_container(resource, &ids).await?;
                }
                taken_here.extend(ids.iter().cloned());
                ca.resources.insert(
                    resource.clone(),
                    ResourceAllocation {
                        device_ids: ids,
                        preferred,
                        response,
                    },
                );
            }
            out.containers.push(ca);
        }
        self.inner.state.send_modify(|s| s.pods.push(out.clone()));
        Ok(out)
    }

    /// Forgets an admitted pod, freeing its devices (kubelet does not tell the plugin).
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Option<PodAllocation> {
        let mut removed = None;
        self.inner.state.send_if_modified(|s| {
            let at = s
                .pods
                .iter()
                .position(|p| p.namespace == namespace && p.name == name);
            removed = at.map(|i| s.pods.remove(i));
            removed.is_some()
        });
        removed
    }

    /// The admitted pods.
    pub fn pods(&self) -> Vec<PodAllocation> {
        self.inner.state.borrow().pods.clone()
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Drop for KubeletSim {
    fn drop(&mut self) {
        for conn in lock(&self.inner.plugins).values() {
            conn.list_and_watch.abort();
        }
        *lock(&self.inner.registry) = None;
    }
}

/// Picks `wanted` of `free`: the preferred IDs that are free (once each), then the rest
/// in order.
fn choose(free: &[String], preferred: Option<&[String]>, wanted: usize) -> Vec<String> {
    let mut ids: Vec<String> = Vec::with_capacity(wanted);
    for id in preferred.unwrap_or_default().iter().chain(free) {
        if ids.len() == wanted {
            break;
        }
        if free.contains(id) && !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    ids
}

/// Removes every non-directory entry of `dir`, as the kubelet's device manager does on
/// start (it keeps its checkpoint file, which the simulator does not write).
fn wipe_dir(dir: &Path) -> Result<(), SimError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| SimError::Io { op, path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io("read dir", dir))? {
        let entry = entry.map_err(io("read dir", dir))?;
        let path = entry.path();
        let is_dir = entry
            .file_type()
            .map(|t| t.is_dir())
            .map_err(io("stat", &path))?;
        if is_dir {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(SimError::Io {
                    op: "remove",
                    path,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Runs a unary call with [`RPC_TIMEOUT`].
pub(crate) async fn call<T>(
    rpc: &'static str,
    target: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, SimError> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(SimError::Rpc {
            rpc,
            target: target.to_string(),
            status,
        }),
        Err(_) => Err(SimError::Timeout {
            what: format!("{rpc} on {target}"),
            timeout: RPC_TIMEOUT,
        }),
    }
}

pub(crate) async fn wait_state<T>(
    state: &watch::Sender<SimState>,
    what: String,
    timeout: Duration,
    mut f: impl FnMut(&SimState) -> Option<T>,
) -> Result<T, SimError> {
    let mut rx = state.subscribe();
    let wait = async {
        loop {
            if let Some(t) = f(&rx.borrow_and_update()) {
                return Ok(t);
            }
            if rx.changed().await.is_err() {
                return Err(SimError::Stopped);
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| SimError::Timeout { what, timeout })?
}

/// Kubelet's check of an extended resource name (`v1helper.IsExtendedResourceName`):
/// `<domain>/<name>`, not in the `kubernetes.io` domain, `name` a qualified-name part.
pub fn check_resource_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid extended resource name {name:?}: {why}"));
    let Some((domain, local)) = name.split_once('/') else {
        return bad("no domain prefix (want <domain>/<name>)");
    };
    if domain.is_empty() || domain.len() > 253 {
        return bad("domain must be 1-253 characters");
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return bad("the kubernetes.io domain is for native resources");
    }
    let dns_label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !domain.split('.').all(dns_label_ok) {
        return bad("domain must be a lowercase DNS subdomain");
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if local.is_empty()
        || local.len() > 63
        || !alnum(local.chars().next())
        || !alnum(local.chars().last())
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad("name must be 1-63 of [A-Za-z0-9-_.], starting and ending alphanumeric");
    }
    Ok(())
}

/// Checks the version, connects to the plugin and starts its `ListAndWatch`; records the
/// attempt either way.
pub(crate) async fn connect_plugin(
    inner: &Arc<Inner>,
    request: RegisterRequest,
    endpoint: PathBuf,
    via: RegisteredVia,
) -> Result<Registration, SimError> {
    let result = connect_plugin_inner(inner, &request, endpoint, via).await;
    let error = result.as_ref().err().map(ToString::to_string);
    inner.state.send_modify(|s| {
        s.attempts.push(RegisterAttempt {
            request,
            via,
            epoch: s.epoch,
            at: Instant::now(),
            error,
        });
    });
    result
}

async fn connect_plugin_inner(
    inner: &Arc<Inner>,
    request: &RegisterRequest,
    endpoint: PathBuf,
    via: RegisteredVia,
) -> Result<Registration, SimError> {
    let resource = request.resource_name.clone();
    let refuse = |reason: String| SimError::BadAnswer {
        target: resource.clone(),
        reason,
    };
    if let Some(reason) = lock(&inner.reject).clone() {
        return Err(refuse(reason));
    }
    if !proto::SUPPORTED_VERSIONS.contains(&request.version.as_str()) {
        return Err(refuse(format!(
            "requested device plugin API version {:?} is not supported by kubelet (supported: {:?})",
            request.version,
            proto::SUPPORTED_VERSIONS
        )));
    }
    check_resource_name(&resource).map_err(refuse)?;

    let channel = connect_unix_timeout(&endpoint, DIAL_TIMEOUT).await?;
    let mut client = DevicePluginClient::new(channel);
    // Kubelet asks for the options inside Register, before answering it.
    let options = call(
        "GetDevicePluginOptions",
        &resource,
        client.get_device_plugin_options(dp::Empty {}),
    )
    .await?;

    let seq = inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let now = Instant::now();
    let mut registration = None;
    inner.state.send_modify(|s| {
        let reg = Registration {
            resource: resource.clone(),
            endpoint: endpoint.clone(),
            request: request.clone(),
            options,
            via,
            epoch: s.epoch,
            seq,
            at: now,
            since_socket: s
                .socket_created_at
                .map(|t| now.saturating_duration_since(t))
                .unwrap_or_default(),
        };
        s.registrations.push(reg.clone());
        s.active.insert(resource.clone(), reg.clone());
        // Before the stream starts, so its first message is never overwritten.
        s.devices.insert(
            resource.clone(),
            DeviceList {
                seq,
                open: true,
                ..DeviceList::default()
            },
        );
        registration = Some(reg);
    });
    let task = tokio::spawn(list_and_watch(
        Arc::downgrade(inner),
        client.clone(),
        resource.clone(),
        seq,
    ));
    let old = lock(&inner.plugins).insert(
        resource.clone(),
        PluginConn {
            client,
            list_and_watch: task,
        },
    );
    if let Some(old) = old {
        old.list_and_watch.abort();
    }
    registration.ok_or(SimError::Stopped)
}

/// Follows one plugin's `ListAndWatch` stream into the state until it ends.
async fn list_and_watch(
    inner: Weak<Inner>,
    mut client: DevicePluginClient<Channel>,
    resource: String,
    seq: u64,
) {
    let update = |f: &mut dyn FnMut(&mut DeviceList)| {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner
            .state
            .send_if_modified(|s| match s.devices.get_mut(&resource) {
                Some(list) if list.seq == seq => {
                    f(list);
                    true
                }
                _ => false,
            });
    };
    let mut stream = match client.list_and_watch(dp::Empty {}).await {
        Ok(resp) => resp.into_inner(),
        Err(status) => {
            update(&mut |l| {
                l.open = false;
                l.error = Some(status.to_string());
            });
            return;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                let mut msg = Some(msg);
                update(&mut |l| {
                    if let Some(m) = msg.take() {
                        l.devices = m.devices;
                    }
                    l.updates += 1;
                });
            }
            Ok(None) => {
                update(&mut |l| l.open = false);
                return;
            }
            Err(status) => {
                update(&mut |l| {
                    l.open = false;
                    l.error = Some(status.to_string());
                });
                return;
            }
        }
    }
}

/// The kubelet's `v1beta1.Registration` service.
struct RegistrationService {
    inner: Weak<Inner>,
}

#[tonic::async_trait]
impl RegistrationApi for RegistrationService {
    async fn register(
        &self,
        req: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<dp::Empty>, tonic::Status> {
        let inner = self
            .inner
            .upgrade()
            .ok_or_else(|| tonic::Status::unavailable("kubelet simulator stopped"))?;
        let request = req.into_inner();
        // PATH = path.Join(DevicePluginPath, endpoint), as the kubelet builds it.
        let endpoint = inner.dir.join(&request.endpoint);
        match connect_plugin(&inner, request, endpoint, RegisteredVia::Register).await {
            Ok(_) => Ok(tonic::Response::new(dp::Empty {})),
            // Kubelet answers with a plain Go error, which gRPC sends as Unknown.
            Err(e) => Err(tonic::Status::unknown(e.to_string())),
        }
    }
}

impl Inner {
    pub(crate) fn state(&self) -> &watch::Sender<SimState> {
        &self.state
    }

    pub(crate) fn registry(&self) -> &Mutex<Option<plugin_watcher::Watch>> {
        &self.registry
    }

    pub(crate) fn registry_dir(&self) -> &Mutex<Option<PathBuf>> {
        &self.registry_dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_as_kubelet_checks_them() {
        for ok in [
            "rdma/hca",
            "intel.com/cx_vf",
            "nvidia.com/gpu",
            "a.b-c/x.y_z-1",
        ] {
            assert_eq!(check_resource_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "hca",
            "/hca",
            "rdma/",
            "kubernetes.io/foo",
            "x.kubernetes.io/foo",
            "Rdma/hca",
            "rdma/-hca",
            "rdma/hca/x",
            "rdma/hca_",
        ] {
            assert!(check_resource_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn choose_uses_valid_preferred_then_fills_in_order() {
        let free: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let pref: Vec<String> = ["c", "zz", "c"].map(String::from).to_vec();
        assert_eq!(choose(&free, Some(&pref), 3), ["c", "a", "b"]);
        assert_eq!(choose(&free, None, 2), ["a", "b"]);
    }

    #[test]
    fn wipe_keeps_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plugin.sock"), b"").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        wipe_dir(dir.path()).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["sub"]);
    }
}
