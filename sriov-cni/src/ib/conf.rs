//! The configuration keys of k8snetworkplumbingwg/ib-sriov-cni, with its meaning, read
//! from the netconf as received (so a NAD written for `"type": "ib-sriov"` works
//! unchanged), and the Ethernet-only keys that an InfiniBand VF refuses.
//!
//! ib-sriov-cni's keys and what it does with them:
//! - `runtimeConfig.infinibandGUID`, else `args.cni.guid`: the GUID set as both the
//!   VF's node and port GUID (runtimeConfig wins when both are given).
//! - `link_state`: `auto` / `enable` / `disable`, set on the PF for the VF; DEL puts it
//!   back (ib-sriov-cni resets it to `auto`; we restore the recorded value).
//! - `rdmaIsolation`: move the VF's RDMA device into the pod netns (needs the host's RDMA
//!   subsystem in exclusive mode, refused otherwise). Default false in its code.
//! - `ibKubernetesEnabled`: the GUID must come from ib-kubernetes: refused without
//!   `args.cni["mellanox.infiniband.app"] == "configured"`, and without a GUID.
//! - `pkey`: read by ib-kubernetes (it programs the partition through the subnet
//!   manager); the CNI does not apply it. Validated here, carried, not acted on.

use super::guid::Guid;
use crate::config::{ConfigError, LinkState};
use serde_json::{Map, Value};

/// The annotation ib-kubernetes sets in `args.cni` once it has assigned the GUID.
pub const IB_K8S_ANNOTATION: &str = "mellanox.infiniband.app";
/// Its value once configured.
pub const IB_K8S_CONFIGURED: &str = "configured";

/// ib-sriov-cni's top-level keys a NAD may carry (the GUID arrives at run time in
/// `runtimeConfig` or `args`).
pub const IB_NAD_KEYS: [&str; 3] = ["rdmaIsolation", "ibKubernetesEnabled", "pkey"];

/// Top-level keys that configure Ethernet features an IB VF does not have, refused on
/// an IB VF before anything is touched (`runtimeConfig.mac` too).
pub const ETHERNET_ONLY_KEYS: [&str; 8] = [
    "vlan",
    "vlanQoS",
    "vlanProto",
    "mac",
    "spoofchk",
    "trust",
    "min_tx_rate",
    "max_tx_rate",
];

/// ib-sriov-cni's settings for one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IbConf {
    /// The GUID to give the VF (node and port), and the field it came from.
    pub guid: Option<(Guid, &'static str)>,
    /// `link_state`.
    pub link_state: Option<LinkState>,
    /// `rdmaIsolation`.
    pub rdma_isolation: bool,
    /// `ibKubernetesEnabled`.
    pub ib_kubernetes: bool,
    /// `pkey` (0x0000-0xffff), for ib-kubernetes.
    pub pkey: Option<u16>,
}

fn cerr(field: &str, value: Option<&Value>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        value: value.map_or_else(|| "<missing>".to_string(), |v| v.to_string()),
        reason: reason.into(),
    }
}

fn obj<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(v) => Err(cerr(path, Some(v), "must be an object")),
    }
}

fn string<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(cerr(path, Some(v), "must be a string")),
    }
}

fn boolean(o: &Map<String, Value>, key: &str) -> Result<bool, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(cerr(key, Some(v), "must be true or false")),
    }
}

