//! Network namespaces as owned file descriptors, entered per thread with `setns`.

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};

/// A netns failure.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path could not be opened.
    #[error("cannot open netns {path}: {source}")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a network namespace file.
    #[error("{path} is not a network namespace (not on nsfs)")]
    NotNetns {
        /// The path.
        path: PathBuf,
    },
    /// `setns` failed.
    #[error("cannot enter netns {path}: {errno}")]
    Enter {
        /// The path.
        path: PathBuf,
        /// Errno.
        errno: nix::errno::Errno,
    },
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Open a netns file (`/run/netns/x`, `/proc/<pid>/ns/net`) and check it is one.
    pub fn open(path: &Path) -> Result<Netns, NetnsError> {
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let st = fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.to_path_buf(),
            source: std::io::Error::from_raw_os_error(e as i32),
        })?;
        if st.filesystem_type() != NSFS_MAGIC {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
        }
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The calling thread's current netns.
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// A second handle on the same netns (a duplicated fd).
    pub fn try_clone(&self) -> std::io::Result<Netns> {
        Ok(Netns {
            file: self.file.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw fd (for `IFLA_NET_NS_FD`).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The namespace's inode number (identity).
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map(|m| m.ino()).unwrap_or(0)
    }

    /// Run `f` with the calling thread inside this netns, then return to `home`.
    pub fn run<T>(&self, home: &Netns, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter {
            path: self.path.clone(),
            errno,
        })?;
        let out = f();
        setns(home.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter {
            path: home.path.clone(),
            errno,
        })?;
        Ok(out)
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
