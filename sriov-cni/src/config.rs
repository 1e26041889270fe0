//! The network configuration (stdin) and the CNI environment, parsed and validated in
//! full before anything on the host is touched. Every error names the field's JSON path
//! (or the variable) and the value.

use crate::result::CniResult;
use crate::version::CniVersion;
use rdma_hca::PciAddress;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;

/// A bad field in the network configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network config: {field}={value}: {reason}")]
pub struct ConfigError {
    /// The field's JSON path (`vlan`, `ipam.type`, `runtimeConfig.mac`).
    pub field: String,
    /// The value as given (JSON text), or `<missing>`.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A bad CNI environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid environment: {var}={value:?}: {reason}")]
pub struct EnvError {
    /// The variable (`CNI_IFNAME`).
    pub var: &'static str,
    /// Its value (empty when unset).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

fn cerr(field: &str, value: Option<&Value>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        value: value.map_or_else(|| "<missing>".to_string(), |v| v.to_string()),
        reason: reason.into(),
    }
}

/// `on` / `off` settings (`spoofchk`, `trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl OnOff {
    /// As a bool.
    pub fn enabled(self) -> bool {
        self == OnOff::On
    }
}

/// VF link state as the PF enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// Follow the PF's link.
    Auto,
    /// Always up.
    Enable,
    /// Always down.
    Disable,
}

impl LinkState {
    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Auto => "auto",
            LinkState::Enable => "enable",
            LinkState::Disable => "disable",
        }
    }
}

/// VLAN protocol of a VF VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VlanProto {
    /// 802.1Q (0x8100), the default.
    #[serde(rename = "802.1q", alias = "802.1Q")]
    Dot1Q,
    /// 802.1ad (0x88a8), QinQ.
    #[serde(rename = "802.1ad", alias = "802.1AD")]
    Dot1Ad,
}

impl VlanProto {
    /// Ethertype.
    pub fn ethertype(self) -> u16 {
        match self {
            VlanProto::Dot1Q => 0x8100,
            VlanProto::Dot1Ad => 0x88a8,
        }
    }

    /// From an ethertype (unknown ones read as 802.1q, as the kernel's default).
    pub fn from_ethertype(t: u16) -> Self {
        if t == 0x88a8 {
            VlanProto::Dot1Ad
        } else {
            VlanProto::Dot1Q
        }
    }

    /// Config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VlanProto::Dot1Q => "802.1q",
            VlanProto::Dot1Ad => "802.1ad",
        }
    }
}

/// Log verbosity (`logLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warning,
    /// Normal progress (default).
    #[default]
    Info,
    /// Everything, including netlink round trips.
    Debug,
}

/// A unicast Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parse `aa:bb:cc:dd:ee:ff` (any case; `-` also accepted).
    pub fn parse(s: &str) -> Option<Mac> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return None;
            }
            m[i] = u8::from_str_radix(p, 16).ok()?;
        }
        Some(Mac(m))
    }

    /// Whether this is the all-zero address.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Whether the group bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Mac::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad MAC {s:?}")))
    }
}

/// The IPAM section: its plugin type and the raw object (passed through unchanged).
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConf {
    /// `ipam.type`: the plugin binary name looked up in `CNI_PATH`.
    pub plugin: String,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// The validated network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`: the spec version results and errors are written in.
    pub cni_version: CniVersion,
    /// `name`: the network name.
    pub name: String,
    /// `type`: the plugin type (normally `sriov`).
    pub plugin_type: String,
    /// `deviceID` / `runtimeConfig.deviceID` / `pciBusID`: the VF's PCI address.
    /// `None` only for commands that need no device (VERSION, STATUS, GC).
    pub device_id: Option<PciAddress>,
    /// `vlan`: 0-4094; `None` leaves the VF's VLAN alone.
    pub vlan: Option<u16>,
    /// `vlanQoS`: 0-7, needs `vlan`.
    pub vlan_qos: Option<u8>,
    /// `vlanProto`: `802.1q` or `802.1ad`, needs `vlan`.
    pub vlan_proto: Option<VlanProto>,
    /// `mac` / `runtimeConfig.mac`: MAC for the VF (admin MAC on the PF and the netdev).
    pub mac: Option<Mac>,
    /// `spoofchk`.
    pub spoofchk: Option<OnOff>,
    /// `trust`.
    pub trust: Option<OnOff>,
    /// `link_state`.
    pub link_state: Option<LinkState>,
    /// `min_tx_rate` in Mbps.
    pub min_tx_rate: Option<u32>,
    /// `max_tx_rate` in Mbps.
    pub max_tx_rate: Option<u32>,
    /// `mtu` of the VF netdev in the pod.
    pub mtu: Option<u32>,
    /// `logLevel`.
    pub log_level: LogLevel,
    /// `logFile`: absolute path; logs go to stderr when absent.
    pub log_file: Option<PathBuf>,
    /// `ipam`.
    pub ipam: Option<IpamConf>,
    /// `prevResult` (chained plugins, CHECK, DEL).
    pub prev_result: Option<CniResult>,
    /// `cni.dev/valid-attachments` (GC).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The configuration as received, passed unchanged to the IPAM plugin.
    pub raw: Value,
}

