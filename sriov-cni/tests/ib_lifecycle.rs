//! InfiniBand VFs through the real binary on the fake PF's IB model: the fixture PF has
//! sysfs link type 32, the fake keeps the GUID columns (the PF table shows a GUID once
//! set, the VF driver only after a rebind; a rebind removes and returns the VF's
//! `net/` entry), VF netdevs are veths in a test netns (they stand in for the IPoIB
//! netdev: moved, renamed, MTU, up; their address is what the kernel shows).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Lab, can_run, links};
use serde_json::{Value, json};
use sriov_cni::fake::IbVf;

const G: u64 = 0x0200_0000_0000_0a01;
const G_TEXT: &str = "02:00:00:00:00:00:0a:01";

fn ib_conf(lab: &Lab, vf: u32, extra: Value) -> Value {
    let mut c = lab.conf("1.1.0", vf, json!({"type": "ib-sriov"}));
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn ib_vf(lab: &Lab, vf: u32) -> IbVf {
    lab.fake().ib_vfs[&format!("{}/{vf}", lab.pf)].clone()
}

fn writes(lab: &Lab) -> Vec<String> {
    lab.fake()
        .calls
        .into_iter()
        .filter(|c| !c.starts_with("get "))
        .collect()
}

#[test]
fn ib_add_sets_guids_rebinds_moves_ipoib_and_del_restores() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new_ib(2);
    let before = lab.snapshot();
    let pod = lab.pod();
    let ns = lab.pod_path(pod);
    let conf = ib_conf(
        &lab,
        1,
        json!({"runtimeConfig": {"infinibandGUID": G_TEXT}, "link_state": "enable", "mtu": 2044}),
    );
    let r = lab.run("ADD", "c1", "net1", &ns, &conf);
    let res = r.ok().clone();
    let itf = &res["interfaces"][0];
    assert_eq!(itf["name"], "net1");
    assert_eq!(itf["mtu"], 2044);
    // the address as the pod's kernel shows it
    let pod_links = links(&lab.pods[pod].name);
    let net1 = pod_links.iter().find(|l| l.name == "net1").unwrap();
    assert_eq!(itf["mac"], net1.mac.as_str(), "{res}");
    assert!(net1.up && net1.mtu == 2044, "{net1:?}");
    // GUIDs in the PF table and, after the rebind, in the driver
    let v = ib_vf(&lab, 1);
    assert_eq!(
        (v.node, v.port, v.bound_node, v.bound_port, v.binds),
        (G, G, G, G, 1)
    );
    assert_eq!(
        lab.fake().vfs[&format!("{}/1", lab.pf)].link_state,
        sriov_cni::config::LinkState::Enable
    );
    let w = writes(&lab);
    let pci = lab.vf_pci(1);
    let pos = |s: &str| {
        w.iter()
            .position(|c| c.contains(s))
            .unwrap_or_else(|| panic!("{s} in {w:?}"))
    };
    assert!(pos("link_state=enable") < pos("node_guid"));
    assert!(pos("node_guid 02:00:00:00:00:00:0a:01") < pos("port_guid 02:00:00:00:00:00:0a:01"));
    assert!(pos("port_guid") < pos(&format!("rebind {pci}")));
    assert!(
        lab.sim
            .root()
            .join("sys/bus/pci/devices")
            .join(&pci)
            .join("net")
            .join(lab.vf_name(1))
            .exists()
    );
    // untouched neighbour
    assert_eq!(ib_vf(&lab, 0).binds, 0);

    // CHECK: the pod-side address and both GUIDs as ADD left them; a GUID changed
    // behind our back is named.
    let mut checked = conf.clone();
    checked["prevResult"] = res.clone();
    lab.run("CHECK", "c1", "net1", &ns, &checked).ok();
    let mut st = lab.fake();
    st.ib_vfs.get_mut(&format!("{}/1", lab.pf)).unwrap().port = 0x42;
    st.store(&lab.fake_path()).unwrap();
    let r = lab.run("CHECK", "c1", "net1", &ns, &checked);
    assert_eq!(r.err_code(), 104, "{}", r.stdout);
    assert!(
        r.msg()
            .contains("expected port_guid=02:00:00:00:00:00:0a:01")
            && !r.msg().contains("node_guid"),
        "{}",
        r.msg()
    );
    let mut st = lab.fake();
    st.ib_vfs.get_mut(&format!("{}/1", lab.pf)).unwrap().port = G;
    st.store(&lab.fake_path()).unwrap();

    lab.run("DEL", "c1", "net1", &ns, &conf).ok();
    let (node, port) = Lab::orig_guids(1);
    let v = ib_vf(&lab, 1);
    assert_eq!(
        (v.node, v.port, v.bound_node, v.bound_port, v.binds),
        (node, port, node, port, 2)
    );
    assert_eq!(lab.snapshot(), before);
    let w = writes(&lab);
    assert_eq!(
        w.iter().filter(|c| c.starts_with("rebind ")).count(),
        2,
        "{w:?}"
    );
}

