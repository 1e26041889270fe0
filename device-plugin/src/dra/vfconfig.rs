//! `VfConfig`: our opaque per-request config, carried in a claim's (or its class's)
//! `config[].opaque.parameters` for our driver, and handed to the CNI through the
//! device-info file.
//!
//! ```json
//! {"apiVersion": "sriov.rdma-hca.io/v1alpha1", "kind": "VfConfig",
//!  "mac": "0c:42:a1:00:00:01", "vlan": 100, "vlanQoS": 3,
//!  "spoofChk": true, "trust": false, "linkState": "auto"}
//! ```
//!
//! `apiVersion` is `<driver name>/v1alpha1`. Every other field is optional; unknown
//! fields are refused (a typo must not silently configure nothing). Several configs for
//! one request: the last applicable one wins whole (class configs come before the
//! claim's), as the kubelet plugin helpers of upstream drivers do.

use serde::{Deserialize, Serialize};

/// The only version of the kind so far.
pub const VERSION: &str = "v1alpha1";
/// The kind name.
pub const KIND: &str = "VfConfig";

/// VF link state, as `ip link set ... vf N state` (and sriov-cni's `link_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Follow the PF.
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

/// A validated `VfConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfConfig {
    /// `<driver>/v1alpha1`.
    pub api_version: String,
    /// `VfConfig`.
    pub kind: String,
    /// VF MAC address (unicast, not all zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// VLAN ID, 0-4094 (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// VLAN priority 0-7; needs a non-zero `vlan`.
    #[serde(default, rename = "vlanQoS", skip_serializing_if = "Option::is_none")]
    pub vlan_qos: Option<u8>,
    /// MAC spoof checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoof_chk: Option<bool>,
    /// Trusted VF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<bool>,
    /// Link state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_state: Option<LinkState>,
}

/// A config that is not a valid `VfConfig`, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {message}")]
pub struct VfConfigError {
    /// The field (`vlan`, `apiVersion`, or `.` for the document).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> VfConfigError {
    VfConfigError {
        field: field.into(),
        message: message.into(),
    }
}

impl VfConfig {
    /// Parse and validate `parameters` for `driver`.
    pub fn parse(driver: &str, parameters: &serde_json::Value) -> Result<VfConfig, VfConfigError> {
        // the version and kind first: a config of another kind gets that error, not a
        // complaint about its fields
        let want = format!("{driver}/{VERSION}");
        match parameters.get("apiVersion").and_then(|v| v.as_str()) {
            Some(v) if v == want => {}
            Some(v) => return Err(err("apiVersion", format!("{v:?}: want {want:?}"))),
            None => return Err(err("apiVersion", format!("missing: want {want:?}"))),
        }
        match parameters.get("kind").and_then(|v| v.as_str()) {
            Some(KIND) => {}
            Some(k) => return Err(err("kind", format!("{k:?}: want {KIND:?}"))),
            None => return Err(err("kind", format!("missing: want {KIND:?}"))),
        }
        let c: VfConfig = serde_path_to_error::deserialize(parameters.clone()).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde names an unknown field in the message, not the path
            let field = match inner.strip_prefix("unknown field `") {
                Some(rest) => rest.split('`').next().unwrap_or(&path).to_string(),
                None => path,
            };
            err(&field, inner)
        })?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), VfConfigError> {
        if let Some(m) = &self.mac {
            let octets: Vec<&str> = m.split(':').collect();
            let ok = octets.len() == 6
                && octets
                    .iter()
                    .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(err(
                    "mac",
                    format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                ));
            }
            let first = u8::from_str_radix(octets[0], 16).unwrap_or(0);
            if first & 1 == 1 {
                return Err(err("mac", format!("{m:?} is a multicast address")));
            }
            if octets.iter().all(|o| *o == "00") {
                return Err(err("mac", format!("{m:?} is all zero")));
            }
        }
        if let Some(v) = self.vlan
            && v > 4094
        {
            return Err(err("vlan", format!("{v} out of range 0-4094")));
        }
        if let Some(q) = self.vlan_qos {
            if q > 7 {
                return Err(err("vlanQoS", format!("{q} out of range 0-7")));
            }
            if q > 0 && self.vlan.unwrap_or(0) == 0 {
                return Err(err("vlanQoS", "needs a non-zero vlan"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sriov.rdma-hca.io";

    fn e(v: serde_json::Value) -> VfConfigError {
        VfConfig::parse(D, &v).unwrap_err()
    }

    #[test]
    fn valid_config_round_trips() {
        let v = json!({"apiVersion": "sriov.rdma-hca.io/v1alpha1", "kind": "VfConfig",
                       "mac": "0c:42:a1:00:00:01", "vlan": 100, "vlanQoS": 3, "spoofChk": true,
                       "linkState": "enable"});
        let c = VfConfig::parse(D, &v).unwrap();
        assert_eq!(c.vlan, Some(100));
        assert_eq!(c.link_state, Some(LinkState::Enable));
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
    }

    #[test]
    fn errors_name_the_field() {
        let base = |k: &str, v: serde_json::Value| {
            let mut m = json!({"apiVersion": "sriov.rdma-hca.io/v1alpha1", "kind": "VfConfig"});
            m[k] = v;
            m
        };
        assert_eq!(e(base("vlan", json!(5000))).field, "vlan");
        assert_eq!(e(base("vlan", json!("x"))).field, "vlan");
        assert_eq!(e(base("mac", json!("zz:00:00:00:00:01"))).field, "mac");
        assert_eq!(
            e(base("mac", json!("01:00:5e:00:00:01"))).message,
            "\"01:00:5e:00:00:01\" is a multicast address"
        );
        assert_eq!(e(base("vlanQoS", json!(2))).field, "vlanQoS");
        assert_eq!(e(base("linkState", json!("up"))).field, "linkState");
        let u = e(base("vlna", json!(1)));
        assert_eq!(u.field, "vlna");
        assert!(u.message.contains("unknown field"), "{u}");
        assert_eq!(
            e(json!({"apiVersion": "other.io/v1", "kind": "VfConfig"})).field,
            "apiVersion"
        );
        assert_eq!(
            e(json!({"apiVersion": "sriov.rdma-hca.io/v1alpha1"})).field,
            "kind"
        );
        assert_eq!(
            e(base("vlan", json!(4095))).to_string(),
            "field vlan: 4095 out of range 0-4094"
        );
    }
}
