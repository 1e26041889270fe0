//! Keeping this node's ResourceSlices on the API server equal to what the pools offer.
//!
//! Wiring (the daemon): make one [`Publisher`] at start, call [`Publisher::sync`] after
//! every rescan and health change with [`super::slices::node_devices`] of the refined
//! pools (cheap when nothing changed: one list, no writes), and
//! [`Publisher::shutdown`] on a clean stop with whether any claim is still prepared.
//!
//! ```no_run
//! # async fn wire(client: kube::Client, src: device_plugin::dra::slices::SliceSource<'_>)
//! # -> Result<(), device_plugin::dra::publish::PublishError> {
//! use device_plugin::dra::{publish::Publisher, slices::node_devices};
//! let mut p = Publisher::new(client, "node-1", "sriov.rdma.example.org")?;
//! p.sync(&node_devices(&src, p.driver())).await?; // on every rescan / health change
//! p.shutdown(false).await?; // no claim prepared: the slices go
//! # Ok(()) }
//! ```
//!
//! A sync lists the slices by `fieldSelector=spec.nodeName=<node>,spec.driver=<driver>`
//! (both are field selectors the real API server supports for ResourceSlices), compares
//! them with the desired ones, and when anything differs rewrites the pool at the next
//! generation: updates (PUT with the listed resourceVersion) the slices that exist,
//! creates the missing ones, then deletes the extra ones. A conflict (someone else wrote
//! in between) re-lists and tries once more.

use super::slices::{SliceError, build_slices, check_names};
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use std::collections::BTreeMap;

/// A failed API call, naming the operation and the slice.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The API server refused or could not be reached.
    #[error("{op} ResourceSlice {slice}: {source}")]
    Api {
        /// `list`, `create`, `update` or `delete`.
        op: &'static str,
        /// The slice name (or the field selector for a list).
        slice: String,
        /// What kube reported.
        #[source]
        source: kube::Error,
    },
    /// The node or driver name cannot make valid slices.
    #[error(transparent)]
    Name(#[from] SliceError),
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The pool generation now published.
    pub generation: i64,
    /// Slices in the pool.
    pub slices: usize,
    /// Devices in the pool.
    pub devices: usize,
    /// Slices created.
    pub created: usize,
    /// Slices updated.
    pub updated: usize,
    /// Slices deleted.
    pub deleted: usize,
}

impl SyncReport {
    /// Whether the sync wrote nothing.
    pub fn unchanged(&self) -> bool {
        self.created + self.updated + self.deleted == 0
    }
}

/// Publishes the ResourceSlices of one node's pool for one driver.
#[derive(Clone)]
pub struct Publisher {
    api: Api<ResourceSlice>,
    node: String,
    driver: String,
    /// The highest generation this process published: never goes back, even if someone
    /// deletes our slices between syncs.
    generation: i64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("node", &self.node)
            .field("driver", &self.driver)
            .field("generation", &self.generation)
            .finish()
    }
}

fn api_err(op: &'static str, slice: &str) -> impl FnOnce(kube::Error) -> PublishError {
    let slice = slice.to_string();
    move |source| PublishError::Api { op, slice, source }
}

fn is_conflict(e: &PublishError) -> bool {
    matches!(e, PublishError::Api { source: kube::Error::Api(s), .. } if s.code == 409)
}

impl Publisher {
    /// A publisher for `node`'s pool under `driver`, writing through `client`. Refuses a
    /// driver that is not a DNS subdomain of at most 63 characters, or names that make
    /// slice names over 253.
    pub fn new(
        client: kube::Client,
        node: impl Into<String>,
        driver: impl Into<String>,
    ) -> Result<Self, PublishError> {
        let (node, driver) = (node.into(), driver.into());
        check_names(&node, &driver)?;
        Ok(Publisher {
            api: Api::all(client),
            node,
            driver,
            generation: 0,
        })
    }

    /// The driver name.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The node name (= pool name).
    pub fn node(&self) -> &str {
        &self.node
    }

    fn selector(&self) -> String {
        format!("spec.nodeName={},spec.driver={}", self.node, self.driver)
    }

