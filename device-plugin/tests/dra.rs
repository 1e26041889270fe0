//! The DRA kubelet plugin end to end in process, on simulated hosts: a kubelet stand-in
//! finds the registration socket, asks `GetInfo`, picks the service the way kubelet 1.34
//! does (first of the plugin's list it knows), dials the endpoint it names and calls
//! NodePrepareResources / NodeUnprepareResources. Claims come from a fake
//! [`ClaimSource`] holding real `resource.k8s.io/v1` ResourceClaim JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_plugin::config::Config;
use device_plugin::dra::claims::{ClaimSource, ClaimSourceError};
use device_plugin::dra::devices::DraDevices;
use device_plugin::dra::plugin::{DraOptions, DraPlugin};
use device_plugin::dra::{self, checkpoint::Checkpoint};
use device_plugin::pools::Pools;
use k8s_openapi::api::resource::v1::ResourceClaim;
use proto::dra::{v1, v1beta1};
use proto::pluginregistration as pr;
use proto::unix::connect_unix;
use rdma_hca::Host;
use serde_json::{Value, json};
use simhost::{Profile, SimHost};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const DRIVER: &str = dra::DEFAULT_DRIVER_NAME;
/// What kubelet 1.34 knows, in its order of preference.
const KUBELET_SERVICES: [&str; 2] = ["v1.DRAPlugin", "v1beta1.DRAPlugin"];

/// ResourceClaims by namespace/name, counting GETs.
#[derive(Default)]
struct FakeClaims {
    claims: Mutex<HashMap<(String, String), ResourceClaim>>,
    gets: AtomicUsize,
}

impl FakeClaims {
    fn put(&self, c: Value) {
        let c: ResourceClaim = serde_json::from_value(c).unwrap();
        let key = (
            c.metadata.namespace.clone().unwrap(),
            c.metadata.name.clone().unwrap(),
        );
        self.claims.lock().unwrap().insert(key, c);
    }
}

#[tonic::async_trait]
impl ClaimSource for FakeClaims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ClaimSourceError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.claims
            .lock()
            .unwrap()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or(ClaimSourceError::NotFound)
    }
}

/// A claim allocated `(request, device)` of our driver, with `config` entries.
fn claim(name: &str, uid: &str, devices: &[(&str, String)], config: Vec<Value>) -> Value {
    let results: Vec<Value> = devices
        .iter()
        .map(|(r, d)| json!({"request": r, "driver": DRIVER, "pool": "node-a", "device": d}))
        .chain([json!({"request": "gpu", "driver": "gpu.example.com", "pool": "node-a", "device": "gpu-0"})])
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"namespace": "ns1", "name": name, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "vf"}}]}},
        "status": {"allocation": {"devices": {"results": results, "config": config}}}
    })
}

fn vf_config(requests: &[&str], params: Value) -> Value {
    json!({"source": "FromClaim", "requests": requests,
           "opaque": {"driver": DRIVER, "parameters": params}})
}

struct Node {
    dir: tempfile::TempDir,
    host: SimHost,
    config: Config,
    claims: Arc<FakeClaims>,
}

impl Node {
    fn new(p: Profile, cfg: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("dra")
            .tempdir_in(if Path::new("/dev/shm").is_dir() {
                "/dev/shm"
            } else {
                "/tmp"
            })
            .unwrap();
        let host = SimHost::create(dir.path().join("host"), p).unwrap();
        let config = if cfg.is_empty() {
            Config::embedded()
        } else {
            Config::parse(Path::new("t.json"), cfg).unwrap()
        };
        Node {
            dir,
            host,
            config,
            claims: Arc::default(),
        }
    }

    fn devices(&self) -> DraDevices {
        let inv = Host::new(self.host.root()).inventory().unwrap();
        DraDevices::from_pools(&Pools::compute(&inv, &self.config, false))
    }

    fn opts(&self) -> DraOptions {
        let d = self.dir.path();
        DraOptions {
            driver: DRIVER.into(),
            plugin_dir: d.join("plugins").join(DRIVER),
            registry_dir: d.join("plugins_registry"),
            cdi_dir: d.join("cdi"),
            device_info_dir: Some(d.join("devinfo")),
            node_name: None,
            kubeconfig: None,
        }
    }

