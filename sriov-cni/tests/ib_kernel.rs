//! The VF GUID setters against this kernel, with a veth standing in for the IPoIB PF:
//! a well-formed `IFLA_VF_IB_NODE_GUID` / `IFLA_VF_IB_PORT_GUID` passes the attribute
//! policy (16-byte `struct ifla_vf_guid`) and reaches `do_setvfinfo`, which answers
//! EOPNOTSUPP because the device is not ARPHRD_INFINIBAND; a short one (the 12-byte
//! packed layout some libraries sent) is refused by the policy (EINVAL/ERANGE).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Ns, can_run, ip_ok, uid};
use netlink_packet_core::DefaultNla;
use netlink_packet_route::link::VfInfo;
use sriov_cni::ib::netlink::{GuidKind, read_vf_guids, set_vf_guid};
use sriov_cni::netlink::{Rtnl, round_trips};
use sriov_cni::netns::Netns;

#[test]
fn veth_pf_answers_eopnotsupp_to_guid_setters_and_einval_to_short_ones() {
    if !can_run() {
        return;
    }
    let ns = Ns::new(format!("sriovt-{}-g", uid()));
    ip_ok(&[
        "-n", &ns.name, "link", "add", "ibpf0", "type", "veth", "peer", "name", "ibpf0p",
    ]);
    let home = Netns::current().unwrap();
    let target = Netns::open(std::path::Path::new(&ns.path())).unwrap();
    let mut r = target.run(&home, Rtnl::new).unwrap().unwrap();
    let idx = r.link_by_name("ibpf0").unwrap().unwrap().index;
    for kind in GuidKind::BOTH {
        let before = round_trips();
        let e = set_vf_guid(&mut r, idx, "ibpf0", 0, kind, 0x0002_c903_0021_6e70).unwrap_err();
        assert_eq!(e.errno, Some(libc::EOPNOTSUPP), "{}: {e}", kind.name());
        assert!(e.target.contains(kind.name()), "{e:?}");
        assert_eq!(round_trips() - before, 1);
    }
    for nla in [10u16, 11] {
        let short = VfInfo::Other(DefaultNla::new(nla, vec![0; 12]));
        let e = r.set_vf_info(idx, vec![short], "ibpf0").unwrap_err();
        assert!(
            matches!(e.errno, Some(libc::EINVAL) | Some(libc::ERANGE)),
            "attr {nla}: {e}"
        );
    }
    // A veth has no VF table: the read-back says which VF is missing.
    let e = read_vf_guids(&mut r, "ibpf0", 0).unwrap_err();
    assert!(e.msg.contains("no VF 0"), "{e}");
}