/// The commands of the CNI protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach.
    Add,
    /// Detach.
    Del,
    /// Verify an attachment.
    Check,
    /// Report supported versions.
    Version,
    /// Readiness (1.1.0).
    Status,
    /// Garbage-collect stale attachments (1.1.0).
    Gc,
}

impl Command {
    /// The `CNI_COMMAND` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The CNI environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` (may be absent on DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
}

/// Longest container ID accepted: the cache file `<id>-<ifname>` must fit in NAME_MAX.
pub const MAX_CONTAINER_ID: usize = 200;

/// Whether `s` matches the spec's `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn spec_name_ok(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Check an interface name the way the kernel's `dev_valid_name` does.
pub fn valid_ifname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.len() > 15 {
        return Err(format!("{} bytes, the kernel allows 15", s.len()));
    }
    if s == "." || s == ".." {
        return Err("not a name".into());
    }
    if s.bytes()
        .any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace() || c == 0)
    {
        return Err("contains '/', ':', whitespace or NUL".into());
    }
    Ok(())
}

impl Env {
    /// Read the environment through `get` (std::env::var in the binary, a map in tests).
    /// `needs_path` says whether CNI_PATH is required (an IPAM plugin is configured).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, EnvError> {
        let bad = |var: &'static str, value: &str, reason: &str| EnvError {
            var,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let cmd = get("CNI_COMMAND").unwrap_or_default();
        let command = match cmd.as_str() {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "" => return Err(bad("CNI_COMMAND", "", "missing")),
            _ => {
                return Err(bad(
                    "CNI_COMMAND",
                    &cmd,
                    "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
                ));
            }
        };
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = get("CNI_CONTAINERID").unwrap_or_default();
        let ifname = get("CNI_IFNAME").unwrap_or_default();
        if per_attachment {
            if container_id.is_empty() {
                return Err(bad("CNI_CONTAINERID", "", "missing"));
            }
            if container_id.len() > MAX_CONTAINER_ID {
                return Err(bad(
                    "CNI_CONTAINERID",
                    &container_id,
                    &format!("longer than {MAX_CONTAINER_ID} characters"),
                ));
            }
            if !spec_name_ok(&container_id) {
                return Err(bad(
                    "CNI_CONTAINERID",
                    &container_id,
                    "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
                ));
            }
            if container_id.contains("..") {
                return Err(bad(
                    "CNI_CONTAINERID",
                    &container_id,
                    "must not contain '..'",
                ));
            }
            if ifname.is_empty() {
                return Err(bad("CNI_IFNAME", "", "missing"));
            }
            valid_ifname(&ifname).map_err(|r| bad("CNI_IFNAME", &ifname, &r))?;
        }
        // VERSION, STATUS and GC take no netns; libcni probes VERSION with CNI_NETNS=dummy.
        let netns = get("CNI_NETNS").filter(|s| per_attachment && !s.is_empty());
        if matches!(command, Command::Add | Command::Check) && netns.is_none() {
            return Err(bad("CNI_NETNS", "", "missing"));
        }
        if let Some(ns) = &netns
            && !ns.starts_with('/')
        {
            return Err(bad("CNI_NETNS", ns, "must be an absolute path"));
        }
        let path = get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        let mut args = Vec::new();
        if let Some(a) = get("CNI_ARGS").filter(|s| !s.is_empty()) {
            for kv in a.split(';').filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad("CNI_ARGS", &a, &format!("{kv:?} is not KEY=VALUE")))?;
                if k.is_empty() {
                    return Err(bad("CNI_ARGS", &a, "empty key"));
                }
                args.push((k.to_string(), v.to_string()));
            }
        }
        Ok(Env {
            command,
            container_id,
            ifname,
            netns: netns.map(PathBuf::from),
            path,
            args,
        })
    }
}

