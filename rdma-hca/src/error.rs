//! The one error type of the crate: every variant names the path it is about.

use std::path::PathBuf;

/// An error reading the host tree. Each variant carries the path (as seen under the root)
/// that could not be read or made no sense.
#[derive(Debug, thiserror::Error)]
pub enum HcaError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what the kernel writes there.
    #[error("malformed {path}: {content:?} ({reason})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its (trimmed) content.
        content: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A symlink points somewhere that does not exist.
    #[error("dangling link {path} -> {target}")]
    DanglingLink {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// A symlink points outside the configured root.
    #[error("link {path} -> {target} leaves the root {root}")]
    LinkEscapesRoot {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
        /// The root it must stay under.
        root: PathBuf,
    },
    /// A char device listed in sysfs has no node under `/dev`.
    #[error("{sysfs} names {dev} but {path} does not exist")]
    MissingDevNode {
        /// The sysfs entry naming the device (e.g. `.../infiniband_verbs/uverbs2`).
        sysfs: PathBuf,
        /// The device name (e.g. `uverbs2`).
        dev: String,
        /// The expected node under the root.
        path: PathBuf,
    },
    /// A string is not a PCI address of the form `dddd:bb:dd.f`.
    #[error("invalid PCI address {0:?} (expected dddd:bb:dd.f, hex)")]
    InvalidPciAddress(String),
    /// The asked-for PCI function does not exist under the root.
    #[error("PCI device {address} not found at {path}")]
    NoSuchDevice {
        /// The PCI address.
        address: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The root has no PCI bus in sysfs: a wrong root, or `/sys` not mounted.
    #[error("no PCI devices directory at {path}: wrong root, or /sys not mounted?")]
    NoSysfs {
        /// The missing `<root>/sys/bus/pci/devices`.
        path: PathBuf,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, HcaError>;
