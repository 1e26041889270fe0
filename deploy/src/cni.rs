//! The CNI configs inside NetworkAttachmentDefinitions, and the pod annotation that
//! selects them.
//!
//! `type: sriov` configs are read by the plugin's own parser
//! ([`sriov_cni::config::NetConf::parse`]), as ADD sees them once multus has injected the
//! VF. Modelled here is only what that parser does not check: keys it does not know
//! (it skips them, so a typo would deploy and do nothing), a device fixed in the NAD, and
//! the IPAM section, which it hands to the IPAM plugin unread. The macvlan plugin,
//! host-local IPAM and multus' networks annotation belong to other projects; nothing
//! else here parses them, so they have minimal local models, as strict as the rest.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::strict::{deserialize_strict, from_json_strict};
use crate::{CNI_BINARY, CNI_BINARY_IB, ManifestError};

/// The top-level keys the `sriov` plugin reads that a NAD may carry (the plugin's parser
/// also reads `runtimeConfig`, `prevResult` and `cni.dev/valid-attachments`, which the
/// runtime adds), besides ib-sriov-cni's keys (`sriov_cni::ib::conf::IB_NAD_KEYS`),
/// read on an InfiniBand VF. Any other key is a typo the plugin would skip.
pub const SRIOV_NAD_KEYS: [&str; 18] = [
    "cniVersion",
    "name",
    "type",
    "deviceID",
    "pciBusID",
    "vlan",
    "vlanQoS",
    "vlanProto",
    "mac",
    "spoofchk",
    "trust",
    "link_state",
    "min_tx_rate",
    "max_tx_rate",
    "mtu",
    "logLevel",
    "logFile",
    "ipam",
];

/// Keys naming the VF, which multus injects from the pod's allocation: a NAD that fixed
/// one would hand the same VF to every pod.
const DEVICE_KEYS: [&str; 2] = ["deviceID", "pciBusID"];

/// Stands in for the VF multus injects, so the plugin's parser sees what ADD sees.
const INJECTED_DEVICE: &str = "0000:00:00.1";

/// A NAD's CNI config, by `type`.
#[derive(Debug, Clone)]
pub enum NetConf {
    /// `type: sriov`: our plugin.
    Sriov(Box<SriovNetConf>),
    /// `type: macvlan`: the reference plugin.
    Macvlan(MacvlanNetConf),
}

/// A `type: sriov` NAD config.
#[derive(Debug, Clone)]
pub struct SriovNetConf {
    /// The plugin's own parse, of the config plus an injected VF; `device_id` is reset to
    /// `None` and `raw` to the NAD's config, so this is what the NAD itself says.
    pub conf: sriov_cni::config::NetConf,
    /// The IPAM section (the plugin only reads its `type`).
    pub ipam: Option<Ipam>,
}

impl NetConf {
    /// Parses and validates a NAD's `spec.config`.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ManifestError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| syntax(origin, e.to_string()))?;
        match value.get("type").and_then(|t| t.as_str()) {
            Some(CNI_BINARY | CNI_BINARY_IB) => Ok(NetConf::Sriov(Box::new(SriovNetConf::parse(
                origin, value,
            )?))),
            Some("macvlan") => {
                let conf: MacvlanNetConf = from_json_strict(origin, text)?;
                if let Some(ipam) = &conf.ipam {
                    ipam.validate(origin)?;
                }
                Ok(NetConf::Macvlan(conf))
            }
            Some(other) => Err(invalid(
                origin,
                "type",
                format!("{other:?}: no typed config for this plugin"),
            )),
            None => Err(invalid(origin, "type", "missing".into())),
        }
    }

    /// The IPAM section.
    pub fn ipam(&self) -> Option<&Ipam> {
        match self {
            NetConf::Sriov(c) => c.ipam.as_ref(),
            NetConf::Macvlan(c) => c.ipam.as_ref(),
        }
    }
}

