//! VF configuration on the PF: the state of one VF, the settings ADD changes, and the
//! narrow [`VfConfigurator`] trait with its real netlink implementation.
//!
//! Each setting is sent as its own `RTM_SETLINK` so that a refusal names the setting and
//! leaves the earlier ones known-applied (the kernel stops at the first refused VF
//! attribute of a message, having applied the ones before it).

use crate::config::{LinkState, Mac, VlanProto};
use crate::ib::netlink::{GuidKind, VfGuids};
use crate::ib::rebind::{RebindError, SysfsBinding};
use crate::netlink::{NlError, Rtnl};
use crate::netns::Netns;
use crate::rdma::RdmaNl;
use netlink_packet_route::link::{
    LinkVfInfo, VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust,
    VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};
use rdma_hca::PciAddress;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// What the PF reports for one VF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfState {
    /// Admin MAC (all-zero when none is set).
    pub mac: Mac,
    /// VLAN id (0 = none).
    pub vlan: u16,
    /// VLAN QoS.
    pub qos: u8,
    /// VLAN protocol.
    pub proto: VlanProto,
    /// Minimum TX rate, Mbps.
    pub min_tx_rate: u32,
    /// Maximum TX rate, Mbps.
    pub max_tx_rate: u32,
    /// Spoof checking.
    pub spoofchk: bool,
    /// Trusted.
    pub trust: bool,
    /// Link state policy.
    pub link_state: LinkState,
}

impl Default for VfState {
    fn default() -> Self {
        VfState {
            mac: Mac::default(),
            vlan: 0,
            qos: 0,
            proto: VlanProto::Dot1Q,
            min_tx_rate: 0,
            max_tx_rate: 0,
            spoofchk: true,
            trust: false,
            link_state: LinkState::Auto,
        }
    }
}

/// One VF setting, as applied with one netlink message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VfSetting {
    /// VLAN, QoS and protocol.
    Vlan {
        /// VLAN id.
        vlan: u16,
        /// QoS.
        qos: u8,
        /// Protocol.
        proto: VlanProto,
    },
    /// Admin MAC.
    Mac {
        /// The MAC.
        mac: Mac,
    },
    /// TX rates.
    Rate {
        /// Minimum, Mbps.
        min: u32,
        /// Maximum, Mbps.
        max: u32,
    },
    /// Spoof checking.
    Spoofchk {
        /// On or off.
        on: bool,
    },
    /// Trust.
    Trust {
        /// On or off.
        on: bool,
    },
    /// Link state.
    LinkState {
        /// The state.
        state: LinkState,
    },
}

