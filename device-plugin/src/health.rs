//! Device health across rescans: what one sysfs snapshot cannot say on its own.
//!
//! [`crate::pools`] marks a VF unhealthy when it has no driver or its (or its PF's) link
//! is down. Two cases need more than the snapshot:
//!
//! - A VF on its kernel driver whose netdev is not visible: either its netdev moved into a
//!   pod's netns (the CNI does that; the VF is allocated and fine) or it vanished. The
//!   device-info file written at `Allocate` tells them apart: with one, the VF is held by a
//!   pod and stays healthy; without one, the netdev vanished and the VF is unhealthy.
//!   (Without a device-info directory nothing tells them apart; the VF counts as held.)
//! - A VF that leaves a pool because it lost what the pool selects it by (its driver was
//!   unbound, its RDMA device went away): kubelet must see it `Unhealthy`, not gone, so it
//!   stays listed (unhealthy) while its PCI function exists and no other pool took it.
//!   (An `isRdma` pool's VF whose netdev and RDMA device both moved into a pod, in
//!   exclusive RDMA netns mode, stays listed and healthy while a pod holds it.)
//!   It comes back healthy when the driver or device returns. A VF that was rebound to a
//!   user-space driver, or removed (`sriov_numvfs` lowered), leaves the list.
//!
//! Shared HCA resources need nothing here: their RDMA devices are re-collected on each
//! scan, and all IDs turn unhealthy when none with a verbs device is left
//! ([`crate::pools::SharedHca::healthy`]).

use crate::pools::{PoolDevice, Pools, Resource, ResourceDevices};
use crate::selectors::USERSPACE_DRIVERS;
use rdma_hca::{Inventory, PciFunction};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn userspace(driver: Option<&str>) -> bool {
    driver.is_some_and(|d| USERSPACE_DRIVERS.contains(&d))
}

/// The health verdict for a pool device whose function is `f` now; `before` is how the
/// device looked in the previous scan, `held` whether a pod holds it (device-info file).
pub fn judge(f: &PciFunction, inv: &Inventory, before: Option<&PoolDevice>, held: bool) -> bool {
    // bound, and the link rule of the snapshot (a free VF's own netdev may be down)
    if !crate::pools::healthy(f, inv) {
        return false;
    }
    if userspace(f.driver.as_deref()) {
        return true;
    }
    if f.netdevs.is_empty() {
        // moved into a pod (held) or vanished
        return held;
    }
    // netdev visible but the RDMA device it had is gone
    let had_rdma = before.is_some_and(|b| !b.rdma.is_empty());
    !(had_rdma && inv.rdma_of(f).next().is_none())
}

