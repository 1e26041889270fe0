//! Broken trees give errors that name the path; never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rdma_hca::{HcaError, Host};
use simhost::{Profile, SimHost};
use std::os::unix::fs::symlink;
use std::path::Path;

fn cx6() -> (tempfile::TempDir, SimHost) {
    let dir = simhost::tempdir().unwrap();
    let sim = SimHost::create(dir.path(), Profile::Cx6Dx).unwrap();
    (dir, sim)
}

fn inventory_err(root: &Path) -> HcaError {
    Host::new(root).inventory().unwrap_err()
}

#[test]
fn dangling_virtfn() {
    let (_d, sim) = cx6();
    let pf = sim.dev_dir(&sim.pf_address(0));
    std::fs::remove_file(pf.join("virtfn9")).ok();
    symlink("../0000:3b:1f.7", pf.join("virtfn9")).unwrap();
    let e = inventory_err(sim.root());
    assert!(matches!(e, HcaError::DanglingLink { .. }), "{e}");
    assert!(e.to_string().contains("virtfn9"), "{e}");
}

#[test]
fn non_numeric_numvfs() {
    let (_d, sim) = cx6();
    let f = sim.dev_dir(&sim.pf_address(1)).join("sriov_numvfs");
    std::fs::write(&f, "eight\n").unwrap();
    let e = inventory_err(sim.root());
    assert!(matches!(e, HcaError::Malformed { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&f.display().to_string()) && msg.contains("eight"),
        "{msg}"
    );
}

#[test]
fn physfn_outside_root() {
    let (_d, sim) = cx6();
    let vf = sim.dev_dir(&sim.vf_address(0, 1));
    std::fs::remove_file(vf.join("physfn")).unwrap();
    symlink("../../../../../../../../0000:3b:00.0", vf.join("physfn")).unwrap();
    let e = inventory_err(sim.root());
    assert!(matches!(e, HcaError::LinkEscapesRoot { .. }), "{e}");
    assert!(e.to_string().contains("physfn"), "{e}");
    // an absolute link to the host's /sys escapes too
    std::fs::remove_file(vf.join("physfn")).unwrap();
    symlink("/sys/bus/pci/devices/0000:00:00.0", vf.join("physfn")).unwrap();
    let e = inventory_err(sim.root());
    assert!(matches!(e, HcaError::LinkEscapesRoot { .. }), "{e}");
}

#[test]
fn missing_uverbs_node() {
    let (_d, sim) = cx6();
    let node = sim.root().join("dev/infiniband/uverbs3");
    std::fs::remove_file(&node).unwrap();
    let e = inventory_err(sim.root());
    assert!(matches!(e, HcaError::MissingDevNode { .. }), "{e}");
    assert!(e.to_string().contains(&node.display().to_string()), "{e}");
}

#[test]
fn bad_numa_and_vendor() {
    let (_d, sim) = cx6();
    let f = sim.dev_dir(&sim.vf_address(0, 0)).join("numa_node");
    std::fs::write(&f, "zero").unwrap();
    let e = inventory_err(sim.root());
    assert!(e.to_string().contains("numa_node"), "{e}");
    std::fs::write(&f, "-1").unwrap();
    // without uevent the single files are read
    std::fs::remove_file(sim.dev_dir(&sim.vf_address(0, 0)).join("uevent")).unwrap();
    let v = sim.dev_dir(&sim.vf_address(0, 0)).join("vendor");
    std::fs::write(&v, "0xmellanox").unwrap();
    let e = inventory_err(sim.root());
    assert!(e.to_string().contains("vendor"), "{e}");
}

#[test]
fn malformed_route_table() {
    let (_d, sim) = cx6();
    let f = sim.root().join("proc/net/route");
    std::fs::write(&f, "Iface\tDestination\nens1f0 0000\n").unwrap();
    let e = inventory_err(sim.root());
    assert!(e.to_string().contains("proc/net/route"), "{e}");
}

#[test]
fn missing_optional_files_are_fine() {
    let (_d, sim) = cx6();
    let vf = sim.dev_dir(&sim.vf_address(0, 2));
    std::fs::remove_file(vf.join("numa_node")).unwrap();
    std::fs::remove_file(sim.root().join("proc/net/ipv6_route")).unwrap();
    let inv = Host::new(sim.root()).inventory().unwrap();
    let f = inv
        .function(&sim.vf_address(0, 2).parse().unwrap())
        .unwrap();
    assert_eq!(f.numa_node, None);
}

#[test]
fn uevent_and_single_files_agree() {
    let (_d, sim) = cx6();
    let h = Host::new(sim.root());
    let with_uevent = h.inventory().unwrap();
    // the kernel always writes uevent; trees without it fall back to vendor/device/class
    for f in with_uevent.functions.keys() {
        std::fs::remove_file(sim.dev_dir(f.as_str()).join("uevent")).unwrap();
    }
    assert_eq!(h.inventory().unwrap(), with_uevent);
}

#[test]
fn malformed_uevent() {
    let (_d, sim) = cx6();
    let f = sim.dev_dir(&sim.vf_address(0, 1)).join("uevent");
    std::fs::write(&f, "DRIVER=mlx5_core\nPCI_CLASS=20000\nPCI_ID=15B3-101E\n").unwrap();
    let e = inventory_err(sim.root());
    assert!(matches!(e, HcaError::Malformed { .. }), "{e}");
    assert!(
        e.to_string().contains("uevent") && e.to_string().contains("PCI_ID"),
        "{e}"
    );
}

#[test]
fn root_without_sysfs_is_an_error_naming_the_path() {
    let d = simhost::tempdir().unwrap();
    let err = Host::new(d.path().join("nope")).inventory().unwrap_err();
    assert!(
        matches!(&err, HcaError::NoSysfs { path } if path.ends_with("nope/sys/bus/pci/devices")),
        "{err}"
    );
    assert!(
        err.to_string().contains("nope/sys/bus/pci/devices"),
        "{err}"
    );
}
