//! The ADD/CHECK/DEL/GC lifecycle in-process and unprivileged: links, addresses and
//! routes go to the recording link double (`fake_links`), VF settings to the
//! file-backed fake, IPAM is a small shell plugin that keeps one lease file per
//! container. No root, no netns is created, nothing outside a temp dir is touched.
//! The real-kernel tier of the same lifecycle is `tests/lifecycle.rs` (root).
//!
//! Pods are paths of the test's own netns (`/proc/self/ns/net`, ...): the plugin opens
//! them as it would a pod's, the double keys its namespaces by them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use serde_json::{Value, json};
use simhost::{PfSpec, SimHost, VfBinding};
use sriov_cni::config::{Command, Env, Mac, NetConf, VlanProto};
use sriov_cni::fake::{FakeState, FileFake, IbVf};
use sriov_cni::fake_links::{FakeLink, FakeLinks, HOST};
use sriov_cni::plugin::Plugin;
use sriov_cni::sriov::VfState;
use std::collections::BTreeMap;
use std::path::PathBuf;

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Paths of this process's netns that the plugin can open without root.
fn pod_paths() -> Vec<String> {
    let pid = std::process::id();
    vec![
        "/proc/self/ns/net".into(),
        format!("/proc/{pid}/ns/net"),
        format!("/proc/{pid}/task/{pid}/ns/net"),
    ]
}

/// An IPAM plugin: ADD leases 10.9.0.5/24 with a default route and records the lease
/// (refuses while `fail-ipam` exists beside `bin/`), DEL drops it, CHECK checks it.
const IPAM: &str = r#"#!/bin/sh
dir=$(dirname "$0")/../leases
mkdir -p "$dir"
conf=$(cat)
v=$(printf '%s' "$conf" | sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p')
case "$CNI_COMMAND" in
ADD)
  if [ -e "$dir/../fail-ipam" ]; then echo '{"code":11,"msg":"pool exhausted"}'; exit 1; fi
  : > "$dir/$CNI_CONTAINERID"
  case "$v" in 0.*) ver='"version":"4",';; *) ver='';; esac
  echo "{\"cniVersion\":\"$v\",\"ips\":[{$ver\"address\":\"10.9.0.5/24\",\"gateway\":\"10.9.0.1\"}],\"routes\":[{\"dst\":\"0.0.0.0/0\"}]}"
  ;;
DEL) rm -f "$dir/$CNI_CONTAINERID" ;;
CHECK) [ -e "$dir/$CNI_CONTAINERID" ] || { echo '{"code":999,"msg":"no lease"}'; exit 1; } ;;
VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac
"#;

struct T {
    tmp: tempfile::TempDir,
    sim: SimHost,
    links: FakeLinks,
    pf: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    netns: BTreeMap<String, Vec<FakeLink>>,
    vfs: BTreeMap<String, VfState>,
    igb_admin_mac: Vec<String>,
    files: Vec<String>,
    leases: Vec<String>,
}

impl T {
    fn new(bindings: Vec<VfBinding>) -> T {
        T::with_link_type(bindings, 1)
    }

    /// An InfiniBand PF (sysfs type 32); the fake's IB model gives VF i the GUIDs
    /// `orig_guids(i)`.
    fn new_ib(nvf: u32) -> T {
        let t = T::with_link_type(vec![VfBinding::Mlx5; nvf as usize], 32);
        let mut st = t.fake();
        for i in 0..nvf {
            let (node, port) = orig_guids(i);
            st.ib_vfs.insert(
                format!("{}/{i}", t.pf),
                IbVf {
                    node,
                    port,
                    bound_node: node,
                    bound_port: port,
                    binds: 0,
                },
            );
        }
        st.store(&t.fake_path()).unwrap();
        t
    }

    /// The fake's igb model; `been_up` VFs were up once already.
    fn set_igb(&self, been_up: &[u32]) {
        let mut st = self.fake();
        st.igb = true;
        for vf in been_up {
            st.igb_vfs
                .entry(format!("{}/{vf}", self.pf))
                .or_default()
                .been_up = true;
        }
        st.store(&self.fake_path()).unwrap();
    }

