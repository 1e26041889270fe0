//! CNI spec versions this plugin speaks, and what changes between them.

use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A CNI spec version this plugin supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// 0.3.0: results with `interfaces`, `ips[].version`.
    V0_3_0,
    /// 0.3.1: same result format as 0.3.0.
    V0_3_1,
    /// 0.4.0: adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds STATUS, GC, interface `mtu`/`socketPath`/`pciID`, route attributes.
    V1_1_0,
}

impl CniVersion {
    /// All supported versions, oldest first.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest supported version.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Whether CHECK exists in this version (0.4.0 and later).
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// Whether STATUS and GC exist in this version (1.1.0 and later).
    pub fn has_status_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Whether `ips[]` carry a `version` field (before 1.0.0).
    pub fn ips_have_version(self) -> bool {
        self < CniVersion::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unsupported (this plugin supports {})",
                    supported_list().join(", ")
                )
            })
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The supported versions as strings.
pub fn supported_list() -> Vec<&'static str> {
    CniVersion::ALL.iter().map(|v| v.as_str()).collect()
}

/// The VERSION command's answer.
pub fn version_json(requested: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": requested.unwrap_or(CniVersion::LATEST.as_str()),
        "supportedVersions": supported_list(),
    })
}

/// Compare two dotted version strings numerically (`0.3.1` < `0.4.0` < `1.0.0`).
pub fn cmp_version_str(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a).cmp(&parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        for v in CniVersion::ALL {
            assert_eq!(v.as_str().parse::<CniVersion>().unwrap(), v);
        }
        assert!("0.2.0".parse::<CniVersion>().is_err());
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(CniVersion::V1_1_0.has_status_gc());
        assert!(!CniVersion::V1_0_0.has_status_gc());
        assert_eq!(
            cmp_version_str("0.10.0", "0.4.0"),
            std::cmp::Ordering::Greater
        );
    }
}
