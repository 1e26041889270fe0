//! What a container gets for the devices kubelet allocated: env, device specs, mounts,
//! CDI device names, and the device-info files CNIs read.
//!
//! Env names are built as sriov-network-device-plugin builds them:
//! `PCIDEVICE_` + prefix + `_` + name, upper-cased, `.` turned into `_`
//! (`intel.com/cx_vf` -> `PCIDEVICE_INTEL_COM_CX_VF`). Where that leaves a `-`
//! (`rdma/v-hca` -> `PCIDEVICE_RDMA_V-HCA`), the same values are also set under the name
//! with `-` turned into `_`, since a shell cannot read the first. `<NAME>_INFO` holds a
//! JSON object keyed by PCI address: `generic.deviceID`, `rdma` (`uverbs`, `umad`,
//! `issm`, `rdma_cm`, `rdma_dev`) when the VF has an RDMA device, `vfio` (`mount`,
//! `dev-mount`) when it is bound to `vfio-pci`.

use crate::cdi;
use crate::config::ResourceKind;
use crate::pools::{PoolDevice, Resource, ResourceDevices, SharedHca};
use rdma_hca::RdmaDevice;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default device-info directory (Network Plumbing WG device-info spec, device plugins).
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/dp";
/// Device-info spec version written.
pub const DEVICE_INFO_VERSION: &str = "1.1.0";
/// The vfio container device.
pub const VFIO_DEV: &str = "/dev/vfio/vfio";

/// An Allocate failure, naming the resource and device or file.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// Kubelet asked for IDs this resource does not have.
    #[error("resource {resource}: unknown device IDs {ids:?}")]
    UnknownDevices {
        /// Full resource name.
        resource: String,
        /// The unknown IDs.
        ids: Vec<String>,
    },
    /// A device-info file could not be written.
    #[error("resource {resource}: device {device}: write device-info {path}: {source}")]
    DeviceInfo {
        /// Full resource name.
        resource: String,
        /// The device (PCI address).
        device: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceSpec {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// cgroup permissions (`rw`, `rwm`).
    pub permissions: String,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Path inside the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only or not.
    pub read_only: bool,
}

/// The response for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerAllocation {
    /// Environment variables.
    pub envs: BTreeMap<String, String>,
    /// Device nodes.
    pub devices: Vec<DeviceSpec>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Fully qualified CDI device names (`vendor/class=name`).
    pub cdi_devices: Vec<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// How Allocate answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateOptions {
    /// Where device-info files go; `None` = write none.
    pub device_info_dir: Option<PathBuf>,
    /// Answer with CDI device names instead of device specs.
    pub cdi: bool,
}

impl Default for AllocateOptions {
    fn default() -> Self {
        AllocateOptions {
            device_info_dir: Some(PathBuf::from(DEFAULT_DEVICE_INFO_DIR)),
            cdi: false,
        }
    }
}

/// The env names for a resource: the upstream name, plus the `-`→`_` form when they differ.
pub fn env_names(prefix: &str, name: &str) -> Vec<String> {
    let base = format!("PCIDEVICE_{prefix}_{name}")
        .replace('.', "_")
        .to_uppercase();
    let shell = base.replace('-', "_");
    if shell == base {
        vec![base]
    } else {
        vec![base, shell]
    }
}

/// Char-device paths of an RDMA device, in mount order.
fn rdma_paths(d: &RdmaDevice) -> Vec<String> {
    d.char_devices.all()
}