    fn with_link_type(bindings: Vec<VfBinding>, link_type: u32) -> T {
        let tmp = tempfile::tempdir().unwrap();
        let pf = "pf0".to_string();
        let nvf = bindings.len() as u32;
        let spec = PfSpec {
            bus: "0000:3b".into(),
            devfn: 0,
            first_vf_devfn: 2,
            netdev: pf.clone(),
            vf_netdev_prefix: "vf0x".into(),
            device: "101d".into(),
            vf_device: "101e".into(),
            numa_node: 0,
            link_type,
            total_vfs: 16,
            vfs: bindings.clone(),
            up: true,
        };
        let sim = SimHost::create_with(tmp.path().join("root"), vec![spec], None).unwrap();
        let links = FakeLinks::new();
        let mut st = FakeState::default();
        for (i, b) in bindings.iter().enumerate() {
            st.vfs.insert(format!("{pf}/{i}"), VfState::default());
            if *b == VfBinding::Mlx5 {
                let mac = Mac([0x02, 0, 0, 0, 0, i as u8 + 1]);
                links.add_link(HOST, &sim.vf_netdev(0, i as u32), mac, true);
            }
        }
        let _ = nvf;
        st.store(&tmp.path().join("fake-vf.json")).unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let ipam = bin.join("test-ipam");
        std::fs::write(&ipam, IPAM).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ipam, std::fs::Permissions::from_mode(0o755)).unwrap();
        T {
            tmp,
            sim,
            links,
            pf,
        }
    }

    fn fake_path(&self) -> PathBuf {
        self.tmp.path().join("fake-vf.json")
    }

    fn fake(&self) -> FakeState {
        FakeState::load(&self.fake_path()).unwrap()
    }

    fn set_fail(&self, step: Option<(&str, i32)>) {
        let mut st = self.fake();
        st.fail.clear();
        if let Some((s, e)) = step {
            st.fail.insert(s.into(), e);
        }
        st.store(&self.fake_path()).unwrap();
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn vf_pci(&self, vf: u32) -> String {
        self.sim.vf_address(0, vf)
    }

    fn vf_name(&self, vf: u32) -> String {
        self.sim.vf_netdev(0, vf)
    }

    fn conf(&self, version: &str, vf: u32, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "dnet",
            "type": "sriov",
            "deviceID": self.vf_pci(vf),
            "ipam": {"type": "test-ipam"}
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    /// Run one command in-process; `Ok(json)` or the CNI error JSON's code and message.
    fn run(
        &self,
        cmd: Command,
        cid: &str,
        ifname: &str,
        netns: Option<&str>,
        conf: &Value,
    ) -> Result<Option<Value>, (u32, String)> {
        let env = Env {
            command: cmd,
            container_id: cid.into(),
            ifname: ifname.into(),
            netns: netns.map(PathBuf::from),
            path: vec![self.tmp.path().join("bin")],
            args: Vec::new(),
        };
        let conf = NetConf::parse(conf.to_string().as_bytes(), cmd == Command::Add)
            .map_err(|e| (e.code(), e.to_string()))?;
        let mut vf = FileFake::new(self.fake_path());
        let mut seam = FileFake::new(self.fake_path());
        let mut links = self.links.clone();
        let mut p = Plugin {
            host: rdma_hca::Host::new(self.sim.root()),
            vf: &mut vf,
            seam: &mut seam,
            links: &mut links,
            data_dir: self.data_dir(),
        };
        p.run(&env, &conf).map_err(|e| (e.code(), e.to_string()))
    }

    /// [`T::run`] with a VF configurator whose rebind re-probes the VF netdev in the
    /// double (new ifindex), as a real driver does.
    fn run_reprobing(
        &self,
        cmd: Command,
        cid: &str,
        ns: &str,
        conf: &Value,
    ) -> Result<Option<Value>, (u32, String)> {
        let env = Env {
            command: cmd,
            container_id: cid.into(),
            ifname: "net1".into(),
            netns: Some(ns.into()),
            path: vec![self.tmp.path().join("bin")],
            args: Vec::new(),
        };
        let conf = NetConf::parse(conf.to_string().as_bytes(), cmd == Command::Add)
            .map_err(|e| (e.code(), e.to_string()))?;
        let mut vf = Reprobe {
            inner: FileFake::new(self.fake_path()),
            links: self.links.clone(),
        };
        let mut seam = FileFake::new(self.fake_path());
        let mut links = self.links.clone();
        let mut p = Plugin {
            host: rdma_hca::Host::new(self.sim.root()),
            vf: &mut vf,
            seam: &mut seam,
            links: &mut links,
            data_dir: self.data_dir(),
        };
        p.run(&env, &conf).map_err(|e| (e.code(), e.to_string()))
    }

    fn add(&self, cid: &str, ns: &str, conf: &Value) -> Value {
        self.run(Command::Add, cid, "net1", Some(ns), conf)
            .unwrap()
            .unwrap()
    }

    fn del(&self, cid: &str, ns: &str, conf: &Value) {
        self.run(Command::Del, cid, "net1", Some(ns), conf).unwrap();
    }

    fn snapshot(&self) -> Snapshot {
        let mut netns = BTreeMap::new();
        for (k, _) in self.links.with(|w| w.netns.clone()) {
            let v = self.links.links(&k);
            if !v.is_empty() {
                netns.insert(k, v);
            }
        }
        let names = |d: PathBuf| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| !n.starts_with('.') && (!n.contains(':') || n.ends_with(".owner")))
                .collect();
            v.sort();
            v
        };
        let mut files = names(self.data_dir());
        files.extend(names(self.data_dir().join("lock")));
        let fake = self.fake();
        Snapshot {
            netns,
            vfs: fake.vfs,
            igb_admin_mac: fake
                .igb_vfs
                .iter()
                .filter(|(_, v)| v.admin_mac)
                .map(|(k, _)| k.clone())
                .collect(),
            files,
            leases: names(self.tmp.path().join("leases")),
        }
    }

    fn pod_link(&self, ns: &str, name: &str) -> Option<FakeLink> {
        self.links
            .links(ns)
            .into_iter()
            .find(|l| l.link.name == name)
    }
}

fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

