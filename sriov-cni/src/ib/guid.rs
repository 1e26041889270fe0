//! InfiniBand GUIDs as the configuration spells them (`xx:xx:xx:xx:xx:xx:xx:xx`).
//!
//! The text is read most significant byte first, as a 64-bit number: that is the value
//! `struct ifla_vf_guid.guid` carries (in host byte order on the wire), the way
//! iproute2 (`ip link set ib0 vf 0 node_guid ...`) and ib-sriov-cni's netlink library
//! turn the same text into a number.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node or port GUID. Never all-zero: a zero GUID is what an unassigned VF reports,
/// so it cannot be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(u64);

/// Why a GUID text was refused, with the config field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GUID in {field}: {value:?}: {reason}")]
pub struct GuidError {
    /// The field's JSON path (`runtimeConfig.infinibandGUID`, `args.cni.guid`).
    pub field: String,
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Guid {
    /// From the 64-bit value (as the kernel reports it). `None` for zero.
    pub fn from_u64(v: u64) -> Option<Guid> {
        (v != 0).then_some(Guid(v))
    }

    /// The 64-bit value sent in `struct ifla_vf_guid`.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Parse `xx:xx:xx:xx:xx:xx:xx:xx` (8 hex pairs, either case) read from `field`.
    pub fn parse(field: &str, s: &str) -> Result<Guid, GuidError> {
        let bad = |reason: &str| GuidError {
            field: field.to_string(),
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 8 {
            return Err(bad(
                "expected 8 colon-separated hex bytes (xx:xx:xx:xx:xx:xx:xx:xx)",
            ));
        }
        let mut v = 0u64;
        for p in parts {
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("{p:?} is not a two-digit hex byte")));
            }
            let b = u8::from_str_radix(p, 16).map_err(|_| bad("not hex"))?;
            v = (v << 8) | u64::from(b);
        }
        Guid::from_u64(v).ok_or_else(|| bad("the all-zero GUID cannot be assigned"))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

// The cache stores GUIDs as text, the way operators read them.
impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Guid::parse("cache", &s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_most_significant_byte_first() {
        let g = Guid::parse("guid", "00:11:22:33:44:55:66:7F").unwrap();
        assert_eq!(g.as_u64(), 0x0011_2233_4455_667f);
        assert_eq!(g.to_string(), "00:11:22:33:44:55:66:7f");
        assert_eq!(Guid::parse("guid", &g.to_string()).unwrap(), g);
        let j = serde_json::to_string(&g).unwrap();
        assert_eq!(j, "\"00:11:22:33:44:55:66:7f\"");
        assert_eq!(serde_json::from_str::<Guid>(&j).unwrap(), g);
    }

    #[test]
    fn malformed_guids_name_the_field() {
        for bad in [
            "",
            "00:11:22:33:44:55:66",
            "00:11:22:33:44:55:66:77:88",
            "00:11:22:33:44:55:66:7",
            "00:11:22:33:44:55:66:777",
            "00-11-22-33-44-55-66-77",
            "0g:11:22:33:44:55:66:77",
            "00:11:22:33:44:55:66:+7",
            "0c:42:a1:00:00:09",
        ] {
            let e = Guid::parse("runtimeConfig.infinibandGUID", bad).unwrap_err();
            assert_eq!(e.field, "runtimeConfig.infinibandGUID", "{bad}");
            assert_eq!(e.value, bad);
            assert!(
                e.to_string().contains("runtimeConfig.infinibandGUID"),
                "{e}"
            );
        }
    }

    #[test]
    fn all_zero_guid_is_refused() {
        let e = Guid::parse("args.cni.guid", "00:00:00:00:00:00:00:00").unwrap_err();
        assert_eq!(e.field, "args.cni.guid");
        assert!(e.reason.contains("all-zero"), "{e}");
        assert_eq!(Guid::from_u64(0), None);
        assert!(serde_json::from_str::<Guid>("\"00:00:00:00:00:00:00:00\"").is_err());
    }
}
