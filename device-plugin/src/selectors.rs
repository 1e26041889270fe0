//! Device selectors: which PCI functions a resource takes.
//!
//! Semantics follow sriov-network-device-plugin and k8s-rdma-shared-dev-plugin: every
//! selector that is set must match (AND); within one selector's list any value matches
//! (OR); an empty list does not filter. A resource may carry several selector sets
//! (sriov-network-device-plugin's list form): a device matches when any set matches,
//! and the first matching set is the one recorded.

use rdma_hca::{Inventory, LinkType, PciAddress, PciFunction};
use std::fmt;
use std::str::FromStr;

/// Which kind of function a selector set considers. Not a config key: the built-in
/// resources (`rdma/hca` over PFs, `rdma/vhca` over VFs) use it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FunctionFilter {
    /// PFs and VFs alike.
    #[default]
    Any,
    /// Only functions that are not VFs.
    PfOnly,
    /// Only VFs.
    VfOnly,
}

/// One `pfNames` entry: a PF netdev name and optional VF index ranges
/// (`ens1f0#0,2-7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfNameSelector {
    /// The PF netdev name.
    pub pf_name: String,
    /// Inclusive VF index ranges; `None` = every VF of the PF (and the PF itself).
    pub ranges: Option<Vec<(u32, u32)>>,
}

impl PfNameSelector {
    /// Whether the VF index `idx` is selected.
    pub fn covers(&self, idx: u32) -> bool {
        match &self.ranges {
            None => true,
            Some(r) => r.iter().any(|&(a, b)| (a..=b).contains(&idx)),
        }
    }
}

impl FromStr for PfNameSelector {
    type Err = String;

    /// Parses `name` or `name#a,b-c`: indexes are decimal, ranges inclusive, `b <= c`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, ranges) = match s.split_once('#') {
            None => (s, None),
            Some((n, r)) => (n, Some(r)),
        };
        if name.is_empty() {
            return Err("has no PF name before '#'".into());
        }
        let ranges = match ranges {
            None => None,
            Some(r) => {
                let mut out = Vec::new();
                for part in r.split(',') {
                    let num = |t: &str| {
                        t.trim()
                            .parse::<u32>()
                            .map_err(|_| format!("has a VF index {t:?} that is not a number"))
                    };
                    let (a, b) = match part.split_once('-') {
                        None => (num(part)?, num(part)?),
                        Some((a, b)) => (num(a)?, num(b)?),
                    };
                    if a > b {
                        return Err(format!(
                            "has a VF range {part:?} whose start exceeds its end"
                        ));
                    }
                    out.push((a, b));
                }
                Some(out)
            }
        };
        Ok(PfNameSelector {
            pf_name: name.to_string(),
            ranges,
        })
    }
}

impl fmt::Display for PfNameSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pf_name)?;
        if let Some(r) = &self.ranges {
            let parts: Vec<String> = r
                .iter()
                .map(|&(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            write!(f, "#{}", parts.join(","))?;
        }
        Ok(())
    }
}

/// Parse a `linkTypes` value: `ether`/`ethernet`/`eth`, `infiniband`/`ib`, or an ARPHRD number.
pub fn parse_link_type(s: &str) -> Option<LinkType> {
    match s.to_ascii_lowercase().as_str() {
        "ether" | "ethernet" | "eth" => Some(LinkType::Ether),
        "infiniband" | "ib" => Some(LinkType::Infiniband),
        other => other.parse::<u32>().ok().map(LinkType::from_arphrd),
    }
}

