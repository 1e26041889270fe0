//! `device-plugin`: a kubelet device plugin for Mellanox (ConnectX) RDMA HCAs and SR-IOV VFs,
//! drop-in for sriov-network-device-plugin, k8s-rdma-shared-dev-plugin (`rdma/hca`) and
//! k8s-rdma-sriov-dev-plugin configs.
//!
//! - [`config`]: the three config formats and the embedded default.
//! - [`selectors`]: which PCI functions a resource takes.
//! - [`pools`]: inventory + config -> resources, with each function's placement.
//! - [`discover`]: the `discover` subcommand's report.
//! - [`allocate`]: env, device specs, device-info files for Allocate; [`cdi`]: CDI specs;
//!   [`device_info_gc`]: removing device-info files of devices no pod holds.
//! - [`preferred`]: the GetPreferredAllocation policy.
//! - [`service`]: the gRPC `DevicePlugin` service of one resource; [`daemon`]: serving,
//!   registering and reconciling all of them.
//! - [`dra`]: the DRA edge: ResourceSlices of this node and their publisher.
//! - [`events`]: what changes under the daemon; [`health`]: device health across rescans;
//!   [`registration`]: the `plugins_registry` path (`pluginregistration.v1`).
//! - [`dra`]: the same VF pools as a DRA driver (kubelet plugin `DRAPlugin` v1/v1beta1).

pub mod allocate;
pub mod cdi;
pub mod config;
pub mod daemon;
pub mod device_info_gc;
pub mod discover;
pub mod dra;
pub mod events;
pub mod health;
pub mod pools;
pub mod preferred;
pub mod registration;
pub mod selectors;
pub mod service;

#[cfg(test)]
pub(crate) mod testutil {
    /// A scratch dir, on tmpfs when there is one: fixture trees are tens of thousands of
    /// small files, which a disk-backed /tmp writes many times slower.
    pub fn tempdir() -> tempfile::TempDir {
        let shm = std::path::Path::new("/dev/shm");
        if shm.is_dir()
            && let Ok(d) = tempfile::Builder::new().prefix("dp-test").tempdir_in(shm)
        {
            return d;
        }
        tempfile::tempdir().unwrap()
    }
}
