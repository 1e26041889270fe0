//! The CNI configs inside NetworkAttachmentDefinitions, and the pod annotation that
//! selects them.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::ManifestError;
use crate::strict::from_json_strict;

/// CNI spec versions the `sriov` plugin speaks (issue 6).
pub const SRIOV_CNI_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A NAD's CNI config, by `type`.
#[derive(Debug, Clone)]
pub enum NetConf {
    /// `type: sriov`: our plugin.
    Sriov(SriovNetConf),
    /// `type: macvlan`: the reference plugin.
    Macvlan(MacvlanNetConf),
}

impl NetConf {
    /// Parses and validates a NAD's `spec.config`.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ManifestError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ManifestError::Syntax {
                origin: origin.to_owned(),
                format: "JSON",
                message: e.to_string(),
            })?;
        let invalid = |field: &str, message: String| ManifestError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        let conf = match value.get("type").and_then(|t| t.as_str()) {
            Some("sriov") => NetConf::Sriov(from_json_strict(origin, text)?),
            Some("macvlan") => NetConf::Macvlan(from_json_strict(origin, text)?),
            Some(other) => {
                return Err(invalid(
                    "type",
                    format!("{other:?}: no typed config for this plugin"),
                ));
            }
            None => return Err(invalid("type", "missing".into())),
        };
        conf.validate(origin)?;
        Ok(conf)
    }

    /// The plugin binary the runtime execs (`type`).
    pub fn plugin_type(&self) -> &str {
        match self {
            NetConf::Sriov(c) => &c.plugin_type,
            NetConf::Macvlan(c) => &c.plugin_type,
        }
    }

    /// The IPAM section.
    pub fn ipam(&self) -> Option<&Ipam> {
        match self {
            NetConf::Sriov(c) => c.ipam.as_ref(),
            NetConf::Macvlan(c) => c.ipam.as_ref(),
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let invalid = |field: &str, message: String| ManifestError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        if let NetConf::Sriov(c) = self {
            if !SRIOV_CNI_VERSIONS.contains(&c.cni_version.as_str()) {
                return Err(invalid(
                    "cniVersion",
                    format!("{:?} is not one of {SRIOV_CNI_VERSIONS:?}", c.cni_version),
                ));
            }
            if c.vlan.is_some_and(|v| v > 4094) {
                return Err(invalid("vlan", format!("{:?} is not in 0-4094", c.vlan)));
            }
            if c.vlan_qos.is_some_and(|q| q > 7) {
                return Err(invalid(
                    "vlanQoS",
                    format!("{:?} is not in 0-7", c.vlan_qos),
                ));
            }
            if (c.vlan_qos.is_some() || c.vlan_proto.is_some()) && c.vlan.unwrap_or(0) == 0 {
                return Err(invalid(
                    "vlanQoS",
                    "vlanQoS/vlanProto need a non-zero vlan".into(),
                ));
            }
            if let (Some(min), Some(max)) = (c.min_tx_rate, c.max_tx_rate)
                && max != 0
                && min > max
            {
                return Err(invalid(
                    "min_tx_rate",
                    format!("{min} is above max_tx_rate {max}"),
                ));
            }
            if c.device_id.is_some() || c.pci_bus_id.is_some() {
                // The device comes from the pool at pod creation; a fixed one in a NAD
                // would hand the same VF to every pod.
                return Err(invalid(
                    "deviceID",
                    "must not be set in a NAD: multus injects it".into(),
                ));
            }
        }
        if let Some(Ipam::HostLocal(h)) = self.ipam() {
            h.validate()
                .map_err(|(field, message)| invalid(&format!("ipam.{field}"), message))?;
        }
        Ok(())
    }
}

/// `on` / `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    /// on
    On,
    /// off
    Off,
}

/// VF `link_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Follow the PF.
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

/// VLAN protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VlanProto {
    /// 802.1Q.
    #[serde(rename = "802.1q", alias = "802.1Q")]
    Dot1q,
    /// 802.1ad (QinQ).
    #[serde(rename = "802.1ad", alias = "802.1AD")]
    Dot1ad,
}

/// The `sriov` plugin's network config (upstream sriov-cni's fields, issue 6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SriovNetConf {
    /// CNI spec version.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// `sriov`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// VF PCI address (injected by multus; never in a NAD).
    #[serde(rename = "deviceID")]
    pub device_id: Option<String>,
    /// Alias of deviceID.
    #[serde(rename = "pciBusID")]
    pub pci_bus_id: Option<String>,
    /// VLAN id, 0-4094.
    pub vlan: Option<u32>,
    /// VLAN QoS, 0-7.
    #[serde(rename = "vlanQoS")]
    pub vlan_qos: Option<u32>,
    /// VLAN protocol.
    #[serde(rename = "vlanProto")]
    pub vlan_proto: Option<VlanProto>,
    /// VF MAC.
    pub mac: Option<String>,
    /// Spoof check.
    pub spoofchk: Option<OnOff>,
    /// Trusted VF.
    pub trust: Option<OnOff>,
    /// VF link state.
    pub link_state: Option<LinkState>,
    /// Minimum TX rate, Mbps.
    pub min_tx_rate: Option<u32>,
    /// Maximum TX rate, Mbps.
    pub max_tx_rate: Option<u32>,
    /// MTU of the pod interface.
    pub mtu: Option<u32>,
    /// Log level.
    #[serde(rename = "logLevel")]
    pub log_level: Option<String>,
    /// Log file.
    #[serde(rename = "logFile")]
    pub log_file: Option<String>,
    /// IPAM.
    pub ipam: Option<Ipam>,
}

