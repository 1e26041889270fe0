//! `device-plugin discover` run as a process against simulated hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use simhost::{Profile, SimHost};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run the binary; a run that outlives 20 s is killed (a daemon that should have
/// failed must not hang the test).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_device-plugin"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // drain the pipes on threads so a large output cannot block the child
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("device-plugin {args:?} still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// `discover --json` on `root` with the embedded default config.
fn discover_json(root: &Path, config: Option<&Path>) -> Value {
    let mut args = vec!["discover", "--json", "--root", root.to_str().unwrap()];
    if let Some(c) = config {
        args.push("--config-file");
        args.push(c.to_str().unwrap());
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "discover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn device<'a>(v: &'a Value, addr: &str) -> &'a Value {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["pci_address"] == addr)
        .unwrap_or_else(|| panic!("{addr} not listed"))
}

fn rdma_number(d: &Value) -> String {
    d["rdma_devices"][0]["name"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlx5_")
        .to_string()
}

fn char_devices(n: &str) -> Value {
    serde_json::json!([
        format!("/dev/infiniband/uverbs{n}"),
        format!("/dev/infiniband/umad{n}"),
        format!("/dev/infiniband/issm{n}"),
        "/dev/infiniband/rdma_cm"
    ])
}

#[test]
fn cx6dx_pfs_vfs_numa_netdevs_and_default_route() {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
    let v = discover_json(h.root(), None);
    assert_eq!(v["devices"].as_array().unwrap().len(), 18);
    for pf in 0..2usize {
        let p = device(&v, &h.pf_address(pf));
        assert_eq!(p["pf_pci_address"], Value::Null);
        assert_eq!(p["vf_index"], Value::Null);
        assert_eq!(p["total_vfs"], 8);
        assert_eq!(p["num_vfs"], 8);
        assert_eq!(p["numa_node"], pf as u64);
        assert_eq!(p["netdevs"], serde_json::json!([h.pfs()[pf].netdev]));
        assert_eq!(p["link_type"], "ether");
        assert_eq!(p["driver"], "mlx5_core");
        assert_eq!(p["vendor"], "15b3");
        assert_eq!(p["device"], "101d");
        assert_eq!(p["pools"], serde_json::json!(["rdma/hca"]));
        assert_eq!(
            p["rdma_devices"][0]["char_devices"],
            char_devices(&rdma_number(p))
        );
        for vf in 0..8u32 {
            let x = device(&v, &h.vf_address(pf, vf));
            assert_eq!(x["pf_pci_address"], h.pf_address(pf));
            assert_eq!(x["vf_index"], vf);
            assert_eq!(x["total_vfs"], Value::Null);
            assert_eq!(x["num_vfs"], Value::Null);
            assert_eq!(x["numa_node"], pf as u64);
            assert_eq!(x["netdevs"], serde_json::json!([h.vf_netdev(pf, vf)]));
            assert_eq!(x["device"], "101e");
            assert_eq!(x["link_type"], "ether");
            assert_eq!(
                x["rdma_devices"][0]["char_devices"],
                char_devices(&rdma_number(x))
            );
            assert_eq!(x["pools"], serde_json::json!(["rdma/vhca"]));
            assert_eq!(x["excluded"], Value::Null);
        }
    }
    // the PF carrying the default route is never handed out
    let pf0 = device(&v, &h.pf_address(0));
    assert_eq!(pf0["default_route"], true);
    assert_eq!(pf0["excluded"], "default route");
    assert_eq!(
        device(&v, &h.pf_address(1))["excluded"],
        "PF with VFs enabled"
    );
}

#[test]
fn infiniband_link_types() {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Infiniband).unwrap();
    let v = discover_json(h.root(), None);
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 10);
    assert!(devs.iter().all(|x| x["link_type"] == "infiniband"));
    assert!(devs.iter().all(|x| x["numa_node"] == 0));
    for pf in 0..2 {
        assert_eq!(device(&v, &h.pf_address(pf))["total_vfs"], 16);
        assert_eq!(device(&v, &h.pf_address(pf))["num_vfs"], 4);
        for vf in 0..4 {
            let x = device(&v, &h.vf_address(pf, vf));
            assert_eq!(x["vf_index"], vf);
            assert_eq!(x["netdevs"][0], h.vf_netdev(pf, vf));
        }
    }
}

#[test]
fn mixed_vfio_and_unbound_vfs() {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Mixed).unwrap();
    let v = discover_json(h.root(), None);
    for vf in 0..4 {
        let x = device(&v, &h.vf_address(0, vf));
        assert_eq!(x["driver"], "mlx5_core");
        assert_eq!(x["pools"], serde_json::json!(["rdma/vhca"]));
        assert_eq!(x["numa_node"], 1);
    }
    for vf in 4..6 {
        let x = device(&v, &h.vf_address(0, vf));
        assert_eq!(x["driver"], "vfio-pci");
        assert_eq!(x["netdevs"], serde_json::json!([]));
        assert_eq!(x["rdma_devices"], serde_json::json!([]));
        assert!(x["iommu_group"].is_u64());
        // its port's link type, from the PF
        assert_eq!(x["link_type"], "ether");
        assert_eq!(x["excluded"], "no selector matched");
        assert_eq!(x["vf_index"], vf);
    }
    for vf in 6..8 {
        let x = device(&v, &h.vf_address(0, vf));
        assert_eq!(x["driver"], Value::Null);
        assert_eq!(x["excluded"], "no driver");
        assert_eq!(x["pools"], serde_json::json!([]));
    }
    // with a config: vfio VFs land in their pool
    let cfg = d.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"resourceList":[{"resourceName":"cx5_dpdk","resourcePrefix":"nvidia.com","deviceType":"accelerator","selectors":{"drivers":["vfio-pci"]}},
            {"resourceName":"cx5_rdma","selectors":{"isRdma":true,"pfNames":["ens2f0#0-1"]}}]}"#,
    )
    .unwrap();
    let v = discover_json(h.root(), Some(&cfg));
    assert_eq!(
        device(&v, &h.vf_address(0, 4))["pools"],
        serde_json::json!(["nvidia.com/cx5_dpdk"])
    );
    assert_eq!(
        device(&v, &h.vf_address(0, 1))["pools"],
        serde_json::json!(["intel.com/cx5_rdma"])
    );
    assert_eq!(
        device(&v, &h.vf_address(0, 2))["excluded"],
        "no selector matched"
    );
}