fn full_conf(t: &T, vf: u32) -> Value {
    t.conf(
        "1.0.0",
        vf,
        json!({"vlan": 100, "vlanQoS": 2, "mac": "0c:42:a1:aa:bb:01", "min_tx_rate": 10,
               "max_tx_rate": 100, "spoofchk": "off", "trust": "on", "link_state": "disable",
               "mtu": 1400}),
    )
}

#[test]
fn add_check_del_every_version_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5; 2]);
    let before = t.snapshot();
    let ns = &pod_paths()[0];
    for (i, v) in VERSIONS.iter().enumerate() {
        let cid = format!("c{i}");
        let conf = t.conf(
            v,
            1,
            json!({"vlan": 100, "vlanQoS": 3, "mac": "0c:42:a1:aa:bb:0c", "spoofchk": "off",
                   "trust": "on", "link_state": "enable", "max_tx_rate": 1000, "mtu": 1400}),
        );
        let res = t.add(&cid, ns, &conf);
        assert_eq!(res["cniVersion"], *v);
        assert_eq!(res["interfaces"][0]["name"], "net1");
        assert_eq!(res["interfaces"][0]["mac"], "0c:42:a1:aa:bb:0c");
        assert_eq!(res["ips"][0]["address"], "10.9.0.5/24");
        assert_eq!(res["ips"][0]["interface"], 0);
        // The double holds what the kernel would: renamed, re-addressed, up, routed.
        let l = t.pod_link(ns, "net1").expect("net1 in the pod");
        assert_eq!(
            (l.link.mac, l.link.mtu, l.link.up),
            (Some(Mac::parse("0c:42:a1:aa:bb:0c").unwrap()), 1400, true)
        );
        assert_eq!(l.addrs[0].to_string(), "10.9.0.5/24");
        assert_eq!(l.routes[0].gw.unwrap().to_string(), "10.9.0.1");
        assert!(t.pod_link(HOST, &t.vf_name(1)).is_none());
        let st = t.fake().vfs[&format!("{}/1", t.pf)].clone();
        assert_eq!((st.vlan, st.qos, st.proto), (100, 3, VlanProto::Dot1Q));
        assert_eq!((st.spoofchk, st.trust, st.max_tx_rate), (false, true, 1000));
        let c = t.run(
            Command::Check,
            &cid,
            "net1",
            Some(ns),
            &with_prev(&conf, &res),
        );
        if *v >= "0.4.0" {
            c.unwrap();
        } else {
            assert_eq!(c.unwrap_err().0, 1, "CHECK is not in {v}");
        }
        t.del(&cid, ns, &with_prev(&conf, &res));
        assert_eq!(t.snapshot(), before, "after DEL in {v}");
        t.del(&cid, ns, &conf);
        assert_eq!(t.snapshot(), before, "after a second DEL in {v}");
    }
}

/// The README's counts, on the double: ADD 3 link round trips (get the VF netdev,
/// move+rename+MAC+MTU, up), DEL 2 (get it in the pod, move back+rename+MAC+MTU+up).
#[test]
fn link_round_trips_are_the_kernel_counts() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = &pod_paths()[0];
    let conf = t.conf(
        "1.0.0",
        0,
        json!({"ipam": null, "mac": "0c:42:a1:00:00:01"}),
    );
    let n0 = t.links.calls();
    t.add("rt", ns, &conf);
    let calls = t.links.with(|w| w.calls[n0..].to_vec());
    let vf = t.vf_name(0);
    assert_eq!(
        calls,
        [
            format!("host get_link {vf}"),
            format!("host set_link {vf}"),
            format!("{ns} set_link net1"),
        ]
    );
    let n1 = t.links.calls();
    t.del("rt", ns, &conf);
    let calls = t.links.with(|w| w.calls[n1..].to_vec());
    assert_eq!(
        calls,
        [format!("{ns} get_link net1"), format!("{ns} set_link net1")]
    );
    // With IPAM: one more per address and route.
    let conf = t.conf("1.0.0", 0, json!({}));
    let n2 = t.links.calls();
    t.add("rt2", ns, &conf);
    assert_eq!(t.links.calls() - n2, 5);
    t.del("rt2", ns, &conf);
}

