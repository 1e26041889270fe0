//! The whole ADD/CHECK/DEL path of the real binary, in namespaces the tests create: a
//! veth stands in for each VF netdev (the fixture sysfs maps the VF's PCI address to
//! it), VF settings go to the file-backed fake, links/addresses/routes go to the real
//! kernel, IPAM is Debian's real host-local.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Lab, addrs, can_run, links};
use serde_json::{Value, json};
use sriov_cni::config::{LinkState, Mac, VlanProto};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[test]
fn add_check_del_every_version() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(2);
    let before = lab.snapshot();
    for (i, v) in VERSIONS.iter().enumerate() {
        let pod = lab.pod();
        let ns = lab.pod_path(pod);
        let cid = format!("c{i}");
        let conf = lab.conf(
            v,
            1,
            json!({"vlan": 100, "vlanQoS": 3, "mac": "0c:42:a1:aa:bb:0c", "spoofchk": "off",
                   "trust": "on", "link_state": "enable", "max_tx_rate": 1000, "mtu": 1400}),
        );
        let r = lab.run("ADD", &cid, "net1", &ns, &conf);
        let res = r.ok().clone();
        assert_eq!(res["cniVersion"], *v);
        let itf = &res["interfaces"][0];
        assert_eq!(itf["name"], "net1");
        assert_eq!(itf["mac"], "0c:42:a1:aa:bb:0c");
        assert_eq!(itf["sandbox"], ns.as_str());
        let ip0 = &res["ips"][0];
        assert_eq!(ip0["interface"], 0);
        assert_eq!(ip0["gateway"], "10.77.0.1");
        if *v < "1.0.0" {
            assert_eq!(ip0["version"], "4", "{res}");
        } else {
            assert!(ip0.get("version").is_none(), "{res}");
        }
        if *v == "1.1.0" {
            assert_eq!(itf["mtu"], 1400);
            assert_eq!(itf["pciID"], lab.vf_pci(1));
        } else {
            assert!(
                itf.get("mtu").is_none() && itf.get("pciID").is_none(),
                "{res}"
            );
        }
        // The kernel agrees: link renamed, re-addressed, up, with its address and route.
        let pod_links = links(&lab.pods[pod].name);
        let l = pod_links
            .iter()
            .find(|l| l.name == "net1")
            .expect("net1 in pod");
        assert_eq!(
            (l.mac.as_str(), l.mtu, l.up),
            ("0c:42:a1:aa:bb:0c", 1400, true)
        );
        let a = addrs(&lab.pods[pod].name, "net1");
        assert_eq!(a, vec![ip0["address"].as_str().unwrap().to_string()]);
        let routes = common::ip(&["-n", &lab.pods[pod].name, "route", "show", "default"]);
        assert!(String::from_utf8_lossy(&routes.stdout).contains("via 10.77.0.1 dev net1"));
        assert!(
            !links(&lab.host.name)
                .iter()
                .any(|l| l.name == lab.vf_name(1))
        );
        // The PF (fake) has the VF settings.
        let st = lab.fake().vfs[&format!("{}/1", lab.pf)].clone();
        assert_eq!((st.vlan, st.qos, st.proto), (100, 3, VlanProto::Dot1Q));
        assert_eq!(st.mac, Mac::parse("0c:42:a1:aa:bb:0c").unwrap());
        assert_eq!(
            (st.spoofchk, st.trust, st.link_state),
            (false, true, LinkState::Enable)
        );
        assert_eq!(st.max_tx_rate, 1000);

        let c = lab.run("CHECK", &cid, "net1", &ns, &with_prev(&conf, &res));
        if *v >= "0.4.0" {
            c.ok();
        } else {
            assert_eq!(c.err_code(), 1, "CHECK is not in {v}");
        }
        lab.run("DEL", &cid, "net1", &ns, &with_prev(&conf, &res))
            .ok();
        assert_eq!(lab.snapshot(), before, "after DEL in {v}");
        // DEL again: nothing cached, still success, still nothing changed.
        lab.run("DEL", &cid, "net1", &ns, &conf).ok();
        assert_eq!(lab.snapshot(), before, "after second DEL in {v}");
    }
}

fn full_conf(lab: &Lab, vf: u32) -> Value {
    lab.conf(
        "1.0.0",
        vf,
        json!({"vlan": 100, "vlanQoS": 2, "mac": "0c:42:a1:aa:bb:01", "min_tx_rate": 10, "max_tx_rate": 100,
               "spoofchk": "off", "trust": "on", "link_state": "disable", "mtu": 1400}),
    )
}

