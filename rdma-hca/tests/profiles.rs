//! The inventory read back from each simulated host profile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdma_hca::{HcaError, Host, LinkType, OperState, PciAddress, RdmaNetnsMode};
use simhost::{Profile, SimHost};
use std::os::unix::fs::symlink;

fn addr(s: &str) -> PciAddress {
    s.parse().unwrap()
}

fn host(profile: Profile) -> (tempfile::TempDir, SimHost) {
    let dir = simhost::tempdir().unwrap();
    let sim = SimHost::create(dir.path(), profile).unwrap();
    (dir, sim)
}

#[test]
fn cx6dx_pf_vf_relations() {
    let (_d, sim) = host(Profile::Cx6Dx);
    let inv = Host::new(sim.root()).inventory().unwrap();
    let pfs: Vec<_> = inv.functions.values().filter(|f| !f.is_vf()).collect();
    let vfs: Vec<_> = inv.functions.values().filter(|f| f.is_vf()).collect();
    assert_eq!(pfs.len(), 2);
    assert_eq!(vfs.len(), 16);

    let pf0 = inv.function(&addr("0000:3b:00.0")).unwrap();
    assert_eq!(pf0.vendor, "15b3");
    assert_eq!(pf0.device, "101d");
    assert_eq!(pf0.driver.as_deref(), Some("mlx5_core"));
    assert_eq!(pf0.numa_node, Some(0));
    assert_eq!(pf0.sriov.map(|s| (s.total_vfs, s.num_vfs)), Some((8, 8)));
    assert_eq!(pf0.vfs.len(), 8);
    assert_eq!(pf0.vfs[3], (3, addr("0000:3b:00.5")));
    assert_eq!(pf0.netdevs, vec!["ens1f0"]);
    assert_eq!(pf0.rdma_devices, vec!["mlx5_0"]);
    assert!(inv.carries_default_route(pf0));

    let pf1 = inv.function(&addr("0000:3b:00.1")).unwrap();
    assert_eq!(pf1.numa_node, Some(1));
    assert!(!inv.carries_default_route(pf1));

    // VF 0 of PF 0: the example of issue 3
    let vf = inv.function(&addr("0000:3b:00.2")).unwrap();
    assert_eq!(vf.physfn, Some(addr("0000:3b:00.0")));
    assert_eq!(vf.vf_index, Some(0));
    assert_eq!(vf.device, "101e");
    assert_eq!(vf.netdevs, vec!["ens1f0v0"]);
    assert_eq!(vf.sriov, None);
    assert_eq!(vf.rdma_devices, vec!["mlx5_2"]);
    let rdma = &inv.rdma_devices["mlx5_2"];
    assert_eq!(rdma.pci_address, Some(addr("0000:3b:00.2")));
    assert_eq!(
        rdma.char_devices.uverbs.as_deref(),
        Some("/dev/infiniband/uverbs2")
    );
    assert_eq!(rdma.char_devices.umad, vec!["/dev/infiniband/umad2"]);
    assert_eq!(rdma.char_devices.issm, vec!["/dev/infiniband/issm2"]);
    assert_eq!(
        rdma.char_devices.rdma_cm.as_deref(),
        Some("/dev/infiniband/rdma_cm")
    );
    assert_eq!(inv.pf_netdevs(vf), vec!["ens1f0"]);

    // every VF index of PF 1 maps back to its PF
    let pf1_vfs: Vec<_> = vfs
        .iter()
        .filter(|f| f.physfn == Some(addr("0000:3b:00.1")))
        .map(|f| f.vf_index.unwrap())
        .collect();
    assert_eq!(pf1_vfs, (0..8).collect::<Vec<_>>());
    let nd = &inv.netdevs["ens1f1v7"];
    assert_eq!(nd.link_type, LinkType::Ether);
    assert_eq!(nd.operstate, OperState::Up);
    assert_eq!(nd.pci_address, Some(addr(&sim.vf_address(1, 7))));
    assert_eq!(inv.netns_mode, RdmaNetnsMode::Shared);
    // loopback is a netdev without a PCI function
    assert_eq!(inv.netdevs["lo"].pci_address, None);
}

