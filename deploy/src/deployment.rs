//! The objects of `deploy/` together, and the facts the tests and the e2e harness read
//! from them: which containers run the daemon, which ConfigMap key each one reads.

use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec};

use device_plugin::config::Config;

use crate::{DEFAULT_CONFIG_FILE, ManifestError, NetworkAttachmentDefinition, Object, load_dir};

/// The program of the daemon containers in the image.
pub const DAEMON_COMMAND: &str = "/usr/bin/device-plugin";

/// Every object of a manifest directory, by kind: one DaemonSet, one ConfigMap, the
/// NetworkAttachmentDefinitions and the example pods.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The node agent.
    pub daemonset: DaemonSet,
    /// Its configuration.
    pub configmap: ConfigMap,
    /// The networks, in file order.
    pub nads: Vec<NetworkAttachmentDefinition>,
    /// The example pods, in file order.
    pub pods: Vec<Pod>,
}

impl Deployment {
    /// Loads (strictly) every manifest in `dir`; exactly one DaemonSet with a pod
    /// template and one ConfigMap with data are expected.
    pub fn load(dir: &Path) -> Result<Deployment, ManifestError> {
        let (mut ds, mut cm, mut nads, mut pods) = (vec![], vec![], vec![], vec![]);
        for d in load_dir(dir)? {
            match d.object {
                Object::DaemonSet(o) => ds.push(*o),
                Object::ConfigMap(o) => cm.push(*o),
                Object::NetworkAttachmentDefinition(o) => nads.push(*o),
                Object::Pod(o) => pods.push(*o),
                other => {
                    return Err(ManifestError::Invalid {
                        origin: d.origin,
                        field: "kind".into(),
                        message: format!(
                            "{} belongs with the DRA manifests (dra/), not here",
                            other.kind()
                        ),
                    });
                }
            }
        }
        let one = |kind: &str, n: usize| ManifestError::Invalid {
            origin: dir.display().to_string(),
            field: kind.to_owned(),
            message: format!("expected exactly one, found {n}"),
        };
        let (daemonset, configmap) = match (ds.len(), cm.len()) {
            (1, 1) => (ds.remove(0), cm.remove(0)),
            (1, n) => return Err(one("ConfigMap", n)),
            (n, _) => return Err(one("DaemonSet", n)),
        };
        let missing = |field: &str| ManifestError::Invalid {
            origin: dir.display().to_string(),
            field: field.to_owned(),
            message: "missing".into(),
        };
        if daemonset
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .is_none()
        {
            return Err(missing("DaemonSet spec.template.spec"));
        }
        if configmap.data.is_none() {
            return Err(missing("ConfigMap data"));
        }
        Ok(Deployment {
            daemonset,
            configmap,
            nads,
            pods,
        })
    }

    /// The DaemonSet's pod template spec (present after [`Deployment::load`]).
    pub fn pod_spec(&self) -> Option<&PodSpec> {
        self.daemonset
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
    }

    /// The containers that run the device-plugin daemon.
    pub fn daemon_containers(&self) -> Vec<&Container> {
        self.pod_spec()
            .into_iter()
            .flat_map(|p| &p.containers)
            .filter(|c| {
                c.command
                    .as_deref()
                    .is_some_and(|cmd| cmd == [DAEMON_COMMAND])
            })
            .collect()
    }

    /// The ConfigMap key a daemon container reads: the file name of its `--config-file`
    /// (default [`DEFAULT_CONFIG_FILE`]), which must lie in the ConfigMap's directory.
    pub fn config_key(&self, c: &Container) -> Result<String, ManifestError> {
        let file = crate::arg_value(c, "--config-file").unwrap_or(DEFAULT_CONFIG_FILE.to_owned());
        let dir = Path::new(DEFAULT_CONFIG_FILE).parent();
        match (
            Path::new(&file).parent() == dir,
            Path::new(&file).file_name().and_then(|n| n.to_str()),
        ) {
            (true, Some(key)) => Ok(key.to_owned()),
            _ => Err(ManifestError::Invalid {
                origin: format!("DaemonSet container {}", c.name),
                field: "--config-file".into(),
                message: format!("{file:?} is not a file of the ConfigMap at {dir:?}"),
            }),
        }
    }

    /// The ConfigMap's data (key to file content).
    pub fn config_files(&self) -> &std::collections::BTreeMap<String, String> {
        static EMPTY: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        self.configmap.data.as_ref().unwrap_or(&EMPTY)
    }