#[test]
fn add_failure_at_every_step_leaves_no_trace() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    // A VF that already had a non-default state (vlan 7, trust on) must get it back.
    let mut st = lab.fake();
    let key = format!("{}/0", lab.pf);
    st.vfs.get_mut(&key).unwrap().vlan = 7;
    st.vfs.get_mut(&key).unwrap().trust = true;
    st.store(&lab.fake_path()).unwrap();
    let pod = lab.pod();
    let ns = lab.pod_path(pod);
    let conf = full_conf(&lab, 0);
    let before = lab.snapshot();
    let pod_before = links(&lab.pods[pod].name);
    // (step, errno, expected code, text the message must contain)
    let cases: Vec<(String, i32, u64, String)> = {
        let mut v = vec![
            (
                "vf:vlan".to_string(),
                libc::EPROTONOSUPPORT,
                102,
                "vlan=100 vlanQoS=2".to_string(),
            ),
            (
                "vf:mac".into(),
                libc::EOPNOTSUPP,
                102,
                "mac=0c:42:a1:aa:bb:01".into(),
            ),
            (
                "vf:rate".into(),
                libc::EINVAL,
                102,
                "min_tx_rate=10 max_tx_rate=100".into(),
            ),
            (
                "vf:spoofchk".into(),
                libc::EOPNOTSUPP,
                102,
                "spoofchk=off".into(),
            ),
            (
                "vf:link_state".into(),
                libc::EOPNOTSUPP,
                102,
                "link_state=disable".into(),
            ),
            ("cache".into(), libc::EIO, 100, "cache".into()),
        ];
        // trust is already on: not planned, so no trust step.
        for s in ["vlan", "mac", "rate", "spoofchk", "link_state"] {
            v.push((
                format!("after:vf:{s}"),
                libc::EIO,
                100,
                format!("after:vf:{s}"),
            ));
        }
        for s in ["move", "ipam", "addresses", "up", "routes", "result"] {
            v.push((s.to_string(), libc::EIO, 100, s.to_string()));
        }
        v
    };
    for (i, (step, errno, code, text)) in cases.iter().enumerate() {
        lab.set_fail(Some((step, *errno)));
        let r = lab.run("ADD", &format!("f{i}"), "net1", &ns, &conf);
        assert_eq!(r.err_code(), *code, "{step}: {}", r.stdout);
        assert!(r.msg().contains(text.as_str()), "{step}: {}", r.msg());
        lab.set_fail(None);
        assert_eq!(lab.snapshot(), before, "{step} left a trace");
        assert_eq!(
            links(&lab.pods[pod].name),
            pod_before,
            "{step} left a link in the pod"
        );
    }
    // Real kernel failure after the move: the pod already has a net1.
    common::ip_ok(&[
        "-n",
        &lab.pods[pod].name,
        "link",
        "add",
        "net1",
        "type",
        "veth",
        "peer",
        "name",
        "net1p",
    ]);
    let pod_before = links(&lab.pods[pod].name);
    let r = lab.run("ADD", "fk", "net1", &ns, &conf);
    assert_eq!(r.err_code(), 103, "{}", r.stdout);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(links(&lab.pods[pod].name), pod_before);
    // Real IPAM failure.
    let mut bad = conf.clone();
    bad["ipam"]["subnet"] = json!("10.0.0.0/33");
    let r = lab.run("ADD", "fi", "eth9", &ns, &bad);
    assert_eq!(r.err_code(), 101, "{}", r.stdout);
    assert!(r.msg().contains("host-local"), "{}", r.msg());
    assert_eq!(lab.snapshot(), before);
    // And the VF still works afterwards.
    let res = lab.run("ADD", "ok", "eth9", &ns, &conf).ok().clone();
    lab.run("DEL", "ok", "eth9", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);
    assert_eq!(lab.fake().vfs[&key].vlan, 7);
    assert!(lab.fake().vfs[&key].trust);
}

#[test]
fn del_after_netns_deletion() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(2);
    let before = lab.snapshot();
    // 1: the kernel hands a physical VF back to the host (under its pod-side name) when
    // the netns goes; simulate that, then delete the netns.
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = full_conf(&lab, 0);
    lab.run("ADD", "gone1", "net1", &ns, &conf).ok();
    common::ip_ok(&[
        "-n",
        &lab.pods[p].name,
        "link",
        "set",
        "net1",
        "netns",
        &lab.host.name,
    ]);
    lab.pods[p].delete();
    lab.run("DEL", "gone1", "net1", &ns, &conf).ok();
    assert_eq!(lab.snapshot(), before);
    // 2: a veth dies with its netns: DEL must still succeed and restore the VF on the PF.
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = full_conf(&lab, 1);
    lab.run("ADD", "gone2", "net1", &ns, &conf).ok();
    lab.pods[p].delete();
    lab.run("DEL", "gone2", "net1", &ns, &conf).ok();
    let mut after = lab.snapshot();
    let mut want = before.clone();
    want.links
        .retain(|l| l.name != lab.vf_name(1) && l.name != "r0x1");
    after.links.retain(|l| l.name != "r0x1");
    assert_eq!(after, want);
    // DEL without CNI_NETNS at all (allowed on DEL) after that: still fine.
    lab.run_env(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "gone2"),
            ("CNI_IFNAME", "net1"),
        ],
        &conf,
    )
    .ok();
}

