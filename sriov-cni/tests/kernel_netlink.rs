//! The real netlink encoding of VF settings, checked byte by byte and against the kernel
//! with a veth standing in for the PF: a well-formed VF request must reach the driver
//! hook (veth has none: EOPNOTSUPP), a malformed one must be rejected by the parser
//! (EINVAL). Also the VF-table read (one RTM_GETLINK with RTEXT_FILTER_VF) and the
//! round-trip counter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Ns, can_run, ip_ok, uid};
use netlink_packet_core::{DefaultNla, NLM_F_ACK};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkVfInfo, VfInfo};
use sriov_cni::config::{LinkState, Mac, VlanProto};
use sriov_cni::netlink::{Rtnl, encode, round_trips, vf_message};
use sriov_cni::netns::Netns;
use sriov_cni::sriov::{NetlinkVf, VfConfigurator, VfSetting};

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

#[test]
fn trust_request_bytes() {
    let msg =
        RouteNetlinkMessage::SetLink(vf_message(7, VfSetting::Trust { on: true }.to_vf_info(3)));
    let b = encode(msg, NLM_F_ACK, 42);
    assert_eq!(b.len(), 52);
    assert_eq!(u32le(&b, 0), 52); // nlmsg_len
    assert_eq!(u16le(&b, 4), 19); // RTM_SETLINK
    assert_eq!(u16le(&b, 6), 1 | 4); // NLM_F_REQUEST | NLM_F_ACK
    assert_eq!(u32le(&b, 8), 42); // seq
    assert_eq!(u32le(&b, 20), 7); // ifi_index of the PF
    assert_eq!(u16le(&b, 32), 20); // IFLA_VFINFO_LIST len
    assert_eq!(u16le(&b, 34) & 0x3fff, 22); // IFLA_VFINFO_LIST
    assert_eq!(u16le(&b, 36), 16); // IFLA_VF_INFO len
    assert_eq!(u16le(&b, 38) & 0x3fff, 1); // IFLA_VF_INFO
    assert_eq!(u16le(&b, 40), 12); // IFLA_VF_TRUST len
    assert_eq!(u16le(&b, 42), 9); // IFLA_VF_TRUST
    assert_eq!(u32le(&b, 44), 3); // vf
    assert_eq!(u32le(&b, 48), 1); // setting
}

#[test]
fn vlan_and_mac_and_rate_bytes() {
    // 802.1Q: classic IFLA_VF_VLAN {vf, vlan, qos}
    let v = VfSetting::Vlan {
        vlan: 100,
        qos: 5,
        proto: VlanProto::Dot1Q,
    }
    .to_vf_info(2);
    let b = encode(RouteNetlinkMessage::SetLink(vf_message(1, v)), NLM_F_ACK, 1);
    assert_eq!(u16le(&b, 42), 2); // IFLA_VF_VLAN
    assert_eq!((u32le(&b, 44), u32le(&b, 48), u32le(&b, 52)), (2, 100, 5));
    // 802.1ad: IFLA_VF_VLAN_LIST > IFLA_VF_VLAN_INFO {vf, vlan, qos, be16 proto}
    let v = VfSetting::Vlan {
        vlan: 100,
        qos: 5,
        proto: VlanProto::Dot1Ad,
    }
    .to_vf_info(2);
    let b = encode(RouteNetlinkMessage::SetLink(vf_message(1, v)), NLM_F_ACK, 1);
    assert_eq!(u16le(&b, 42) & 0x3fff, 12); // IFLA_VF_VLAN_LIST
    assert_eq!(u16le(&b, 46), 1); // IFLA_VF_VLAN_INFO
    assert_eq!((u32le(&b, 48), u32le(&b, 52), u32le(&b, 56)), (2, 100, 5));
    assert_eq!(&b[60..62], &[0x88, 0xa8]); // big-endian ETH_P_8021AD
    // MAC: {vf, mac[32]}
    let m = Mac::parse("0c:42:a1:00:00:09").unwrap();
    let b = encode(
        RouteNetlinkMessage::SetLink(vf_message(1, VfSetting::Mac { mac: m }.to_vf_info(4))),
        NLM_F_ACK,
        1,
    );
    assert_eq!(u16le(&b, 40), 40);
    assert_eq!(u16le(&b, 42), 1); // IFLA_VF_MAC
    assert_eq!(u32le(&b, 44), 4);
    assert_eq!(&b[48..54], &m.0);
    // Rate: {vf, min, max}
    let b = encode(
        RouteNetlinkMessage::SetLink(vf_message(
            1,
            VfSetting::Rate { min: 10, max: 200 }.to_vf_info(4),
        )),
        NLM_F_ACK,
        1,
    );
    assert_eq!(u16le(&b, 42), 6); // IFLA_VF_RATE
    assert_eq!((u32le(&b, 44), u32le(&b, 48), u32le(&b, 52)), (4, 10, 200));
    let b = encode(
        RouteNetlinkMessage::SetLink(vf_message(
            1,
            VfSetting::LinkState {
                state: LinkState::Disable,
            }
            .to_vf_info(4),
        )),
        NLM_F_ACK,
        1,
    );
    assert_eq!(u16le(&b, 42), 5); // IFLA_VF_LINK_STATE
    assert_eq!((u32le(&b, 44), u32le(&b, 48)), (4, 2));
}