    /// The ConfigMap key `key`, parsed by the daemon's parser ([`device_plugin_config`]).
    pub fn config(&self, key: &str) -> Result<Config, ManifestError> {
        let origin = format!("ConfigMap key {key}");
        let text = self
            .config_files()
            .get(key)
            .ok_or_else(|| ManifestError::Invalid {
                origin: origin.clone(),
                field: key.to_owned(),
                message: "no such key".into(),
            })?;
        device_plugin_config(&origin, text)
    }

    /// The NAD named `name`.
    pub fn nad(&self, name: &str) -> Option<&NetworkAttachmentDefinition> {
        self.nads.iter().find(|n| n.name() == name)
    }

    /// The example pod named `name`.
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }
}

/// Parses a device-plugin config with the daemon's own parser
/// ([`device_plugin::config::Config::parse`], `origin` standing for the file name), and
/// refuses any key the daemon would ignore with a warning: a deployed config must mean
/// everything it says.
pub fn device_plugin_config(origin: &str, text: &str) -> Result<Config, ManifestError> {
    let config = Config::parse(Path::new(origin), text)?;
    if config.warnings.is_empty() {
        Ok(config)
    } else {
        Err(ManifestError::IgnoredKeys {
            origin: origin.to_owned(),
            warnings: config.warnings,
        })
    }
}

/// The DRA variant in `deploy/dra/`: the DaemonSet that also runs the daemon as a DRA
/// driver, its ServiceAccount and RBAC, the DeviceClasses, and an example claim + pod.
#[derive(Debug, Clone)]
pub struct DraDeployment {
    /// `dra/daemonset.yaml`.
    pub daemonset: DaemonSet,
    /// The driver's ServiceAccount.
    pub service_account: k8s_openapi::api::core::v1::ServiceAccount,
    /// What it may do in the API.
    pub cluster_role: k8s_openapi::api::rbac::v1::ClusterRole,
    /// The role bound to the ServiceAccount.
    pub binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding,
    /// The DeviceClasses claims name, in file order.
    pub device_classes: Vec<k8s_openapi::api::resource::v1::DeviceClass>,
    /// Example ResourceClaimTemplates.
    pub claim_templates: Vec<k8s_openapi::api::resource::v1::ResourceClaimTemplate>,
    /// Example pods.
    pub pods: Vec<Pod>,
}

impl DraDeployment {
    /// Loads (strictly) every manifest in `dir`: exactly one DaemonSet, ServiceAccount,
    /// ClusterRole and ClusterRoleBinding; no ConfigMap or NAD (those are shared with the
    /// main directory).
    pub fn load(dir: &Path) -> Result<DraDeployment, ManifestError> {
        let (mut ds, mut sa, mut cr, mut crb) = (vec![], vec![], vec![], vec![]);
        let (mut device_classes, mut claim_templates, mut pods) = (vec![], vec![], vec![]);
        for d in load_dir(dir)? {
            match d.object {
                Object::DaemonSet(o) => ds.push(*o),
                Object::ServiceAccount(o) => sa.push(*o),
                Object::ClusterRole(o) => cr.push(*o),
                Object::ClusterRoleBinding(o) => crb.push(*o),
                Object::DeviceClass(o) => device_classes.push(*o),
                Object::ResourceClaimTemplate(o) => claim_templates.push(*o),
                Object::Pod(o) => pods.push(*o),
                other => {
                    return Err(ManifestError::Invalid {
                        origin: d.origin,
                        field: "kind".into(),
                        message: format!(
                            "{} is shared with the main manifests (deploy/), not here",
                            other.kind()
                        ),
                    });
                }
            }
        }
        fn one<T>(dir: &Path, kind: &str, mut v: Vec<T>) -> Result<T, ManifestError> {
            match v.len() {
                1 => Ok(v.remove(0)),
                n => Err(ManifestError::Invalid {
                    origin: dir.display().to_string(),
                    field: kind.to_owned(),
                    message: format!("expected exactly one, found {n}"),
                }),
            }
        }
        Ok(DraDeployment {
            daemonset: one(dir, "DaemonSet", ds)?,
            service_account: one(dir, "ServiceAccount", sa)?,
            cluster_role: one(dir, "ClusterRole", cr)?,
            binding: one(dir, "ClusterRoleBinding", crb)?,
            device_classes,
            claim_templates,
            pods,
        })
    }
}
