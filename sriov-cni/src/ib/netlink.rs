//! The VF GUID setters and their read-back, on the PF netdev (the IPoIB PF, `ib0`).
//!
//! Set: one `RTM_SETLINK` per GUID, `IFLA_VFINFO_LIST > IFLA_VF_INFO >
//! IFLA_VF_IB_NODE_GUID (10) | IFLA_VF_IB_PORT_GUID (11)` carrying
//! `struct ifla_vf_guid { __u32 vf; __u64 guid; }` (16 bytes on 64-bit: 4 bytes of
//! padding after `vf`), sent through the same [`crate::netlink::vf_message`] and
//! [`Rtnl::set_vf_info`] the Ethernet setters use. The kernel only hands it to the
//! driver when the PF is `ARPHRD_INFINIBAND` (EOPNOTSUPP otherwise).
//!
//! Read: the same attributes in the PF's `RTM_GETLINK` answer (with
//! `RTEXT_FILTER_VF`), reported since Linux 5.5 by drivers with `ndo_get_vf_guid`
//! (ipoib over mlx5). Older kernels omit them: [`VfGuids`] then holds `None`.

use crate::netlink::{NlError, Rtnl};
use netlink_packet_route::link::{LinkVfInfo, VfInfo, VfInfoGuid};

/// Which of the VF's two GUIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuidKind {
    /// Node GUID (`IFLA_VF_IB_NODE_GUID`).
    Node,
    /// Port GUID (`IFLA_VF_IB_PORT_GUID`).
    Port,
}

impl GuidKind {
    /// Both, in the order ADD sets them (node first, as ib-sriov-cni does).
    pub const BOTH: [GuidKind; 2] = [GuidKind::Node, GuidKind::Port];

    /// The name used in errors and logs (`node_guid`, as iproute2 spells it).
    pub fn name(self) -> &'static str {
        match self {
            GuidKind::Node => "node_guid",
            GuidKind::Port => "port_guid",
        }
    }
}

/// The VF attribute setting GUID `guid` (raw: zero is allowed, it is what DEL restores
/// on a VF that had none) of kind `kind` on VF `vf`.
pub fn guid_vf_info(vf: u32, kind: GuidKind, guid: u64) -> VfInfo {
    let g = VfInfoGuid::new(vf, guid);
    match kind {
        GuidKind::Node => VfInfo::IbNodeGuid(g),
        GuidKind::Port => VfInfo::IbPortGuid(g),
    }
}

/// Set one GUID of VF `vf` on the PF `pf` (ifindex `pf_index`): one round trip.
pub fn set_vf_guid(
    rtnl: &mut Rtnl,
    pf_index: u32,
    pf: &str,
    vf: u32,
    kind: GuidKind,
    guid: u64,
) -> Result<(), NlError> {
    rtnl.set_vf_info(
        pf_index,
        vec![guid_vf_info(vf, kind, guid)],
        &format!("{pf} vf {vf} {} {}", kind.name(), fmt_raw(guid)),
    )
}

/// A GUID value as text, zero included (`00:00:...` for "none").
pub fn fmt_raw(guid: u64) -> String {
    let b = guid.to_be_bytes();
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A VF's GUIDs as the PF reports them; `None` when the kernel or driver does not
/// report that attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VfGuids {
    /// Node GUID.
    pub node: Option<u64>,
    /// Port GUID.
    pub port: Option<u64>,
}

impl VfGuids {
    /// The value of one kind.
    pub fn get(&self, kind: GuidKind) -> Option<u64> {
        match kind {
            GuidKind::Node => self.node,
            GuidKind::Port => self.port,
        }
    }
}

fn vf_id(i: &VfInfo) -> Option<u32> {
    match i {
        VfInfo::Mac(m) => Some(m.vf_id),
        VfInfo::IbNodeGuid(g) | VfInfo::IbPortGuid(g) => Some(g.vf_id),
        _ => None,
    }
}