#[test]
fn add_failure_at_every_step_leaves_no_trace_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let mut st = t.fake();
    let key = format!("{}/0", t.pf);
    st.vfs.get_mut(&key).unwrap().vlan = 7;
    st.vfs.get_mut(&key).unwrap().trust = true;
    st.store(&t.fake_path()).unwrap();
    let ns = pod_paths()[0].clone();
    let conf = full_conf(&t, 0);
    let before = t.snapshot();
    let mut steps: Vec<(String, u32)> = ["vlan", "mac", "rate", "spoofchk", "link_state"]
        .iter()
        .map(|s| (format!("vf:{s}"), 102))
        .collect();
    for s in ["vlan", "mac", "rate", "spoofchk", "link_state"] {
        steps.push((format!("after:vf:{s}"), 100));
    }
    for s in [
        "cache",
        "move",
        "ipam",
        "addresses",
        "up",
        "routes",
        "result",
    ] {
        steps.push((s.to_string(), 100));
    }
    for (i, (step, code)) in steps.iter().enumerate() {
        t.set_fail(Some((step, libc::EIO)));
        let e = t
            .run(Command::Add, &format!("f{i}"), "net1", Some(&ns), &conf)
            .unwrap_err();
        assert_eq!(e.0, *code, "{step}: {}", e.1);
        t.set_fail(None);
        assert_eq!(t.snapshot(), before, "{step} left a trace");
    }
    // Link refusals on the double, each after the move: address, up, route.
    for (i, call) in ["add_addr", "set_link net1", "add_route"]
        .iter()
        .enumerate()
    {
        t.links
            .with(|w| w.fail = vec![(format!("{ns} {call}"), libc::EEXIST)]);
        let e = t
            .run(Command::Add, &format!("k{i}"), "net1", Some(&ns), &conf)
            .unwrap_err();
        t.links.with(|w| w.fail.clear());
        assert!(
            e.1.contains("File exists") || e.1.contains("EEXIST"),
            "{call}: {}",
            e.1
        );
        assert_eq!(t.snapshot(), before, "{call} left a trace");
    }
    // IPAM refusing: its error code, nothing left.
    let flag = t.tmp.path().join("fail-ipam");
    std::fs::write(&flag, "").unwrap();
    let e = t
        .run(Command::Add, "fi", "net1", Some(&ns), &conf)
        .unwrap_err();
    std::fs::remove_file(&flag).unwrap();
    assert!(e.1.contains("pool exhausted"), "{}", e.1);
    assert_eq!(t.snapshot(), before);
    let res = t.add("ok", &ns, &conf);
    t.del("ok", &ns, &with_prev(&conf, &res));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.fake().vfs[&key].vlan, 7);
}

/// A seam that dies (panics, as a SIGKILL would stop ADD) at one step: no undo runs,
/// the cache on disk is all DEL has.
struct Killer {
    inner: FileFake,
    at: String,
}

impl sriov_cni::sriov::TestSeam for Killer {
    fn fault(&mut self, step: &str) -> Result<(), sriov_cni::netlink::NlError> {
        assert_ne!(step, self.at, "killed");
        self.inner.fault(step)
    }
    fn netdev_mac(
        &mut self,
        pf: &str,
        vf: u32,
        mac: Mac,
    ) -> Result<(), sriov_cni::netlink::NlError> {
        self.inner.netdev_mac(pf, vf, mac)
    }
    fn netdev_up(&mut self, pf: &str, vf: u32) -> Result<(), sriov_cni::netlink::NlError> {
        self.inner.netdev_up(pf, vf)
    }
    fn netdev_down(
        &mut self,
        pf: &str,
        vf: u32,
        mac: Option<Mac>,
    ) -> Result<(), sriov_cni::netlink::NlError> {
        self.inner.netdev_down(pf, vf, mac)
    }
}

#[test]
fn add_killed_after_any_step_is_undone_by_del_from_the_cache() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    let conf = full_conf(&t, 0);
    let before = t.snapshot();
    let points = [
        "cache",
        "after:vf:vlan",
        "after:vf:link_state",
        "move",
        "after:vf:mac",
        "ipam",
        "addresses",
        "up",
        "routes",
        "result",
    ];
    for (i, at) in points.iter().enumerate() {
        let cid = format!("kill{i}");
        let env = Env {
            command: Command::Add,
            container_id: cid.clone(),
            ifname: "net1".into(),
            netns: Some(ns.clone().into()),
            path: vec![t.tmp.path().join("bin")],
            args: Vec::new(),
        };
        let nc = NetConf::parse(conf.to_string().as_bytes(), true).unwrap();
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut vf = FileFake::new(t.fake_path());
            let mut seam = Killer {
                inner: FileFake::new(t.fake_path()),
                at: at.to_string(),
            };
            let mut links = t.links.clone();
            let mut p = Plugin {
                host: rdma_hca::Host::new(t.sim.root()),
                vf: &mut vf,
                seam: &mut seam,
                links: &mut links,
                data_dir: t.data_dir(),
            };
            let _ = p.run(&env, &nc);
        }));
        assert!(died.is_err(), "ADD ran past {at}");
        assert!(t.data_dir().join(format!("{cid}-net1")).exists(), "{at}");
        assert_ne!(t.snapshot(), before, "killed at {at}: nothing to undo?");
        // The runtime's DEL, from the cache alone.
        t.del(&cid, &ns, &conf);
        assert_eq!(t.snapshot(), before, "DEL after a kill at {at}");
    }
}

#[test]
fn del_after_netns_deletion_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5; 2]);
    let before = t.snapshot();
    let ns = pod_paths()[1].clone();
    let conf = full_conf(&t, 0);
    t.add("gone", &ns, &conf);
    // The kernel hands a physical VF back to the host, under its pod name, down.
    t.links.with(|w| w.delete_netns(&ns));
    assert!(t.pod_link(HOST, "net1").is_some());
    t.del("gone", &ns, &conf);
    assert_eq!(t.snapshot(), before);
    // DEL without CNI_NETNS (allowed on DEL) afterwards: nothing cached, fine.
    t.run(Command::Del, "gone", "net1", None, &conf).unwrap();
}

