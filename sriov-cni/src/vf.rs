//! Resolve `deviceID` to the PF netdev, VF index, VF netdev and RDMA devices through
//! `rdma-hca` (one VF's sysfs entries, not the whole inventory).

use crate::config::ConfigError;
use crate::error::{Error, Result};
use rdma_hca::{HcaError, Host, PciAddress};

/// Drivers that take a VF away from the kernel network stack (DPDK).
pub const USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// A resolved VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfTarget {
    /// Its PCI address.
    pub pci: PciAddress,
    /// Its PF's PCI address.
    pub pf_pci: PciAddress,
    /// The PF netdev VF settings go to.
    pub pf_netdev: String,
    /// VF index on the PF.
    pub vf_index: u32,
    /// Its netdev on the host (`None`: bound to a userspace driver, or moved away).
    pub netdev: Option<String>,
    /// Its driver.
    pub driver: Option<String>,
    /// Its RDMA devices: the PCI function's own, plus soft devices (rxe) on its netdev
    /// once [`with_soft_rdma`] has looked them up.
    pub rdma: Vec<String>,
}

impl VfTarget {
    /// Whether the VF is bound to a userspace (DPDK) driver: configure on the PF only.
    pub fn dpdk(&self) -> bool {
        self.netdev.is_none()
            && self
                .driver
                .as_deref()
                .is_some_and(|d| USERSPACE_DRIVERS.contains(&d))
    }
}

fn bad(value: &PciAddress, reason: String) -> Error {
    Error::Config(ConfigError {
        field: "deviceID".into(),
        value: format!("\"{value}\""),
        reason,
    })
}

/// Resolve `pci` on `host`.
pub fn resolve(host: &Host, pci: &PciAddress) -> Result<VfTarget> {
    let f = match host.function(pci) {
        Ok(f) => f,
        Err(HcaError::NoSuchDevice { path, .. }) => {
            return Err(bad(pci, format!("no such PCI device ({})", path.display())));
        }
        Err(e) => return Err(e.into()),
    };
    let pf_pci = f
        .physfn
        .clone()
        .ok_or_else(|| bad(pci, "not an SR-IOV VF (no physfn link)".into()))?;
    let vf_index = f
        .vf_index
        .ok_or_else(|| bad(pci, format!("PF {pf_pci} lists no virtfn link to it")))?;
    let pf = host.function(&pf_pci)?;
    let pf_netdev = pf
        .netdevs
        .first()
        .cloned()
        .ok_or_else(|| bad(pci, format!("its PF {pf_pci} has no netdev")))?;
    Ok(VfTarget {
        pci: pci.clone(),
        pf_pci,
        pf_netdev,
        vf_index,
        netdev: f.netdevs.first().cloned(),
        driver: f.driver.clone(),
        rdma: f.rdma_devices.clone(),
    })
}

/// Add the soft RDMA devices (rxe, siw) created on the VF's netdev to `t.rdma`. They sit
/// under `/sys/devices/virtual/infiniband` and name their netdev only in `parent`, so
/// the function's own `infiniband/` directory misses them; moving the netdev to another
/// netns would delete them. Only needed in exclusive RDMA netns mode (a listing of
/// `/sys/class/infiniband`).
pub fn with_soft_rdma(host: &Host, mut t: VfTarget) -> Result<VfTarget> {
    if let Some(nd) = &t.netdev {
        for d in host.rdma_devices_on_netdev(nd)? {
            if !t.rdma.contains(&d) {
                t.rdma.push(d);
            }
        }
    }
    Ok(t)
}
