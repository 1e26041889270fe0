//! Helpers shared by the end-to-end tests that run real binaries in real namespaces
//! (`e2e_*.rs`, `podman_*.rs`): the project's binaries, throwaway network namespaces, a
//! fixture host whose VF netdevs are veths in a test-owned "host" netns, and link/address
//! snapshots to prove that nothing was left behind.
//!
//! Nothing here touches the machine's own network namespace: every link lives in a netns
//! the test created, and each one is deleted on drop, also when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use simhost::{PfSpec, SimHost, VfBinding};

pub mod podman;

#[allow(unused_imports)] // not every test that includes this module uses each
pub use simhost::netlab::{LinkView, Netns, addrs, links, uid};

#[allow(unused_imports)] // not every test that includes this module builds binaries
pub use node_tests::{project_bin, project_bin_with};

/// Debian's reference CNI plugins (containernetworking-plugins).
pub const CNI_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Root, and `ip` and `nsenter` present: what every test here needs.
pub fn privileged() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (network namespaces)".into());
    }
    for tool in ["ip", "nsenter"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Err(format!("needs `{tool}` (iproute2 / util-linux)"));
        }
    }
    Ok(())
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) -> String {
    run_ok(Command::new("ip").args(args))
}

/// Every file under `dir` (relative paths, sorted); empty when `dir` does not exist.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A fixture host: a simulated sysfs whose VF netdevs are veths (the "VFs") in a
/// throwaway "host" netns, each with its peer up beside it. The `sriov` binary reads the
/// sysfs root, keeps VF settings in a fake state file (the kernel here has no SR-IOV)
/// and really moves the veths.
pub struct VfHost {
    pub id: String,
    pub host: Netns,
    pub sim: SimHost,
    /// Removed last (fields drop in order).
    pub tmp: tempfile::TempDir,
    /// Netdev of the first PF.
    pub pf: String,
}

impl VfHost {
    /// One ConnectX-6 Dx-like PF with `nvf` mlx5 VFs, with names unique to this test.
    pub fn new(nvf: usize) -> VfHost {
        let id = uid();
        let spec = PfSpec {
            bus: "0000:3b".into(),
            devfn: 0,
            first_vf_devfn: 2,
            netdev: format!("p{id}"),
            vf_netdev_prefix: format!("v{id}x"),
            device: "101d".into(),
            vf_device: "101e".into(),
            numa_node: 0,
            link_type: 1,
            total_vfs: 16,
            vfs: vec![VfBinding::Mlx5; nvf],
            up: true,
        };
        VfHost::create(id, |root| SimHost::create_with(root, vec![spec], None))
    }

    /// A host of a simulated-host profile (its VF netdev names are the profile's: they
    /// only need to be unique inside this host's netns).
    pub fn profile(profile: simhost::Profile) -> VfHost {
        VfHost::create(uid(), |root| SimHost::create(root, profile))
    }

    fn create(id: String, make: impl FnOnce(PathBuf) -> std::io::Result<SimHost>) -> VfHost {
        let tmp = tempfile::tempdir().unwrap();
        let sim = make(tmp.path().join("root")).unwrap();
        let host = Netns::new(format!("e2e-{id}-h"));
        simhost::netlab::veth_vfs(&host, &sim);
        for d in ["data", "ipam"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let pf = sim.pfs()[0].netdev.clone();
        VfHost {
            id,
            host,
            sim,
            tmp,
            pf,
        }
    }

    pub fn vf_pci(&self, vf: u32) -> String {
        self.sim.vf_address(0, vf)
    }

    pub fn vf_netdev(&self, vf: u32) -> String {
        self.sim.vf_netdev(0, vf)
    }

    /// The `sriov` binary's cache and lock directory.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// host-local's lease directory (`ipam.dataDir`).
    pub fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    /// The fake VF configurator's state file.
    pub fn fake_vf_state(&self) -> PathBuf {
        self.tmp.path().join("fake-vf.json")
    }

    /// The environment that points the `sriov` binary at this host's fixtures.
    pub fn sriov_env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "SRIOV_CNI_SYSFS_ROOT",
                self.sim.root().display().to_string(),
            ),
            ("SRIOV_CNI_DATA_DIR", self.data_dir().display().to_string()),
            (
                "SRIOV_CNI_FAKE_VF_STATE",
                self.fake_vf_state().display().to_string(),
            ),
        ]
    }

    /// The VF settings the fake holds (`vfs` of its state file), `{}` before any call.
    pub fn vf_settings(&self) -> Value {
        match std::fs::read(self.fake_vf_state()) {
            Ok(b) if !b.is_empty() => serde_json::from_slice::<Value>(&b).unwrap()["vfs"].clone(),
            _ => Value::Object(Default::default()),
        }
    }
}
