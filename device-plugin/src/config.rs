//! The config file: three formats operators run today, detected by their keys, and an
//! embedded default used when no file exists.
//!
//! - sriov-network-device-plugin: `{"resourceList":[...]}`
//! - k8s-rdma-shared-dev-plugin: `{"configList":[...], "periodicUpdateInterval":N, ...}`
//! - k8s-rdma-sriov-dev-plugin: `{"mode":"hca"}` or `{"mode":"sriov","pfNetdevices":[...]}`
//!
//! Validation errors name the file, the JSON path (`resourceList[1].resourceName`) and the
//! bad value. Unknown keys are not errors (old files carry keys upstream ignores): they
//! are returned as [`ConfigWarning`]s for the caller to log.

use crate::selectors::{FunctionFilter, PfNameSelector, Selectors, parse_link_type};
use rdma_hca::{MELLANOX_VENDOR, PciAddress};
use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the daemon looks for its config by default (sriov-network-device-plugin's path).
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pcidp/config.json";
/// Default `resourcePrefix` of sriov-network-device-plugin resources.
pub const SRIOVDP_DEFAULT_PREFIX: &str = "intel.com";
/// Default `resourcePrefix` of k8s-rdma-shared-dev-plugin resources.
pub const RDMA_SHARED_DEFAULT_PREFIX: &str = "rdma";
/// Default number of virtual IDs of a shared HCA resource.
pub const DEFAULT_RDMA_HCA_MAX: u32 = 1000;

/// A config error. Every variant names the file; validation errors name the JSON path
/// and the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config {file}: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{file}: invalid JSON at line {line} column {column}: {message}")]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The top level has none of the keys that identify a known format.
    #[error(
        "{file}: unknown config format: expected a top-level \"resourceList\" \
         (sriov-network-device-plugin), \"configList\" (k8s-rdma-shared-dev-plugin) or \
         \"mode\" (k8s-rdma-sriov-dev-plugin); found keys {keys:?}"
    )]
    UnknownFormat {
        /// The config file.
        file: PathBuf,
        /// The top-level keys found.
        keys: Vec<String>,
    },
    /// A value is of the wrong type or out of range.
    #[error("{file}: {path}: {value} {reason}")]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// JSON path of the value, e.g. `resourceList[1].resourceName`.
        path: String,
        /// The value as JSON text (`null` when missing).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two resources have the same full name.
    #[error("{file}: {path}: duplicate resource name {name:?} (already defined at {first})")]
    Duplicate {
        /// The config file.
        file: PathBuf,
        /// JSON path of the second definition.
        path: String,
        /// The full resource name (`prefix/name`).
        name: String,
        /// JSON path of the first definition.
        first: String,
    },
}

/// A key the loader ignored, to be logged as a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// JSON path of the key.
    pub path: String,
    /// Why it is ignored.
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Which format a config was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    /// sriov-network-device-plugin `resourceList`.
    SriovDp,
    /// k8s-rdma-shared-dev-plugin `configList`.
    RdmaShared,
    /// k8s-rdma-sriov-dev-plugin `{"mode":"hca"}`.
    RdmaSriovHca,
    /// k8s-rdma-sriov-dev-plugin `{"mode":"sriov"}`.
    RdmaSriovSriov,
    /// No file: the embedded default.
    Embedded,
}

/// `deviceType` of a VF pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// `netDevice`: network-class functions (bound to a netdev driver or to vfio-pci).
    NetDevice,
    /// `accelerator`: any PCI function.
    Accelerator,
}

/// How [`crate::preferred`] picks VFs within one NUMA node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AllocationPolicy {
    /// One VF per PF before two on one (the default).
    #[default]
    Spread,
    /// Fill one PF before the next (`"allocationPolicy": "pack"`).
    Pack,
}

/// What kind of resource, with its kind-specific settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceKind {
    /// N virtual IDs standing for the same set of RDMA devices.
    SharedHca {
        /// Number of IDs (`rdmaHcaMax`).
        max: u32,
        /// Which functions' RDMA devices it shares.
        selectors: Selectors,
    },
    /// One device per matching function, ID = PCI address.
    VfPool {
        /// `deviceType`.
        device_type: DeviceType,
        /// `excludeTopology`: advertise no NUMA topology.
        exclude_topology: bool,
        /// Selector sets; a function matches if any set does.
        selectors: Vec<Selectors>,
        /// Whether Allocate mounts the RDMA char devices (`isRdma`).
        mount_rdma: bool,
        /// Whether Allocate mounts `/dev/vhost-net` and `/dev/net/tun` (`needVhostNet`).
        mount_vhost_net: bool,
        /// `allocationPolicy` (our extension): spread or pack across PFs.
        policy: AllocationPolicy,
    },
}

