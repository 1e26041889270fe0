//! The device plugin's config formats, as far as the manifests need them: which
//! resources a config file defines.
//!
//! The daemon (issue 4) detects the format by the top-level key: `resourceList`
//! (sriov-network-device-plugin), `configList` (k8s-rdma-shared-dev-plugin) or `mode`
//! (k8s-rdma-sriov-dev-plugin). The daemon tolerates unknown keys in old files with a
//! warning; our samples must have none, so these types deny them.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::ManifestError;
use crate::strict::from_json_strict;

/// Default prefix of sriov-network-device-plugin pools.
pub const SRIOVDP_DEFAULT_PREFIX: &str = "intel.com";
/// Default prefix of k8s-rdma-shared-dev-plugin resources.
pub const RDMA_SHARED_DEFAULT_PREFIX: &str = "rdma";

/// A full extended-resource name, `prefix/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceName {
    /// Domain-like prefix (`intel.com`, `rdma`).
    pub prefix: String,
    /// Pool name.
    pub name: String,
}

impl ResourceName {
    fn new(prefix: &str, name: &str) -> Self {
        ResourceName {
            prefix: prefix.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.prefix, self.name)
    }
}

/// Which plugin's format a config file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigFormat {
    /// sriov-network-device-plugin `{"resourceList": [...]}`.
    SriovDp,
    /// k8s-rdma-shared-dev-plugin `{"configList": [...]}`.
    RdmaShared,
    /// k8s-rdma-sriov-dev-plugin `{"mode": ...}`.
    RdmaSriov,
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub enum DevicePluginConfig {
    /// sriov-network-device-plugin format.
    SriovDp(SriovDpConfig),
    /// k8s-rdma-shared-dev-plugin format.
    RdmaShared(RdmaSharedConfig),
    /// k8s-rdma-sriov-dev-plugin format.
    RdmaSriov(RdmaSriovConfig),
}

/// sriov-network-device-plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SriovDpConfig {
    /// The VF pools.
    pub resource_list: Vec<SriovDpPool>,
}

/// One VF pool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SriovDpPool {
    /// Pool name, `^[a-zA-Z0-9_-]+$`.
    pub resource_name: String,
    /// Prefix, default [`SRIOVDP_DEFAULT_PREFIX`].
    pub resource_prefix: Option<String>,
    /// `netDevice` (default) or `accelerator`.
    pub device_type: Option<DeviceType>,
    /// Do not report NUMA topology for this pool.
    pub exclude_topology: Option<bool>,
    /// One selector object, or a list of them (the first that matches wins).
    pub selectors: Option<OneOrMany<SriovDpSelectors>>,
}

/// `deviceType` of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DeviceType {
    /// VF with a kernel netdev.
    #[serde(rename = "netDevice")]
    NetDevice,
    /// VF handed out as a PCI device.
    #[serde(rename = "accelerator")]
    Accelerator,
}

/// A single object or a list of them. (Not `#[serde(untagged)]`: that would swallow
/// the inner error, such as the name of an unknown selector.)
#[derive(Debug, Clone)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// A list.
    Many(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object or a list of objects")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(OneOrMany::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
        }
        de.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl<T> OneOrMany<T> {
    /// All elements.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// sriov-network-device-plugin selectors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SriovDpSelectors {
    /// PCI vendor ids (`15b3`).
    pub vendors: Option<Vec<String>>,
    /// PCI device ids.
    pub devices: Option<Vec<String>>,
    /// Kernel drivers.
    pub drivers: Option<Vec<String>>,
    /// PCI addresses.
    pub pci_addresses: Option<Vec<String>>,
    /// PF netdevs, optionally `name#0,2-7` VF index ranges.
    pub pf_names: Option<Vec<String>>,
    /// PF PCI addresses, with the same ranges.
    pub root_devices: Option<Vec<String>>,
    /// `ether`, `infiniband`.
    pub link_types: Option<Vec<String>>,
    /// Only VFs with an RDMA device.
    pub is_rdma: Option<bool>,
    /// Also hand out /dev/vhost-net.
    pub need_vhost_net: Option<bool>,
}