#[test]
fn ib_bad_inputs_are_refused_before_anything_changes() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new_ib(2);
    let before = lab.snapshot();
    let pod = lab.pod();
    let ns = lab.pod_path(pod);
    let guid = |g: &str| json!({"runtimeConfig": {"infinibandGUID": g}});
    for (extra, field) in [
        (guid("02:00:00:00:00:0a:01"), "runtimeConfig.infinibandGUID"),
        (
            guid("02:00:00:00:00:00:0a:zz"),
            "runtimeConfig.infinibandGUID",
        ),
        (
            json!({"args": {"cni": {"guid": "00:00:00:00:00:00:00:00"}}}),
            "args.cni.guid",
        ),
        (json!({"vlan": 10}), "vlan"),
        (
            json!({"mac": "0c:42:a1:00:00:01", "spoofchk": "off"}),
            "mac, spoofchk",
        ),
        (
            json!({"max_tx_rate": 100, "trust": "on"}),
            "trust, max_tx_rate",
        ),
        (
            json!({"ibKubernetesEnabled": true, "args": {"cni": {"mellanox.infiniband.app": "configured"}}}),
            "GUID must be provided by ib-kubernetes",
        ),
        (
            json!({"ibKubernetesEnabled": true}),
            "mellanox.infiniband.app",
        ),
        // the fixture's RDMA subsystem is in shared mode (netns_mode Y)
        (json!({"rdmaIsolation": true}), "rdmaIsolation"),
    ] {
        let r = lab.run("ADD", "c1", "net1", &ns, &ib_conf(&lab, 0, extra.clone()));
        assert_eq!(r.err_code(), 7, "{extra}: {}", r.stdout);
        assert!(r.msg().contains(field), "{extra}: {}", r.msg());
        assert_eq!(writes(&lab), Vec::<String>::new(), "{extra}");
        assert_eq!(lab.snapshot(), before, "{extra}");
    }
    // Ethernet keys name the VF and say why
    let r = lab.run(
        "ADD",
        "c1",
        "net1",
        &ns,
        &ib_conf(&lab, 0, json!({"vlan": 10})),
    );
    assert!(
        r.msg().contains(&lab.vf_pci(0)) && r.msg().contains("infiniband"),
        "{}",
        r.msg()
    );
}

#[test]
fn ib_guid_of_another_vf_is_refused() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new_ib(2);
    let pod = lab.pod();
    let ns = lab.pod_path(pod);
    let (_, port1) = Lab::orig_guids(1);
    let taken = sriov_cni::ib::netlink::fmt_raw(port1);
    let before = lab.snapshot();
    let r = lab.run(
        "ADD",
        "c1",
        "net1",
        &ns,
        &ib_conf(&lab, 0, json!({"args": {"cni": {"guid": taken}}})),
    );
    assert_eq!(r.err_code(), 7, "{}", r.stdout);
    assert!(
        r.msg().contains("args.cni.guid") && r.msg().contains("already in use by VF 1"),
        "{}",
        r.msg()
    );
    assert_eq!(writes(&lab), Vec::<String>::new());
    assert_eq!(lab.snapshot(), before);
    // its own current GUID is not a duplicate
    let (node0, _) = Lab::orig_guids(0);
    let own = sriov_cni::ib::netlink::fmt_raw(node0);
    lab.run(
        "ADD",
        "c1",
        "net1",
        &ns,
        &ib_conf(&lab, 0, json!({"args": {"cni": {"guid": own}}})),
    )
    .ok();
}

