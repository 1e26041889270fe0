//! Shared helpers for the privileged tests: throwaway network namespaces (removed on
//! drop, also when a test fails), a fixture sysfs whose VF netdevs are real veths in a
//! test-owned "host" netns, and a runner for the `sriov-test` binary (the real plugin with
//! VF settings in the file-backed fake).
//!
//! Nothing here touches the machine's own netns: the binary runs under
//! `nsenter --net=/run/netns/<test host netns>`, pods are other test netns.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use serde_json::{Value, json};
use simhost::{PfSpec, SimHost, VfBinding};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The test binary: `sriov` plus the file-backed VF fake (cargo feature `test-fake`).
pub const BIN: &str = env!("CARGO_BIN_EXE_sriov-test");
/// The shipped binary: refuses ADD while `SRIOV_CNI_FAKE_VF_STATE` is set.
pub const SHIPPED_BIN: &str = env!("CARGO_BIN_EXE_sriov");
pub const CNI_PATH: &str = "/usr/lib/cni";

/// Whether privileged tests can run here (root, iproute2, nsenter, host-local).
///
/// A developer's non-root run skips: each skipped test writes one `SKIPPED <test>: <what
/// is missing>` line straight to stderr (past the test harness's output capture; with
/// nextest, `--success-output immediate` shows them). Under `CI=true` or as root (as
/// `./scripts/test.sh` runs) nothing may be skipped: a missing piece fails the test with
/// the reason, so a broken test machine cannot pass green.
pub fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let mut missing = Vec::new();
    if !root {
        missing.push("root".to_string());
    }
    if !Path::new("/usr/bin/nsenter").exists() {
        missing.push("/usr/bin/nsenter".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        missing.push("iproute2 (ip)".into());
    }
    if !Path::new(CNI_PATH).join("host-local").exists() {
        missing.push(format!("{CNI_PATH}/host-local (scripts/deps.sh test)"));
    }
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let why = format!("{test} needs {}", missing.join(", "));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !(ci || root),
        "not skipping under {}: {why}",
        if ci { "CI=true" } else { "root" }
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {why}");
    false
}

#[allow(unused_imports)] // not every test that includes this module uses each
pub use simhost::netlab::{LinkView, Netns as Ns, addrs, ip_ok, links, uid};

pub fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip").args(args).output().unwrap()
}

/// The outcome of one plugin run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub out: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.code, 0,
            "stdout {} stderr {}",
            self.stdout, self.stderr
        );
        &self.out
    }

    pub fn err_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected failure, got {}", self.stdout);
        self.out["code"].as_u64().unwrap_or(0)
    }

    pub fn msg(&self) -> String {
        self.out["msg"].as_str().unwrap_or("").to_string()
    }
}

/// A test host: fixture sysfs with one PF of `nvf` VFs whose netdevs are veths in a
/// private "host" netns, a fake VF state file, a data dir and an IPAM dir.
pub struct Lab {
    pub id: String,
    pub tmp: tempfile::TempDir,
    pub sim: SimHost,
    pub host: Ns,
    pub pods: Vec<Ns>,
    pub pf: String,
    pub nvf: u32,
    pub ipam_dir: PathBuf,
}

impl Lab {
    pub fn new(nvf: u32) -> Lab {
        Lab::with_bindings(vec![VfBinding::Mlx5; nvf as usize])
    }

    pub fn with_bindings(bindings: Vec<VfBinding>) -> Lab {
        Lab::with_link_type(bindings, 1)
    }

    /// A lab whose PF is InfiniBand (sysfs `type` 32); the fake's IB model gives VF i
    /// the node/port GUIDs [`Lab::orig_guids`]`(i)`. The VF netdevs stay veths.
    pub fn new_ib(nvf: u32) -> Lab {
        let lab = Lab::with_link_type(vec![VfBinding::Mlx5; nvf as usize], 32);
        let mut st = lab.fake();
        for i in 0..nvf {
            let (node, port) = Lab::orig_guids(i);
            st.ib_vfs.insert(
                format!("{}/{i}", lab.pf),
                sriov_cni::fake::IbVf {
                    node,
                    port,
                    bound_node: node,
                    bound_port: port,
                    binds: 0,
                },
            );
        }
        st.store(&lab.fake_path()).unwrap();
        lab
    }

    pub fn orig_guids(vf: u32) -> (u64, u64) {
        (
            0x0002_c903_0000_1000 + vf as u64,
            0x0002_c903_0000_2000 + vf as u64,
        )
    }

    pub fn with_link_type(bindings: Vec<VfBinding>, link_type: u32) -> Lab {
        let id = uid();
        let tmp = tempfile::tempdir().unwrap();
        let pf = format!("p{id}");
        let nvf = bindings.len() as u32;
        let spec = PfSpec {
            bus: "0000:3b".into(),
            devfn: 0,
            first_vf_devfn: 2,
            netdev: pf.clone(),
            vf_netdev_prefix: format!("v{id}x"),
            device: "101d".into(),
            vf_device: "101e".into(),
            numa_node: 0,
            link_type,
            total_vfs: 16,
            vfs: bindings.clone(),
            up: true,
        };
        let sim = SimHost::create_with(tmp.path().join("root"), vec![spec], None).unwrap();
        let host = Ns::new(format!("sriovt-{id}-h"));
        simhost::netlab::veth_vfs(&host, &sim);
        let ipam_dir = tmp.path().join("ipam");
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        let mut st = sriov_cni::fake::FakeState::default();
        for i in 0..nvf {
            st.vfs
                .insert(format!("{pf}/{i}"), sriov_cni::sriov::VfState::default());
        }
        st.store(&tmp.path().join("fake-vf.json")).unwrap();
        Lab {
            id,
            tmp,
            sim,
            host,
            pods: Vec::new(),
            pf,
            nvf,
            ipam_dir,
        }
    }

