//! The link double against the kernel: one scenario of moves, renames, altnames,
//! addresses and refusals, run through the same `Links` seam on the real kernel (root,
//! veths in two test-owned netns) and on `fake_links::FakeLinks`, must observe the same.
//! This is what lets the unprivileged lifecycle tests stand in for the kernel tier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Ns, can_run, ip_ok, uid};
use sriov_cni::config::Mac;
use sriov_cni::fake_links::{FakeLinks, HOST};
use sriov_cni::links::{KernelLinks, Links};
use sriov_cni::netlink::LinkChange;
use sriov_cni::netns::Netns;

/// What the seam reports, step by step: errnos and the links' visible state (names,
/// MAC, MTU, admin state, whether the ifindex was kept, addresses).
fn scenario(links: &mut dyn Links, pod: &Netns, home: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    let mut h = links.host().unwrap();
    let mut p = links.in_netns(pod, home).unwrap();
    let res = |r: Result<(), sriov_cni::netlink::NlError>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("errno {:?}", e.errno),
    };
    let a = h.link_by_name("dva").unwrap().unwrap();
    let x = p.link_by_name("dvx").unwrap().unwrap();
    let to_pod = |name: Option<&str>, keep: Option<i32>| LinkChange {
        index: a.index,
        netns_fd: Some(pod.raw_fd()),
        new_ifindex: keep,
        name: name.map(str::to_string),
        ..Default::default()
    };
    // 1. The ifindex is taken in the pod: EBUSY, nothing moved.
    out.push(res(
        h.set_link(&to_pod(Some("net1"), Some(x.index as i32)), "dva")
    ));
    out.push(format!(
        "on host: {}",
        h.link_by_name("dva").unwrap().is_some()
    ));
    // 2. An altname is taken in the pod: EEXIST, nothing moved.
    h.add_altnames(a.index, &["dvx".to_string()]).unwrap();
    out.push(res(h.set_link(&to_pod(Some("net1"), None), "dva")));
    out.push(format!(
        "on host: {}",
        h.link_by_name("dva").unwrap().is_some()
    ));
    out.push(format!(
        "altname lookup: {:?}",
        h.link_by_name("dvx").unwrap().map(|l| l.name)
    ));
    h.del_altnames(a.index, &["dvx".to_string()]).unwrap();
    out.push(format!(
        "altnames: {:?}",
        h.link_by_name("dva").unwrap().unwrap().altnames
    ));
    // 3. The current name is taken in the pod and the new one is free: moved and
    // renamed in one go.
    out.push(res(
        h.set_link(&to_pod(Some("net1"), Some(a.index as i32)), "dva")
    ));
    let l = p.link_by_name("net1").unwrap().unwrap();
    out.push(format!(
        "in pod: {} up {} kept {}",
        l.name,
        l.up,
        l.index == a.index
    ));
    // Back to the host under its name, MTU changed, up.
    out.push(res(p.set_link(
        &LinkChange {
            index: l.index,
            netns_fd: Some(home.raw_fd()),
            name: Some("dva".into()),
            mtu: Some(1300),
            up: Some(true),
            ..Default::default()
        },
        "net1",
    )));
    let b = h.link_by_name("dva").unwrap().unwrap();
    out.push(format!("on host: {} mtu {} up {}", b.name, b.mtu, b.up));
    // 4. Renaming onto a name taken in the pod: refused.
    out.push(res(
        h.set_link(&to_pod(Some("dvx"), Some(a.index as i32)), "dva")
    ));
    let here = h.link_by_name("dva").unwrap().is_some();
    out.push(format!("on host: {here}"));
    if !here {
        // (put it back for the rest: ours is the one with its MAC)
        for n in ["dva", "dvx"] {
            if let Some(t) = p.link_by_name(n).unwrap().filter(|t| t.mac == b.mac) {
                p.set_link(
                    &LinkChange {
                        index: t.index,
                        netns_fd: Some(home.raw_fd()),
                        name: Some("dva".into()),
                        ..Default::default()
                    },
                    n,
                )
                .unwrap();
            }
        }
    }
    let a = h.link_by_name("dva").unwrap().unwrap();
    // 5. The full move of ADD: keep the ifindex, rename, MAC, MTU in one message.
    let mac = Mac([0x0c, 0x42, 0xa1, 0, 0, 9]);
    out.push(res(h.set_link(
        &LinkChange {
            index: a.index,
            netns_fd: Some(pod.raw_fd()),
            new_ifindex: Some(a.index as i32),
            name: Some("net1".into()),
            mac: Some(mac),
            mtu: Some(1400),
            up: None,
        },
        "dva",
    )));
    let l = p.link_by_index(a.index).unwrap().unwrap();
    out.push(format!(
        "in pod: {} mac {:?} mtu {} up {} (was up {})",
        l.name, l.mac, l.mtu, l.up, a.up
    ));
    let ip: sriov_cni::result::IpNet = "10.66.0.2/24".parse().unwrap();
    out.push(res(p.add_address(l.index, &ip)));
    out.push(res(p.add_address(l.index, &ip)));
    out.push(format!("addrs: {:?}", p.addresses(l.index).unwrap()));
    out.push(res(p.set_link(
        &LinkChange {
            index: l.index,
            up: Some(true),
            ..Default::default()
        },
        "net1",
    )));
    out.push(format!(
        "up: {}",
        p.link_by_index(l.index).unwrap().unwrap().up
    ));
    // 6. Gone: lookups say so, changes fail with ENODEV.
    out.push(format!("by name: {:?}", h.link_by_name("nosuch0").unwrap()));
    out.push(res(h.set_link(
        &LinkChange {
            index: 999_999,
            up: Some(true),
            ..Default::default()
        },
        "nosuch0",
    )));
    out
}

#[test]
fn the_link_double_observes_what_the_kernel_does() {
    if !can_run() {
        return;
    }
    let id = uid();
    let host = Ns::new(format!("sriovt-{id}-dh"));
    let pod = Ns::new(format!("sriovt-{id}-dp"));
    // Padding first, so the host link's ifindex is free in the pod (cases 3 and 5).
    for (ns, a, b) in [
        (&host, "dvpad0", "dvpad1"),
        (&host, "dvpad2", "dvpad3"),
        (&host, "dvpad4", "dvpad5"),
        (&host, "dva", "dvap"),
        (&pod, "dvx", "dvxp"),
        // The pod holds a link named like the host's one (cases 1 to 4).
        (&pod, "dva", "dvaq"),
    ] {
        ip_ok(&[
            "-n", &ns.name, "link", "add", a, "type", "veth", "peer", "name", b,
        ]);
        ip_ok(&["-n", &ns.name, "link", "set", a, "up"]);
    }
    let machine = Netns::current().unwrap();
    let h = Netns::open(std::path::Path::new(&host.path())).unwrap();
    let p = Netns::open(std::path::Path::new(&pod.path())).unwrap();
    let kernel = h
        .run(&machine, || {
            let home = Netns::current().unwrap();
            scenario(&mut KernelLinks, &p, &home)
        })
        .unwrap();

    let fake = FakeLinks::new();
    let m = |b| Mac([2, 0, 0, 0, 0, b]);
    fake.add_link(HOST, "dva", m(1), true);
    fake.add_link(HOST, "dvap", m(2), false);
    let key = p.path().display().to_string();
    fake.add_link(&key, "dvx", m(3), true);
    fake.add_link(&key, "dvxp", m(4), false);
    fake.add_link(&key, "dva", m(5), true);
    let home = Netns::current().unwrap();
    let double = scenario(&mut fake.clone(), &p, &home);
    assert_eq!(double, kernel);
}
