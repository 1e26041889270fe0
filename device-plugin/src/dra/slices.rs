//! Pools -> the `resource.k8s.io/v1` ResourceSlices of this node.
//!
//! One pool per node (pool name = node name), one device per healthy function of a VF
//! pool (a VF, or a PF a pool selects for passthrough); shared HCA resources have no
//! per-device identity and are not offered here. Devices are sorted by name and cut into
//! slices of at most [`MAX_DEVICES_PER_SLICE`]; every slice of the pool carries the same
//! `pool.generation` and `pool.resourceSliceCount`.
//!
//! Device names come from [`device_name`] (`0000:3b:00.2` -> `pci-0000-3b-00-2`): the
//! kubelet-plugin side maps allocation results back to PCI functions with the same
//! function. Attributes live under the driver's domain (`<driver>/pciAddress`, ...), plus
//! the standard `resource.kubernetes.io/pcieRoot` and `resource.kubernetes.io/pciBusID`.

use crate::config::ResourceKind;
use crate::pools::{PoolDevice, Pools, ResourceDevices};
use crate::selectors::MatchContext;
use k8s_openapi::api::resource::v1::{
    Device, DeviceAttribute, ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rdma_hca::{Inventory, PciAddress};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// The API's limit on devices in one ResourceSlice (`spec.devices`, "must not have more
/// than 128 entries"; 64 applies only with taints or counters, which we do not use).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// The API's limit on attributes plus capacities of one device.
pub const MAX_ATTRIBUTES_PER_DEVICE: usize = 32;
/// The API's limit on a string attribute value.
pub const MAX_STRING_VALUE_LEN: usize = 64;
/// The API's limit on the C-identifier part of a qualified attribute name.
pub const MAX_ATTRIBUTE_ID_LEN: usize = 32;
/// The API's limit on a driver name (and the domain of a qualified attribute name).
pub const MAX_DRIVER_NAME_LEN: usize = 63;

/// The standard attribute naming the PCIe root complex (`pci<domain>:<bus>`), from
/// k8s.io/dynamic-resource-allocation `deviceattribute`.
pub const PCIE_ROOT_ATTRIBUTE: &str = "resource.kubernetes.io/pcieRoot";
/// The standard attribute carrying the PCI address in extended BDF notation.
pub const PCI_BUS_ID_ATTRIBUTE: &str = "resource.kubernetes.io/pciBusID";

/// Our attribute IDs (the part after `<driver>/`). Users select on these in CEL, e.g.
/// `device.attributes["<driver>"].numaNode == 0`.
pub mod attr {
    /// PCI address of the function (string, `0000:3b:00.2`).
    pub const PCI_ADDRESS: &str = "pciAddress";
    /// Name of its PF's netdev (string; VFs only).
    pub const PF_NAME: &str = "pfName";
    /// PCI address of its PF (string; VFs only).
    pub const PF_PCI_ADDRESS: &str = "pfPciAddress";
    /// VF index on the PF (int; VFs only).
    pub const VF_INDEX: &str = "vfIndex";
    /// PCI vendor ID (string, `15b3`).
    pub const VENDOR: &str = "vendor";
    /// PCI device ID (string, `101e`).
    pub const DEVICE_ID: &str = "deviceID";
    /// Bound kernel driver (string, `mlx5_core`, `vfio-pci`).
    pub const DRIVER: &str = "driver";
    /// Link type (string, `ether` or `infiniband`).
    pub const LINK_TYPE: &str = "linkType";
    /// First RDMA device (string, `mlx5_3`).
    pub const RDMA_DEVICE: &str = "rdmaDevice";
    /// Whether it has an RDMA device (bool).
    pub const RDMA: &str = "rdma";
    /// First netdev (string).
    pub const NETDEV: &str = "netdev";
    /// NUMA node (int).
    pub const NUMA_NODE: &str = "numaNode";
    /// The config resource (pool) it was selected into (string, `intel.com/cx6_vf`).
    pub const RESOURCE_NAME: &str = "resourceName";
}

pub use super::device_name;

/// The PCIe root complex of `address` under `root`, in the standard attribute's format
/// `pci<domain>:<bus>`: the first component under `sys/devices` of the
/// `sys/bus/pci/devices/<address>` link target, as upstream's `deviceattribute` resolves
/// it. `None` when the link is missing or does not point into a `pci*` root.
pub fn pcie_root(root: &Path, address: &str) -> Option<String> {
    let link = root.join("sys/bus/pci/devices").join(address);
    let target = std::fs::read_link(&link).ok()?;
    let abs = if target.is_absolute() {
        // An absolute target is relative to the host's `/`, which is `root` here.
        root.join(target.strip_prefix("/").ok()?)
    } else {
        link.parent()?.join(target)
    };
    let norm = normalize(&abs);
    let rel = norm
        .strip_prefix(normalize(&root.join("sys/devices")))
        .ok()?;
    let mut comps = rel.components();
    let first = comps.next()?.as_os_str().to_str()?.to_string();
    let last = rel.file_name()?.to_str()?;
    (first.starts_with("pci") && last == address && comps.next().is_some()).then_some(first)
}

/// Lexical normalization (`..` pops, `.` vanishes), without touching the filesystem.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// What is needed to describe devices beyond the pools: the inventory (IDs, PF names,
/// link types) and the host root (for sysfs paths).
#[derive(Debug, Clone, Copy)]
pub struct SliceSource<'a> {
    /// The inventory the pools were computed from.
    pub inventory: &'a Inventory,
    /// The pools (after health refinement: unhealthy devices are left out).
    pub pools: &'a Pools,
    /// The host root (`/` on a node).
    pub root: &'a Path,
}