fn onoff(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl VfSetting {
    /// Short name, also the failure-injection step name (`vf:<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            VfSetting::Vlan { .. } => "vlan",
            VfSetting::Mac { .. } => "mac",
            VfSetting::Rate { .. } => "rate",
            VfSetting::Spoofchk { .. } => "spoofchk",
            VfSetting::Trust { .. } => "trust",
            VfSetting::LinkState { .. } => "link_state",
        }
    }

    /// The setting spelled with the config's field names.
    pub fn describe(&self) -> String {
        match self {
            VfSetting::Vlan { vlan, qos, proto } => {
                format!("vlan={vlan} vlanQoS={qos} vlanProto={}", proto.as_str())
            }
            VfSetting::Mac { mac } => format!("mac={mac}"),
            VfSetting::Rate { min, max } => format!("min_tx_rate={min} max_tx_rate={max}"),
            VfSetting::Spoofchk { on } => format!("spoofchk={}", onoff(*on)),
            VfSetting::Trust { on } => format!("trust={}", onoff(*on)),
            VfSetting::LinkState { state } => format!("link_state={}", state.as_str()),
        }
    }

    /// The same setting with the value `st` has (what restores it).
    pub fn current(&self, st: &VfState) -> VfSetting {
        match self {
            VfSetting::Vlan { .. } => VfSetting::Vlan {
                vlan: st.vlan,
                qos: st.qos,
                proto: st.proto,
            },
            VfSetting::Mac { .. } => VfSetting::Mac { mac: st.mac },
            VfSetting::Rate { .. } => VfSetting::Rate {
                min: st.min_tx_rate,
                max: st.max_tx_rate,
            },
            VfSetting::Spoofchk { .. } => VfSetting::Spoofchk { on: st.spoofchk },
            VfSetting::Trust { .. } => VfSetting::Trust { on: st.trust },
            VfSetting::LinkState { .. } => VfSetting::LinkState {
                state: st.link_state,
            },
        }
    }

    /// Whether `st` already has this value.
    pub fn holds_in(&self, st: &VfState) -> bool {
        self.current(st) == *self
    }

    /// Apply to a state (what the PF will report afterwards).
    pub fn apply_to(&self, st: &mut VfState) {
        match *self {
            VfSetting::Vlan { vlan, qos, proto } => {
                st.vlan = vlan;
                st.qos = qos;
                st.proto = proto;
            }
            VfSetting::Mac { mac } => st.mac = mac,
            VfSetting::Rate { min, max } => {
                st.min_tx_rate = min;
                st.max_tx_rate = max;
            }
            VfSetting::Spoofchk { on } => st.spoofchk = on,
            VfSetting::Trust { on } => st.trust = on,
            VfSetting::LinkState { state } => st.link_state = state,
        }
    }

    /// The VF attributes carrying this setting for VF `vf`. 802.1Q VLANs use the classic
    /// `IFLA_VF_VLAN` every driver knows; 802.1ad needs `IFLA_VF_VLAN_LIST`.
    pub fn to_vf_info(&self, vf: u32) -> Vec<VfInfo> {
        vec![match *self {
            VfSetting::Vlan {
                vlan,
                qos,
                proto: VlanProto::Dot1Q,
            } => VfInfo::Vlan(VfInfoVlan::new(vf, vlan.into(), qos.into())),
            VfSetting::Vlan {
                vlan,
                qos,
                proto: VlanProto::Dot1Ad,
            } => VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                vf,
                vlan.into(),
                qos.into(),
                VlanProtocol::Ieee8021Ad,
            ))]),
            VfSetting::Mac { mac } => VfInfo::Mac(VfInfoMac::new(vf, &mac.0)),
            VfSetting::Rate { min, max } => VfInfo::Rate(VfInfoRate::new(vf, min, max)),
            VfSetting::Spoofchk { on } => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(vf, on)),
            VfSetting::Trust { on } => VfInfo::Trust(VfInfoTrust::new(vf, on)),
            VfSetting::LinkState { state } => VfInfo::LinkState(VfInfoLinkState::new(
                vf,
                match state {
                    LinkState::Auto => VfLinkState::Auto,
                    LinkState::Enable => VfLinkState::Enable,
                    LinkState::Disable => VfLinkState::Disable,
                },
            )),
        }]
    }
}

/// Read one VF's state out of a PF's `IFLA_VFINFO_LIST`.
pub fn vf_state_from(list: &[LinkVfInfo], vf: u32) -> Option<VfState> {
    let entry = list.iter().find(|e| {
        e.0.iter().any(|i| match i {
            VfInfo::Mac(m) => m.vf_id == vf,
            _ => false,
        })
    })?;
    let mut st = VfState::default();
    for i in &entry.0 {
        match i {
            VfInfo::Mac(m) => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&m.mac[..6]);
                st.mac = Mac(mac);
            }
            VfInfo::Vlan(v) => {
                st.vlan = v.vlan_id as u16;
                st.qos = v.qos as u8;
            }
            VfInfo::VlanList(l) => {
                if let Some(VfVlan::Info(v)) = l.first() {
                    st.proto = VlanProto::from_ethertype(v.protocol.into());
                }
            }
            VfInfo::Rate(r) => {
                st.min_tx_rate = r.min_tx_rate;
                st.max_tx_rate = r.max_tx_rate;
            }
            VfInfo::SpoofCheck(s) => st.spoofchk = s.enabled,
            VfInfo::Trust(t) => st.trust = t.enabled,
            VfInfo::LinkState(l) => {
                st.link_state = match l.state {
                    VfLinkState::Enable => LinkState::Enable,
                    VfLinkState::Disable => LinkState::Disable,
                    _ => LinkState::Auto,
                }
            }
            _ => {}
        }
    }
    Some(st)
}

