//! NodePrepareResources latency of the DRA kubelet plugin, one VF per claim, on the
//! 1024-VF simulated host (`Profile::Large`), over the real `dra.sock` (v1), claims from
//! an in-process ClaimSource (so the API server round trip is not in the figure).
//! Each call prepares a new claim: GET, CDI spec, device-info file and the checkpoint
//! (fsync'd) are all written; NodeUnprepareResources is measured too. Target: prepare
//! p99 < 5 ms. A checkpoint on tmpfs (/dev/shm, when present) hides the disk's fsync:
//! the printed dir says where it was.
//!
//! `cargo bench -p device-plugin --bench dra_prepare_bench` (`-- --quick`: fewer calls).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use device_plugin::config::Config;
use device_plugin::dra::claims::{ClaimSource, ClaimSourceError};
use device_plugin::dra::devices::DraDevices;
use device_plugin::dra::plugin::{DraOptions, DraPlugin};
use device_plugin::dra::{self};
use device_plugin::pools::Pools;
use k8s_openapi::api::resource::v1::ResourceClaim;
use proto::dra::v1;
use proto::unix::connect_unix;
use rdma_hca::Host;
use simhost::{Profile, SimHost};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DRIVER: &str = dra::DEFAULT_DRIVER_NAME;

/// Every claim `c-<i>` (uid `u-<i>`) is allocated `device`.
struct OneDevice {
    device: String,
}

#[tonic::async_trait]
impl ClaimSource for OneDevice {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ClaimSourceError> {
        let uid = name.replacen("c-", "u-", 1);
        let v = serde_json::json!({
            "metadata": {"namespace": namespace, "name": name, "uid": uid},
            "spec": {},
            "status": {"allocation": {"devices": {"results": [
                {"request": "vf", "driver": DRIVER, "pool": "node", "device": self.device}]}}}
        });
        serde_json::from_value(v).map_err(|e| ClaimSourceError::Api(e.to_string()))
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn claim(i: usize) -> v1::Claim {
    v1::Claim {
        namespace: "ns".into(),
        uid: format!("u-{i}"),
        name: format!("c-{i}"),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 300 } else { 3000 };
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("dra-bench")
        .tempdir_in(base)
        .unwrap();
    let host = SimHost::create(dir.path().join("host"), Profile::Large).unwrap();
    let inv = Host::new(host.root()).inventory().unwrap();
    let devices = DraDevices::from_pools(&Pools::compute(&inv, &Config::embedded(), false));
    let device = dra::device_name(&host.vf_address(3, 5));
    let opts = DraOptions {
        driver: DRIVER.into(),
        plugin_dir: dir.path().join("plugins").join(DRIVER),
        registry_dir: dir.path().join("registry"),
        cdi_dir: dir.path().join("cdi"),
        device_info_dir: Some(dir.path().join("devinfo")),
        node_name: None,
        kubeconfig: None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let socket = opts.socket();
        let p = DraPlugin::start(opts, Arc::new(OneDevice { device }), devices, tx).unwrap();
        let mut c =
            v1::dra_plugin_client::DraPluginClient::new(connect_unix(&socket).await.unwrap());
        let (mut prep, mut unprep) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let t = Instant::now();
            let r = c
                .node_prepare_resources(v1::NodePrepareResourcesRequest {
                    claims: vec![claim(i)],
                })
                .await
                .unwrap()
                .into_inner();
            prep.push(t.elapsed());
            assert_eq!(r.claims[&format!("u-{i}")].error, "");
            let t = Instant::now();
            c.node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
                claims: vec![claim(i)],
            })
            .await
            .unwrap();
            unprep.push(t.elapsed());
        }
        prep.sort();
        unprep.sort();
        println!("DRA NodePrepareResources, 1 VF, {n} claims, Large (1024 VFs), state on {base}:");
        println!(
            "  prepare   p50 {}  p99 {}  max {}   (target p99 < 5 ms)",
            ms(pct(&prep, 0.5)),
            ms(pct(&prep, 0.99)),
            ms(*prep.last().unwrap())
        );
        println!(
            "  unprepare p50 {}  p99 {}  max {}",
            ms(pct(&unprep, 0.5)),
            ms(pct(&unprep, 0.99)),
            ms(*unprep.last().unwrap())
        );
        p.shutdown().await;
    });
}