#[test]
fn del_after_reallocation_leaves_the_new_owner_alone() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let before = lab.snapshot();
    let key = format!("{}/0", lab.pf);
    let a = lab.pod();
    let ns_a = lab.pod_path(a);
    let conf_a = lab.conf("1.0.0", 0, json!({"vlan": 10, "mac": "0c:42:a1:00:00:aa"}));
    lab.run("ADD", "old", "net1", &ns_a, &conf_a).ok();
    // Pod A's netns dies before its DEL; the VF comes back as net1 (sysfs says so too).
    common::ip_ok(&[
        "-n",
        &lab.pods[a].name,
        "link",
        "set",
        "net1",
        "netns",
        &lab.host.name,
    ]);
    lab.pods[a].delete();
    let vf_pci = lab.vf_pci(0);
    lab.sim.remove_netdev(&vf_pci, &lab.vf_name(0)).unwrap();
    lab.sim
        .add_netdev(&vf_pci, "net1", 1, true, "0c:42:a1:00:00:aa")
        .unwrap();
    // The device plugin gives the VF to pod B.
    let b = lab.pod();
    let ns_b = lab.pod_path(b);
    let conf_b = lab.conf("1.0.0", 0, json!({"vlan": 20}));
    let res_b = lab.run("ADD", "new", "eth1", &ns_b, &conf_b).ok().clone();
    assert_eq!(lab.fake().vfs[&key].vlan, 20);
    // The late DEL of the old pod must not reset the VF.
    lab.run("DEL", "old", "net1", &ns_a, &conf_a).ok();
    assert_eq!(lab.fake().vfs[&key].vlan, 20);
    assert!(links(&lab.pods[b].name).iter().any(|l| l.name == "eth1"));
    lab.run("CHECK", "new", "eth1", &ns_b, &with_prev(&conf_b, &res_b))
        .ok();
    // B's DEL restores what was there before A (A never restored it).
    lab.run("DEL", "new", "eth1", &ns_b, &with_prev(&conf_b, &res_b))
        .ok();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn sixteen_parallel_add_del_pairs_on_eight_vfs() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(8);
    let pods: Vec<usize> = (0..16).map(|_| lab.pod()).collect();
    let before = lab.snapshot();
    let lab = std::sync::Arc::new(lab);
    let mut handles = Vec::new();
    for (i, p) in pods.into_iter().enumerate() {
        let lab = lab.clone();
        handles.push(std::thread::spawn(move || {
            let vf = (i % 8) as u32;
            let ns = lab.pod_path(p);
            let conf = lab.conf("1.1.0", vf, json!({"vlan": 100 + i, "trust": "on"}));
            let cid = format!("par{i}");
            // The partner on the same VF may hold it: code 11 means try again later.
            let mut res = None;
            for _ in 0..2000 {
                let r = lab.run("ADD", &cid, "net1", &ns, &conf);
                if r.code == 0 {
                    res = Some(r.out);
                    break;
                }
                assert_eq!(r.err_code(), 11, "{}", r.stdout);
                std::thread::yield_now();
            }
            let res = res.expect("ADD never got the VF");
            assert!(links(&lab.pods[p].name).iter().any(|l| l.name == "net1"));
            lab.run("CHECK", &cid, "net1", &ns, &with_prev(&conf, &res))
                .ok();
            lab.run("DEL", &cid, "net1", &ns, &with_prev(&conf, &res))
                .ok();
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn del_that_fails_part_way_keeps_its_cache_for_the_retry() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let conf = full_conf(&lab, 0);
    lab.run("ADD", "retry", "net1", &ns, &conf).ok();
    lab.set_fail(Some(("vf:vlan", libc::EBUSY)));
    let r = lab.run("DEL", "retry", "net1", &ns, &conf);
    assert_eq!(r.err_code(), 102, "{}", r.stdout);
    assert!(r.msg().contains("vlan=0"), "{}", r.msg());
    assert!(lab.data_dir().join("retry-net1").exists());
    lab.set_fail(None);
    lab.run("DEL", "retry", "net1", &ns, &conf).ok();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn ten_cycles_leave_the_host_identical() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let conf = full_conf(&lab, 0);
    for i in 0..10 {
        let res = lab
            .run("ADD", &format!("cyc{i}"), "net1", &ns, &conf)
            .ok()
            .clone();
        let n = lab.fake().calls.len();
        lab.run(
            "DEL",
            &format!("cyc{i}"),
            "net1",
            &ns,
            &with_prev(&conf, &res),
        )
        .ok();
        assert_eq!(lab.snapshot(), before, "cycle {i}");
        // DEL restores the admin MAC first (igb refuses a netdev MAC that differs from
        // an admin-set one), then the rest in reverse order of ADD.
        let sets: Vec<String> = lab.fake().calls[n..]
            .iter()
            .filter(|c| c.starts_with("set "))
            .map(|c| c.split_whitespace().nth(4).unwrap_or("").to_string())
            .collect();
        assert_eq!(
            sets,
            [
                "mac=00:00:00:00:00:00",
                "link_state=auto",
                "trust=off",
                "spoofchk=on",
                "min_tx_rate=0",
                "vlan=0"
            ],
            "cycle {i}"
        );
    }
    // Without a mac in the config the VF's admin MAC is never written.
    let conf = lab.conf("1.0.0", 0, json!({"vlan": 5}));
    let calls_before = lab.fake().calls.len();
    let res = lab.run("ADD", "nomac", "net1", &ns, &conf).ok().clone();
    lab.run("DEL", "nomac", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    let calls = lab.fake().calls[calls_before..].to_vec();
    assert!(calls.iter().all(|c| !c.contains("mac=")), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("set ")).count(),
        2,
        "{calls:?}"
    );
}

#[test]
fn check_reports_what_differs() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = full_conf(&lab, 0);
    let res = lab.run("ADD", "chk", "net1", &ns, &conf).ok().clone();
    lab.run("CHECK", "chk", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    let mut st = lab.fake();
    st.vfs.get_mut(&format!("{}/0", lab.pf)).unwrap().vlan = 3;
    st.store(&lab.fake_path()).unwrap();
    let addr = res["ips"][0]["address"].as_str().unwrap().to_string();
    common::ip_ok(&["-n", &lab.pods[p].name, "addr", "del", &addr, "dev", "net1"]);
    let r = lab.run("CHECK", "chk", "net1", &ns, &with_prev(&conf, &res));
    assert_eq!(r.err_code(), 104);
    assert!(r.msg().contains("vlan=100"), "{}", r.msg());
    assert!(r.msg().contains(&addr), "{}", r.msg());
    lab.run("DEL", "chk", "net1", &ns, &with_prev(&conf, &res))
        .ok();
}

#[test]
fn dpdk_vf_is_configured_on_the_pf_only() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::with_bindings(vec![simhost::VfBinding::Vfio, simhost::VfBinding::Mlx5]);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let conf = lab.conf("1.1.0", 0, json!({"vlan": 55, "spoofchk": "off"}));
    let res = lab.run("ADD", "dpdk", "net1", &ns, &conf).ok().clone();
    assert_eq!(res["interfaces"][0]["pciID"], lab.vf_pci(0));
    assert_eq!(lab.fake().vfs[&format!("{}/0", lab.pf)].vlan, 55);
    assert_eq!(links(&lab.pods[p].name).len(), 1, "only lo in the pod");
    lab.run("CHECK", "dpdk", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    lab.run("DEL", "dpdk", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);
}

fn inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn rdma_device_follows_the_vf_in_exclusive_mode() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    lab.sim.set_netns_mode(false).unwrap();
    let host = rdma_hca::Host::new(lab.sim.root());
    let f = host.function(&lab.vf_pci(0).parse().unwrap()).unwrap();
    let dev = f.rdma_devices[0].clone();
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = lab.conf("1.0.0", 0, json!({}));
    let res = lab.run("ADD", "rd", "net1", &ns, &conf).ok().clone();
    assert_eq!(lab.fake().rdma[&dev], inode(&ns));
    lab.run("DEL", "rd", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.fake().rdma[&dev], inode(&lab.host.path()));
    // rxe cannot change netns (EOPNOTSUPP): ADD fails naming the device, nothing left.
    let before = lab.snapshot();
    lab.set_fail(Some(("vf:rdma", libc::EOPNOTSUPP)));
    let r = lab.run(
        "ADD",
        "rd2",
        "net1",
        &ns,
        &lab.conf("1.0.0", 0, json!({"vlan": 9})),
    );
    assert_eq!(r.err_code(), 105);
    assert!(r.msg().contains(&dev), "{}", r.msg());
    lab.set_fail(None);
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn gc_releases_attachments_not_listed_and_status_reports_ipam() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(2);
    let before = lab.snapshot();
    let (p0, p1) = (lab.pod(), lab.pod());
    let (ns0, ns1) = (lab.pod_path(p0), lab.pod_path(p1));
    let c0 = lab.conf("1.1.0", 0, json!({"vlan": 11}));
    let c1 = lab.conf("1.1.0", 1, json!({"vlan": 12}));
    let r0 = lab.run("ADD", "keep", "net1", &ns0, &c0).ok().clone();
    lab.run("ADD", "stale", "net1", &ns1, &c1).ok();
    let mut gc = lab.conf("1.1.0", 0, json!({"deviceID": null}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "net1"}]);
    lab.run_env(&[("CNI_COMMAND", "GC")], &gc).ok();
    assert!(!lab.data_dir().join("stale-net1").exists());
    assert!(lab.data_dir().join("keep-net1").exists());
    assert_eq!(lab.fake().vfs[&format!("{}/1", lab.pf)].vlan, 0);
    assert!(
        links(&lab.host.name)
            .iter()
            .any(|l| l.name == lab.vf_name(1))
    );
    assert!(links(&lab.pods[p0].name).iter().any(|l| l.name == "net1"));
    // STATUS: ready with host-local, not available without the IPAM plugin, and only in 1.1.0.
    lab.run_env(&[("CNI_COMMAND", "STATUS")], &gc).ok();
    let mut missing = gc.clone();
    missing["ipam"]["type"] = json!("no-such-ipam");
    assert_eq!(
        lab.run_env(&[("CNI_COMMAND", "STATUS")], &missing)
            .err_code(),
        50
    );
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    assert_eq!(
        lab.run_env(&[("CNI_COMMAND", "STATUS")], &old).err_code(),
        1
    );
    lab.run("DEL", "keep", "net1", &ns0, &with_prev(&c0, &r0))
        .ok();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn colliding_altname_is_dropped_for_the_move_and_restored() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let alt = format!("alt{}", lab.id);
    common::ip_ok(&[
        "-n",
        &lab.host.name,
        "link",
        "property",
        "add",
        "dev",
        &lab.vf_name(0),
        "altname",
        &alt,
    ]);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    // The pod already has a link called like the VF's altname.
    common::ip_ok(&[
        "-n",
        &lab.pods[p].name,
        "link",
        "add",
        &alt,
        "type",
        "veth",
        "peer",
        "name",
        "altp",
    ]);
    let before = lab.snapshot();
    let alt_before = common::ip(&[
        "-n",
        &lab.host.name,
        "-j",
        "link",
        "show",
        "dev",
        &lab.vf_name(0),
    ]);
    assert!(String::from_utf8_lossy(&alt_before.stdout).contains(&alt));
    let conf = lab.conf("1.0.0", 0, json!({}));
    let res = lab.run("ADD", "alt", "net1", &ns, &conf).ok().clone();
    assert!(links(&lab.pods[p].name).iter().any(|l| l.name == "net1"));
    lab.run("DEL", "alt", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);
    let alt_after = common::ip(&[
        "-n",
        &lab.host.name,
        "-j",
        "link",
        "show",
        "dev",
        &lab.vf_name(0),
    ]);
    assert!(
        String::from_utf8_lossy(&alt_after.stdout).contains(&alt),
        "altname not restored"
    );
}

#[test]
fn chained_after_another_plugin_and_logs_to_log_file() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let log = lab.tmp.path().join("sriov.log");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05", "sandbox": ns}],
        "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}],
        "dns": {"nameservers": ["10.0.0.10"]}
    });
    let mut conf = lab.conf("1.0.0", 0, json!({"logFile": log.display().to_string()}));
    conf["prevResult"] = prev;
    let r = lab.run("ADD", "chain", "net1", &ns, &conf);
    let res = r.ok().clone();
    assert_eq!(
        r.stdout.trim().lines().count(),
        1,
        "stdout carries only the result"
    );
    assert!(
        r.stderr.trim().is_empty(),
        "logs went to stderr: {}",
        r.stderr
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("ADD chain/net1")
    );
    assert_eq!(res["interfaces"][0]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["name"], "net1");
    assert_eq!(res["ips"][0]["address"], "10.0.0.5/24");
    assert_eq!(res["ips"][1]["interface"], 1);
    // IPAM's DNS (none here) does not wipe the earlier plugin's.
    assert_eq!(res["dns"]["nameservers"][0], "10.0.0.10");
    lab.run("CHECK", "chain", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    lab.run("DEL", "chain", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn production_path_without_the_fake_reads_the_real_pf() {
    if !can_run() {
        return;
    }
    // The PF netdev is a real veth here: its VF table is empty, so the real netlink
    // configurator refuses before anything is changed.
    let mut lab = Lab::new(1);
    common::ip_ok(&[
        "-n",
        &lab.host.name,
        "link",
        "add",
        &lab.pf,
        "type",
        "veth",
        "peer",
        "name",
        &format!("q{}", lab.id),
    ]);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let pod_before = links(&lab.pods[p].name);
    let conf = lab.conf("1.0.0", 0, json!({"vlan": 10}));
    let r = lab.run_env(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "real"),
            ("CNI_IFNAME", "net1"),
            ("CNI_NETNS", &ns),
            ("SRIOV_CNI_FAKE_VF_STATE", ""),
        ],
        &conf,
    );
    assert_eq!(r.err_code(), 103, "{}", r.stdout);
    assert!(
        r.msg().contains(&lab.pf) && r.msg().contains("no VF 0"),
        "{}",
        r.msg()
    );
    assert!(!r.stderr.contains("TEST MODE"), "{}", r.stderr);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(links(&lab.pods[p].name), pod_before);
}