/// One resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    /// `resourcePrefix`, e.g. `intel.com`.
    pub prefix: String,
    /// `resourceName`, e.g. `cx_vf`.
    pub name: String,
    /// Where in the file it was defined (`resourceList[0]`), or `<embedded>`.
    pub json_path: String,
    /// Kind and settings.
    pub kind: ResourceKind,
}

impl ResourceConfig {
    /// `prefix/name`, as kubelet knows it.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.prefix, self.name)
    }

    /// Whether this is a VF pool.
    pub fn is_pool(&self) -> bool {
        matches!(self.kind, ResourceKind::VfPool { .. })
    }
}

/// A loaded, validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The format it was read from.
    pub format: ConfigFormat,
    /// The file (`None` for the embedded default).
    pub source: Option<PathBuf>,
    /// The resources, in file order.
    pub resources: Vec<ResourceConfig>,
    /// `periodicUpdateInterval` (rdma-shared); `Some(ZERO)` = off, `None` = not set.
    pub periodic_update_interval: Option<Duration>,
    /// Keys that were ignored.
    pub warnings: Vec<ConfigWarning>,
}

impl Config {
    /// The embedded default: `rdma/hca` over every Mellanox PF with an RDMA device, and
    /// `rdma/vhca`, a pool of every Mellanox VF with a netdev (the resource names of
    /// Mellanox's k8s-rdma-sriov-dev-plugin hca and sriov modes).
    pub fn embedded() -> Config {
        Config {
            format: ConfigFormat::Embedded,
            source: None,
            resources: vec![
                hca_mode_resource("<embedded>"),
                vhca_resource("<embedded>", vec![]),
            ],
            periodic_update_interval: None,
            warnings: vec![],
        }
    }

    /// Load `file`; a missing file gives the embedded default.
    pub fn load_or_default(file: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(file) {
            Ok(text) => Config::parse(file, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::embedded()),
            Err(source) => Err(ConfigError::Read {
                file: file.to_path_buf(),
                source,
            }),
        }
    }

    /// Load `file`, which must exist.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Config::parse(file, &text)
    }

    /// Parse `text` read from `file` (used in messages).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        // Pass 1 checks the syntax and splits the top level; the format is chosen by its
        // keys, so each top-level value is typed (pass 2) only once the format is known.
        let top: BTreeMap<String, &RawValue> = match serde_json::from_str(text) {
            Ok(top) => top,
            Err(e) if e.is_data() => {
                let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                return Err(invalid(file, "$", &v, "must be an object"));
            }
            Err(e) => {
                return Err(ConfigError::Syntax {
                    file: file.to_path_buf(),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                });
            }
        };
        let mut p = Parser {
            file,
            warnings: Vec::new(),
        };
        let (format, resources, interval) = if let Some(list) = top.get("resourceList") {
            p.known_keys(&top, &["resourceList"]);
            let list: Vec<Obj<SriovDpResource>> = p.typed("resourceList", list)?;
            (ConfigFormat::SriovDp, p.sriovdp(list)?, None)
        } else if let Some(list) = top.get("configList") {
            p.known_keys(
                &top,
                &["configList", "periodicUpdateInterval", "kubeletRootDir"],
            );
            let interval = match top.get("periodicUpdateInterval") {
                None => None,
                Some(v) => Some(Duration::from_secs(p.typed("periodicUpdateInterval", v)?)),
            };
            if let Some(v) = top.get("kubeletRootDir") {
                p.typed::<String>("kubeletRootDir", v)?;
            }
            let list: Vec<Obj<SharedResource>> = p.typed("configList", list)?;
            (ConfigFormat::RdmaShared, p.rdma_shared(list)?, interval)
        } else if let Some(mode) = top.get("mode") {
            p.known_keys(&top, &["mode", "pfNetdevices"]);
            let (f, r) = p.rdma_sriov(mode, top.get("pfNetdevices").copied())?;
            (f, r, None)
        } else {
            return Err(ConfigError::UnknownFormat {
                file: file.to_path_buf(),
                keys: top.into_keys().collect(),
            });
        };
        // duplicate full names are an error across the whole file
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for r in &resources {
            let full = r.full_name();
            if let Some(first) = seen.get(&full) {
                return Err(ConfigError::Duplicate {
                    file: file.to_path_buf(),
                    path: format!("{}.resourceName", r.json_path),
                    name: full,
                    first: (*first).to_string(),
                });
            }
            seen.insert(full, &r.json_path);
        }
        Ok(Config {
            format,
            source: Some(file.to_path_buf()),
            resources,
            periodic_update_interval: interval,
            warnings: p.warnings,
        })
    }
}

