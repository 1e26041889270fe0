//! Loading YAML manifests into typed objects.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaimTemplate};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::ManifestError;
use crate::strict::deserialize_strict;

/// Multus' CRD `k8s.cni.cncf.io/v1 NetworkAttachmentDefinition` (not in k8s-openapi).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkAttachmentDefinition {
    /// Always `k8s.cni.cncf.io/v1`.
    pub api_version: String,
    /// Always `NetworkAttachmentDefinition`.
    pub kind: String,
    /// Name, namespace and the `k8s.v1.cni.cncf.io/resourceName` annotation.
    pub metadata: ObjectMeta,
    /// The CNI config.
    pub spec: NadSpec,
}

/// The NAD's spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NadSpec {
    /// The CNI network config (or conflist) as a JSON string. Multus reads a file from
    /// its config dir when this is absent; our manifests always carry it.
    pub config: String,
}

/// The NAD annotation that names the device-plugin resource a network's device comes
/// from; multus uses it to find the device kubelet allocated to the pod.
pub const RESOURCE_NAME_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";

/// The pod annotation listing the extra networks multus attaches.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

impl NetworkAttachmentDefinition {
    /// The NAD's name (empty if it has none, which the loader rejects).
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The `k8s.v1.cni.cncf.io/resourceName` annotation, if present.
    pub fn resource_name(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESOURCE_NAME_ANNOTATION))
            .map(String::as_str)
    }
}

/// One typed Kubernetes object from a manifest file.
#[derive(Debug, Clone)]
pub enum Object {
    /// `apps/v1 DaemonSet`.
    DaemonSet(Box<DaemonSet>),
    /// `v1 ConfigMap`.
    ConfigMap(Box<ConfigMap>),
    /// `v1 Pod`.
    Pod(Box<Pod>),
    /// `k8s.cni.cncf.io/v1 NetworkAttachmentDefinition`.
    NetworkAttachmentDefinition(Box<NetworkAttachmentDefinition>),
    /// `v1 ServiceAccount` (the DRA driver's identity, `dra/rbac.yaml`).
    ServiceAccount(Box<ServiceAccount>),
    /// `rbac.authorization.k8s.io/v1 ClusterRole`.
    ClusterRole(Box<ClusterRole>),
    /// `rbac.authorization.k8s.io/v1 ClusterRoleBinding`.
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    /// `resource.k8s.io/v1 DeviceClass`.
    DeviceClass(Box<DeviceClass>),
    /// `resource.k8s.io/v1 ResourceClaimTemplate`.
    ResourceClaimTemplate(Box<ResourceClaimTemplate>),
}

impl Object {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::DaemonSet(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::NetworkAttachmentDefinition(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::ClusterRole(o) => &o.metadata,
            Object::ClusterRoleBinding(o) => &o.metadata,
            Object::DeviceClass(o) => &o.metadata,
            Object::ResourceClaimTemplate(o) => &o.metadata,
        }
    }

    /// `kind` of the object.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::DaemonSet(_) => "DaemonSet",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Pod(_) => "Pod",
            Object::NetworkAttachmentDefinition(_) => "NetworkAttachmentDefinition",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ClusterRole(_) => "ClusterRole",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
            Object::DeviceClass(_) => "DeviceClass",
            Object::ResourceClaimTemplate(_) => "ResourceClaimTemplate",
        }
    }
}

/// One YAML document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// `file#index` (index from 1), for messages.
    pub origin: String,
    /// The object.
    pub object: Object,
}

/// Parses every YAML document of `text` (documents separated by `---`; empty ones are
/// skipped) into typed objects, rejecting unknown fields. `name` is used in errors.
pub fn parse_documents(name: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{name}#{}", i + 1);
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Syntax {
            origin: origin.clone(),
            format: "YAML",
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let object = parse_object(&origin, value)?;
        if object
            .metadata()
            .name
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            return Err(ManifestError::Invalid {
                origin,
                field: "metadata.name".into(),
                message: "missing".into(),
            });
        }
        out.push(Document { origin, object });
    }
    Ok(out)
}

fn parse_object(origin: &str, value: serde_yaml::Value) -> Result<Object, ManifestError> {
    let field = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    // k8s-openapi's own Deserialize checks apiVersion and kind again for its types.
    Ok(match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "DaemonSet") => Object::DaemonSet(deserialize_strict(origin, value)?),
        ("v1", "ConfigMap") => Object::ConfigMap(deserialize_strict(origin, value)?),
        ("v1", "Pod") => Object::Pod(deserialize_strict(origin, value)?),
        ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition") => {
            Object::NetworkAttachmentDefinition(deserialize_strict(origin, value)?)
        }
        ("v1", "ServiceAccount") => Object::ServiceAccount(deserialize_strict(origin, value)?),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            Object::ClusterRole(deserialize_strict(origin, value)?)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            Object::ClusterRoleBinding(deserialize_strict(origin, value)?)
        }
        ("resource.k8s.io/v1", "DeviceClass") => {
            Object::DeviceClass(deserialize_strict(origin, value)?)
        }
        ("resource.k8s.io/v1", "ResourceClaimTemplate") => {
            Object::ResourceClaimTemplate(deserialize_strict(origin, value)?)
        }
        _ => {
            return Err(ManifestError::UnsupportedKind {
                origin: origin.to_owned(),
                api_version,
                kind,
            });
        }
    })
}

/// Reads and parses one manifest file.
pub fn load_file(path: &Path) -> Result<Vec<Document>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_documents(&path.display().to_string(), &text)
}

/// The `*.yaml` / `*.yml` manifest files directly in `dir`, sorted (the sample daemon
/// configs under `config/` are not manifests).
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Every object of every manifest in `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for file in manifest_files(dir)? {
        docs.extend(load_file(&file)?);
    }
    Ok(docs)
}
