//! ADD and DEL latency (p50/p99) and netlink round trips per ADD, on the veth stand-in
//! for a VF in test-owned namespaces (needs root; prints "skipped" otherwise).
//!
//! Three series:
//! - `in-process`: the library's ADD/DEL (no process start, no IPAM), with the netlink
//!   round trips counted by the real socket code;
//! - `binary`: the `sriov-test` binary (`sriov` with the VF fake) exec'd as a runtime would (no IPAM);
//! - `binary+host-local`: the same with Debian's host-local IPAM, for reference;
//! - `in-process IB` / `binary IB`: an InfiniBand VF on the fake's IB model (GUIDs and
//!   rebind), see [`ib_series`].
//!
//! VF settings go to the file-backed fake (no SR-IOV on this kernel); on a real PF each
//! planned setting is one more RTM_SETLINK and the VF-table read one RTM_GETLINK, which
//! the "on a real PF" line adds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use common::{BIN, Lab, can_run};
use serde_json::{Value, json};
use sriov_cni::config::{Command, Env, NetConf};
use sriov_cni::fake::FileFake;
use sriov_cni::netlink::round_trips;
use sriov_cni::netns::Netns;
use sriov_cni::plugin::Plugin;
use std::time::{Duration, Instant};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn report(name: &str, add: &mut [Duration], del: &mut [Duration]) {
    println!(
        "{name:<20} n={:<4} ADD p50 {:>7.2} ms p99 {:>7.2} ms | DEL p50 {:>7.2} ms p99 {:>7.2} ms",
        add.len(),
        pct(add, 0.5).as_secs_f64() * 1e3,
        pct(add, 0.99).as_secs_f64() * 1e3,
        pct(del, 0.5).as_secs_f64() * 1e3,
        pct(del, 0.99).as_secs_f64() * 1e3,
    );
}

/// CPU time of the calling thread (user + system): what ADD/DEL cost us, without the time
/// the thread sleeps while the kernel waits for RCU grace periods.
fn thread_cpu() -> Duration {
    use nix::time::{ClockId, clock_gettime};
    Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap())
}

fn env(cmd: Command, ns: &str, id: &str) -> Env {
    Env {
        command: cmd,
        container_id: id.into(),
        ifname: "net1".into(),
        netns: Some(ns.into()),
        path: vec![common::CNI_PATH.into()],
        args: vec![],
    }
}

fn in_process(lab: &Lab, ns: &str, conf: &Value, n: usize) -> InProcess {
    let conf = NetConf::parse(conf.to_string().as_bytes(), true).unwrap();
    let mut fake = FileFake::new(lab.fake_path());
    let mut seam = FileFake::new(lab.fake_path());
    let (mut add, mut del) = (Vec::new(), Vec::new());
    let (mut add_cpu, mut del_cpu) = (Vec::new(), Vec::new());
    let (mut rt_add, mut rt_del) = (0, 0);
    for i in 0..n {
        let mut plugin = Plugin {
            host: rdma_hca::Host::new(lab.sim.root()),
            vf: &mut fake,
            seam: &mut seam,
            links: &mut sriov_cni::links::KernelLinks,
            data_dir: lab.data_dir(),
        };
        let id = format!("b{i}");
        let r0 = round_trips();
        let (t, c) = (Instant::now(), thread_cpu());
        plugin.run(&env(Command::Add, ns, &id), &conf).unwrap();
        add.push(t.elapsed());
        add_cpu.push(thread_cpu() - c);
        let r1 = round_trips();
        let (t, c) = (Instant::now(), thread_cpu());
        plugin.run(&env(Command::Del, ns, &id), &conf).unwrap();
        del.push(t.elapsed());
        del_cpu.push(thread_cpu() - c);
        rt_add = r1 - r0;
        rt_del = round_trips() - r1;
    }
    InProcess {
        add,
        del,
        add_cpu,
        del_cpu,
        rt_add,
        rt_del,
    }
}

/// Wall and CPU times of the in-process series, and the round trips of its last pair.
struct InProcess {
    add: Vec<Duration>,
    del: Vec<Duration>,
    add_cpu: Vec<Duration>,
    del_cpu: Vec<Duration>,
    rt_add: u64,
    rt_del: u64,
}

/// The kernel's floor: the same veth moved into the pod netns and back (two RTM_SETLINK,
/// as ADD and DEL each do once), nothing else. `__dev_change_net_namespace` waits for RCU
/// (`synchronize_net`, `rcu_barrier`), which no plugin can avoid.
fn kernel_move(lab: &Lab, ns: &str, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    use sriov_cni::netlink::{LinkChange, Rtnl};
    let home = Netns::current().unwrap();
    let pod = Netns::open(std::path::Path::new(ns)).unwrap();
    let name = lab.vf_name(0);
    let mut rt = Rtnl::new().unwrap();
    let index = rt.link_by_name(&name).unwrap().unwrap().index;
    let mut rt_pod = pod.run(&home, || Rtnl::new().unwrap()).unwrap();
    let (mut into, mut back) = (Vec::new(), Vec::new());
    // one RTM_SETLINK moving the link into the netns of `to`, timed
    let mv = |rt: &mut Rtnl, to: &Netns| {
        let c = LinkChange {
            index,
            netns_fd: Some(to.raw_fd()),
            ..LinkChange::default()
        };
        let t = Instant::now();
        rt.set_link(&c, &name).unwrap();
        t.elapsed()
    };
    for _ in 0..n {
        into.push(mv(&mut rt, &pod));
        back.push(mv(&mut rt_pod, &home));
    }
    (into, back)
}

