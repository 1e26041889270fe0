//! Publishing the DRA ResourceSlices of the 1024-VF host (simhost `Large`, embedded
//! config: 8 slices of 128 devices) to the API server stand-in over loopback HTTP with
//! the kube 5 client: wall time and bytes sent, for the first publish (8 creates), a
//! change (one VF unbound: generation bump, 8 updates) and a sync with nothing changed
//! (one list). Measures; asserts nothing about time.
//!
//! `cargo bench -p node-tests --bench dra_publish [-- --rounds N]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_plugin::config::Config;
use device_plugin::dra::publish::Publisher;
use device_plugin::dra::slices::{SliceSource, node_devices};
use device_plugin::pools::Pools;
use k8s_openapi::api::resource::v1::Device;
use node_tests::apiserver::ApiServer;
use rdma_hca::Host;
use simhost::{Profile, SimHost};
use std::time::{Duration, Instant};

const DRIVER: &str = "sriov.rdma.example.org";

fn devices(h: &SimHost) -> Vec<Device> {
    let inv = Host::new(h.root()).inventory().unwrap();
    let pools = Pools::compute(&inv, &Config::embedded(), false);
    node_devices(
        &SliceSource {
            inventory: &inv,
            pools: &pools,
            root: h.root(),
        },
        DRIVER,
    )
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Bytes the driver sent (request bodies), bytes it got back (response bodies), requests.
fn traffic(s: &ApiServer) -> (usize, usize, usize) {
    let r = s.requests();
    let back = r.iter().map(|r| r.response_bytes).sum();
    (s.bytes_received(), back, r.len())
}

fn line(what: &str, mut t: Vec<Duration>, (sent, back, requests): (usize, usize, usize)) {
    println!(
        "{what:<28} p50 {:>8.2} ms  p99 {:>8.2} ms  sent {sent:>8} B  received {back:>8} B  {requests} requests",
        pct(&mut t, 0.5).as_secs_f64() * 1e3,
        pct(&mut t, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = simhost::tempdir().unwrap();
    let host = SimHost::create(dir.path(), Profile::Large).unwrap();
    let t0 = Instant::now();
    let before = devices(&host);
    let build = t0.elapsed();
    host.unbind(&host.vf_address(3, 7)).unwrap();
    let after = devices(&host);
    println!(
        "devices: {} ({} after unbinding one VF); inventory + pools + devices: {:.2} ms",
        before.len(),
        after.len(),
        build.as_secs_f64() * 1e3
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut first, mut change, mut same) = (vec![], vec![], vec![]);
        let (mut b_first, mut b_change, mut b_same) = ((0, 0, 0), (0, 0, 0), (0, 0, 0));
        for _ in 0..rounds {
            let s = ApiServer::start().await.unwrap();
            let client =
                kube::Client::try_from(kube::Config::new(s.url().parse().unwrap())).unwrap();
            let mut p = Publisher::new(client, "node-a", DRIVER).unwrap();
            let t = Instant::now();
            let r = p.sync(&before).await.unwrap();
            first.push(t.elapsed());
            assert_eq!(r.created, 8);
            b_first = traffic(&s);
            s.clear_requests();
            let t = Instant::now();
            let r = p.sync(&after).await.unwrap();
            change.push(t.elapsed());
            assert_eq!(r.updated, 8);
            b_change = traffic(&s);
            s.clear_requests();
            let t = Instant::now();
            assert!(p.sync(&after).await.unwrap().unchanged());
            same.push(t.elapsed());
            b_same = traffic(&s);
        }
        println!("rounds: {rounds}, 1024 VFs, 8 slices");
        line("first publish (8 creates)", first, b_first);
        line("one VF gone (8 updates)", change, b_change);
        line("unchanged (1 list)", same, b_same);
    });
}
