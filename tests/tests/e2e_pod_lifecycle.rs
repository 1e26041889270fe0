//! A pod's life on one simulated node, each party played for real:
//!
//! - the node: a simulated ConnectX-6 Dx host (2 PFs x 8 VFs, sysfs fixture) whose VF
//!   netdevs are veths in a throwaway "host" netns;
//! - the device plugin: the real `device-plugin` binary, run twice as the DaemonSet in
//!   `deploy/` runs it, on the ConfigMap's `config.json` and `rdma-shared.json`;
//! - kubelet: the simulator registers the plugins, admits the example pods of
//!   `deploy/pods.yaml` (GetPreferredAllocation + Allocate) and serves pod-resources;
//! - multus: a small stand-in here reads the pod's `k8s.v1.cni.cncf.io/networks`, the
//!   NetworkAttachmentDefinitions of `deploy/networks.yaml`, finds the pod's VF through
//!   pod-resources and the device-info file, injects `deviceID` and execs the real `sriov`
//!   (and Debian's `macvlan` for the seed notes' network) in a real pod netns; on deletion
//!   it calls DEL twice, as multus may, and removes its device-info copy;
//! - then the VF is free again and the node is as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use deploy_manifests::k8s_openapi::api::core::v1::Pod;
use deploy_manifests::{Deployment, NetworkAttachmentDefinition};
use e2e_common::*;
use node_tests::simhost::Profile;
use node_tests::{DEFAULT_TIMEOUT, KubeletSim, PodAllocation, PodSpec, podresources};
use serde_json::Value;

const VF_POOL: &str = "intel.com/mlnx_sriov_rdma";
const HCA: &str = "rdma/hca";

/// The objects of deploy/.
fn deployed() -> Deployment {
    Deployment::load(&deploy_manifests::deploy_dir()).unwrap()
}

/// A `device-plugin` process, killed (by its pid) on drop.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulated node. (Fields drop in order: the daemons stop before the kubelet, the
/// netns and the directories they use go.)
struct Node {
    daemons: Vec<Daemon>,
    _pod_resources_server: proto::unix::UnixServer,
    kubelet: KubeletSim,
    pod_resources: PathBuf,
    deployed: Deployment,
    /// The fixture host and the temp dir everything lives in; dropped last.
    h: VfHost,
}

impl Node {
    async fn start() -> Node {
        // Every VF netdev of the fixture is a veth in the node's netns; ens192 is the
        // seed notes' macvlan master.
        let h = VfHost::profile(Profile::Cx6Dx);
        let (host, tmp) = (&h.host, &h.tmp);
        ip(&[
            "-n", &host.name, "link", "add", "ens192", "type", "veth", "peer", "name", "ens192p",
        ]);
        ip(&["-n", &host.name, "link", "set", "ens192", "up"]);
        for d in [
            "device-plugins",
            "pcidp",
            "devinfo/dp",
            "devinfo/cni",
            "ipam",
            "pod-resources",
            "logs",
        ] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        let deployed = deployed();
        for (key, text) in deployed.config_files() {
            std::fs::write(tmp.path().join("pcidp").join(key), text).unwrap();
        }
        let kubelet = KubeletSim::start(tmp.path().join("device-plugins"))
            .await
            .unwrap();
        let pod_resources = tmp.path().join("pod-resources/kubelet.sock");
        let server = kubelet.serve_pod_resources(&pod_resources).unwrap();
        let bin = project_bin("device-plugin", "device-plugin");
        let mut daemons = Vec::new();
        let keys: Vec<String> = deployed
            .daemon_containers()
            .into_iter()
            .map(|c| deployed.config_key(c).unwrap())
            .collect();
        for key in &keys {
            let log = tmp.path().join("logs").join(format!("{key}.log"));
            let child = Command::new(&bin)
                .arg("--root")
                .arg(h.sim.root())
                .arg("--config-file")
                .arg(tmp.path().join("pcidp").join(key))
                .arg("--device-plugin-path")
                .arg(kubelet.dir())
                .arg("--device-info-dir")
                .arg(tmp.path().join("devinfo/dp"))
                // Device-info files of VFs no pod holds go (sweep every second; a file is
                // kept for a second after Allocate wrote it).
                .arg("--pod-resources-socket")
                .arg(&pod_resources)
                .args([
                    "--device-info-gc-interval",
                    "1",
                    "--device-info-gc-grace",
                    "1",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            daemons.push(Daemon { child, log });
        }
        Node {
            daemons,
            _pod_resources_server: server,
            kubelet,
            pod_resources,
            deployed,
            h,
        }
    }

    fn daemon_logs(&self) -> String {
        self.daemons
            .iter()
            .map(|d| std::fs::read_to_string(&d.log).unwrap_or_default())
            .collect()
    }

    /// Everything a pod's attachments could leave on the node.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            links: links(&self.h.host.name),
            leases: tree(&self.h.ipam_dir())
                .into_iter()
                .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved_ip"))
                .collect(),
            sriov_cache: tree(&self.h.data_dir())
                .into_iter()
                .filter(|f| !f.starts_with("lock/"))
                .collect(),
            cni_devinfo: tree(&self.h.tmp.path().join("devinfo/cni")),
            vf_settings: self.h.vf_settings(),
        }
    }

