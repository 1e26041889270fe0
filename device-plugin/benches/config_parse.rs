//! Config parsing: the four sample configs of `deploy/config/` and a synthetic
//! sriov-network-device-plugin config of 64 resources, each parsed many times.
//!
//! `cargo bench -p device-plugin --bench config_parse` prints the time per parse; for a
//! figure that does not move with the machine's load, run the bench binary under
//! `valgrind --tool=callgrind` with `--quick` and read the instruction count.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use device_plugin::config::Config;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

const SAMPLES: [&str; 4] = [
    include_str!("../../deploy/config/sriovdp-config.json"),
    include_str!("../../deploy/config/rdma-shared-config.json"),
    include_str!("../../deploy/config/rdma-sriov-hca.json"),
    include_str!("../../deploy/config/rdma-sriov-sriov.json"),
];

/// 64 resources using every selector key the sriovdp format knows.
fn large_sriovdp() -> String {
    let resources: Vec<String> = (0..64)
        .map(|i| {
            format!(
                r#"{{"resourceName":"pool_{i}","resourcePrefix":"example.com",
                 "deviceType":"netDevice","excludeTopology":false,"allocationPolicy":"pack",
                 "selectors":[{{"vendors":["15b3"],"devices":["101e","1018"],
                   "drivers":["mlx5_core"],"pfNames":["ens{i}f0#0-3","ens{i}f1"],
                   "rootDevices":["0000:{i:02x}:00.0"],"pciAddresses":["0000:{i:02x}:00.2"],
                   "linkTypes":["ether"],"isRdma":true,"needVhostNet":false}},
                  {{"drivers":["vfio-pci"]}}]}}"#
            )
        })
        .collect();
    format!(r#"{{"resourceList":[{}]}}"#, resources.join(","))
}

fn bench(name: &str, text: &str, iters: u32) {
    let file = Path::new("/etc/pcidp/config.json");
    // parse once outside the timing: a broken sample fails here, not as a fast bench
    let c = Config::parse(file, text).unwrap();
    assert!(!c.resources.is_empty());
    let t = Instant::now();
    for _ in 0..iters {
        black_box(Config::parse(file, black_box(text)).unwrap());
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!("config parse {name:<24} {per:>9.2} us/parse ({iters} parses)");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 200 } else { 20_000 };
    let names = [
        "sriovdp-config.json",
        "rdma-shared-config.json",
        "rdma-sriov-hca.json",
        "rdma-sriov-sriov.json",
    ];
    for (name, text) in names.iter().zip(SAMPLES) {
        bench(name, text, iters);
    }
    bench("64 sriovdp resources", &large_sriovdp(), iters / 20);
}