impl SriovNetConf {
    fn parse(origin: &str, value: serde_json::Value) -> Result<Self, ManifestError> {
        let Some(top) = value.as_object() else {
            return Err(invalid(origin, "", "not a JSON object".into()));
        };
        let unknown: Vec<String> = top
            .keys()
            .filter(|k| {
                !SRIOV_NAD_KEYS.contains(&k.as_str())
                    && !sriov_cni::ib::conf::IB_NAD_KEYS.contains(&k.as_str())
            })
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(ManifestError::UnknownFields {
                origin: origin.to_owned(),
                fields: unknown,
            });
        }
        if let Some(key) = DEVICE_KEYS.iter().find(|k| top.contains_key(**k)) {
            return Err(invalid(
                origin,
                key,
                "must not be set in a NAD: multus injects the pod's VF".into(),
            ));
        }
        let mut add = top.clone();
        add.insert("deviceID".into(), INJECTED_DEVICE.into());
        let raw = serde_json::to_vec(&add).map_err(|e| syntax(origin, e.to_string()))?;
        let mut conf =
            sriov_cni::config::NetConf::parse(&raw, true).map_err(|e| plugin_error(origin, e))?;
        let ipam = match top.get("ipam") {
            Some(v) => {
                let ipam: Ipam =
                    deserialize_strict(origin, v.clone()).map_err(|e| under_ipam(origin, e))?;
                ipam.validate(origin)?;
                Some(ipam)
            }
            None => None,
        };
        conf.device_id = None;
        conf.raw = value;
        Ok(SriovNetConf { conf, ipam })
    }
}

/// The plugin's error, as one of ours naming the same field.
fn plugin_error(origin: &str, e: sriov_cni::Error) -> ManifestError {
    match e {
        sriov_cni::Error::Config(c) => {
            invalid(origin, &c.field, format!("{}: {}", c.value, c.reason))
        }
        sriov_cni::Error::IncompatibleVersion { requested, reason } => {
            invalid(origin, "cniVersion", format!("{requested:?}: {reason}"))
        }
        sriov_cni::Error::Decode(message) => syntax(origin, message),
        other => invalid(origin, "", other.to_string()),
    }
}

/// Field paths of an error in the IPAM section, from the config's top.
fn under_ipam(origin: &str, e: ManifestError) -> ManifestError {
    let prefix = |f: String| format!("ipam.{f}").trim_end_matches('.').to_owned();
    match e {
        ManifestError::Invalid { field, message, .. } => invalid(origin, &prefix(field), message),
        ManifestError::UnknownFields { fields, .. } => ManifestError::UnknownFields {
            origin: origin.to_owned(),
            fields: fields.into_iter().map(prefix).collect(),
        },
        other => other,
    }
}

fn invalid(origin: &str, field: &str, message: String) -> ManifestError {
    ManifestError::Invalid {
        origin: origin.to_owned(),
        field: field.to_owned(),
        message,
    }
}

fn syntax(origin: &str, message: String) -> ManifestError {
    ManifestError::Syntax {
        origin: origin.to_owned(),
        format: "JSON",
        message,
    }
}

/// The macvlan plugin's network config (the keys our NADs use).
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
}

impl Ipam {
    fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        match self {
            Ipam::HostLocal(h) => h
                .validate()
                .map_err(|(field, message)| invalid(origin, &format!("ipam.{field}"), message)),
        }
    }
}

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
}

/// A route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination CIDR.
    pub dst: String,
}

/// `a.b.c.d/n` as the network address and prefix length.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
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
    fn validate(&self) -> Result<(), (String, String)> {
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

/// One element of the `k8s.v1.cni.cncf.io/networks` annotation (the keys our pods and
/// the e2e multus stand-in use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSelection {
    /// NAD name.
    pub name: String,
    /// NAD namespace (default: the pod's).
    pub namespace: Option<String>,
    /// Interface name in the pod (default net1, net2, ...).
    pub interface: Option<String>,
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
                return Err(invalid(
                    origin,
                    crate::NETWORKS_ANNOTATION,
                    format!("{item:?} is not [namespace/]name[@interface]"),
                ));
            }
            Ok(NetworkSelection {
                name: name.to_owned(),
                namespace,
                interface,
            })
        })
        .collect()
}
