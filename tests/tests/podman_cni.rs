//! A real CNI runtime drives `sriov`: Debian's podman 4.3 with its CNI backend (libcni,
//! the library containerd and CRI-O use) runs a container on a network whose conflist
//! chains `sriov` -> `tuning` -> `portmap` (each later plugin works from the previous
//! one's result). The VF is a veth in a throwaway "host" netns, found through a fixture
//! sysfs; its VF settings go to the fake configurator (this kernel has no SR-IOV).
//!
//! Podman runs inside that host netns (`nsenter --net`) and inside a private mount
//! namespace of the test, with its own storage, run and config directories, so the
//! machine's podman state, network and mounts are not touched.
//!
//! Skipped (with the reason) only when podman cannot run at all: not root, or no podman.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_common::podman::{Podman as PodmanBase, RUN_OPTS, podman_unavailable};
use e2e_common::*;
use serde_json::{Value, json};

/// Podman on the CNI backend, run inside the VF host's netns: its plugin dir holds our
/// `sriov` beside Debian's plugins.
struct Podman<'a> {
    base: PodmanBase,
    host: &'a VfHost,
    netconf_dir: PathBuf,
}

impl<'a> Podman<'a> {
    /// Sets up podman's directories, its CNI plugin dir and a busybox image.
    fn new(host: &'a VfHost) -> Podman<'a> {
        let dir = host.tmp.path().join("podman");
        let netconf_dir = dir.join("net.d");
        let plugins = dir.join("cni-bin");
        for d in [&netconf_dir, &plugins] {
            std::fs::create_dir_all(d).unwrap();
        }
        // `sriov` in the plugin dir is a two-line wrapper that points the real binary at
        // the fixture host. The environment of podman cannot carry that: podman often
        // runs DEL from `podman container cleanup`, which conmon starts with an
        // environment of its own when the container exits.
        let wrapper = format!(
            "#!/bin/sh\n{}exec {} \"$@\"\n",
            host.sriov_env()
                .iter()
                .map(|(k, v)| format!("export {k}='{v}'\n"))
                .collect::<String>(),
            project_bin_with("sriov-cni", "sriov-test", &["test-fake"]).display()
        );
        std::fs::write(plugins.join("sriov"), wrapper).unwrap();
        std::fs::set_permissions(
            plugins.join("sriov"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        for p in ["host-local", "tuning", "portmap"] {
            let src = Path::new(CNI_PLUGIN_DIR).join(p);
            assert!(
                src.exists(),
                "{} missing: apt-get install containernetworking-plugins",
                src.display()
            );
            std::os::unix::fs::symlink(src, plugins.join(p)).unwrap();
        }
        let base = PodmanBase::new(&dir, Some((&plugins, &netconf_dir)), Some(host.host.path()));
        let pm = Podman {
            base,
            host,
            netconf_dir,
        };
        pm.import_busybox();
        pm
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.base.cmd(args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.base.ok(args)
    }

    /// Images cannot be pulled here: import a root filesystem of Debian's static busybox.
    fn import_busybox(&self) {
        let busybox = Path::new("/bin/busybox");
        let static_bb = run(Command::new(busybox).arg("--help")).status.success()
            && !run(Command::new("ldd").arg(busybox)).status.success();
        assert!(
            static_bb,
            "/bin/busybox is not a static busybox: apt-get install busybox-static"
        );
        let rootfs = self.base.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "ip", "cat", "ls"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = self.base.dir.join("rootfs.tar");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        self.ok(&[
            "import",
            &tar.display().to_string(),
            "localhost/e2e-busybox:1",
        ]);
    }

    /// The `sriov` plugin's log (`logFile` in the conflist).
    fn log_file(&self) -> PathBuf {
        self.base.dir.join("sriov.log")
    }

    /// Writes a conflist: `sriov` on `vf` (fixed deviceID: no multus here) with
    /// host-local IPAM, then `tuning` (a sysctl on net1), then `portmap`.
    fn network(&self, name: &str, vf: u32, tuning: Value) -> String {
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": name,
            "plugins": [
                {
                    "type": "sriov",
                    "deviceID": self.host.vf_pci(vf),
                    "vlan": 100,
                    "spoofchk": "on",
                    "trust": "on",
                    "logLevel": "debug",
                    "logFile": self.log_file(),
                    "ipam": {
                        "type": "host-local",
                        "subnet": "10.77.0.0/24",
                        "rangeStart": "10.77.0.10",
                        "rangeEnd": "10.77.0.20",
                        "dataDir": self.host.ipam_dir(),
                    }
                },
                tuning,
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        let path = self.netconf_dir.join(format!("{name}.conflist"));
        std::fs::write(path, serde_json::to_vec_pretty(&conflist).unwrap()).unwrap();
        name.to_owned()
    }

    /// The network namespaces podman keeps (`/run/netns/netns-<uuid>`: the file stays
    /// on disk if podman does not remove it, whatever mount namespace it ran in).
    fn netns_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("netns-"))
            .collect();
        v.sort();
        v
    }

    /// portmap's per-container NAT state in the host netns: its `CNI-DN-<hash>` chain and
    /// the rules jumping to it. (The CNI-HOSTPORT-* chains it creates once and shares
    /// between containers stay, as host-local's lock file does.)
    fn portmap_rules(&self) -> Vec<String> {
        let out = run_ok(
            Command::new("nsenter")
                .arg(format!("--net={}", self.host.host.path()))
                .args(["--", "iptables", "-w", "-t", "nat", "-S"]),
        );
        out.lines()
            .filter(|l| l.contains("CNI-DN-"))
            .map(str::to_owned)
            .collect()
    }
}

/// The podman tests compare node-wide state (podman's netns files, libcni's cache dir)
/// before and after, so they run one at a time, also when a test runner (nextest) runs
/// each test in its own process: an exclusive flock, released when the guard drops.
fn serial() -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("node-tests-podman-cni.lock"))
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

/// libcni's result cache entries for containers of `net` (it keeps them in
/// /var/lib/cni/results, named `<network>-<container id>-<ifname>`).
fn libcni_cache(net: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("{net}-")))
        .collect();
    v.sort();
    v
}