    fn start(&self) -> DraPlugin {
        let (tx, _rx) = mpsc::unbounded_channel();
        DraPlugin::start(self.opts(), self.claims.clone(), self.devices(), tx).unwrap()
    }

    fn vf(&self, pf: usize, vf: u32) -> (String, String) {
        let pci = self.host.vf_address(pf, vf);
        (dra::device_name(&pci), pci)
    }
}

/// The DRA client the kubelet stand-in chose.
enum Client {
    V1(v1::dra_plugin_client::DraPluginClient<tonic::transport::Channel>),
    V1beta1(v1beta1::dra_plugin_client::DraPluginClient<tonic::transport::Channel>),
}

/// One claim's answer, version-independent.
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    /// (request names, pool, device, CDI IDs).
    devices: Vec<(Vec<String>, String, String, Vec<String>)>,
    error: String,
}

/// Registers through the registration socket as the kubelet's plugin watcher and DRA
/// manager do, returning the client of the chosen service.
async fn kubelet_register(reg_socket: &Path, prefer: Option<&str>) -> Client {
    let ch = connect_unix(reg_socket).await.unwrap();
    let mut reg = pr::registration_client::RegistrationClient::new(ch);
    let info = reg.get_info(pr::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(info.name, DRIVER);
    let known: Vec<&str> = match prefer {
        Some(p) => vec![p],
        None => KUBELET_SERVICES.to_vec(),
    };
    let chosen = info
        .supported_versions
        .iter()
        .find(|s| known.contains(&s.as_str()))
        .unwrap_or_else(|| panic!("no known service in {:?}", info.supported_versions))
        .clone();
    let ch = connect_unix(&info.endpoint).await.unwrap();
    reg.notify_registration_status(pr::RegistrationStatus {
        plugin_registered: true,
        error: String::new(),
    })
    .await
    .unwrap();
    match chosen.as_str() {
        "v1.DRAPlugin" => Client::V1(v1::dra_plugin_client::DraPluginClient::new(ch)),
        "v1beta1.DRAPlugin" => {
            Client::V1beta1(v1beta1::dra_plugin_client::DraPluginClient::new(ch))
        }
        other => panic!("chose {other}"),
    }
}

impl Client {
    async fn prepare(&mut self, claims: &[(&str, &str)]) -> HashMap<String, Prepared> {
        match self {
            Client::V1(c) => {
                let req = v1::NodePrepareResourcesRequest {
                    claims: claims
                        .iter()
                        .map(|(name, uid)| v1::Claim {
                            namespace: "ns1".into(),
                            uid: (*uid).into(),
                            name: (*name).into(),
                        })
                        .collect(),
                };
                let r = c.node_prepare_resources(req).await.unwrap().into_inner();
                r.claims
                    .into_iter()
                    .map(|(k, v)| {
                        let devices = v
                            .devices
                            .into_iter()
                            .map(|d| {
                                (
                                    d.request_names,
                                    d.pool_name,
                                    d.device_name,
                                    d.cdi_device_ids,
                                )
                            })
                            .collect();
                        (
                            k,
                            Prepared {
                                devices,
                                error: v.error,
                            },
                        )
                    })
                    .collect()
            }
            Client::V1beta1(c) => {
                let req = v1beta1::NodePrepareResourcesRequest {
                    claims: claims
                        .iter()
                        .map(|(name, uid)| v1beta1::Claim {
                            namespace: "ns1".into(),
                            uid: (*uid).into(),
                            name: (*name).into(),
                        })
                        .collect(),
                };
                let r = c.node_prepare_resources(req).await.unwrap().into_inner();
                r.claims
                    .into_iter()
                    .map(|(k, v)| {
                        let devices = v
                            .devices
                            .into_iter()
                            .map(|d| {
                                (
                                    d.request_names,
                                    d.pool_name,
                                    d.device_name,
                                    d.cdi_device_ids,
                                )
                            })
                            .collect();
                        (
                            k,
                            Prepared {
                                devices,
                                error: v.error,
                            },
                        )
                    })
                    .collect()
            }
        }
    }

    async fn unprepare(&mut self, claims: &[(&str, &str)]) -> HashMap<String, String> {
        let Client::V1(c) = self else {
            panic!("unprepare through v1 only")
        };
        let req = v1::NodeUnprepareResourcesRequest {
            claims: claims
                .iter()
                .map(|(name, uid)| v1::Claim {
                    namespace: "ns1".into(),
                    uid: (*uid).into(),
                    name: (*name).into(),
                })
                .collect(),
        };
        let r = c.node_unprepare_resources(req).await.unwrap().into_inner();
        r.claims.into_iter().map(|(k, v)| (k, v.error)).collect()
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn cdi_spec(n: &Node, uid: &str) -> (PathBuf, Value) {
    let p = n.opts().cdi_dir.join(format!("{DRIVER}-{uid}.json"));
    let v = read_json(&p);
    (p, v)
}

fn spec_device<'a>(spec: &'a Value, uid: &str, device: &str) -> &'a Value {
    spec["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == format!("{uid}-{device}"))
        .unwrap_or_else(|| panic!("{uid}-{device} not in {spec}"))
}

fn node_paths(d: &Value) -> Vec<String> {
    d["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_string())
        .collect()
}

fn devinfo(n: &Node, uid: &str, device: &str) -> PathBuf {
    n.opts()
        .device_info_dir
        .unwrap()
        .join(format!("{DRIVER}-{uid}-{device}-device.json"))
}

#[tokio::test]
async fn one_vf_claim_gets_cdi_env_and_device_info() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (dev, pci) = n.vf(1, 3);
    n.claims.put(claim(
        "c1",
        "uid-1",
        &[("vf", dev.clone())],
        vec![vf_config(
            &[],
            json!({"apiVersion": format!("{DRIVER}/v1alpha1"), "kind": "VfConfig",
                                    "mac": "0c:42:a1:00:00:07", "vlan": 100}),
        )],
    ));
    let p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let r = k.prepare(&[("c1", "uid-1")]).await;
    let want_id = format!("{DRIVER}/vf=uid-1-{dev}");
    assert_eq!(
        r["uid-1"],
        Prepared {
            devices: vec![(
                vec!["vf".into()],
                "node-a".into(),
                dev.clone(),
                vec![want_id]
            )],
            error: String::new()
        }
    );
    let (_, spec) = cdi_spec(&n, "uid-1");
    assert_eq!(spec["cdiVersion"], "0.6.0");
    assert_eq!(spec["kind"], format!("{DRIVER}/vf"));
    let env = dra::prepare::spec_env(&spec);
    // the same env the device plugin's Allocate gives for rdma/vhca
    assert_eq!(env["PCIDEVICE_RDMA_VHCA"], pci);
    let info: Value = serde_json::from_str(&env["PCIDEVICE_RDMA_VHCA_INFO"]).unwrap();
    assert_eq!(info[&pci]["generic"]["deviceID"], pci.as_str());
    // device-info for the CNI, with the request's config
    let di = read_json(&devinfo(&n, "uid-1", &dev));
    assert_eq!(di["type"], "pci");
    assert_eq!(di["pci"]["pci-address"], pci.as_str());
    assert_eq!(di["pci"]["pf-pci-address"], n.host.pf_address(1));
    assert_eq!(di["dra"]["request"], "vf");
    assert_eq!(di["dra"]["claim"]["uid"], "uid-1");
    assert_eq!(di["dra"]["config"]["mac"], "0c:42:a1:00:00:07");
    assert_eq!(di["dra"]["config"]["vlan"], 100);
    p.shutdown().await;
    assert!(!n.opts().registration_socket().exists());
    assert!(!n.opts().socket().exists());
}

#[tokio::test]
async fn two_vfs_on_one_numa_node_and_rdma_nodes() {
    let n = Node::new(Profile::Cx6Dx, "");
    // PF 1 is NUMA node 1 on cx6dx
    let (d0, p0) = n.vf(1, 0);
    let (d1, p1) = n.vf(1, 1);
    n.claims.put(claim(
        "c2",
        "uid-2",
        &[("vf", d0.clone()), ("vf", d1.clone())],
        vec![],
    ));
    let _p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let r = k.prepare(&[("c2", "uid-2")]).await;
    assert_eq!(r["uid-2"].error, "");
    let names: Vec<&str> = r["uid-2"].devices.iter().map(|d| d.2.as_str()).collect();
    assert_eq!(names, [d0.as_str(), d1.as_str()]);
    let (_, spec) = cdi_spec(&n, "uid-2");
    assert_eq!(spec["devices"].as_array().unwrap().len(), 2);
    let env = dra::prepare::spec_env(&spec);
    assert_eq!(env["PCIDEVICE_RDMA_VHCA"], format!("{p0},{p1}"));
    // each VF's own RDMA char devices (the rdma/vhca pool mounts them)
    let devs = n.devices();
    for (d, pci) in [(&d0, &p0), (&d1, &p1)] {
        let pd = devs.get(d).unwrap().device().unwrap().clone();
        assert_eq!(pd.numa_node, Some(1));
        let rd = &pd.rdma[0];
        let nodes = node_paths(spec_device(&spec, "uid-2", d));
        let uverbs = rd.char_devices.uverbs.clone().unwrap();
        assert!(uverbs.starts_with("/dev/infiniband/uverbs"), "{uverbs}");
        assert!(nodes.contains(&uverbs), "{nodes:?}");
        assert!(
            nodes.contains(&"/dev/infiniband/rdma_cm".to_string()),
            "{nodes:?}"
        );
        assert!(
            nodes.iter().all(|p| p.starts_with("/dev/infiniband/")),
            "{nodes:?}"
        );
        let info: Value = serde_json::from_str(&env["PCIDEVICE_RDMA_VHCA_INFO"]).unwrap();
        assert_eq!(info[pci]["rdma"]["rdma_dev"], rd.name.as_str());
    }
}

#[tokio::test]
async fn vfio_vf_gets_vfio_nodes_through_v1beta1() {
    let cfg = r#"{"resourceList":[{"resourceName":"cx5-vfio","resourcePrefix":"nvidia.com",
        "selectors":{"drivers":["vfio-pci"]}}]}"#;
    let n = Node::new(Profile::Mixed, cfg);
    let (dev, pci) = n.vf(0, 4);
    n.claims
        .put(claim("cv", "uid-v", &[("vf", dev.clone())], vec![]));
    let _p = n.start();
    // a kubelet that only knows v1beta1 (1.32, 1.33)
    let mut k = kubelet_register(&n.opts().registration_socket(), Some("v1beta1.DRAPlugin")).await;
    assert!(matches!(k, Client::V1beta1(_)));
    let r = k.prepare(&[("cv", "uid-v")]).await;
    assert_eq!(r["uid-v"].error, "");
    let g = n
        .devices()
        .get(&dev)
        .unwrap()
        .device()
        .unwrap()
        .iommu_group
        .unwrap();
    let (_, spec) = cdi_spec(&n, "uid-v");
    assert_eq!(
        node_paths(spec_device(&spec, "uid-v", &dev)),
        ["/dev/vfio/vfio".to_string(), format!("/dev/vfio/{g}")]
    );
    let env = dra::prepare::spec_env(&spec);
    assert_eq!(env["PCIDEVICE_NVIDIA_COM_CX5_VFIO"], pci);
    let info: Value = serde_json::from_str(&env["PCIDEVICE_NVIDIA_COM_CX5_VFIO_INFO"]).unwrap();
    assert_eq!(info[&pci]["vfio"]["dev-mount"], format!("/dev/vfio/{g}"));
}

