//! The `device-plugin` binary with `--dra`, end to end against the API server stand-in
//! (over real HTTP on loopback, through `--kubeconfig`) and the DRA kubelet stand-in
//! (dialling the registration socket and the endpoint it names): the daemon publishes
//! this node's ResourceSlices at start, a rescan after a VF removal rewrites them at the
//! next generation, a PF link going down (health) takes its VFs out, a clean shutdown
//! deletes them, and with a claim still prepared a shutdown keeps them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use node_tests::DEFAULT_TIMEOUT;
use node_tests::apiserver::{ApiServer, PoolSummary};
use node_tests::dra_kubelet::{ClaimId, DraKubelet};
use node_tests::simhost::{Profile, SimHost};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DRIVER: &str = "sriov.rdma.example.org";
const NODE: &str = "node-a";

struct Node {
    dir: tempfile::TempDir,
    host: SimHost,
    api: ApiServer,
    daemon: Option<Child>,
}

impl Node {
    async fn new(profile: Profile) -> Node {
        let dir = node_tests::scratch();
        let host = SimHost::create(dir.path().join("host"), profile).unwrap();
        let api = ApiServer::start().await.unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Node {
            dir,
            host,
            api,
            daemon: None,
        }
    }

    fn registration(&self) -> PathBuf {
        self.dir
            .path()
            .join("plugins_registry")
            .join(format!("{DRIVER}-reg.sock"))
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(node_tests::project_bin("device-plugin", "device-plugin"));
        c.arg("--root")
            .arg(self.host.root())
            .arg("--device-plugin-path")
            .arg(d.join("device-plugins"))
            .arg("--plugins-registry")
            .arg(d.join("plugins_registry"))
            .arg("--device-info-dir")
            .arg(d.join("devinfo"))
            .args(["--device-info-gc-interval", "0"])
            .args(["--periodic-update-interval", "0"])
            .args(["--safety-poll-interval", "0"])
            .arg("--pod-resources-socket")
            .arg(d.join("absent.sock"))
            .arg("--dra")
            .args(["--dra-driver-name", DRIVER])
            .arg("--dra-plugin-dir")
            .arg(d.join("plugins").join(DRIVER))
            .arg("--dra-registry-dir")
            .arg(d.join("plugins_registry"))
            .arg("--dra-device-info-dir")
            .arg(d.join("devinfo-dra"))
            .arg("--cdi-dir")
            .arg(d.join("cdi"))
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null());
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = self
            .command()
            .args(["--node-name", NODE])
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.daemon.as_ref().unwrap().id()).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// SIGTERM and wait for a clean exit (async: the stand-in runs on this runtime and
    /// must answer the shutdown's deletes).
    async fn terminate(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut c = self.daemon.take().unwrap();
        let t0 = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert!(st.success(), "daemon exit {st}: {}", self.log());
                return;
            }
            if t0.elapsed() > DEFAULT_TIMEOUT {
                let _ = c.kill();
                let _ = c.wait();
                panic!("daemon did not exit on SIGTERM: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait (bounded) until this node's pool on the stand-in satisfies `pred`.
    async fn wait_pool(&self, what: &str, pred: impl Fn(&PoolSummary) -> bool) -> PoolSummary {
        let t0 = Instant::now();
        loop {
            if let Ok(p) = self.api.pool(DRIVER, NODE)
                && pred(&p)
            {
                return p;
            }
            assert!(
                t0.elapsed() < DEFAULT_TIMEOUT,
                "pool never {what}: {:?}\n{}",
                self.api.pool(DRIVER, NODE),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait (bounded) until the stand-in saw a list of ResourceSlices since the last
    /// `clear_requests`.
    async fn wait_list(&self) {
        let t0 = Instant::now();
        while !self
            .api
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with("/resourceslices"))
        {
            assert!(t0.elapsed() < DEFAULT_TIMEOUT, "no list: {}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn device(&self, pf: usize, vf: u32) -> String {
        device_plugin::dra::device_name(&self.host.vf_address(pf, vf))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn slices_follow_start_rescan_health_and_a_clean_shutdown_deletes_them() {
    let mut n = Node::new(Profile::Cx6Dx).await;
    n.spawn();
    let p = n.wait_pool("published", |p| p.devices.len() == 16).await;
    assert_eq!((p.generation, p.slices), (1, 1));
    let gone = n.device(1, 6);
    assert!(p.devices.contains(&gone));
    for s in n.api.slices().values() {
        assert_eq!(s["spec"]["nodeName"], NODE);
        assert_eq!(s["spec"]["driver"], DRIVER);
    }
    // a VF removal seen by a rescan (SIGHUP: reload + rescan) leaves its slice
    n.host.set_num_vfs(1, 4).unwrap();
    n.signal(nix::sys::signal::Signal::SIGHUP);
    let p = n.wait_pool("shrunk", |p| p.devices.len() == 12).await;
    assert_eq!(p.generation, 2);
    assert!(!p.devices.contains(&gone));
    // health: PF 0's link down takes its VFs out of the pool
    n.host.set_operstate("ens1f0", "down").unwrap();
    n.signal(nix::sys::signal::Signal::SIGHUP);
    let p = n.wait_pool("without PF 0", |p| p.devices.len() == 4).await;
    assert_eq!(p.generation, 3);
    assert!(!p.devices.contains(&n.device(0, 0)));
    // an unchanged rescan lists and writes nothing
    n.api.clear_requests();
    n.signal(nix::sys::signal::Signal::SIGHUP);
    n.wait_list().await;
    let reqs = n.api.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:?}");
    n.terminate().await;
    assert!(n.api.slices().is_empty(), "{:?}", n.api.slices().keys());
    assert!(n.log().contains("ResourceSlices deleted"), "{}", n.log());
}

#[tokio::test]
async fn a_prepared_claim_keeps_the_slices_across_shutdown() {
    let mut n = Node::new(Profile::Cx6Dx).await;
    let dev = n.device(0, 0);
    n.api.seed_claim(
        "ns1",
        "claim-a",
        json!({"metadata": {"uid": "uid-a"},
               "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "sriov-vf"}}]}},
               "status": {"allocation": {"devices": {"results": [{"request": "vf", "driver": DRIVER,
                   "pool": NODE, "device": dev}]}}}}),
    );
    n.spawn();
    n.wait_pool("published", |p| p.devices.len() == 16).await;
    node_tests::fswait::wait_for_path(&n.registration(), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let mut k = DraKubelet::register(&n.registration()).await.unwrap();
    let claim = ClaimId {
        namespace: "ns1".into(),
        name: "claim-a".into(),
        uid: "uid-a".into(),
    };
    let r = k.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let devs = r["uid-a"].as_ref().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(
        (devs[0].pool.as_str(), devs[0].device.as_str()),
        (NODE, dev.as_str())
    );
    let before = n.api.slices();
    n.terminate().await;
    assert!(n.log().contains("claims still prepared"), "{}", n.log());
    assert_eq!(n.api.slices(), before, "slices kept as they were");
    // back up: the same slices, nothing rewritten; unprepared, the next stop deletes them
    n.api.clear_requests();
    n.spawn();
    node_tests::fswait::wait_for_path(&n.registration(), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    n.wait_list().await;
    let mut k = DraKubelet::register(&n.registration()).await.unwrap();
    let r = k.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(r["uid-a"], Ok(()));
    n.terminate().await;
    assert!(
        n.api
            .requests()
            .iter()
            .all(|r| r.method != "PUT" && r.method != "POST"),
        "{:?}",
        n.api.requests()
    );
    assert!(n.api.slices().is_empty());
}

#[tokio::test]
async fn api_server_refusals_are_retried_and_the_device_plugin_side_keeps_serving() {
    let mut n = Node::new(Profile::Cx6Dx).await;
    // two writes refused: the publisher's own conflict retry, then the feed's back-off
    n.api.conflict_next_writes(2);
    n.spawn();
    let p = n.wait_pool("published", |p| p.devices.len() == 16).await;
    assert_eq!(p.generation, 1);
    let log = n.log();
    assert!(log.contains("sync failed; retrying"), "{log}");
    assert!(log.contains("sync succeeded again"), "{log}");
    assert!(
        n.dir
            .path()
            .join("plugins_registry")
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().file_name() != *format!("{DRIVER}-reg.sock")),
        "a device-plugin socket is served too"
    );
    n.terminate().await;
}

#[tokio::test]
async fn dra_without_a_node_name_fails_naming_the_flag_and_the_variable() {
    let n = Node::new(Profile::Cx6Dx).await;
    let out = n
        .command()
        .arg("--kubeconfig")
        .arg(n.dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--node-name") && err.contains("NODE_NAME"),
        "{err}"
    );
    assert!(n.api.requests().is_empty());
}
