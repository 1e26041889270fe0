//! `GetPreferredAllocation`: which of the available devices to give a container.
//!
//! # Policy (VF pools)
//! 1. Every ID in `must_include` comes first, in the order given (kubelet puts devices it
//!    already decided on there), up to `size`.
//! 2. The rest come from the available IDs that the pool knows, preferring a single
//!    NUMA node: the node of the must-include devices first (when it cannot hold them
//!    all, it is filled before another node is opened); without must-include devices,
//!    the node with the most available devices among those that can hold them all
//!    (ties: lowest node number). The remainder comes from the other nodes in order of
//!    most available devices.
//!    Devices without a NUMA node form a group of their own, used last.
//! 3. Within a node, the pool's `allocationPolicy` orders the VFs:
//!    - `spread` (default): one VF per PF before two on one — the next VF comes from the
//!      PF with the fewest VFs chosen so far (counting must-include ones; ties: lower PF
//!      address), lowest VF index first. Spreading keeps a pod's bandwidth off a single
//!      port.
//!    - `pack`: fill the PF already used most (then the one with most free VFs) before
//!      opening another, keeping other PFs whole for later requests.
//!
//! Unknown IDs in `available` are ignored (kubelet only offers what we advertised, and a
//! concurrent rescan may have dropped one). For a shared HCA all IDs are the same, so the
//! answer is `must_include` then the first available IDs.

use crate::config::AllocationPolicy;
use crate::pools::{PoolDevice, Resource, ResourceDevices};
use std::collections::{BTreeMap, HashSet};

/// Choose `size` IDs for one container of `resource`.
pub fn preferred(
    resource: &Resource,
    available: &[String],
    must_include: &[String],
    size: usize,
) -> Vec<String> {
    match &resource.devices {
        ResourceDevices::Shared(_) => simple(available, must_include, size),
        ResourceDevices::Pool(devs) => pool(devs, available, must_include, size, resource.policy()),
    }
}

fn simple(available: &[String], must_include: &[String], size: usize) -> Vec<String> {
    let mut seen = HashSet::new();
    must_include
        .iter()
        .chain(available)
        .filter(|id| seen.insert(id.as_str()))
        .take(size)
        .cloned()
        .collect()
}

/// NUMA group key: a node, or `u32::MAX` for devices without one.
fn node_of(d: &PoolDevice) -> u32 {
    d.numa_node.unwrap_or(u32::MAX)
}

/// The VF-pool policy over `devs`.
pub fn pool(
    devs: &BTreeMap<String, PoolDevice>,
    available: &[String],
    must_include: &[String],
    size: usize,
    policy: AllocationPolicy,
) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::with_capacity(size);
    let mut taken: HashSet<&str> = HashSet::new();
    for id in must_include {
        if chosen.len() == size {
            break;
        }
        if taken.insert(id.as_str()) {
            chosen.push(id.clone());
        }
    }
    let need = size - chosen.len();
    if need == 0 {
        return chosen;
    }
    // candidates grouped by NUMA node
    let mut by_node: BTreeMap<u32, Vec<&PoolDevice>> = BTreeMap::new();
    for id in available {
        if taken.contains(id.as_str()) {
            continue;
        }
        if let Some(d) = devs.get(id.as_str())
            && taken.insert(id.as_str())
        {
            by_node.entry(node_of(d)).or_default().push(d);
        }
    }
    // PF usage so far (must-include devices count)
    let mut per_pf: BTreeMap<String, usize> = BTreeMap::new();
    let mut must_nodes: BTreeMap<u32, usize> = BTreeMap::new();
    for id in &chosen {
        if let Some(d) = devs.get(id.as_str()) {
            *per_pf.entry(pf_key(d)).or_default() += 1;
            *must_nodes.entry(node_of(d)).or_default() += 1;
        }
    }
    let must_node = must_nodes
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(n, _)| *n);
    // order of nodes to draw from
    let mut nodes: Vec<u32> = by_node.keys().copied().collect();
    let count = |n: &u32| by_node.get(n).map_or(0, Vec::len);
    nodes.sort_by(|a, b| {
        let real = |n: &u32| *n != u32::MAX;
        real(b)
            .cmp(&real(a))
            .then(count(b).cmp(&count(a)))
            .then(a.cmp(b))
    });
    // the must-include devices' node first (even when it cannot hold all: the fewer
    // nodes the better), else the fullest node that holds all
    let single = match must_node {
        Some(n) if count(&n) > 0 => Some(n),
        _ => nodes
            .iter()
            .copied()
            .find(|n| *n != u32::MAX && count(n) >= need),
    };
    if let Some(n) = single {
        nodes.retain(|x| *x != n);
        nodes.insert(0, n);
    }
    for n in nodes {
        let Some(cands) = by_node.remove(&n) else {
            continue;
        };
        let want = size - chosen.len();
        for d in order_within(cands, &mut per_pf, want, policy) {
            chosen.push(d.address.to_string());
        }
        if chosen.len() == size {
            break;
        }
    }
    chosen
}

fn pf_key(d: &PoolDevice) -> String {
    d.pf.as_ref().unwrap_or(&d.address).to_string()
}

