//! The entry point: a [`Host`] is a root directory; it reads single objects cheaply (for
//! the CNI's hot path) or the whole [`Inventory`] (for the device plugin).

use crate::error::{HcaError, Result};
use crate::fsutil::{check_exists, list_dir, resolve_dir};
use crate::netdev::{Netdev, default_route_netdevs, read_netdev};
use crate::pci::{PciAddress, PciFunction, devices_dir, read_function};
use crate::rdma::{RdmaDevice, RdmaNetnsMode, char_devices, read_netns_mode, read_rdma_device};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A host tree rooted at a directory (`/` on a real node, a temp dir in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host::new("/")
    }
}

impl Host {
    /// A host whose `/sys`, `/dev` and `/proc` live under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root: PathBuf = root.into();
        // Absolute, without `..` or symlinks, so that link targets resolved lexically under
        // it compare with it (the containment check): the real path when the root exists,
        // else the lexically normalized absolute one.
        let root = std::fs::canonicalize(&root).unwrap_or_else(|_| {
            let abs = std::path::absolute(&root).unwrap_or(root);
            crate::fsutil::normalize(Path::new("/"), &abs)
        });
        Host { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Read one PCI function, with `vf_index` resolved for a VF.
    pub fn function(&self, address: &PciAddress) -> Result<PciFunction> {
        let entry = devices_dir(&self.root).join(address.as_str());
        let Some(dir) = resolve_dir(&self.root, &entry)? else {
            return Err(HcaError::NoSuchDevice {
                address: address.to_string(),
                path: entry,
            });
        };
        let f = read_function(&self.root, &dir, address.clone(), true)?;
        if f.physfn.is_some() {
            check_exists(&dir.join("physfn"), &dir.join("physfn"))?;
        }
        for (i, _) in &f.vfs {
            let link = dir.join(format!("virtfn{i}"));
            check_exists(&link, &link)?;
        }
        Ok(f)
    }

    /// Read one netdev in the root's network namespace view; `None` if absent.
    /// `default_route` is filled from `proc/net/route` and `ipv6_route`.
    pub fn netdev(&self, name: &str) -> Result<Option<Netdev>> {
        let routes = default_route_netdevs(&self.root)?;
        read_netdev(&self.root, name, &routes)
    }

    /// Read one RDMA device; `None` if absent.
    pub fn rdma_device(&self, name: &str) -> Result<Option<RdmaDevice>> {
        let Some(mut d) = read_rdma_device(&self.root, name)? else {
            return Ok(None);
        };
        let mut chars = char_devices(&self.root, |_| None)?;
        d.char_devices = chars.remove(name).unwrap_or_default();
        Ok(Some(d))
    }

    /// The soft RDMA devices (rxe, siw) created on netdev `name`, sorted. They have no
    /// PCI function of their own and name their netdev only in `parent`, so a function's
    /// `infiniband/` directory does not list them. One listing of `/sys/class/infiniband`;
    /// `parent` is read only for entries without a PCI parent.
    pub fn rdma_devices_on_netdev(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for dev in list_dir(&self.root.join("sys/class/infiniband"))? {
            if let Some(d) = read_rdma_device(&self.root, &dev)?
                && d.parent.as_deref() == Some(name)
            {
                out.push(dev);
            }
        }
        Ok(out)
    }

    /// The host's RDMA netns mode.
    pub fn netns_mode(&self) -> Result<RdmaNetnsMode> {
        read_netns_mode(&self.root)
    }

    /// Read everything.
    pub fn inventory(&self) -> Result<Inventory> {
        let root = &self.root;
        let mut functions = BTreeMap::new();
        let dev_dir = devices_dir(root);
        // Every Linux host has it (even without PCI devices); without it the root is wrong,
        // and an empty inventory would silently advertise nothing.
        if !dev_dir.is_dir() {
            return Err(HcaError::NoSysfs { path: dev_dir });
        }
        for name in list_dir(&dev_dir)? {
            let Ok(address) = name.parse::<PciAddress>() else {
                continue;
            };
            let Some(dir) = resolve_dir(root, &dev_dir.join(&name))? else {
                continue; // removed while we listed
            };
            let f = read_function(root, &dir, address.clone(), false)?;
            functions.insert(address, f);
        }
        // Every physfn/virtfn must name a function we found (a dangling link is an error).
        for f in functions.values() {
            let links = f
                .physfn
                .iter()
                .map(|pf| ("physfn".to_string(), pf))
                .chain(f.vfs.iter().map(|(i, vf)| (format!("virtfn{i}"), vf)));
            for (name, target) in links {
                if !functions.contains_key(target) {
                    let link = dev_dir.join(f.address.as_str()).join(name);
                    return Err(HcaError::DanglingLink {
                        target: std::fs::read_link(&link)
                            .unwrap_or_else(|_| PathBuf::from(target.as_str())),
                        path: link,
                    });
                }
            }
        }
        // VF indexes from the PF side: one pass instead of a scan per VF.
        let relations: Vec<(PciAddress, u32, PciAddress)> = functions
            .values()
            .flat_map(|pf| {
                pf.vfs
                    .iter()
                    .map(|(i, vf)| (vf.clone(), *i, pf.address.clone()))
            })
            .collect();
        for (vf, idx, pf) in relations {
            if let Some(f) = functions.get_mut(&vf)
                && f.physfn.as_ref() == Some(&pf)
            {
                f.vf_index = Some(idx);
            }
        }

        let routes = default_route_netdevs(root)?;
        let mut netdevs = BTreeMap::new();
        for name in list_dir(&root.join("sys/class/net"))? {
            if let Some(n) = read_netdev(root, &name, &routes)? {
                if let Some(f) = n.pci_address.as_ref().and_then(|a| functions.get_mut(a)) {
                    f.netdevs.push(name.clone()); // names come sorted
                }
                netdevs.insert(name, n);
            }
        }

        let mut rdma_devices = BTreeMap::new();
        for name in list_dir(&root.join("sys/class/infiniband"))? {
            if let Some(mut d) = read_rdma_device(root, &name)? {
                if let Some(f) = d.pci_address.as_ref().and_then(|a| functions.get_mut(a)) {
                    f.rdma_devices.push(name.clone());
                }
                // A soft device (rxe) belongs to the PCI function of its parent netdev.
                if d.pci_address.is_none()
                    && let Some(pci) = d
                        .parent
                        .as_ref()
                        .and_then(|p| netdevs.get(p))
                        .and_then(|n: &Netdev| n.pci_address.clone())
                {
                    if let Some(f) = functions.get_mut(&pci)
                        && !f.rdma_devices.contains(&name)
                    {
                        f.rdma_devices.push(name.clone());
                    }
                    d.pci_address = Some(pci);
                }
                rdma_devices.insert(name, d);
            }
        }
        // Soft devices have no directory under the PCI function, so a function counts as
        // having a sole RDMA device only by its own (`device`-linked) ones.
        let mut own: BTreeMap<&PciAddress, Vec<&str>> = BTreeMap::new();
        for d in rdma_devices.values().filter(|d| d.parent.is_none()) {
            if let Some(pci) = &d.pci_address {
                own.entry(pci).or_default().push(&d.name);
            }
        }
        let mut chars = char_devices(root, |pci| match own.get(pci).map(Vec::as_slice) {
            Some([only]) => Some(only.to_string()),
            _ => None,
        })?;
        for (name, d) in rdma_devices.iter_mut() {
            d.char_devices = chars.remove(name).unwrap_or_default();
        }
        Ok(Inventory {
            functions,
            netdevs,
            rdma_devices,
            netns_mode: read_netns_mode(root)?,
        })
    }
}

/// Everything read from one host at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inventory {
    /// PCI functions by address.
    pub functions: BTreeMap<PciAddress, PciFunction>,
    /// Netdevs (in the root's netns view) by name.
    pub netdevs: BTreeMap<String, Netdev>,
    /// RDMA devices by name. `pci_address` is the device's own PCI function, or for a soft
    /// device (rxe) the PCI function of its parent netdev.
    pub rdma_devices: BTreeMap<String, RdmaDevice>,
    /// Host RDMA netns mode.
    pub netns_mode: RdmaNetnsMode,
}

