//! CDI (Container Device Interface) specs, for `--cdi`.
//!
//! One spec file per resource, `<dir>/<prefix>-<name>.json`, kind `<prefix>/<name>`
//! (CDI vendor/class), CDI version 0.6.0. A VF pool has one CDI device per VF named by
//! its PCI address; a shared HCA has one device, [`SHARED_DEVICE`], with every shared
//! char device. Allocate then answers with `<prefix>/<name>=<device>` names.

use crate::allocate::{DeviceSpec, pool_device_specs, shared_device_specs};
use crate::config::ResourceKind;
use crate::pools::{Resource, ResourceDevices};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Default CDI spec directory (dynamic specs).
pub const DEFAULT_CDI_DIR: &str = "/var/run/cdi";
/// CDI spec version written.
pub const CDI_VERSION: &str = "0.6.0";
/// Name of the single CDI device of a shared HCA resource.
pub const SHARED_DEVICE: &str = "all";

/// A CDI spec could not be written.
#[derive(Debug, thiserror::Error)]
#[error("resource {resource}: write CDI spec {path}: {source}")]
pub struct CdiError {
    /// Full resource name.
    pub resource: String,
    /// The spec file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// `vendor/class=name`.
pub fn qualified_name(prefix: &str, name: &str, device: &str) -> String {
    format!("{prefix}/{name}={device}")
}

/// The spec file path of a resource.
pub fn spec_path(dir: &Path, r: &Resource) -> PathBuf {
    dir.join(format!("{}-{}.json", r.config.prefix, r.config.name))
}

/// CDI `deviceNodes` entries of `specs`.
pub fn nodes(specs: Vec<DeviceSpec>) -> Vec<Value> {
    specs
        .into_iter()
        .map(|s| json!({"path": s.container_path, "hostPath": s.host_path, "permissions": s.permissions}))
        .collect()
}

/// The CDI spec document of a resource.
pub fn spec(r: &Resource) -> Value {
    let devices: Vec<Value> = match &r.devices {
        ResourceDevices::Shared(s) => vec![json!({
            "name": SHARED_DEVICE,
            "containerEdits": {"deviceNodes": nodes(shared_device_specs(s))}
        })],
        ResourceDevices::Pool(devs) => {
            let (rdma, vhost) = match r.config.kind {
                ResourceKind::VfPool {
                    mount_rdma,
                    mount_vhost_net,
                    ..
                } => (mount_rdma, mount_vhost_net),
                ResourceKind::SharedHca { .. } => (false, false),
            };
            devs.values()
                .map(|d| {
                    json!({
                        "name": d.address.as_str(),
                        "containerEdits": {"deviceNodes": nodes(pool_device_specs(d, rdma, vhost))}
                    })
                })
                .collect()
        }
    };
    json!({
        "cdiVersion": CDI_VERSION,
        "kind": format!("{}/{}", r.config.prefix, r.config.name),
        "devices": devices,
    })
}

/// Write the spec of `r` into `dir` (temp file + rename, so readers never see half a file).
pub fn write_spec(dir: &Path, r: &Resource) -> Result<PathBuf, CdiError> {
    let path = spec_path(dir, r);
    let err = |source| CdiError {
        resource: r.full_name(),
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(&spec(r)).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pools::Pools;
    use rdma_hca::Host;
    use simhost::{Profile, SimHost};

    #[test]
    fn specs_for_pool_and_shared() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path().join("h"), Profile::Cx6Dx).unwrap();
        let inv = Host::new(d.path().join("h")).inventory().unwrap();
        let p = Pools::compute(&inv, &Config::embedded(), false);
        let vhca = p.resource("rdma/vhca").unwrap();
        let path = write_spec(&d.path().join("cdi"), vhca).unwrap();
        assert_eq!(path, d.path().join("cdi/rdma-vhca.json"));
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["cdiVersion"], "0.6.0");
        assert_eq!(doc["kind"], "rdma/vhca");
        let devs = doc["devices"].as_array().unwrap();
        assert_eq!(devs.len(), 16);
        let first = devs
            .iter()
            .find(|x| x["name"] == h.vf_address(0, 0))
            .unwrap();
        let nodes = first["containerEdits"]["deviceNodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 4);
        assert!(nodes.iter().any(|n| n["path"] == "/dev/infiniband/rdma_cm"));
        let hca = spec(p.resource("rdma/hca").unwrap());
        assert_eq!(hca["devices"][0]["name"], "all");
        assert_eq!(
            hca["devices"][0]["containerEdits"]["deviceNodes"]
                .as_array()
                .unwrap()
                .len(),
            7
        );
    }
}
