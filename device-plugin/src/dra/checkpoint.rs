//! Prepared claims on disk: one JSON file, rewritten whole on every change (temp file,
//! fsync, rename), so a crash leaves the old or the new state, never half of one. Read
//! once at start: a claim the kubelet prepared before a restart is still known, and
//! unprepares cleanly, even when its VF has gone since.

use super::claims::ClaimRef;
use super::vfconfig::VfConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File format version.
pub const CHECKPOINT_VERSION: u32 = 1;

/// File name of the checkpoint in the plugin's state dir.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

/// One prepared device of a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedDevice {
    /// The request it was allocated for.
    pub request: String,
    /// The pool.
    pub pool: String,
    /// The DRA device name.
    pub device: String,
    /// Its PCI address.
    pub pci: String,
    /// The VF pool (resource) it came from.
    pub resource: String,
    /// CDI device IDs returned to the kubelet.
    pub cdi_device_ids: Vec<String>,
    /// The device-info file written for the CNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info: Option<PathBuf>,
    /// The request's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<VfConfig>,
}

/// A prepared claim and what was written for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedClaim {
    /// The claim.
    pub claim: ClaimRef,
    /// Its devices, in allocation order.
    pub devices: Vec<PreparedDevice>,
    /// Its CDI spec file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdi_spec: Option<PathBuf>,
}

/// All prepared claims, by claim UID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Prepared claims by UID.
    pub claims: BTreeMap<String, PreparedClaim>,
}

/// The checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint {path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a checkpoint we can read.
    #[error("checkpoint {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Checkpoint {
    /// Read `path`; a missing file is an empty checkpoint.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Checkpoint {
                    version: CHECKPOINT_VERSION,
                    ..Checkpoint::default()
                });
            }
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.into(),
                    op: "read",
                    source,
                });
            }
        };
        let c: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Invalid {
                path: path.into(),
                message: e.to_string(),
            })?;
        if c.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Invalid {
                path: path.into(),
                message: format!(
                    "version {}: this daemon reads {CHECKPOINT_VERSION}",
                    c.version
                ),
            });
        }
        Ok(c)
    }

    /// Write to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |op, source| CheckpointError::Io {
            path: path.into(),
            op,
            source,
        };
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| io("create dir", e))?;
        }
        let bytes = serde_json::to_vec(self).map_err(|e| CheckpointError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| io("create temp", e))?;
        f.write_all(&bytes).map_err(|e| io("write temp", e))?;
        f.sync_all().map_err(|e| io("sync temp", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io("rename", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_bad_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s/checkpoint.json");
        let mut c = Checkpoint::load(&p).unwrap();
        assert!(c.claims.is_empty());
        c.claims.insert(
            "u1".into(),
            PreparedClaim {
                claim: ClaimRef {
                    namespace: "ns".into(),
                    uid: "u1".into(),
                    name: "c".into(),
                },
                devices: vec![],
                cdi_spec: Some("/x.json".into()),
            },
        );
        c.save(&p).unwrap();
        assert_eq!(Checkpoint::load(&p).unwrap(), c);
        assert!(!p.with_extension("json.tmp").exists());
        std::fs::write(&p, b"{").unwrap();
        let e = Checkpoint::load(&p).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("checkpoint {}: ", p.display())),
            "{e}"
        );
        std::fs::write(&p, br#"{"version":9,"claims":{}}"#).unwrap();
        let e = Checkpoint::load(&p).unwrap_err().to_string();
        assert!(e.contains("version 9"), "{e}");
    }
}
