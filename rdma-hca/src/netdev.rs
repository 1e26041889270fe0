//! Netdevs under `<root>/sys/class/net`, and which of them carry the default route.

use crate::error::{HcaError, Result};
use crate::fsutil::{base_name, owning_pci, read_link_in_root, read_opt, read_parsed, resolve_dir};
use crate::pci::PciAddress;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// The link layer of a netdev (`type` in sysfs, ARPHRD_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    /// ARPHRD_ETHER (1).
    Ether,
    /// ARPHRD_INFINIBAND (32).
    Infiniband,
    /// Anything else, with its number.
    #[serde(untagged)]
    Other(u32),
}

impl LinkType {
    /// From the ARPHRD number in `type`.
    pub fn from_arphrd(n: u32) -> Self {
        match n {
            1 => LinkType::Ether,
            32 => LinkType::Infiniband,
            n => LinkType::Other(n),
        }
    }

    /// The name selectors use (`ether`, `infiniband`, or the number).
    pub fn name(&self) -> String {
        match self {
            LinkType::Ether => "ether".into(),
            LinkType::Infiniband => "infiniband".into(),
            LinkType::Other(n) => n.to_string(),
        }
    }
}

/// `operstate` of a netdev (RFC 2863 names as the kernel writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    /// `up`
    Up,
    /// `down`
    Down,
    /// `lowerlayerdown`
    LowerLayerDown,
    /// `dormant`
    Dormant,
    /// `testing`
    Testing,
    /// `notpresent`
    NotPresent,
    /// `unknown` (also used by drivers that do not report it, e.g. loopback)
    Unknown,
}

impl OperState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "up" => OperState::Up,
            "down" => OperState::Down,
            "lowerlayerdown" => OperState::LowerLayerDown,
            "dormant" => OperState::Dormant,
            "testing" => OperState::Testing,
            "notpresent" => OperState::NotPresent,
            "unknown" => OperState::Unknown,
            _ => return None,
        })
    }
}

/// One netdev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Netdev {
    /// Interface name.
    pub name: String,
    /// Link layer.
    pub link_type: LinkType,
    /// Operational state.
    pub operstate: OperState,
    /// `address` (MAC, or the 20-byte IPoIB address).
    pub mac: Option<String>,
    /// `phys_port_name` when the driver reports one (switchdev representors: `pf0vf3`).
    pub phys_port_name: Option<String>,
    /// `phys_switch_id` when the driver reports one.
    pub phys_switch_id: Option<String>,
    /// The PCI function behind it (`device` link), if any.
    pub pci_address: Option<PciAddress>,
    /// Whether it carries a default route (IPv4 or IPv6).
    pub default_route: bool,
}

/// Read `<root>/sys/class/net/<name>`. `Ok(None)` when there is no such netdev.
pub(crate) fn read_netdev(
    root: &Path,
    name: &str,
    default_routes: &BTreeSet<String>,
) -> Result<Option<Netdev>> {
    let Some(dir) = resolve_dir(root, &root.join("sys/class/net").join(name))? else {
        return Ok(None);
    };
    let link_type = read_parsed(&dir.join("type"), "expected an ARPHRD number", |s| {
        s.parse::<u32>().ok()
    })?
    .map(LinkType::from_arphrd)
    .unwrap_or(LinkType::Ether);
    let operstate = read_parsed(
        &dir.join("operstate"),
        "expected an operstate name",
        OperState::parse,
    )?
    .unwrap_or(OperState::Unknown);
    let pci_address = match owning_pci(&dir, "net") {
        Some(a) => Some(a),
        None => match read_link_in_root(root, &dir.join("device"), true)? {
            None => None,
            // virtual devices' parents (e.g. a platform device) are not PCI: not an error
            Some(p) => base_name(&p).parse().ok(),
        },
    };
    Ok(Some(Netdev {
        name: name.to_string(),
        link_type,
        operstate,
        mac: read_opt(&dir.join("address"))?.filter(|s| !s.is_empty()),
        phys_port_name: read_opt(&dir.join("phys_port_name"))?.filter(|s| !s.is_empty()),
        phys_switch_id: read_opt(&dir.join("phys_switch_id"))?.filter(|s| !s.is_empty()),
        pci_address,
        default_route: default_routes.contains(name),
    }))
}

/// Netdevs carrying a default route, from `<root>/proc/net/route` and `ipv6_route`.
pub fn default_route_netdevs(root: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let v4 = root.join("proc/net/route");
    if let Some(text) = read_opt(&v4)? {
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return Err(malformed(&v4, line, "route line with fewer than 8 fields"));
            }
            if f[1] == "00000000" && f[7] == "00000000" {
                out.insert(f[0].to_string());
            }
        }
    }
    let v6 = root.join("proc/net/ipv6_route");
    if let Some(text) = read_opt(&v6)? {
        // dest plen src plen nexthop metric refcnt use flags iface
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return Err(malformed(
                    &v6,
                    line,
                    "ipv6 route line with fewer than 10 fields",
                ));
            }
            let rtf_reject = u32::from_str_radix(f[8], 16).map(|fl| fl & 0x0200 != 0);
            if f[0].bytes().all(|c| c == b'0')
                && f[1] == "00"
                && f[9] != "lo"
                && rtf_reject == Ok(false)
            {
                out.insert(f[9].to_string());
            }
        }
    }
    Ok(out)
}

fn malformed(path: &Path, line: &str, reason: &'static str) -> HcaError {
    HcaError::Malformed {
        path: path.to_path_buf(),
        content: line.to_string(),
        reason,
    }
}