#[tokio::test]
async fn unprepare_removes_everything_and_is_idempotent() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(0, 1);
    n.claims
        .put(claim("c3", "uid-3", &[("vf", dev.clone())], vec![]));
    let p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    assert_eq!(k.prepare(&[("c3", "uid-3")]).await["uid-3"].error, "");
    let (spec, _) = cdi_spec(&n, "uid-3");
    let di = devinfo(&n, "uid-3", &dev);
    assert!(di.exists());
    assert_eq!(p.driver().prepared().await.len(), 1);
    let u = k.unprepare(&[("c3", "uid-3")]).await;
    assert_eq!(u, HashMap::from([("uid-3".to_string(), String::new())]));
    assert!(!spec.exists());
    assert!(!di.exists());
    assert!(
        Checkpoint::load(&n.opts().checkpoint())
            .unwrap()
            .claims
            .is_empty()
    );
    // again, and a claim never prepared: both fine, both answered
    let u = k.unprepare(&[("c3", "uid-3"), ("other", "uid-x")]).await;
    assert_eq!(u.len(), 2);
    assert!(u.values().all(String::is_empty), "{u:?}");
}

#[tokio::test]
async fn prepare_twice_returns_the_same_and_gets_once() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(1, 5);
    n.claims.put(claim("c4", "uid-4", &[("vf", dev)], vec![]));
    let _p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let a = k.prepare(&[("c4", "uid-4")]).await;
    let b = k.prepare(&[("c4", "uid-4")]).await;
    assert_eq!(a, b);
    assert_eq!(a["uid-4"].devices.len(), 1);
    assert_eq!(n.claims.gets.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn prepared_claims_survive_a_daemon_restart() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(1, 2);
    n.claims
        .put(claim("c5", "uid-5", &[("vf", dev.clone())], vec![]));
    let p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let before = k.prepare(&[("c5", "uid-5")]).await;
    p.shutdown().await;
    // the API server forgets the claim: only the checkpoint can answer now
    n.claims.claims.lock().unwrap().clear();
    let p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let after = k.prepare(&[("c5", "uid-5")]).await;
    assert_eq!(before, after);
    assert_eq!(after["uid-5"].error, "");
    assert_eq!(n.claims.gets.load(Ordering::SeqCst), 1);
    assert_eq!(k.unprepare(&[("c5", "uid-5")]).await["uid-5"], "");
    assert!(!devinfo(&n, "uid-5", &dev).exists());
    assert!(p.driver().prepared().await.is_empty());
}