/// Everything done to a PF on behalf of a VF, and to RDMA devices. The real
/// implementation talks netlink; the test fake keeps state in a file.
pub trait VfConfigurator {
    /// The VF's current state (one request on the PF, no dump).
    fn vf_state(&mut self, pf: &str, vf: u32) -> Result<VfState, NlError>;
    /// Apply one setting.
    fn set(&mut self, pf: &str, vf: u32, setting: &VfSetting) -> Result<(), NlError>;
    /// Move RDMA device `dev` from netns `from` to netns `to` (exclusive RDMA mode).
    fn rdma_move(
        &mut self,
        dev: &str,
        from: &Netns,
        to: &Netns,
        home: &Netns,
    ) -> Result<(), NlError>;
    /// The GUIDs of every VF of the InfiniBand PF `pf` (one request, no dump).
    fn vf_guids(&mut self, pf: &str) -> Result<Vec<(u32, VfGuids)>, NlError>;
    /// Set one GUID of VF `vf` on PF `pf` (a raw value: DEL restores 0 where there was
    /// none).
    fn set_guid(&mut self, pf: &str, vf: u32, kind: GuidKind, guid: u64) -> Result<(), NlError>;
    /// Rebind VF `vf` to its driver through sysfs under `root` and wait for its netdev
    /// (the driver reads the GUIDs at probe). Returns the netdev's name.
    fn rebind(&mut self, root: &Path, vf: &PciAddress) -> Result<String, RebindError> {
        crate::ib::rebind::rebind(
            &mut SysfsBinding::new(root),
            vf,
            crate::ib::rebind::DEFAULT_TIMEOUT,
        )
    }
}

/// The test seam beside [`VfConfigurator`]: fault injection after a step, and a model of
/// the VF driver's side of netdev changes. What we ship passes [`NoSeam`] (every hook a
/// no-op); only the test fake (cargo feature `test-fake`) implements the hooks.
pub trait TestSeam {
    /// A test seam: fail after step `step` when the fake is told to. Real: never fails.
    fn fault(&mut self, _step: &str) -> Result<(), NlError> {
        Ok(())
    }
    /// A test seam for the VF driver's side of a netdev change: called right after the
    /// plugin wrote `mac` on VF `vf`'s netdev; an error fails that step. On a real PF
    /// the VF driver talks to the PF driver itself (igbvf asks igb, which refuses or
    /// records the MAC, and the kernel request fails with it), so the shipped
    /// seam does nothing; the fake models igb here.
    fn netdev_mac(&mut self, _pf: &str, _vf: u32, _mac: Mac) -> Result<(), NlError> {
        Ok(())
    }
    /// Same, right after the VF netdev was brought up.
    fn netdev_up(&mut self, _pf: &str, _vf: u32) -> Result<(), NlError> {
        Ok(())
    }
    /// Same, right after the VF netdev, with MAC `mac`, went down (also by a netns move).
    fn netdev_down(&mut self, _pf: &str, _vf: u32, _mac: Option<Mac>) -> Result<(), NlError> {
        Ok(())
    }
}

/// The seam of the shipped binary: no fault is ever injected, no driver is modelled.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSeam;

impl TestSeam for NoSeam {}

/// The real [`VfConfigurator`] over a route netlink socket in the host netns.
pub struct NetlinkVf {
    rtnl: Rtnl,
    pf_index: HashMap<String, u32>,
}

impl NetlinkVf {
    /// Open a socket in the calling thread's netns.
    pub fn new() -> Result<NetlinkVf, NlError> {
        Ok(NetlinkVf {
            rtnl: Rtnl::new()?,
            pf_index: HashMap::new(),
        })
    }

    fn index(&mut self, pf: &str) -> Result<u32, NlError> {
        if let Some(i) = self.pf_index.get(pf) {
            return Ok(*i);
        }
        let l = self
            .rtnl
            .link_by_name(pf)?
            .ok_or_else(|| NlError::errno("find PF", pf, libc::ENODEV))?;
        self.pf_index.insert(pf.to_string(), l.index);
        Ok(l.index)
    }
}

impl VfConfigurator for NetlinkVf {
    fn vf_state(&mut self, pf: &str, vf: u32) -> Result<VfState, NlError> {
        let (link, list) = self
            .rtnl
            .link_with_vfs(pf)?
            .ok_or_else(|| NlError::errno("read VF table of PF", pf, libc::ENODEV))?;
        self.pf_index.insert(pf.to_string(), link.index);
        vf_state_from(&list, vf).ok_or_else(|| {
            NlError::msg(
                "read VF table of PF",
                pf,
                format!("PF reports no VF {vf} ({} VFs listed)", list.len()),
            )
        })
    }