#[test]
fn del_after_reallocation_leaves_the_new_owner_alone_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let before = t.snapshot();
    let key = format!("{}/0", t.pf);
    let paths = pod_paths();
    let (a, b) = (&paths[0], &paths[1]);
    let conf_a = t.conf("1.0.0", 0, json!({"vlan": 10, "mac": "0c:42:a1:00:00:aa"}));
    t.add("old", a, &conf_a);
    // Pod A's netns dies before its DEL: the VF comes back as net1 (sysfs says so too).
    t.links.with(|w| w.delete_netns(a));
    let pci = t.vf_pci(0);
    t.sim.remove_netdev(&pci, &t.vf_name(0)).unwrap();
    t.sim
        .add_netdev(&pci, "net1", 1, true, "0c:42:a1:00:00:aa")
        .unwrap();
    let conf_b = t.conf("1.0.0", 0, json!({"vlan": 20}));
    let res_b = t
        .run(Command::Add, "new", "eth1", Some(b), &conf_b)
        .unwrap()
        .unwrap();
    assert_eq!(t.fake().vfs[&key].vlan, 20);
    t.del("old", a, &conf_a);
    assert_eq!(
        t.fake().vfs[&key].vlan,
        20,
        "the late DEL reset the new owner's VF"
    );
    assert!(t.pod_link(b, "eth1").is_some());
    t.run(
        Command::Check,
        "new",
        "eth1",
        Some(b),
        &with_prev(&conf_b, &res_b),
    )
    .unwrap();
    t.run(
        Command::Del,
        "new",
        "eth1",
        Some(b),
        &with_prev(&conf_b, &res_b),
    )
    .unwrap();
    // The VF is back as it was before A, under the name, MAC and MTU it had before A.
    // (B's baseline takes those from A's cache; the admin state is the one B found,
    // down after the netns death, and the ifindex is the one the kernel gave it.)
    let mut want = before.clone();
    let mut got = t.snapshot();
    for s in [&mut want, &mut got] {
        for l in s.netns.values_mut().flatten() {
            l.link.index = 0;
            l.link.up = false;
        }
    }
    assert_eq!(got, want);
}

#[test]
fn del_that_fails_part_way_keeps_its_cache_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    let before = t.snapshot();
    let conf = full_conf(&t, 0);
    t.add("retry", &ns, &conf);
    // The move back is refused: every other undo still runs, the cache stays.
    t.links
        .with(|w| w.fail = vec![(format!("{ns} set_link"), libc::EBUSY)]);
    let e = t
        .run(Command::Del, "retry", "net1", Some(&ns), &conf)
        .unwrap_err();
    assert!(
        e.1.contains("Device or resource busy") || e.1.contains("EBUSY"),
        "{}",
        e.1
    );
    assert!(t.data_dir().join("retry-net1").exists());
    assert_eq!(
        t.fake().vfs[&format!("{}/0", t.pf)].vlan,
        0,
        "the VF undo ran"
    );
    t.links.with(|w| w.fail.clear());
    t.del("retry", &ns, &conf);
    assert_eq!(t.snapshot(), before);
}

#[test]
fn ten_cycles_leave_the_host_identical_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[2].clone();
    let before = t.snapshot();
    let conf = full_conf(&t, 0);
    for i in 0..10 {
        let res = t.add(&format!("cyc{i}"), &ns, &conf);
        let n = t.fake().calls.len();
        t.del(&format!("cyc{i}"), &ns, &with_prev(&conf, &res));
        assert_eq!(t.snapshot(), before, "cycle {i}");
        let sets: Vec<String> = t.fake().calls[n..]
            .iter()
            .filter(|c| c.starts_with("set "))
            .map(|c| c.split_whitespace().nth(4).unwrap_or("").to_string())
            .collect();
        assert_eq!(
            sets,
            [
                "mac=00:00:00:00:00:00",
                "link_state=auto",
                "trust=off",
                "spoofchk=on",
                "min_tx_rate=0",
                "vlan=0"
            ],
            "cycle {i}"
        );
    }
}

#[test]
fn check_reports_what_differs_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    let conf = full_conf(&t, 0);
    let res = t.add("chk", &ns, &conf);
    t.run(
        Command::Check,
        "chk",
        "net1",
        Some(&ns),
        &with_prev(&conf, &res),
    )
    .unwrap();
    let mut st = t.fake();
    st.vfs.get_mut(&format!("{}/0", t.pf)).unwrap().vlan = 3;
    st.store(&t.fake_path()).unwrap();
    t.links.with(|w| {
        for l in w.netns.get_mut(&ns).unwrap() {
            l.addrs.clear();
            l.link.mtu = 9000;
        }
    });
    let (code, msg) = t
        .run(
            Command::Check,
            "chk",
            "net1",
            Some(&ns),
            &with_prev(&conf, &res),
        )
        .unwrap_err();
    assert_eq!(code, 104);
    for want in ["vlan=100", "10.9.0.5/24", "MTU is 9000, expected 1400"] {
        assert!(msg.contains(want), "{want}: {msg}");
    }
    t.del("chk", &ns, &with_prev(&conf, &res));
}