/// Read VF `vf`'s GUIDs out of a PF's `IFLA_VFINFO_LIST`; `None` if the list has no
/// entry for that VF.
pub fn vf_guids_from(list: &[LinkVfInfo], vf: u32) -> Option<VfGuids> {
    let entry = list
        .iter()
        .find(|e| e.0.iter().any(|i| vf_id(i) == Some(vf)))?;
    let mut g = VfGuids::default();
    for i in &entry.0 {
        match i {
            VfInfo::IbNodeGuid(x) => g.node = Some(x.guid),
            VfInfo::IbPortGuid(x) => g.port = Some(x.guid),
            _ => {}
        }
    }
    Some(g)
}

/// Every VF's GUIDs on one PF, by VF index (for the duplicate-GUID check).
pub fn all_vf_guids(list: &[LinkVfInfo]) -> Vec<(u32, VfGuids)> {
    let mut out = Vec::new();
    for e in list {
        if let Some(vf) = e.0.iter().find_map(vf_id)
            && let Some(g) = vf_guids_from(std::slice::from_ref(e), vf)
        {
            out.push((vf, g));
        }
    }
    out
}

/// Read the GUIDs of VF `vf` on PF `pf` (one `RTM_GETLINK`, no dump).
pub fn read_vf_guids(rtnl: &mut Rtnl, pf: &str, vf: u32) -> Result<VfGuids, NlError> {
    let (_, list) = rtnl
        .link_with_vfs(pf)?
        .ok_or_else(|| NlError::errno("read VF table of PF", pf, libc::ENODEV))?;
    vf_guids_from(&list, vf).ok_or_else(|| {
        NlError::msg(
            "read VF table of PF",
            pf,
            format!("PF reports no VF {vf} ({} VFs listed)", list.len()),
        )
    })
}

