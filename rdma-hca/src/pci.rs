//! PCI functions under `<root>/sys/bus/pci/devices`: identity, driver, NUMA, IOMMU group
//! and the SR-IOV relations between a PF and its VFs.

use crate::error::{HcaError, Result};
use crate::fsutil::{base_name, list_dir, read_link_in_root, read_opt, read_parsed, resolve_dir};
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A PCI address in the kernel's canonical form `dddd:bb:dd.f` (lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PciAddress(String);

impl PciAddress {
    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PciAddress {
    type Err = HcaError;

    /// Accepts `dddd:bb:dd.f` and the short `bb:dd.f` (domain 0000), any hex case.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || HcaError::InvalidPciAddress(s.to_string());
        let full = match s.len() {
            12 => s.to_ascii_lowercase(),
            7 => format!("0000:{}", s.to_ascii_lowercase()),
            _ => return Err(bad()),
        };
        let b = full.as_bytes();
        let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
        if b[4] != b':' || b[7] != b':' || b[10] != b'.' {
            return Err(bad());
        }
        if !(hex(0..4) && hex(5..7) && hex(8..10) && (b'0'..=b'7').contains(&b[11])) {
            return Err(bad());
        }
        // device number is 5 bits: 00..1f
        if u8::from_str_radix(&full[8..10], 16).map_err(|_| bad())? > 0x1f {
            return Err(bad());
        }
        Ok(PciAddress(full))
    }
}

/// SR-IOV capability of a PF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SriovCaps {
    /// `sriov_totalvfs`: how many VFs the PF can have.
    pub total_vfs: u32,
    /// `sriov_numvfs`: how many are enabled now.
    pub num_vfs: u32,
}

/// One PCI function as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciFunction {
    /// Its address.
    pub address: PciAddress,
    /// `vendor` without `0x`, e.g. `15b3`.
    pub vendor: String,
    /// `device` without `0x`, e.g. `101e`.
    pub device: String,
    /// `class` without `0x`, e.g. `020000`.
    pub class: String,
    /// The bound driver (basename of the `driver` link); `None` when unbound.
    pub driver: Option<String>,
    /// `numa_node`; `None` for -1 or when absent.
    pub numa_node: Option<u32>,
    /// The IOMMU group number (basename of the `iommu_group` link).
    pub iommu_group: Option<u32>,
    /// SR-IOV totals when this is a PF with the capability.
    pub sriov: Option<SriovCaps>,
    /// For a VF: its PF (`physfn` link).
    pub physfn: Option<PciAddress>,
    /// For a VF: its index on the PF (`virtfnN` on the PF pointing at it).
    pub vf_index: Option<u32>,
    /// For a PF: its VFs as (index, address), sorted by index.
    pub vfs: Vec<(u32, PciAddress)>,
    /// Netdev names in `net/` (empty for vfio-bound or unbound functions, and for a VF
    /// whose netdev was moved into another netns).
    pub netdevs: Vec<String>,
    /// RDMA device names in `infiniband/`.
    pub rdma_devices: Vec<String>,
}

impl PciFunction {
    /// Whether this function is a VF.
    pub fn is_vf(&self) -> bool {
        self.physfn.is_some()
    }
}

