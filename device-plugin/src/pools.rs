//! Inventory + config -> resources.
//!
//! Shared HCA resources collect the RDMA devices of every function their selectors
//! match (they are shared, so nothing is taken from anyone). VF pools take functions one
//! each; a function joins the first pool that matches, and is considered only if it
//! is handed out safely: never one carrying the default route, never a PF with VFs
//! enabled (its VFs are the devices), never one without a driver. [`Pools::placements`]
//! says, for every network function, which resources it serves and why it is in no
//! VF pool.

use crate::config::{AllocationPolicy, Config, DeviceType, ResourceConfig, ResourceKind};
use crate::selectors::{MatchContext, first_match};
use rdma_hca::{Inventory, OperState, PciAddress, PciFunction, RdmaDevice};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Why a function is in no VF pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Exclusion {
    /// One of its netdevs carries a default route: the node's own uplink.
    #[serde(rename = "default route")]
    DefaultRoute,
    /// A PF with `sriov_numvfs > 0`: its VFs are handed out instead.
    #[serde(rename = "PF with VFs enabled")]
    PfWithVfs,
    /// Not bound to any driver.
    #[serde(rename = "no driver")]
    NoDriver,
    /// No VF pool's selectors match it.
    #[serde(rename = "no selector matched")]
    NoSelectorMatched,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exclusion::DefaultRoute => "default route",
            Exclusion::PfWithVfs => "PF with VFs enabled",
            Exclusion::NoDriver => "no driver",
            Exclusion::NoSelectorMatched => "no selector matched",
        })
    }
}

/// Where one function landed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Full names of the resources it serves.
    pub pools: Vec<String>,
    /// Why it is in no VF pool (`None` when it is in one).
    pub excluded: Option<Exclusion>,
}

/// One device of a VF pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDevice {
    /// Its PCI address (the device ID kubelet sees).
    pub address: PciAddress,
    /// Its PF, for a VF.
    pub pf: Option<PciAddress>,
    /// Its VF index on the PF.
    pub vf_index: Option<u32>,
    /// NUMA node.
    pub numa_node: Option<u32>,
    /// Bound driver.
    pub driver: Option<String>,
    /// Its netdevs.
    pub netdevs: Vec<String>,
    /// Its RDMA devices with their char devices.
    pub rdma: Vec<RdmaDevice>,
    /// IOMMU group (for vfio).
    pub iommu_group: Option<u32>,
    /// Whether it can be used now.
    pub healthy: bool,
}

impl PoolDevice {
    /// Whether it is bound to `vfio-pci`.
    pub fn is_vfio(&self) -> bool {
        self.driver.as_deref() == Some("vfio-pci")
    }
}

/// The devices behind a shared HCA resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHca {
    /// Number of virtual IDs advertised.
    pub max: u32,
    /// The functions whose RDMA devices are shared.
    pub functions: Vec<PciAddress>,
    /// The shared RDMA devices.
    pub rdma: Vec<RdmaDevice>,
    /// NUMA nodes of those functions.
    pub numa_nodes: Vec<u32>,
}

impl SharedHca {
    /// Usable when at least one RDMA device has a verbs device.
    pub fn healthy(&self) -> bool {
        self.rdma.iter().any(|d| d.char_devices.uverbs.is_some())
    }

    /// The virtual device ID number `i`.
    pub fn id(name: &str, i: u32) -> String {
        format!("{name}-{i}")
    }
}

/// What a resource hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceDevices {
    /// A shared HCA.
    Shared(SharedHca),
    /// VF pool devices by PCI address.
    Pool(BTreeMap<String, PoolDevice>),
}

/// One device as advertised to kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// The device ID.
    pub id: String,
    /// Healthy or not.
    pub healthy: bool,
    /// NUMA nodes (empty = no topology).
    pub numa_nodes: Vec<u32>,
}

/// A resource with its devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its config.
    pub config: ResourceConfig,
    /// Its devices.
    pub devices: ResourceDevices,
}

impl Resource {
    /// `prefix/name`.
    pub fn full_name(&self) -> String {
        self.config.full_name()
    }

    /// The socket file name in the device-plugin directory (`intel.com_cx_vf.sock`).
    pub fn socket_name(&self) -> String {
        format!("{}_{}.sock", self.config.prefix, self.config.name)
    }