/// k8s-rdma-shared-dev-plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdmaSharedConfig {
    /// Kubelet's root dir (read for compatibility).
    pub kubelet_root_dir: Option<String>,
    /// Seconds between rescans (read for compatibility).
    pub periodic_update_interval: Option<u64>,
    /// The shared resources.
    pub config_list: Vec<RdmaSharedResource>,
}

/// One shared RDMA resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdmaSharedResource {
    /// Resource name.
    pub resource_name: String,
    /// Prefix, default [`RDMA_SHARED_DEFAULT_PREFIX`].
    pub resource_prefix: Option<String>,
    /// How many pods may hold it at once.
    pub rdma_hca_max: Option<u32>,
    /// Old form: PF netdevs.
    pub devices: Option<Vec<String>>,
    /// Selectors.
    pub selectors: Option<RdmaSharedSelectors>,
}

/// k8s-rdma-shared-dev-plugin selectors.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdmaSharedSelectors {
    /// PCI vendor ids.
    pub vendors: Option<Vec<String>>,
    /// PCI device ids.
    #[serde(rename = "deviceIDs")]
    pub device_ids: Option<Vec<String>>,
    /// Kernel drivers.
    pub drivers: Option<Vec<String>>,
    /// PF netdevs.
    #[serde(rename = "ifNames")]
    pub if_names: Option<Vec<String>>,
    /// `ether`, `infiniband`.
    #[serde(rename = "linkTypes")]
    pub link_types: Option<Vec<String>>,
}

/// k8s-rdma-sriov-dev-plugin's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RdmaSriovConfig {
    /// `hca` or `sriov`.
    pub mode: RdmaSriovMode,
    /// PF netdevs whose VFs form `rdma/vhca` (sriov mode).
    pub pf_netdevices: Option<Vec<String>>,
}

/// k8s-rdma-sriov-dev-plugin's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RdmaSriovMode {
    /// `rdma/hca`: the PFs' RDMA devices, shared.
    Hca,
    /// `rdma/vhca`: one device per VF.
    Sriov,
}

impl DevicePluginConfig {
    /// Parses a config file's text, detecting the format by its top-level key.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ManifestError> {
        let invalid = |field: &str, message: String| ManifestError::Invalid {
            origin: origin.to_owned(),
            field: field.to_owned(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ManifestError::Syntax {
                origin: origin.to_owned(),
                format: "JSON",
                message: e.to_string(),
            })?;
        let Some(top) = value.as_object() else {
            return Err(invalid("", "the config must be a JSON object".into()));
        };
        let keys: Vec<&str> = ["resourceList", "configList", "mode"]
            .into_iter()
            .filter(|k| top.contains_key(*k))
            .collect();
        let config = match keys.as_slice() {
            ["resourceList"] => DevicePluginConfig::SriovDp(from_json_strict(origin, text)?),
            ["configList"] => DevicePluginConfig::RdmaShared(from_json_strict(origin, text)?),
            ["mode"] => DevicePluginConfig::RdmaSriov(from_json_strict(origin, text)?),
            [] => {
                return Err(invalid(
                    "",
                    "none of resourceList, configList, mode: not a device plugin config".into(),
                ));
            }
            _ => {
                return Err(invalid(
                    "",
                    format!(
                        "{} in one file: formats cannot be mixed",
                        keys.join(" and ")
                    ),
                ));
            }
        };
        config.validate(origin)?;
        Ok(config)
    }

    /// The detected format.
    pub fn format(&self) -> ConfigFormat {
        match self {
            DevicePluginConfig::SriovDp(_) => ConfigFormat::SriovDp,
            DevicePluginConfig::RdmaShared(_) => ConfigFormat::RdmaShared,
            DevicePluginConfig::RdmaSriov(_) => ConfigFormat::RdmaSriov,
        }
    }

    /// The resources the file itself defines, in file order, with the format's default
    /// prefix applied.
    pub fn resources(&self) -> Vec<ResourceName> {
        match self {
            DevicePluginConfig::SriovDp(c) => c
                .resource_list
                .iter()
                .map(|p| {
                    ResourceName::new(
                        p.resource_prefix
                            .as_deref()
                            .unwrap_or(SRIOVDP_DEFAULT_PREFIX),
                        &p.resource_name,
                    )
                })
                .collect(),
            DevicePluginConfig::RdmaShared(c) => c
                .config_list
                .iter()
                .map(|r| {
                    ResourceName::new(
                        r.resource_prefix
                            .as_deref()
                            .unwrap_or(RDMA_SHARED_DEFAULT_PREFIX),
                        &r.resource_name,
                    )
                })
                .collect(),
            DevicePluginConfig::RdmaSriov(c) => vec![match c.mode {
                RdmaSriovMode::Hca => ResourceName::new("rdma", "hca"),
                RdmaSriovMode::Sriov => ResourceName::new("rdma", "vhca"),
            }],
        }
    }

    fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let invalid = |field: String, message: String| ManifestError::Invalid {
            origin: origin.to_owned(),
            field,
            message,
        };
        let list = match self {
            DevicePluginConfig::SriovDp(_) => "resourceList",
            DevicePluginConfig::RdmaShared(_) => "configList",
            DevicePluginConfig::RdmaSriov(c) => {
                let pfs = c.pf_netdevices.as_deref().unwrap_or_default();
                return match (c.mode, pfs.is_empty()) {
                    (RdmaSriovMode::Sriov, true) => Err(invalid(
                        "pfNetdevices".into(),
                        "sriov mode needs at least one PF netdev".into(),
                    )),
                    (RdmaSriovMode::Hca, false) => Err(invalid(
                        "pfNetdevices".into(),
                        "only read in sriov mode".into(),
                    )),
                    _ => Ok(()),
                };
            }
        };
        let mut seen = BTreeSet::new();
        for (i, r) in self.resources().iter().enumerate() {
            if !valid_name(&r.name) {
                return Err(invalid(
                    format!("{list}[{i}].resourceName"),
                    format!("{:?} must match ^[a-zA-Z0-9_-]+$", r.name),
                ));
            }
            if !valid_prefix(&r.prefix) {
                return Err(invalid(
                    format!("{list}[{i}].resourcePrefix"),
                    format!("{:?} is not a DNS subdomain", r.prefix),
                ));
            }
            if !seen.insert(r.clone()) {
                return Err(invalid(
                    format!("{list}[{i}].resourceName"),
                    format!("duplicate resource {r}"),
                ));
            }
        }
        if let DevicePluginConfig::SriovDp(c) = self {
            for (i, pool) in c.resource_list.iter().enumerate() {
                let sels = pool
                    .selectors
                    .as_ref()
                    .map(OneOrMany::as_slice)
                    .unwrap_or_default();
                for (j, s) in sels.iter().enumerate() {
                    let at = |f: &str| format!("resourceList[{i}].selectors[{j}].{f}");
                    for (f, ids) in [("vendors", &s.vendors), ("devices", &s.devices)] {
                        if let Some(bad) = ids.iter().flatten().find(|id| !is_pci_id(id)) {
                            return Err(invalid(
                                at(f),
                                format!("{bad:?} is not a 4-digit hex PCI id"),
                            ));
                        }
                    }
                    if let Some(bad) = s.link_types.iter().flatten().find(|t| !is_link_type(t)) {
                        return Err(invalid(
                            at("linkTypes"),
                            format!("{bad:?}: expected ether or infiniband"),
                        ));
                    }
                }
            }
        }
        if let DevicePluginConfig::RdmaShared(c) = self {
            for (i, r) in c.config_list.iter().enumerate() {
                let s = r.selectors.clone().unwrap_or_default();
                let at = |f: &str| format!("configList[{i}].selectors.{f}");
                for (f, ids) in [("vendors", &s.vendors), ("deviceIDs", &s.device_ids)] {
                    if let Some(bad) = ids.iter().flatten().find(|id| !is_pci_id(id)) {
                        return Err(invalid(
                            at(f),
                            format!("{bad:?} is not a 4-digit hex PCI id"),
                        ));
                    }
                }
                if let Some(bad) = s.link_types.iter().flatten().find(|t| !is_link_type(t)) {
                    return Err(invalid(
                        at("linkTypes"),
                        format!("{bad:?}: expected ether or infiniband"),
                    ));
                }
                if r.rdma_hca_max == Some(0) {
                    return Err(invalid(
                        format!("configList[{i}].rdmaHcaMax"),
                        "must be at least 1".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 253
        && prefix.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn is_pci_id(id: &str) -> bool {
    id.len() == 4 && id.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_link_type(t: &str) -> bool {
    matches!(t, "ether" | "infiniband")
}
