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
