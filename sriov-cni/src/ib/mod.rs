//! InfiniBand VFs (the `ib-sriov` drop-in): a VF whose PF netdev has link type
//! InfiniBand (ARPHRD 32 in sysfs `type`) carries an IPoIB netdev and is configured by
//! GUID instead of MAC/VLAN.
//!
//! [`guid`] (the GUID type), [`netlink`] (the VF GUID setters and read-back on the PF),
//! [`rebind`] (unbind/bind through sysfs and the wait for the netdev), [`conf`]
//! (ib-sriov-cni's keys, the Ethernet-only keys refused).

pub mod conf;
pub mod guid;
pub mod netlink;
pub mod rebind;

use rdma_hca::{HcaError, Host, LinkType};

/// Whether the PF netdev `pf` (under the host's sysfs root) is InfiniBand. Decided from
/// sysfs only: neither the config's `type` nor the binary's name choose the IB path.
pub fn pf_is_infiniband(host: &Host, pf: &str) -> Result<bool, HcaError> {
    Ok(host
        .netdev(pf)?
        .is_some_and(|n| n.link_type == LinkType::Infiniband))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simhost::{Profile, SimHost};

    #[test]
    fn link_type_decides_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        let ib = SimHost::create(d.path().join("ib"), Profile::Infiniband).unwrap();
        let eth = SimHost::create(d.path().join("eth"), Profile::Cx6Dx).unwrap();
        let h = Host::new(ib.root());
        assert!(pf_is_infiniband(&h, "ib0").unwrap());
        assert!(pf_is_infiniband(&h, "ib1").unwrap());
        // the VF resolved through deviceID lands on the IB PF, and has its RDMA device
        let t = crate::vf::resolve(&h, &ib.vf_address(0, 1).parse().unwrap()).unwrap();
        assert!(pf_is_infiniband(&h, &t.pf_netdev).unwrap());
        assert!(!t.rdma.is_empty(), "{t:?}");
        assert!(
            ib.root()
                .join("sys/class/infiniband")
                .join(&t.rdma[0])
                .exists()
        );
        let h = Host::new(eth.root());
        assert!(!pf_is_infiniband(&h, "ens1f0").unwrap());
        assert!(!pf_is_infiniband(&h, "nosuch").unwrap());
    }
}