/// A string attribute, or `None` when the value is longer than the API allows (such a
/// value would get the whole slice refused; dropping the one attribute is better).
fn string_attr(v: &str) -> Option<DeviceAttribute> {
    (v.len() <= MAX_STRING_VALUE_LEN).then(|| DeviceAttribute {
        string: Some(v.to_string()),
        ..Default::default()
    })
}

fn int_attr(v: i64) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(v),
        ..Default::default()
    }
}

fn bool_attr(v: bool) -> DeviceAttribute {
    DeviceAttribute {
        bool: Some(v),
        ..Default::default()
    }
}

/// The DRA device for one pool device.
fn device(src: &SliceSource<'_>, driver: &str, resource: &str, d: &PoolDevice) -> Device {
    let inv = src.inventory;
    let f = inv.function(&d.address);
    let mut a: BTreeMap<String, DeviceAttribute> = BTreeMap::new();
    let mut put = |id: &str, v: Option<DeviceAttribute>| {
        if let Some(v) = v {
            a.insert(format!("{driver}/{id}"), v);
        }
    };
    let addr = d.address.as_str();
    put(attr::PCI_ADDRESS, string_attr(addr));
    put(attr::RESOURCE_NAME, string_attr(resource));
    if let Some(pf) = &d.pf {
        put(attr::PF_PCI_ADDRESS, string_attr(pf.as_str()));
        let pf_name = inv
            .function(pf)
            .and_then(|pf| pf.netdevs.first())
            .and_then(|n| string_attr(n));
        put(attr::PF_NAME, pf_name);
    }
    put(attr::VF_INDEX, d.vf_index.map(|i| int_attr(i64::from(i))));
    if let Some(f) = f {
        put(attr::VENDOR, string_attr(&f.vendor));
        put(attr::DEVICE_ID, string_attr(&f.device));
        // The selectors' rule: a VF without netdev (vfio) has its PF's link type.
        let cx = MatchContext {
            inventory: inv,
            vhost_net: false,
        };
        put(
            attr::LINK_TYPE,
            cx.link_type(f).and_then(|l| string_attr(&l.name())),
        );
    }
    put(attr::DRIVER, d.driver.as_deref().and_then(string_attr));
    put(
        attr::RDMA_DEVICE,
        d.rdma.first().and_then(|r| string_attr(&r.name)),
    );
    put(attr::RDMA, Some(bool_attr(!d.rdma.is_empty())));
    put(attr::NETDEV, d.netdevs.first().and_then(|n| string_attr(n)));
    put(attr::NUMA_NODE, d.numa_node.map(|n| int_attr(i64::from(n))));
    if let Some(v) = string_attr(addr) {
        a.insert(PCI_BUS_ID_ATTRIBUTE.to_string(), v);
    }
    if let Some(r) = pcie_root(src.root, addr).and_then(|r| string_attr(&r)) {
        a.insert(PCIE_ROOT_ATTRIBUTE.to_string(), r);
    }
    Device {
        name: device_name(addr),
        attributes: Some(a),
        ..Default::default()
    }
}

