//! The network configuration (stdin) and the CNI environment, parsed and validated in
//! full before anything on the host is touched. Every error names the field's JSON path
//! (or the variable) and the value.

use crate::result::CniResult;
use crate::version::CniVersion;
use rdma_hca::PciAddress;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
    /// Top-level keys that neither this plugin nor the CNI spec knows (a misspelt
    /// `vlna` would do nothing silently): logged as warnings once logging is set up.
    pub unknown_keys: Vec<String>,
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

/// The network configuration as serde reads it: each field's type checked on the way in
/// (a type error names its JSON path); the checks types cannot say (ranges, MAC and PCI
/// syntax, the rules between fields) are [`Wire::validate`]. Sections passed on to other
/// plugins (`ipam`, `prevResult`, `args`) are read only as far as this plugin needs them.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    plugin_type: Option<&'a str>,
    #[serde(borrow, default, rename = "runtimeConfig")]
    runtime_config: Option<Obj<RuntimeWire<'a>>>,
    #[serde(borrow, default, rename = "deviceID")]
    device_id: Option<&'a str>,
    #[serde(borrow, default, rename = "pciBusID")]
    pci_bus_id: Option<&'a str>,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(default, rename = "vlanQoS")]
    vlan_qos: Option<i64>,
    #[serde(default, rename = "vlanProto")]
    vlan_proto: Option<VlanProto>,
    #[serde(borrow, default)]
    mac: Option<&'a str>,
    #[serde(default)]
    spoofchk: Option<OnOff>,
    #[serde(default)]
    trust: Option<OnOff>,
    #[serde(default)]
    link_state: Option<LinkState>,
    #[serde(default)]
    min_tx_rate: Option<i64>,
    #[serde(default)]
    max_tx_rate: Option<i64>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default, rename = "logLevel")]
    log_level: Option<LogLevel>,
    #[serde(borrow, default, rename = "logFile")]
    log_file: Option<&'a str>,
    #[serde(borrow, default)]
    ipam: Option<Obj<IpamWire<'a>>>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// A JSON object only: serde's derived structs also take an array of the fields in order.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// `runtimeConfig`: the two keys this plugin reads (the rest belongs to other plugins).
#[derive(Deserialize)]
struct RuntimeWire<'a> {
    #[serde(borrow, default, rename = "deviceID")]
    device_id: Option<&'a str>,
    #[serde(borrow, default)]
    mac: Option<&'a str>,
}

/// `ipam`: its plugin; the rest is the IPAM plugin's.
#[derive(Deserialize)]
struct IpamWire<'a> {
    #[serde(borrow, default, rename = "type")]
    plugin: Option<&'a str>,
}

/// Top-level keys that are not this plugin's settings but are expected in a netconf: the
/// spec's own, and the InfiniBand ones (read by `ib::conf`). Any other unknown key is a
/// warning.
const PASSED_THROUGH: [&str; 8] = [
    "cniVersion",
    "capabilities",
    "dns",
    "args",
    "prevResult",
    "rdmaIsolation",
    "ibKubernetesEnabled",
    "pkey",
];

/// The reason for a type error at `path` (the field's JSON path).
fn type_reason(path: &str, message: &str) -> String {
    match path {
        "vlan" | "vlanQoS" | "min_tx_rate" | "max_tx_rate" | "mtu" => "must be an integer",
        "vlanProto" => "must be one of 802.1q, 802.1ad",
        "spoofchk" | "trust" => "must be one of on, off",
        "link_state" => "must be one of auto, enable, disable",
        "logLevel" => "must be one of error, warning, info, debug",
        "runtimeConfig" | "ipam" => "must be an object",
        _ if message.contains("expected a borrowed string")
            || message.contains("expected a string") =>
        {
            "must be a string"
        }
        _ => return message.to_string(),
    }
    .to_string()
}

fn range(
    path: &str,
    v: Option<i64>,
    min: i64,
    max: i64,
    raw: &Value,
) -> Result<Option<i64>, ConfigError> {
    match v {
        Some(n) if n < min || n > max => Err(cerr(
            path,
            raw.get(path),
            format!("must be between {min} and {max}"),
        )),
        v => Ok(v),
    }
}