/// Refine the health of freshly computed `pools` given the devices served before
/// (`before`, by full resource name) and `held(resource, device id)`; see the module docs.
pub fn refine(
    pools: &mut Pools,
    inv: &Inventory,
    before: &BTreeMap<String, Arc<Resource>>,
    held: impl Fn(&Resource, &str) -> bool,
) {
    let taken: BTreeSet<String> = pools
        .resources
        .iter()
        .filter_map(|r| match &r.devices {
            ResourceDevices::Pool(d) => Some(d.keys().cloned()),
            ResourceDevices::Shared(_) => None,
        })
        .flatten()
        .collect();
    for r in &mut pools.resources {
        let old = before.get(&r.full_name()).filter(|o| o.config == r.config);
        let old_devs = match old.map(|o| &o.devices) {
            Some(ResourceDevices::Pool(d)) => Some(d),
            _ => None,
        };
        let mut verdicts: Vec<(String, bool)> = Vec::new();
        let mut carried: Vec<PoolDevice> = Vec::new();
        if let ResourceDevices::Pool(devs) = &r.devices {
            for (id, d) in devs {
                if let Some(f) = inv.function(&d.address) {
                    let b = old_devs.and_then(|o| o.get(id));
                    verdicts.push((id.clone(), d.healthy && judge(f, inv, b, held(r, id))));
                }
            }
            for (id, o) in old_devs.into_iter().flatten() {
                if devs.contains_key(id) || taken.contains(id) {
                    continue;
                }
                let Some(f) = inv.function(&o.address) else {
                    continue; // removed: gone from the list
                };
                if userspace(f.driver.as_deref()) && !userspace(o.driver.as_deref()) {
                    continue; // rebound on purpose
                }
                // It no longer qualifies for the pool: unhealthy, unless its netdev (and
                // with it, in exclusive RDMA netns mode, its RDMA device) is in a pod.
                let in_pod = f.netdevs.is_empty() && judge(f, inv, Some(o), held(r, id));
                carried.push(PoolDevice {
                    driver: f.driver.clone(),
                    netdevs: f.netdevs.clone(),
                    rdma: inv.rdma_of(f).cloned().collect(),
                    healthy: in_pod,
                    ..o.clone()
                });
            }
        }
        if let ResourceDevices::Pool(devs) = &mut r.devices {
            for (id, h) in verdicts {
                if let Some(d) = devs.get_mut(&id) {
                    d.healthy = h;
                }
            }
            for d in carried {
                devs.insert(d.address.to_string(), d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use rdma_hca::Host;
    use simhost::{Profile, SimHost};
    use std::path::Path;

    fn scan(root: &Path, cfg: &Config) -> (Inventory, Pools) {
        let inv = Host::new(root).inventory().unwrap();
        let p = Pools::compute(&inv, cfg, false);
        (inv, p)
    }

    /// Scan again and refine against what `prev` served; `held(id)`: a pod holds it.
    fn rescan(
        root: &Path,
        cfg: &Config,
        prev: &Pools,
        held: impl Fn(&Resource, &str) -> bool,
    ) -> Pools {
        let before: BTreeMap<String, Arc<Resource>> = prev
            .resources
            .iter()
            .map(|r| (r.full_name(), Arc::new(r.clone())))
            .collect();
        let (inv, mut p) = scan(root, cfg);
        refine(&mut p, &inv, &before, held);
        p
    }

    fn health(p: &Pools, res: &str, id: &str) -> Option<bool> {
        match &p.resource(res).unwrap().devices {
            ResourceDevices::Pool(d) => d.get(id).map(|d| d.healthy),
            ResourceDevices::Shared(_) => None,
        }
    }

    /// A VF pool selecting by `isRdma`.
    fn rdma_pool() -> Config {
        Config::parse(
            Path::new("t.json"),
            r#"{"resourceList":[{"resourceName":"r","selectors":{"vendors":["15b3"],"isRdma":true}}]}"#,
        )
        .unwrap()
    }

    /// Remove the RDMA device of the function at `addr` from the host's view.
    fn drop_rdma(root: &Path, addr: &str) {
        let inv = Host::new(root).inventory().unwrap();
        let f = inv.function(&addr.parse().unwrap()).unwrap();
        let rdma = inv.rdma_of(f).next().unwrap().name.clone();
        let dev = std::fs::canonicalize(root.join("sys/bus/pci/devices").join(addr)).unwrap();
        std::fs::remove_dir_all(dev.join("infiniband").join(&rdma)).unwrap();
        std::fs::remove_file(root.join("sys/class/infiniband").join(&rdma)).unwrap();
    }

    #[test]
    fn vanished_netdev_is_unhealthy_unless_held() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        let cfg = Config::embedded();
        let (_, p0) = scan(d.path(), &cfg);
        let (a, b) = (h.vf_address(1, 0), h.vf_address(1, 1));
        h.remove_netdev(&a, &h.vf_netdev(1, 0)).unwrap();
        h.remove_netdev(&b, &h.vf_netdev(1, 1)).unwrap();
        let p = rescan(d.path(), &cfg, &p0, |_, id| id == b);
        assert_eq!(health(&p, "rdma/vhca", &a), Some(false), "vanished");
        assert_eq!(health(&p, "rdma/vhca", &b), Some(true), "moved into a pod");
        assert_eq!(health(&p, "rdma/vhca", &h.vf_address(1, 2)), Some(true));
    }

    #[test]
    fn free_vf_with_its_netdev_down_stays_healthy_across_rescans() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        let cfg = Config::embedded();
        let (_, p0) = scan(d.path(), &cfg);
        let a = h.vf_address(1, 4);
        h.set_operstate(&h.vf_netdev(1, 4), "down").unwrap();
        let p = rescan(d.path(), &cfg, &p0, |_, _| false);
        assert_eq!(health(&p, "rdma/vhca", &a), Some(true), "own netdev down");
        // the PF's link going down still counts
        h.set_operstate("ens1f1", "down").unwrap();
        let p = rescan(d.path(), &cfg, &p, |_, _| false);
        assert_eq!(health(&p, "rdma/vhca", &a), Some(false), "PF link down");
    }

    #[test]
    fn unbound_vf_stays_listed_unhealthy_and_recovers() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        let cfg = Config::embedded();
        let (_, p0) = scan(d.path(), &cfg);
        let a = h.vf_address(1, 3);
        h.unbind(&a).unwrap();
        let p = rescan(d.path(), &cfg, &p0, |_, _| false);
        assert_eq!(health(&p, "rdma/vhca", &a), Some(false));
        // stable across the next rescan
        let p = rescan(d.path(), &cfg, &p, |_, _| false);
        assert_eq!(health(&p, "rdma/vhca", &a), Some(false));
        // driver back, netdev and RDMA device back: healthy
        h.bind(&a, "mlx5_core").unwrap();
        h.add_netdev(&a, &h.vf_netdev(1, 3), 1, true, "02:00:00:00:01:03")
            .unwrap();
        h.add_rdma(&a, "mlx5_90").unwrap();
        let p = rescan(d.path(), &cfg, &p, |_, _| false);
        assert_eq!(health(&p, "rdma/vhca", &a), Some(true));
    }

    #[test]
    fn removed_or_rebound_vfs_leave_the_list() {
        let d = crate::testutil::tempdir();
        let mut h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        let cfg = Config::embedded();
        let (_, p0) = scan(d.path(), &cfg);
        let gone = h.vf_address(1, 7);
        let vfio = h.vf_address(1, 0);
        h.set_num_vfs(1, 4).unwrap();
        h.unbind(&vfio).unwrap();
        h.bind(&vfio, "vfio-pci").unwrap();
        let p = rescan(d.path(), &cfg, &p0, |_, _| false);
        assert_eq!(health(&p, "rdma/vhca", &gone), None);
        assert_eq!(health(&p, "rdma/vhca", &vfio), None);
        assert_eq!(health(&p, "rdma/vhca", &h.vf_address(1, 1)), Some(true));
    }

    #[test]
    fn rdma_pool_vf_moved_into_a_pod_with_its_rdma_device_stays_healthy() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        let cfg = rdma_pool();
        let (_, p0) = scan(d.path(), &cfg);
        let (a, b) = (h.vf_address(1, 2), h.vf_address(1, 3));
        // exclusive netns mode: netdev and RDMA device leave the host's view together
        for (addr, vf) in [(&a, 2), (&b, 3)] {
            drop_rdma(d.path(), addr);
            h.remove_netdev(addr, &h.vf_netdev(1, vf)).unwrap();
        }
        let p = rescan(d.path(), &cfg, &p0, |_, id| id == a);
        assert_eq!(health(&p, "intel.com/r", &a), Some(true), "in a pod");
        assert_eq!(health(&p, "intel.com/r", &b), Some(false), "vanished");
    }

    #[test]
    fn lost_rdma_device_is_unhealthy() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Cx6Dx).unwrap();
        let cfg = rdma_pool();
        let (_, p0) = scan(d.path(), &cfg);
        let a = h.vf_address(1, 2);
        // drop the VF's RDMA device, keep its netdev
        drop_rdma(d.path(), &a);
        let p = rescan(d.path(), &cfg, &p0, |_, _| false);
        assert_eq!(health(&p, "intel.com/r", &a), Some(false));
    }
}