#[tokio::test]
async fn vf_removed_while_prepared_still_unprepares() {
    let mut n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(1, 7);
    n.claims
        .put(claim("c6", "uid-6", &[("vf", dev.clone())], vec![]));
    let p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    assert_eq!(k.prepare(&[("c6", "uid-6")]).await["uid-6"].error, "");
    // VFs 4-7 of PF 1 go away; the daemon's rescan gives the plugin the new view
    n.host.set_num_vfs(1, 4).unwrap();
    p.driver().set_devices(n.devices());
    assert!(p.driver().devices().get(&dev).is_none());
    // a new claim for the gone VF fails, naming claim, request and device
    n.claims
        .put(claim("c7", "uid-7", &[("vf", dev.clone())], vec![]));
    let r = k.prepare(&[("c7", "uid-7")]).await;
    let e = &r["uid-7"].error;
    assert!(
        e.contains("ns1/c7 (uid uid-7)") && e.contains("request vf") && e.contains(&dev),
        "{e}"
    );
    assert!(r["uid-7"].devices.is_empty());
    // the prepared one unprepares and its files go
    assert_eq!(k.unprepare(&[("c6", "uid-6")]).await["uid-6"], "");
    assert!(!devinfo(&n, "uid-6", &dev).exists());
    assert!(
        !n.opts()
            .cdi_dir
            .join(format!("{DRIVER}-uid-6.json"))
            .exists()
    );
    assert!(p.driver().prepared().await.is_empty());
}