/// One set of selectors. The field names are the JSON keys of the config formats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    /// `vendors`: PCI vendor ids (`15b3`).
    pub vendors: Vec<String>,
    /// `devices` (sriov-network-device-plugin) / `deviceIDs` (rdma-shared): PCI device ids.
    pub devices: Vec<String>,
    /// `drivers`: bound driver names.
    pub drivers: Vec<String>,
    /// `pciAddresses`: the function's own address.
    pub pci_addresses: Vec<PciAddress>,
    /// `pfNames`: PF netdev names with optional VF index ranges.
    pub pf_names: Vec<PfNameSelector>,
    /// `rootDevices`: the PF's PCI address (a PF's own address for a PF).
    pub root_devices: Vec<PciAddress>,
    /// `linkTypes`: link layer of the function's port.
    pub link_types: Vec<LinkType>,
    /// `ifNames` (rdma-shared; also its old `devices` list): the function's netdev names.
    pub if_names: Vec<String>,
    /// `isRdma`: the function must have an RDMA device.
    pub is_rdma: bool,
    /// `needVhostNet`: the host must have `/dev/vhost-net`.
    pub need_vhost_net: bool,
    /// Built-in: the function must be a netdev function: bound to a kernel network driver
    /// (not vfio-pci or a uio driver). Its netdev need not be visible: a VF whose netdev
    /// the CNI moved into a pod's netns stays in its pool.
    pub need_netdev: bool,
    /// Built-in: PFs, VFs or both.
    pub functions: FunctionFilter,
}

/// What a selector looks at besides the function itself.
#[derive(Debug, Clone, Copy)]
pub struct MatchContext<'a> {
    /// The whole inventory (PF of a VF, netdevs, RDMA devices).
    pub inventory: &'a Inventory,
    /// Whether `/dev/vhost-net` exists on the host.
    pub vhost_net: bool,
}

impl MatchContext<'_> {
    /// Link type of a function's port: its own netdev's, else (a VF bound to vfio or
    /// unbound) its PF's.
    pub fn link_type(&self, f: &PciFunction) -> Option<LinkType> {
        let inv = self.inventory;
        inv.link_type_of(f).or_else(|| {
            f.physfn
                .as_ref()
                .and_then(|pf| inv.function(pf))
                .and_then(|pf| inv.link_type_of(pf))
        })
    }

    /// PF netdev names: a VF's PF's netdevs, or a PF's own.
    fn pf_names(&self, f: &PciFunction) -> Vec<String> {
        if f.is_vf() {
            self.inventory.pf_netdevs(f)
        } else {
            f.netdevs.clone()
        }
    }
}

fn any_eq(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(v))
}

impl Selectors {
    /// Whether `f` matches every selector that is set.
    pub fn matches(&self, f: &PciFunction, cx: &MatchContext<'_>) -> bool {
        match self.functions {
            FunctionFilter::Any => {}
            FunctionFilter::PfOnly if f.is_vf() => return false,
            FunctionFilter::VfOnly if !f.is_vf() => return false,
            _ => {}
        }
        if !self.vendors.is_empty() && !any_eq(&self.vendors, &f.vendor) {
            return false;
        }
        if !self.devices.is_empty() && !any_eq(&self.devices, &f.device) {
            return false;
        }
        if !self.drivers.is_empty() {
            match &f.driver {
                Some(d) if self.drivers.iter().any(|x| x == d) => {}
                _ => return false,
            }
        }
        if !self.pci_addresses.is_empty() && !self.pci_addresses.contains(&f.address) {
            return false;
        }
        if !self.root_devices.is_empty() {
            let root = f.physfn.as_ref().unwrap_or(&f.address);
            if !self.root_devices.contains(root) {
                return false;
            }
        }
        if !self.pf_names.is_empty() {
            let names = cx.pf_names(f);
            let hit = self.pf_names.iter().any(|sel| {
                names.contains(&sel.pf_name)
                    && match (f.vf_index, &sel.ranges) {
                        (Some(i), _) => sel.covers(i),
                        // a PF matches its own name only without a VF range
                        (None, r) => r.is_none() && !f.is_vf(),
                    }
            });
            if !hit {
                return false;
            }
        }
        if !self.link_types.is_empty() {
            match cx.link_type(f) {
                Some(lt) if self.link_types.contains(&lt) => {}
                _ => return false,
            }
        }
        if !self.if_names.is_empty() && !f.netdevs.iter().any(|n| self.if_names.contains(n)) {
            return false;
        }
        if self.is_rdma && cx.inventory.rdma_of(f).next().is_none() {
            return false;
        }
        if self.need_vhost_net && !cx.vhost_net {
            return false;
        }
        if self.need_netdev && !is_netdev_function(f) {
            return false;
        }
        true
    }
}