#[test]
fn names_taken_in_the_pod_refuse_the_move_and_touch_nothing() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    // The pod has both the VF's host name and CNI_IFNAME, and (per-netns ifindexes) its
    // net1 gets the same ifindex the VF has on the host.
    let vf = lab.vf_name(0);
    common::ip_ok(&[
        "-n",
        &lab.pods[p].name,
        "link",
        "add",
        "net1",
        "type",
        "veth",
        "peer",
        "name",
        &vf,
    ]);
    let before = lab.snapshot();
    let pod_before = links(&lab.pods[p].name);
    let r = lab.run("ADD", "taken", "net1", &ns, &full_conf(&lab, 0));
    assert_eq!(r.err_code(), 103, "{}", r.stdout);
    assert_eq!(lab.snapshot(), before);
    assert_eq!(links(&lab.pods[p].name), pod_before);
}

/// The settings of the lab's untrusted cycles (`regress.ten-cycles-pf`): mac, vlan,
/// spoofchk, no trust.
fn untrusted_mac_conf(lab: &Lab, vf: u32) -> Value {
    lab.conf(
        "1.0.0",
        vf,
        json!({"mac": "02:33:00:00:00:02", "vlan": 10, "spoofchk": "off"}),
    )
}

fn calls_since(lab: &Lab, n: usize) -> Vec<String> {
    lab.fake().calls[n..].to_vec()
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:?}"))
}