/// The `_INFO` entry of one device.
pub fn device_info_env(d: &PoolDevice) -> Value {
    let mut m = Map::new();
    m.insert("generic".into(), json!({"deviceID": d.address.as_str()}));
    if let Some(r) = d.rdma.first() {
        let c = &r.char_devices;
        let mut rm = Map::new();
        if let Some(u) = &c.uverbs {
            rm.insert("uverbs".into(), json!(u));
        }
        if let Some(u) = c.umad.first() {
            rm.insert("umad".into(), json!(u));
        }
        if let Some(u) = c.issm.first() {
            rm.insert("issm".into(), json!(u));
        }
        if let Some(u) = &c.rdma_cm {
            rm.insert("rdma_cm".into(), json!(u));
        }
        rm.insert("rdma_dev".into(), json!(r.name));
        m.insert("rdma".into(), Value::Object(rm));
    }
    if d.is_vfio() {
        let mut vm = Map::new();
        vm.insert("mount".into(), json!(VFIO_DEV));
        if let Some(g) = d.iommu_group {
            vm.insert("dev-mount".into(), json!(format!("/dev/vfio/{g}")));
        }
        m.insert("vfio".into(), Value::Object(vm));
    }
    Value::Object(m)
}

/// Device specs of one pool device (`rw`, host path = container path).
pub fn pool_device_specs(d: &PoolDevice, mount_rdma: bool, vhost_net: bool) -> Vec<DeviceSpec> {
    let spec = |p: &str| DeviceSpec {
        container_path: p.to_string(),
        host_path: p.to_string(),
        permissions: "rw".into(),
    };
    let mut out = Vec::new();
    if d.is_vfio() {
        out.push(spec(VFIO_DEV));
        if let Some(g) = d.iommu_group {
            out.push(spec(&format!("/dev/vfio/{g}")));
        }
    }
    if mount_rdma {
        for r in &d.rdma {
            out.extend(rdma_paths(r).iter().map(|p| spec(p)));
        }
    }
    if vhost_net {
        out.push(spec("/dev/vhost-net"));
        out.push(spec("/dev/net/tun"));
    }
    out
}

/// Device specs of a shared HCA: every char device of every shared RDMA device and
/// `rdma_cm`, `rwm`, host path = container path.
pub fn shared_device_specs(s: &SharedHca) -> Vec<DeviceSpec> {
    let mut paths: Vec<String> = s.rdma.iter().flat_map(rdma_paths).collect();
    dedup_keep_order(&mut paths);
    paths
        .into_iter()
        .map(|p| DeviceSpec {
            container_path: p.clone(),
            host_path: p,
            permissions: "rwm".into(),
        })
        .collect()
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|p| seen.insert(p.clone()));
}

/// The device-info document of one VF (device-info spec 1.1.0, type `pci`).
pub fn device_info_doc(d: &PoolDevice, vhost_net: bool) -> Value {
    let mut pci = Map::new();
    pci.insert("pci-address".into(), json!(d.address.as_str()));
    if vhost_net {
        pci.insert("vhost-net".into(), json!("/dev/vhost-net"));
    }
    if let Some(r) = d.rdma.first() {
        pci.insert("rdma-device".into(), json!(r.name));
    }
    if let Some(pf) = &d.pf {
        pci.insert("pf-pci-address".into(), json!(pf.as_str()));
    }
    json!({"type": "pci", "version": DEVICE_INFO_VERSION, "pci": Value::Object(pci)})
}

/// File name of a device-info file: `<prefix>-<name>-<pci>-device.json`.
pub fn device_info_file(prefix: &str, name: &str, pci: &str) -> String {
    format!("{prefix}-{name}-{pci}-device.json")
}

