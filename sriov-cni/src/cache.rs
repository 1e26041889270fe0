//! The per-attachment cache: what ADD found and changed, written atomically before the
//! first change so DEL (or a retried DEL, or GC) can put everything back.
//!
//! Location: `<data dir>/<CNI_CONTAINERID>-<CNI_IFNAME>`; the data dir is
//! `/var/lib/cni/sriov` unless `SRIOV_CNI_DATA_DIR` says otherwise.

use crate::config::Mac;
use crate::error::{Error, Result};
use crate::sriov::{VfSetting, VfState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Default data directory (cache files and the `lock/` subdirectory).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/sriov";

/// The VF netdev as it was on the host before ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostLink {
    /// Its name on the host.
    pub name: String,
    /// Its ifindex on the host.
    pub index: u32,
    /// Its MAC.
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
    /// Whether it was up.
    pub up: bool,
    /// Its alternative names.
    #[serde(default)]
    pub altnames: Vec<String>,
}

/// What ADD does to an InfiniBand VF's GUIDs, recorded before the first change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IbEntry {
    /// The GUID set as node and port GUID (`None`: the VF keeps its own).
    pub guid: Option<crate::ib::guid::Guid>,
    /// The node GUID the PF reported before (`None`: not reported, cannot restore).
    pub orig_node: Option<u64>,
    /// The port GUID the PF reported before.
    pub orig_port: Option<u64>,
}

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name in the pod.
    pub ifname: String,
    /// The pod netns path.
    pub netns: Option<String>,
    /// Network name (GC only touches entries of its own network).
    pub net_name: String,
    /// The VF's PCI address.
    #[serde(rename = "deviceID")]
    pub device_id: String,
    /// PF netdev.
    pub pf: String,
    /// VF index on the PF.
    pub vf_index: u32,
    /// The VF netdev as found on the host (`None` in DPDK mode).
    pub link: Option<HostLink>,
    /// The VF netdev's ifindex in the pod when the kernel could not keep the host one.
    #[serde(default)]
    pub pod_index: Option<u32>,
    /// Alternative names removed because they collided in the pod (re-added on DEL).
    #[serde(default)]
    pub dropped_altnames: Vec<String>,
    /// MAC set on the netdev in the pod.
    pub set_mac: Option<Mac>,
    /// MTU set on the netdev in the pod.
    pub set_mtu: Option<u32>,
    /// The VF's state before ADD.
    pub vf_orig: VfState,
    /// The VF settings ADD applies, in order.
    pub vf_planned: Vec<VfSetting>,
    /// Settings an earlier attachment of this VF changed and never restored (its DEL
    /// never came); restored on DEL together with `vf_planned`.
    #[serde(default)]
    pub vf_inherited: Vec<VfSetting>,
    /// InfiniBand VF: the GUID ADD sets and the GUIDs it found (`None` on Ethernet).
    #[serde(default)]
    pub ib: Option<IbEntry>,
    /// RDMA devices moved into the pod (exclusive RDMA netns mode).
    pub rdma: Vec<String>,
    /// The IPAM plugin used, if any.
    pub ipam: Option<String>,
    /// The network configuration ADD ran with (GC replays IPAM DEL with it).
    pub config: serde_json::Value,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of one attachment. Env validation keeps both parts free of `/` and `..`.
    pub fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}-{ifname}"))
    }

    /// Read one entry; `None` when absent.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<CacheEntry>> {
        load_file(&self.path(container_id, ifname))
    }

    /// Write one entry atomically (temp file + rename).
    pub fn store(&self, e: &CacheEntry) -> Result<()> {
        let path = self.path(&e.container_id, &e.ifname);
        std::fs::create_dir_all(&self.dir).map_err(|s| Error::io("create", &self.dir, s))?;
        let tmp = self.dir.join(format!(
            ".{}-{}.tmp{}",
            e.container_id,
            e.ifname,
            std::process::id()
        ));
        let body = serde_json::to_vec(e).map_err(|s| Error::Other(format!("encode cache: {s}")))?;
        std::fs::write(&tmp, body).map_err(|s| Error::io("write", &tmp, s))?;
        std::fs::rename(&tmp, &path).map_err(|s| Error::io("rename into", &path, s))
    }

    /// Remove one entry (absent is fine).
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<()> {
        let p = self.path(container_id, ifname);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", p, e)),
        }
    }

    /// Every entry (GC). Unreadable files are skipped with their error.
    pub fn list(&self) -> Result<Vec<std::result::Result<CacheEntry, Error>>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &self.dir, e)),
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !ent.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            match load_file(&ent.path()) {
                Ok(Some(e)) => out.push(Ok(e)),
                Ok(None) => {}
                Err(e) => out.push(Err(e)),
            }
        }
        Ok(out)
    }
}

fn load_file(p: &Path) -> Result<Option<CacheEntry>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Other(format!("corrupt cache file {}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", p, e)),
    }
}