#[test]
fn igb_untrusted_vf_that_was_up_takes_a_mac_and_gets_its_pf_mac_back() {
    if !can_run() {
        return;
    }
    // igb model: an untrusted VF that has been up cannot change its netdev MAC while an
    // admin MAC is set, and the PF records the netdev MAC it writes.
    let mut lab = Lab::new(1);
    lab.set_igb(&[0]);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let key = format!("{}/0", lab.pf);
    let before = lab.snapshot();
    let conf = untrusted_mac_conf(&lab, 0);
    let netdev = format!("netdev {} vf 0 mac=", lab.pf);
    let admin = format!("set {} vf 0 mac=", lab.pf);
    for i in 0..10 {
        let n = lab.fake().calls.len();
        let cid = format!("igb{i}");
        let res = lab.run("ADD", &cid, "net1", &ns, &conf).ok().clone();
        // The netdev gets its MAC before the PF makes it an admin MAC.
        let add = calls_since(&lab, n);
        assert!(position(&add, &netdev) < position(&add, &admin), "{add:?}");
        let st = lab.fake();
        assert_eq!(st.vfs[&key].mac, Mac::parse("02:33:00:00:00:02").unwrap());
        assert!(st.igb_vfs[&key].admin_mac);
        lab.run("CHECK", &cid, "net1", &ns, &with_prev(&conf, &res))
            .ok();
        let n = lab.fake().calls.len();
        lab.run("DEL", &cid, "net1", &ns, &with_prev(&conf, &res))
            .ok();
        // DEL: admin MAC cleared, netdev MAC back (which igb records), PF MAC cleared again.
        let del = calls_since(&lab, n);
        let macs: Vec<&String> = del.iter().filter(|c| c.contains("mac=")).collect();
        assert_eq!(macs.len(), 3, "{del:?}");
        assert!(macs[0].starts_with(&format!("{admin}00:00:00:00:00:00")));
        assert!(macs[1].starts_with(&netdev));
        assert!(macs[2].starts_with(&format!("{admin}00:00:00:00:00:00")));
        assert_eq!(lab.snapshot(), before, "cycle {i}");
    }
}

