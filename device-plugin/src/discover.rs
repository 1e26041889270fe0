//! `device-plugin discover`: the inventory with each function's pools, as a table or JSON.
//!
//! JSON shape: `{"devices":[{"pci_address", "vendor", "device", "driver", "numa_node",
//! "pf_pci_address", "vf_index", "netdevs", "link_type", "rdma_devices":[{"name",
//! "char_devices"}], "total_vfs", "num_vfs", "pools", "excluded", ...}]}`; PF fields
//! are null for a VF and VF fields null for a PF; char device paths are as seen inside a
//! container (no root prefix). Only network-class functions (and functions some pool
//! took) are listed.

use crate::config::Config;
use crate::pools::{Exclusion, Pools};
use crate::selectors::MatchContext;
use rdma_hca::{HcaError, Host, Inventory, PciFunction};
use serde::Serialize;
use std::fmt::Write as _;

/// One device row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// PCI address.
    pub pci_address: String,
    /// Vendor id.
    pub vendor: String,
    /// Device id.
    pub device: String,
    /// Bound driver.
    pub driver: Option<String>,
    /// NUMA node.
    pub numa_node: Option<u32>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// PF of a VF.
    pub pf_pci_address: Option<String>,
    /// VF index of a VF.
    pub vf_index: Option<u32>,
    /// Netdevs.
    pub netdevs: Vec<String>,
    /// Link type of its port (`ether`, `infiniband`; a VF without netdev has its PF's).
    pub link_type: Option<String>,
    /// Operational state of its first netdev.
    pub operstate: Option<String>,
    /// Whether a netdev of it carries the default route.
    pub default_route: bool,
    /// RDMA devices.
    pub rdma_devices: Vec<RdmaReport>,
    /// `sriov_totalvfs` of a PF.
    pub total_vfs: Option<u32>,
    /// `sriov_numvfs` of a PF.
    pub num_vfs: Option<u32>,
    /// Full names of the resources it serves.
    pub pools: Vec<String>,
    /// Why it is in no VF pool.
    pub excluded: Option<Exclusion>,
}

/// One RDMA device of a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaReport {
    /// Its name.
    pub name: String,
    /// Its char devices (container paths).
    pub char_devices: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The host's RDMA netns mode.
    pub rdma_netns_mode: rdma_hca::RdmaNetnsMode,
    /// Rows, by PCI address.
    pub devices: Vec<DeviceReport>,
}

fn row(f: &PciFunction, inv: &Inventory, pools: &Pools) -> DeviceReport {
    let cx = MatchContext {
        inventory: inv,
        vhost_net: false,
    };
    let placement = pools
        .placements
        .get(&f.address)
        .cloned()
        .unwrap_or_default();
    let vf = f.is_vf();
    DeviceReport {
        pci_address: f.address.to_string(),
        vendor: f.vendor.clone(),
        device: f.device.clone(),
        driver: f.driver.clone(),
        numa_node: f.numa_node,
        iommu_group: f.iommu_group,
        pf_pci_address: f.physfn.as_ref().map(ToString::to_string),
        vf_index: f.vf_index,
        netdevs: f.netdevs.clone(),
        link_type: cx.link_type(f).map(|l| l.name()),
        operstate: inv.netdevs_of(f).next().map(|n| {
            serde_json::to_value(n.operstate)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }),
        default_route: inv.carries_default_route(f),
        rdma_devices: inv
            .rdma_of(f)
            .map(|r| RdmaReport {
                name: r.name.clone(),
                char_devices: r.char_devices.all(),
            })
            .collect(),
        total_vfs: if vf {
            None
        } else {
            f.sriov.map(|s| s.total_vfs)
        },
        num_vfs: if vf { None } else { f.sriov.map(|s| s.num_vfs) },
        pools: placement.pools,
        excluded: placement.excluded,
    }
}

/// Build the report of `host` under `config`.
pub fn report(host: &Host, config: &Config) -> Result<Report, HcaError> {
    let inv = host.inventory()?;
    let vhost = host.root().join("dev/vhost-net").exists();
    let pools = Pools::compute(&inv, config, vhost);
    Ok(Report {
        rdma_netns_mode: inv.netns_mode,
        devices: inv
            .functions
            .values()
            .filter(|f| pools.placements.contains_key(&f.address))
            .map(|f| row(f, &inv, &pools))
            .collect(),
    })
}

/// The report as a human table.
pub fn table(r: &Report) -> String {
    let headers = [
        "PCI",
        "PF",
        "VF",
        "DRIVER",
        "NUMA",
        "NETDEV",
        "LINK",
        "RDMA",
        "CHAR DEVICES",
        "POOLS",
        "EXCLUDED",
    ];
    let dash = || "-".to_string();
    let rows: Vec<[String; 11]> = r
        .devices
        .iter()
        .map(|d| {
            [
                d.pci_address.clone(),
                d.pf_pci_address.clone().unwrap_or_else(dash),
                d.vf_index.map_or_else(
                    || {
                        d.num_vfs
                            .map_or_else(dash, |n| format!("{n}/{}", d.total_vfs.unwrap_or(0)))
                    },
                    |i| i.to_string(),
                ),
                d.driver.clone().unwrap_or_else(|| "(none)".into()),
                d.numa_node.map_or_else(dash, |n| n.to_string()),
                if d.netdevs.is_empty() {
                    dash()
                } else {
                    let mut s = d.netdevs.join(",");
                    if d.default_route {
                        s.push('*');
                    }
                    s
                },
                d.link_type.clone().unwrap_or_else(dash),
                if d.rdma_devices.is_empty() {
                    dash()
                } else {
                    d.rdma_devices
                        .iter()
                        .map(|x| x.name.clone())
                        .collect::<Vec<_>>()
                        .join(",")
                },
                {
                    let c: Vec<String> = d
                        .rdma_devices
                        .iter()
                        .flat_map(|x| x.char_devices.iter())
                        .filter(|p| !p.ends_with("/rdma_cm"))
                        .map(|p| p.trim_start_matches("/dev/infiniband/").to_string())
                        .collect();
                    if c.is_empty() { dash() } else { c.join(",") }
                },
                if d.pools.is_empty() {
                    dash()
                } else {
                    d.pools.join(",")
                },
                d.excluded.map_or_else(dash, |e| e.to_string()),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &headers);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    let _ = writeln!(
        out,
        "{} devices; * = carries the default route; RDMA netns mode: {}",
        r.devices.len(),
        serde_json::to_value(r.rdma_netns_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use simhost::{Profile, SimHost};

    #[test]
    fn table_lists_every_device_with_reasons() {
        let d = crate::testutil::tempdir();
        let h = SimHost::create(d.path(), Profile::Mixed).unwrap();
        let r = report(&Host::new(d.path()), &Config::embedded()).unwrap();
        assert_eq!(r.devices.len(), 9);
        let t = table(&r);
        assert_eq!(t.lines().count(), 11, "{t}");
        let vf6 = t
            .lines()
            .find(|l| l.starts_with(&h.vf_address(0, 6)))
            .unwrap();
        assert!(
            vf6.contains("(none)") && vf6.ends_with("no driver"),
            "{vf6}"
        );
        let pf = t.lines().find(|l| l.starts_with(&h.pf_address(0))).unwrap();
        assert!(
            pf.contains("8/8") && pf.contains("rdma/hca") && pf.ends_with("PF with VFs enabled"),
            "{pf}"
        );
    }
}
