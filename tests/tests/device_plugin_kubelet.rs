//! The real `device-plugin` binary against simulated hosts, driven by the kubelet
//! simulator: registration, ListAndWatch, GetPreferredAllocation, Allocate, each config
//! format (the samples in `deploy/config/`), bad configs, `--cdi`, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dp_common;

use dp_common::{Node, daemon_bin, wait_exit};
use node_tests::{DEFAULT_TIMEOUT, KubeletSim, PodSpec, SimError};
use serde_json::{Value, json};
use simhost::{Profile, SimHost};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

// ---------------------------------------------------------------- harness

fn ids(list: &node_tests::DeviceList) -> Vec<String> {
    list.devices.iter().map(|d| d.id.clone()).collect()
}

fn numa(d: &proto::deviceplugin::v1beta1::Device) -> Vec<i64> {
    d.topology
        .as_ref()
        .map(|t| t.nodes.iter().map(|n| n.id).collect())
        .unwrap_or_default()
}

fn specs(
    r: &proto::deviceplugin::v1beta1::ContainerAllocateResponse,
) -> Vec<(String, String, String)> {
    r.devices
        .iter()
        .map(|d| {
            (
                d.container_path.clone(),
                d.host_path.clone(),
                d.permissions.clone(),
            )
        })
        .collect()
}

fn rdma_num(name: &str) -> String {
    name.trim_start_matches("mlx5_").to_string()
}