#[tokio::test]
async fn bad_opaque_config_is_refused_with_the_field_and_leaves_nothing() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (d0, _) = n.vf(1, 0);
    let (d1, _) = n.vf(1, 1);
    let good = json!({"apiVersion": format!("{DRIVER}/v1alpha1"), "kind": "VfConfig", "vlan": 10});
    let bad = json!({"apiVersion": format!("{DRIVER}/v1alpha1"), "kind": "VfConfig", "vlan": 5000});
    n.claims.put(claim(
        "c8",
        "uid-8",
        &[("a", d0.clone()), ("b", d1.clone())],
        vec![vf_config(&["a"], good), vf_config(&["b"], bad)],
    ));
    let _p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let r = k.prepare(&[("c8", "uid-8")]).await;
    assert_eq!(
        r["uid-8"].error,
        format!(
            "claim ns1/c8 (uid uid-8): request b: device {d1}: opaque config (FromClaim): field vlan: 5000 out of range 0-4094"
        )
    );
    assert!(r["uid-8"].devices.is_empty());
    // nothing written for the good request either
    assert!(!devinfo(&n, "uid-8", &d0).exists());
    assert!(
        !n.opts()
            .cdi_dir
            .join(format!("{DRIVER}-uid-8.json"))
            .exists()
    );
    assert!(
        Checkpoint::load(&n.opts().checkpoint())
            .unwrap()
            .claims
            .is_empty()
    );
}