#[test]
fn dpdk_vf_touches_no_link_on_the_double() {
    let t = T::new(vec![VfBinding::Vfio, VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    let before = t.snapshot();
    let conf = t.conf("1.1.0", 0, json!({"vlan": 55, "spoofchk": "off"}));
    let n = t.links.calls();
    let res = t.add("dpdk", &ns, &conf);
    assert_eq!(res["interfaces"][0]["pciID"], t.vf_pci(0));
    assert_eq!(t.fake().vfs[&format!("{}/0", t.pf)].vlan, 55);
    assert_eq!(t.links.calls(), n, "no link, address or route call");
    t.run(
        Command::Check,
        "dpdk",
        "net1",
        Some(&ns),
        &with_prev(&conf, &res),
    )
    .unwrap();
    t.del("dpdk", &ns, &with_prev(&conf, &res));
    assert_eq!(t.snapshot(), before);
}

#[test]
fn colliding_altname_is_dropped_and_restored_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    let vf = t.vf_name(0);
    t.links.with(|w| {
        w.netns.get_mut(HOST).unwrap()[0].link.altnames = vec!["altvf".into()];
    });
    t.links
        .add_link(&ns, "altvf", Mac([2, 9, 9, 9, 9, 9]), true);
    let before = t.snapshot();
    let conf = t.conf("1.0.0", 0, json!({}));
    let res = t.add("alt", &ns, &conf);
    assert!(t.pod_link(&ns, "net1").unwrap().link.altnames.is_empty());
    let dropped = t
        .links
        .with(|w| w.calls.iter().any(|c| c == "host del_altnames altvf"));
    assert!(dropped);
    t.del("alt", &ns, &with_prev(&conf, &res));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.pod_link(HOST, &vf).unwrap().link.altnames, ["altvf"]);
}

#[test]
fn name_taken_in_the_pod_refuses_the_move_and_touches_nothing_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    t.links.add_link(&ns, "net1", Mac([2, 8, 8, 8, 8, 8]), true);
    let before = t.snapshot();
    let e = t
        .run(Command::Add, "taken", "net1", Some(&ns), &full_conf(&t, 0))
        .unwrap_err();
    assert_eq!(e.0, 103, "{}", e.1);
    assert_eq!(t.snapshot(), before, "the pod's own net1 was touched");
}

#[test]
fn gc_releases_attachments_not_listed_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5; 2]);
    let before = t.snapshot();
    let paths = pod_paths();
    let c0 = t.conf("1.1.0", 0, json!({"vlan": 11}));
    let c1 = t.conf("1.1.0", 1, json!({"vlan": 12}));
    let r0 = t.add("keep", &paths[0], &c0);
    t.add("stale", &paths[1], &c1);
    let mut gc = t.conf("1.1.0", 0, json!({"deviceID": null}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "net1"}]);
    t.run(Command::Gc, "", "", None, &gc).unwrap();
    assert!(!t.data_dir().join("stale-net1").exists());
    assert!(t.data_dir().join("keep-net1").exists());
    assert_eq!(t.fake().vfs[&format!("{}/1", t.pf)].vlan, 0);
    assert!(t.pod_link(HOST, &t.vf_name(1)).is_some());
    assert!(t.pod_link(&paths[0], "net1").is_some());
    t.del("keep", &paths[0], &with_prev(&c0, &r0));
    assert_eq!(t.snapshot(), before);
}

#[test]
fn chained_after_another_plugin_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    let ns = pod_paths()[0].clone();
    let before = t.snapshot();
    let mut conf = t.conf("1.0.0", 0, json!({}));
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05", "sandbox": ns}],
        "ips": [{"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 0}],
        "dns": {"nameservers": ["10.0.0.10"]}
    });
    let res = t.add("chain", &ns, &conf);
    assert_eq!(res["interfaces"][0]["name"], "eth0");
    assert_eq!(res["interfaces"][1]["name"], "net1");
    assert_eq!(res["ips"][0]["address"], "10.0.0.5/24");
    assert_eq!(res["ips"][1]["interface"], 1);
    assert_eq!(res["dns"]["nameservers"][0], "10.0.0.10");
    t.run(
        Command::Check,
        "chain",
        "net1",
        Some(&ns),
        &with_prev(&conf, &res),
    )
    .unwrap();
    t.del("chain", &ns, &with_prev(&conf, &res));
    assert_eq!(t.snapshot(), before);
}

fn orig_guids(vf: u32) -> (u64, u64) {
    (
        0x0002_c903_0000_1000 + vf as u64,
        0x0002_c903_0000_2000 + vf as u64,
    )
}

/// The fake PF, but a rebind re-probes the VF netdev in the link double (new ifindex).
struct Reprobe {
    inner: FileFake,
    links: FakeLinks,
}

use sriov_cni::ib::netlink::{GuidKind, VfGuids};
use sriov_cni::netlink::NlError;
use sriov_cni::sriov::{VfConfigurator, VfSetting};

