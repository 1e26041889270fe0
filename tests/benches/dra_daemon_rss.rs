//! The daemon's resident memory on the 1024-VF host (simhost `Large`, embedded config),
//! with the device-plugin interface only and with both interfaces (`--dra`): registered
//! with the kubelet simulator (ListAndWatch streams open), and with DRA the node's
//! ResourceSlices published to the API server stand-in and the DRA plugin registered
//! through its registration socket; then again after 100 claims were prepared (CDI specs,
//! device-info files and checkpoint written). Measures; asserts only that each state was
//! reached.
//!
//! `cargo bench -p node-tests --bench dra_daemon_rss` (`DRA_RSS_BIN=<path>`: measure that
//! `device-plugin` binary instead, e.g. one built with other profile settings)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use node_tests::KubeletSim;
use node_tests::apiserver::ApiServer;
use node_tests::dra_kubelet::{ClaimId, DraKubelet};
use serde_json::json;
use simhost::{Profile, SimHost};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER: &str = "sriov.rdma.example.org";
const NODE: &str = "node-a";
const TIMEOUT: Duration = Duration::from_secs(30);
const CLAIMS: u32 = 100;

/// `VmRSS` of `pid`, with its anonymous (heap, stacks) and file-backed (binary) parts.
fn rss(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    format!(
        "{} KiB (anon {} KiB, file {} KiB, threads {})",
        kib("VmRSS:"),
        kib("RssAnon:"),
        kib("RssFile:"),
        kib("Threads:")
    )
}

fn spawn(bin: &Path, dir: &Path, host: &SimHost, dra: bool) -> Child {
    let mut c = Command::new(bin);
    c.arg("--root")
        .arg(host.root())
        .arg("--device-plugin-path")
        .arg(dir.join("dp"))
        .arg("--device-info-dir")
        .arg(dir.join("devinfo"))
        .arg("--pod-resources-socket")
        .arg(dir.join("absent.sock"))
        .args(["--log-level", "warn"])
        .env_remove("NODE_NAME")
        .env_remove("KUBECONFIG")
        .stdout(Stdio::null());
    if dra {
        c.args(node_tests::dra_args(dir, DRIVER))
            .args(["--node-name", NODE])
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"));
    }
    c.spawn().unwrap()
}

async fn settle() {
    // let the daemon finish its start-up work before sampling (a measurement, not a sync)
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn run(bin: &Path, host: &SimHost, dra: bool) {
    let dir = simhost::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("dp")).unwrap();
    let api = ApiServer::start().await.unwrap();
    api.write_kubeconfig(&d.join("kubeconfig")).unwrap();
    for i in 0..CLAIMS {
        let dev = device_plugin::dra::device_name(&host.vf_address(i as usize % 16, i / 16));
        api.seed_claim(
            "bench",
            &format!("claim-{i}"),
            json!({"metadata": {"uid": format!("uid-{i}")},
                   "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "vf"}}]}},
                   "status": {"allocation": {"devices": {"results": [{"request": "vf", "driver": DRIVER,
                       "pool": NODE, "device": dev}]}}}}),
        );
    }
    let kubelet = KubeletSim::start(d.join("dp")).await.unwrap();
    let t0 = Instant::now();
    let mut daemon = spawn(bin, d, host, dra);
    for r in ["rdma/hca", "rdma/vhca"] {
        kubelet
            .wait_devices(r, TIMEOUT, |l| l.len() >= 1000)
            .await
            .unwrap();
    }
    let what = if dra {
        loop {
            if api
                .pool(DRIVER, NODE)
                .is_ok_and(|p| p.devices.len() == 1024)
            {
                break;
            }
            assert!(t0.elapsed() < TIMEOUT, "slices never published");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        "device plugin + DRA (1024 VFs in 8 slices published, DRA plugin registered)"
    } else {
        "device plugin only"
    };
    let mut dra_kubelet = None;
    if dra {
        let reg = d
            .join("plugins_registry")
            .join(format!("{DRIVER}-reg.sock"));
        node_tests::fswait::wait_for_path(&reg, TIMEOUT)
            .await
            .unwrap();
        dra_kubelet = Some(DraKubelet::register(&reg).await.unwrap());
    }
    settle().await;
    let pid = daemon.id();
    println!(
        "daemon RSS idle, {what}: {} (registered after {:.1} ms)",
        rss(pid),
        t0.elapsed().as_secs_f64() * 1e3
    );
    if let Some(k) = dra_kubelet.as_mut() {
        for i in 0..CLAIMS {
            let id = ClaimId {
                namespace: "bench".into(),
                name: format!("claim-{i}"),
                uid: format!("uid-{i}"),
            };
            let r = k.prepare(std::slice::from_ref(&id)).await.unwrap();
            assert!(r[&id.uid].is_ok(), "{r:?}");
        }
        settle().await;
        println!(
            "daemon RSS, device plugin + DRA with {CLAIMS} claims prepared: {}",
            rss(pid)
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn main() {
    let dir = simhost::tempdir().unwrap();
    let host = SimHost::create(dir.path(), Profile::Large).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // built (if need be) before any clock starts; DRA_RSS_BIN measures another build
    let bin = std::env::var_os("DRA_RSS_BIN").map_or_else(
        || node_tests::project_bin("device-plugin", "device-plugin"),
        std::path::PathBuf::from,
    );
    rt.block_on(async {
        run(&bin, &host, false).await;
        run(&bin, &host, true).await;
    });
}
