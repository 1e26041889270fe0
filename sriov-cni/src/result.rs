//! CNI results: one internal form, parsed from any supported version (IPAM answers,
//! `prevResult`) and written in the version the runtime asked for.
//!
//! Differences by version: before 1.0.0 each `ips[]` entry carries `"version": "4"|"6"`;
//! 1.1.0 adds interface `mtu`, `socketPath`, `pciID` and route `mtu`, `advmss`,
//! `priority`, `table`, `scope`. Fields a version does not know are left out.

use crate::version::CniVersion;
use serde_json::{Map, Value, json};
use std::net::IpAddr;
use std::str::FromStr;

/// An address with prefix length (`10.1.2.3/24`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not address/prefix"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| format!("{p:?} is not a prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} too long for {addr}"));
        }
        Ok(IpNet { addr, prefix })
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    pub mac: Option<String>,
    /// Its MTU (1.1.0).
    pub mtu: Option<u32>,
    /// The netns path it lives in (empty/absent for host interfaces).
    pub sandbox: Option<String>,
    /// A socket path (1.1.0; vhost-user style interfaces).
    pub socket_path: Option<String>,
    /// The PCI address of the device (1.1.0).
    pub pci_id: Option<String>,
}

/// One IP configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address and prefix.
    pub address: IpNet,
    /// Default gateway for this address.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop; absent means the IP's gateway (or a direct route).
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0).
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    pub advmss: Option<u32>,
    /// Priority/metric (1.1.0).
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    pub table: Option<u32>,
    /// Scope (1.1.0).
    pub scope: Option<u8>,
}

/// A CNI result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// IP configurations.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS settings, passed through as given by IPAM.
    pub dns: Option<Value>,
}

fn opt_str(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_string)
}

fn opt_u32(o: &Map<String, Value>, k: &str) -> Option<u32> {
    o.get(k)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
}

impl CniResult {
    /// Parse a result of any supported version. Errors name the offending field path.
    pub fn parse(v: &Value) -> Result<CniResult, String> {
        let o = v.as_object().ok_or("not an object")?;
        let mut r = CniResult::default();
        if let Some(ifs) = o.get("interfaces") {
            let ifs = ifs.as_array().ok_or("interfaces: not an array")?;
            for (i, itf) in ifs.iter().enumerate() {
                let io = itf
                    .as_object()
                    .ok_or_else(|| format!("interfaces[{i}]: not an object"))?;
                r.interfaces.push(Interface {
                    name: opt_str(io, "name")
                        .ok_or_else(|| format!("interfaces[{i}].name: missing"))?,
                    mac: opt_str(io, "mac"),
                    mtu: opt_u32(io, "mtu"),
                    sandbox: opt_str(io, "sandbox"),
                    socket_path: opt_str(io, "socketPath"),
                    pci_id: opt_str(io, "pciID"),
                });
            }
        }
        if let Some(ips) = o.get("ips") {
            let ips = ips.as_array().ok_or("ips: not an array")?;
            for (i, ip) in ips.iter().enumerate() {
                let io = ip
                    .as_object()
                    .ok_or_else(|| format!("ips[{i}]: not an object"))?;
                let address = opt_str(io, "address")
                    .ok_or_else(|| format!("ips[{i}].address: missing"))?
                    .parse::<IpNet>()
                    .map_err(|e| format!("ips[{i}].address: {e}"))?;
                let gateway = match opt_str(io, "gateway") {
                    None => None,
                    Some(g) => Some(
                        g.parse::<IpAddr>()
                            .map_err(|_| format!("ips[{i}].gateway: {g:?} is not an IP address"))?,
                    ),
                };
                let interface = match io.get("interface") {
                    None | Some(Value::Null) => None,
                    Some(n) => Some(
                        n.as_u64()
                            .map(|n| n as usize)
                            .ok_or_else(|| format!("ips[{i}].interface: not an index"))?,
                    ),
                };
                r.ips.push(IpConfig {
                    address,
                    gateway,
                    interface,
                });
            }
        }
        if let Some(routes) = o.get("routes") {
            let routes = routes.as_array().ok_or("routes: not an array")?;
            for (i, rt) in routes.iter().enumerate() {
                let ro = rt
                    .as_object()
                    .ok_or_else(|| format!("routes[{i}]: not an object"))?;
                let dst = opt_str(ro, "dst")
                    .ok_or_else(|| format!("routes[{i}].dst: missing"))?
                    .parse::<IpNet>()
                    .map_err(|e| format!("routes[{i}].dst: {e}"))?;
                let gw = match opt_str(ro, "gw") {
                    None => None,
                    Some(g) => Some(
                        g.parse::<IpAddr>()
                            .map_err(|_| format!("routes[{i}].gw: {g:?} is not an IP address"))?,
                    ),
                };
                r.routes.push(Route {
                    dst,
                    gw,
                    mtu: opt_u32(ro, "mtu"),
                    advmss: opt_u32(ro, "advmss"),
                    priority: opt_u32(ro, "priority"),
                    table: opt_u32(ro, "table"),
                    scope: opt_u32(ro, "scope").and_then(|s| u8::try_from(s).ok()),
                });
            }
        }
        // `{}` (what host-local sends) means no DNS settings.
        r.dns = o
            .get("dns")
            .filter(|d| !d.is_null() && d.as_object().is_none_or(|m| !m.is_empty()))
            .cloned();
        Ok(r)
    }