/// Write `bytes` to `path` atomically (temp file + rename), creating its directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Build the response for one container asking for `ids` of `resource`.
pub fn allocate(
    resource: &Resource,
    ids: &[String],
    opts: &AllocateOptions,
) -> Result<ContainerAllocation, AllocateError> {
    let full = resource.full_name();
    let prefix = &resource.config.prefix;
    let name = &resource.config.name;
    match &resource.devices {
        ResourceDevices::Shared(s) => {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| {
                    id.strip_prefix(name.as_str())
                        .and_then(|r| r.strip_prefix('-'))
                        .and_then(|n| n.parse::<u32>().ok())
                        .is_none_or(|n| n >= s.max)
                })
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(AllocateError::UnknownDevices {
                    resource: full,
                    ids: unknown,
                });
            }
            let mut out = ContainerAllocation::default();
            if opts.cdi {
                out.cdi_devices
                    .push(cdi::qualified_name(prefix, name, cdi::SHARED_DEVICE));
            } else {
                out.devices = shared_device_specs(s);
            }
            Ok(out)
        }
        ResourceDevices::Pool(devs) => {
            let unknown: Vec<String> = ids
                .iter()
                .filter(|id| !devs.contains_key(id.as_str()))
                .cloned()
                .collect();
            if !unknown.is_empty() {
                return Err(AllocateError::UnknownDevices {
                    resource: full,
                    ids: unknown,
                });
            }
            let (mount_rdma, vhost_net) = match resource.config.kind {
                ResourceKind::VfPool {
                    mount_rdma,
                    mount_vhost_net,
                    ..
                } => (mount_rdma, mount_vhost_net),
                ResourceKind::SharedHca { .. } => (false, false),
            };
            let mut out = ContainerAllocation::default();
            let mut info = Map::new();
            let mut seen = std::collections::HashSet::new();
            for id in ids {
                let d = &devs[id.as_str()];
                info.insert(id.clone(), device_info_env(d));
                if opts.cdi {
                    out.cdi_devices.push(cdi::qualified_name(prefix, name, id));
                } else {
                    for s in pool_device_specs(d, mount_rdma, vhost_net) {
                        if seen.insert(s.host_path.clone()) {
                            out.devices.push(s);
                        }
                    }
                }
                if let Some(dir) = &opts.device_info_dir {
                    let path = dir.join(device_info_file(prefix, name, id));
                    let doc = device_info_doc(d, vhost_net);
                    write_atomic(&path, doc.to_string().as_bytes()).map_err(|source| {
                        AllocateError::DeviceInfo {
                            resource: full.clone(),
                            device: id.clone(),
                            path: path.clone(),
                            source,
                        }
                    })?;
                }
            }
            let list = ids.join(",");
            let info = Value::Object(info).to_string();
            for env in env_names(prefix, name) {
                out.envs.insert(format!("{env}_INFO"), info.clone());
                out.envs.insert(env, list.clone());
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pools::Pools;
    use rdma_hca::Host;
    use simhost::{Profile, SimHost};

    #[test]
    fn env_naming_matches_upstream() {
        assert_eq!(
            env_names("intel.com", "cx_vf"),
            vec!["PCIDEVICE_INTEL_COM_CX_VF"]
        );
        assert_eq!(env_names("rdma", "vhca"), vec!["PCIDEVICE_RDMA_VHCA"]);
        assert_eq!(
            env_names("nvidia.com", "cx6-vf"),
            vec!["PCIDEVICE_NVIDIA_COM_CX6-VF", "PCIDEVICE_NVIDIA_COM_CX6_VF"]
        );
        assert_eq!(
            env_names("my-corp.io", "a"),
            vec!["PCIDEVICE_MY-CORP_IO_A", "PCIDEVICE_MY_CORP_IO_A"]
        );
    }

    fn pools(p: Profile, cfg: &str) -> (tempfile::TempDir, SimHost, Pools) {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path().join("host"), p).unwrap();
        let inv = Host::new(d.path().join("host")).inventory().unwrap();
        let c = if cfg.is_empty() {
            Config::embedded()
        } else {
            Config::parse(Path::new("t.json"), cfg).unwrap()
        };
        let pools = Pools::compute(&inv, &c, false);
        (d, h, pools)
    }

    #[test]
    fn vf_allocation_env_info_specs_and_device_info() {
        let (d, h, p) = pools(Profile::Cx6Dx, "");
        let r = p.resource("rdma/vhca").unwrap();
        let dir = d.path().join("devinfo");
        let opts = AllocateOptions {
            device_info_dir: Some(dir.clone()),
            cdi: false,
        };
        let a = h.vf_address(0, 2);
        let b = h.vf_address(1, 0);
        let out = allocate(r, &[a.clone(), b.clone()], &opts).unwrap();
        assert_eq!(out.envs["PCIDEVICE_RDMA_VHCA"], format!("{a},{b}"));
        let info: Value = serde_json::from_str(&out.envs["PCIDEVICE_RDMA_VHCA_INFO"]).unwrap();
        let ia = &info[&a];
        assert_eq!(ia["generic"]["deviceID"], a.as_str());
        let ResourceDevices::Pool(devs) = &r.devices else {
            panic!()
        };
        let rd = &devs[&a].rdma[0];
        let n: String = rd.name.trim_start_matches("mlx5_").into();
        assert_eq!(ia["rdma"]["rdma_dev"], rd.name.as_str());
        assert_eq!(ia["rdma"]["uverbs"], format!("/dev/infiniband/uverbs{n}"));
        assert_eq!(ia["rdma"]["umad"], format!("/dev/infiniband/umad{n}"));
        assert_eq!(ia["rdma"]["issm"], format!("/dev/infiniband/issm{n}"));
        assert_eq!(ia["rdma"]["rdma_cm"], "/dev/infiniband/rdma_cm");
        assert!(ia.get("vfio").is_none());
        // rdma char devices of both VFs, rdma_cm once, all rw
        let paths: Vec<&str> = out.devices.iter().map(|s| s.host_path.as_str()).collect();
        assert_eq!(paths.len(), 7, "{paths:?}");
        assert!(paths.contains(&format!("/dev/infiniband/uverbs{n}").as_str()));
        assert!(
            out.devices
                .iter()
                .all(|s| s.permissions == "rw" && s.host_path == s.container_path)
        );
        // device-info files
        let f = dir.join(device_info_file("rdma", "vhca", &a));
        let doc: Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(
            doc,
            json!({"type":"pci","version":"1.1.0","pci":{"pci-address":a,"rdma-device":rd.name,
                   "pf-pci-address":h.pf_address(0)}})
        );
        assert!(dir.join(device_info_file("rdma", "vhca", &b)).exists());
    }

    #[test]
    fn vfio_allocation() {
        let cfg = r#"{"resourceList":[{"resourceName":"cx5-vfio","resourcePrefix":"nvidia.com",
            "selectors":{"drivers":["vfio-pci"]}}]}"#;
        let (_d, h, p) = pools(Profile::Mixed, cfg);
        let r = p.resource("nvidia.com/cx5-vfio").unwrap();
        let a = h.vf_address(0, 4);
        let opts = AllocateOptions {
            device_info_dir: None,
            cdi: false,
        };
        let out = allocate(r, std::slice::from_ref(&a), &opts).unwrap();
        assert_eq!(out.envs["PCIDEVICE_NVIDIA_COM_CX5-VFIO"], a);
        assert_eq!(out.envs["PCIDEVICE_NVIDIA_COM_CX5_VFIO"], a);
        let info: Value =
            serde_json::from_str(&out.envs["PCIDEVICE_NVIDIA_COM_CX5_VFIO_INFO"]).unwrap();
        let ResourceDevices::Pool(devs) = &r.devices else {
            panic!()
        };
        let g = devs[&a].iommu_group.unwrap();
        assert_eq!(
            info[&a]["vfio"],
            json!({"mount":"/dev/vfio/vfio","dev-mount":format!("/dev/vfio/{g}")})
        );
        assert!(info[&a].get("rdma").is_none());
        let paths: Vec<&str> = out.devices.iter().map(|s| s.host_path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/dev/vfio/vfio".to_string(), format!("/dev/vfio/{g}")]
        );
    }

    #[test]
    fn unknown_ids_are_named() {
        let (_d, h, p) = pools(Profile::Cx6Dx, "");
        let r = p.resource("rdma/vhca").unwrap();
        let opts = AllocateOptions {
            device_info_dir: None,
            cdi: false,
        };
        let e = allocate(r, &[h.vf_address(0, 0), "0000:99:00.0".into()], &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "resource rdma/vhca: unknown device IDs [\"0000:99:00.0\"]"
        );
        let hca = p.resource("rdma/hca").unwrap();
        assert!(allocate(hca, &["hca-999".into()], &opts).is_ok());
        let e = allocate(hca, &["hca-1000".into(), "x".into()], &opts).unwrap_err();
        assert!(e.to_string().contains("[\"hca-1000\", \"x\"]"), "{e}");
    }

    #[test]
    fn shared_hca_specs_are_exact() {
        let (_d, _h, p) = pools(Profile::Cx6Dx, "");
        let hca = p.resource("rdma/hca").unwrap();
        let opts = AllocateOptions {
            device_info_dir: None,
            cdi: false,
        };
        let out = allocate(hca, &["hca-3".into()], &opts).unwrap();
        let got: Vec<(String, String)> = out
            .devices
            .iter()
            .map(|s| (s.container_path.clone(), s.permissions.clone()))
            .collect();
        let want: Vec<(String, String)> = [
            "uverbs0", "umad0", "issm0", "rdma_cm", "uverbs1", "umad1", "issm1",
        ]
        .iter()
        .map(|n| (format!("/dev/infiniband/{n}"), "rwm".to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(out.envs.is_empty());
    }

    #[test]
    fn need_vhost_net_pool_mounts_vhost_and_tun() {
        let cfg = r#"{"resourceList":[{"resourceName":"vh","selectors":{"needVhostNet":true,"pfNames":["ens1f1#0"]}}]}"#;
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
        let inv = Host::new(h.root()).inventory().unwrap();
        let c = Config::parse(Path::new("t.json"), cfg).unwrap();
        // without /dev/vhost-net on the host the pool stays empty
        let p = Pools::compute(&inv, &c, false);
        let ResourceDevices::Pool(devs) = &p.resource("intel.com/vh").unwrap().devices else {
            panic!()
        };
        assert!(devs.is_empty());
        let p = Pools::compute(&inv, &c, true);
        let r = p.resource("intel.com/vh").unwrap();
        let a = h.vf_address(1, 0);
        let opts = AllocateOptions {
            device_info_dir: Some(d.path().join("di")),
            cdi: false,
        };
        let out = allocate(r, std::slice::from_ref(&a), &opts).unwrap();
        let paths: Vec<&str> = out.devices.iter().map(|s| s.host_path.as_str()).collect();
        assert_eq!(paths, vec!["/dev/vhost-net", "/dev/net/tun"]);
        let doc: Value = serde_json::from_slice(
            &std::fs::read(
                d.path()
                    .join("di")
                    .join(device_info_file("intel.com", "vh", &a)),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(doc["pci"]["vhost-net"], "/dev/vhost-net");
    }

    #[test]
    fn cdi_mode_returns_names() {
        let (_d, h, p) = pools(Profile::Cx6Dx, "");
        let opts = AllocateOptions {
            device_info_dir: None,
            cdi: true,
        };
        let a = h.vf_address(1, 1);
        let out = allocate(
            p.resource("rdma/vhca").unwrap(),
            std::slice::from_ref(&a),
            &opts,
        )
        .unwrap();
        assert_eq!(out.cdi_devices, vec![format!("rdma/vhca={a}")]);
        assert!(out.devices.is_empty());
        assert_eq!(out.envs["PCIDEVICE_RDMA_VHCA"], a);
        let out = allocate(p.resource("rdma/hca").unwrap(), &["hca-0".into()], &opts).unwrap();
        assert_eq!(out.cdi_devices, vec!["rdma/hca=all"]);
    }
}