#[test]
fn single_function_read_matches_inventory() {
    let (_d, sim) = host(Profile::Cx6Dx);
    let h = Host::new(sim.root());
    let inv = h.inventory().unwrap();
    for f in inv.functions.values() {
        assert_eq!(&h.function(&f.address).unwrap(), f, "{}", f.address);
    }
    let err = h.function(&addr("0000:99:00.0")).unwrap_err();
    assert!(matches!(err, HcaError::NoSuchDevice { .. }), "{err}");
}

#[test]
fn infiniband_link_type() {
    let (_d, sim) = host(Profile::Infiniband);
    let inv = Host::new(sim.root()).inventory().unwrap();
    assert_eq!(inv.functions.len(), 2 + 8);
    for f in inv.functions.values() {
        assert_eq!(
            inv.link_type_of(f),
            Some(LinkType::Infiniband),
            "{}",
            f.address
        );
        assert!(!inv.carries_default_route(f));
    }
    assert_eq!(inv.netdevs["ib0"].link_type, LinkType::Infiniband);
    // IPoIB hardware addresses are 20 bytes
    assert_eq!(
        inv.netdevs["ib0"].mac.as_ref().unwrap().split(':').count(),
        20
    );
}

#[test]
fn mixed_bindings() {
    let (_d, sim) = host(Profile::Mixed);
    let inv = Host::new(sim.root()).inventory().unwrap();
    let vf = |i| inv.function(&addr(&sim.vf_address(0, i))).unwrap();
    for i in 0..4 {
        assert_eq!(vf(i).driver.as_deref(), Some("mlx5_core"));
        assert_eq!(vf(i).netdevs.len(), 1);
        assert_eq!(vf(i).iommu_group, None);
    }
    for i in 4..6 {
        assert_eq!(vf(i).driver.as_deref(), Some("vfio-pci"));
        assert!(vf(i).netdevs.is_empty());
        assert!(vf(i).rdma_devices.is_empty());
        assert!(vf(i).iommu_group.is_some());
    }
    for i in 6..8 {
        assert_eq!(vf(i).driver, None);
        assert!(vf(i).netdevs.is_empty());
        assert_eq!(vf(i).vf_index, Some(i));
    }
    assert_ne!(vf(4).iommu_group, vf(5).iommu_group);
    // the default route is on a netdev that is not a ConnectX port
    assert!(!inv.functions.values().any(|f| inv.carries_default_route(f)));
}

#[test]
fn large_host_counts() {
    let (_d, _sim) = host(Profile::Large);
    let inv = Host::new(_sim.root()).inventory().unwrap();
    assert_eq!(inv.functions.values().filter(|f| f.is_vf()).count(), 1024);
    assert_eq!(inv.rdma_devices.len(), 16 + 1024);
    let numa1 = inv
        .functions
        .values()
        .filter(|f| f.numa_node == Some(1))
        .count();
    assert_eq!(numa1, 8 * 65);
}

#[test]
fn num_vfs_change_and_unbind_are_seen() {
    let (_d, mut sim) = host(Profile::Cx6Dx);
    sim.set_num_vfs(0, 4).unwrap();
    sim.unbind(&sim.vf_address(1, 0)).unwrap();
    sim.set_operstate("ens1f1", "down").unwrap();
    let inv = Host::new(sim.root()).inventory().unwrap();
    let pf0 = inv.function(&addr("0000:3b:00.0")).unwrap();
    assert_eq!(pf0.sriov.unwrap().num_vfs, 4);
    assert_eq!(pf0.vfs.len(), 4);
    assert!(inv.function(&addr(&sim.vf_address(0, 4))).is_none());
    assert!(!inv.netdevs.contains_key("ens1f0v4"));
    let unbound = inv.function(&addr(&sim.vf_address(1, 0))).unwrap();
    assert_eq!(unbound.driver, None);
    assert!(unbound.netdevs.is_empty());
    assert_eq!(inv.netdevs["ens1f1"].operstate, OperState::Down);
}