/// The port GUID inside an IPoIB hardware address (20 bytes: 4 bytes of flags and QPN,
/// the 8-byte subnet prefix, then the port GUID). The fallback original on kernels that
/// do not report VF GUIDs, as ib-sriov-cni reads it from the VF netdev.
pub fn port_guid_from_ipoib_addr(addr: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = addr.get(12..20)?.try_into().ok()?;
    (addr.len() == 20).then(|| u64::from_be_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{encode, vf_message};
    use netlink_packet_core::{NLM_F_ACK, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::LinkAttribute;

    fn u16ne(b: &[u8], o: usize) -> u16 {
        u16::from_ne_bytes([b[o], b[o + 1]])
    }
    fn u32ne(b: &[u8], o: usize) -> u32 {
        u32::from_ne_bytes(b[o..o + 4].try_into().unwrap())
    }

    #[test]
    fn node_and_port_guid_request_bytes() {
        for (kind, nla) in [(GuidKind::Node, 10u16), (GuidKind::Port, 11)] {
            let guid = 0x0011_2233_4455_6677u64;
            let msg =
                RouteNetlinkMessage::SetLink(vf_message(7, vec![guid_vf_info(3, kind, guid)]));
            let b = encode(msg, NLM_F_ACK, 42);
            assert_eq!(b.len(), 60, "{kind:?}");
            assert_eq!(u32ne(&b, 0), 60); // nlmsg_len
            assert_eq!(u16ne(&b, 4), 19); // RTM_SETLINK
            assert_eq!(u16ne(&b, 6), 1 | 4); // NLM_F_REQUEST | NLM_F_ACK
            assert_eq!(u32ne(&b, 8), 42); // seq
            assert_eq!(u32ne(&b, 20), 7); // ifi_index: the PF
            assert_eq!(u16ne(&b, 32), 28); // IFLA_VFINFO_LIST len
            assert_eq!(u16ne(&b, 34) & 0x3fff, 22); // IFLA_VFINFO_LIST
            assert_eq!(u16ne(&b, 36), 24); // IFLA_VF_INFO len
            assert_eq!(u16ne(&b, 38) & 0x3fff, 1); // IFLA_VF_INFO
            assert_eq!(u16ne(&b, 40), 4 + 16); // header + sizeof(struct ifla_vf_guid)
            assert_eq!(u16ne(&b, 42), nla);
            assert_eq!(u32ne(&b, 44), 3); // vf
            assert_eq!(&b[48..52], &[0, 0, 0, 0]); // padding before the __u64
            assert_eq!(&b[52..60], &guid.to_ne_bytes()); // guid, host order
        }
    }

    /// A PF's VF table laid out by hand from if_link.h, as the kernel fills it
    /// (`rtnl_fill_vfinfo`): not produced by the encoder under test.
    fn kernel_vfinfo_list(vfs: &[(u32, u64, u64)]) -> Vec<u8> {
        fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
            v.extend_from_slice(&kind.to_ne_bytes());
            v.extend_from_slice(payload);
            while v.len() % 4 != 0 {
                v.push(0);
            }
            v
        }
        fn guid(vf: u32, g: u64) -> Vec<u8> {
            let mut p = vf.to_ne_bytes().to_vec();
            p.extend_from_slice(&[0; 4]);
            p.extend_from_slice(&g.to_ne_bytes());
            p
        }
        let mut list = Vec::new();
        for &(vf, node, port) in vfs {
            let mut mac = vf.to_ne_bytes().to_vec();
            mac.extend_from_slice(&[0; 32]);
            let mut info = nla(1, &mac); // IFLA_VF_MAC
            info.extend(nla(10, &guid(vf, node)));
            info.extend(nla(11, &guid(vf, port)));
            list.extend(nla(1 | 0x8000, &info)); // nested IFLA_VF_INFO
        }
        nla(22 | 0x8000, &list) // IFLA_VFINFO_LIST
    }

    fn parse_list(attrs: Vec<u8>) -> Vec<LinkVfInfo> {
        let mut b = vec![0u8; 32];
        b.extend(attrs);
        let len = b.len() as u32;
        b[0..4].copy_from_slice(&len.to_ne_bytes());
        b[4..6].copy_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&b).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = m.payload else {
            panic!("{m:?}")
        };
        l.attributes
            .into_iter()
            .find_map(|a| match a {
                LinkAttribute::VfInfoList(l) => Some(l),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn vf_guids_read_from_a_kernel_laid_table() {
        let list = parse_list(kernel_vfinfo_list(&[
            (0, 0, 0),
            (1, 0x0002_c903_0021_6e70, 0x0002_c903_0021_6e78),
        ]));
        let g = vf_guids_from(&list, 1).unwrap();
        assert_eq!(g.node, Some(0x0002_c903_0021_6e70));
        assert_eq!(g.get(GuidKind::Port), Some(0x0002_c903_0021_6e78));
        assert_eq!(
            vf_guids_from(&list, 0).unwrap(),
            VfGuids {
                node: Some(0),
                port: Some(0)
            }
        );
        assert_eq!(vf_guids_from(&list, 2), None);
        let all = all_vf_guids(&list);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].0, 1);
        assert_eq!(fmt_raw(all[1].1.node.unwrap()), "00:02:c9:03:00:21:6e:70");
    }

    #[test]
    fn old_kernels_without_guid_attributes_read_as_unknown() {
        let list = vec![LinkVfInfo(vec![VfInfo::Mac(
            netlink_packet_route::link::VfInfoMac::new(5, &[0; 6]),
        )])];
        assert_eq!(vf_guids_from(&list, 5), Some(VfGuids::default()));
    }

    #[test]
    fn port_guid_from_the_20_byte_ipoib_address() {
        let mut a = vec![0x00, 0x00, 0x10, 0x49, 0xfe, 0x80, 0, 0, 0, 0, 0, 0];
        a.extend_from_slice(&[0x00, 0x02, 0xc9, 0x03, 0x00, 0x21, 0x6e, 0x78]);
        assert_eq!(port_guid_from_ipoib_addr(&a), Some(0x0002_c903_0021_6e78));
        assert_eq!(port_guid_from_ipoib_addr(&a[..6]), None);
    }
}