/// Open a route socket inside `ns` and return it with the veth's index.
fn in_ns(ns: &Ns, dev: &str) -> (Rtnl, u32) {
    let home = Netns::current().unwrap();
    let target = Netns::open(std::path::Path::new(&ns.path())).unwrap();
    let mut r = target.run(&home, Rtnl::new).unwrap().unwrap();
    let idx = r.link_by_name(dev).unwrap().unwrap().index;
    (r, idx)
}

#[test]
fn veth_pf_answers_eopnotsupp_to_wellformed_and_einval_to_malformed() {
    if !can_run() {
        return;
    }
    let ns = Ns::new(format!("sriovt-{}-k", uid()));
    ip_ok(&[
        "-n", &ns.name, "link", "add", "pf0", "type", "veth", "peer", "name", "pf0p",
    ]);
    let (mut r, idx) = in_ns(&ns, "pf0");
    for s in [
        VfSetting::Trust { on: true },
        VfSetting::Spoofchk { on: false },
        VfSetting::Mac {
            mac: Mac::parse("0c:42:a1:00:00:09").unwrap(),
        },
        VfSetting::Vlan {
            vlan: 10,
            qos: 1,
            proto: VlanProto::Dot1Q,
        },
        VfSetting::Vlan {
            vlan: 10,
            qos: 1,
            proto: VlanProto::Dot1Ad,
        },
        VfSetting::Rate { min: 0, max: 100 },
        VfSetting::LinkState {
            state: LinkState::Enable,
        },
    ] {
        let e = r.set_vf_info(idx, s.to_vf_info(0), "pf0").unwrap_err();
        assert_eq!(e.errno, Some(libc::EOPNOTSUPP), "{}: {e}", s.describe());
    }
    // Truncated IFLA_VF_TRUST (4 bytes instead of 8): rejected by the attribute policy
    // before any driver hook (EINVAL on older kernels, ERANGE since the policy
    // validator reports length errors as such).
    let short = VfInfo::Other(DefaultNla::new(9, vec![0, 0, 0, 0]));
    let e = r.set_vf_info(idx, vec![short], "pf0").unwrap_err();
    assert!(
        matches!(e.errno, Some(libc::EINVAL) | Some(libc::ERANGE)),
        "{e}"
    );
    // Something other than IFLA_VF_INFO inside IFLA_VFINFO_LIST.
    let mut m = LinkMessage::default();
    m.header.index = idx;
    m.attributes
        .push(LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![])]));
    let mut b = encode(RouteNetlinkMessage::SetLink(m), NLM_F_ACK, 9);
    b[38] = 2; // nested type IFLA_VF_INFO (1) -> 2
    let e = r.request_raw(&b, "set VF", "pf0").unwrap_err();
    assert_eq!(e.errno, Some(libc::EINVAL), "{e}");
}

#[test]
fn vf_table_read_is_one_round_trip_and_reports_missing_vf() {
    if !can_run() {
        return;
    }
    let ns = Ns::new(format!("sriovt-{}-t", uid()));
    ip_ok(&[
        "-n", &ns.name, "link", "add", "pf1", "type", "veth", "peer", "name", "pf1p",
    ]);
    let home = Netns::current().unwrap();
    let target = Netns::open(std::path::Path::new(&ns.path())).unwrap();
    let mut vf = target.run(&home, NetlinkVf::new).unwrap().unwrap();
    let before = round_trips();
    let e = vf.vf_state("pf1", 0).unwrap_err();
    assert!(e.msg.contains("no VF 0"), "{e}");
    assert_eq!(round_trips() - before, 1);
    let e = vf.vf_state("nosuchpf", 0).unwrap_err();
    assert!(e.is_no_device(), "{e}");
    // The PF index is cached by the table read: a setter costs exactly one more.
    let before = round_trips();
    let e = vf
        .set("pf1", 0, &VfSetting::Trust { on: true })
        .unwrap_err();
    assert_eq!(e.errno, Some(libc::EOPNOTSUPP));
    assert_eq!(round_trips() - before, 1);
}

#[test]
fn rdma_netlink_against_this_kernel() {
    // Without ib_core the kernel has no NETLINK_RDMA family: the socket itself is refused
    // (EPROTONOSUPPORT) and the error says so. With it, a device that does not exist is
    // not found by the dump, and moving a bogus index is refused by the kernel.
    match sriov_cni::rdma::RdmaNl::new() {
        Err(e) => assert_eq!(e.errno, Some(libc::EPROTONOSUPPORT), "{e}"),
        Ok(mut nl) => {
            assert_eq!(nl.index_of("sriovt-no-such-dev").unwrap(), None);
            let home = Netns::current().unwrap();
            let e = nl
                .set_netns(0xfff0, home.raw_fd() as u32, "bogus")
                .unwrap_err();
            assert!(e.errno.is_some(), "{e}");
        }
    }
}

#[test]
fn kernel_reason_text_is_kept_in_errors() {
    if !can_run() {
        return;
    }
    let ns = Ns::new(format!("sriovt-{}-x", uid()));
    ip_ok(&[
        "-n", &ns.name, "link", "add", "pf2", "type", "veth", "peer", "name", "pf2p",
    ]);
    let (mut r, idx) = in_ns(&ns, "pf2");
    let change = sriov_cni::netlink::LinkChange {
        index: idx,
        mtu: Some(70000),
        ..Default::default()
    };
    let e = r.set_link(&change, "pf2").unwrap_err();
    assert_eq!(e.errno, Some(libc::EINVAL));
    // extended ACK text from the kernel, e.g. "MTU greater than device maximum"
    assert!(e.msg.to_lowercase().contains("mtu"), "{e}");
}
