//! NodePrepareResources and NodeUnprepareResources as domain code, independent of gRPC.
//!
//! Prepare, per claim: GET the ResourceClaim, take the devices allocated to our driver
//! (`status.allocation.devices.results`), map each device name to a VF of our pools,
//! validate the opaque [`VfConfig`] that applies to its request, then write
//! - one CDI spec for the claim, `<cdi dir>/<driver>-<claim uid>.json` (kind
//!   `<driver>/vf`, CDI 0.6.0): a device `<claim uid>-<device>` per VF with its device
//!   nodes (RDMA char devices where the pool mounts them, vfio nodes for vfio-bound VFs,
//!   as [`crate::allocate`] gives the device plugin), and the claim-wide env the device
//!   plugin's Allocate sets (`PCIDEVICE_<RESOURCE>` and `_INFO`) in the spec's own edits;
//! - one device-info file per VF, `<device-info dir>/<driver>-<claim uid>-<device>-device.json`:
//!   the device plugin's document plus a `dra` object (driver, claim, request, device,
//!   pool, and the request's `config`), which is how the CNI gets the MAC/VLAN;
//! - the checkpoint, last: a claim is prepared once it is there.
//!
//! A failure removes what this call wrote. A claim already in the checkpoint is answered
//! from it without asking the API server again, so preparing twice (or after a
//! restart) returns the same CDI IDs. Unprepare removes the files and the entry using
//! only the checkpoint, so it works when the VF has gone; an unknown claim is already
//! unprepared.

use super::checkpoint::{Checkpoint, CheckpointError, PreparedClaim, PreparedDevice};
use super::claims::{ClaimRef, ClaimSource, ClaimSourceError, allocation_for};
use super::devices::DraDevices;
use super::vfconfig::{VfConfig, VfConfigError};
use crate::allocate::{self, AllocateOptions};
use crate::cdi;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tracing::{info, warn};

/// CDI class of our devices (the CDI kind is `<driver>/vf`).
pub const CDI_CLASS: &str = "vf";

/// Default device-info directory of DRA claims (beside the device plugins' `dp`).
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/dra";

/// Where the plugin writes.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The driver name (`results[].driver` we answer for, CDI vendor, file prefix).
    pub driver: String,
    /// CDI spec directory.
    pub cdi_dir: PathBuf,
    /// Device-info directory; `None` = write none.
    pub device_info_dir: Option<PathBuf>,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
}

/// A claim that could not be prepared or unprepared; names claim, request and device.
/// (Large, and only ever on the failure path of a per-claim call: not boxed.)
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// GET of the ResourceClaim failed.
    #[error("claim {claim}: get ResourceClaim: {source}")]
    Get {
        /// The claim.
        claim: ClaimRef,
        /// The client error.
        #[source]
        source: ClaimSourceError,
    },
    /// The API server's claim of that name is another object.
    #[error("claim {claim}: the API server has uid {found} under that name (claim replaced)")]
    Replaced {
        /// The claim asked for.
        claim: ClaimRef,
        /// The UID found.
        found: String,
    },
    /// The claim has no allocation.
    #[error("claim {claim}: not allocated")]
    NotAllocated {
        /// The claim.
        claim: ClaimRef,
    },
    /// An allocated device is not one of ours on this node.
    #[error(
        "claim {claim}: request {request}: device {device} (pool {pool}): no such device on this node (VF gone or no longer in a pool)"
    )]
    UnknownDevice {
        /// The claim.
        claim: ClaimRef,
        /// The request.
        request: String,
        /// The pool.
        pool: String,
        /// The device.
        device: String,
    },
    /// The request's opaque config is invalid.
    #[error(
        "claim {claim}: request {request}: device {device}: opaque config ({source_kind}): {error}"
    )]
    Config {
        /// The claim.
        claim: ClaimRef,
        /// The request.
        request: String,
        /// The device it was to configure.
        device: String,
        /// `FromClass` or `FromClaim`.
        source_kind: String,
        /// What is wrong, with the field.
        error: VfConfigError,
    },
    /// A file could not be written or removed.
    #[error("claim {claim}: device {device}: {op} {path}: {source}")]
    File {
        /// The claim.
        claim: ClaimRef,
        /// The device (or `*` for the claim's CDI spec).
        device: String,
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The device plugin's env/device code refused (cannot happen for devices of one
    /// snapshot, reported rather than assumed).
    #[error("claim {claim}: {source}")]
    Allocate {
        /// The claim.
        claim: ClaimRef,
        /// The error.
        #[source]
        source: allocate::AllocateError,
    },
    /// The checkpoint could not be written.
    #[error("claim {claim}: {source}")]
    Checkpoint {
        /// The claim.
        claim: ClaimRef,
        /// The error.
        #[source]
        source: CheckpointError,
    },
}

/// The DRA driver's node side.
pub struct Driver {
    opts: PrepareOptions,
    claims: Arc<dyn ClaimSource>,
    devices: RwLock<Arc<DraDevices>>,
    state: tokio::sync::Mutex<Checkpoint>,
}