/// VF 0 and 1 start with settings other than the plugin's, so a restore is visible.
fn seed_vf_state(host: &VfHost) {
    let mut st = sriov_cni::fake::FakeState::default();
    for vf in 0..2 {
        let s = sriov_cni::sriov::VfState {
            vlan: 7,
            spoofchk: false,
            ..Default::default()
        };
        st.vfs.insert(format!("{}/{vf}", host.pf), s);
    }
    st.store(&host.fake_vf_state()).unwrap();
}

fn vf_state(host: &VfHost, vf: u32) -> Value {
    host.vf_settings()[format!("{}/{vf}", host.pf)].clone()
}

/// Everything the attachment could leave on the node.
#[derive(Debug, PartialEq)]
struct NodeState {
    host_links: Vec<LinkView>,
    netns: Vec<String>,
    nat: Vec<String>,
    leases: Vec<String>,
    sriov_cache: Vec<String>,
    libcni_cache: Vec<String>,
    vf0: Value,
    vf1: Value,
    containers: String,
}

fn node_state(pm: &Podman<'_>, host: &VfHost, net: &str) -> NodeState {
    // host-local keeps `lock` and `last_reserved_ip.0` by design; leases are the IPs.
    let leases = tree(&host.ipam_dir())
        .into_iter()
        .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved_ip"))
        .collect();
    // The sriov binary keeps its lock files (one per VF); the cache entries are the rest.
    let sriov_cache = tree(&host.data_dir())
        .into_iter()
        .filter(|f| !f.starts_with("lock/"))
        .collect();
    NodeState {
        host_links: links(&host.host.name),
        netns: pm.netns_files(),
        nat: pm.portmap_rules(),
        leases,
        sriov_cache,
        libcni_cache: libcni_cache(net),
        vf0: vf_state(host, 0),
        vf1: vf_state(host, 1),
        containers: pm.ok(&["ps", "-a", "--format", "{{.Names}}"]),
    }
}