fn exec(lab: &Lab, ns: &str, conf: &Value, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let run = |cmd: &str, id: &str| {
        let mut c = std::process::Command::new(BIN);
        c.env_clear()
            .env("SRIOV_CNI_SYSFS_ROOT", lab.sim.root())
            .env("SRIOV_CNI_DATA_DIR", lab.data_dir())
            .env("SRIOV_CNI_FAKE_VF_STATE", lab.fake_path())
            .env("CNI_PATH", common::CNI_PATH)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", "net1")
            .env("CNI_NETNS", ns)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let t = Instant::now();
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(conf.to_string().as_bytes())
                .unwrap();
        }
        let o = child.wait_with_output().unwrap();
        let d = t.elapsed();
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        d
    };
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for i in 0..n {
        let id = format!("e{i}");
        add.push(run("ADD", &id));
        del.push(run("DEL", &id));
    }
    (add, del)
}

fn main() {
    if !can_run() {
        println!("skipped: the ADD/DEL benchmark needs root, iproute2 and host-local");
        return;
    }
    sriov_cni::log::init(sriov_cni::config::LogLevel::Error, None);
    let n: usize = std::env::var("SRIOV_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut lab = Lab::new(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let settings = json!({"vlan": 100, "vlanQoS": 1, "mac": "0c:42:a1:aa:bb:01", "spoofchk": "off",
                          "trust": "on", "mtu": 1400, "ipam": null, "logLevel": "error"});
    let conf = lab.conf("1.0.0", 0, settings.clone());
    // Run everything from a thread inside the lab's host netns (children inherit it).
    let host = Netns::open(std::path::Path::new(&lab.host.path())).unwrap();
    let lab = std::sync::Arc::new(lab);
    let l2 = lab.clone();
    let out = std::thread::spawn(move || {
        nix::sched::setns(&host, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let lab = l2;
        // warm up
        in_process(&lab, &ns, &conf, 5);
        let mut r = in_process(&lab, &ns, &conf, n);
        let (rt_add, rt_del) = (r.rt_add, r.rt_del);
        report("in-process", &mut r.add, &mut r.del);
        report("in-process CPU", &mut r.add_cpu, &mut r.del_cpu);
        let (mut a, mut d) = kernel_move(&lab, &ns, n);
        report("kernel netns move", &mut a, &mut d);
        println!(
            "(CPU: user + system time of the calling thread, without the sleep while the kernel \
             waits for RCU; kernel netns move: the bare move in (ADD column) and back (DEL \
             column), the floor under ADD and DEL)"
        );
        let nsettings = 4; // vlan, mac, spoofchk, trust (netdev MAC/MTU ride on the move)
        println!(
            "netlink round trips: ADD {rt_add}, DEL {rt_del} (kernel, counted); on a real PF add 1 VF-table \
             read + {nsettings} VF setters to each: ADD {}, DEL {}",
            rt_add + 1 + nsettings,
            rt_del + nsettings
        );
        let (mut a, mut d) = exec(&lab, &ns, &conf, n / 2);
        report("binary", &mut a, &mut d);
        let conf_ipam = lab.conf(
            "1.0.0",
            0,
            json!({"vlan": 100, "mtu": 1400, "logLevel": "error"}),
        );
        let (mut a, mut d) = exec(&lab, &ns, &conf_ipam, n / 4);
        report("binary+host-local", &mut a, &mut d);
    });
    out.join().unwrap();
    ib_series(n / 2);
}

/// An InfiniBand VF on the fake's IB model: link_state, node + port GUID, a rebind
/// (the fake's bind brings the netdev back at once: a real mlx5 probe adds its own time),
/// the IPoIB stand-in moved, renamed, MTU, up; DEL restores both GUIDs and rebinds.
fn ib_series(n: usize) {
    let mut lab = Lab::new_ib(1);
    let p = lab.pod();
    let ns = lab.pod_path(p);
    let conf = lab.conf(
        "1.0.0",
        0,
        json!({"type": "ib-sriov", "link_state": "enable", "mtu": 2044, "ipam": null,
               "logLevel": "error", "runtimeConfig": {"infinibandGUID": "02:00:00:00:00:00:0b:01"}}),
    );
    let host = Netns::open(std::path::Path::new(&lab.host.path())).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&host, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        in_process(&lab, &ns, &conf, 5);
        let mut r = in_process(&lab, &ns, &conf, n);
        report("in-process IB", &mut r.add, &mut r.del);
        report("in-process IB CPU", &mut r.add_cpu, &mut r.del_cpu);
        // VF table read (GUIDs), link_state, 2 GUID setters; DEL: 2 GUID setters,
        // link_state.
        println!(
            "IB netlink round trips: ADD {}, DEL {} (kernel, counted, the IPoIB address read \
             included); on a real PF add 2 VF-table reads + 3 VF setters to ADD ({}), 3 VF \
             setters to DEL ({}); plus one driver rebind each way",
            r.rt_add,
            r.rt_del,
            r.rt_add + 5,
            r.rt_del + 3
        );
        let (mut a, mut d) = exec(&lab, &ns, &conf, n / 2);
        report("binary IB", &mut a, &mut d);
    })
    .join()
    .unwrap();
}