fn hca_mode_resource(path: &str) -> ResourceConfig {
    ResourceConfig {
        prefix: "rdma".into(),
        name: "hca".into(),
        json_path: path.into(),
        kind: ResourceKind::SharedHca {
            max: DEFAULT_RDMA_HCA_MAX,
            selectors: Selectors {
                vendors: vec![MELLANOX_VENDOR.into()],
                is_rdma: true,
                functions: FunctionFilter::PfOnly,
                ..Default::default()
            },
        },
    }
}

fn vhca_resource(path: &str, pf_names: Vec<PfNameSelector>) -> ResourceConfig {
    ResourceConfig {
        prefix: "rdma".into(),
        name: "vhca".into(),
        json_path: path.into(),
        kind: ResourceKind::VfPool {
            device_type: DeviceType::NetDevice,
            exclude_topology: false,
            selectors: vec![Selectors {
                vendors: vec![MELLANOX_VENDOR.into()],
                pf_names,
                need_netdev: true,
                functions: FunctionFilter::VfOnly,
                ..Default::default()
            }],
            mount_rdma: true,
            mount_vhost_net: false,
            policy: AllocationPolicy::Spread,
        },
    }
}

/// `^[a-zA-Z0-9_-]+$`
fn valid_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// A DNS subdomain (RFC 1123), as kubelet requires of an extended resource prefix.
fn valid_prefix(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn hex_id(s: &str) -> bool {
    s.len() == 4 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

// ---------------------------------------------------------------- the formats, typed
//
// Each format is a set of serde types; `Parser::typed` deserialises one top-level value
// into them through `serde_ignored` (unknown keys become warnings) and
// `serde_path_to_error` (a type error names its JSON path). The checks serde cannot
// express (names, hex ids, PCI addresses, ranges) are the `validate` steps below, each
// naming the path it checks. Fields whose `null` upstream rejects are read with
// [`present`], so `null` stays a type error rather than "not set".

/// `Some(T)`: the key is there, and `null` is not a `T`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A JSON object only: serde's derived structs also take an array of the fields in order,
/// which no upstream format means.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// sriov-network-device-plugin: one `resourceList` entry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SriovDpResource {
    resource_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    resource_prefix: Option<String>,
    #[serde(default, deserialize_with = "present")]
    device_type: Option<DeviceTypeKey>,
    #[serde(default)]
    exclude_topology: bool,
    #[serde(default, deserialize_with = "present")]
    allocation_policy: Option<PolicyKey>,
    #[serde(default, deserialize_with = "present")]
    selectors: Option<OneOrMany>,
}

#[derive(Deserialize)]
enum DeviceTypeKey {
    #[serde(rename = "netDevice")]
    NetDevice,
    #[serde(rename = "accelerator")]
    Accelerator,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum PolicyKey {
    Spread,
    Pack,
}

/// `selectors`: one selector object or a list of them.
enum OneOrMany {
    One(SriovDpSelectors),
    Many(Vec<Obj<SriovDpSelectors>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a selector object or a list of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany, A::Error> {
                SriovDpSelectors::deserialize(MapAccessDeserializer::new(map)).map(OneOrMany::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element()? {
                    out.push(s);
                }
                Ok(OneOrMany::Many(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// sriov-network-device-plugin: one selector set.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SriovDpSelectors {
    #[serde(default)]
    vendors: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    drivers: Vec<String>,
    #[serde(default)]
    pci_addresses: Vec<String>,
    #[serde(default)]
    pf_names: Vec<String>,
    #[serde(default)]
    root_devices: Vec<String>,
    #[serde(default)]
    link_types: Vec<String>,
    #[serde(default)]
    is_rdma: bool,
    #[serde(default)]
    need_vhost_net: bool,
}

/// k8s-rdma-shared-dev-plugin: one `configList` entry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SharedResource {
    resource_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    resource_prefix: Option<String>,
    #[serde(default, deserialize_with = "present")]
    rdma_hca_max: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    devices: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    selectors: Option<Obj<SharedSelectors>>,
}

/// k8s-rdma-shared-dev-plugin: its one selector set.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SharedSelectors {
    #[serde(default)]
    vendors: Vec<String>,
    #[serde(default, rename = "deviceIDs")]
    device_ids: Vec<String>,
    #[serde(default)]
    drivers: Vec<String>,
    #[serde(default)]
    if_names: Vec<String>,
    #[serde(default)]
    link_types: Vec<String>,
}

/// Keys upstream knows that this plugin does not act on: a warning of their own.
const UNSUPPORTED: [&str; 6] = [
    "additionalInfo",
    "ddpProfiles",
    "vdpaType",
    "pKeys",
    "acpiIndexes",
    "auxTypes",
];

/// The reason a type error at a key gives, where "must be a string" says too little.
fn key_reason(key: &str) -> Option<&'static str> {
    Some(match key {
        "isRdma" | "needVhostNet" | "excludeTopology" => "must be true or false",
        "deviceType" => "must be \"netDevice\" or \"accelerator\"",
        "allocationPolicy" => "must be \"spread\" or \"pack\"",
        "periodicUpdateInterval" => "must be a non-negative number of seconds",
        "rdmaHcaMax" => "must be a positive integer",
        "mode" => "must be \"hca\" or \"sriov\"",
        _ => return None,
    })
}

/// The reason for serde's `invalid type: ..., expected X` in this file's words.
fn type_reason(message: &str) -> String {
    let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
    match message.rsplit_once(", expected ").map(|(_, e)| e) {
        Some("a string") => "must be a string".into(),
        Some("a sequence") => "must be an array".into(),
        Some(e) if e.starts_with("struct ") || e == "a map" || e.starts_with("a selector") => {
            "must be an object".into()
        }
        _ => message.to_string(),
    }
}

/// One step of a JSON path, as both path crates report them.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `resourceList[1].selectors.vendors[0]`.
fn render(top: &str, steps: &[Step<'_>]) -> String {
    let mut s = top.to_string();
    for step in steps {
        match step {
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

/// serde_ignored's path as steps (its `Some`/newtype layers say nothing to a reader).
fn ignored_steps<'a>(path: &'a serde_ignored::Path<'a>, out: &mut Vec<Step<'a>>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            ignored_steps(parent, out);
            out.push(Step::Index(*index));
        }
        Path::Map { parent, key } => {
            ignored_steps(parent, out);
            out.push(Step::Key(key));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_steps(parent, out),
    }
}

fn invalid(file: &Path, path: &str, value: &Value, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        path: if path.is_empty() {
            "$".into()
        } else {
            path.into()
        },
        value: serde_json::to_string(value).unwrap_or_else(|_| "?".into()),
        reason: reason.into(),
    }
}

struct Parser<'a> {
    file: &'a Path,
    warnings: Vec<ConfigWarning>,
}

impl Parser<'_> {
    fn invalid(&self, path: &str, value: &Value, reason: impl Into<String>) -> ConfigError {
        invalid(self.file, path, value, reason)
    }

    /// A string-valued error: the value is the (valid) string itself.
    fn bad_str(&self, path: &str, s: &str, reason: impl Into<String>) -> ConfigError {
        self.invalid(path, &Value::String(s.to_string()), reason)
    }

    /// Warns about the top-level keys this format does not know.
    fn known_keys(&mut self, top: &BTreeMap<String, &RawValue>, known: &[&str]) {
        for k in top.keys() {
            if !known.contains(&k.as_str()) {
                self.warnings.push(ConfigWarning {
                    path: k.clone(),
                    message: "unknown key, ignored".into(),
                });
            }
        }
    }

    /// Deserialises the top-level value `raw` of key `top` into `T`: unknown keys below
    /// it become warnings, a type error an [`ConfigError::Invalid`] naming its path.
    fn typed<'de, T: Deserialize<'de>>(
        &mut self,
        top: &str,
        raw: &'de RawValue,
    ) -> Result<T, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(raw.get());
        let warnings = &mut self.warnings;
        let mut track = |path: serde_ignored::Path<'_>| {
            let mut steps = Vec::new();
            ignored_steps(&path, &mut steps);
            let unsupported = matches!(steps.last(), Some(Step::Key(k)) if UNSUPPORTED.contains(k));
            warnings.push(ConfigWarning {
                path: render(top, &steps),
                message: if unsupported {
                    "not supported by this plugin, ignored"
                } else {
                    "unknown key, ignored"
                }
                .into(),
            });
        };
        let tracked = serde_ignored::Deserializer::new(&mut de, &mut track);
        serde_path_to_error::deserialize(tracked).map_err(|e| {
            // the error path: find the value it names to quote it
            let mut steps = Vec::new();
            for seg in e.path().iter() {
                match seg {
                    serde_path_to_error::Segment::Seq { index } => steps.push(Step::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => steps.push(Step::Key(key)),
                    serde_path_to_error::Segment::Enum { .. }
                    | serde_path_to_error::Segment::Unknown => {}
                }
            }
            let whole: Value = serde_json::from_str(raw.get()).unwrap_or(Value::Null);
            let mut at = &whole;
            for step in &steps {
                at = match step {
                    Step::Key(k) => at.get(k),
                    Step::Index(i) => at.get(i),
                }
                .unwrap_or(&Value::Null);
            }
            let key = match steps.last() {
                Some(Step::Key(k)) => *k,
                Some(Step::Index(_)) => "",
                None => top,
            };
            let reason =
                key_reason(key).map_or_else(|| type_reason(&e.inner().to_string()), str::to_string);
            self.invalid(&render(top, &steps), at, reason)
        })
    }

    /// Each string of the list at `path` checked by `check` (which gives the reason).
    fn each<T>(
        &self,
        path: &str,
        list: &[String],
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, s)| {
                check(s).map_err(|reason| self.bad_str(&format!("{path}[{i}]"), s, reason))
            })
            .collect()
    }

    /// `resourceName` (required) and `resourcePrefix` (`default_prefix` when absent).
    fn name_and_prefix(
        &self,
        path: &str,
        name: Option<String>,
        prefix: Option<String>,
        default_prefix: &str,
    ) -> Result<(String, String), ConfigError> {
        let np = format!("{path}.resourceName");
        let Some(name) = name else {
            return Err(self.invalid(&np, &Value::Null, "is required"));
        };
        if !valid_resource_name(&name) {
            return Err(self.bad_str(&np, &name, "must match ^[a-zA-Z0-9_-]+$"));
        }
        let prefix = match prefix {
            None => default_prefix.to_string(),
            Some(p) if valid_prefix(&p) => p,
            Some(p) => {
                return Err(self.bad_str(
                    &format!("{path}.resourcePrefix"),
                    &p,
                    "must be a DNS subdomain (lower-case letters, digits, '-' and '.')",
                ));
            }
        };
        Ok((name, prefix))
    }

    /// `vendors`, `drivers`, `linkTypes`: the keys both upstream formats share.
    fn common_selectors(
        &self,
        path: &str,
        vendors: &[String],
        drivers: &[String],
        link_types: &[String],
    ) -> Result<Selectors, ConfigError> {
        Ok(Selectors {
            vendors: self.each(&format!("{path}.vendors"), vendors, check_hex)?,
            drivers: self.each(&format!("{path}.drivers"), drivers, |s| {
                if s.is_empty() {
                    Err("must not be empty".into())
                } else {
                    Ok(s.to_string())
                }
            })?,
            link_types: self.each(&format!("{path}.linkTypes"), link_types, |s| {
                parse_link_type(s).ok_or_else(|| {
                    "must be \"ether\", \"infiniband\" or an ARPHRD number".to_string()
                })
            })?,
            ..Default::default()
        })
    }

    fn sriovdp(&self, list: Vec<Obj<SriovDpResource>>) -> Result<Vec<ResourceConfig>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, Obj(r)) in list.into_iter().enumerate() {
            let path = format!("resourceList[{i}]");
            let (name, prefix) = self.name_and_prefix(
                &path,
                r.resource_name,
                r.resource_prefix,
                SRIOVDP_DEFAULT_PREFIX,
            )?;
            let device_type = match r.device_type {
                None | Some(DeviceTypeKey::NetDevice) => DeviceType::NetDevice,
                Some(DeviceTypeKey::Accelerator) => DeviceType::Accelerator,
            };
            let policy = match r.allocation_policy {
                None | Some(PolicyKey::Spread) => AllocationPolicy::Spread,
                Some(PolicyKey::Pack) => AllocationPolicy::Pack,
            };
            let selectors = match &r.selectors {
                None => Vec::new(),
                Some(OneOrMany::One(s)) => {
                    vec![self.sriovdp_selectors(&format!("{path}.selectors"), s)?]
                }
                Some(OneOrMany::Many(sets)) => {
                    let mut v = Vec::with_capacity(sets.len());
                    for (j, Obj(s)) in sets.iter().enumerate() {
                        v.push(self.sriovdp_selectors(&format!("{path}.selectors[{j}]"), s)?);
                    }
                    v
                }
            };
            let mount_rdma = selectors.iter().any(|s| s.is_rdma);
            let mount_vhost_net = selectors.iter().any(|s| s.need_vhost_net);
            out.push(ResourceConfig {
                prefix,
                name,
                json_path: path,
                kind: ResourceKind::VfPool {
                    device_type,
                    exclude_topology: r.exclude_topology,
                    selectors,
                    mount_rdma,
                    mount_vhost_net,
                    policy,
                },
            });
        }
        Ok(out)
    }

    fn sriovdp_selectors(
        &self,
        path: &str,
        s: &SriovDpSelectors,
    ) -> Result<Selectors, ConfigError> {
        let common = self.common_selectors(path, &s.vendors, &s.drivers, &s.link_types)?;
        Ok(Selectors {
            pci_addresses: self.each(
                &format!("{path}.pciAddresses"),
                &s.pci_addresses,
                parse_pci,
            )?,
            pf_names: self.each(&format!("{path}.pfNames"), &s.pf_names, |n| n.parse())?,
            root_devices: self.each(&format!("{path}.rootDevices"), &s.root_devices, parse_pci)?,
            is_rdma: s.is_rdma,
            need_vhost_net: s.need_vhost_net,
            devices: self.each(&format!("{path}.devices"), &s.devices, check_hex)?,
            // netDevice pools take network-class functions only: pools.rs checks the class
            ..common
        })
    }

    fn rdma_shared(
        &self,
        list: Vec<Obj<SharedResource>>,
    ) -> Result<Vec<ResourceConfig>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, Obj(r)) in list.into_iter().enumerate() {
            let path = format!("configList[{i}]");
            let (name, prefix) = self.name_and_prefix(
                &path,
                r.resource_name,
                r.resource_prefix,
                RDMA_SHARED_DEFAULT_PREFIX,
            )?;
            let max = match r.rdma_hca_max {
                None => DEFAULT_RDMA_HCA_MAX,
                Some(0) => {
                    return Err(self.invalid(
                        &format!("{path}.rdmaHcaMax"),
                        &Value::from(0),
                        "must be a positive integer",
                    ));
                }
                Some(n) => n,
            };
            if r.selectors.is_none() && r.devices.is_none() {
                return Err(self.invalid(
                    &format!("{path}.selectors"),
                    &Value::Null,
                    "is required (or the old \"devices\" list)",
                ));
            }
            let mut sel = match &r.selectors {
                None => Selectors::default(),
                Some(Obj(s)) => {
                    let sp = format!("{path}.selectors");
                    Selectors {
                        devices: self.each(&format!("{sp}.deviceIDs"), &s.device_ids, check_hex)?,
                        if_names: s.if_names.clone(),
                        ..self.common_selectors(&sp, &s.vendors, &s.drivers, &s.link_types)?
                    }
                }
            };
            sel.if_names.extend(r.devices.unwrap_or_default());
            sel.is_rdma = true;
            out.push(ResourceConfig {
                prefix,
                name,
                json_path: path,
                kind: ResourceKind::SharedHca {
                    max,
                    selectors: sel,
                },
            });
        }
        Ok(out)
    }

    fn rdma_sriov(
        &mut self,
        mode: &RawValue,
        pf_netdevices: Option<&RawValue>,
    ) -> Result<(ConfigFormat, Vec<ResourceConfig>), ConfigError> {
        let m: String = self.typed("mode", mode)?;
        match m.as_str() {
            "hca" => {
                if pf_netdevices.is_some() {
                    self.warnings.push(ConfigWarning {
                        path: "pfNetdevices".into(),
                        message: "only used in \"sriov\" mode, ignored".into(),
                    });
                }
                Ok((ConfigFormat::RdmaSriovHca, vec![hca_mode_resource("$")]))
            }
            "sriov" => {
                let names: Vec<String> = match pf_netdevices {
                    None => Vec::new(),
                    Some(raw) => self.typed("pfNetdevices", raw)?,
                };
                let pfs = self.each("pfNetdevices", &names, |s| {
                    if s.is_empty() || s.contains('#') || s.contains('/') {
                        Err("must be a netdev name".to_string())
                    } else {
                        s.parse::<PfNameSelector>()
                    }
                })?;
                if pfs.is_empty() {
                    let v = if pf_netdevices.is_some() {
                        Value::Array(vec![])
                    } else {
                        Value::Null
                    };
                    return Err(self.invalid(
                        "pfNetdevices",
                        &v,
                        "must list at least one PF netdev in \"sriov\" mode",
                    ));
                }
                Ok((ConfigFormat::RdmaSriovSriov, vec![vhca_resource("$", pfs)]))
            }
            _ => Err(self.bad_str("mode", &m, "must be \"hca\" or \"sriov\"")),
        }
    }
}

