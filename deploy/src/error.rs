//! The one error type of this crate.

use std::path::PathBuf;

/// Why a manifest (or a config embedded in one) was rejected. `origin` names the file and
/// the YAML document (`deploy/networks.yaml#2`) or the embedded config
/// (`ConfigMap sriov-rdma-device-plugin-config, key config.json`).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not YAML (or not JSON, for embedded configs).
    #[error("{origin}: not valid {format}: {message}")]
    Syntax {
        /// Where.
        origin: String,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A field has the wrong type or value for the typed object.
    #[error("{origin}: field `{field}`: {message}")]
    Invalid {
        /// Where.
        origin: String,
        /// Dotted path of the field (`spec.template.spec.containers[0].image`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Fields that the typed object does not have (a typo, or a field of another API
    /// version), which Kubernetes would silently drop.
    #[error("{origin}: unknown field(s) {}", fields.join(", "))]
    UnknownFields {
        /// Where.
        origin: String,
        /// Dotted paths of the unknown fields.
        fields: Vec<String>,
    },
    /// A device-plugin config the daemon's own parser refuses (it names the file, here
    /// the ConfigMap key, and the JSON path).
    #[error(transparent)]
    DevicePluginConfig(#[from] device_plugin::config::ConfigError),
    /// Keys of a device-plugin config that the daemon would ignore (it logs a warning
    /// and runs without them): a typo, or a key of another format or mode.
    #[error("{origin}: keys the daemon would ignore: {}", warnings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    IgnoredKeys {
        /// Where.
        origin: String,
        /// The daemon's warnings, each naming the key's JSON path.
        warnings: Vec<device_plugin::config::ConfigWarning>,
    },
    /// An `apiVersion`/`kind` this crate has no type for.
    #[error("{origin}: unsupported object {api_version}/{kind}")]
    UnsupportedKind {
        /// Where.
        origin: String,
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
}