    pub fn vf_pci(&self, vf: u32) -> String {
        self.sim.vf_address(0, vf)
    }

    pub fn vf_name(&self, vf: u32) -> String {
        self.sim.vf_netdev(0, vf)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    pub fn fake_path(&self) -> PathBuf {
        self.tmp.path().join("fake-vf.json")
    }

    pub fn fake(&self) -> sriov_cni::fake::FakeState {
        sriov_cni::fake::FakeState::load(&self.fake_path()).unwrap()
    }

    /// Switch the fake to its igb model; `been_up` VFs have an active mailbox already
    /// (they were up once, as after an earlier attachment).
    pub fn set_igb(&self, been_up: &[u32]) {
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

    /// Give VF `vf`'s netdev an rxe-like soft RDMA device `name` in the fixture tree:
    /// under `devices/virtual/infiniband`, tied to the netdev only by `parent`.
    pub fn add_soft_rdma(&self, vf: u32, name: &str) {
        let r = self.sim.root();
        let dir = r.join("sys/devices/virtual/infiniband").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("parent"), format!("{}\n", self.vf_name(vf))).unwrap();
        std::os::unix::fs::symlink(
            format!("../../devices/virtual/infiniband/{name}"),
            r.join("sys/class/infiniband").join(name),
        )
        .unwrap();
    }

    pub fn set_fail(&self, step: Option<(&str, i32)>) {
        let mut st = self.fake();
        st.fail.clear();
        if let Some((s, e)) = step {
            st.fail.insert(s.into(), e);
        }
        st.store(&self.fake_path()).unwrap();
    }

    /// Add a pod netns; returns its index in `pods`.
    pub fn pod(&mut self) -> usize {
        let n = self.pods.len();
        self.pods.push(Ns::new(format!("sriovt-{}-p{n}", self.id)));
        n
    }

    pub fn pod_path(&self, i: usize) -> String {
        self.pods[i].path()
    }

    /// A network config for VF `vf`.
    pub fn conf(&self, version: &str, vf: u32, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": format!("net{}", self.id),
            "type": "sriov",
            "deviceID": self.vf_pci(vf),
            "logLevel": "debug",
            "ipam": {
                "type": "host-local",
                "subnet": "10.77.0.0/16",
                "gateway": "10.77.0.1",
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir.display().to_string()
            }
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

    /// Run the binary in the host netns with the lab's environment plus `env`.
    pub fn run_env(&self, env: &[(&str, &str)], stdin: &Value) -> Run {
        self.run_raw(env, &stdin.to_string())
    }

    /// Same with raw stdin text. An env value of "" unsets the variable.
    pub fn run_raw(&self, env: &[(&str, &str)], stdin: &str) -> Run {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host.path()))
            .arg("--")
            .arg(BIN)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("SRIOV_CNI_SYSFS_ROOT", self.sim.root())
            .env("SRIOV_CNI_DATA_DIR", self.data_dir())
            .env("SRIOV_CNI_FAKE_VF_STATE", self.fake_path())
            .env("CNI_PATH", CNI_PATH);
        for (k, v) in env {
            if v.is_empty() {
                cmd.env_remove(k);
            } else {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write;
            let mut si = child.stdin.take().unwrap();
            si.write_all(stdin.as_bytes()).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        Run {
            code: o.status.code().unwrap_or(-1),
            out: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&o.stderr).to_string(),
        }
    }

    /// Run a command for container `cid`, interface `ifname`, netns `netns`.
    pub fn run(&self, cmd: &str, cid: &str, ifname: &str, netns: &str, conf: &Value) -> Run {
        self.run_env(
            &[
                ("CNI_COMMAND", cmd),
                ("CNI_CONTAINERID", cid),
                ("CNI_IFNAME", ifname),
                ("CNI_NETNS", netns),
            ],
            conf,
        )
    }

    /// Everything a failed ADD must leave as it found: host links (names, MACs, MTUs,
    /// state), VF state, cache files, lock owner records, IPAM leases.
    pub fn snapshot(&self) -> Snapshot {
        let mut files = Vec::new();
        for d in [self.data_dir(), self.data_dir().join("lock")] {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().to_string();
                // the lock files themselves stay (empty); what matters is records
                if e.file_type().unwrap().is_file()
                    && (d == self.data_dir() || n.ends_with(".owner"))
                {
                    files.push(n);
                }
            }
        }
        files.sort();
        let mut leases = Vec::new();
        for e in walk(&self.ipam_dir) {
            let n = e.file_name().unwrap().to_string_lossy().to_string();
            if n.parse::<std::net::IpAddr>().is_ok() {
                leases.push(n);
            }
        }
        leases.sort();
        let fake = self.fake();
        Snapshot {
            links: links(&self.host.name),
            vfs: fake.vfs,
            rdma: fake.rdma,
            // igb's admin-MAC flag decides whether the VF may change its own MAC; whether
            // the VF has been up cannot be undone and is left out.
            igb_admin_mac: fake
                .igb_vfs
                .iter()
                .filter(|(_, v)| v.admin_mac)
                .map(|(k, _)| k.clone())
                .collect(),
            files,
            leases,
        }
    }
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub links: Vec<LinkView>,
    pub vfs: BTreeMap<String, sriov_cni::sriov::VfState>,
    pub rdma: BTreeMap<String, u64>,
    /// VFs with igb's admin-MAC flag set.
    pub igb_admin_mac: Vec<String>,
    pub files: Vec<String>,
    pub leases: Vec<String>,
}