fn parse_pci(s: &str) -> Result<PciAddress, String> {
    s.parse::<PciAddress>()
        .map_err(|_| "must be a PCI address dddd:bb:dd.f".to_string())
}

fn check_hex(s: &str) -> Result<String, String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    if hex_id(h) {
        Ok(h.to_ascii_lowercase())
    } else {
        Err("must be a 4-digit hex id".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/pcidp/config.json"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn sriovdp_format_with_defaults_and_selectors() {
        let c = parse(
            r#"{"resourceList":[
              {"resourceName":"cx_vf","selectors":{"vendors":["15b3"],"devices":["101e"],
                "drivers":["mlx5_core"],"pfNames":["ens1f0#0,2-7"],"isRdma":true,
                "linkTypes":["ether"],"rootDevices":["0000:3b:00.0"],"pciAddresses":["3b:00.2"]}},
              {"resourceName":"vfio","resourcePrefix":"nvidia.com","deviceType":"accelerator",
               "excludeTopology":true,"allocationPolicy":"pack",
               "selectors":[{"drivers":["vfio-pci"]},{"devices":["1018"]}]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(c.format, ConfigFormat::SriovDp);
        assert!(c.warnings.is_empty());
        assert_eq!(c.resources[0].full_name(), "intel.com/cx_vf");
        let ResourceKind::VfPool {
            selectors,
            mount_rdma,
            device_type,
            ..
        } = &c.resources[0].kind
        else {
            panic!("not a pool")
        };
        assert!(*mount_rdma);
        assert_eq!(*device_type, DeviceType::NetDevice);
        assert_eq!(selectors.len(), 1);
        assert_eq!(selectors[0].pf_names[0].to_string(), "ens1f0#0,2-7");
        assert_eq!(selectors[0].pci_addresses[0].as_str(), "0000:3b:00.2");
        assert_eq!(c.resources[1].full_name(), "nvidia.com/vfio");
        let ResourceKind::VfPool {
            selectors,
            device_type,
            exclude_topology,
            policy,
            ..
        } = &c.resources[1].kind
        else {
            panic!("not a pool")
        };
        assert_eq!(selectors.len(), 2);
        assert_eq!(*device_type, DeviceType::Accelerator);
        assert!(*exclude_topology);
        assert_eq!(*policy, AllocationPolicy::Pack);
    }

    #[test]
    fn unknown_keys_are_warnings_naming_the_path() {
        let c = parse(
            r#"{"resourceList":[{"resourceName":"a","selectors":{"ifnames":["x"],"pKeys":["0x1"]},
               "rogue":1}],"extra":true}"#,
        )
        .unwrap();
        let paths: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
        assert!(paths.contains(&"extra"), "{paths:?}");
        assert!(paths.contains(&"resourceList[0].rogue"), "{paths:?}");
        assert!(
            paths.contains(&"resourceList[0].selectors.ifnames"),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"resourceList[0].selectors.pKeys"),
            "{paths:?}"
        );
    }

    #[test]
    fn arrays_are_not_objects_and_unsupported_keys_say_so() {
        // serde's derived structs would take `[]` for an object; no upstream format does
        for (text, want) in [
            (
                r#"{"resourceList":[[]]}"#,
                "resourceList[0]: [] must be an object",
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","selectors":[[]]}]}"#,
                "resourceList[0].selectors[0]: [] must be an object",
            ),
            (
                r#"{"configList":[{"resourceName":"a","selectors":[]}]}"#,
                "configList[0].selectors: [] must be an object",
            ),
        ] {
            let e = err(text);
            assert!(e.ends_with(want), "error {e:?} lacks {want:?}");
        }
        let c = parse(
            r#"{"resourceList":[{"resourceName":"a","additionalInfo":{},"selectors":{"pKeys":[]}}]}"#,
        )
        .unwrap();
        let got: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "resourceList[0].additionalInfo: not supported by this plugin, ignored",
                "resourceList[0].selectors.pKeys: not supported by this plugin, ignored",
            ]
        );
    }

    #[test]
    fn rdma_shared_format() {
        let c = parse(
            r#"{"periodicUpdateInterval":300,"configList":[
              {"resourceName":"hca_shared_devices_a","rdmaHcaMax":1000,
               "selectors":{"vendors":["15b3"],"deviceIDs":["101d"],"ifNames":["ens1f0"],"linkTypes":["ether"]}},
              {"resourceName":"hca_b","resourcePrefix":"example.com","devices":["ib0","ib1"]}]}"#,
        )
        .unwrap();
        assert_eq!(c.format, ConfigFormat::RdmaShared);
        assert_eq!(c.periodic_update_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.resources[0].full_name(), "rdma/hca_shared_devices_a");
        assert_eq!(c.resources[1].full_name(), "example.com/hca_b");
        let ResourceKind::SharedHca { max, selectors } = &c.resources[1].kind else {
            panic!("not shared")
        };
        assert_eq!(*max, DEFAULT_RDMA_HCA_MAX);
        assert_eq!(selectors.if_names, vec!["ib0", "ib1"]);
    }

    #[test]
    fn rdma_sriov_formats() {
        let c = parse(r#"{"mode":"hca"}"#).unwrap();
        assert_eq!(c.format, ConfigFormat::RdmaSriovHca);
        assert_eq!(c.resources.len(), 1);
        assert_eq!(c.resources[0].full_name(), "rdma/hca");
        let c = parse(r#"{"mode":"sriov","pfNetdevices":["ens1f0","ens1f1"]}"#).unwrap();
        assert_eq!(c.format, ConfigFormat::RdmaSriovSriov);
        assert_eq!(c.resources[0].full_name(), "rdma/vhca");
        let ResourceKind::VfPool { selectors, .. } = &c.resources[0].kind else {
            panic!("not a pool")
        };
        assert_eq!(selectors[0].pf_names.len(), 2);
    }

    #[test]
    fn embedded_default() {
        let c = Config::embedded();
        let names: Vec<String> = c.resources.iter().map(|r| r.full_name()).collect();
        assert_eq!(names, vec!["rdma/hca", "rdma/vhca"]);
        let dir = crate::testutil::tempdir();
        let c2 = Config::load_or_default(&dir.path().join("absent.json")).unwrap();
        assert_eq!(c2, c);
        assert!(Config::load(&dir.path().join("absent.json")).is_err());
    }

    #[test]
    fn validation_errors_name_file_path_and_value() {
        let cases = [
            (
                r#"{"resourceList":[{"resourceName":"ok"},{"resourceName":"a/b"}]}"#,
                r#"/etc/pcidp/config.json: resourceList[1].resourceName: "a/b" must match ^[a-zA-Z0-9_-]+$"#,
            ),
            (
                r#"{"resourceList":[{"resourcePrefix":"x"}]}"#,
                "resourceList[0].resourceName: null is required",
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","resourcePrefix":"Bad_Prefix"}]}"#,
                r#"resourceList[0].resourcePrefix: "Bad_Prefix" must be a DNS subdomain"#,
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","deviceType":"vdpa"}]}"#,
                r#"resourceList[0].deviceType: "vdpa" must be"#,
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","selectors":{"vendors":["15b3","xyz"]}}]}"#,
                r#"resourceList[0].selectors.vendors[1]: "xyz" must be a 4-digit hex id"#,
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","selectors":[{},{"pfNames":["ens1f0#5-2"]}]}]}"#,
                r#"resourceList[0].selectors[1].pfNames[0]: "ens1f0#5-2" has a VF range"#,
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","selectors":{"pciAddresses":["0000:zz:00.0"]}}]}"#,
                r#"resourceList[0].selectors.pciAddresses[0]: "0000:zz:00.0" must be a PCI address"#,
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","selectors":{"isRdma":"yes"}}]}"#,
                r#"resourceList[0].selectors.isRdma: "yes" must be true or false"#,
            ),
            (
                r#"{"resourceList":[{"resourceName":"a","selectors":{"linkTypes":["token-ring"]}}]}"#,
                r#"resourceList[0].selectors.linkTypes[0]: "token-ring" must be"#,
            ),
            (
                r#"{"resourceList":{"resourceName":"a"}}"#,
                "resourceList: {\"resourceName\":\"a\"} must be an array",
            ),
            (
                r#"{"configList":[{"resourceName":"a","rdmaHcaMax":-1,"devices":["ib0"]}]}"#,
                "configList[0].rdmaHcaMax: -1 must be a positive integer",
            ),
            (
                r#"{"configList":[{"resourceName":"a"}]}"#,
                "configList[0].selectors: null is required",
            ),
            (
                r#"{"periodicUpdateInterval":"5m","configList":[]}"#,
                r#"periodicUpdateInterval: "5m" must be a non-negative number"#,
            ),
            (
                r#"{"mode":"vhca"}"#,
                r#"mode: "vhca" must be "hca" or "sriov""#,
            ),
            (
                r#"{"mode":"sriov"}"#,
                "pfNetdevices: null must list at least one PF netdev",
            ),
            (
                r#"{"mode":"sriov","pfNetdevices":["ens1f0",7]}"#,
                "pfNetdevices[1]: 7 must be a string",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "error {e:?} lacks {want:?}");
            assert!(e.starts_with("/etc/pcidp/config.json: "), "{e}");
        }
    }

    #[test]
    fn duplicates_syntax_and_unknown_format() {
        let e = err(
            r#"{"resourceList":[{"resourceName":"a"},{"resourceName":"b"},{"resourceName":"a","resourcePrefix":"intel.com"}]}"#,
        );
        assert!(
            e.contains("resourceList[2].resourceName: duplicate resource name \"intel.com/a\" (already defined at resourceList[0])"),
            "{e}"
        );
        // same name with another prefix is fine
        assert!(parse(r#"{"resourceList":[{"resourceName":"a"},{"resourceName":"a","resourcePrefix":"x.io"}]}"#).is_ok());
        let e = err("{\"resourceList\": [\n  {\"resourceName\": }\n]}");
        assert!(e.contains("invalid JSON at line 2"), "{e}");
        let e = err(r#"{"devices":[]}"#);
        assert!(
            e.contains("unknown config format") && e.contains("devices"),
            "{e}"
        );
        let e = err("[1]");
        assert!(e.contains("$: [1] must be an object"), "{e}");
    }
}