    /// The kubelet's view of a pod from deploy/pods.yaml, renamed `name`.
    fn pod(&self, template: &str, name: &str) -> (Pod, PodSpec) {
        let mut pod = self.deployed.pod(template).unwrap().clone();
        pod.metadata.name = Some(name.to_owned());
        let ns = pod.metadata.namespace.clone().unwrap();
        let mut spec = PodSpec::new(&ns, name);
        for c in &pod.spec.as_ref().unwrap().containers {
            let limits: Vec<(String, usize)> = c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .into_iter()
                .flatten()
                .filter(|(r, _)| r.contains('/'))
                .map(|(r, q)| (r.clone(), q.0.parse().unwrap()))
                .collect();
            let limits: Vec<(&str, usize)> = limits.iter().map(|(r, n)| (r.as_str(), *n)).collect();
            spec = spec.container(&c.name, &limits);
        }
        (pod, spec)
    }
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    links: Vec<LinkView>,
    leases: Vec<String>,
    sriov_cache: Vec<String>,
    cni_devinfo: Vec<String>,
    vf_settings: Value,
}

/// One network attached to a pod by the multus stand-in.
#[derive(Debug, Clone)]
struct Attachment {
    network: String,
    ifname: String,
    plugin: PathBuf,
    /// The delegate config as executed (deviceID injected), kept for DEL as multus does.
    conf: Value,
    /// The VF's PCI address, for device-backed networks.
    device: Option<String>,
    devinfo_copy: Option<PathBuf>,
    result: Value,
}

/// A running pod: its sandbox netns and attachments.
struct RunningPod {
    name: String,
    namespace: String,
    sandbox_id: String,
    netns: Netns,
    allocation: PodAllocation,
    attachments: Vec<Attachment>,
}

/// Execs a CNI plugin inside the node's netns, as a runtime on the node would.
fn exec_cni(
    node: &Node,
    plugin: &Path,
    command: &str,
    pod: &RunningPod,
    ifname: &str,
    conf: &Value,
) -> (i32, Value, String) {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", node.h.host.path()))
        .arg("--")
        .arg(plugin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.sandbox_id)
        .env("CNI_NETNS", pod.netns.path())
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", CNI_PLUGIN_DIR)
        .envs(node.h.sriov_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &serde_json::to_vec(conf).unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// The multus stand-in's ADD: every network of the pod's annotation, in order.
async fn multus_add(node: &Node, pod: &Pod, running: &mut RunningPod) {
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(deploy_manifests::NETWORKS_ANNOTATION))
        .cloned();
    let Some(annotation) = annotation else { return };
    let selections =
        deploy_manifests::parse_networks_annotation(&running.name, &annotation).unwrap();
    let mut used = BTreeSet::new();
    for (i, sel) in selections.iter().enumerate() {
        let nad = node.deployed.nad(&sel.name).unwrap();
        let ifname = sel.interface.clone().unwrap_or(format!("net{}", i + 1));
        let mut conf: Value = serde_json::from_str(&nad.spec.config).unwrap();
        if conf.get("name").is_none() {
            conf["name"] = nad.name().into(); // multus names a nameless delegate after the NAD
        }
        // The test keeps host-local's leases in its temp dir, not /var/lib/cni/networks.
        conf["ipam"]["dataDir"] = node.h.tmp.path().join("ipam").display().to_string().into();
        let (mut device, mut devinfo_copy) = (None, None);
        if let Some(resource) = nad.resource_name() {
            // Which VF did kubelet give this pod? Ask pod-resources, as multus does.
            let list = podresources::list(&node.pod_resources).await.unwrap();
            let ids = podresources::devices_of(&list, &running.namespace, &running.name, resource);
            let pci = ids
                .into_iter()
                .find(|id| !used.contains(id))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no unused {resource} device in pod-resources",
                        running.name
                    )
                });
            used.insert(pci.clone());
            // The device plugin's device-info file names the same device.
            let dp_file = node
                .h
                .tmp
                .path()
                .join("devinfo/dp")
                .join(format!("{}-{pci}-device.json", resource.replace('/', "-")));
            let info: Value = serde_json::from_slice(
                &std::fs::read(&dp_file).unwrap_or_else(|e| panic!("{}: {e}", dp_file.display())),
            )
            .unwrap();
            assert_eq!(info["type"], "pci");
            assert_eq!(info["pci"]["pci-address"], pci.as_str());
            // multus keeps a copy for the CNI (and removes it on DEL), and injects deviceID.
            let copy = node.h.tmp.path().join("devinfo/cni").join(format!(
                "{}-{}-{ifname}-device.json",
                sel.name, running.sandbox_id
            ));
            std::fs::copy(&dp_file, &copy).unwrap();
            conf["deviceID"] = pci.clone().into();
            device = Some(pci);
            devinfo_copy = Some(copy);
        }
        let plugin = match conf["type"].as_str().unwrap() {
            // The shipped binary with the VF fake (this kernel has no SR-IOV).
            t if t == deploy_manifests::CNI_BINARY => {
                project_bin_with("sriov-cni", "sriov-test", &["test-fake"])
            }
            other => Path::new(CNI_PLUGIN_DIR).join(other),
        };
        let (code, result, output) = exec_cni(node, &plugin, "ADD", running, &ifname, &conf);
        assert_eq!(code, 0, "{} ADD {ifname}: {output}", sel.name);
        running.attachments.push(Attachment {
            network: sel.name.clone(),
            ifname,
            plugin,
            conf,
            device,
            devinfo_copy,
            result,
        });
    }
}