impl Inventory {
    /// One function by address.
    pub fn function(&self, address: &PciAddress) -> Option<&PciFunction> {
        self.functions.get(address)
    }

    /// The netdevs of a function that exist in the netdev table.
    pub fn netdevs_of<'a>(&'a self, f: &'a PciFunction) -> impl Iterator<Item = &'a Netdev> + 'a {
        f.netdevs.iter().filter_map(|n| self.netdevs.get(n))
    }

    /// The RDMA devices of a function (its own and soft devices on its netdevs).
    pub fn rdma_of<'a>(&'a self, f: &'a PciFunction) -> impl Iterator<Item = &'a RdmaDevice> + 'a {
        f.rdma_devices
            .iter()
            .filter_map(|n| self.rdma_devices.get(n))
    }

    /// Link type of the function's first netdev.
    pub fn link_type_of(&self, f: &PciFunction) -> Option<crate::LinkType> {
        self.netdevs_of(f).next().map(|n| n.link_type)
    }

    /// Whether any netdev of the function carries a default route.
    pub fn carries_default_route(&self, f: &PciFunction) -> bool {
        self.netdevs_of(f).any(|n| n.default_route)
    }

    /// The PF netdev names of a VF's PF (empty for a PF or unknown PF).
    pub fn pf_netdevs(&self, f: &PciFunction) -> Vec<String> {
        f.physfn
            .as_ref()
            .and_then(|pf| self.functions.get(pf))
            .map(|pf| pf.netdevs.clone())
            .unwrap_or_default()
    }
}
