//! The simulator's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use proto::unix::UnixError;

/// Errors of the kubelet simulator; each names the resource, socket or file involved.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A unix-socket operation (bind, connect, serve) failed.
    #[error(transparent)]
    Unix(#[from] UnixError),
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("remove", "read dir", ...).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Watching a directory for changes failed.
    #[error("watch {path}: {source}")]
    Watch {
        /// The watched path.
        path: PathBuf,
        /// The underlying error.
        source: notify::Error,
    },
    /// An awaited event did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// No plugin is registered (in the current kubelet epoch) for the resource.
    #[error("resource {resource} is not registered")]
    NotRegistered {
        /// The resource name.
        resource: String,
    },
    /// A gRPC call to a plugin returned an error status.
    #[error("{rpc} on {target}: {status}")]
    Rpc {
        /// The RPC, e.g. `Allocate`.
        rpc: &'static str,
        /// The resource name or socket path called.
        target: String,
        /// The status returned.
        status: tonic::Status,
    },
    /// A plugin answered with something the kubelet would reject.
    #[error("{target}: {reason}")]
    BadAnswer {
        /// The resource name or socket path.
        target: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// A pod asked for more devices than are free.
    #[error("pod {pod}: container {container} wants {wanted} of {resource}, {free} free")]
    NotEnoughDevices {
        /// `namespace/name` of the pod.
        pod: String,
        /// The container name.
        container: String,
        /// The resource name.
        resource: String,
        /// How many devices were asked for.
        wanted: usize,
        /// How many healthy, unallocated devices there were.
        free: usize,
    },
    /// A pod with that namespace and name is already admitted.
    #[error("pod {pod} already exists")]
    PodExists {
        /// `namespace/name` of the pod.
        pod: String,
    },
    /// The simulator has been shut down.
    #[error("kubelet simulator is stopped")]
    Stopped,
}