/// The multus stand-in's DEL, in reverse order, twice for each network (multus repeats
/// DEL, e.g. after a kubelet restart), each must succeed.
fn multus_del(node: &Node, running: &RunningPod) {
    for a in running.attachments.iter().rev() {
        for round in 1..=2 {
            let (code, _, output) = exec_cni(node, &a.plugin, "DEL", running, &a.ifname, &a.conf);
            assert_eq!(code, 0, "{} DEL #{round} {}: {output}", a.network, a.ifname);
        }
        if let Some(copy) = &a.devinfo_copy {
            std::fs::remove_file(copy).unwrap();
        }
    }
}

/// kubelet admits the pod, the runtime makes its sandbox netns, multus attaches its
/// networks.
async fn start_pod(node: &Node, template: &str, name: &str) -> RunningPod {
    let (pod, spec) = node.pod(template, name);
    let allocation = node
        .kubelet
        .admit_pod(&spec)
        .await
        .unwrap_or_else(|e| panic!("admit {name}: {e}\n{}", node.daemon_logs()));
    let mut running = RunningPod {
        name: name.to_owned(),
        namespace: spec.namespace.clone(),
        sandbox_id: format!("{:0>64}", format!("{}{}", node.h.id, name.replace('-', ""))),
        netns: Netns::new(format!("e2e-{}-{name}", node.h.id)),
        allocation,
        attachments: Vec::new(),
    };
    multus_add(node, &pod, &mut running).await;
    running
}

/// The runtime tears the sandbox down: multus DEL, the netns goes, kubelet frees the
/// pod's devices.
fn delete_pod(node: &Node, pod: RunningPod) {
    multus_del(node, &pod);
    drop(pod.netns);
    assert!(node.kubelet.delete_pod(&pod.namespace, &pod.name).is_some());
}

fn ipv4_of(ns: &str, dev: &str) -> std::net::Ipv4Addr {
    let a = addrs(ns, dev);
    assert_eq!(a.len(), 1, "{dev} in {ns}: {a:?}");
    a[0].split('/').next().unwrap().parse().unwrap()
}