    /// The device list for ListAndWatch.
    pub fn advertised(&self) -> Vec<Advertised> {
        match &self.devices {
            ResourceDevices::Shared(s) => {
                let healthy = s.healthy();
                (0..s.max)
                    .map(|i| Advertised {
                        id: SharedHca::id(&self.config.name, i),
                        healthy,
                        numa_nodes: s.numa_nodes.clone(),
                    })
                    .collect()
            }
            ResourceDevices::Pool(devs) => {
                let exclude = matches!(
                    self.config.kind,
                    ResourceKind::VfPool {
                        exclude_topology: true,
                        ..
                    }
                );
                devs.values()
                    .map(|d| Advertised {
                        id: d.address.to_string(),
                        healthy: d.healthy,
                        numa_nodes: if exclude {
                            vec![]
                        } else {
                            d.numa_node.into_iter().collect()
                        },
                    })
                    .collect()
            }
        }
    }

    /// What a container of this resource gets mounted besides the device itself:
    /// (RDMA char devices, `/dev/vhost-net` + `/dev/net/tun`).
    pub fn mounts(&self) -> (bool, bool) {
        match self.config.kind {
            ResourceKind::VfPool {
                mount_rdma,
                mount_vhost_net,
                ..
            } => (mount_rdma, mount_vhost_net),
            ResourceKind::SharedHca { .. } => (false, false),
        }
    }

    /// The pool's allocation policy (spread for shared resources).
    pub fn policy(&self) -> AllocationPolicy {
        match self.config.kind {
            ResourceKind::VfPool { policy, .. } => policy,
            ResourceKind::SharedHca { .. } => AllocationPolicy::Spread,
        }
    }
}

/// All resources and where every network function landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pools {
    /// Resources in config order.
    pub resources: Vec<Resource>,
    /// Placement of every network-class function and every pooled function.
    pub placements: BTreeMap<PciAddress, Placement>,
}

/// Whether a function is a network controller (PCI class 02xxxx).
pub fn is_network(f: &PciFunction) -> bool {
    f.class.starts_with("02")
}

/// Health of a function: bound, and the physical link not down: the PF's netdevs for a
/// VF, its own for a PF. A VF's own netdev is not looked at: a free VF's netdev is
/// normally down until a pod brings it up (seen on real igb VFs in the QEMU lab).
/// The one link rule: [`crate::health`] builds on it across rescans.
pub(crate) fn healthy(f: &PciFunction, inv: &Inventory) -> bool {
    let down = |n: &rdma_hca::Netdev| {
        matches!(
            n.operstate,
            OperState::Down | OperState::LowerLayerDown | OperState::NotPresent
        )
    };
    if f.driver.is_none() {
        return false;
    }
    match &f.physfn {
        Some(pf) => inv
            .function(pf)
            .is_none_or(|pf| !inv.netdevs_of(pf).any(down)),
        None => !inv.netdevs_of(f).any(down),
    }
}

fn exclusion(f: &PciFunction, inv: &Inventory) -> Option<Exclusion> {
    if inv.carries_default_route(f) {
        Some(Exclusion::DefaultRoute)
    } else if f.sriov.is_some_and(|s| s.num_vfs > 0) {
        Some(Exclusion::PfWithVfs)
    } else if f.driver.is_none() {
        Some(Exclusion::NoDriver)
    } else {
        None
    }
}