#[test]
fn podman_runs_a_container_on_an_sriov_tuning_portmap_chain() {
    if let Some(why) = podman_unavailable() {
        simhost::skip::skip(
            "podman_runs_a_container_on_an_sriov_tuning_portmap_chain",
            &why,
        );
        return;
    }
    let _serial = serial();
    let host = VfHost::new(2);
    seed_vf_state(&host);
    let pm = Podman::new(&host);
    let net = pm.network(
        &format!("sriov-pdm-{}", host.id),
        0,
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.net1.arp_ignore": "1"}}),
    );
    let before = node_state(&pm, &host, &net);
    let vf = host.vf_netdev(0);
    assert!(before.host_links.iter().any(|l| l.name == vf));

    // ADD on start.
    let name = format!("pdm-{}", host.id);
    let network = format!("{net}:interface_name=net1");
    let run_args = [
        &["run", "-d", "--name", &name][..],
        &RUN_OPTS,
        &["--network", &network, "-p", "18080:80"],
    ]
    .concat();
    let cid = pm.ok(&[&run_args[..], &["localhost/e2e-busybox:1", "sleep", "600"]].concat());
    assert_eq!(cid.len(), 64, "container id: {cid}");

    // The container sees net1 with the host-local address, and tuning's sysctl on it.
    let ip4 = pm.ok(&["exec", &name, "ip", "-4", "-o", "addr", "show", "net1"]);
    let addr = ip4
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 on net1: {ip4}"))
        .to_owned();
    assert!(
        addr.starts_with("10.77.0.") && addr.ends_with("/24"),
        "{addr}"
    );
    let ip = addr.trim_end_matches("/24");
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        (10..=20).contains(&last),
        "{ip} outside rangeStart..rangeEnd"
    );
    assert_eq!(
        pm.ok(&[
            "exec",
            &name,
            "cat",
            "/proc/sys/net/ipv4/conf/net1/arp_ignore"
        ]),
        "1"
    );
    // The VF left the host netns; its settings were applied on the "PF".
    let during = node_state(&pm, &host, &net);
    assert!(
        !during.host_links.iter().any(|l| l.name == vf),
        "{vf} still on the host"
    );
    assert_eq!(during.vf0["vlan"], 100);
    assert_eq!(during.vf0["spoofchk"], true);
    assert_eq!(during.vf0["trust"], true);
    assert_eq!(during.vf1, before.vf1, "VF 1 untouched");
    // host-local leased the address for this container, sriov cached the attachment.
    let lease = host.ipam_dir().join(&net).join(ip);
    assert_eq!(
        std::fs::read_to_string(&lease).unwrap().lines().next(),
        Some(cid.as_str())
    );
    assert_eq!(during.sriov_cache, [format!("{cid}-net1")]);
    // portmap got the address from the chain's result (prevResult) and DNATs to it.
    let dnat = format!("--to-destination {ip}:80");
    assert!(
        during
            .nat
            .iter()
            .any(|r| r.contains(&dnat) && r.contains("--dport 18080")),
        "{:#?}",
        during.nat
    );
    assert!(
        during
            .nat
            .iter()
            .any(|r| r.contains(&format!("id: \\\"{cid}\\\""))),
        "{:#?}",
        during.nat
    );
    assert_eq!(during.libcni_cache, [format!("{net}-{cid}-net1")]);
    let sandbox = pm.ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.SandboxKey}}",
        &name,
    ]);
    let netns_file = sandbox
        .strip_prefix("/run/netns/")
        .unwrap_or_else(|| panic!("sandbox {sandbox}"));
    assert_eq!(
        during
            .netns
            .iter()
            .filter(|n| !before.netns.contains(n))
            .collect::<Vec<_>>(),
        [netns_file]
    );

    // DEL on removal: everything back as it was.
    pm.ok(&["rm", "-f", "-t", "0", &name]);
    let after = node_state(&pm, &host, &net);
    assert_eq!(after, before);
    assert!(!Path::new(&sandbox).exists());
}

#[test]
fn podman_cleans_up_when_a_later_plugin_in_the_chain_fails() {
    if let Some(why) = podman_unavailable() {
        simhost::skip::skip(
            "podman_cleans_up_when_a_later_plugin_in_the_chain_fails",
            &why,
        );
        return;
    }
    let _serial = serial();
    let host = VfHost::new(2);
    seed_vf_state(&host);
    let pm = Podman::new(&host);
    // tuning fails after sriov succeeded: the sysctl names an interface that is not there.
    let net = pm.network(
        &format!("sriov-bad-{}", host.id),
        1,
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.nosuchif.arp_ignore": "1"}}),
    );
    let before = node_state(&pm, &host, &net);
    let network = format!("{net}:interface_name=net1");
    let name = format!("bad-{}", host.id);
    let args = [
        &["run", "--rm", "--name", &name][..],
        &RUN_OPTS,
        &["--network", &network, "localhost/e2e-busybox:1", "true"],
    ]
    .concat();
    let out = run(&mut pm.cmd(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run should fail");
    assert!(stderr.contains("tuning"), "{stderr}");
    // sriov did ADD (the fake saw VF 1 configured), then podman's DEL put it all back.
    let calls = serde_json::from_slice::<Value>(&std::fs::read(host.fake_vf_state()).unwrap())
        .unwrap()["calls"]
        .clone();
    let calls: Vec<&str> = calls
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("set {} vf 1 ", host.pf))),
        "{calls:?}"
    );
    // Podman may leave the failed container behind (without --rm having run): remove it.
    let _ = run(&mut pm.cmd(&["rm", "-f", "-t", "0", &name]));
    let after = node_state(&pm, &host, &net);
    assert_eq!(after, before);
}
