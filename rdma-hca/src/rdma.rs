//! RDMA devices under `<root>/sys/class/infiniband` and their char devices
//! (`uverbsN`, `umadN`, `issmN`, `ucmN`, the shared `rdma_cm`) under `/dev/infiniband`.

use crate::error::{HcaError, Result};
use crate::fsutil::{base_name, list_dir, owning_pci, read_link_in_root, read_opt, resolve_dir};
use crate::pci::PciAddress;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The `/dev/infiniband` directory as seen inside a container (and on the host).
pub const DEV_INFINIBAND: &str = "/dev/infiniband";

/// The char devices that give user space access to one RDMA device. Paths are as seen
/// inside a container, i.e. without the root prefix (`/dev/infiniband/uverbs2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RdmaCharDevices {
    /// Verbs device (`uverbsN`).
    pub uverbs: Option<String>,
    /// MAD devices, one per port (`umadN`).
    pub umad: Vec<String>,
    /// Subnet-manager devices, one per port (`issmN`).
    pub issm: Vec<String>,
    /// Connection-manager device (`ucmN`, old kernels only).
    pub ucm: Option<String>,
    /// The shared `rdma_cm` device, when present on the host.
    pub rdma_cm: Option<String>,
}

impl RdmaCharDevices {
    /// All paths: uverbs, umad, issm, ucm, rdma_cm.
    pub fn all(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(self.uverbs.iter().cloned());
        v.extend(self.umad.iter().cloned());
        v.extend(self.issm.iter().cloned());
        v.extend(self.ucm.iter().cloned());
        v.extend(self.rdma_cm.iter().cloned());
        v
    }
}

/// One RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaDevice {
    /// Its name (`mlx5_2`, `rxe0`).
    pub name: String,
    /// The PCI function it sits on (`device` link), if any; soft devices such as rxe have
    /// none of their own (see [`RdmaDevice::parent`]).
    pub pci_address: Option<PciAddress>,
    /// The netdev a soft RDMA device (rxe, siw) was created on (`parent` file).
    pub parent: Option<String>,
    /// Its char devices.
    pub char_devices: RdmaCharDevices,
}

/// Host-wide RDMA namespace mode (`rdma system show netns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RdmaNetnsMode {
    /// Every RDMA device is visible in every netns (the kernel default).
    Shared,
    /// Each RDMA device belongs to one netns and must be moved with its netdev.
    Exclusive,
    /// Not readable (no `ib_core` loaded, or the file is absent).
    Unknown,
}

/// Read the netns mode from `<root>/sys/module/ib_core/parameters/netns_mode`, which
/// `ib_core` keeps in step with `rdma system set netns` (`Y`/`1` shared, `N`/`0` exclusive).
pub fn read_netns_mode(root: &Path) -> Result<RdmaNetnsMode> {
    let path = root.join("sys/module/ib_core/parameters/netns_mode");
    Ok(match read_opt(&path)?.as_deref() {
        None => RdmaNetnsMode::Unknown,
        Some("Y" | "y" | "1") => RdmaNetnsMode::Shared,
        Some("N" | "n" | "0") => RdmaNetnsMode::Exclusive,
        Some(other) => {
            return Err(HcaError::Malformed {
                path,
                content: other.to_string(),
                reason: "expected Y or N",
            });
        }
    })
}

/// Char devices of every RDMA device, keyed by RDMA device name, from the
/// `infiniband_verbs`, `infiniband_mad` and `infiniband_cm` classes.
///
/// `sole_rdma_of` names the only RDMA device of a PCI function, when it has exactly one
/// (mlx5 has one per function): a char device under that function's directory then
/// belongs to it without reading its `ibdev` (three fewer syscalls per char device).
pub(crate) fn char_devices(
    root: &Path,
    sole_rdma_of: impl Fn(&PciAddress) -> Option<String>,
) -> Result<BTreeMap<String, RdmaCharDevices>> {
    let mut map: BTreeMap<String, RdmaCharDevices> = BTreeMap::new();
    // one listing of /dev/infiniband instead of a stat per node
    let nodes: std::collections::BTreeSet<String> = list_dir(&root.join("dev/infiniband"))?
        .into_iter()
        .collect();
    let rdma_cm = nodes
        .contains("rdma_cm")
        .then(|| format!("{DEV_INFINIBAND}/rdma_cm"));
    for class in ["infiniband_verbs", "infiniband_mad", "infiniband_cm"] {
        let class_dir = root.join("sys/class").join(class);
        for name in list_dir(&class_dir)? {
            let entry = class_dir.join(&name);
            let Some(real) = resolve_dir(root, &entry)? else {
                continue;
            };
            let sole = owning_pci(&real, class).and_then(|pci| sole_rdma_of(&pci));
            let Some(ibdev) = (match sole {
                Some(dev) => Some(dev),
                None => read_opt(&real.join("ibdev"))?,
            }) else {
                continue; // abi_version and other class files
            };
            if !nodes.contains(&name) {
                return Err(HcaError::MissingDevNode {
                    sysfs: entry,
                    path: root.join("dev/infiniband").join(&name),
                    dev: name,
                });
            }
            let path = format!("{DEV_INFINIBAND}/{name}");
            let slot = map.entry(ibdev).or_insert_with(|| RdmaCharDevices {
                rdma_cm: rdma_cm.clone(),
                ..Default::default()
            });
            if name.starts_with("uverbs") {
                slot.uverbs = Some(path);
            } else if name.starts_with("umad") {
                slot.umad.push(path);
            } else if name.starts_with("issm") {
                slot.issm.push(path);
            } else if name.starts_with("ucm") {
                slot.ucm = Some(path);
            }
        }
    }
    Ok(map)
}

/// Read `<root>/sys/class/infiniband/<name>`; the caller fills `char_devices`.
pub(crate) fn read_rdma_device(root: &Path, name: &str) -> Result<Option<RdmaDevice>> {
    let link = root.join("sys/class/infiniband").join(name);
    let Some(dir) = resolve_dir(root, &link)? else {
        return Ok(None);
    };
    let pci_address = match owning_pci(&dir, "infiniband") {
        Some(a) => Some(a),
        None => match read_link_in_root(root, &dir.join("device"), true)? {
            None => None,
            Some(p) => base_name(&p).parse().ok(),
        },
    };
    Ok(Some(RdmaDevice {
        name: name.to_string(),
        pci_address: pci_address.clone(),
        // only soft devices (no PCI function of their own) have a `parent`
        parent: match pci_address {
            Some(_) => None,
            None => read_opt(&dir.join("parent"))?.filter(|s| !s.is_empty()),
        },
        char_devices: RdmaCharDevices::default(),
    }))
}
