//! An edit of the ConfigMap reaches the running daemon without a restart, as the
//! DaemonSet mounts it: the whole ConfigMap at /etc/pcidp (no `subPath`, which kubelet
//! never updates), in the layout kubelet's volume writer keeps (`config.json ->
//! ..data/config.json`, `..data -> ..<timestamp>`, and an update swaps `..data` by
//! renaming a new symlink over it).
//!
//! Runs as any user: the real `device-plugin` binary on a simulated host, against the
//! kubelet simulator; no namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use deploy_manifests::{DEFAULT_CONFIG_FILE, Deployment};
use e2e_common::project_bin;
use node_tests::simhost::{Profile, SimHost};
use node_tests::{DEFAULT_TIMEOUT, KubeletSim};

/// A ConfigMap volume: writes `data` as version `version` and points `..data` at it
/// atomically, as kubelet's AtomicWriter does; the key links are made once.
fn write_configmap_version(dir: &Path, version: u32, data: &[(&str, String)]) {
    let ts = dir.join(format!("..2026_11_23_19_00_00.{version}"));
    std::fs::create_dir(&ts).unwrap();
    for (key, text) in data {
        std::fs::write(ts.join(key), text).unwrap();
    }
    let tmp_link = dir.join("..data_tmp");
    symlink(ts.file_name().unwrap(), &tmp_link).unwrap();
    std::fs::rename(&tmp_link, dir.join("..data")).unwrap();
    for (key, _) in data {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(key), &link).unwrap();
        }
    }
}

/// Kills the daemon (by its pid) when the test ends, also on failure.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_edit_reaches_the_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimHost::create(tmp.path().join("root"), Profile::Cx6Dx).unwrap();
    let deployed = Deployment::load(&deploy_manifests::deploy_dir()).unwrap();
    let container = deployed.daemon_containers()[0];
    let key = deployed.config_key(container).unwrap();
    assert_eq!(
        Path::new(DEFAULT_CONFIG_FILE).file_name().unwrap(),
        key.as_str()
    );
    let original = deployed.config_files()[&key].clone();

    let pcidp = tmp.path().join("pcidp");
    std::fs::create_dir(&pcidp).unwrap();
    write_configmap_version(&pcidp, 1, &[(&key, original.clone())]);

    let kubelet = KubeletSim::start(tmp.path().join("device-plugins"))
        .await
        .unwrap();
    let log = tmp.path().join("daemon.log");
    let _daemon = Killed(
        Command::new(project_bin("device-plugin", "device-plugin"))
            .arg("--root")
            .arg(sim.root())
            .arg("--config-file")
            .arg(pcidp.join(&key))
            .arg("--device-plugin-path")
            .arg(kubelet.dir())
            .arg("--device-info-dir")
            .arg(tmp.path().join("devinfo"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let before: Vec<String> = deployed
        .config(&key)
        .unwrap()
        .resources
        .iter()
        .map(|r| r.full_name())
        .collect();
    let names: Vec<&str> = before.iter().map(String::as_str).collect();
    kubelet
        .wait_all_registered(&names, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // The operator adds a pool: ens1f1's VFs 4-7 for a new resource. The pools are tried
    // in file order, so it goes first to take them from mlnx_sriov_rdma.
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    let list = config["resourceList"].as_array_mut().unwrap();
    list.insert(
        0,
        serde_json::json!({
            "resourceName": "mlnx_sriov_edit",
            "resourcePrefix": "nvidia.com",
            "selectors": {"vendors": ["15b3"], "pfNames": ["ens1f1#4-7"]}
        }),
    );
    write_configmap_version(
        &pcidp,
        2,
        &[(&key, serde_json::to_string_pretty(&config).unwrap())],
    );

    let added = kubelet
        .wait_healthy_count("nvidia.com/mlnx_sriov_edit", 4, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let ids: Vec<&str> = added.devices.iter().map(|d| d.id.as_str()).collect();
    let expected: Vec<String> = (4..8).map(|v| sim.vf_address(1, v)).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
    // The VFs moved: the old pool lists the other 12.
    kubelet
        .wait_healthy_count("intel.com/mlnx_sriov_rdma", 12, DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}
