//! The network half of a lab, shared by the sriov-cni tests and the end-to-end tests:
//! throwaway named network namespaces (deleted on drop, also when a test fails), the
//! veths that stand in for a [`SimHost`]'s VF netdevs, and link/address snapshots. Needs
//! root and iproute2; nothing here touches the machine's own netns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{SimHost, VfBinding};
use serde_json::Value;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// A short id unique on this machine, for names (interface names max 15 chars).
pub fn uid() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}", (std::process::id() % 0x1000) * 0x100 + n % 0x100)
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
}

/// `ip` with `args`; panics with its stderr unless it succeeds. Returns its stdout.
pub fn ip_ok(args: &[&str]) -> String {
    let o = ip(args);
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A named network namespace (`ip netns add`, `lo` up), deleted on drop.
pub struct Netns {
    /// Its name under `/run/netns`.
    pub name: String,
    /// Already deleted by [`Netns::delete`].
    pub deleted: bool,
}

impl Netns {
    /// Create netns `name`.
    pub fn new(name: String) -> Netns {
        ip_ok(&["netns", "add", &name]);
        let ns = Netns {
            name,
            deleted: false,
        };
        ip_ok(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// `/run/netns/<name>`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Delete it now (a pod sandbox going away before DEL).
    pub fn delete(&mut self) {
        if !self.deleted {
            let _ = ip(&["netns", "del", &self.name]);
            self.deleted = true;
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// In netns `ns`, one veth per netdev-bound VF of `sim` under the VF netdev's name, its
/// peer `r<pf>x<vf>` up beside it: what the plugin moves and configures as "the VF".
pub fn veth_vfs(ns: &Netns, sim: &SimHost) {
    for (pf, spec) in sim.pfs().iter().enumerate() {
        for (vf, binding) in spec.vfs.iter().enumerate() {
            if *binding != VfBinding::Mlx5 {
                continue; // no netdev
            }
            let peer = format!("r{pf}x{vf}");
            let name = sim.vf_netdev(pf, vf as u32);
            ip_ok(&[
                "-n", &ns.name, "link", "add", &name, "type", "veth", "peer", "name", &peer,
            ]);
            ip_ok(&["-n", &ns.name, "link", "set", &peer, "up"]);
        }
    }
}

/// A link as the tests compare it before and after.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LinkView {
    /// Name.
    pub name: String,
    /// MAC.
    pub mac: String,
    /// MTU.
    pub mtu: u64,
    /// Admin up.
    pub up: bool,
}

/// The links of netns `ns`, sorted (empty when `ns` is gone).
pub fn links(ns: &str) -> Vec<LinkView> {
    let o = ip(&["-n", ns, "-j", "link", "show"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Array(Vec::new()));
    let mut out: Vec<LinkView> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| LinkView {
            name: l["ifname"].as_str().unwrap_or_default().to_owned(),
            mac: l["address"].as_str().unwrap_or_default().to_owned(),
            mtu: l["mtu"].as_u64().unwrap_or_default(),
            up: l["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "UP")),
        })
        .collect();
    out.sort();
    out
}

/// Global IPv4 addresses (`a.b.c.d/n`) of `dev` in netns `ns`.
pub fn addrs(ns: &str, dev: &str) -> Vec<String> {
    let o = ip(&["-n", ns, "-j", "-4", "addr", "show", "dev", dev]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Array(Vec::new()));
    let mut out = Vec::new();
    for l in v.as_array().into_iter().flatten() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "global" {
                out.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                ));
            }
        }
    }
    out
}
