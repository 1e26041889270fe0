//! Network config parsing (`NetConf::parse`, what every CNI call does first): a minimal
//! config, one with every VF setting, and a chained DEL's config carrying a `prevResult`,
//! each parsed many times.
//!
//! `cargo bench -p sriov-cni --bench netconf_parse` prints the time per parse; for a
//! figure that does not move with the machine's load, run the bench binary under
//! `valgrind --tool=callgrind` with `--quick` and read the instruction count.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use sriov_cni::config::NetConf;
use std::hint::black_box;
use std::time::Instant;

const MINIMAL: &str =
    r#"{"cniVersion":"1.0.0","name":"sriov-net","type":"sriov","deviceID":"0000:3b:00.2"}"#;

const FULL: &str = r#"{"cniVersion":"1.0.0","name":"sriov-net","type":"sriov",
  "vlan":100,"vlanQoS":3,"vlanProto":"802.1ad","mac":"0c:42:a1:00:00:09","spoofchk":"off",
  "trust":"on","link_state":"enable","min_tx_rate":10,"max_tx_rate":100,"mtu":9000,
  "logLevel":"debug","logFile":"/var/log/sriov.log",
  "ipam":{"type":"host-local","subnet":"10.56.217.0/24","routes":[{"dst":"0.0.0.0/0"}],
          "gateway":"10.56.217.1"},
  "capabilities":{"mac":true,"ips":true},
  "runtimeConfig":{"deviceID":"0000:3b:00.3","mac":"0c:42:a1:00:00:0a",
                   "ips":["10.56.217.9/24"]}}"#;

const CHAINED_DEL: &str = r#"{"cniVersion":"1.0.0","name":"sriov-net","type":"sriov",
  "deviceID":"0000:3b:00.2","vlan":7,"ipam":{"type":"host-local","subnet":"10.56.217.0/24"},
  "prevResult":{"cniVersion":"1.0.0",
    "interfaces":[{"name":"net1","mac":"0c:42:a1:00:00:09","sandbox":"/var/run/netns/pod"}],
    "ips":[{"address":"10.56.217.9/24","gateway":"10.56.217.1","interface":0}],
    "routes":[{"dst":"0.0.0.0/0","gw":"10.56.217.1"}],
    "dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]}}}"#;

fn bench(name: &str, text: &str, iters: u32) {
    // parse once outside the timing: a broken sample fails here, not as a fast bench
    let c = NetConf::parse(text.as_bytes(), true).unwrap();
    assert!(c.device_id.is_some());
    let t = Instant::now();
    for _ in 0..iters {
        black_box(NetConf::parse(black_box(text.as_bytes()), true).unwrap());
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!("netconf parse {name:<12} {per:>9.2} us/parse ({iters} parses)");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 200 } else { 50_000 };
    bench("minimal", MINIMAL, iters);
    bench("full", FULL, iters);
    bench("chained DEL", CHAINED_DEL, iters);
}