fn parse_mac(path: &str, s: &str) -> Result<Mac, ConfigError> {
    let v = Value::String(s.to_string());
    let m = Mac::parse(s)
        .ok_or_else(|| cerr(path, Some(&v), "not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    if m.is_zero() {
        return Err(cerr(path, Some(&v), "the all-zero MAC cannot be assigned"));
    }
    if m.is_multicast() {
        return Err(cerr(path, Some(&v), "a multicast MAC cannot be assigned"));
    }
    Ok(m)
}

impl<'a> Wire<'a> {
    /// Reads `v` (a JSON object), collecting the top-level keys it does not know.
    fn read(v: &'a Value, unknown: &mut Vec<String>) -> Result<Wire<'a>, ConfigError> {
        let mut track = |path: serde_ignored::Path<'_>| {
            // below the top level, unknown keys belong to other plugins (ipam, runtimeConfig)
            if let serde_ignored::Path::Map { parent, key } = path
                && matches!(parent, serde_ignored::Path::Root)
                && !PASSED_THROUGH.contains(&key.as_str())
            {
                unknown.push(key);
            }
        };
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(v, &mut track)).map_err(
            |e| {
                let mut path = String::new();
                let mut at = Some(v);
                for seg in e.path().iter() {
                    if let serde_path_to_error::Segment::Map { key } = seg {
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(key);
                        at = at.and_then(|x| x.get(key));
                    }
                }
                if path.starts_with("cni.dev/valid-attachments") {
                    let key = "cni.dev/valid-attachments";
                    return cerr(
                        key,
                        v.get(key),
                        format!("must be [{{containerID, ifname}}]: {}", e.inner()),
                    );
                }
                let reason = type_reason(&path, &e.inner().to_string());
                cerr(&path, at, reason)
            },
        )
    }

    /// The checks beyond types, in a fixed order so one bad config always names the same
    /// field. `raw` is the whole config (for the values quoted in errors).
    fn validate(self, raw: &Value, needs_device: bool) -> Result<Validated, ConfigError> {
        let name = self.name.ok_or_else(|| cerr("name", None, "missing"))?;
        if !spec_name_ok(name) {
            return Err(cerr(
                "name",
                raw.get("name"),
                "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
            ));
        }
        let (rc_device, rc_mac) = self
            .runtime_config
            .map_or((None, None), |Obj(rc)| (rc.device_id, rc.mac));
        // deviceID sources, most specific first: runtimeConfig (device-info / multus),
        // then the top-level field multus injects, then the old pciBusID alias.
        let mut device_id = None;
        for (path, given) in [
            ("runtimeConfig.deviceID", rc_device),
            ("deviceID", self.device_id),
            ("pciBusID", self.pci_bus_id),
        ] {
            let Some(s) = given.filter(|s| !s.is_empty()) else {
                continue;
            };
            let addr = s.parse::<PciAddress>().map_err(|_| {
                cerr(
                    path,
                    Some(&Value::String(s.to_string())),
                    "not a PCI address (dddd:bb:dd.f)",
                )
            })?;
            device_id = Some(addr);
            break;
        }
        if needs_device && device_id.is_none() {
            return Err(cerr(
                "deviceID",
                None,
                "missing (set deviceID, runtimeConfig.deviceID or pciBusID)",
            ));
        }
        let vlan = range("vlan", self.vlan, 0, 4094, raw)?.map(|n| n as u16);
        let vlan_qos = range("vlanQoS", self.vlan_qos, 0, 7, raw)?.map(|n| n as u8);
        if vlan_qos.is_some_and(|q| q != 0) && vlan.unwrap_or(0) == 0 {
            return Err(cerr("vlanQoS", raw.get("vlanQoS"), "needs a non-zero vlan"));
        }
        if self.vlan_proto == Some(VlanProto::Dot1Ad) && vlan.unwrap_or(0) == 0 {
            return Err(cerr(
                "vlanProto",
                raw.get("vlanProto"),
                "802.1ad needs a non-zero vlan",
            ));
        }
        let mut mac = self.mac.map(|m| parse_mac("mac", m)).transpose()?;
        if let Some(m) = rc_mac {
            mac = Some(parse_mac("runtimeConfig.mac", m)?);
        }
        let u32max = i64::from(u32::MAX);
        let min_tx_rate = range("min_tx_rate", self.min_tx_rate, 0, u32max, raw)?.map(|n| n as u32);
        let max_tx_rate = range("max_tx_rate", self.max_tx_rate, 0, u32max, raw)?.map(|n| n as u32);
        if let (Some(min), Some(max)) = (min_tx_rate, max_tx_rate)
            && max != 0
            && min > max
        {
            return Err(cerr(
                "min_tx_rate",
                raw.get("min_tx_rate"),
                format!("must not exceed max_tx_rate ({max})"),
            ));
        }
        let mtu = range("mtu", self.mtu, 68, 65535, raw)?.map(|n| n as u32);
        let log_file = match self.log_file {
            None | Some("") => None,
            Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                Some(PathBuf::from(p))
            }
            Some(_) => {
                return Err(cerr(
                    "logFile",
                    raw.get("logFile"),
                    "must be an absolute path without '..'",
                ));
            }
        };
        // `"ipam": {}` is no IPAM (as upstream reads it)
        let ipam_empty = raw
            .get("ipam")
            .and_then(Value::as_object)
            .is_some_and(|m| m.is_empty());
        let ipam = match self.ipam {
            Some(Obj(i)) if !ipam_empty => {
                let t = i.plugin.ok_or_else(|| cerr("ipam.type", None, "missing"))?;
                if t.is_empty() || t.contains('/') || t.starts_with('.') {
                    return Err(cerr(
                        "ipam.type",
                        Some(&Value::String(t.to_string())),
                        "must be a plugin file name",
                    ));
                }
                Some(IpamConf {
                    plugin: t.to_string(),
                })
            }
            _ => None,
        };
        let prev_result = match raw.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(p) => Some(
                CniResult::parse(p)
                    .map_err(|e| cerr(&format!("prevResult.{e}"), Some(p), "malformed"))?,
            ),
        };
        Ok(Validated {
            name: name.to_string(),
            plugin_type: self.plugin_type.unwrap_or("sriov").to_string(),
            device_id,
            vlan,
            vlan_qos,
            vlan_proto: self.vlan_proto,
            mac,
            spoofchk: self.spoofchk,
            trust: self.trust,
            link_state: self.link_state,
            min_tx_rate,
            max_tx_rate,
            mtu,
            log_level: self.log_level.unwrap_or_default(),
            log_file,
            ipam,
            prev_result,
            valid_attachments: self.valid_attachments,
        })
    }
}

