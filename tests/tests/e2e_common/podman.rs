//! Podman for tests: its own storage, run, tmp and config directories, inside a private
//! mount namespace (and optionally a test netns), so the machine's podman state, mounts
//! and network are not touched.
//!
//! Facts of this machine the setup answers: images cannot be pulled (tests `podman
//! import` or build `FROM scratch`); the sandbox may not raise rlimits
//! (`default_ulimits = []` plus `--ulimit host`); there is no systemd (cgroupfs, file
//! events); crun refuses a hybrid cgroup v1/v2 host, so the containers run with
//! `--cgroups disabled` in a mount namespace where the v2 hierarchy is unmounted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::{privileged, run_ok};

/// Why podman cannot run here, if it cannot: the one reason a podman test skips.
pub fn podman_unavailable() -> Option<String> {
    if let Err(e) = privileged() {
        return Some(e);
    }
    match Command::new("podman").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`podman --version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("no podman ({e}); apt-get install podman")),
    }
}

/// A private mount namespace held open by a child process (`cat` on a pipe; closing the
/// pipe ends it). The cgroup2 hierarchy of a hybrid host is unmounted inside it.
pub struct MountNs {
    holder: Child,
    stdin: Option<ChildStdin>,
}

impl MountNs {
    pub fn new() -> MountNs {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "slave", "--", "sh", "-c"])
            .arg(
                "if grep -q ' /sys/fs/cgroup/unified cgroup2 ' /proc/self/mounts; then \
                 umount /sys/fs/cgroup/unified || exit 1; fi; echo ready; exec cat >/dev/null",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "mount namespace holder did not start");
        let stdin = holder.stdin.take();
        MountNs { holder, stdin }
    }

    pub fn path(&self) -> String {
        format!("/proc/{}/ns/mnt", self.holder.id())
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.holder.wait();
    }
}

/// Options every `podman run` of the tests needs here.
pub const RUN_OPTS: [&str; 4] = ["--ulimit", "host", "--cgroups", "disabled"];

/// One podman installation for a test. Removes its containers on drop (also when the
/// test failed), before the mount namespace goes.
pub struct Podman {
    pub dir: PathBuf,
    netns: Option<String>,
    mnt: MountNs,
}

impl Podman {
    /// Podman under `dir`; with `cni`, the CNI backend with that plugin dir and network
    /// config dir; run inside the netns at `netns` when given.
    pub fn new(dir: &Path, cni: Option<(&Path, &Path)>, netns: Option<String>) -> Podman {
        for d in ["storage", "run", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let mut conf = String::from(
            "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\n[network]\nnetwork_backend = \"cni\"\n",
        );
        if let Some((plugins, netconf)) = cni {
            conf.push_str(&format!(
                "cni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n",
                plugins.display(),
                netconf.display()
            ));
        }
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        Podman {
            dir: dir.to_owned(),
            netns,
            mnt: MountNs::new(),
        }
    }

    pub fn mount_ns(&self) -> String {
        self.mnt.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.mnt.path()));
        if let Some(ns) = &self.netns {
            c.arg(format!("--net={ns}"));
        }
        c.args(["--", "podman", "--root"])
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args)).trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-a", "-f", "-t", "0"]).output();
    }
}
