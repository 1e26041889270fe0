//! The DRA test node (`dra_daemon.rs`, `dra_grpc_interop.rs`): a simulated host, the API
//! server stand-in (real HTTP on loopback, through `--kubeconfig`) and the `device-plugin`
//! binary with `--dra`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use node_tests::DEFAULT_TIMEOUT;
use node_tests::apiserver::{ApiServer, PoolSummary};
use node_tests::simhost::{Profile, SimHost};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DRIVER: &str = "sriov.rdma.example.org";
pub const NODE: &str = "node-a";

/// One DRA node: a simulated host, the API server stand-in with a kubeconfig for it, and
/// the daemon (`--dra`), killed on drop (also when the test fails).
pub struct Node {
    pub dir: tempfile::TempDir,
    pub host: SimHost,
    pub api: ApiServer,
    pub daemon: Option<Child>,
}

impl Node {
    pub async fn new(profile: Profile) -> Node {
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

    pub fn registration(&self) -> PathBuf {
        self.dir
            .path()
            .join("plugins_registry")
            .join(format!("{DRIVER}-reg.sock"))
    }

    /// The `DRAPlugin` endpoint `GetInfo` names.
    pub fn endpoint(&self) -> PathBuf {
        self.dir
            .path()
            .join("plugins")
            .join(DRIVER)
            .join(proto::dra::DRA_SOCKET_NAME)
    }

    /// The CDI spec file Prepare writes for the claim `uid`.
    pub fn cdi_spec(&self, uid: &str) -> PathBuf {
        self.dir
            .path()
            .join("cdi")
            .join(format!("{DRIVER}-{uid}.json"))
    }

    /// A ResourceClaim `ns/name` (UID `uid`) on the stand-in, allocated: one request `vf`
    /// served by `device` of this node's pool.
    pub fn seed_vf_claim(&self, ns: &str, name: &str, uid: &str, device: &str) {
        self.api.seed_claim(
            ns,
            name,
            json!({"metadata": {"uid": uid},
                   "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "sriov-vf"}}]}},
                   "status": {"allocation": {"devices": {"results": [{"request": "vf", "driver": DRIVER,
                       "pool": NODE, "device": device}]}}}}),
        );
    }

    pub fn command(&self) -> Command {
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
            .args(node_tests::dra_args(d, DRIVER))
            .env_remove("NODE_NAME")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null());
        c
    }

    pub fn spawn(&mut self) {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Wait (bounded) until the daemon's log has a line containing `needle` (the daemon
    /// logs a sync's outcome after the API server answered, so after the test can see it).
    pub async fn wait_log(&self, needle: &str) -> String {
        let t0 = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                t0.elapsed() < DEFAULT_TIMEOUT,
                "no {needle:?} in the log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.daemon.as_ref().unwrap().id()).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// SIGTERM and wait for a clean exit (async: the stand-in runs on this runtime and
    /// must answer the shutdown's deletes).
    pub async fn terminate(&mut self) {
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
    pub async fn wait_pool(&self, what: &str, pred: impl Fn(&PoolSummary) -> bool) -> PoolSummary {
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
    pub async fn wait_list(&self) {
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

    pub fn device(&self, pf: usize, vf: u32) -> String {
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