impl VfConfigurator for Reprobe {
    fn vf_state(&mut self, pf: &str, vf: u32) -> Result<VfState, NlError> {
        self.inner.vf_state(pf, vf)
    }
    fn set(&mut self, pf: &str, vf: u32, s: &VfSetting) -> Result<(), NlError> {
        self.inner.set(pf, vf, s)
    }
    fn rdma_move(
        &mut self,
        dev: &str,
        from: &sriov_cni::netns::Netns,
        to: &sriov_cni::netns::Netns,
        home: &sriov_cni::netns::Netns,
    ) -> Result<(), NlError> {
        self.inner.rdma_move(dev, from, to, home)
    }
    fn vf_guids(&mut self, pf: &str) -> Result<Vec<(u32, VfGuids)>, NlError> {
        self.inner.vf_guids(pf)
    }
    fn set_guid(&mut self, pf: &str, vf: u32, k: GuidKind, g: u64) -> Result<(), NlError> {
        self.inner.set_guid(pf, vf, k, g)
    }
    fn rebind(
        &mut self,
        root: &std::path::Path,
        vf: &rdma_hca::PciAddress,
    ) -> Result<String, sriov_cni::ib::rebind::RebindError> {
        let name = self.inner.rebind(root, vf)?;
        self.links.with(|w| w.reprobe(HOST, &name));
        Ok(name)
    }
}

fn untrusted_mac_conf(t: &T, vf: u32) -> Value {
    t.conf(
        "1.0.0",
        vf,
        json!({"mac": "02:33:00:00:00:02", "vlan": 10, "spoofchk": "off"}),
    )
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:?}"))
}

#[test]
fn igb_untrusted_vf_cycles_take_a_mac_and_give_the_pf_mac_back_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    t.set_igb(&[0]);
    let ns = pod_paths()[0].clone();
    let key = format!("{}/0", t.pf);
    let before = t.snapshot();
    let conf = untrusted_mac_conf(&t, 0);
    let netdev = format!("netdev {} vf 0 mac=", t.pf);
    let admin = format!("set {} vf 0 mac=", t.pf);
    for i in 0..5 {
        let n = t.fake().calls.len();
        let cid = format!("igb{i}");
        let res = t.add(&cid, &ns, &conf);
        let add = t.fake().calls[n..].to_vec();
        assert!(position(&add, &netdev) < position(&add, &admin), "{add:?}");
        let st = t.fake();
        assert_eq!(st.vfs[&key].mac, Mac::parse("02:33:00:00:00:02").unwrap());
        assert!(st.igb_vfs[&key].admin_mac);
        t.run(
            Command::Check,
            &cid,
            "net1",
            Some(&ns),
            &with_prev(&conf, &res),
        )
        .unwrap();
        let n = t.fake().calls.len();
        t.del(&cid, &ns, &with_prev(&conf, &res));
        // DEL: admin MAC cleared, netdev MAC back (igb records it), PF MAC cleared again.
        let del = t.fake().calls[n..].to_vec();
        let macs: Vec<&String> = del.iter().filter(|c| c.contains("mac=")).collect();
        assert_eq!(macs.len(), 3, "{del:?}");
        assert!(macs[0].starts_with(&format!("{admin}00:00:00:00:00:00")));
        assert!(macs[1].starts_with(&netdev));
        assert!(macs[2].starts_with(&format!("{admin}00:00:00:00:00:00")));
        assert_eq!(t.snapshot(), before, "cycle {i}");
    }
}

#[test]
fn igb_admin_mac_left_on_an_untrusted_vf_is_cleared_and_restored_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    t.set_igb(&[0]);
    let key = format!("{}/0", t.pf);
    let m0 = Mac::parse("02:aa:00:00:00:07").unwrap();
    let mut st = t.fake();
    st.vfs.get_mut(&key).unwrap().mac = m0;
    st.igb_vfs.get_mut(&key).unwrap().admin_mac = true;
    st.store(&t.fake_path()).unwrap();
    let ns = pod_paths()[0].clone();
    let before = t.snapshot();
    let conf = untrusted_mac_conf(&t, 0);
    let res = t.add("adm", &ns, &conf);
    assert_eq!(
        t.fake().vfs[&key].mac,
        Mac::parse("02:33:00:00:00:02").unwrap()
    );
    t.del("adm", &ns, &with_prev(&conf, &res));
    assert_eq!(t.snapshot(), before);
    assert_eq!(t.fake().vfs[&key].mac, m0);
    // A failure right after the clearing and the move: the undo puts the admin MAC
    // back too.
    let e = {
        t.set_fail(Some(("move", libc::EIO)));
        t.run(Command::Add, "adm2", "net1", Some(&ns), &conf)
    };
    t.set_fail(None);
    assert!(e.is_err());
    assert_eq!(t.snapshot(), before);
}