/// The `cniVersion` of a config, as far as it can be read; for error JSON when the rest
/// is broken.
pub fn peek_version(raw: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

fn get_int(
    o: &Map<String, Value>,
    path: &str,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = v
                .as_i64()
                .ok_or_else(|| cerr(path, Some(v), "must be an integer"))?;
            if n < min || n > max {
                return Err(cerr(
                    path,
                    Some(v),
                    format!("must be between {min} and {max}"),
                ));
            }
            Ok(Some(n))
        }
    }
}

fn get_enum<T: for<'de> Deserialize<'de>>(
    o: &Map<String, Value>,
    path: &str,
    key: &str,
    allowed: &str,
) -> Result<Option<T>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value::<T>(v.clone())
            .map(Some)
            .map_err(|_| cerr(path, Some(v), format!("must be one of {allowed}"))),
    }
}

fn get_string<'a>(
    o: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(v) => Err(cerr(path, Some(v), "must be a string")),
    }
}

fn parse_mac(path: &str, v: &Value) -> Result<Mac, ConfigError> {
    let s = v
        .as_str()
        .ok_or_else(|| cerr(path, Some(v), "must be a string"))?;
    let m = Mac::parse(s)
        .ok_or_else(|| cerr(path, Some(v), "not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    if m.is_zero() {
        return Err(cerr(path, Some(v), "the all-zero MAC cannot be assigned"));
    }
    if m.is_multicast() {
        return Err(cerr(path, Some(v), "a multicast MAC cannot be assigned"));
    }
    Ok(m)
}

impl NetConf {
    /// Parse and validate stdin. `needs_device` is false for VERSION/STATUS/GC.
    pub fn parse(raw: &[u8], needs_device: bool) -> Result<NetConf, crate::error::Error> {
        use crate::error::Error;
        let v: Value = serde_json::from_slice(raw).map_err(|e| Error::Decode(e.to_string()))?;
        let o = v.as_object().ok_or_else(|| {
            Error::Decode("the network configuration is not a JSON object".into())
        })?;
        let ver_v = o.get("cniVersion");
        let ver_s = match ver_v {
            None | Some(Value::Null) => return Err(cerr("cniVersion", None, "missing").into()),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(cerr("cniVersion", Some(v), "must be a string").into()),
        };
        let cni_version =
            ver_s
                .parse::<CniVersion>()
                .map_err(|reason| Error::IncompatibleVersion {
                    requested: ver_s.clone(),
                    reason,
                })?;
        let conf = Self::parse_fields(o, &v, cni_version, needs_device)?;
        Ok(conf)
    }

    fn parse_fields(
        o: &Map<String, Value>,
        v: &Value,
        cni_version: CniVersion,
        needs_device: bool,
    ) -> Result<NetConf, ConfigError> {
        let name = get_string(o, "name", "name")?.ok_or_else(|| cerr("name", None, "missing"))?;
        if !spec_name_ok(name) {
            return Err(cerr(
                "name",
                o.get("name"),
                "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
            ));
        }
        let plugin_type = get_string(o, "type", "type")?
            .unwrap_or("sriov")
            .to_string();
        let empty = Map::new();
        let rc = match o.get("runtimeConfig") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(other) => return Err(cerr("runtimeConfig", Some(other), "must be an object")),
        };
        // deviceID sources, most specific first: runtimeConfig (device-info / multus),
        // then the top-level field multus injects, then the old pciBusID alias.
        let mut device_id = None;
        for (path, map, key) in [
            ("runtimeConfig.deviceID", rc, "deviceID"),
            ("deviceID", o, "deviceID"),
            ("pciBusID", o, "pciBusID"),
        ] {
            if let Some(s) = get_string(map, path, key)? {
                if s.is_empty() {
                    continue;
                }
                let addr = s
                    .parse::<PciAddress>()
                    .map_err(|_| cerr(path, map.get(key), "not a PCI address (dddd:bb:dd.f)"))?;
                device_id = Some(addr);
                break;
            }
        }
        if needs_device && device_id.is_none() {
            return Err(cerr(
                "deviceID",
                None,
                "missing (set deviceID, runtimeConfig.deviceID or pciBusID)",
            ));
        }
        let vlan = get_int(o, "vlan", "vlan", 0, 4094)?.map(|n| n as u16);
        let vlan_qos = get_int(o, "vlanQoS", "vlanQoS", 0, 7)?.map(|n| n as u8);
        let vlan_proto: Option<VlanProto> =
            get_enum(o, "vlanProto", "vlanProto", "802.1q, 802.1ad")?;
        if vlan_qos.is_some_and(|q| q != 0) && vlan.unwrap_or(0) == 0 {
            return Err(cerr("vlanQoS", o.get("vlanQoS"), "needs a non-zero vlan"));
        }
        if vlan_proto == Some(VlanProto::Dot1Ad) && vlan.unwrap_or(0) == 0 {
            return Err(cerr(
                "vlanProto",
                o.get("vlanProto"),
                "802.1ad needs a non-zero vlan",
            ));
        }
        let mut mac = match o.get("mac") {
            None | Some(Value::Null) => None,
            Some(m) => Some(parse_mac("mac", m)?),
        };
        if let Some(m) = rc.get("mac").filter(|m| !m.is_null()) {
            mac = Some(parse_mac("runtimeConfig.mac", m)?);
        }
        let spoofchk = get_enum(o, "spoofchk", "spoofchk", "on, off")?;
        let trust = get_enum(o, "trust", "trust", "on, off")?;
        let link_state = get_enum(o, "link_state", "link_state", "auto, enable, disable")?;
        let min_tx_rate =
            get_int(o, "min_tx_rate", "min_tx_rate", 0, u32::MAX as i64)?.map(|n| n as u32);
        let max_tx_rate =
            get_int(o, "max_tx_rate", "max_tx_rate", 0, u32::MAX as i64)?.map(|n| n as u32);
        if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate)
            && max != 0
            && min > max
        {
            return Err(cerr(
                "min_tx_rate",
                o.get("min_tx_rate"),
                format!("must not exceed max_tx_rate ({max})"),
            ));
        }
        let mtu = get_int(o, "mtu", "mtu", 68, 65535)?.map(|n| n as u32);
        let log_level =
            get_enum(o, "logLevel", "logLevel", "error, warning, info, debug")?.unwrap_or_default();
        let log_file = match get_string(o, "logFile", "logFile")? {
            None | Some("") => None,
            Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                Some(PathBuf::from(p))
            }
            Some(_) => {
                return Err(cerr(
                    "logFile",
                    o.get("logFile"),
                    "must be an absolute path without '..'",
                ));
            }
        };
        let ipam = match o.get("ipam") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(Value::Object(m)) => {
                let t = get_string(m, "ipam.type", "type")?
                    .ok_or_else(|| cerr("ipam.type", None, "missing"))?;
                if t.is_empty() || t.contains('/') || t.starts_with('.') {
                    return Err(cerr(
                        "ipam.type",
                        m.get("type"),
                        "must be a plugin file name",
                    ));
                }
                Some(IpamConf {
                    plugin: t.to_string(),
                })
            }
            Some(other) => return Err(cerr("ipam", Some(other), "must be an object")),
        };
        let prev_result = match o.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p) => Some(
                CniResult::parse(p)
                    .map_err(|e| cerr(&format!("prevResult.{e}"), Some(p), "malformed"))?,
            ),
        };
        let valid_attachments = match o.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(a) => Some(
                serde_json::from_value::<Vec<Attachment>>(a.clone()).map_err(|e| {
                    cerr(
                        "cni.dev/valid-attachments",
                        Some(a),
                        format!("must be [{{containerID, ifname}}]: {e}"),
                    )
                })?,
            ),
        };
        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            plugin_type,
            device_id,
            vlan,
            vlan_qos,
            vlan_proto,
            mac,
            spoofchk,
            trust,
            link_state,
            min_tx_rate,
            max_tx_rate,
            mtu,
            log_level,
            log_file,
            ipam,
            prev_result,
            valid_attachments,
            raw: v.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(extra: Value) -> Result<NetConf, crate::error::Error> {
        let mut base = json!({"cniVersion": "1.0.0", "name": "net", "type": "sriov", "deviceID": "0000:3b:00.2"});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        NetConf::parse(base.to_string().as_bytes(), true)
    }

    #[test]
    fn good_config() {
        let c = conf(json!({"vlan": 100, "vlanQoS": 3, "vlanProto": "802.1ad", "mac": "0C:42:A1:00:00:09",
            "spoofchk": "off", "trust": "on", "link_state": "enable", "min_tx_rate": 10, "max_tx_rate": 100,
            "mtu": 9000, "ipam": {"type": "host-local"}, "runtimeConfig": {"mac": "0c:42:a1:00:00:0a"}}))
        .unwrap();
        assert_eq!(c.vlan, Some(100));
        assert_eq!(c.vlan_proto, Some(VlanProto::Dot1Ad));
        assert_eq!(c.mac.unwrap().to_string(), "0c:42:a1:00:00:0a");
        assert_eq!(c.trust, Some(OnOff::On));
        assert_eq!(c.link_state, Some(LinkState::Enable));
        assert_eq!(c.ipam.unwrap().plugin, "host-local");
        assert_eq!(c.device_id.unwrap().as_str(), "0000:3b:00.2");
    }

    #[test]
    fn device_id_sources() {
        let c = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n","pciBusID":"3b:00.3"}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.device_id.unwrap().as_str(), "0000:3b:00.3");
        let c = NetConf::parse(
            br#"{"cniVersion":"0.4.0","name":"n","deviceID":"0000:3b:00.3","runtimeConfig":{"deviceID":"0000:3b:00.4"}}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.device_id.unwrap().as_str(), "0000:3b:00.4");
    }

    #[test]
    fn bad_fields_are_named() {
        for (extra, field) in [
            (json!({"vlan": 4095}), "vlan"),
            (json!({"vlan": "7"}), "vlan"),
            (json!({"vlanQoS": 8, "vlan": 1}), "vlanQoS"),
            (json!({"vlanQoS": 2}), "vlanQoS"),
            (json!({"vlanProto": "802.1x", "vlan": 1}), "vlanProto"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac"),
            (json!({"spoofchk": "yes"}), "spoofchk"),
            (
                json!({"min_tx_rate": 200, "max_tx_rate": 100}),
                "min_tx_rate",
            ),
            (json!({"mtu": 10}), "mtu"),
            (json!({"ipam": {"type": "../x"}}), "ipam.type"),
            (json!({"deviceID": "nope"}), "deviceID"),
        ] {
            match conf(extra.clone()) {
                Err(crate::error::Error::Config(e)) => assert_eq!(e.field, field, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
    }

    #[test]
    fn env_checks() {
        let vars = |extra: &[(&str, &str)]| {
            let mut m: std::collections::HashMap<String, String> = [
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "abc"),
                ("CNI_IFNAME", "net1"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            for (k, v) in extra {
                m.insert(k.to_string(), v.to_string());
            }
            move |k: &str| m.get(k).cloned()
        };
        let e = Env::from_vars(vars(&[])).unwrap();
        assert_eq!(e.path.len(), 2);
        for (k, v) in [
            ("CNI_CONTAINERID", "../etc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "0123456789abcdef"),
            ("CNI_IFNAME", ".."),
            ("CNI_NETNS", "relative"),
            ("CNI_COMMAND", "FOO"),
            ("CNI_ARGS", "novalue"),
        ] {
            let err = Env::from_vars(vars(&[(k, v)])).unwrap_err();
            assert_eq!(err.var, k);
        }
        // libcni's VERSION probe passes placeholder values that per-attachment commands
        // would reject; VERSION ignores them.
        let e = Env::from_vars(vars(&[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_NETNS", "dummy"),
            ("CNI_CONTAINERID", "dummy"),
            ("CNI_IFNAME", "dummy"),
        ]))
        .unwrap();
        assert_eq!(e.command, Command::Version);
    }
}
