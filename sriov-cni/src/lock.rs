//! Per-VF exclusive locks (`flock` on `<data dir>/lock/<pci>`) and the allocation record
//! (`<data dir>/lock/<pci>.owner`) that tells DEL whether the VF still belongs to it.

use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Who holds a VF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Container ID.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// A held VF lock; released on drop.
pub struct VfLock {
    _lock: Flock<File>,
    owner_path: PathBuf,
}

impl VfLock {
    /// Block until VF `pci`'s lock is ours.
    pub fn acquire(data_dir: &Path, pci: &str) -> Result<VfLock> {
        let dir = data_dir.join("lock");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let path = dir.join(pci);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| {
            Error::io("lock", &path, std::io::Error::from_raw_os_error(e as i32))
        })?;
        Ok(VfLock {
            _lock: lock,
            owner_path: dir.join(format!("{pci}.owner")),
        })
    }

    /// The recorded owner.
    pub fn owner(&self) -> Result<Option<Owner>> {
        match std::fs::read(&self.owner_path) {
            Ok(b) => Ok(serde_json::from_slice(&b).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &self.owner_path, e)),
        }
    }

    /// Record (or with `None`, clear) the owner, atomically.
    pub fn set_owner(&self, owner: Option<&Owner>) -> Result<()> {
        match owner {
            None => match std::fs::remove_file(&self.owner_path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove", &self.owner_path, e)),
            },
            Some(o) => {
                let tmp = self
                    .owner_path
                    .with_extension(format!("tmp{}", std::process::id()));
                let body = serde_json::to_vec(o).map_err(|e| Error::Other(e.to_string()))?;
                std::fs::write(&tmp, body).map_err(|e| Error::io("write", &tmp, e))?;
                std::fs::rename(&tmp, &self.owner_path)
                    .map_err(|e| Error::io("rename into", &self.owner_path, e))
            }
        }
    }
}