#[test]
fn igb_add_failure_at_every_step_leaves_no_trace_on_the_double() {
    let t = T::new(vec![VfBinding::Mlx5]);
    t.set_igb(&[0]);
    let ns = pod_paths()[0].clone();
    let conf = untrusted_mac_conf(&t, 0);
    let before = t.snapshot();
    for step in [
        "vf:vlan",
        "after:vf:vlan",
        "vf:spoofchk",
        "after:vf:spoofchk",
        "after:vf:mac",
        "move",
        "ipam",
        "addresses",
        "up",
        "routes",
        "result",
    ] {
        t.set_fail(Some((step, libc::EIO)));
        let r = t.run(Command::Add, "igbf", "net1", Some(&ns), &conf);
        t.set_fail(None);
        assert!(r.is_err(), "{step}");
        assert_eq!(t.snapshot(), before, "{step} left a trace: {r:?}");
    }
    // The PF refuses the admin MAC and, in this fake, clearing it too: the undo cannot
    // finish, the cache stays, the runtime's DEL finishes the job.
    t.set_fail(Some(("vf:mac", libc::EIO)));
    let (code, msg) = t
        .run(Command::Add, "igbm", "net1", Some(&ns), &conf)
        .unwrap_err();
    assert_eq!(code, 102, "{msg}");
    assert!(msg.contains("mac=02:33:00:00:00:02"), "{msg}");
    assert!(t.data_dir().join("igbm-net1").exists());
    t.set_fail(None);
    t.del("igbm", &ns, &conf);
    assert_eq!(t.snapshot(), before);
}

const G: u64 = 0x0200_0000_0000_0a01;
const G_TEXT: &str = "02:00:00:00:00:00:0a:01";

fn ib_conf(t: &T, vf: u32, extra: Value) -> Value {
    let mut c = t.conf("1.1.0", vf, json!({"type": "ib-sriov"}));
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn ib_add_sets_guids_rebinds_moves_and_del_restores_on_the_double() {
    let t = T::new_ib(2);
    let before = t.snapshot();
    let ns = pod_paths()[0].clone();
    let conf = ib_conf(
        &t,
        1,
        json!({"runtimeConfig": {"infinibandGUID": G_TEXT}, "link_state": "enable", "mtu": 2044}),
    );
    let res = t.add("c1", &ns, &conf);
    let l = t.pod_link(&ns, "net1").unwrap();
    assert_eq!(
        res["interfaces"][0]["mac"],
        l.link.hw_addr.unwrap().as_str()
    );
    assert!(l.link.up && l.link.mtu == 2044);
    let v = t.fake().ib_vfs[&format!("{}/1", t.pf)].clone();
    assert_eq!(
        (v.node, v.port, v.bound_node, v.bound_port, v.binds),
        (G, G, G, G, 1)
    );
    t.run(
        Command::Check,
        "c1",
        "net1",
        Some(&ns),
        &with_prev(&conf, &res),
    )
    .unwrap();
    t.del("c1", &ns, &conf);
    let (node, port) = orig_guids(1);
    let v = t.fake().ib_vfs[&format!("{}/1", t.pf)].clone();
    assert_eq!(
        (v.node, v.port, v.bound_node, v.bound_port, v.binds),
        (node, port, node, port, 2)
    );
    // DEL restores link_state before the GUIDs and the rebind that makes them hold.
    let w: Vec<String> = t
        .fake()
        .calls
        .into_iter()
        .filter(|c| !c.starts_with("get "))
        .collect();
    let last = |s: &str| w.iter().rposition(|c| c.contains(s)).unwrap();
    assert!(last("link_state=auto") < last("node_guid"), "{w:?}");
    assert!(last("node_guid") < last("rebind "), "{w:?}");
    assert_eq!(t.snapshot(), before);
}

/// Only the double can show this (a veth keeps its ifindex): a real driver's re-probe
/// gives the VF netdev a new ifindex. ADD records it in the cache before the move and
/// moves the new netdev; a failure after the rebind, and DEL after a kill there, find
/// the VF by its new ifindex.
#[test]
fn ib_rebind_that_renumbers_the_netdev_is_followed_on_the_double() {
    let t = T::new_ib(1);
    let before = t.snapshot();
    let ns = pod_paths()[0].clone();
    let conf = ib_conf(&t, 0, json!({"runtimeConfig": {"infinibandGUID": G_TEXT}}));
    let old = t.pod_link(HOST, &t.vf_name(0)).unwrap().link.index;
    let res = t
        .run_reprobing(Command::Add, "rn", &ns, &conf)
        .unwrap()
        .unwrap();
    let l = t.pod_link(&ns, "net1").expect("the re-probed netdev moved");
    assert_ne!(l.link.index, old);
    let cached: Value =
        serde_json::from_slice(&std::fs::read(t.data_dir().join("rn-net1")).unwrap()).unwrap();
    assert_eq!(cached["link"]["index"], l.link.index);
    t.run_reprobing(Command::Del, "rn", &ns, &with_prev(&conf, &res))
        .unwrap();
    let strip = |mut s: Snapshot| {
        for l in s.netns.values_mut().flatten() {
            l.link.index = 0;
            // (the last rebind leaves the netdev down, as a re-probe does)
            l.link.up = false;
        }
        s
    };
    assert_eq!(strip(t.snapshot()), strip(before.clone()));
    assert!(t.pod_link(HOST, &t.vf_name(0)).is_some());
    // A failure after the move (the netdev has its new ifindex): undone by that ifindex.
    for step in ["move", "up"] {
        t.set_fail(Some((step, libc::EIO)));
        let r = t.run_reprobing(Command::Add, "rf", &ns, &conf);
        t.set_fail(None);
        assert!(r.is_err(), "{step}");
        assert_eq!(strip(t.snapshot()), strip(before.clone()), "{step}");
    }
}