impl IbConf {
    /// Read ib-sriov-cni's keys from the netconf `v` (a JSON object).
    pub fn from_netconf(v: &Value) -> Result<IbConf, ConfigError> {
        let empty = Map::new();
        let o = v.as_object().unwrap_or(&empty);
        let rc = obj(o, "runtimeConfig", "runtimeConfig")?.unwrap_or(&empty);
        let args_cni = match obj(o, "args", "args")? {
            Some(a) => obj(a, "cni", "args.cni")?.unwrap_or(&empty),
            None => &empty,
        };
        let mut guid = None;
        for (path, map, key) in [
            ("runtimeConfig.infinibandGUID", rc, "infinibandGUID"),
            ("args.cni.guid", args_cni, "guid"),
        ] {
            if let Some(s) = string(map, key, path)?.filter(|s| !s.is_empty()) {
                let g = Guid::parse(path, s).map_err(|e| cerr(path, map.get(key), e.reason))?;
                guid = Some((g, path));
                break;
            }
        }
        let link_state = match string(o, "link_state", "link_state")? {
            None | Some("") => None,
            Some("auto") => Some(LinkState::Auto),
            Some("enable") => Some(LinkState::Enable),
            Some("disable") => Some(LinkState::Disable),
            Some(_) => {
                return Err(cerr(
                    "link_state",
                    o.get("link_state"),
                    "must be one of auto, enable, disable",
                ));
            }
        };
        let rdma_isolation = boolean(o, "rdmaIsolation")?;
        let ib_kubernetes = boolean(o, "ibKubernetesEnabled")?;
        let pkey = match string(o, "pkey", "pkey")? {
            None | Some("") => None,
            Some(s) => {
                let hex = s
                    .strip_prefix("0x")
                    .or_else(|| s.strip_prefix("0X"))
                    .unwrap_or(s);
                Some(
                    u16::from_str_radix(hex, 16)
                        .ok()
                        .filter(|_| !hex.is_empty() && hex.len() <= 4)
                        .ok_or_else(|| {
                            cerr("pkey", o.get("pkey"), "must be a hex number 0x0000-0xffff")
                        })?,
                )
            }
        };
        if ib_kubernetes {
            if string(args_cni, IB_K8S_ANNOTATION, "args.cni")? != Some(IB_K8S_CONFIGURED) {
                return Err(cerr(
                    &format!("args.cni.{IB_K8S_ANNOTATION}"),
                    args_cni.get(IB_K8S_ANNOTATION),
                    format!(
                        "InfiniBand status \"{IB_K8S_ANNOTATION}\" is not \"{IB_K8S_CONFIGURED}\" \
                         (ibKubernetesEnabled: please check mellanox ib-kubernetes)"
                    ),
                ));
            }
            if guid.is_none() {
                return Err(cerr(
                    "runtimeConfig.infinibandGUID",
                    None,
                    "GUID must be provided by ib-kubernetes (ibKubernetesEnabled is set, \
                     neither runtimeConfig.infinibandGUID nor args.cni.guid is)",
                ));
            }
        }
        Ok(IbConf {
            guid,
            link_state,
            rdma_isolation,
            ib_kubernetes,
            pkey,
        })
    }
}

/// The Ethernet-only keys present (non-null) in the netconf, by JSON path.
pub fn ethernet_keys_in(v: &Value) -> Vec<String> {
    let Some(o) = v.as_object() else {
        return Vec::new();
    };
    let mut found: Vec<String> = ETHERNET_ONLY_KEYS
        .iter()
        .filter(|k| o.get(**k).is_some_and(|x| !x.is_null()))
        .map(|k| k.to_string())
        .collect();
    if o.get("runtimeConfig")
        .and_then(|r| r.get("mac"))
        .is_some_and(|x| !x.is_null())
    {
        found.push("runtimeConfig.mac".into());
    }
    found
}

