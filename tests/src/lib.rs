//! Test harness shared by the end-to-end tests, the benchmarks and the demo.
//!
//! The centre is [`KubeletSim`], an in-process fake kubelet that plays the kubelet's side
//! of every wire a device plugin touches:
//!
//! - the device-plugin `Registration` server on `<dir>/kubelet.sock`, recording every
//!   `RegisterRequest` and connecting back to the plugin's endpoint exactly as kubelet does
//!   (dial, `GetDevicePluginOptions` inside `Register`, then `ListAndWatch`);
//! - the kubelet's client calls (`GetPreferredAllocation`, `Allocate`,
//!   `PreStartContainer`), alone or as a whole pod admission ([`KubeletSim::admit_pod`]);
//! - kubelet restarts ([`KubeletSim::restart`]): the directory is wiped and `kubelet.sock`
//!   recreated, and the time until each resource re-registers is measured;
//! - the plugin watcher's `plugins_registry` path ([`KubeletSim::register_plugin_socket`],
//!   [`KubeletSim::watch_plugins_registry`]);
//! - a `podresources.v1` server over the allocations the simulator made
//!   ([`KubeletSim::serve_pod_resources`]).
//!
//! Every wait is bounded by a timeout and driven by events (a `tokio::sync::watch` of the
//! simulator's [`SimState`], or inotify for files), never by sleeping.
//!
//! [`dra_kubelet`] is the kubelet's side of a DRA driver (plugin-watcher registration,
//! NodePrepareResources / NodeUnprepareResources).
//!
//! [`simhost`] is re-exported so tests can combine simulated hosts with the simulator.

pub mod apiserver;
pub mod bins;
pub mod dra_kubelet;
mod error;
pub mod fswait;
pub mod kubelet;
pub mod plugin_watcher;
pub mod podresources;
pub mod pods;
pub mod report;

pub use bins::{dra_args, project_bin, project_bin_with, scratch};
pub use error::SimError;
pub use kubelet::{DeviceList, KubeletSim, RegisterAttempt, RegisteredVia, Registration, SimState};
pub use pods::{ContainerAllocation, ContainerSpec, PodAllocation, PodSpec, ResourceAllocation};
pub use simhost;

use std::time::Duration;

/// A generous default for event waits in tests: long enough for a loaded 2-core CI
/// machine, short enough that a broken test fails instead of hanging.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