#[test]
fn soft_rdma_device_ties_to_parent_netdev() {
    // rxe: under devices/virtual, no device link, the netdev named in `parent`
    let (_d, sim) = host(Profile::Cx6Dx);
    let r = sim.root();
    let rxe = r.join("sys/devices/virtual/infiniband/rxe0");
    std::fs::create_dir_all(&rxe).unwrap();
    std::fs::write(rxe.join("parent"), "ens1f1\n").unwrap();
    symlink(
        "../../devices/virtual/infiniband/rxe0",
        r.join("sys/class/infiniband/rxe0"),
    )
    .unwrap();
    let verbs = r.join("sys/devices/virtual/infiniband_verbs/uverbs40");
    std::fs::create_dir_all(&verbs).unwrap();
    std::fs::write(verbs.join("ibdev"), "rxe0\n").unwrap();
    symlink(
        "../../devices/virtual/infiniband_verbs/uverbs40",
        r.join("sys/class/infiniband_verbs/uverbs40"),
    )
    .unwrap();
    std::fs::write(r.join("dev/infiniband/uverbs40"), "").unwrap();
    let inv = Host::new(r).inventory().unwrap();
    let d = &inv.rdma_devices["rxe0"];
    assert_eq!(d.parent.as_deref(), Some("ens1f1"));
    assert_eq!(d.pci_address, Some(addr("0000:3b:00.1")));
    assert_eq!(
        d.char_devices.uverbs.as_deref(),
        Some("/dev/infiniband/uverbs40")
    );
    let pf1 = inv.function(&addr("0000:3b:00.1")).unwrap();
    assert!(pf1.rdma_devices.contains(&"rxe0".to_string()));
}

#[test]
fn soft_rdma_devices_found_by_their_netdev() {
    // Two rxe devices on one VF netdev and one on another: only `parent` ties them.
    let (_d, sim) = host(Profile::Cx6Dx);
    let r = sim.root();
    let vf = sim.vf_netdev(0, 2);
    for (dev, parent) in [
        ("rxe1", vf.as_str()),
        ("rxe0", vf.as_str()),
        ("rxe2", "ens1f1"),
    ] {
        let dir = r.join("sys/devices/virtual/infiniband").join(dev);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("parent"), format!("{parent}\n")).unwrap();
        symlink(
            format!("../../devices/virtual/infiniband/{dev}"),
            r.join("sys/class/infiniband").join(dev),
        )
        .unwrap();
    }
    let h = Host::new(r);
    assert_eq!(h.rdma_devices_on_netdev(&vf).unwrap(), ["rxe0", "rxe1"]);
    assert_eq!(h.rdma_devices_on_netdev("ens1f1").unwrap(), ["rxe2"]);
    // PCI-backed devices (mlx5_*) are never listed, even for their own netdev.
    assert!(h.rdma_devices_on_netdev("ens1f0").unwrap().is_empty());
    assert!(
        h.function(&addr(&sim.vf_address(0, 2)))
            .unwrap()
            .rdma_devices
            .iter()
            .all(|d| !d.starts_with("rxe"))
    );
}

#[test]
fn netns_mode_variants() {
    let (_d, sim) = host(Profile::Cx6Dx);
    let h = Host::new(sim.root());
    sim.set_netns_mode(false).unwrap();
    assert_eq!(h.netns_mode().unwrap(), RdmaNetnsMode::Exclusive);
    std::fs::remove_file(sim.root().join("sys/module/ib_core/parameters/netns_mode")).unwrap();
    assert_eq!(h.netns_mode().unwrap(), RdmaNetnsMode::Unknown);
}

#[test]
fn root_given_with_dot_dot_or_through_a_symlink_reads_the_same() {
    let (d, sim) = host(Profile::Cx6Dx);
    let want = Host::new(sim.root()).inventory().unwrap();
    std::fs::create_dir(d.path().join("x")).unwrap();
    symlink(sim.root(), d.path().join("link")).unwrap();
    assert_eq!(sim.root(), d.path());
    for root in [d.path().join("x").join(".."), d.path().join("link")] {
        let got = Host::new(&root).inventory();
        assert!(!want.functions.is_empty());
        assert_eq!(
            got.as_ref().ok(),
            Some(&want),
            "{}: {got:?}",
            root.display()
        );
    }
}