/// Drivers that hand a function to user space: such a function has no netdev.
pub const USERSPACE_DRIVERS: [&str; 4] = ["vfio-pci", "uio_pci_generic", "igb_uio", "pci-stub"];

/// Whether `f` is a netdev function: it shows a netdev, or is bound to a driver that
/// is not a user-space one (its netdev may live in another netns).
pub fn is_netdev_function(f: &PciFunction) -> bool {
    !f.netdevs.is_empty()
        || f.driver
            .as_deref()
            .is_some_and(|d| !USERSPACE_DRIVERS.contains(&d))
}

/// Index of the first selector set in `sets` that `f` matches; an empty list of sets
/// matches everything (index 0).
pub fn first_match(sets: &[Selectors], f: &PciFunction, cx: &MatchContext<'_>) -> Option<usize> {
    if sets.is_empty() {
        return Some(0);
    }
    sets.iter().position(|s| s.matches(f, cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdma_hca::Host;
    use simhost::{Profile, SimHost};

    fn inv(p: Profile) -> (tempfile::TempDir, SimHost, Inventory) {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), p).unwrap();
        let i = Host::new(d.path()).inventory().unwrap();
        (d, h, i)
    }

    fn matching(i: &Inventory, s: &Selectors) -> Vec<String> {
        let cx = MatchContext {
            inventory: i,
            vhost_net: false,
        };
        i.functions
            .values()
            .filter(|f| s.matches(f, &cx))
            .map(|f| f.address.to_string())
            .collect()
    }

    #[test]
    fn pf_name_ranges_parse_and_print() {
        let s: PfNameSelector = "ens1f0#0,2-7".parse().unwrap();
        assert_eq!(s.pf_name, "ens1f0");
        assert_eq!(s.ranges, Some(vec![(0, 0), (2, 7)]));
        assert!(s.covers(0) && !s.covers(1) && s.covers(2) && s.covers(7) && !s.covers(8));
        assert_eq!(s.to_string(), "ens1f0#0,2-7");
        let all: PfNameSelector = "ens1f1".parse().unwrap();
        assert!(all.ranges.is_none() && all.covers(63));
        for bad in ["#1", "ens1f0#x", "ens1f0#3-1", "ens1f0#", "ens1f0#1-"] {
            assert!(bad.parse::<PfNameSelector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn link_type_names() {
        assert_eq!(parse_link_type("ether"), Some(LinkType::Ether));
        assert_eq!(parse_link_type("IB"), Some(LinkType::Infiniband));
        assert_eq!(parse_link_type("32"), Some(LinkType::Infiniband));
        assert_eq!(parse_link_type("bogus"), None);
    }

    #[test]
    fn pf_names_with_ranges_pick_vf_indexes() {
        let (_d, h, i) = inv(Profile::Cx6Dx);
        let s = Selectors {
            pf_names: vec!["ens1f0#0,2-3".parse().unwrap()],
            ..Default::default()
        };
        let want: Vec<String> = [0, 2, 3].iter().map(|&v| h.vf_address(0, v)).collect();
        assert_eq!(matching(&i, &s), want);
        // without a range: the PF itself and its 8 VFs
        let s = Selectors {
            pf_names: vec!["ens1f1".parse().unwrap()],
            ..Default::default()
        };
        let m = matching(&i, &s);
        assert_eq!(m.len(), 9);
        assert!(m.contains(&h.pf_address(1)));
    }

    #[test]
    fn vendor_device_driver_and_root_devices() {
        let (_d, h, i) = inv(Profile::Mixed);
        let s = Selectors {
            vendors: vec!["15b3".into()],
            devices: vec!["1018".into()],
            drivers: vec!["vfio-pci".into()],
            ..Default::default()
        };
        assert_eq!(
            matching(&i, &s),
            vec![h.vf_address(0, 4), h.vf_address(0, 5)]
        );
        let s = Selectors {
            root_devices: vec![h.pf_address(0).parse().unwrap()],
            functions: FunctionFilter::VfOnly,
            ..Default::default()
        };
        assert_eq!(matching(&i, &s).len(), 8);
        let s = Selectors {
            vendors: vec!["8086".into()],
            ..Default::default()
        };
        assert!(matching(&i, &s).is_empty());
    }

    #[test]
    fn rdma_netdev_and_link_type_selectors() {
        let (_d, h, i) = inv(Profile::Mixed);
        let rdma = Selectors {
            is_rdma: true,
            functions: FunctionFilter::VfOnly,
            ..Default::default()
        };
        let want: Vec<String> = (0..4).map(|v| h.vf_address(0, v)).collect();
        assert_eq!(matching(&i, &rdma), want);
        let netdev = Selectors {
            need_netdev: true,
            functions: FunctionFilter::VfOnly,
            ..Default::default()
        };
        assert_eq!(matching(&i, &netdev), want);
        // vfio VFs take their PF's link type
        let eth = Selectors {
            link_types: vec![LinkType::Ether],
            drivers: vec!["vfio-pci".into()],
            ..Default::default()
        };
        assert_eq!(matching(&i, &eth).len(), 2);
        let (_d2, _h2, ib) = inv(Profile::Infiniband);
        let ibsel = Selectors {
            link_types: vec![LinkType::Infiniband],
            ..Default::default()
        };
        assert_eq!(matching(&ib, &ibsel).len(), 10);
        assert!(matching(&ib, &eth).is_empty());
    }

    #[test]
    fn netdev_moved_into_a_pod_keeps_the_vf_selected() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Mixed).unwrap();
        h.remove_netdev(&h.vf_address(0, 1), &h.vf_netdev(0, 1))
            .unwrap();
        let i = Host::new(d.path()).inventory().unwrap();
        let s = Selectors {
            need_netdev: true,
            functions: FunctionFilter::VfOnly,
            ..Default::default()
        };
        let want: Vec<String> = (0..4).map(|v| h.vf_address(0, v)).collect();
        assert_eq!(matching(&i, &s), want);
    }

    #[test]
    fn vhost_net_and_if_names() {
        let (_d, h, i) = inv(Profile::Cx6Dx);
        let s = Selectors {
            need_vhost_net: true,
            ..Default::default()
        };
        assert!(matching(&i, &s).is_empty());
        let s = Selectors {
            if_names: vec![h.vf_netdev(1, 3)],
            ..Default::default()
        };
        assert_eq!(matching(&i, &s), vec![h.vf_address(1, 3)]);
    }

    #[test]
    fn first_matching_set_wins() {
        let (_d, h, i) = inv(Profile::Cx6Dx);
        let cx = MatchContext {
            inventory: &i,
            vhost_net: false,
        };
        let sets = vec![
            Selectors {
                pf_names: vec!["ens1f1".parse().unwrap()],
                ..Default::default()
            },
            Selectors {
                vendors: vec!["15b3".into()],
                ..Default::default()
            },
        ];
        let vf10 = i.function(&h.vf_address(1, 0).parse().unwrap()).unwrap();
        let vf00 = i.function(&h.vf_address(0, 0).parse().unwrap()).unwrap();
        assert_eq!(first_match(&sets, vf10, &cx), Some(0));
        assert_eq!(first_match(&sets, vf00, &cx), Some(1));
        assert_eq!(first_match(&sets[..1], vf00, &cx), None);
    }
}
