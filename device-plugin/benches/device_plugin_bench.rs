//! Benchmarks of the device plugin on the 1024-VF simulated host (`Profile::Large`):
//!
//! 1. discovery: `Host::inventory` + `Pools::compute` (target < 50 ms);
//! 2. cold start of the real daemon to every resource registered with a minimal kubelet
//!    `Registration` server;
//! 3. daemon RSS once idle (resources registered, ListAndWatch streams open) (target < 15 MB);
//! 4. Allocate latency p50/p99 over 10k calls over the real unix socket (target p99 < 1 ms).
//!
//! `cargo bench -p device-plugin` (or `-- --quick` for fewer iterations). The tree lives
//! on /dev/shm when present.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use device_plugin::config::Config;
use device_plugin::pools::Pools;
use proto::deviceplugin::v1beta1 as dp;
use proto::unix::{UnixServer, connect_unix};
use rdma_hca::Host;
use simhost::{Profile, SimHost};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::service::Routes;

struct Recorder(mpsc::UnboundedSender<(String, Instant)>);

#[tonic::async_trait]
impl dp::registration_server::Registration for Recorder {
    async fn register(
        &self,
        req: tonic::Request<dp::RegisterRequest>,
    ) -> Result<tonic::Response<dp::Empty>, tonic::Status> {
        let _ = self
            .0
            .send((req.into_inner().resource_name, Instant::now()));
        Ok(tonic::Response::new(dp::Empty {}))
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("dp-bench")
        .tempdir_in(base)
        .unwrap();
    let t = Instant::now();
    let host = SimHost::create(dir.path().join("host"), Profile::Large).unwrap();
    println!(
        "fixture: Large profile (16 PFs x 64 VFs) written in {}",
        ms(t.elapsed())
    );

    // 1. discovery
    let config = Config::embedded();
    let h = Host::new(host.root());
    let iters = if quick { 5 } else { 30 };
    let mut inv_t = Vec::new();
    let mut all_t = Vec::new();
    for _ in 0..iters {
        let t0 = Instant::now();
        let inv = h.inventory().unwrap();
        let t1 = Instant::now();
        let pools = Pools::compute(&inv, &config, false);
        let t2 = Instant::now();
        assert_eq!(pools.placements.len(), 1040);
        inv_t.push(t1 - t0);
        all_t.push(t2 - t0);
    }
    inv_t.sort();
    all_t.sort();
    println!(
        "discovery (inventory of 1040 functions): min {} median {} max {}",
        ms(inv_t[0]),
        ms(pct(&inv_t, 0.5)),
        ms(inv_t[inv_t.len() - 1])
    );
    println!(
        "discovery + pools:                       min {} median {} max {}  (target < 50 ms)",
        ms(all_t[0]),
        ms(pct(&all_t, 0.5)),
        ms(all_t[all_t.len() - 1])
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(daemon_benches(dir.path(), host.root(), quick));
}

async fn daemon_benches(dir: &Path, root: &Path, quick: bool) {
    let runs = if quick { 2 } else { 5 };
    let mut cold = Vec::new();
    for run in 0..runs {
        let dp_dir = dir.join(format!("dp{run}"));
        std::fs::create_dir_all(&dp_dir).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let kubelet = UnixServer::spawn(
            dp_dir.join("kubelet.sock"),
            Routes::new(dp::registration_server::RegistrationServer::new(Recorder(
                tx,
            ))),
        )
        .unwrap();
        // the embedded default (no config file): rdma/hca + rdma/vhca in one daemon
        assert!(!Path::new(device_plugin::config::DEFAULT_CONFIG_FILE).exists());
        let t0 = Instant::now();
        let mut kid = Command::new(env!("CARGO_BIN_EXE_device-plugin"))
            .arg("--root")
            .arg(root)
            .arg("--device-plugin-path")
            .arg(&dp_dir)
            .arg("--device-info-dir")
            .arg(dir.join("devinfo"))
            .arg("--log-level")
            .arg("warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 2 {
            let (name, _at) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .expect("registration within 20 s")
                .unwrap();
            seen.insert(name);
        }
        cold.push(t0.elapsed());
        if run + 1 < runs {
            let _ = kid.kill();
            let _ = kid.wait();
            let _ = kubelet.shutdown().await;
            continue;
        }

        // idle RSS: registered, ListAndWatch open as kubelet keeps it
        let mut streams = Vec::new();
        for sock in ["rdma_vhca.sock", "rdma_hca.sock"] {
            let mut c = dp::device_plugin_client::DevicePluginClient::new(
                connect_unix(dp_dir.join(sock)).await.unwrap(),
            );
            let mut s = c.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
            let first = s.message().await.unwrap().unwrap();
            assert!(first.devices.len() >= 1000);
            streams.push(s);
        }
        // let the daemons settle after startup before sampling (a measurement, not a sync)
        tokio::time::sleep(Duration::from_millis(500)).await;
        let pid = kid.id();
        println!(
            "daemon RSS idle (rdma/hca x1000 + rdma/vhca x1024 registered, 2 streams open): {} KiB  (target < 15 MB)",
            rss_kib(pid)
        );

        // Allocate latency over the unix socket
        let mut c = dp::device_plugin_client::DevicePluginClient::new(
            connect_unix(dp_dir.join("rdma_vhca.sock")).await.unwrap(),
        );
        let ids: Vec<String> = {
            let mut s = c.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
            s.message()
                .await
                .unwrap()
                .unwrap()
                .devices
                .into_iter()
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(ids.len(), 1024);
        let n = if quick { 2000 } else { 10_000 };
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let req = dp::AllocateRequest {
                container_requests: vec![dp::ContainerAllocateRequest {
                    devices_ids: vec![ids[i % ids.len()].clone()],
                }],
            };
            let t = Instant::now();
            let r = c.allocate(req).await.unwrap().into_inner();
            lat.push(t.elapsed());
            assert_eq!(r.container_responses.len(), 1);
        }
        lat.sort();
        println!(
            "Allocate (1 VF of 1024, env + _INFO + device-info file), {n} calls: p50 {} p99 {} max {}  (target p99 < 1 ms)",
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(lat[lat.len() - 1])
        );
        let mut c = dp::device_plugin_client::DevicePluginClient::new(
            connect_unix(dp_dir.join("rdma_hca.sock")).await.unwrap(),
        );
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            let req = dp::AllocateRequest {
                container_requests: vec![dp::ContainerAllocateRequest {
                    devices_ids: vec![format!("hca-{}", i % 1000)],
                }],
            };
            let t = Instant::now();
            c.allocate(req).await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "Allocate rdma/hca, {n} calls: p50 {} p99 {} max {}",
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(lat[lat.len() - 1])
        );
        println!("daemon RSS after the Allocate runs: {} KiB", rss_kib(pid));
        drop(streams);
        let _ = kid.kill();
        let _ = kid.wait();
        let _ = kubelet.shutdown().await;
    }
    cold.sort();
    println!(
        "cold start to all resources registered (embedded default, 1024 VFs), {} runs: min {} median {} max {}",
        cold.len(),
        ms(cold[0]),
        ms(pct(&cold, 0.5)),
        ms(cold[cold.len() - 1])
    );
}
