//! The same inventory as a Kubernetes DRA (Dynamic Resource Allocation, `resource.k8s.io/v1`)
//! driver: every VF of a VF pool is a DRA device named by [`device_name`].
//!
//! - [`devices`]: pools -> the DRA devices of this node.
//! - [`claims`]: reading a ResourceClaim's allocation ([`claims::ClaimSource`]).
//! - [`vfconfig`]: our opaque per-request config kind (`VfConfig`).
//! - [`checkpoint`]: prepared claims on disk, so they survive a restart.
//! - [`prepare`]: NodePrepareResources / NodeUnprepareResources as domain code.
//! - [`plugin`]: the kubelet plugin: gRPC `DRAPlugin` v1 and v1beta1, registration.
//! - [`slices`]: pools -> the ResourceSlices of this node (device names, attributes,
//!   128-device chunks of one pool).
//! - [`publish`]: syncing those slices to the API server and removing them on shutdown.

pub mod checkpoint;
pub mod claims;
pub mod devices;
pub mod plugin;
pub mod prepare;
pub mod publish;
pub mod slices;
pub mod vfconfig;

/// The driver name unless `--dra-driver-name` says otherwise (a DNS subdomain).
pub const DEFAULT_DRIVER_NAME: &str = "sriov.rdma-hca.io";

/// The DRA device name of the PCI function at `pci`: a DNS label, `pci-` + the address
/// with `:` and `.` as `-`, lower case (`0000:3b:00.2` -> `pci-0000-3b-00-2`).
pub fn device_name(pci: &str) -> String {
    let mut s = String::with_capacity(pci.len() + 4);
    s.push_str("pci-");
    s.extend(pci.chars().map(|c| match c {
        ':' | '.' => '-',
        c => c.to_ascii_lowercase(),
    }));
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_names_are_dns_labels() {
        assert_eq!(super::device_name("0000:3b:00.2"), "pci-0000-3b-00-2");
        assert_eq!(super::device_name("0000:AF:01.7"), "pci-0000-af-01-7");
    }
}