#[test]
fn igb_vf_first_used_then_reused_keeps_the_pf_mac_it_had() {
    if !can_run() {
        return;
    }
    // The lab's cni.del-restores: a never-up VF with a trusted config, then a config
    // without mac (the VF's own MAC reaches the PF when it comes up in the pod).
    let mut lab = Lab::new(1);
    lab.set_igb(&[]);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let key = format!("{}/0", lab.pf);
    let before = lab.snapshot();
    let conf = lab.conf(
        "1.0.0",
        0,
        json!({"mac": "02:11:22:33:44:55", "vlan": 100, "trust": "on", "spoofchk": "off"}),
    );
    let res = lab.run("ADD", "first", "net1", &ns, &conf).ok().clone();
    assert!(lab.fake().igb_vfs[&key].been_up);
    lab.run("DEL", "first", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.fake().vfs[&key].mac, Mac::default());
    assert_eq!(lab.snapshot(), before);
    lab.run("DEL", "first", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);

    // Without mac: igb's report stays while the VF is up in the pod, but when it leaves
    // the pod (down: the VF resets) igb records its MAC; DEL clears it again. Zero is
    // the only MAC written without a mac config (it clears igb's admin flag).
    let conf = lab.conf("1.0.0", 0, json!({"vlan": 5}));
    let res = lab.run("ADD", "nomac", "net1", &ns, &conf).ok().clone();
    assert_eq!(lab.fake().vfs[&key].mac, Mac::default());
    let n = lab.fake().calls.len();
    lab.run("DEL", "nomac", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    let sets: Vec<String> = calls_since(&lab, n)
        .into_iter()
        .filter(|c| c.starts_with("set "))
        .collect();
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert!(sets[0].ends_with("mac=00:00:00:00:00:00"), "{sets:?}");
    assert_eq!(lab.snapshot(), before);
    // A MAC changed in the pod (as a chained `tuning` plugin does) reaches igb's report;
    // DEL writes the netdev MAC back, which igb records too, and clears it to zero again:
    // zero is the only MAC written without a mac config (it clears igb's admin flag).
    let res = lab.run("ADD", "tuned", "net1", &ns, &conf).ok().clone();
    let tuned = "02:77:00:00:00:01";
    common::ip_ok(&[
        "-n",
        &lab.pods[p].name,
        "link",
        "set",
        "net1",
        "address",
        tuned,
    ]);
    let mut st = lab.fake();
    st.vfs.get_mut(&key).unwrap().mac = Mac::parse(tuned).unwrap();
    st.store(&lab.fake_path()).unwrap();
    let n = lab.fake().calls.len();
    lab.run("DEL", "tuned", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    let sets: Vec<String> = calls_since(&lab, n)
        .into_iter()
        .filter(|c| c.starts_with("set "))
        .collect();
    assert_eq!(sets.len(), 2, "{sets:?}");
    assert!(sets[0].ends_with("mac=00:00:00:00:00:00"), "{sets:?}");
    assert!(
        sets[1].ends_with("vlan=0 vlanQoS=0 vlanProto=802.1q"),
        "{sets:?}"
    );
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn igb_admin_mac_left_on_an_untrusted_vf_is_cleared_for_the_move_and_restored() {
    if !can_run() {
        return;
    }
    // Someone set an admin MAC on an untrusted, used VF: the netdev MAC can only be
    // written after it is cleared, and DEL puts the admin MAC back.
    let mut lab = Lab::new(1);
    lab.set_igb(&[0]);
    let key = format!("{}/0", lab.pf);
    let m0 = Mac::parse("02:aa:00:00:00:07").unwrap();
    let mut st = lab.fake();
    st.vfs.get_mut(&key).unwrap().mac = m0;
    st.igb_vfs.get_mut(&key).unwrap().admin_mac = true;
    st.store(&lab.fake_path()).unwrap();
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let before = lab.snapshot();
    let conf = untrusted_mac_conf(&lab, 0);
    let res = lab.run("ADD", "adm", "net1", &ns, &conf).ok().clone();
    assert_eq!(
        lab.fake().vfs[&key].mac,
        Mac::parse("02:33:00:00:00:02").unwrap()
    );
    lab.run("DEL", "adm", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);
    assert_eq!(lab.fake().vfs[&key].mac, m0);
}

#[test]
fn igb_add_failure_at_every_step_leaves_no_trace() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(1);
    lab.set_igb(&[0]);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = untrusted_mac_conf(&lab, 0);
    let before = lab.snapshot();
    let pod_before = links(&lab.pods[p].name);
    let steps = [
        "vf:vlan",
        "after:vf:vlan",
        "vf:spoofchk",
        "after:vf:spoofchk",
        "after:vf:mac",
        "move",
        "ipam",
        "addresses",
        "up",
        "routes",
        "result",
    ];
    for (i, step) in steps.iter().enumerate() {
        lab.set_fail(Some((step, libc::EIO)));
        let r = lab.run("ADD", &format!("igbf{i}"), "net1", &ns, &conf);
        assert_ne!(r.code, 0, "{step}: {}", r.stdout);
        lab.set_fail(None);
        assert_eq!(lab.snapshot(), before, "{step} left a trace: {}", r.msg());
        assert_eq!(links(&lab.pods[p].name), pod_before, "{step}");
    }
    // The PF refuses the admin MAC (after the move, once the VF pushed its netdev MAC)
    // and, in this fake, clearing it too: the undo cannot finish, the cache stays, and
    // the runtime's DEL finishes the job.
    lab.set_fail(Some(("vf:mac", libc::EIO)));
    let r = lab.run("ADD", "igbm", "net1", &ns, &conf);
    assert_eq!(r.err_code(), 102, "{}", r.stdout);
    assert!(r.msg().contains("mac=02:33:00:00:00:02"), "{}", r.msg());
    assert!(lab.data_dir().join("igbm-net1").exists());
    lab.set_fail(None);
    lab.run("DEL", "igbm", "net1", &ns, &conf).ok();
    assert_eq!(lab.snapshot(), before);
    // And the VF still works.
    let res = lab.run("ADD", "igbok", "net1", &ns, &conf).ok().clone();
    lab.run("DEL", "igbok", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn soft_rdma_device_on_the_vf_netdev_is_moved_too() {
    if !can_run() {
        return;
    }
    // rxe sits under devices/virtual and names its netdev only in `parent`; moving the
    // netdev alone would delete it, and rxe itself refuses the move (EOPNOTSUPP).
    let mut lab = Lab::new(1);
    lab.sim.set_netns_mode(false).unwrap();
    let rxe = format!("rxe{}", lab.id);
    lab.add_soft_rdma(0, &rxe);
    let host = rdma_hca::Host::new(lab.sim.root());
    let f = host.function(&lab.vf_pci(0).parse().unwrap()).unwrap();
    let own = f.rdma_devices[0].clone();
    assert!(!f.rdma_devices.contains(&rxe));
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = lab.conf("1.0.0", 0, json!({"mac": "02:22:00:00:00:02", "vlan": 43}));
    // A soft device that can move (siw-like here) follows the VF and comes back.
    let res = lab.run("ADD", "rxe2", "net1", &ns, &conf).ok().clone();
    assert_eq!(lab.fake().rdma[&rxe], inode(&ns));
    assert_eq!(lab.fake().rdma[&own], inode(&ns));
    lab.run("DEL", "rxe2", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert_eq!(lab.fake().rdma[&rxe], inode(&lab.host.path()));
    // rxe refuses: ADD fails naming it, with the PCI device moved back, vlan undone and
    // the netdev never moved.
    let before = lab.snapshot();
    let pod_before = links(&lab.pods[p].name);
    lab.set_fail(Some((&format!("vf:rdma:{rxe}"), libc::EOPNOTSUPP)));
    let n = lab.fake().calls.len();
    let r = lab.run("ADD", "rxe", "net1", &ns, &conf);
    assert_eq!(r.err_code(), 105, "{}", r.stdout);
    assert!(r.msg().contains(&rxe), "{}", r.msg());
    assert!(r.msg().contains("not supported"), "{}", r.msg());
    lab.set_fail(None);
    let calls = calls_since(&lab, n);
    let own_moves = calls
        .iter()
        .filter(|c| c.starts_with(&format!("rdma {own} ")))
        .count();
    assert_eq!(own_moves, 2, "{calls:?}");
    assert_eq!(lab.snapshot(), before);
    assert_eq!(links(&lab.pods[p].name), pod_before);
    // Shared mode: RDMA devices stay where they are.
    lab.sim.set_netns_mode(true).unwrap();
    let n = lab.fake().calls.len();
    let res = lab.run("ADD", "rxe3", "net1", &ns, &conf).ok().clone();
    lab.run("DEL", "rxe3", "net1", &ns, &with_prev(&conf, &res))
        .ok();
    assert!(calls_since(&lab, n).iter().all(|c| !c.starts_with("rdma ")));
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn gc_is_forwarded_to_an_ipam_plugin_that_knows_gc() {
    if !can_run() {
        return;
    }
    let lab = Lab::new(1);
    // A GC-capable IPAM stand-in: answers VERSION with 1.1.0, records every call.
    let dir = lab.tmp.path().join("cni-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let log = lab.tmp.path().join("gc-ipam.log");
    let script = format!(
        "#!/bin/sh\n\
         stdin=$(cat)\n\
         echo \"$CNI_COMMAND $stdin\" >> {log}\n\
         case $CNI_COMMAND in\n\
         VERSION) echo '{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.0.0\",\"1.1.0\"]}}' ;;\n\
         GC) ;;\n\
         *) echo '{{\"cniVersion\":\"1.1.0\",\"code\":4,\"msg\":\"unexpected\"}}'; exit 1 ;;\n\
         esac\n",
        log = log.display()
    );
    let bin = dir.join("gc-ipam");
    std::fs::write(&bin, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.display(), common::CNI_PATH);

    let mut gc = lab.conf("1.1.0", 0, json!({"deviceID": null}));
    gc["ipam"] = json!({"type": "gc-ipam"});
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "net1"}]);
    lab.run_env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", &path)], &gc)
        .ok();
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    assert!(lines[0].starts_with("VERSION "), "{calls}");
    let (cmd, stdin) = lines[1].split_once(' ').unwrap();
    assert_eq!(cmd, "GC");
    let forwarded: Value = serde_json::from_str(stdin).unwrap();
    assert_eq!(
        forwarded["cni.dev/valid-attachments"], gc["cni.dev/valid-attachments"],
        "the same config goes to IPAM"
    );

    // An IPAM plugin's GC failure is GC's failure, naming the plugin.
    std::fs::write(
        &bin,
        "#!/bin/sh\ncat >/dev/null\ncase $CNI_COMMAND in\n\
         VERSION) echo '{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"1.1.0\"]}' ;;\n\
         *) echo '{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"store locked\"}'; exit 1 ;;\n\
         esac\n",
    )
    .unwrap();
    let r = lab.run_env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", &path)], &gc);
    assert_ne!(r.code, 0);
    assert!(
        r.msg().contains("gc-ipam") && r.msg().contains("store locked"),
        "{}",
        r.msg()
    );
}