    fn set(&mut self, pf: &str, vf: u32, setting: &VfSetting) -> Result<(), NlError> {
        let index = self.index(pf)?;
        self.rtnl.set_vf_info(
            index,
            setting.to_vf_info(vf),
            &format!("{pf} vf {vf} {}", setting.describe()),
        )
    }

    fn vf_guids(&mut self, pf: &str) -> Result<Vec<(u32, VfGuids)>, NlError> {
        let (link, list) = self
            .rtnl
            .link_with_vfs(pf)?
            .ok_or_else(|| NlError::errno("read VF table of PF", pf, libc::ENODEV))?;
        self.pf_index.insert(pf.to_string(), link.index);
        Ok(crate::ib::netlink::all_vf_guids(&list))
    }

    fn set_guid(&mut self, pf: &str, vf: u32, kind: GuidKind, guid: u64) -> Result<(), NlError> {
        let index = self.index(pf)?;
        crate::ib::netlink::set_vf_guid(&mut self.rtnl, index, pf, vf, kind, guid)
    }

    fn rdma_move(
        &mut self,
        dev: &str,
        from: &Netns,
        to: &Netns,
        home: &Netns,
    ) -> Result<(), NlError> {
        let open = from
            .run(home, RdmaNl::new)
            .map_err(|e| NlError::msg("enter netns for", dev, e.to_string()))??;
        let mut nl = open;
        let idx = nl
            .index_of(dev)?
            .ok_or_else(|| NlError::errno("find RDMA device", dev, libc::ENODEV))?;
        nl.set_netns(idx, to.raw_fd() as u32, dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::LinkAttribute;

    fn table() -> Vec<LinkVfInfo> {
        let vf = |i: u32, vlan: u32, trust: bool| {
            LinkVfInfo(vec![
                VfInfo::Mac(VfInfoMac::new(i, &[0x0c, 0x42, 0xa1, 0, 0, i as u8])),
                VfInfo::Vlan(VfInfoVlan::new(i, vlan, 2)),
                VfInfo::Rate(VfInfoRate::new(i, 0, 500)),
                VfInfo::SpoofCheck(VfInfoSpoofCheck::new(i, false)),
                VfInfo::LinkState(VfInfoLinkState::new(i, VfLinkState::Disable)),
                VfInfo::Trust(VfInfoTrust::new(i, trust)),
                VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
                    i,
                    vlan,
                    2,
                    VlanProtocol::Ieee8021Ad,
                ))]),
            ])
        };
        vec![vf(0, 10, false), vf(1, 20, true)]
    }

    #[test]
    fn vf_state_read_from_the_pf_table() {
        // Through the wire format and back, as the kernel's answer would arrive.
        let mut m = netlink_packet_route::link::LinkMessage::default();
        m.attributes.push(LinkAttribute::VfInfoList(table()));
        let bytes = crate::netlink::encode(RouteNetlinkMessage::NewLink(m), 0, 1);
        let back = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) = back.payload else {
            panic!("{back:?}")
        };
        let list = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::VfInfoList(l) => Some(l.clone()),
                _ => None,
            })
            .unwrap();
        let st = vf_state_from(&list, 1).unwrap();
        assert_eq!(st.mac, Mac([0x0c, 0x42, 0xa1, 0, 0, 1]));
        assert_eq!((st.vlan, st.qos, st.proto), (20, 2, VlanProto::Dot1Ad));
        assert_eq!((st.min_tx_rate, st.max_tx_rate), (0, 500));
        assert_eq!(
            (st.spoofchk, st.trust, st.link_state),
            (false, true, LinkState::Disable)
        );
        assert_eq!(vf_state_from(&list, 0).unwrap().vlan, 10);
        assert!(vf_state_from(&list, 7).is_none());
    }

    #[test]
    fn settings_restore_and_describe() {
        let orig = VfState::default();
        let s = VfSetting::Vlan {
            vlan: 100,
            qos: 1,
            proto: VlanProto::Dot1Ad,
        };
        assert!(!s.holds_in(&orig));
        let mut st = orig.clone();
        s.apply_to(&mut st);
        assert!(s.holds_in(&st));
        assert_eq!(
            s.current(&orig).describe(),
            "vlan=0 vlanQoS=0 vlanProto=802.1q"
        );
        assert_eq!(s.describe(), "vlan=100 vlanQoS=1 vlanProto=802.1ad");
        s.current(&orig).apply_to(&mut st);
        assert_eq!(st, orig);
    }
}