/// Pick `want` devices of one node per policy, updating `per_pf`.
fn order_within<'a>(
    cands: Vec<&'a PoolDevice>,
    per_pf: &mut BTreeMap<String, usize>,
    want: usize,
    policy: AllocationPolicy,
) -> Vec<&'a PoolDevice> {
    // per PF, VFs by index
    let mut queues: BTreeMap<String, std::collections::VecDeque<&PoolDevice>> = BTreeMap::new();
    for d in cands {
        queues.entry(pf_key(d)).or_default().push_back(d);
    }
    for q in queues.values_mut() {
        q.make_contiguous()
            .sort_by_key(|d| (d.vf_index.unwrap_or(u32::MAX), d.address.clone()));
    }
    let mut out = Vec::with_capacity(want);
    while out.len() < want {
        let pick = queues
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .min_by(|(pa, qa), (pb, qb)| {
                let ua = per_pf.get(*pa).copied().unwrap_or(0);
                let ub = per_pf.get(*pb).copied().unwrap_or(0);
                match policy {
                    AllocationPolicy::Spread => ua.cmp(&ub).then(pa.cmp(pb)),
                    AllocationPolicy::Pack => {
                        ub.cmp(&ua).then(qb.len().cmp(&qa.len())).then(pa.cmp(pb))
                    }
                }
            })
            .map(|(pf, _)| pf.clone());
        let Some(pf) = pick else {
            break;
        };
        if let Some(d) = queues.get_mut(&pf).and_then(|q| q.pop_front()) {
            *per_pf.entry(pf).or_default() += 1;
            out.push(d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdma_hca::PciAddress;

    /// A pool of `pfs` PFs with `vfs` VFs each; PF i sits on NUMA node `numa[i]`.
    fn devs(numa: &[Option<u32>], vfs: u32) -> BTreeMap<String, PoolDevice> {
        let mut m = BTreeMap::new();
        for (p, n) in numa.iter().enumerate() {
            for v in 0..vfs {
                let addr: PciAddress = format!("0000:{:02x}:00.{}", 0x10 + p, 0).parse().unwrap();
                let vf: PciAddress = format!("0000:{:02x}:{:02x}.{}", 0x10 + p, 1 + v / 8, v % 8)
                    .parse()
                    .unwrap();
                m.insert(
                    vf.to_string(),
                    PoolDevice {
                        address: vf,
                        pf: Some(addr),
                        vf_index: Some(v),
                        numa_node: *n,
                        driver: Some("mlx5_core".into()),
                        netdevs: vec![],
                        rdma: vec![],
                        iommu_group: None,
                        healthy: true,
                    },
                );
            }
        }
        m
    }

    fn pf_of(d: &BTreeMap<String, PoolDevice>, id: &str) -> String {
        d[id].pf.as_ref().unwrap().to_string()
    }

    #[test]
    fn spread_one_per_pf_before_two_on_one() {
        let d = devs(&[Some(0), Some(0), Some(1)], 4);
        let avail: Vec<String> = d.keys().cloned().collect();
        let got = pool(&d, &avail, &[], 3, AllocationPolicy::Spread);
        assert_eq!(got.len(), 3);
        // node 0 has 8 >= 3, node 1 has 4 >= 3: node 0 has more, so node 0
        assert!(got.iter().all(|id| d[id].numa_node == Some(0)), "{got:?}");
        let pfs: Vec<String> = got.iter().map(|id| pf_of(&d, id)).collect();
        assert_eq!(pfs, vec!["0000:10:00.0", "0000:11:00.0", "0000:10:00.0"]);
        // lowest VF index first
        assert_eq!(d[&got[0]].vf_index, Some(0));
        assert_eq!(d[&got[2]].vf_index, Some(1));
    }

    #[test]
    fn pack_fills_one_pf_first() {
        let d = devs(&[Some(0), Some(0)], 4);
        let avail: Vec<String> = d.keys().cloned().collect();
        let got = pool(&d, &avail, &[], 3, AllocationPolicy::Pack);
        let pfs: HashSet<String> = got.iter().map(|id| pf_of(&d, id)).collect();
        assert_eq!(pfs.len(), 1, "{got:?}");
    }

    #[test]
    fn must_include_first_and_its_node_preferred() {
        let d = devs(&[Some(0), Some(1), Some(1)], 4);
        let avail: Vec<String> = d.keys().cloned().collect();
        let must = vec![avail[1].clone()]; // a VF of PF 0, node 0
        let got = pool(&d, &avail, &must, 3, AllocationPolicy::Spread);
        assert_eq!(got[0], must[0]);
        assert!(got.iter().all(|id| d[id].numa_node == Some(0)), "{got:?}");
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 3);
        // node 0 cannot hold 6: the rest comes from node 1, spread over its two PFs
        let got = pool(&d, &avail, &must, 6, AllocationPolicy::Spread);
        assert_eq!(got.len(), 6);
        let on1: Vec<String> = got
            .iter()
            .filter(|id| d[*id].numa_node == Some(1))
            .map(|id| pf_of(&d, id))
            .collect();
        assert_eq!(on1.len(), 2);
        assert_ne!(on1[0], on1[1]);
    }

    #[test]
    fn single_node_beats_bigger_total() {
        // node 0: 2 free, node 1: 4 free; asking 3 must land on node 1 only
        let d = devs(&[Some(0), Some(1)], 4);
        let avail: Vec<String> = d
            .keys()
            .filter(|id| d[*id].numa_node == Some(1) || d[*id].vf_index < Some(2))
            .cloned()
            .collect();
        let got = pool(&d, &avail, &[], 3, AllocationPolicy::Spread);
        assert!(got.iter().all(|id| d[id].numa_node == Some(1)), "{got:?}");
    }

    #[test]
    fn unknown_and_duplicate_ids_are_skipped_and_size_capped() {
        let d = devs(&[None], 2);
        let mut avail: Vec<String> = d.keys().cloned().collect();
        avail.push("0000:99:00.0".into());
        avail.push(avail[0].clone());
        let got = pool(&d, &avail, &[], 5, AllocationPolicy::Spread);
        assert_eq!(got.len(), 2);
        let got = simple(&avail, &[avail[1].clone()], 2);
        assert_eq!(got, vec![avail[1].clone(), avail[0].clone()]);
    }
}
