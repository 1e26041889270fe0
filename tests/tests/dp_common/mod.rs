//! The test node of the device-plugin tests (`device_plugin_kubelet.rs`,
//! `device_plugin_lifecycle.rs`): a simulated host, a kubelet simulator, and the real
//! `device-plugin` binary, killed on drop (also when the test fails).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use node_tests::{DEFAULT_TIMEOUT, KubeletSim};
use notify::{RecursiveMode, Watcher};
use serde_json::Value;
use simhost::{Profile, SimHost};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn daemon_bin() -> PathBuf {
    node_tests::project_bin("device-plugin", "device-plugin")
}

/// One test node: a simulated host, a kubelet simulator, the daemon process.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub host: SimHost,
    pub kubelet: KubeletSim,
    pub daemon: Option<Child>,
}

impl Node {
    /// A node of `profile` with config text `config` (None = embedded default); the
    /// daemon is not started yet.
    pub async fn new(profile: Profile, config: Option<&str>) -> Node {
        let dir = node_tests::scratch();
        let host = SimHost::create(dir.path().join("host"), profile).unwrap();
        let kubelet = KubeletSim::start(dir.path().join("device-plugins"))
            .await
            .unwrap();
        if let Some(c) = config {
            std::fs::write(dir.path().join("config.json"), c).unwrap();
        }
        Node::from_parts(dir, host, kubelet)
    }

    /// A node around a kubelet simulator the test set up itself.
    pub fn from_parts(dir: tempfile::TempDir, host: SimHost, kubelet: KubeletSim) -> Node {
        Node {
            dir,
            host,
            kubelet,
            daemon: None,
        }
    }

    /// [`Node::new`], then the daemon started with `extra` arguments.
    pub async fn start(profile: Profile, config: Option<&str>, extra: &[&str]) -> Node {
        let mut n = Node::new(profile, config).await;
        n.spawn(extra);
        n
    }

    /// The daemon's command line on this node, optionally through `wrapper` (e.g.
    /// `unshare --net`), reading `config` (None = the embedded default). The device-info
    /// GC is off unless `extra` sets its interval; `--cdi-dir` only matters with `--cdi`.
    pub fn command(&self, wrapper: &[&str], config: Option<&Path>, extra: &[&str]) -> Command {
        let d = self.dir.path();
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(daemon_bin());
                c
            }
            None => Command::new(daemon_bin()),
        };
        cmd.arg("--root")
            .arg(self.host.root())
            .arg("--device-plugin-path")
            .arg(self.kubelet.dir())
            .arg("--device-info-dir")
            .arg(d.join("devinfo"))
            .arg("--cdi-dir")
            .arg(d.join("cdi"));
        if !extra.contains(&"--device-info-gc-interval") {
            cmd.args(["--device-info-gc-interval", "0"]);
        }
        cmd.args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("daemon.log")).unwrap());
        if let Some(c) = config {
            cmd.arg("--config-file").arg(c);
        }
        cmd
    }

    /// Another daemon on this node, reading `config` (its log replaces daemon.log).
    pub fn spawn_child(&self, config: Option<&Path>, extra: &[&str]) -> Child {
        self.command(&[], config, extra).spawn().unwrap()
    }

    /// Start the node's daemon (on `config.json` when the node has one) with `extra`
    /// arguments, optionally through `wrapper`.
    pub fn spawn_with(&mut self, wrapper: &[&str], extra: &[&str]) {
        let cfg = self.config_path();
        let cfg = cfg.exists().then_some(cfg.as_path());
        let child = self.command(wrapper, cfg, extra).spawn().unwrap();
        self.daemon = Some(child);
    }

    pub fn spawn(&mut self, extra: &[&str]) {
        self.spawn_with(&[], extra);
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.json")
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.daemon.as_ref().unwrap().id()).unwrap())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A device-info file the daemon wrote, as JSON.
    pub fn devinfo(&self, file: &str) -> Value {
        let p = self.dir.path().join("devinfo").join(file);
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    /// Waits until the daemon's log holds `needle` at least `times` times (woken by
    /// inotify on each write, bounded by the timeout).
    pub async fn wait_log(&self, needle: &str, times: usize) -> String {
        self.wait_log_for(&format!("{needle:?} x{times}"), |log| {
            log.matches(needle).count() >= times
        })
        .await
    }

    /// Waits until `pred` holds for the daemon's log (see [`Node::wait_log`]).
    pub async fn wait_log_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut w = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.send(());
        })
        .unwrap();
        w.watch(self.dir.path(), RecursiveMode::NonRecursive)
            .unwrap();
        let wait = async {
            loop {
                let log = self.log();
                if pred(&log) {
                    return log;
                }
                rx.recv().await;
            }
        };
        match tokio::time::timeout(DEFAULT_TIMEOUT, wait).await {
            Ok(log) => log,
            Err(_) => panic!("log never had {what}:\n{}", self.log()),
        }
    }

    /// Waits until every one of `resources` is registered and has sent a device list.
    pub async fn registered(&self, resources: &[&str]) {
        if let Err(e) = self
            .kubelet
            .wait_all_registered(resources, DEFAULT_TIMEOUT)
            .await
        {
            panic!(
                "{e}\nattempts: {:?}\ndaemon log:\n{}",
                self.kubelet.attempts(),
                self.log()
            );
        }
        for r in resources {
            self.devices(r, |_| true).await;
        }
    }

    /// Waits until `resource`'s latest list satisfies `pred`.
    pub async fn devices(
        &self,
        resource: &str,
        pred: impl FnMut(&[proto::deviceplugin::v1beta1::Device]) -> bool,
    ) -> node_tests::DeviceList {
        self.kubelet
            .wait_devices(resource, DEFAULT_TIMEOUT, pred)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", self.kubelet.devices(resource), self.log()))
    }

    /// Waits until `resource` lists `count` healthy devices.
    pub async fn healthy(&self, resource: &str, count: usize) -> node_tests::DeviceList {
        self.kubelet
            .wait_healthy_count(resource, count, DEFAULT_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", self.kubelet.devices(resource), self.log()))
    }

    /// Write the config as a ConfigMap update or an editor does: temp file + rename.
    pub fn replace_config(&self, text: &str) {
        let tmp = self.dir.path().join(".config.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.config_path()).unwrap();
    }

    /// The endpoints of every registration kubelet holds (socket names relative to the
    /// device-plugin dir, or absolute paths of plugins_registry sockets).
    pub fn sockets(&self) -> Vec<String> {
        self.kubelet
            .state()
            .active
            .values()
            .map(|r| r.request.endpoint.clone())
            .collect()
    }

    /// SIGTERM the daemon: it must exit 0 and remove every socket it registered. Returns
    /// how many there were.
    pub fn terminate_removing_sockets(&mut self) -> usize {
        let socks = self.sockets();
        let status = self.terminate();
        assert!(status.success(), "{status}\n{}", self.log());
        for s in &socks {
            // join keeps an absolute endpoint as it is
            assert!(!self.kubelet.dir().join(s).exists(), "{s} left behind");
        }
        socks.len()
    }

    /// SIGTERM the daemon; it must exit within the timeout.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        let mut child = self.daemon.take().unwrap();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        wait_exit(&mut child, DEFAULT_TIMEOUT)
            .unwrap_or_else(|| panic!("daemon did not exit on SIGTERM\n{}", self.log()))
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

/// Wait for a child's exit, checking its status at most `timeout` (a bounded wait on a
/// process, not a sleep standing in for an event).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let end = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