/// The devices this node offers under `driver`, sorted by name: every healthy function of
/// every VF pool. Unhealthy ones are left out, so a VF that goes bad leaves its slice.
pub fn node_devices(src: &SliceSource<'_>, driver: &str) -> Vec<Device> {
    let mut out: BTreeMap<String, Device> = BTreeMap::new();
    for r in &src.pools.resources {
        let (ResourceKind::VfPool { .. }, ResourceDevices::Pool(devs)) =
            (&r.config.kind, &r.devices)
        else {
            continue;
        };
        let full = r.full_name();
        for d in devs.values().filter(|d| d.healthy) {
            let dev = device(src, driver, &full, d);
            out.entry(dev.name.clone()).or_insert(dev);
        }
    }
    out.into_values().collect()
}

/// The name of slice `index` of `node`'s pool for `driver`: deterministic, so a restarted
/// daemon finds and updates its own slices instead of piling up new ones.
pub fn slice_name(node: &str, driver: &str, index: usize) -> String {
    format!("{node}-{driver}-{index}")
}

/// Cut `devices` (sorted) into the slices of `node`'s pool at `generation`. No devices
/// still makes one empty slice: it tells the scheduler the pool exists and is empty.
pub fn build_slices(
    node: &str,
    driver: &str,
    devices: &[Device],
    generation: i64,
) -> Vec<ResourceSlice> {
    let chunks: Vec<&[Device]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(MAX_DEVICES_PER_SLICE).collect()
    };
    let count = chunks.len() as i64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| ResourceSlice {
            metadata: ObjectMeta {
                name: Some(slice_name(node, driver, i)),
                ..Default::default()
            },
            spec: ResourceSliceSpec {
                driver: driver.to_string(),
                node_name: Some(node.to_string()),
                pool: ResourcePool {
                    name: node.to_string(),
                    generation,
                    resource_slice_count: count,
                },
                devices: (!chunk.is_empty()).then(|| chunk.to_vec()),
                ..Default::default()
            },
        })
        .collect()
}

/// The PCI address a device name stands for, when it is one of ours.
pub fn pci_address_of(name: &str) -> Option<PciAddress> {
    let rest = name.strip_prefix("pci-")?;
    let b = rest.as_bytes();
    if b.len() != 12 || b[4] != b'-' || b[7] != b'-' || b[10] != b'-' {
        return None;
    }
    format!(
        "{}:{}:{}.{}",
        &rest[..4],
        &rest[5..7],
        &rest[8..10],
        &rest[11..]
    )
    .parse()
    .ok()
}

/// A node or driver name that cannot make valid slices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SliceError {
    /// The driver name is not a DNS subdomain of at most 63 characters.
    #[error("driver name {name:?}: {why} (it must be a DNS subdomain of at most 63 characters)")]
    BadDriverName {
        /// The name given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The node name is not a DNS subdomain, or makes slice names over 253 characters.
    #[error("node name {name:?}: {why}")]
    BadNodeName {
        /// The name given.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// Why `s` is not a DNS-1123 subdomain, if it is not one.
pub fn dns_subdomain_error(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("empty");
    }
    if s.len() > 253 {
        return Some("longer than 253 characters");
    }
    for label in s.split('.') {
        let b = label.as_bytes();
        if b.is_empty() {
            return Some("empty label");
        }
        if b.len() > 63 {
            return Some("a label is longer than 63 characters");
        }
        if !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Some("only lower-case letters, digits, '-' and '.' are allowed");
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Some("a label starts or ends with '-'");
        }
    }
    None
}