fn in_range(ip: std::net::Ipv4Addr, nad: &NetworkAttachmentDefinition) -> bool {
    let conf: Value = serde_json::from_str(&nad.spec.config).unwrap();
    let start: std::net::Ipv4Addr = conf["ipam"]["rangeStart"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: std::net::Ipv4Addr = conf["ipam"]["rangeEnd"].as_str().unwrap().parse().unwrap();
    (start..=end).contains(&ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_rdma_hca_and_a_vf_lives_and_dies_on_one_node() {
    if let Err(why) = privileged() {
        simhost::skip::skip(
            "a_pod_with_rdma_hca_and_a_vf_lives_and_dies_on_one_node",
            &why,
        );
        return;
    }
    let node = Node::start().await;
    // Both daemons register every resource of their configs, with the fixture's devices.
    let resources = [
        "intel.com/mlnx_sriov_rdma",
        "nvidia.com/mlnx_sriov_dpdk",
        "nvidia.com/mlnx_sriov_ib",
        HCA,
    ];
    if let Err(e) = node
        .kubelet
        .wait_all_registered(&resources, DEFAULT_TIMEOUT)
        .await
    {
        panic!("{e}\n{}", node.daemon_logs());
    }
    node.kubelet
        .wait_healthy_count(VF_POOL, 16, DEFAULT_TIMEOUT)
        .await
        .unwrap();
    node.kubelet
        .wait_devices(HCA, DEFAULT_TIMEOUT, |d| !d.is_empty())
        .await
        .unwrap();
    let before = node.snapshot();

    // The example pod with both: rdma/hca + a VF on VLAN 100 (net1) + macvlan (net2).
    let pod = start_pod(&node, "rdma-sriov-pod", "rdma-sriov-pod").await;
    let alloc = pod.allocation.get("app", VF_POOL).unwrap();
    assert!(
        alloc.preferred.is_some(),
        "GetPreferredAllocation was called"
    );
    let vf = alloc.device_ids[0].clone();
    let env = &alloc.response.envs;
    assert_eq!(env["PCIDEVICE_INTEL_COM_MLNX_SRIOV_RDMA"], vf);
    let info: Value =
        serde_json::from_str(&env["PCIDEVICE_INTEL_COM_MLNX_SRIOV_RDMA_INFO"]).unwrap();
    assert!(info[&vf]["generic"]["deviceID"] == vf.as_str(), "{info}");
    // rdma/hca: the PFs' RDMA char devices, each a file of the fixture's /dev.
    let hca = pod.allocation.get("app", HCA).unwrap();
    let specs = &hca.response.devices;
    assert!(
        specs
            .iter()
            .any(|d| d.container_path == "/dev/infiniband/rdma_cm"),
        "{specs:?}"
    );
    assert!(
        specs
            .iter()
            .filter(|d| d.container_path.starts_with("/dev/infiniband/uverbs"))
            .count()
            >= 2
    );
    for d in specs {
        assert_eq!(d.permissions, "rwm");
        assert!(
            node.h
                .sim
                .root()
                .join(d.host_path.trim_start_matches('/'))
                .exists(),
            "{}",
            d.host_path
        );
    }
    // pod-resources shows the allocation.
    let list = podresources::list(&node.pod_resources).await.unwrap();
    assert_eq!(
        podresources::devices_of(&list, "default", "rdma-sriov-pod", VF_POOL),
        std::slice::from_ref(&vf)
    );
    // (kubelet lists a device once per NUMA node; the shared HCA spans both)
    let hca_ids: BTreeSet<String> =
        podresources::devices_of(&list, "default", "rdma-sriov-pod", HCA)
            .into_iter()
            .collect();
    assert_eq!(hca_ids, hca.device_ids.iter().cloned().collect());

    // net1 is the VF: gone from the node, in the pod with an address of sriov-vlan100,
    // VLAN 100 and the rate cap set on the "PF".
    let net1 = &pod.attachments[0];
    assert_eq!(
        (
            net1.network.as_str(),
            net1.ifname.as_str(),
            net1.device.as_deref()
        ),
        ("sriov-vlan100", "net1", Some(vf.as_str()))
    );
    let moved: Vec<LinkView> = before
        .links
        .iter()
        .filter(|l| !links(&node.h.host.name).contains(l))
        .cloned()
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one VF netdev left the node: {moved:?}"
    );
    let ip1 = ipv4_of(&pod.netns.name, "net1");
    assert!(
        in_range(ip1, node.deployed.nad("sriov-vlan100").unwrap()),
        "{ip1}"
    );
    assert_eq!(net1.result["ips"][0]["address"], format!("{ip1}/24"));
    let settings = node.h.vf_settings();
    let pf_vf = settings
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, s)| s["vlan"] == 100)
        .expect("a VF on VLAN 100");
    assert_eq!(pf_vf.1["max_tx_rate"], 10000);
    // net2 is macvlan on ens192 with the seed notes' range.
    let ip2 = ipv4_of(&pod.netns.name, "net2");
    assert!(
        in_range(ip2, node.deployed.nad("macvlan-conf").unwrap()),
        "{ip2}"
    );
    // multus' device-info copy for the CNI.
    assert_eq!(node.snapshot().cni_devinfo.len(), 1);

    // The rdma/hca-only example pod (default network only): no attachment, and the same
    // RDMA char devices as the first pod, since rdma/hca is shared.
    let hca_pod = start_pod(&node, "rdma-hca-pod", "rdma-hca-pod").await;
    assert!(hca_pod.attachments.is_empty());
    let specs_of = |p: &RunningPod, c: &str| {
        let mut v: Vec<String> = p
            .allocation
            .get(c, HCA)
            .unwrap()
            .response
            .devices
            .iter()
            .map(|d| d.host_path.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(specs_of(&hca_pod, "rdma"), specs_of(&pod, "app"));
    assert!(hca_pod.allocation.get("rdma", VF_POOL).is_none());

    // Two more pods on sriov-net: distinct VFs, distinct host-local addresses.
    let a = start_pod(&node, "sriov-pod", "sriov-pod-a").await;
    let b = start_pod(&node, "sriov-pod", "sriov-pod-b").await;
    let (vf_a, vf_b) = (
        a.attachments[0].device.clone().unwrap(),
        b.attachments[0].device.clone().unwrap(),
    );
    assert!(vf_a != vf_b && vf_a != vf && vf_b != vf);
    let (ip_a, ip_b) = (
        ipv4_of(&a.netns.name, "net1"),
        ipv4_of(&b.netns.name, "net1"),
    );
    assert_ne!(ip_a, ip_b);
    for ip in [ip_a, ip_b] {
        assert!(
            in_range(ip, node.deployed.nad("sriov-net").unwrap()),
            "{ip}"
        );
    }

    // The daemon sweeps device-plugin device-info files by asking pod-resources. Make the
    // held VFs' files older than the grace period, add a stray one for a VF no pod holds,
    // and wait for a sweep to take the stray: the held ones must still be there.
    let dp_file = |vf: &str| {
        node.h
            .tmp
            .path()
            .join("devinfo/dp")
            .join(format!("{}-{vf}-device.json", VF_POOL.replace('/', "-")))
    };
    let backdate = |path: &Path| {
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    };
    let held = [vf.clone(), vf_a.clone(), vf_b.clone()];
    let stray = (0..8)
        .map(|v| node.h.sim.vf_address(1, v))
        .rev()
        .find(|a| !held.contains(a))
        .unwrap();
    std::fs::copy(dp_file(&vf), dp_file(&stray)).unwrap();
    for v in held.iter().chain([&stray]) {
        backdate(&dp_file(v));
    }
    node_tests::fswait::wait_for_removal(&dp_file(&stray), DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", node.daemon_logs()));
    for v in &held {
        assert!(
            dp_file(v).exists(),
            "{v} is held: its device-info file stays"
        );
    }

    // Deletion: DEL (twice), multus' device-info copy removed, netns gone, devices free,
    // and the device plugin's file of each freed VF swept.
    delete_pod(&node, a);
    node_tests::fswait::wait_for_removal(&dp_file(&vf_a), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    assert!(dp_file(&vf_b).exists() && dp_file(&vf).exists());
    for p in [pod, hca_pod, b] {
        delete_pod(&node, p);
    }
    for v in [&vf, &vf_b] {
        node_tests::fswait::wait_for_removal(&dp_file(v), DEFAULT_TIMEOUT)
            .await
            .unwrap();
    }
    let list = podresources::list(&node.pod_resources).await.unwrap();
    assert!(list.pod_resources.is_empty(), "{list:?}");
    let after = node.snapshot();
    assert_eq!(
        after.links, before.links,
        "every VF back with its name and MAC"
    );
    assert_eq!(
        (
            after.leases.len(),
            after.sriov_cache.len(),
            after.cni_devinfo.len()
        ),
        (0, 0, 0),
        "{after:?}"
    );
    // Every VF is back to its settings before the pod (the fake starts them at defaults).
    for (key, s) in after.vf_settings.as_object().unwrap() {
        assert_eq!(
            (s["vlan"].as_u64(), s["max_tx_rate"].as_u64()),
            (Some(0), Some(0)),
            "{key}"
        );
    }
    // The VFs are free again: one pod can now take all 16.
    let all = PodSpec::new("default", "all-vfs").container("app", &[(VF_POOL, 16)]);
    let got = node.kubelet.admit_pod(&all).await.unwrap();
    assert_eq!(got.device_ids(VF_POOL).len(), 16);
}
