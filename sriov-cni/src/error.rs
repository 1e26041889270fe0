//! The plugin's error type and the CNI error codes it maps to.
//!
//! Codes follow the CNI spec's well-known list (1 incompatible version, 4 invalid
//! environment variables, 5 I/O failure, 6 failed to decode, 7 invalid network config,
//! 11 try again later, 50 plugin not available); codes >= 100 are this plugin's own.

use crate::config::{ConfigError, EnvError};
use crate::netlink::NlError;
use std::path::PathBuf;

/// CNI error codes used by this plugin.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (cache, lock, netns files).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (stdin is not JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: the VF is held by another attachment.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: the plugin cannot serve ADD (IPAM plugin missing).
    pub const NOT_AVAILABLE: u32 = 50;
    /// Anything else that went wrong.
    pub const INTERNAL: u32 = 100;
    /// The IPAM plugin failed.
    pub const IPAM: u32 = 101;
    /// The kernel refused a VF setting on the PF.
    pub const VF_CONFIG: u32 = 102;
    /// A link, address or route operation failed.
    pub const LINK: u32 = 103;
    /// CHECK found a difference.
    pub const CHECK_MISMATCH: u32 = 104;
    /// Moving the RDMA device failed.
    pub const RDMA: u32 = 105;
    /// Reading the host's sysfs failed.
    pub const SYSFS: u32 = 106;
}

/// Everything that can make a command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the network configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A CNI environment variable is missing or wrong.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The requested spec version is not one this plugin speaks (or not for this command).
    #[error("incompatible CNI version {requested:?}: {reason}")]
    IncompatibleVersion {
        /// The version asked for.
        requested: String,
        /// Why it cannot be served.
        reason: String,
    },
    /// Stdin could not be decoded as JSON.
    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(String),
    /// The VF is attached elsewhere; the runtime may retry.
    #[error("VF {pci} is busy: {reason}")]
    Busy {
        /// The VF's PCI address.
        pci: String,
        /// What holds it.
        reason: String,
    },
    /// The kernel refused one VF setting on the PF.
    #[error("PF {pf} refused VF {vf} setting {setting}: {source}")]
    VfSetting {
        /// The PF netdev.
        pf: String,
        /// The VF index.
        vf: u32,
        /// The setting as written in the config (`vlan=100 vlanQoS=0 vlanProto=802.1ad`).
        setting: String,
        /// The netlink error.
        #[source]
        source: Box<NlError>,
    },
    /// A link, address or route operation failed.
    #[error(transparent)]
    Netlink(#[from] NlError),
    /// Moving the RDMA device between namespaces failed.
    #[error("RDMA device {device}: {source}")]
    Rdma {
        /// The RDMA device name.
        device: String,
        /// The netlink error.
        #[source]
        source: NlError,
    },
    /// The IPAM plugin failed or answered nonsense.
    #[error("IPAM plugin {plugin}: {msg}")]
    Ipam {
        /// The plugin's type.
        plugin: String,
        /// What went wrong (the plugin's own message when it sent an error JSON).
        msg: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Rebinding an InfiniBand VF to its driver failed (or its netdev never came back).
    #[error(transparent)]
    Rebind(#[from] crate::ib::rebind::RebindError),
    /// Reading the host tree failed.
    #[error("sysfs: {0}")]
    Hca(#[from] rdma_hca::HcaError),
    /// CHECK found differences (each listed).
    #[error("CHECK failed: {}", .0.join("; "))]
    CheckMismatch(Vec<String>),
    /// STATUS: the plugin cannot serve ADD now.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// A test-only fault injected through the fake VF state file.
    #[error("injected failure at step {0}")]
    Injected(String),
    /// Several errors during a teardown (DEL or the undo of a failed ADD).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<Error>),
    /// Something this plugin cannot classify.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The CNI error code for this error.
    pub fn code(&self) -> u32 {
        match self {
            Error::Config(_) => code::INVALID_CONFIG,
            Error::Env(_) => code::INVALID_ENV,
            Error::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Error::Decode(_) => code::DECODE,
            Error::Busy { .. } => code::TRY_AGAIN,
            Error::VfSetting { .. } => code::VF_CONFIG,
            Error::Netlink(_) => code::LINK,
            Error::Rdma { .. } => code::RDMA,
            Error::Ipam { .. } => code::IPAM,
            Error::Io { .. } => code::IO_FAILURE,
            Error::Hca(_) | Error::Rebind(_) => code::SYSFS,
            Error::CheckMismatch(_) => code::CHECK_MISMATCH,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::Injected(_) | Error::Other(_) => code::INTERNAL,
            Error::Many(v) => v.first().map(Error::code).unwrap_or(code::INTERNAL),
        }
    }

    /// Short details for the error JSON's `details` field.
    pub fn details(&self) -> String {
        use std::error::Error as _;
        let mut out = Vec::new();
        let mut cur = self.source();
        while let Some(e) = cur {
            out.push(e.to_string());
            cur = e.source();
        }
        out.join(": ")
    }

    /// An I/O error on `path` while doing `op`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