/// Check that `node` and `driver` make valid pool, slice and attribute names.
pub fn check_names(node: &str, driver: &str) -> Result<(), SliceError> {
    let bad_driver = |why| SliceError::BadDriverName {
        name: driver.to_string(),
        why,
    };
    if driver.len() > MAX_DRIVER_NAME_LEN {
        return Err(bad_driver("longer than 63 characters"));
    }
    if let Some(why) = dns_subdomain_error(driver) {
        return Err(bad_driver(why));
    }
    if let Some(why) = dns_subdomain_error(node) {
        return Err(SliceError::BadNodeName {
            name: node.to_string(),
            why,
        });
    }
    // Room for the largest index a node can need (a few thousand functions).
    if slice_name(node, driver, 9999).len() > 253 {
        return Err(SliceError::BadNodeName {
            name: node.to_string(),
            why: "with the driver name, slice names would exceed 253 characters",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use rdma_hca::Host;
    use simhost::{Profile, SimHost};

    const DRIVER: &str = "sriov.rdma.example.org";

    struct Fixture {
        _dir: tempfile::TempDir,
        host: SimHost,
    }

    fn fixture(p: Profile) -> Fixture {
        let dir = crate::testutil::tempdir();
        let host = SimHost::create(dir.path(), p).unwrap();
        Fixture { _dir: dir, host }
    }

    fn devices_of(h: &SimHost, config: &str) -> Vec<Device> {
        let inv = Host::new(h.root()).inventory().unwrap();
        let cfg = if config.is_empty() {
            Config::embedded()
        } else {
            Config::parse(Path::new("test.json"), config).unwrap()
        };
        let pools = Pools::compute(&inv, &cfg, false);
        let src = SliceSource {
            inventory: &inv,
            pools: &pools,
            root: h.root(),
        };
        node_devices(&src, DRIVER)
    }

    fn attr<'a>(d: &'a Device, id: &str) -> Option<&'a DeviceAttribute> {
        let key = if id.contains('/') {
            id.to_string()
        } else {
            format!("{DRIVER}/{id}")
        };
        d.attributes.as_ref().unwrap().get(&key)
    }

    fn s<'a>(d: &'a Device, id: &str) -> &'a str {
        let a = attr(d, id).unwrap_or_else(|| panic!("{}: no {id}", d.name));
        assert!(a.int.is_none() && a.bool.is_none() && a.version.is_none());
        a.string.as_deref().unwrap()
    }

    fn i(d: &Device, id: &str) -> i64 {
        let a = attr(d, id).unwrap_or_else(|| panic!("{}: no {id}", d.name));
        assert!(a.string.is_none() && a.bool.is_none() && a.version.is_none());
        a.int.unwrap()
    }

    #[test]
    fn device_names_are_dns_labels_and_map_back() {
        assert_eq!(device_name("0000:3b:00.2"), "pci-0000-3b-00-2");
        assert_eq!(device_name("0000:AF:1F.7"), "pci-0000-af-1f-7");
        let n = device_name("0000:3b:00.2");
        assert!(n.len() <= 63);
        assert!(
            n.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        );
        assert_eq!(pci_address_of(&n).unwrap().as_str(), "0000:3b:00.2");
        assert_eq!(pci_address_of("pci-0000-3b-00"), None);
        assert_eq!(pci_address_of("gpu-0000-3b-00-2"), None);
    }

    #[test]
    fn cx6dx_devices_and_typed_attributes() {
        let f = fixture(Profile::Cx6Dx);
        let h = &f.host;
        let devs = devices_of(h, "");
        assert_eq!(devs.len(), 16);
        let mut names: Vec<&str> = devs.iter().map(|d| d.name.as_str()).collect();
        let sorted = names.clone();
        names.sort();
        assert_eq!(names, sorted, "devices come sorted by name");
        let vf = devs
            .iter()
            .find(|d| d.name == device_name(&h.vf_address(1, 3)))
            .unwrap();
        assert_eq!(s(vf, attr::PCI_ADDRESS), h.vf_address(1, 3));
        assert_eq!(s(vf, PCI_BUS_ID_ATTRIBUTE), h.vf_address(1, 3));
        assert_eq!(s(vf, attr::PF_PCI_ADDRESS), h.pf_address(1));
        assert_eq!(s(vf, attr::PF_NAME), "ens1f1");
        assert_eq!(i(vf, attr::VF_INDEX), 3);
        assert_eq!(i(vf, attr::NUMA_NODE), 1);
        assert_eq!(s(vf, attr::VENDOR), "15b3");
        assert_eq!(s(vf, attr::DEVICE_ID), "101e");
        assert_eq!(s(vf, attr::DRIVER), "mlx5_core");
        assert_eq!(s(vf, attr::LINK_TYPE), "ether");
        assert_eq!(s(vf, attr::NETDEV), h.vf_netdev(1, 3));
        assert!(s(vf, attr::RDMA_DEVICE).starts_with("mlx5_"));
        assert_eq!(attr(vf, attr::RDMA).unwrap().bool, Some(true));
        assert_eq!(s(vf, attr::RESOURCE_NAME), "rdma/vhca");
        // simhost puts bus 3b under host bridge pci0000:3a
        assert_eq!(s(vf, PCIE_ROOT_ATTRIBUTE), "pci0000:3a");
        for d in &devs {
            let attrs = d.attributes.as_ref().unwrap();
            assert!(attrs.len() <= MAX_ATTRIBUTES_PER_DEVICE, "{}", d.name);
            for (k, v) in attrs {
                let (domain, id) = k.split_once('/').unwrap();
                assert!(
                    domain == DRIVER || domain == "resource.kubernetes.io",
                    "{k}"
                );
                assert!(id.len() <= MAX_ATTRIBUTE_ID_LEN, "{k}");
                let set = [v.int.is_some(), v.bool.is_some(), v.string.is_some()];
                assert_eq!(set.iter().filter(|b| **b).count(), 1, "{k}: one value");
            }
        }
    }

    #[test]
    fn mixed_vfio_devices_have_no_netdev_and_unbound_are_left_out() {
        let f = fixture(Profile::Mixed);
        let h = &f.host;
        let cfg = r#"{"resourceList":[
            {"resourceName":"cx5_vfio","selectors":{"drivers":["vfio-pci"]}},
            {"resourceName":"cx5_netdev","selectors":{"vendors":["15b3"],"isRdma":true}}]}"#;
        let devs = devices_of(h, cfg);
        let names: Vec<String> = devs.iter().map(|d| d.name.clone()).collect();
        let want: Vec<String> = (0..6).map(|v| device_name(&h.vf_address(0, v))).collect();
        assert_eq!(names, want, "VFs 6-7 are unbound");
        let vfio = &devs[4];
        assert_eq!(s(vfio, attr::DRIVER), "vfio-pci");
        assert_eq!(s(vfio, attr::RESOURCE_NAME), "intel.com/cx5_vfio");
        assert!(attr(vfio, attr::NETDEV).is_none());
        assert_eq!(s(vfio, attr::LINK_TYPE), "ether", "the PF's");
        assert_eq!(attr(vfio, attr::RDMA).unwrap().bool, Some(false));
        assert_eq!(s(&devs[0], attr::RESOURCE_NAME), "intel.com/cx5_netdev");
        assert_eq!(s(&devs[0], attr::DEVICE_ID), "1018");
        assert_eq!(s(&devs[0], PCIE_ROOT_ATTRIBUTE), "pci0000:ae");
    }

    #[test]
    fn passthrough_pf_is_a_device_without_vf_attributes() {
        let mut f = fixture(Profile::Cx6Dx);
        f.host.set_num_vfs(1, 0).unwrap();
        let h = &f.host;
        let cfg = r#"{"resourceList":[{"resourceName":"pf","selectors":{"devices":["101d"]}}]}"#;
        let devs = devices_of(h, cfg);
        // PF 0 carries the default route: only PF 1
        assert_eq!(devs.len(), 1);
        let pf = &devs[0];
        assert_eq!(pf.name, device_name(&h.pf_address(1)));
        assert_eq!(s(pf, attr::NETDEV), "ens1f1");
        assert!(attr(pf, attr::VF_INDEX).is_none() && attr(pf, attr::PF_NAME).is_none());
        assert_eq!(i(pf, attr::NUMA_NODE), 1);
    }

    #[test]
    fn infiniband_vfs_say_so() {
        let f = fixture(Profile::Infiniband);
        let devs = devices_of(&f.host, "");
        assert_eq!(devs.len(), 8);
        for d in &devs {
            assert_eq!(s(d, attr::LINK_TYPE), "infiniband", "{}", d.name);
            assert_eq!(s(d, attr::DEVICE_ID), "101c");
            assert_eq!(s(d, PCIE_ROOT_ATTRIBUTE), "pci0000:5d");
        }
    }

    #[test]
    fn unhealthy_vfs_are_left_out() {
        let f = fixture(Profile::Cx6Dx);
        let h = &f.host;
        h.set_operstate("ens1f1", "down").unwrap();
        let devs = devices_of(h, "");
        assert_eq!(devs.len(), 8);
        assert!(devs.iter().all(|d| s(d, attr::PF_NAME) == "ens1f0"));
    }

    #[test]
    fn large_host_is_one_pool_of_eight_full_slices() {
        let f = fixture(Profile::Large);
        let devs = devices_of(&f.host, "");
        assert_eq!(devs.len(), 1024);
        let slices = build_slices("node-a", DRIVER, &devs, 7);
        assert_eq!(slices.len(), 8);
        let mut seen = std::collections::BTreeSet::new();
        for (n, sl) in slices.iter().enumerate() {
            assert_eq!(
                sl.metadata.name.as_deref(),
                Some(slice_name("node-a", DRIVER, n).as_str())
            );
            let spec = &sl.spec;
            assert_eq!(spec.driver, DRIVER);
            assert_eq!(spec.node_name.as_deref(), Some("node-a"));
            assert!(spec.all_nodes.is_none() && spec.node_selector.is_none());
            assert_eq!(spec.pool.name, "node-a");
            assert_eq!(spec.pool.generation, 7);
            assert_eq!(spec.pool.resource_slice_count, 8);
            let d = spec.devices.as_ref().unwrap();
            assert_eq!(d.len(), MAX_DEVICES_PER_SLICE);
            seen.extend(d.iter().map(|d| d.name.clone()));
        }
        assert_eq!(seen.len(), 1024, "every device in exactly one slice");
        // one device more makes a ninth slice, and every slice says 9
        let mut more = devs.clone();
        more.push(Device {
            name: "pci-0001-00-00-0".into(),
            ..Default::default()
        });
        let slices = build_slices("node-a", DRIVER, &more, 8);
        assert_eq!(slices.len(), 9);
        assert!(slices.iter().all(|s| s.spec.pool.resource_slice_count == 9));
        assert_eq!(slices[8].spec.devices.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn no_devices_is_one_empty_slice() {
        let slices = build_slices("n", DRIVER, &[], 1);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].spec.devices.is_none());
        assert_eq!(slices[0].spec.pool.resource_slice_count, 1);
    }

    #[test]
    fn pcie_root_follows_the_sysfs_link_through_bridges() {
        let d = crate::testutil::tempdir();
        let root = d.path();
        let dev = root.join("sys/devices/pci0000:00/0000:00:01.0/0000:02:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0000:00/0000:00:01.0/0000:02:00.0",
            root.join("sys/bus/pci/devices/0000:02:00.0"),
        )
        .unwrap();
        assert_eq!(
            pcie_root(root, "0000:02:00.0").as_deref(),
            Some("pci0000:00")
        );
        assert_eq!(pcie_root(root, "0000:03:00.0"), None, "no link");
        // a link into something that is not a pci root complex
        std::fs::create_dir_all(root.join("sys/devices/virtual/0000:04:00.0")).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/virtual/0000:04:00.0",
            root.join("sys/bus/pci/devices/0000:04:00.0"),
        )
        .unwrap();
        assert_eq!(pcie_root(root, "0000:04:00.0"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_names("node-1", DRIVER).is_ok());
        let long = format!("{}.example.org", "a".repeat(60));
        assert!(matches!(
            check_names("node-1", &long),
            Err(SliceError::BadDriverName { .. })
        ));
        assert!(matches!(
            check_names("node-1", "Sriov.Example"),
            Err(SliceError::BadDriverName { .. })
        ));
        assert!(matches!(
            check_names("Node_1", DRIVER),
            Err(SliceError::BadNodeName { .. })
        ));
        let e = check_names("node-1", "-bad").unwrap_err().to_string();
        assert!(e.contains("-bad"), "{e}");
    }
}