    /// The result as JSON in `version`'s format.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let v11 = version >= CniVersion::V1_1_0;
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut o = Map::new();
                o.insert("name".into(), json!(i.name));
                if let Some(m) = &i.mac {
                    o.insert("mac".into(), json!(m));
                }
                if v11 && let Some(m) = i.mtu {
                    o.insert("mtu".into(), json!(m));
                }
                if let Some(s) = &i.sandbox {
                    o.insert("sandbox".into(), json!(s));
                }
                if v11 && let Some(s) = &i.socket_path {
                    o.insert("socketPath".into(), json!(s));
                }
                if v11 && let Some(p) = &i.pci_id {
                    o.insert("pciID".into(), json!(p));
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                if version.ips_have_version() {
                    let fam = if ip.address.addr.is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), json!(fam));
                }
                if let Some(i) = ip.interface {
                    o.insert("interface".into(), json!(i));
                }
                o.insert("address".into(), json!(ip.address.to_string()));
                if let Some(g) = ip.gateway {
                    o.insert("gateway".into(), json!(g.to_string()));
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(g) = r.gw {
                    o.insert("gw".into(), json!(g.to_string()));
                }
                if v11 {
                    for (k, v) in [
                        ("mtu", r.mtu),
                        ("advmss", r.advmss),
                        ("priority", r.priority),
                        ("table", r.table),
                        ("scope", r.scope.map(u32::from)),
                    ] {
                        if let Some(v) = v {
                            o.insert(k.into(), json!(v));
                        }
                    }
                }
                Value::Object(o)
            })
            .collect();
        let mut out = Map::new();
        out.insert("cniVersion".into(), json!(version.as_str()));
        out.insert("interfaces".into(), Value::Array(interfaces));
        out.insert("ips".into(), Value::Array(ips));
        if !routes.is_empty() {
            out.insert("routes".into(), Value::Array(routes));
        }
        out.insert("dns".into(), self.dns.clone().unwrap_or_else(|| json!({})));
        Value::Object(out)
    }
}

/// The error JSON of the spec: `{"cniVersion","code","msg","details"}`.
pub fn error_json(version: &str, code: u32, msg: &str, details: &str) -> Value {
    let mut o = Map::new();
    o.insert("cniVersion".into(), json!(version));
    o.insert("code".into(), json!(code));
    o.insert("msg".into(), json!(msg));
    if !details.is_empty() {
        o.insert("details".into(), json!(details));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult::parse(&json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "net1", "mac": "0c:42:a1:00:00:01", "sandbox": "/run/netns/p"}],
            "ips": [{"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                    {"address": "fd00::5/64"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
            "dns": {"nameservers": ["10.1.0.53"]}
        }))
        .unwrap()
    }

    #[test]
    fn versions_differ_in_ip_version_field() {
        let r = sample();
        let old = r.to_json(CniVersion::V0_3_0);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        assert_eq!(old["cniVersion"], "0.3.0");
        let new = r.to_json(CniVersion::V1_0_0);
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["interface"], 0);
        assert_eq!(new["routes"][0]["gw"], "10.1.0.1");
        assert_eq!(new["dns"]["nameservers"][0], "10.1.0.53");
    }

    #[test]
    fn v11_fields_only_in_v11() {
        let mut r = sample();
        r.interfaces[0].mtu = Some(9000);
        r.interfaces[0].pci_id = Some("0000:3b:00.2".into());
        r.routes[0].priority = Some(10);
        let v10 = r.to_json(CniVersion::V1_0_0);
        assert!(v10["interfaces"][0].get("mtu").is_none());
        assert!(v10["interfaces"][0].get("pciID").is_none());
        assert!(v10["routes"][0].get("priority").is_none());
        let v11 = r.to_json(CniVersion::V1_1_0);
        assert_eq!(v11["interfaces"][0]["mtu"], 9000);
        assert_eq!(v11["interfaces"][0]["pciID"], "0000:3b:00.2");
        assert_eq!(v11["routes"][0]["priority"], 10);
        // round trip
        assert_eq!(CniResult::parse(&v11).unwrap(), r);
    }

    #[test]
    fn parse_errors_name_the_field() {
        let e = CniResult::parse(&json!({"ips": [{"address": "10.0.0.1"}]})).unwrap_err();
        assert!(e.contains("ips[0].address"), "{e}");
        let e = CniResult::parse(&json!({"routes": [{"dst": "x/1"}]})).unwrap_err();
        assert!(e.contains("routes[0].dst"), "{e}");
        assert!("10.0.0.1/33".parse::<IpNet>().is_err());
    }
}