    async fn list(&self) -> Result<Vec<ResourceSlice>, PublishError> {
        let sel = self.selector();
        let lp = ListParams::default().fields(&sel);
        let list = self.api.list(&lp).await.map_err(api_err("list", &sel))?;
        Ok(list.items)
    }

    /// Make the API hold exactly `devices` (sorted by name, as
    /// [`super::slices::node_devices`] returns them) in this node's pool.
    pub async fn sync(&mut self, devices: &[Device]) -> Result<SyncReport, PublishError> {
        match self.sync_once(devices).await {
            Err(e) if is_conflict(&e) => {
                tracing::info!(error = %e, "ResourceSlice changed under us; listing again");
                self.sync_once(devices).await
            }
            r => r,
        }
    }

    async fn sync_once(&mut self, devices: &[Device]) -> Result<SyncReport, PublishError> {
        let listed = self.list().await?;
        let mut existing: BTreeMap<String, ResourceSlice> = listed
            .into_iter()
            .filter_map(|s| s.metadata.name.clone().map(|n| (n, s)))
            .collect();
        let published_gen = existing
            .values()
            .map(|s| s.spec.pool.generation)
            .max()
            .unwrap_or(0);
        self.generation = self.generation.max(published_gen);
        // Unchanged: the desired slices at the published generation are exactly there.
        let same = build_slices(&self.node, &self.driver, devices, published_gen);
        let unchanged = !existing.is_empty()
            && same.len() == existing.len()
            && same.iter().all(|d| {
                d.metadata
                    .name
                    .as_ref()
                    .and_then(|n| existing.get(n))
                    .is_some_and(|e| e.spec == d.spec)
            });
        let mut report = SyncReport {
            generation: published_gen,
            slices: same.len(),
            devices: devices.len(),
            ..Default::default()
        };
        if unchanged {
            return Ok(report);
        }
        let generation = self.generation + 1;
        let desired = build_slices(&self.node, &self.driver, devices, generation);
        report.generation = generation;
        let pp = PostParams::default();
        for mut s in desired {
            let name = s.metadata.name.clone().unwrap_or_default();
            match existing.remove(&name) {
                Some(old) => {
                    s.metadata.resource_version = old.metadata.resource_version;
                    self.api
                        .replace(&name, &pp, &s)
                        .await
                        .map_err(api_err("update", &name))?;
                    report.updated += 1;
                }
                None => {
                    self.api
                        .create(&pp, &s)
                        .await
                        .map_err(api_err("create", &name))?;
                    report.created += 1;
                }
            }
        }
        // Written first, deleted last: the pool is never seen with fewer slices than
        // its resourceSliceCount says at the new generation.
        for name in existing.keys() {
            self.delete(name).await?;
            report.deleted += 1;
        }
        self.generation = generation;
        tracing::info!(
            node = %self.node,
            driver = %self.driver,
            generation,
            slices = report.slices,
            devices = report.devices,
            created = report.created,
            updated = report.updated,
            deleted = report.deleted,
            "ResourceSlices published"
        );
        Ok(report)
    }

    async fn delete(&self, name: &str) -> Result<(), PublishError> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_err("delete", name)(e)),
        }
    }

    /// On a clean stop: delete this node's slices unless a claim is still prepared (its
    /// devices must stay visible as allocated, or the scheduler could hand them out
    /// again once we are back). Returns how many slices were deleted.
    pub async fn shutdown(self, claims_prepared: bool) -> Result<usize, PublishError> {
        if claims_prepared {
            tracing::info!(node = %self.node, driver = %self.driver,
                "claims still prepared: keeping this node's ResourceSlices");
            return Ok(0);
        }
        let slices = self.list().await?;
        let mut n = 0;
        for s in &slices {
            if let Some(name) = &s.metadata.name {
                self.delete(name).await?;
                n += 1;
            }
        }
        tracing::info!(node = %self.node, driver = %self.driver, deleted = n,
            "no claim prepared: this node's ResourceSlices deleted");
        Ok(n)
    }
}

/// Delays between failed syncs of a [`SliceFeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// After the first failure.
    pub first: std::time::Duration,
    /// At most.
    pub max: std::time::Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: std::time::Duration::from_millis(500),
            max: std::time::Duration::from_secs(30),
        }
    }
}