#[test]
fn ib_failures_part_way_roll_back_guids_and_rebind() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new_ib(1);
    let pod = lab.pod();
    let ns = lab.pod_path(pod);
    let conf = ib_conf(
        &lab,
        0,
        json!({"runtimeConfig": {"infinibandGUID": G_TEXT}}),
    );
    let (node, port) = Lab::orig_guids(0);
    let before = lab.snapshot();
    // A rebind whose netdev never comes back: timeout naming the VF, then the undo
    // restores the GUIDs and rebinds once more (that probe succeeds).
    let mut st = lab.fake();
    st.stuck_binds = 1;
    st.rebind_timeout_ms = Some(150);
    st.store(&lab.fake_path()).unwrap();
    let r = lab.run("ADD", "c1", "net1", &ns, &conf);
    assert_eq!(r.err_code(), 106, "{} {}", r.stdout, r.stderr);
    assert!(
        r.msg().contains(&lab.vf_pci(0)) && r.msg().contains("150ms"),
        "{}",
        r.msg()
    );
    let v = ib_vf(&lab, 0);
    assert_eq!(
        (v.node, v.port, v.bound_node, v.bound_port, v.binds),
        (node, port, node, port, 2)
    );
    assert_eq!(lab.snapshot(), before);
    // A refused port GUID after the node GUID went through: node restored, no rebind.
    lab.set_fail(Some(("vf:port_guid", libc::EINVAL)));
    let r = lab.run("ADD", "c1", "net1", &ns, &conf);
    assert_eq!(r.err_code(), 102, "{}", r.stdout);
    assert!(
        r.msg().contains("port_guid=02:00:00:00:00:00:0a:01"),
        "{}",
        r.msg()
    );
    let v = ib_vf(&lab, 0);
    assert_eq!((v.node, v.port, v.binds), (node, port, 2));
    assert_eq!(lab.snapshot(), before);
    // Failures after the rebind and after the move: everything back, rebound again.
    for (step, binds) in [("rebind", 4), ("move", 6), ("up", 8)] {
        lab.set_fail(Some((step, libc::EIO)));
        let r = lab.run("ADD", "c1", "net1", &ns, &conf);
        assert!(
            r.msg().contains(&format!("step {step}")),
            "{step}: {}",
            r.msg()
        );
        let v = ib_vf(&lab, 0);
        assert_eq!(
            (v.node, v.port, v.bound_node, v.binds),
            (node, port, node, binds),
            "{step}"
        );
        assert_eq!(lab.snapshot(), before, "{step}");
    }
}

#[test]
fn ib_vf_on_vfio_gets_guids_without_a_rebind() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::with_link_type(vec![simhost::VfBinding::Vfio], 32);
    let mut st = lab.fake();
    st.ib_vfs.insert(format!("{}/0", lab.pf), IbVf::default());
    st.store(&lab.fake_path()).unwrap();
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let conf = ib_conf(&lab, 0, json!({"args": {"cni": {"guid": G_TEXT}}}));
    lab.run("ADD", "dpdk", "net1", &ns, &conf).ok();
    let v = ib_vf(&lab, 0);
    assert_eq!((v.node, v.port, v.binds), (G, G, 0));
    lab.run("DEL", "dpdk", "net1", &ns, &conf).ok();
    // a VF that had no GUIDs gets zero back
    let v = ib_vf(&lab, 0);
    assert_eq!((v.node, v.port, v.binds), (0, 0, 0));
    assert!(
        !writes(&lab).iter().any(|c| c.starts_with("rebind")),
        "{:?}",
        writes(&lab)
    );
    assert_eq!(lab.snapshot(), before);
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn ib_rdma_isolation_moves_the_rdma_device_after_the_rebind() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new_ib(1);
    lab.sim.set_netns_mode(false).unwrap();
    let host = rdma_hca::Host::new(lab.sim.root());
    let dev = host
        .function(&lab.vf_pci(0).parse().unwrap())
        .unwrap()
        .rdma_devices[0]
        .clone();
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let conf = ib_conf(
        &lab,
        0,
        json!({"rdmaIsolation": true, "args": {"cni": {"guid": G_TEXT}}}),
    );
    lab.run("ADD", "rd", "net1", &ns, &conf).ok();
    assert_eq!(lab.fake().rdma[&dev], inode(&ns));
    let w = writes(&lab);
    let at = |s: &str| {
        w.iter()
            .position(|c| c.starts_with(s))
            .unwrap_or_else(|| panic!("{s}: {w:?}"))
    };
    // ib-sriov-cni's order: the rebind recreates the RDMA device, so it moves after
    assert!(at("rebind") < at(&format!("rdma {dev}")), "{w:?}");
    lab.run("DEL", "rd", "net1", &ns, &conf).ok();
    assert_eq!(lab.fake().rdma[&dev], inode(&lab.host.path()));
    let mut after = lab.snapshot();
    after.rdma.clear();
    let mut b = before.clone();
    b.rdma.clear();
    assert_eq!(after, b);
}

#[test]
fn ib_guids_the_pf_does_not_report_are_left_set_and_said_so() {
    if !can_run() {
        return;
    }
    // As on kernels before 5.5: the VF table carries no GUIDs, and the veth standing in
    // for the netdev has no 20-byte address to read the port GUID from.
    let mut lab = Lab::with_link_type(vec![simhost::VfBinding::Mlx5], 32);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = ib_conf(&lab, 0, json!({"args": {"cni": {"guid": G_TEXT}}}));
    let r = lab.run("ADD", "old", "net1", &ns, &conf);
    r.ok();
    assert!(
        r.stderr.contains("does not report VF 0 GUIDs"),
        "{}",
        r.stderr
    );
    let r = lab.run("DEL", "old", "net1", &ns, &conf);
    r.ok();
    assert!(
        r.stderr.contains("original unknown, left as set"),
        "{}",
        r.stderr
    );
    let v = ib_vf(&lab, 0);
    assert_eq!((v.node, v.port, v.binds), (G, G, 2));
}
