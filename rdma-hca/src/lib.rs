//! `rdma-hca`: what a node has in PCI functions, SR-IOV relations, netdevs and RDMA
//! devices, read from sysfs, procfs and `/dev` under a configurable root.
//!
//! The device plugin reads a whole [`Inventory`]; the CNI reads just the one VF it was
//! handed ([`Host::function`]) so its hot path stays a handful of syscalls.
//!
//! # Why plain `std::fs` and not `sysfs-class`
//! `sysfs-class` hard-codes `/sys` (no custom root, so no fixture trees in tests), knows
//! nothing of SR-IOV or RDMA classes, and has had no release since 2020. The part of
//! sysfs we need is small, so this crate reads it directly with `std::fs`, resolving every
//! symlink lexically and refusing ones that leave the root.
//!
//! # Errors
//! A missing optional file (no `iommu_group`, no `phys_port_name`) is not an error. A file
//! that is there but malformed, a dangling or escaping link, or a char device listed in
//! sysfs with no node under `/dev` is an [`HcaError`] naming the path.

mod error;
mod fsutil;
mod host;
mod netdev;
mod pci;
mod rdma;

pub use error::{HcaError, Result};
pub use host::{Host, Inventory};
pub use netdev::{LinkType, Netdev, OperState, default_route_netdevs};
pub use pci::{PciAddress, PciFunction, SriovCaps};
pub use rdma::{DEV_INFINIBAND, RdmaCharDevices, RdmaDevice, RdmaNetnsMode, read_netns_mode};

/// PCI vendor id of Mellanox / NVIDIA networking.
pub const MELLANOX_VENDOR: &str = "15b3";
/// The Mellanox ConnectX driver.
pub const MLX5_DRIVER: &str = "mlx5_core";
