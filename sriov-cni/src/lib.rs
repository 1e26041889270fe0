//! `sriov-cni`: the `sriov` CNI plugin. Given the PCI address of an SR-IOV VF
//! (`deviceID`), it configures the VF on its PF, moves the VF netdev into the pod's
//! network namespace, runs IPAM, and on DEL puts everything back exactly.
//!
//! Modules: [`config`] (netconf and env, validated up front), [`version`] and
//! [`result`] (spec versions and their result formats), [`vf`] (deviceID to PF/VF
//! through `rdma-hca`), [`netlink`] (counted rtnetlink round trips), [`sriov`] (the
//! [`sriov::VfConfigurator`] trait and its netlink implementation), `fake` (the
//! test-only file-backed configurator, cargo feature `test-fake`), [`rdma`] (RDMA netlink), [`netns`], [`cache`],
//! [`lock`], [`ipam`], [`links`] (the per-netns link seam; its recording double
//! `fake_links` is test-only, cargo feature `test-fake`), [`plugin`] (the commands) and [`cli`] (the dispatcher).

pub mod cache;
pub mod cli;
pub mod config;
pub mod error;
#[cfg(feature = "test-fake")]
pub mod fake;
#[cfg(feature = "test-fake")]
pub mod fake_links;
pub mod ib;
pub mod ipam;
pub mod links;
pub mod lock;
pub mod log;
pub mod netlink;
pub mod netns;
pub mod plugin;
pub mod rdma;
pub mod result;
pub mod sriov;
pub mod version;
pub mod vf;

pub use error::{Error, Result};