/// A [`Publisher`] on its own task, fed the desired devices through a channel: the
/// daemon's scan loop never waits for the API server, only the latest device list is
/// synced (a burst of rescans is one sync), and a failed sync is logged and retried
/// with back-off until it succeeds or newer devices arrive. A list is kept only until it
/// is synced: on a 1024-VF node it is ~3.5 MB of attribute maps, more than the rest of
/// the daemon's heap.
#[derive(Debug)]
pub struct SliceFeed {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<Device>>,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
    node: String,
    driver: String,
}

impl SliceFeed {
    /// Run `publisher` on a task; nothing is written until the first [`SliceFeed::publish`].
    pub fn spawn(publisher: Publisher, backoff: Backoff) -> SliceFeed {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let (node, driver) = (publisher.node.clone(), publisher.driver.clone());
        let task = tokio::spawn(feed(publisher, rx, stop_rx, backoff));
        SliceFeed {
            tx,
            stop: Some(stop),
            task,
            node,
            driver,
        }
    }

    /// Make `devices` the pool's content (synced soon, on the feed's task).
    pub fn publish(&self, devices: Vec<Device>) {
        // an error means the feed's task has ended (it stops only when told to)
        let _ = self.tx.send(devices);
    }

    /// Stop the feed: delete this node's slices unless `claims_prepared` (see
    /// [`Publisher::shutdown`]), waiting at most `timeout` for the API server. Returns
    /// whether the feed finished in time.
    pub async fn shutdown(mut self, claims_prepared: bool, timeout: std::time::Duration) -> bool {
        if let Some(s) = self.stop.take() {
            let _ = s.send(claims_prepared);
        }
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(_) => true,
            Err(_) => {
                self.task.abort();
                tracing::warn!(node = %self.node, driver = %self.driver,
                    timeout_ms = timeout.as_millis() as u64,
                    "ResourceSlices: API server did not answer in time at shutdown; slices left as they are");
                false
            }
        }
    }
}

async fn feed(
    mut publisher: Publisher,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<Device>>,
    mut stop: tokio::sync::oneshot::Receiver<bool>,
    backoff: Backoff,
) {
    let mut delay = backoff.first;
    let mut retry: Option<tokio::time::Instant> = None;
    let mut failures = 0u32;
    let mut pending: Option<Vec<Device>> = None;
    loop {
        tokio::select! {
            biased;
            r = &mut stop => {
                // a dropped sender (daemon gone without a clean stop) keeps the slices
                let prepared = r.unwrap_or(true);
                if let Err(e) = publisher.shutdown(prepared).await {
                    tracing::warn!(error = %e, "ResourceSlices: not removed at shutdown");
                }
                return;
            }
            next = rx.recv() => {
                let Some(devices) = next else {
                    return;
                };
                pending = Some(devices);
                delay = backoff.first;
                retry = None;
            }
            () = sleep_until(retry), if retry.is_some() => {
                retry = None;
            }
        }
        // a burst of rescans: only the newest list matters
        while let Ok(devices) = rx.try_recv() {
            pending = Some(devices);
        }
        let Some(devices) = pending.as_deref() else {
            continue;
        };
        match publisher.sync(devices).await {
            Ok(r) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        generation = r.generation,
                        "ResourceSlices: sync succeeded again"
                    );
                }
                failures = 0;
                delay = backoff.first;
                pending = None;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, attempt = failures,
                    retry_in_ms = delay.as_millis() as u64,
                    "ResourceSlices: sync failed; retrying");
                retry = Some(tokio::time::Instant::now() + delay);
                delay = (delay * 2).min(backoff.max);
            }
        }
        release_freed_memory();
    }
}

/// Hand the heap a sync freed back to the kernel. A sync of a 1024-VF pool builds and
/// parses ~1 MB of JSON and several copies of the slices (a transient peak near 10 MB of
/// heap); glibc keeps those pages in its per-thread arenas, so without this the daemon's
/// RSS stays near the peak (1024-VF host, glibc, `tests/benches/dra_daemon_rss.rs`:
/// 38 MB; with this and the list dropped once synced, under 20 MB). musl (the shipped
/// image) has no `malloc_trim`: there this is a no-op (not measured: this machine has no
/// musl target).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own free lists; it is
    // thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