/// Refuse a netconf carrying Ethernet-only keys for the IB VF `vf` on PF `pf`, naming
/// every such key at once.
pub fn refuse_ethernet_keys(v: &Value, vf: &str, pf: &str) -> Result<(), ConfigError> {
    let found = ethernet_keys_in(v);
    let Some(first) = found.first() else {
        return Ok(());
    };
    let o = v.as_object();
    let value = if first == "runtimeConfig.mac" {
        o.and_then(|o| o.get("runtimeConfig"))
            .and_then(|r| r.get("mac"))
    } else {
        o.and_then(|o| o.get(first.as_str()))
    };
    Err(cerr(
        &found.join(", "),
        value,
        format!(
            "Ethernet-only setting on InfiniBand VF {vf} (PF {pf} has link type infiniband): \
             remove {}",
            found.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ib_sriov_cni_keys_with_their_meaning() {
        let c = IbConf::from_netconf(&json!({
            "type": "ib-sriov", "link_state": "enable", "rdmaIsolation": true, "pkey": "0x8001",
            "runtimeConfig": {"infinibandGUID": "02:00:00:00:00:00:00:01"},
            "args": {"cni": {"guid": "02:00:00:00:00:00:00:02"}}
        }))
        .unwrap();
        assert_eq!(c.guid.unwrap().0.to_string(), "02:00:00:00:00:00:00:01");
        assert_eq!(c.guid.unwrap().1, "runtimeConfig.infinibandGUID");
        assert_eq!(c.link_state, Some(LinkState::Enable));
        assert!(c.rdma_isolation && !c.ib_kubernetes);
        assert_eq!(c.pkey, Some(0x8001));
        let c = IbConf::from_netconf(
            &json!({"args": {"cni": {"guid": "02:00:00:00:00:00:00:02"}}, "pkey": "6"}),
        )
        .unwrap();
        assert_eq!(c.guid.unwrap().1, "args.cni.guid");
        assert_eq!(c.pkey, Some(6));
        assert_eq!(IbConf::from_netconf(&json!({})).unwrap(), IbConf::default());
    }

    #[test]
    fn bad_values_name_their_field() {
        for (conf, field) in [
            (
                json!({"runtimeConfig": {"infinibandGUID": "02:00:00:00:00:00:01"}}),
                "runtimeConfig.infinibandGUID",
            ),
            (
                json!({"args": {"cni": {"guid": "00:00:00:00:00:00:00:00"}}}),
                "args.cni.guid",
            ),
            (json!({"args": {"cni": {"guid": 7}}}), "args.cni.guid"),
            (json!({"link_state": "up"}), "link_state"),
            (json!({"rdmaIsolation": "yes"}), "rdmaIsolation"),
            (json!({"ibKubernetesEnabled": 1}), "ibKubernetesEnabled"),
            (json!({"pkey": "0x10000"}), "pkey"),
            (json!({"pkey": "0x"}), "pkey"),
            (json!({"pkey": 5}), "pkey"),
        ] {
            let e = IbConf::from_netconf(&conf).unwrap_err();
            assert_eq!(e.field, field, "{conf}: {e}");
        }
        let e =
            IbConf::from_netconf(&json!({"args": {"cni": {"guid": "00:00:00:00:00:00:00:00"}}}))
                .unwrap_err();
        assert!(e.reason.contains("all-zero"), "{e}");
    }

    #[test]
    fn ib_kubernetes_without_guid_is_refused_as_documented() {
        let configured = json!({"ibKubernetesEnabled": true, "args": {"cni": {"mellanox.infiniband.app": "configured"}}});
        let e = IbConf::from_netconf(&configured).unwrap_err();
        assert!(
            e.to_string()
                .contains("GUID must be provided by ib-kubernetes"),
            "{e}"
        );
        let e = IbConf::from_netconf(&json!({"ibKubernetesEnabled": true, "runtimeConfig": {"infinibandGUID": "02:00:00:00:00:00:00:01"}})).unwrap_err();
        assert_eq!(e.field, "args.cni.mellanox.infiniband.app");
        assert!(e.to_string().contains("is not \"configured\""), "{e}");
        let mut ok = configured.clone();
        ok["args"]["cni"]["guid"] = json!("02:00:00:00:00:00:00:03");
        assert!(IbConf::from_netconf(&ok).unwrap().ib_kubernetes);
    }

    #[test]
    fn ethernet_keys_on_an_ib_vf_are_all_named() {
        let v = json!({"vlan": 10, "spoofchk": "off", "max_tx_rate": 100, "mtu": 2044,
                       "trust": null, "runtimeConfig": {"mac": "0c:42:a1:00:00:01"}});
        assert_eq!(
            ethernet_keys_in(&v),
            vec!["vlan", "spoofchk", "max_tx_rate", "runtimeConfig.mac"]
        );
        let e = refuse_ethernet_keys(&v, "0000:5e:00.3", "ib0").unwrap_err();
        assert_eq!(e.field, "vlan, spoofchk, max_tx_rate, runtimeConfig.mac");
        let s = e.to_string();
        assert!(
            s.contains("0000:5e:00.3") && s.contains("ib0") && s.contains("infiniband"),
            "{s}"
        );
        assert!(
            refuse_ethernet_keys(&json!({"mtu": 2044, "link_state": "enable"}), "x", "ib0").is_ok()
        );
    }
}
