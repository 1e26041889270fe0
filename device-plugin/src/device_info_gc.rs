//! Removing device-info files of devices no running container holds any more.
//!
//! Kubelet never tells a plugin that a pod went away, so the daemon asks kubelet's
//! pod-resources API (`List`) which device IDs are allocated, and removes our
//! `<prefix>-<name>-<pci>-device.json` files whose device is not among them. A file is
//! kept for a grace period after it was written, because kubelet lists a pod's devices
//! only after the whole admission (Allocate comes first), and the CNI reads the file
//! during pod setup. Best effort: every failure is returned (and logged by the caller),
//! none stops the sweep.

use proto::podresources::v1 as pr;
use proto::unix::{UnixError, connect_unix};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Default pod-resources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = proto::POD_RESOURCES_SOCKET;
/// How long a freshly written file is kept even when no pod lists its device.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

/// A sweep that could not run.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The pod-resources socket could not be reached.
    #[error("pod-resources: {0}")]
    Connect(#[from] UnixError),
    /// `List` failed.
    #[error("pod-resources List on {path}: {status}")]
    List {
        /// The socket.
        path: PathBuf,
        /// The error status.
        status: tonic::Status,
    },
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Files removed.
    pub removed: Vec<PathBuf>,
    /// Files that could not be removed, with the error.
    pub failed: Vec<(PathBuf, std::io::Error)>,
}

/// Allocated device IDs per full resource name, from a `List` answer.
pub fn allocated(list: &pr::ListPodResourcesResponse) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in list
        .pod_resources
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
    {
        out.entry(d.resource_name.clone())
            .or_default()
            .extend(d.device_ids.iter().cloned());
    }
    out
}

/// Remove, in `dir`, the device-info files of `resources` (`(prefix, name)` pairs) whose
/// device is not in `allocated` and which are older than `grace` at `now`.
pub fn sweep(
    dir: &Path,
    resources: &[(String, String)],
    allocated: &BTreeMap<String, BTreeSet<String>>,
    grace: Duration,
    now: SystemTime,
) -> Sweep {
    let mut out = Sweep::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let empty = BTreeSet::new();
    for e in rd.flatten() {
        let fname = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = fname.strip_suffix("-device.json") else {
            continue;
        };
        for (prefix, name) in resources {
            let Some(pci) = stem.strip_prefix(&format!("{prefix}-{name}-")) else {
                continue;
            };
            // a PCI address has no '-': this is the file of exactly this resource
            if pci.contains('-') {
                continue;
            }
            let held = allocated.get(&format!("{prefix}/{name}")).unwrap_or(&empty);
            if held.contains(pci) {
                break;
            }
            let young = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < grace);
            if young {
                break;
            }
            match std::fs::remove_file(e.path()) {
                Ok(()) => out.removed.push(e.path()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => out.failed.push((e.path(), err)),
            }
            break;
        }
    }
    out
}

/// Ask the pod-resources socket at `socket` what is allocated.
pub async fn list_allocated(socket: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, GcError> {
    let ch = connect_unix(socket).await?;
    let mut c = pr::pod_resources_lister_client::PodResourcesListerClient::new(ch);
    let resp = c
        .list(pr::ListPodResourcesRequest {})
        .await
        .map_err(|status| GcError::List {
            path: socket.to_path_buf(),
            status,
        })?;
    Ok(allocated(&resp.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[(&str, &[&str])]) -> pr::ListPodResourcesResponse {
        pr::ListPodResourcesResponse {
            pod_resources: vec![pr::PodResources {
                name: "p".into(),
                namespace: "ns".into(),
                containers: vec![pr::ContainerResources {
                    name: "c".into(),
                    devices: entries
                        .iter()
                        .map(|(r, ids)| pr::ContainerDevices {
                            resource_name: (*r).into(),
                            device_ids: ids.iter().map(|s| (*s).to_string()).collect(),
                            topology: None,
                        })
                        .collect(),
                    ..Default::default()
                }],
            }],
        }
    }

    #[test]
    fn sweep_removes_only_old_unallocated_files_of_our_resources() {
        let d = crate::testutil::tempdir();
        let dir = d.path();
        for f in [
            "intel.com-cx_vf-0000:3b:00.2-device.json",
            "intel.com-cx_vf-0000:3b:00.3-device.json",
            "intel.com-cx_vf-extra-0000:3b:00.4-device.json",
            "other.io-x-0000:3b:00.5-device.json",
        ] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        let alloc = allocated(&list(&[("intel.com/cx_vf", &["0000:3b:00.2"])]));
        let res = vec![("intel.com".to_string(), "cx_vf".to_string())];
        // all files are fresh: nothing goes
        let s = sweep(
            dir,
            &res,
            &alloc,
            Duration::from_secs(60),
            SystemTime::now(),
        );
        assert!(s.removed.is_empty() && s.failed.is_empty());
        // later: the unallocated one of our resource goes, the rest stays
        let later = SystemTime::now() + Duration::from_secs(120);
        let s = sweep(dir, &res, &alloc, Duration::from_secs(60), later);
        assert_eq!(
            s.removed,
            vec![dir.join("intel.com-cx_vf-0000:3b:00.3-device.json")]
        );
        assert!(
            dir.join("intel.com-cx_vf-0000:3b:00.2-device.json")
                .exists()
        );
        assert!(
            dir.join("intel.com-cx_vf-extra-0000:3b:00.4-device.json")
                .exists()
        );
        assert!(dir.join("other.io-x-0000:3b:00.5-device.json").exists());
    }
}