/// The macvlan plugin's network config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacvlanNetConf {
    /// CNI spec version.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Network name (multus fills it in from the NAD when absent).
    pub name: Option<String>,
    /// `macvlan`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The host interface.
    pub master: String,
    /// `bridge`, `private`, `vepa`, `passthru`.
    pub mode: Option<String>,
    /// MTU.
    pub mtu: Option<u32>,
    /// IPAM.
    pub ipam: Option<Ipam>,
}

/// IPAM section, by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type")]
pub enum Ipam {
    /// Per-node ranges from files under /var/lib/cni/networks.
    #[serde(rename = "host-local")]
    HostLocal(HostLocalIpam),
    /// DHCP through the dhcp daemon.
    #[serde(rename = "dhcp")]
    Dhcp(DhcpIpam),
}

/// The dhcp IPAM plugin takes no options here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpIpam {}

/// host-local IPAM (one IPv4 range).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HostLocalIpam {
    /// `a.b.c.d/n`.
    pub subnet: String,
    /// First address handed out.
    pub range_start: Option<Ipv4Addr>,
    /// Last address handed out.
    pub range_end: Option<Ipv4Addr>,
    /// Gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Routes to add in the pod.
    pub routes: Option<Vec<Route>>,
    /// Lease directory (default /var/lib/cni/networks).
    pub data_dir: Option<String>,
}

/// A route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
    /// Next hop.
    pub gw: Option<Ipv4Addr>,
}

/// Parses `a.b.c.d/n` into the network address and prefix length.
pub fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((addr, len))
}

fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

impl HostLocalIpam {
    /// The subnet, range and gateway are consistent: range and gateway inside the
    /// subnet, start <= end, gateway outside the range. Returns the bad field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let (net, len) = parse_cidr(&self.subnet).ok_or_else(|| {
            (
                "subnet".to_owned(),
                format!("{:?} is not a.b.c.d/n", self.subnet),
            )
        })?;
        for (field, ip) in [
            ("rangeStart", self.range_start),
            ("rangeEnd", self.range_end),
            ("gateway", self.gateway),
        ] {
            if let Some(ip) = ip
                && !in_subnet(ip, net, len)
            {
                return Err((field.to_owned(), format!("{ip} is outside {}", self.subnet)));
            }
        }
        if let (Some(s), Some(e)) = (self.range_start, self.range_end)
            && s > e
        {
            return Err(("rangeEnd".into(), format!("{e} is before rangeStart {s}")));
        }
        if let (Some(g), Some(s), Some(e)) = (self.gateway, self.range_start, self.range_end)
            && (s..=e).contains(&g)
        {
            return Err(("gateway".into(), format!("{g} is inside the range {s}-{e}")));
        }
        for (i, r) in self.routes.iter().flatten().enumerate() {
            if parse_cidr(&r.dst).is_none() {
                return Err((
                    format!("routes[{i}].dst"),
                    format!("{:?} is not a.b.c.d/n", r.dst),
                ));
            }
        }
        Ok(())
    }
}

/// One element of the `k8s.v1.cni.cncf.io/networks` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSelection {
    /// NAD name.
    pub name: String,
    /// NAD namespace (default: the pod's).
    pub namespace: Option<String>,
    /// Interface name in the pod (default net1, net2, ...).
    pub interface: Option<String>,
    /// Requested MAC.
    pub mac: Option<String>,
    /// Requested IPs.
    pub ips: Option<Vec<String>>,
}

/// Parses the networks annotation: a JSON list of selections, or multus' short form
/// `[ns/]name[@ifname]` separated by commas.
pub fn parse_networks_annotation(
    origin: &str,
    text: &str,
) -> Result<Vec<NetworkSelection>, ManifestError> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        return from_json_strict(origin, trimmed);
    }
    trimmed
        .split(',')
        .map(str::trim)
        .map(|item| {
            let (ns_name, interface) = match item.split_once('@') {
                Some((n, i)) => (n, Some(i.to_owned())),
                None => (item, None),
            };
            let (namespace, name) = match ns_name.split_once('/') {
                Some((ns, n)) => (Some(ns.to_owned()), n),
                None => (None, ns_name),
            };
            if name.is_empty() || interface.as_deref() == Some("") {
                return Err(ManifestError::Invalid {
                    origin: origin.to_owned(),
                    field: "k8s.v1.cni.cncf.io/networks".into(),
                    message: format!("{item:?} is not [namespace/]name[@interface]"),
                });
            }
            Ok(NetworkSelection {
                name: name.to_owned(),
                namespace,
                interface,
                mac: None,
                ips: None,
            })
        })
        .collect()
}