#[test]
fn large_host_lists_every_vf() {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Large).unwrap();
    let v = discover_json(h.root(), None);
    let devs = v["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 16 + 1024);
    let vfs = devs
        .iter()
        .filter(|x| x["pools"] == serde_json::json!(["rdma/vhca"]))
        .count();
    assert_eq!(vfs, 1024);
    assert_eq!(device(&v, &h.pf_address(0))["excluded"], "default route");
    assert_eq!(device(&v, &h.vf_address(15, 63))["vf_index"], 63);
    assert_eq!(device(&v, &h.vf_address(15, 63))["numa_node"], 1);
}

#[test]
fn human_table() {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
    let out = run(&["discover", "--root", h.root().to_str().unwrap()]);
    assert!(out.status.success());
    let t = String::from_utf8(out.stdout).unwrap();
    assert!(t.starts_with("PCI"), "{t}");
    let pf0 = t.lines().find(|l| l.starts_with(&h.pf_address(0))).unwrap();
    assert!(
        pf0.contains("ens1f0*") && pf0.ends_with("default route"),
        "{pf0}"
    );
    assert!(t.contains("18 devices"));
}

/// Break a fresh Cx6Dx tree with `damage`, expect a non-zero exit whose message names
/// `want` (a path), and no panic.
fn broken(damage: impl FnOnce(&SimHost) -> String) {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
    let want = damage(&h);
    let dp = h.root().join("dp");
    let daemon = vec!["--device-plugin-path", dp.to_str().unwrap()];
    for args in [vec!["discover", "--json"], vec!["discover"], daemon] {
        let mut args = args.clone();
        args.extend(["--root", h.root().to_str().unwrap()]);
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded on a broken tree");
        assert!(err.contains(&want), "stderr {err:?} does not name {want}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn dangling_virtfn_names_the_link() {
    broken(|h| {
        let link = h.dev_dir(&h.pf_address(0)).join("virtfn3");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("../0000:3b:07.7", &link).unwrap();
        // named through sys/bus/pci/devices, where the reader walks
        format!("{}/virtfn3", h.pf_address(0))
    });
}

#[test]
fn non_numeric_sriov_numvfs_names_the_file() {
    broken(|h| {
        let f = h.dev_dir(&h.pf_address(1)).join("sriov_numvfs");
        std::fs::write(&f, "eight\n").unwrap();
        f.display().to_string()
    });
}

#[test]
fn physfn_escaping_the_root_names_the_link() {
    broken(|h| {
        let link = h.dev_dir(&h.vf_address(0, 1)).join("physfn");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../../../../../etc", &link).unwrap();
        link.display().to_string()
    });
}

#[test]
fn missing_uverbs_node_names_the_dev_path() {
    broken(|h| {
        let node = h.root().join("dev/infiniband/uverbs3");
        std::fs::remove_file(&node).unwrap();
        node.display().to_string()
    });
}

#[test]
fn bad_config_file_is_named_with_its_json_path() {
    let d = simhost::tempdir().unwrap();
    let h = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
    let cfg = d.path().join("bad.json");
    std::fs::write(
        &cfg,
        r#"{"resourceList":[{"resourceName":"ok"},{"resourceName":"a/b"}]}"#,
    )
    .unwrap();
    let out = run(&[
        "discover",
        "--root",
        h.root().to_str().unwrap(),
        "--config-file",
        cfg.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: resourceList[1].resourceName: \"a/b\" must match ^[a-zA-Z0-9_-]+$",
            cfg.display()
        )),
        "{err}"
    );
    let out = run(&[
        "discover",
        "--root",
        h.root().to_str().unwrap(),
        "--config-file",
        "/nonexistent/x.json",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.json"));
}