impl Driver {
    /// A driver answering from `devices`, reading claims from `claims`, with the
    /// checkpoint read from `opts.checkpoint`.
    pub fn new(
        opts: PrepareOptions,
        claims: Arc<dyn ClaimSource>,
        devices: DraDevices,
    ) -> Result<Driver, CheckpointError> {
        let state = Checkpoint::load(&opts.checkpoint)?;
        if !state.claims.is_empty() {
            info!(claims = state.claims.len(), checkpoint = %opts.checkpoint.display(), "DRA: prepared claims restored");
        }
        Ok(Driver {
            opts,
            claims,
            devices: RwLock::new(Arc::new(devices)),
            state: tokio::sync::Mutex::new(state),
        })
    }

    /// The options.
    pub fn options(&self) -> &PrepareOptions {
        &self.opts
    }

    /// Replace the device view (after a rescan); prepared claims are not touched.
    pub fn set_devices(&self, devices: DraDevices) {
        let mut g = self.devices.write().unwrap_or_else(|p| p.into_inner());
        *g = Arc::new(devices);
    }

    /// The current device view.
    pub fn devices(&self) -> Arc<DraDevices> {
        self.devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The prepared claims (UID -> claim).
    pub async fn prepared(&self) -> BTreeMap<String, PreparedClaim> {
        self.state.lock().await.claims.clone()
    }

    /// Prepare `claim`, returning its devices (the same on every call until unprepared).
    pub async fn prepare(&self, claim: &ClaimRef) -> Result<Vec<PreparedDevice>, PrepareError> {
        if let Some(p) = self.state.lock().await.claims.get(&claim.uid) {
            return Ok(p.devices.clone());
        }
        let obj = self
            .claims
            .get(&claim.namespace, &claim.name)
            .await
            .map_err(|source| PrepareError::Get {
                claim: claim.clone(),
                source,
            })?;
        let found = obj.metadata.uid.clone().unwrap_or_default();
        if found != claim.uid {
            return Err(PrepareError::Replaced {
                claim: claim.clone(),
                found,
            });
        }
        let alloc =
            allocation_for(&obj, &self.opts.driver).ok_or_else(|| PrepareError::NotAllocated {
                claim: claim.clone(),
            })?;
        let mut state = self.state.lock().await;
        // a concurrent call may have prepared it meanwhile
        if let Some(p) = state.claims.get(&claim.uid) {
            return Ok(p.devices.clone());
        }
        let mut written = Vec::new();
        match self.write_claim(claim, &alloc, &mut written) {
            Ok(prepared) => {
                let devices = prepared.devices.clone();
                state.claims.insert(claim.uid.clone(), prepared);
                if let Err(source) = state.save(&self.opts.checkpoint) {
                    state.claims.remove(&claim.uid);
                    remove_all(&written);
                    return Err(PrepareError::Checkpoint {
                        claim: claim.clone(),
                        source,
                    });
                }
                let names: Vec<&str> = devices.iter().map(|d| d.device.as_str()).collect();
                info!(claim = %claim, devices = ?names, "DRA: claim prepared");
                Ok(devices)
            }
            Err(e) => {
                remove_all(&written);
                Err(e)
            }
        }
    }

    /// Write the CDI spec and device-info files of `claim`; every file written is pushed
    /// to `written` (for cleanup on failure).
    #[allow(clippy::result_large_err)]
    fn write_claim(
        &self,
        claim: &ClaimRef,
        alloc: &super::claims::ClaimAllocation,
        written: &mut Vec<PathBuf>,
    ) -> Result<PreparedClaim, PrepareError> {
        let driver = &self.opts.driver;
        let view = self.devices();
        // resolve every device and its config before writing anything
        let mut resolved = Vec::new();
        for a in &alloc.devices {
            let Some(dev) = view.get(&a.device) else {
                return Err(PrepareError::UnknownDevice {
                    claim: claim.clone(),
                    request: a.request.clone(),
                    pool: a.pool.clone(),
                    device: a.device.clone(),
                });
            };
            let Some(pd) = dev.device() else {
                return Err(PrepareError::UnknownDevice {
                    claim: claim.clone(),
                    request: a.request.clone(),
                    pool: a.pool.clone(),
                    device: a.device.clone(),
                });
            };
            if !pd.healthy {
                warn!(claim = %claim, device = %a.device, "DRA: preparing a device judged unhealthy");
            }
            let config = match alloc
                .configs
                .iter()
                .rev()
                .find(|c| c.applies_to(&a.request))
            {
                None => None,
                Some(c) => Some(VfConfig::parse(driver, &c.parameters).map_err(|error| {
                    PrepareError::Config {
                        claim: claim.clone(),
                        request: a.request.clone(),
                        device: a.device.clone(),
                        source_kind: c.source.clone(),
                        error,
                    }
                })?),
            };
            resolved.push((a, dev, pd, config));
        }
        // env per VF pool, as the device plugin's Allocate builds it
        let mut by_resource: BTreeMap<String, (Arc<crate::pools::Resource>, Vec<String>)> =
            BTreeMap::new();
        for (_, dev, _, _) in &resolved {
            by_resource
                .entry(dev.resource.full_name())
                .or_insert_with(|| (dev.resource.clone(), Vec::new()))
                .1
                .push(dev.pci.clone());
        }
        let no_files = AllocateOptions {
            device_info_dir: None,
            cdi: false,
        };
        let mut env = BTreeMap::new();
        for (r, ids) in by_resource.values() {
            let a =
                allocate::allocate(r, ids, &no_files).map_err(|source| PrepareError::Allocate {
                    claim: claim.clone(),
                    source,
                })?;
            env.extend(a.envs);
        }
        let mut cdi_devices = Vec::new();
        let mut prepared = Vec::new();
        for (a, dev, pd, config) in resolved {
            let (rdma, vhost) = dev.resource.mounts();
            let cdi_name = format!("{}-{}", claim.uid, a.device);
            cdi_devices.push(json!({
                "name": cdi_name,
                "containerEdits": {"deviceNodes": cdi::nodes(allocate::pool_device_specs(pd, rdma, vhost))},
            }));
            let device_info = match &self.opts.device_info_dir {
                None => None,
                Some(dir) => {
                    let path = dir.join(format!("{driver}-{}-{}-device.json", claim.uid, a.device));
                    let mut doc = allocate::device_info_doc(pd, vhost);
                    doc["dra"] = json!({
                        "driver": driver,
                        "claim": {"namespace": claim.namespace, "name": claim.name, "uid": claim.uid},
                        "request": a.request,
                        "pool": a.pool,
                        "device": a.device,
                        "config": config,
                    });
                    allocate::write_atomic(&path, doc.to_string().as_bytes()).map_err(
                        |source| PrepareError::File {
                            claim: claim.clone(),
                            device: a.device.clone(),
                            op: "write device-info",
                            path: path.clone(),
                            source,
                        },
                    )?;
                    written.push(path.clone());
                    Some(path)
                }
            };
            prepared.push(PreparedDevice {
                request: a.request.clone(),
                pool: a.pool.clone(),
                device: a.device.clone(),
                pci: dev.pci.clone(),
                resource: dev.resource.full_name(),
                cdi_device_ids: vec![cdi::qualified_name(driver, CDI_CLASS, &cdi_name)],
                device_info,
                config,
            });
        }
        let cdi_spec = if prepared.is_empty() {
            None
        } else {
            let path = self.cdi_spec_path(&claim.uid);
            let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let spec = json!({
                "cdiVersion": cdi::CDI_VERSION,
                "kind": format!("{driver}/{CDI_CLASS}"),
                "devices": cdi_devices,
                "containerEdits": {"env": env},
            });
            let bytes = serde_json::to_vec_pretty(&spec).unwrap_or_default();
            allocate::write_atomic(&path, &bytes).map_err(|source| PrepareError::File {
                claim: claim.clone(),
                device: "*".into(),
                op: "write CDI spec",
                path: path.clone(),
                source,
            })?;
            written.push(path.clone());
            Some(path)
        };
        Ok(PreparedClaim {
            claim: claim.clone(),
            devices: prepared,
            cdi_spec,
        })
    }

    /// The CDI spec file of a claim.
    pub fn cdi_spec_path(&self, uid: &str) -> PathBuf {
        self.opts
            .cdi_dir
            .join(format!("{}-{uid}.json", self.opts.driver))
    }

    /// Unprepare `claim`: remove its files and its checkpoint entry. Unknown = done.
    pub async fn unprepare(&self, claim: &ClaimRef) -> Result<(), PrepareError> {
        let mut state = self.state.lock().await;
        let Some(p) = state.claims.get(&claim.uid).cloned() else {
            return Ok(());
        };
        let files = p
            .devices
            .iter()
            .filter_map(|d| d.device_info.clone().map(|f| (d.device.clone(), f)))
            .chain(p.cdi_spec.clone().map(|f| ("*".to_string(), f)));
        for (device, path) in files {
            remove_file(&path).map_err(|source| PrepareError::File {
                claim: claim.clone(),
                device,
                op: "remove",
                path: path.clone(),
                source,
            })?;
        }
        state.claims.remove(&claim.uid);
        if let Err(source) = state.save(&self.opts.checkpoint) {
            // keep it known: the kubelet retries, and the files are gone already
            state.claims.insert(claim.uid.clone(), p);
            return Err(PrepareError::Checkpoint {
                claim: claim.clone(),
                source,
            });
        }
        let gone: Vec<&str> = p
            .devices
            .iter()
            .filter(|d| self.devices().get(&d.device).is_none())
            .map(|d| d.device.as_str())
            .collect();
        info!(claim = %claim, devices_gone_from_node = ?gone, "DRA: claim unprepared");
        Ok(())
    }
}

fn remove_file(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_all(files: &[PathBuf]) {
    for f in files {
        if let Err(e) = remove_file(f) {
            warn!(path = %f.display(), error = %e, "DRA: cleanup after a failed prepare");
        }
    }
}

/// `Value` of the claim-level env of a CDI spec, for readers of the spec (tests, demo).
pub fn spec_env(spec: &Value) -> BTreeMap<String, String> {
    spec["containerEdits"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