impl Pools {
    /// Compute the resources of `config` over `inv`. `vhost_net` says whether the host
    /// has `/dev/vhost-net` (for `needVhostNet`).
    pub fn compute(inv: &Inventory, config: &Config, vhost_net: bool) -> Pools {
        let cx = MatchContext {
            inventory: inv,
            vhost_net,
        };
        let mut resources: Vec<Resource> = config
            .resources
            .iter()
            .map(|rc| Resource {
                config: rc.clone(),
                devices: match rc.kind {
                    ResourceKind::SharedHca { max, .. } => ResourceDevices::Shared(SharedHca {
                        max,
                        functions: vec![],
                        rdma: vec![],
                        numa_nodes: vec![],
                    }),
                    ResourceKind::VfPool { .. } => ResourceDevices::Pool(BTreeMap::new()),
                },
            })
            .collect();
        let mut numa: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); resources.len()];
        let mut placements = BTreeMap::new();
        for f in inv.functions.values() {
            let mut placement = Placement::default();
            let mut pooled = false;
            for (ri, r) in resources.iter_mut().enumerate() {
                let full = r.full_name();
                match (&r.config.kind, &mut r.devices) {
                    (ResourceKind::SharedHca { selectors, .. }, ResourceDevices::Shared(s))
                        if selectors.matches(f, &cx) && inv.rdma_of(f).next().is_some() =>
                    {
                        s.functions.push(f.address.clone());
                        s.rdma.extend(inv.rdma_of(f).cloned());
                        numa[ri].extend(f.numa_node);
                        placement.pools.push(full);
                    }
                    (
                        ResourceKind::VfPool {
                            device_type,
                            selectors,
                            ..
                        },
                        ResourceDevices::Pool(devs),
                    ) => {
                        if pooled || exclusion(f, inv).is_some() {
                            continue;
                        }
                        if *device_type == DeviceType::NetDevice && !is_network(f) {
                            continue;
                        }
                        if first_match(selectors, f, &cx).is_some() {
                            pooled = true;
                            devs.insert(
                                f.address.to_string(),
                                PoolDevice {
                                    address: f.address.clone(),
                                    pf: f.physfn.clone(),
                                    vf_index: f.vf_index,
                                    numa_node: f.numa_node,
                                    driver: f.driver.clone(),
                                    netdevs: f.netdevs.clone(),
                                    rdma: inv.rdma_of(f).cloned().collect(),
                                    iommu_group: f.iommu_group,
                                    healthy: healthy(f, inv),
                                },
                            );
                            placement.pools.push(full);
                        }
                    }
                    _ => {}
                }
            }
            if !pooled {
                placement.excluded =
                    Some(exclusion(f, inv).unwrap_or(Exclusion::NoSelectorMatched));
            }
            if is_network(f) || !placement.pools.is_empty() {
                placements.insert(f.address.clone(), placement);
            }
        }
        for (r, n) in resources.iter_mut().zip(numa) {
            if let ResourceDevices::Shared(s) = &mut r.devices {
                s.numa_nodes = n.into_iter().collect();
            }
        }
        Pools {
            resources,
            placements,
        }
    }

    /// A resource by full name.
    pub fn resource(&self, full_name: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.full_name() == full_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdma_hca::Host;
    use simhost::{Profile, SimHost};
    use std::path::Path;

    fn setup(p: Profile, config: &str) -> (tempfile::TempDir, SimHost, Pools) {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), p).unwrap();
        let inv = Host::new(d.path()).inventory().unwrap();
        let cfg = if config.is_empty() {
            Config::embedded()
        } else {
            Config::parse(Path::new("test.json"), config).unwrap()
        };
        let pools = Pools::compute(&inv, &cfg, false);
        (d, h, pools)
    }

    fn pool(p: &Pools, name: &str) -> Vec<String> {
        match &p.resource(name).unwrap().devices {
            ResourceDevices::Pool(d) => d.keys().cloned().collect(),
            ResourceDevices::Shared(_) => panic!("{name} is shared"),
        }
    }

    fn shared(p: &Pools, name: &str) -> SharedHca {
        match &p.resource(name).unwrap().devices {
            ResourceDevices::Shared(s) => s.clone(),
            ResourceDevices::Pool(_) => panic!("{name} is a pool"),
        }
    }

    fn placement(p: &Pools, addr: &str) -> Placement {
        p.placements[&addr.parse::<PciAddress>().unwrap()].clone()
    }

    #[test]
    fn cx6dx_embedded_default() {
        let (_d, h, p) = setup(Profile::Cx6Dx, "");
        let hca = shared(&p, "rdma/hca");
        assert_eq!(hca.functions.len(), 2);
        assert_eq!(hca.numa_nodes, vec![0, 1]);
        assert_eq!(hca.rdma.len(), 2);
        assert!(hca.healthy());
        let vhca = pool(&p, "rdma/vhca");
        assert_eq!(vhca.len(), 16);
        let adv = p.resource("rdma/hca").unwrap().advertised();
        assert_eq!(adv.len(), 1000);
        assert_eq!(adv[0].numa_nodes, vec![0, 1]);
        // the PF with the default route serves rdma/hca but is in no VF pool
        let pf0 = placement(&p, &h.pf_address(0));
        assert_eq!(pf0.pools, vec!["rdma/hca"]);
        assert_eq!(pf0.excluded, Some(Exclusion::DefaultRoute));
        let pf1 = placement(&p, &h.pf_address(1));
        assert_eq!(pf1.excluded, Some(Exclusion::PfWithVfs));
        let vf = placement(&p, &h.vf_address(1, 7));
        assert_eq!(vf.pools, vec!["rdma/vhca"]);
        assert_eq!(vf.excluded, None);
        let adv = p.resource("rdma/vhca").unwrap().advertised();
        let vf17 = adv.iter().find(|a| a.id == h.vf_address(1, 7)).unwrap();
        assert_eq!(vf17.numa_nodes, vec![1]);
        assert!(vf17.healthy);
    }

    #[test]
    fn mixed_profile_exclusions_and_vfio_pool() {
        let cfg = r#"{"resourceList":[
            {"resourceName":"cx5_vfio","selectors":{"drivers":["vfio-pci"]}},
            {"resourceName":"cx5_netdev","selectors":{"vendors":["15b3"],"isRdma":true}}]}"#;
        let (_d, h, p) = setup(Profile::Mixed, cfg);
        assert_eq!(
            pool(&p, "intel.com/cx5_vfio"),
            vec![h.vf_address(0, 4), h.vf_address(0, 5)]
        );
        let want: Vec<String> = (0..4).map(|v| h.vf_address(0, v)).collect();
        assert_eq!(pool(&p, "intel.com/cx5_netdev"), want);
        assert_eq!(
            placement(&p, &h.vf_address(0, 6)).excluded,
            Some(Exclusion::NoDriver)
        );
        assert_eq!(
            placement(&p, &h.pf_address(0)).excluded,
            Some(Exclusion::PfWithVfs)
        );
        let ResourceDevices::Pool(devs) = &p.resource("intel.com/cx5_vfio").unwrap().devices else {
            panic!()
        };
        let d = &devs[&h.vf_address(0, 4)];
        assert!(d.is_vfio() && d.iommu_group.is_some() && d.netdevs.is_empty());
    }

    #[test]
    fn first_pool_wins_and_unmatched_are_reported() {
        let cfg = r#"{"resourceList":[
            {"resourceName":"a","selectors":{"pfNames":["ens1f1#0-3"]}},
            {"resourceName":"b","selectors":{"pfNames":["ens1f1"]}}]}"#;
        let (_d, h, p) = setup(Profile::Cx6Dx, cfg);
        assert_eq!(pool(&p, "intel.com/a").len(), 4);
        assert_eq!(pool(&p, "intel.com/b").len(), 4);
        assert!(pool(&p, "intel.com/b").contains(&h.vf_address(1, 4)));
        assert_eq!(
            placement(&p, &h.vf_address(0, 0)).excluded,
            Some(Exclusion::NoSelectorMatched)
        );
    }

    #[test]
    fn infiniband_shared_config() {
        let cfg = r#"{"configList":[{"resourceName":"ib_hca","rdmaHcaMax":10,
            "selectors":{"linkTypes":["infiniband"],"deviceIDs":["101b"]}}]}"#;
        let (_d, _h, p) = setup(Profile::Infiniband, cfg);
        let s = shared(&p, "rdma/ib_hca");
        assert_eq!(s.functions.len(), 2);
        assert_eq!(s.numa_nodes, vec![0]);
        assert_eq!(p.resource("rdma/ib_hca").unwrap().advertised().len(), 10);
        assert!(s.rdma.iter().all(|d| d.char_devices.uverbs.is_some()));
    }

    #[test]
    fn large_profile_counts() {
        let (_d, _h, p) = setup(Profile::Large, "");
        assert_eq!(pool(&p, "rdma/vhca").len(), 1024);
        assert_eq!(shared(&p, "rdma/hca").functions.len(), 16);
        assert_eq!(p.placements.len(), 1040);
    }

    #[test]
    fn health_follows_pf_link() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        h.set_operstate("ens1f1", "down").unwrap();
        // a free VF's own netdev is down until a pod brings it up: still healthy
        h.set_operstate(&h.vf_netdev(0, 3), "down").unwrap();
        let inv = Host::new(d.path()).inventory().unwrap();
        let p = Pools::compute(&inv, &Config::embedded(), false);
        let adv = p.resource("rdma/vhca").unwrap().advertised();
        for a in adv {
            let on_pf1 = (0..8).any(|v| h.vf_address(1, v) == a.id);
            assert_eq!(a.healthy, !on_pf1, "{}", a.id);
        }
    }

    #[test]
    fn exclude_topology_drops_numa() {
        let cfg = r#"{"resourceList":[{"resourceName":"a","excludeTopology":true,"selectors":{"vendors":["15b3"]}}]}"#;
        let (_d, _h, p) = setup(Profile::Cx6Dx, cfg);
        let adv = p.resource("intel.com/a").unwrap().advertised();
        assert_eq!(adv.len(), 16);
        assert!(adv.iter().all(|a| a.numa_nodes.is_empty()));
    }
}
