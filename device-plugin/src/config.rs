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
use serde_json::{Map, Value};
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
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let mut p = Parser {
            file,
            warnings: Vec::new(),
        };
        let top = p.object(&v, "$")?;
        let (format, resources, interval) = if top.contains_key("resourceList") {
            p.known_keys(top, "", &["resourceList"]);
            (ConfigFormat::SriovDp, p.sriovdp(top)?, None)
        } else if top.contains_key("configList") {
            p.known_keys(
                top,
                "",
                &["configList", "periodicUpdateInterval", "kubeletRootDir"],
            );
            let (r, i) = p.rdma_shared(top)?;
            (ConfigFormat::RdmaShared, r, i)
        } else if top.contains_key("mode") {
            p.known_keys(top, "", &["mode", "pfNetdevices"]);
            let (f, r) = p.rdma_sriov(top)?;
            (f, r, None)
        } else {
            return Err(ConfigError::UnknownFormat {
                file: file.to_path_buf(),
                keys: top.keys().cloned().collect(),
            });
        };
        // duplicate full names are an error across the whole file
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for r in &resources {
            if let Some(first) = seen.get(&r.full_name()) {
                return Err(ConfigError::Duplicate {
                    file: file.to_path_buf(),
                    path: format!("{}.resourceName", r.json_path),
                    name: r.full_name(),
                    first: first.clone(),
                });
            }
            seen.insert(r.full_name(), r.json_path.clone());
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

struct Parser<'a> {
    file: &'a Path,
    warnings: Vec<ConfigWarning>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() || path == "$" {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Parser<'_> {
    fn invalid(&self, path: &str, value: &Value, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            path: if path.is_empty() {
                "$".into()
            } else {
                path.into()
            },
            value: serde_json::to_string(value).unwrap_or_else(|_| "?".into()),
            reason: reason.into(),
        }
    }

    fn object<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ConfigError> {
        v.as_object()
            .ok_or_else(|| self.invalid(path, v, "must be an object"))
    }

    fn array<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Vec<Value>, ConfigError> {
        v.as_array()
            .ok_or_else(|| self.invalid(path, v, "must be an array"))
    }

    fn known_keys(&mut self, m: &Map<String, Value>, path: &str, known: &[&str]) {
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                self.warnings.push(ConfigWarning {
                    path: join(path, k),
                    message: "unknown key, ignored".into(),
                });
            }
        }
    }

    fn unsupported(&mut self, m: &Map<String, Value>, path: &str, keys: &[&str]) {
        for k in keys {
            if m.contains_key(*k) {
                self.warnings.push(ConfigWarning {
                    path: join(path, k),
                    message: "not supported by this plugin, ignored".into(),
                });
            }
        }
    }

    fn string(&self, v: &Value, path: &str) -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.invalid(path, v, "must be a string"))
    }

    fn bool(&self, m: &Map<String, Value>, path: &str, key: &str) -> Result<bool, ConfigError> {
        match m.get(key) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(&join(path, key), v, "must be true or false")),
        }
    }

    /// A list of strings, each checked by `check` (which returns the reason on failure).
    fn strings<T>(
        &self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let Some(v) = m.get(key) else {
            return Ok(Vec::new());
        };
        let p = join(path, key);
        let mut out = Vec::new();
        for (i, e) in self.array(v, &p)?.iter().enumerate() {
            let ep = format!("{p}[{i}]");
            let s = self.string(e, &ep)?;
            out.push(check(&s).map_err(|reason| self.invalid(&ep, e, reason))?);
        }
        Ok(out)
    }

    fn name_and_prefix(
        &self,
        m: &Map<String, Value>,
        path: &str,
        default_prefix: &str,
    ) -> Result<(String, String), ConfigError> {
        let np = join(path, "resourceName");
        let nv = m.get("resourceName").unwrap_or(&Value::Null);
        if nv.is_null() {
            return Err(self.invalid(&np, nv, "is required"));
        }
        let name = self.string(nv, &np)?;
        if !valid_resource_name(&name) {
            return Err(self.invalid(&np, nv, "must match ^[a-zA-Z0-9_-]+$"));
        }
        let prefix = match m.get("resourcePrefix") {
            None => default_prefix.to_string(),
            Some(v) => {
                let pp = join(path, "resourcePrefix");
                let p = self.string(v, &pp)?;
                if !valid_prefix(&p) {
                    return Err(self.invalid(
                        &pp,
                        v,
                        "must be a DNS subdomain (lower-case letters, digits, '-' and '.')",
                    ));
                }
                p
            }
        };
        Ok((name, prefix))
    }

    fn sriovdp(&mut self, top: &Map<String, Value>) -> Result<Vec<ResourceConfig>, ConfigError> {
        let list = self.array(&top["resourceList"], "resourceList")?;
        let mut out = Vec::new();
        for (i, rv) in list.iter().enumerate() {
            let path = format!("resourceList[{i}]");
            let m = self.object(rv, &path)?;
            self.known_keys(
                m,
                &path,
                &[
                    "resourceName",
                    "resourcePrefix",
                    "deviceType",
                    "excludeTopology",
                    "selectors",
                    "allocationPolicy",
                    "additionalInfo",
                ],
            );
            self.unsupported(m, &path, &["additionalInfo"]);
            let (name, prefix) = self.name_and_prefix(m, &path, SRIOVDP_DEFAULT_PREFIX)?;
            let device_type = match m.get("deviceType") {
                None => DeviceType::NetDevice,
                Some(v) => match v.as_str() {
                    Some("netDevice") => DeviceType::NetDevice,
                    Some("accelerator") => DeviceType::Accelerator,
                    _ => {
                        return Err(self.invalid(
                            &join(&path, "deviceType"),
                            v,
                            "must be \"netDevice\" or \"accelerator\"",
                        ));
                    }
                },
            };
            let exclude_topology = self.bool(m, &path, "excludeTopology")?;
            let policy = match m.get("allocationPolicy") {
                None => AllocationPolicy::Spread,
                Some(v) => match v.as_str() {
                    Some("spread") => AllocationPolicy::Spread,
                    Some("pack") => AllocationPolicy::Pack,
                    _ => {
                        return Err(self.invalid(
                            &join(&path, "allocationPolicy"),
                            v,
                            "must be \"spread\" or \"pack\"",
                        ));
                    }
                },
            };
            let sp = join(&path, "selectors");
            let sets: Vec<(String, &Value)> = match m.get("selectors") {
                None => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(j, v)| (format!("{sp}[{j}]"), v))
                    .collect(),
                Some(v) => vec![(sp.clone(), v)],
            };
            let mut selectors = Vec::new();
            for (p, v) in sets {
                selectors.push(self.sriovdp_selectors(v, &p)?);
            }
            let mount_rdma = selectors.iter().any(|s| s.is_rdma);
            let mount_vhost_net = selectors.iter().any(|s| s.need_vhost_net);
            out.push(ResourceConfig {
                prefix,
                name,
                json_path: path,
                kind: ResourceKind::VfPool {
                    device_type,
                    exclude_topology,
                    selectors,
                    mount_rdma,
                    mount_vhost_net,
                    policy,
                },
            });
        }
        Ok(out)
    }

    fn sriovdp_selectors(&mut self, v: &Value, path: &str) -> Result<Selectors, ConfigError> {
        let m = self.object(v, path)?;
        let known = [
            "vendors",
            "devices",
            "drivers",
            "pciAddresses",
            "pfNames",
            "rootDevices",
            "linkTypes",
            "isRdma",
            "needVhostNet",
            "ddpProfiles",
            "vdpaType",
            "pKeys",
            "acpiIndexes",
            "auxTypes",
        ];
        self.known_keys(m, path, &known);
        self.unsupported(
            m,
            path,
            &[
                "ddpProfiles",
                "vdpaType",
                "pKeys",
                "acpiIndexes",
                "auxTypes",
            ],
        );
        let s = self.common_selectors(m, path)?;
        Ok(Selectors {
            pci_addresses: self.strings(m, path, "pciAddresses", parse_pci)?,
            pf_names: self.strings(m, path, "pfNames", |s| s.parse())?,
            root_devices: self.strings(m, path, "rootDevices", parse_pci)?,
            is_rdma: self.bool(m, path, "isRdma")?,
            need_vhost_net: self.bool(m, path, "needVhostNet")?,
            devices: self.strings(m, path, "devices", check_hex)?,
            // netDevice pools take network-class functions only: pools.rs checks the class
            ..s
        })
    }

    /// `vendors`, `drivers`, `linkTypes`: the keys both upstream formats share.
    fn common_selectors(
        &self,
        m: &Map<String, Value>,
        path: &str,
    ) -> Result<Selectors, ConfigError> {
        Ok(Selectors {
            vendors: self.strings(m, path, "vendors", check_hex)?,
            drivers: self.strings(m, path, "drivers", |s| {
                if s.is_empty() {
                    Err("must not be empty".into())
                } else {
                    Ok(s.to_string())
                }
            })?,
            link_types: self.strings(m, path, "linkTypes", |s| {
                parse_link_type(s).ok_or_else(|| {
                    "must be \"ether\", \"infiniband\" or an ARPHRD number".to_string()
                })
            })?,
            ..Default::default()
        })
    }

    fn rdma_shared(
        &mut self,
        top: &Map<String, Value>,
    ) -> Result<(Vec<ResourceConfig>, Option<Duration>), ConfigError> {
        let interval = match top.get("periodicUpdateInterval") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(Duration::from_secs(n)),
                None => {
                    return Err(self.invalid(
                        "periodicUpdateInterval",
                        v,
                        "must be a non-negative number of seconds",
                    ));
                }
            },
        };
        if let Some(v) = top.get("kubeletRootDir") {
            self.string(v, "kubeletRootDir")?;
        }
        let list = self.array(&top["configList"], "configList")?;
        let mut out = Vec::new();
        for (i, rv) in list.iter().enumerate() {
            let path = format!("configList[{i}]");
            let m = self.object(rv, &path)?;
            self.known_keys(
                m,
                &path,
                &[
                    "resourceName",
                    "resourcePrefix",
                    "rdmaHcaMax",
                    "devices",
                    "selectors",
                ],
            );
            let (name, prefix) = self.name_and_prefix(m, &path, RDMA_SHARED_DEFAULT_PREFIX)?;
            let max = match m.get("rdmaHcaMax") {
                None => DEFAULT_RDMA_HCA_MAX,
                Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                    Some(n) if n > 0 => n,
                    _ => {
                        return Err(self.invalid(
                            &join(&path, "rdmaHcaMax"),
                            v,
                            "must be a positive integer",
                        ));
                    }
                },
            };
            let devices = self.strings(m, &path, "devices", |s| Ok::<_, String>(s.to_string()))?;
            let mut sel = match m.get("selectors") {
                None => Selectors::default(),
                Some(v) => {
                    let sp = join(&path, "selectors");
                    let sm = self.object(v, &sp)?;
                    self.known_keys(
                        sm,
                        &sp,
                        &["vendors", "deviceIDs", "drivers", "ifNames", "linkTypes"],
                    );
                    Selectors {
                        devices: self.strings(sm, &sp, "deviceIDs", check_hex)?,
                        if_names: self
                            .strings(sm, &sp, "ifNames", |s| Ok::<_, String>(s.to_string()))?,
                        ..self.common_selectors(sm, &sp)?
                    }
                }
            };
            if m.get("selectors").is_none() && m.get("devices").is_none() {
                return Err(self.invalid(
                    &join(&path, "selectors"),
                    &Value::Null,
                    "is required (or the old \"devices\" list)",
                ));
            }
            sel.if_names.extend(devices);
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
        Ok((out, interval))
    }

    fn rdma_sriov(
        &mut self,
        top: &Map<String, Value>,
    ) -> Result<(ConfigFormat, Vec<ResourceConfig>), ConfigError> {
        let mv = &top["mode"];
        match mv.as_str() {
            Some("hca") => {
                if top.contains_key("pfNetdevices") {
                    self.warnings.push(ConfigWarning {
                        path: "pfNetdevices".into(),
                        message: "only used in \"sriov\" mode, ignored".into(),
                    });
                }
                Ok((ConfigFormat::RdmaSriovHca, vec![hca_mode_resource("$")]))
            }
            Some("sriov") => {
                let pfs = self.strings(top, "", "pfNetdevices", |s| {
                    if s.is_empty() || s.contains('#') || s.contains('/') {
                        Err("must be a netdev name".to_string())
                    } else {
                        s.parse::<PfNameSelector>()
                    }
                })?;
                if pfs.is_empty() {
                    let v = top.get("pfNetdevices").unwrap_or(&Value::Null);
                    return Err(self.invalid(
                        "pfNetdevices",
                        v,
                        "must list at least one PF netdev in \"sriov\" mode",
                    ));
                }
                Ok((ConfigFormat::RdmaSriovSriov, vec![vhca_resource("$", pfs)]))
            }
            _ => Err(self.invalid("mode", mv, "must be \"hca\" or \"sriov\"")),
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