/// [`Wire`] after [`Wire::validate`]: everything of a [`NetConf`] but the version and
/// the raw config, owned (so the raw config can move into the [`NetConf`] uncopied).
struct Validated {
    name: String,
    plugin_type: String,
    device_id: Option<PciAddress>,
    vlan: Option<u16>,
    vlan_qos: Option<u8>,
    vlan_proto: Option<VlanProto>,
    mac: Option<Mac>,
    spoofchk: Option<OnOff>,
    trust: Option<OnOff>,
    link_state: Option<LinkState>,
    min_tx_rate: Option<u32>,
    max_tx_rate: Option<u32>,
    mtu: Option<u32>,
    log_level: LogLevel,
    log_file: Option<PathBuf>,
    ipam: Option<IpamConf>,
    prev_result: Option<CniResult>,
    valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parse and validate stdin. `needs_device` is false for VERSION/STATUS/GC.
    pub fn parse(raw: &[u8], needs_device: bool) -> Result<NetConf, crate::error::Error> {
        use crate::error::Error;
        let v: Value = serde_json::from_slice(raw).map_err(|e| Error::Decode(e.to_string()))?;
        let o = v.as_object().ok_or_else(|| {
            Error::Decode("the network configuration is not a JSON object".into())
        })?;
        let ver_s = match o.get("cniVersion") {
            None | Some(Value::Null) => return Err(cerr("cniVersion", None, "missing").into()),
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(cerr("cniVersion", Some(v), "must be a string").into()),
        };
        let cni_version =
            ver_s
                .parse::<CniVersion>()
                .map_err(|reason| Error::IncompatibleVersion {
                    requested: ver_s.to_string(),
                    reason,
                })?;
        let mut unknown_keys = Vec::new();
        let c = Wire::read(&v, &mut unknown_keys)?.validate(&v, needs_device)?;
        Ok(NetConf {
            cni_version,
            name: c.name,
            plugin_type: c.plugin_type,
            device_id: c.device_id,
            vlan: c.vlan,
            vlan_qos: c.vlan_qos,
            vlan_proto: c.vlan_proto,
            mac: c.mac,
            spoofchk: c.spoofchk,
            trust: c.trust,
            link_state: c.link_state,
            min_tx_rate: c.min_tx_rate,
            max_tx_rate: c.max_tx_rate,
            mtu: c.mtu,
            log_level: c.log_level,
            log_file: c.log_file,
            ipam: c.ipam,
            prev_result: c.prev_result,
            valid_attachments: c.valid_attachments,
            unknown_keys,
            raw: v,
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
    fn unknown_top_level_keys_are_reported_not_refused() {
        let c = conf(json!({"vlna": 5, "capabilities": {"mac": true}, "args": {"cni": {}},
            "pkey": "0x1", "runtimeConfig": {"ips": ["10.1.0.2/24"]}, "ipam": {"type": "host-local", "subnet": "10.1.0.0/16"}}))
        .unwrap();
        // the spec's keys, other plugins' sections and the InfiniBand keys are not unknown
        assert_eq!(c.unknown_keys, vec!["vlna".to_string()]);
        assert_eq!(c.vlan, None);
    }

    #[test]
    fn type_errors_name_the_path_and_quote_the_value() {
        for (extra, field, value, reason) in [
            (json!({"vlan": "7"}), "vlan", "\"7\"", "must be an integer"),
            (
                json!({"runtimeConfig": {"mac": 7}}),
                "runtimeConfig.mac",
                "7",
                "must be a string",
            ),
            (
                json!({"runtimeConfig": []}),
                "runtimeConfig",
                "[]",
                "must be an object",
            ),
            (
                json!({"ipam": {"type": 5}}),
                "ipam.type",
                "5",
                "must be a string",
            ),
            (
                json!({"trust": true}),
                "trust",
                "true",
                "must be one of on, off",
            ),
        ] {
            match conf(extra.clone()) {
                Err(crate::error::Error::Config(e)) => {
                    assert_eq!(
                        (e.field.as_str(), e.value.as_str(), e.reason.as_str()),
                        (field, value, reason),
                        "{extra}"
                    )
                }
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