#[tokio::test]
async fn claim_errors_are_per_claim() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(1, 0);
    n.claims.put(claim("ok", "uid-ok", &[("vf", dev)], vec![]));
    let _p = n.start();
    let mut k = kubelet_register(&n.opts().registration_socket(), None).await;
    let r = k
        .prepare(&[("ok", "uid-ok"), ("ok", "uid-old"), ("absent", "uid-a")])
        .await;
    assert_eq!(r.len(), 3);
    assert_eq!(r["uid-ok"].error, "");
    assert_eq!(
        r["uid-old"].error,
        "claim ns1/ok (uid uid-old): the API server has uid uid-ok under that name (claim replaced)"
    );
    assert_eq!(
        r["uid-a"].error,
        "claim ns1/absent (uid uid-a): get ResourceClaim: not found"
    );
}

fn daemon_options(n: &Node) -> device_plugin::daemon::DaemonOptions {
    let d = n.dir.path();
    device_plugin::daemon::DaemonOptions {
        root: n.host.root().to_path_buf(),
        config_file: None,
        device_plugin_path: d.join("dp"),
        device_info_dir: Some(d.join("devinfo-dp")),
        cdi_dir: None,
        register_backoff: std::time::Duration::from_millis(20),
        register_backoff_max: std::time::Duration::from_millis(200),
        pod_resources_socket: d.join("absent.sock"),
        device_info_gc_interval: std::time::Duration::ZERO,
        device_info_gc_grace: std::time::Duration::from_secs(120),
        dra: Some(n.opts()),
    }
}

#[tokio::test]
async fn daemon_rescan_feeds_the_dra_plugin() {
    use device_plugin::daemon::{Daemon, Lifecycle};
    let mut n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(1, 6);
    let mut d = Daemon::with_lifecycle(daemon_options(&n), Lifecycle::default()).unwrap();
    let (_, pools) = d.scan(&n.config).unwrap();
    d.apply(pools).unwrap();
    d.start_dra(n.opts(), n.claims.clone()).unwrap();
    let drv = d.dra().unwrap().driver().clone();
    assert_eq!(drv.devices().len(), 16);
    assert!(drv.devices().get(&dev).is_some());
    // the device-plugin sockets and the DRA sockets, from one daemon
    assert!(n.dir.path().join("dp/rdma_vhca.sock").exists());
    assert!(n.opts().socket().exists() && n.opts().registration_socket().exists());
    n.host.set_num_vfs(1, 4).unwrap();
    d.rescan(&n.config).unwrap();
    assert_eq!(drv.devices().len(), 12);
    assert!(drv.devices().get(&dev).is_none());
    d.shutdown().await;
    assert!(!n.opts().socket().exists() && !n.opts().registration_socket().exists());
}

#[tokio::test]
async fn daemon_serves_dra_until_shutdown() {
    let n = Node::new(Profile::Cx6Dx, "");
    let (dev, _) = n.vf(0, 0);
    n.claims.put(claim("cd", "uid-d", &[("vf", dev)], vec![]));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = daemon_options(&n);
    let claims: Arc<dyn ClaimSource> = n.claims.clone();
    let run = tokio::spawn(device_plugin::daemon::run_with_claims(
        opts,
        device_plugin::daemon::Lifecycle::default(),
        Some(claims),
        async {
            let _ = stopped.await;
        },
    ));
    let reg = n.opts().registration_socket();
    for _ in 0..500 {
        if reg.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut k = kubelet_register(&reg, None).await;
    let r = k.prepare(&[("cd", "uid-d")]).await;
    assert_eq!(r["uid-d"].error, "");
    stop.send(()).unwrap();
    run.await.unwrap().unwrap();
    assert!(!reg.exists());
    // prepared claims stay in the checkpoint across the shutdown
    assert!(
        Checkpoint::load(&n.opts().checkpoint())
            .unwrap()
            .claims
            .contains_key("uid-d")
    );
}