fn sample(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/config")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_registers_hca_and_vhca() {
    let mut n = Node::start(Profile::Cx6Dx, None, &[]).await;
    n.registered(&["rdma/hca", "rdma/vhca"]).await;
    for reg in n.kubelet.state().active.values() {
        assert_eq!(reg.request.version, "v1beta1");
        let sock = reg.request.endpoint.clone();
        assert!(!sock.contains('/'), "endpoint {sock} must be a file name");
        assert!(n.kubelet.dir().join(&sock).exists());
        assert!(
            reg.request
                .options
                .as_ref()
                .unwrap()
                .get_preferred_allocation_available
        );
        assert!(reg.options.get_preferred_allocation_available);
    }
    // rdma/hca: 1000 shared IDs carrying both HCAs' NUMA nodes
    let hca = n.kubelet.devices("rdma/hca").unwrap();
    assert_eq!(hca.devices.len(), 1000);
    assert_eq!(hca.healthy_count(), 1000);
    assert!(hca.devices.iter().all(|d| numa(d) == vec![0, 1]));
    // rdma/vhca: one device per VF with a netdev, ID = PCI address, topology = its node
    let vhca = n.kubelet.devices("rdma/vhca").unwrap();
    let want: BTreeSet<String> = (0..2)
        .flat_map(|pf| (0..8).map(move |vf| (pf, vf)))
        .map(|(pf, vf)| n.host.vf_address(pf, vf))
        .collect();
    assert_eq!(ids(&vhca).into_iter().collect::<BTreeSet<_>>(), want);
    for pf in 0..2 {
        for vf in 0..8 {
            let d = vhca.get(&n.host.vf_address(pf, vf)).unwrap();
            assert_eq!(numa(d), vec![pf as i64]);
            assert_eq!(d.health, "Healthy");
        }
    }
    // the log names each resource and event
    let log = n.log();
    assert!(
        log.contains("registered with kubelet") && log.contains("rdma/vhca"),
        "{log}"
    );
    // SIGTERM: exit 0, sockets removed
    n.terminate_removing_sockets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdma_hca_allocate_gives_exact_device_specs() {
    let n = Node::start(Profile::Cx6Dx, None, &[]).await;
    n.registered(&["rdma/hca"]).await;
    let r = n
        .kubelet
        .allocate("rdma/hca", &["hca-7".into()])
        .await
        .unwrap();
    let want: Vec<(String, String, String)> = [
        "uverbs0", "umad0", "issm0", "rdma_cm", "uverbs1", "umad1", "issm1",
    ]
    .iter()
    .map(|d| {
        let p = format!("/dev/infiniband/{d}");
        (p.clone(), p, "rwm".to_string())
    })
    .collect();
    assert_eq!(specs(&r), want);
    assert!(r.envs.is_empty() && r.mounts.is_empty() && r.cdi_devices.is_empty());
    // a pod asking for rdma/hca: 1 gets the same
    let pod = n
        .kubelet
        .admit_pod(&PodSpec::new("default", "rdma-app").container("app", &[("rdma/hca", 1)]))
        .await
        .unwrap();
    let got = pod.get("app", "rdma/hca").unwrap();
    assert_eq!(specs(&got.response), want);
    // unknown IDs are refused with InvalidArgument naming them
    match n.kubelet.allocate("rdma/hca", &["hca-1000".into()]).await {
        Err(SimError::Rpc { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(
                status.message().contains("hca-1000"),
                "{}",
                status.message()
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vf_allocate_env_info_specs_and_device_info_files() {
    let n = Node::start(Profile::Cx6Dx, None, &[]).await;
    n.registered(&["rdma/vhca"]).await;
    let a = n.host.vf_address(0, 3);
    let b = n.host.vf_address(1, 5);
    let r = n
        .kubelet
        .allocate("rdma/vhca", &[a.clone(), b.clone()])
        .await
        .unwrap();
    assert_eq!(r.envs["PCIDEVICE_RDMA_VHCA"], format!("{a},{b}"));
    let info: Value = serde_json::from_str(&r.envs["PCIDEVICE_RDMA_VHCA_INFO"]).unwrap();
    let mut rdma_devs = BTreeMap::new();
    for id in [&a, &b] {
        let e = &info[id];
        assert_eq!(e["generic"]["deviceID"], id.as_str());
        let dev = e["rdma"]["rdma_dev"].as_str().unwrap().to_string();
        let k = rdma_num(&dev);
        assert_eq!(
            e["rdma"],
            json!({"uverbs": format!("/dev/infiniband/uverbs{k}"), "umad": format!("/dev/infiniband/umad{k}"),
                   "issm": format!("/dev/infiniband/issm{k}"), "rdma_cm": "/dev/infiniband/rdma_cm", "rdma_dev": dev})
        );
        rdma_devs.insert(id.clone(), dev);
    }
    // rw specs for both VFs' char devices, rdma_cm once
    let s = specs(&r);
    assert_eq!(s.len(), 7, "{s:?}");
    assert!(s.iter().all(|(c, h, p)| c == h && p == "rw"));
    for dev in rdma_devs.values() {
        assert!(
            s.iter()
                .any(|(c, _, _)| *c == format!("/dev/infiniband/uverbs{}", rdma_num(dev)))
        );
    }
    // device-info files, spec 1.1.0
    for (id, pf) in [(&a, n.host.pf_address(0)), (&b, n.host.pf_address(1))] {
        let doc = n.devinfo(&format!("rdma-vhca-{id}-device.json"));
        assert_eq!(
            doc,
            json!({"type": "pci", "version": "1.1.0",
                   "pci": {"pci-address": id, "rdma-device": rdma_devs[id], "pf-pci-address": pf}})
        );
    }
    // unknown IDs: InvalidArgument naming exactly the unknown ones
    match n
        .kubelet
        .allocate("rdma/vhca", &[a.clone(), "0000:aa:00.1".into()])
        .await
    {
        Err(SimError::Rpc { status, .. }) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("0000:aa:00.1") && !status.message().contains(&a));
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sriovdp_config_vfio_pool_and_dash_names() {
    let cfg = r#"{"resourceList":[
        {"resourceName":"cx5-dpdk","resourcePrefix":"nvidia.com","deviceType":"accelerator",
         "selectors":{"vendors":["15b3"],"drivers":["vfio-pci"]}},
        {"resourceName":"cx5_rdma","selectors":{"vendors":["15b3"],"devices":["1018"],"isRdma":true}},
        {"resourceName":"unbound","selectors":{"drivers":["nothing"]}}]}"#;
    let n = Node::start(Profile::Mixed, Some(cfg), &[]).await;
    n.registered(&[
        "nvidia.com/cx5-dpdk",
        "intel.com/cx5_rdma",
        "intel.com/unbound",
    ])
    .await;
    let vfio = n.kubelet.devices("nvidia.com/cx5-dpdk").unwrap();
    assert_eq!(
        ids(&vfio),
        vec![n.host.vf_address(0, 4), n.host.vf_address(0, 5)]
    );
    assert!(vfio.devices.iter().all(|d| numa(d) == vec![1]));
    assert_eq!(
        n.kubelet
            .devices("intel.com/cx5_rdma")
            .unwrap()
            .devices
            .len(),
        4
    );
    assert!(
        n.kubelet
            .devices("intel.com/unbound")
            .unwrap()
            .devices
            .is_empty()
    );
    let a = n.host.vf_address(0, 5);
    let r = n
        .kubelet
        .allocate("nvidia.com/cx5-dpdk", std::slice::from_ref(&a))
        .await
        .unwrap();
    // upstream name with '-', and the shell-readable one
    assert_eq!(r.envs["PCIDEVICE_NVIDIA_COM_CX5-DPDK"], a);
    assert_eq!(r.envs["PCIDEVICE_NVIDIA_COM_CX5_DPDK"], a);
    let info: Value = serde_json::from_str(&r.envs["PCIDEVICE_NVIDIA_COM_CX5_DPDK_INFO"]).unwrap();
    let group = info[&a]["vfio"]["dev-mount"].as_str().unwrap().to_string();
    assert!(group.starts_with("/dev/vfio/") && group != "/dev/vfio/vfio");
    assert!(n.host.root().join(group.trim_start_matches('/')).exists());
    assert_eq!(info[&a]["vfio"]["mount"], "/dev/vfio/vfio");
    assert!(info[&a].get("rdma").is_none());
    assert_eq!(
        specs(&r),
        vec![
            (
                "/dev/vfio/vfio".into(),
                "/dev/vfio/vfio".into(),
                "rw".into()
            ),
            (group.clone(), group, "rw".into())
        ]
    );
    let doc = n.devinfo(&format!("nvidia.com-cx5-dpdk-{a}-device.json"));
    assert_eq!(
        doc["pci"],
        json!({"pci-address": a, "pf-pci-address": n.host.pf_address(0)})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_allocation_single_numa_spread_over_pfs() {
    let n = Node::start(Profile::Large, None, &[]).await;
    n.registered(&["rdma/vhca"]).await;
    let list = n.kubelet.devices("rdma/vhca").unwrap();
    assert_eq!(list.devices.len(), 1024);
    let all = ids(&list);
    let node_of: BTreeMap<String, i64> = list
        .devices
        .iter()
        .map(|d| (d.id.clone(), numa(d)[0]))
        .collect();
    let pf_of = |id: &str| id[..7].to_string(); // one PF per bus in the Large profile
    let got = n
        .kubelet
        .preferred_allocation("rdma/vhca", &all, &[], 6)
        .await
        .unwrap();
    assert_eq!(got.len(), 6);
    let nodes: BTreeSet<i64> = got.iter().map(|i| node_of[i]).collect();
    assert_eq!(nodes.len(), 1, "{got:?}");
    let pfs: BTreeSet<String> = got.iter().map(|i| pf_of(i)).collect();
    assert_eq!(pfs.len(), 6, "one VF per PF before two on one: {got:?}");
    // must_include honoured, and its node preferred
    let must = n.host.vf_address(12, 9); // PF 12 is on node 1
    let got = n
        .kubelet
        .preferred_allocation("rdma/vhca", &all, std::slice::from_ref(&must), 3)
        .await
        .unwrap();
    assert_eq!(got[0], must);
    assert!(got.iter().all(|i| node_of[i] == 1), "{got:?}");
    assert_eq!(
        got.iter().map(|i| pf_of(i)).collect::<BTreeSet<_>>().len(),
        3
    );
    // a pod goes through preferred allocation then Allocate
    let pod = n
        .kubelet
        .admit_pod(&PodSpec::new("ns", "p").container("c", &[("rdma/vhca", 4)]))
        .await
        .unwrap();
    let ra = pod.get("c", "rdma/vhca").unwrap();
    assert_eq!(ra.preferred.as_ref().unwrap(), &ra.device_ids);
    assert_eq!(
        ra.response.envs["PCIDEVICE_RDMA_VHCA"],
        ra.device_ids.join(",")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_sriovdp_config() {
    let n = Node::start(Profile::Mixed, Some(&sample("sriovdp-config.json")), &[]).await;
    let want: Vec<&str> = vec![
        "intel.com/mlnx_sriov_rdma",
        "nvidia.com/mlnx_sriov_dpdk",
        "nvidia.com/mlnx_sriov_ib",
    ];
    n.registered(&want).await;
    assert_eq!(
        n.kubelet
            .devices("intel.com/mlnx_sriov_rdma")
            .unwrap()
            .devices
            .len(),
        4
    );
    assert_eq!(
        n.kubelet
            .devices("nvidia.com/mlnx_sriov_dpdk")
            .unwrap()
            .devices
            .len(),
        2
    );
    assert!(
        n.kubelet
            .devices("nvidia.com/mlnx_sriov_ib")
            .unwrap()
            .devices
            .is_empty()
    );
    assert!(
        !n.log().contains("WARN"),
        "a sample must load without warnings:\n{}",
        n.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rdma_shared_config() {
    let n = Node::start(
        Profile::Infiniband,
        Some(&sample("rdma-shared-config.json")),
        &[],
    )
    .await;
    n.registered(&["rdma/hca_shared_devices_a"]).await;
    let l = n.kubelet.devices("rdma/hca_shared_devices_a").unwrap();
    assert_eq!(l.devices.len(), 1000);
    assert!(l.devices.iter().all(|d| numa(d) == vec![0]));
    let r = n
        .kubelet
        .allocate(
            "rdma/hca_shared_devices_a",
            &["hca_shared_devices_a-0".into()],
        )
        .await
        .unwrap();
    // the two IB PFs' HCAs: uverbs/umad/issm each, and rdma_cm
    assert_eq!(r.devices.len(), 7, "{:?}", specs(&r));
    assert!(r.devices.iter().all(|d| d.permissions == "rwm"));
    assert!(!n.log().contains("WARN"), "{}", n.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rdma_sriov_hca_config() {
    let n = Node::start(Profile::Cx6Dx, Some(&sample("rdma-sriov-hca.json")), &[]).await;
    n.registered(&["rdma/hca"]).await;
    assert_eq!(n.kubelet.state().active.len(), 1);
    assert_eq!(n.kubelet.devices("rdma/hca").unwrap().devices.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rdma_sriov_sriov_config() {
    let n = Node::start(Profile::Cx6Dx, Some(&sample("rdma-sriov-sriov.json")), &[]).await;
    n.registered(&["rdma/vhca"]).await;
    assert_eq!(n.kubelet.state().active.len(), 1);
    let l = n.kubelet.devices("rdma/vhca").unwrap();
    // pfNetdevices ["ens1f1"]: the 8 VFs of the second port
    let want: Vec<String> = (0..8).map(|v| n.host.vf_address(1, v)).collect();
    assert_eq!(ids(&l), want);
    assert!(l.devices.iter().all(|d| numa(d) == vec![1]));
}

#[test]
fn bad_configs_exit_nonzero_naming_file_path_and_value() {
    let d = node_tests::scratch();
    let host = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
    let cases = [
        (
            r#"{"resourceList":[{"resourceName":"ok"},{"resourceName":"a/b"}]}"#,
            r#"resourceList[1].resourceName: "a/b" must match ^[a-zA-Z0-9_-]+$"#,
        ),
        (
            r#"{"resourceList":[{"resourceName":"a"},{"resourceName":"a"}]}"#,
            "resourceList[1].resourceName: duplicate resource name \"intel.com/a\"",
        ),
        (
            r#"{"configList":[{"resourceName":"h","rdmaHcaMax":0,"devices":["ib0"]}]}"#,
            "configList[0].rdmaHcaMax: 0 must be a positive integer",
        ),
        (
            r#"{"mode":"sriov","pfNetdevices":[]}"#,
            "pfNetdevices: [] must list at least one PF netdev",
        ),
        (
            r#"{"resourceList":[{"resourceName":"a","selectors":{"pfNames":["ens1f0#x"]}}]}"#,
            r#"resourceList[0].selectors.pfNames[0]: "ens1f0#x""#,
        ),
        ("{\"resourceList\": [", "invalid JSON at line 1"),
        (r#"{"somethingElse":1}"#, "unknown config format"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let cfg = d.path().join(format!("bad{i}.json"));
        std::fs::write(&cfg, text).unwrap();
        let dp = d.path().join(format!("dp{i}"));
        let mut child = Command::new(daemon_bin())
            .arg("--root")
            .arg(host.root())
            .arg("--device-plugin-path")
            .arg(&dp)
            .arg("--config-file")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_exit(&mut child, DEFAULT_TIMEOUT);
        if status.is_none() {
            let _ = child.kill();
        }
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        let status = status.unwrap_or_else(|| panic!("daemon kept running on {text}"));
        assert!(!status.success(), "{text}");
        assert!(
            err.contains(&cfg.display().to_string()) && err.contains(want),
            "{text}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        // nothing served
        let socks = std::fs::read_dir(&dp).map(|r| r.count()).unwrap_or(0);
        assert_eq!(socks, 0, "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_retries_until_kubelet_accepts() {
    let dir = node_tests::scratch();
    let host = SimHost::create(dir.path().join("host"), Profile::Cx6Dx).unwrap();
    let kubelet = KubeletSim::start(dir.path().join("dp")).await.unwrap();
    kubelet.set_reject_registrations(Some("kubelet not ready".into()));
    let mut node = Node::from_parts(dir, host, kubelet);
    node.spawn(&[]);
    // two refused attempts per resource...
    node.kubelet
        .wait_for("refused attempts", DEFAULT_TIMEOUT, |s| {
            let refused = |r: &str| {
                s.attempts
                    .iter()
                    .filter(|a| a.request.resource_name == r && a.error.is_some())
                    .count()
            };
            (refused("rdma/hca") >= 2 && refused("rdma/vhca") >= 2).then_some(())
        })
        .await
        .unwrap();
    // ...then acceptance
    node.kubelet.set_reject_registrations(None);
    node.registered(&["rdma/hca", "rdma/vhca"]).await;
    assert!(node.log().contains("register failed"), "{}", node.log());
    assert!(
        node.daemon.as_mut().unwrap().try_wait().unwrap().is_none(),
        "daemon exited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_mode_writes_specs_and_answers_names() {
    let n = Node::start(Profile::Mixed, None, &["--cdi"]).await;
    n.registered(&["rdma/hca", "rdma/vhca"]).await;
    let spec: Value =
        serde_json::from_slice(&std::fs::read(n.dir.path().join("cdi/rdma-vhca.json")).unwrap())
            .unwrap();
    assert_eq!(spec["kind"], "rdma/vhca");
    assert_eq!(spec["cdiVersion"], "0.6.0");
    assert_eq!(spec["devices"].as_array().unwrap().len(), 4);
    let a = n.host.vf_address(0, 2);
    let r = n
        .kubelet
        .allocate("rdma/vhca", std::slice::from_ref(&a))
        .await
        .unwrap();
    let names: Vec<String> = r.cdi_devices.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, vec![format!("rdma/vhca={a}")]);
    assert!(r.devices.is_empty());
    assert_eq!(r.envs["PCIDEVICE_RDMA_VHCA"], a);
    let r = n
        .kubelet
        .allocate("rdma/hca", &["hca-0".into()])
        .await
        .unwrap();
    assert_eq!(r.cdi_devices.len(), 1);
    assert_eq!(r.cdi_devices[0].name, "rdma/hca=all");
    assert!(n.dir.path().join("cdi/rdma-hca.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_info_files_follow_pod_resources() {
    let dir = node_tests::scratch();
    let pr_sock = dir.path().join("pod-resources.sock");
    let host = SimHost::create(dir.path().join("host"), Profile::Cx6Dx).unwrap();
    let kubelet = KubeletSim::start(dir.path().join("dp")).await.unwrap();
    let _pr = kubelet.serve_pod_resources(&pr_sock).unwrap();
    let mut node = Node::from_parts(dir, host, kubelet);
    let pr_arg = pr_sock.display().to_string();
    node.spawn(&[
        "--pod-resources-socket",
        &pr_arg,
        "--device-info-gc-interval",
        "1",
        "--device-info-gc-grace",
        "2",
    ]);
    node.registered(&["rdma/vhca"]).await;
    let pod = node
        .kubelet
        .admit_pod(&PodSpec::new("ns", "vf-pod").container("c", &[("rdma/vhca", 1)]))
        .await
        .unwrap();
    let held = pod.device_ids("rdma/vhca")[0].clone();
    let info = |id: &str| {
        node.dir
            .path()
            .join(format!("devinfo/rdma-vhca-{id}-device.json"))
    };
    assert!(info(&held).exists());
    // an Allocate no pod followed (a failed admission): its file goes after the grace
    let stray = (0..8)
        .map(|v| node.host.vf_address(1, v))
        .chain((0..8).map(|v| node.host.vf_address(0, v)))
        .find(|a| *a != held)
        .unwrap();
    node.kubelet
        .allocate("rdma/vhca", std::slice::from_ref(&stray))
        .await
        .unwrap();
    assert!(info(&stray).exists());
    node_tests::fswait::wait_for_removal(&info(&stray), DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", node.log()));
    // the pod's file stays while the pod holds the device...
    assert!(info(&held).exists(), "{}", node.log());
    // ...and goes once the pod is gone
    node.kubelet.delete_pod("ns", "vf-pod").unwrap();
    node_tests::fswait::wait_for_removal(&info(&held), DEFAULT_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", node.log()));
    assert!(node.log().contains("device no longer allocated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_as_deployed_and_multi_container_allocate() {
    // the DaemonSet's layout: a VF-pool daemon and an rdma/hca daemon in one directory
    let mut n = Node::start(Profile::Cx6Dx, Some(&sample("sriovdp-config.json")), &[]).await;
    let shared = n.dir.path().join("shared.json");
    std::fs::write(&shared, sample("rdma-sriov-hca.json")).unwrap();
    let second = n.spawn_child(Some(&shared), &[]);
    let first = n.daemon.replace(second);
    n.registered(&[
        "intel.com/mlnx_sriov_rdma",
        "nvidia.com/mlnx_sriov_dpdk",
        "rdma/hca",
    ])
    .await;
    assert_eq!(
        n.kubelet
            .devices("intel.com/mlnx_sriov_rdma")
            .unwrap()
            .devices
            .len(),
        16
    );
    // one Allocate for two containers: a response per container, in order
    let (a, b) = (n.host.vf_address(0, 0), n.host.vf_address(1, 1));
    let req = proto::deviceplugin::v1beta1::AllocateRequest {
        container_requests: vec![
            proto::deviceplugin::v1beta1::ContainerAllocateRequest {
                devices_ids: vec![a.clone()],
            },
            proto::deviceplugin::v1beta1::ContainerAllocateRequest {
                devices_ids: vec![b.clone()],
            },
        ],
    };
    let r = n
        .kubelet
        .allocate_request("intel.com/mlnx_sriov_rdma", req)
        .await
        .unwrap();
    assert_eq!(r.container_responses.len(), 2);
    assert_eq!(
        r.container_responses[0].envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV_RDMA"],
        a
    );
    assert_eq!(
        r.container_responses[1].envs["PCIDEVICE_INTEL_COM_MLNX_SRIOV_RDMA"],
        b
    );
    // the first daemon still serves while the second does
    if let Some(mut c) = first {
        assert!(
            c.try_wait().unwrap().is_none(),
            "first daemon exited\n{}",
            n.log()
        );
        let _ = c.kill();
        let _ = c.wait();
    }
}