fn strip_hex(s: &str) -> Option<String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    (!h.is_empty() && h.bytes().all(|c| c.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
}

/// Read one function from its real device directory (`<root>/sys/devices/.../<addr>`).
///
/// With `single`, `vf_index` (a scan of the PF's `virtfn*` links), `netdevs` and
/// `rdma_devices` (listings of `net/` and `infiniband/`) are read here; the inventory
/// leaves them empty and fills them from the PF side and the class scans, which it reads
/// anyway, saving a third of the syscalls on a 1024-VF host.
pub(crate) fn read_function(
    root: &Path,
    dir: &Path,
    address: PciAddress,
    single: bool,
) -> Result<PciFunction> {
    let req = |name: &str| -> Result<String> {
        let path = dir.join(name);
        let s = read_opt(&path)?.ok_or_else(|| HcaError::Io {
            path: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        strip_hex(&s).ok_or(HcaError::Malformed {
            path,
            content: s,
            reason: "expected a hex number",
        })
    };
    // `uevent` carries vendor, device, class and driver in one read (a quarter of the
    // syscalls of a VF); the single files are the fallback for trees without it.
    let (vendor, device, class, driver) = match read_uevent(dir)? {
        Some(ids) => ids,
        None => (
            req("vendor")?,
            req("device")?,
            req("class")?,
            // A dangling driver link still names the driver; only its basename matters.
            read_link_in_root(root, &dir.join("driver"), true)?.map(|p| base_name(&p)),
        ),
    };
    let numa_node = read_parsed(&dir.join("numa_node"), "expected an integer", |s| {
        s.parse::<i64>().ok()
    })?
    .and_then(|n| u32::try_from(n).ok());
    let iommu_group = match read_link_in_root(root, &dir.join("iommu_group"), true)? {
        None => None,
        Some(p) => {
            let name = base_name(&p);
            Some(name.parse::<u32>().map_err(|_| HcaError::Malformed {
                path: dir.join("iommu_group"),
                content: name,
                reason: "expected an IOMMU group number",
            })?)
        }
    };
    // Existence of physfn/virtfn targets is checked by the callers: the inventory checks
    // them against the functions it found, which costs no extra syscalls.
    let physfn = match read_link_in_root(root, &dir.join("physfn"), true)? {
        None => None,
        Some(p) => Some(parse_link_address(&dir.join("physfn"), &p)?),
    };
    let mut sriov = None;
    let mut vfs = Vec::new();
    // A VF has no SR-IOV capability of its own: skip the reads and the directory scan.
    if physfn.is_none() {
        let num = |f: &str| {
            read_parsed(&dir.join(f), "expected a non-negative integer", |s| {
                s.parse::<u32>().ok()
            })
        };
        if let Some(total_vfs) = num("sriov_totalvfs")? {
            let num_vfs = num("sriov_numvfs")?.unwrap_or(0);
            sriov = Some(SriovCaps { total_vfs, num_vfs });
            for name in list_dir(dir)? {
                if let Some(idx) = name.strip_prefix("virtfn") {
                    let link = dir.join(&name);
                    let idx: u32 = idx.parse().map_err(|_| HcaError::Malformed {
                        path: link.clone(),
                        content: name.clone(),
                        reason: "expected virtfn<N>",
                    })?;
                    if let Some(p) = read_link_in_root(root, &link, true)? {
                        vfs.push((idx, parse_link_address(&link, &p)?));
                    }
                }
            }
            vfs.sort();
        }
    }
    let vf_index = match (&physfn, single) {
        (Some(pf), true) => vf_index_on_pf(root, pf, &address)?,
        _ => None,
    };
    Ok(PciFunction {
        netdevs: if single {
            list_dir(&dir.join("net"))?
        } else {
            Vec::new()
        },
        rdma_devices: if single {
            list_dir(&dir.join("infiniband"))?
        } else {
            Vec::new()
        },
        address,
        vendor,
        device,
        class,
        driver,
        numa_node,
        iommu_group,
        sriov,
        physfn,
        vf_index,
        vfs,
    })
}

/// Vendor, device, class and bound driver of a function.
type Identity = (String, String, String, Option<String>);

/// Vendor, device, class and driver from a PCI device's `uevent` (`DRIVER=mlx5_core`,
/// `PCI_CLASS=20000`, `PCI_ID=15B3:101E`). `Ok(None)` when there is no `uevent` or it lacks
/// the PCI keys.
fn read_uevent(dir: &Path) -> Result<Option<Identity>> {
    let path = dir.join("uevent");
    let Some(text) = read_opt(&path)? else {
        return Ok(None);
    };
    let (mut driver, mut class, mut id) = (None, None, None);
    for line in text.lines() {
        match line.split_once('=') {
            Some(("DRIVER", v)) => driver = Some(v.to_string()),
            Some(("PCI_CLASS", v)) => class = Some(v),
            Some(("PCI_ID", v)) => id = Some(v),
            _ => {}
        }
    }
    let (Some(class), Some(id)) = (class, id) else {
        return Ok(None);
    };
    let bad = |reason| HcaError::Malformed {
        path: path.clone(),
        content: text.clone(),
        reason,
    };
    let (v, d) = id
        .split_once(':')
        .ok_or_else(|| bad("PCI_ID is not VVVV:DDDD"))?;
    let vendor = strip_hex(v).ok_or_else(|| bad("PCI_ID is not VVVV:DDDD"))?;
    let device = strip_hex(d).ok_or_else(|| bad("PCI_ID is not VVVV:DDDD"))?;
    let class = strip_hex(class)
        .filter(|c| c.len() <= 6)
        .ok_or_else(|| bad("PCI_CLASS is not hex"))?;
    Ok(Some((vendor, device, format!("{class:0>6}"), driver)))
}

/// The PCI address a link points at (its basename).
fn parse_link_address(link: &Path, target: &Path) -> Result<PciAddress> {
    let name = base_name(target);
    name.parse().map_err(|_| HcaError::Malformed {
        path: link.to_path_buf(),
        content: target.display().to_string(),
        reason: "link target is not a PCI address",
    })
}

/// Find the index N such that `<pf>/virtfnN` points at `vf`.
pub(crate) fn vf_index_on_pf(root: &Path, pf: &PciAddress, vf: &PciAddress) -> Result<Option<u32>> {
    let Some(pf_dir) = resolve_dir(root, &devices_dir(root).join(pf.as_str()))? else {
        return Ok(None);
    };
    for name in list_dir(&pf_dir)? {
        if let Some(idx) = name.strip_prefix("virtfn") {
            let link = pf_dir.join(&name);
            if let Some(p) = read_link_in_root(root, &link, true)?
                && base_name(&p) == vf.as_str()
            {
                return idx.parse().map(Some).map_err(|_| HcaError::Malformed {
                    path: link,
                    content: name.clone(),
                    reason: "expected virtfn<N>",
                });
            }
        }
    }
    Ok(None)
}

/// `<root>/sys/bus/pci/devices`.
pub(crate) fn devices_dir(root: &Path) -> PathBuf {
    root.join("sys/bus/pci/devices")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_forms() {
        assert_eq!(
            "0000:3B:00.2".parse::<PciAddress>().unwrap().as_str(),
            "0000:3b:00.2"
        );
        assert_eq!(
            "3b:00.2".parse::<PciAddress>().unwrap().as_str(),
            "0000:3b:00.2"
        );
        for bad in [
            "",
            "0000:3b:00.8",
            "0000:3b:20.0",
            "0000-3b:00.0",
            "zzzz:3b:00.0",
            "../x",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }
}
