//! DRA ResourceSlices: the publisher (kube 5 client) against the API server stand-in,
//! over real HTTP on loopback, for the simulated hosts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_plugin::config::Config;
use device_plugin::dra::publish::Publisher;
use device_plugin::dra::slices::{SliceSource, device_name, node_devices};
use device_plugin::pools::Pools;
use k8s_openapi::api::resource::v1::{Device, ResourceClaim, ResourceSlice};
use kube::api::{Api, PostParams};
use node_tests::apiserver::ApiServer;
use node_tests::simhost::{Profile, SimHost};
use rdma_hca::Host;
use serde_json::{Value, json};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DRIVER: &str = "sriov.rdma.example.org";
const NODE: &str = "node-a";

fn client(s: &ApiServer) -> kube::Client {
    let cfg = kube::Config::new(s.url().parse().unwrap());
    kube::Client::try_from(cfg).unwrap()
}

fn devices(h: &SimHost, config: &str) -> Vec<Device> {
    let inv = Host::new(h.root()).inventory().unwrap();
    let cfg = if config.is_empty() {
        Config::embedded()
    } else {
        Config::parse(Path::new("test.json"), config).unwrap()
    };
    let pools = Pools::compute(&inv, &cfg, false);
    node_devices(
        &SliceSource {
            inventory: &inv,
            pools: &pools,
            root: h.root(),
        },
        DRIVER,
    )
}

fn host(p: Profile) -> (tempfile::TempDir, SimHost) {
    let d = node_tests::simhost::tempdir().unwrap();
    let h = SimHost::create(d.path(), p).unwrap();
    (d, h)
}

fn writes(s: &ApiServer) -> Vec<(String, u16)> {
    s.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.status))
        .collect()
}

/// The device `name` as the stand-in stored it.
fn stored_device(s: &ApiServer, name: &str) -> Value {
    s.slices()
        .values()
        .flat_map(|sl| {
            sl["spec"]["devices"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no device {name}"))
}

#[tokio::test]
async fn cx6dx_publishes_one_slice_with_typed_attributes() {
    let (_d, h) = host(Profile::Cx6Dx);
    let s = ApiServer::start().await.unwrap();
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!(
        (r.generation, r.slices, r.devices, r.created),
        (1, 1, 16, 1)
    );
    let pool = s.pool(DRIVER, NODE).unwrap();
    assert_eq!(
        (pool.generation, pool.slices, pool.devices.len()),
        (1, 1, 16)
    );
    // the list went out with the field selector the real server supports
    let list = &s.requests()[0];
    assert_eq!(list.method, "GET");
    assert!(
        list.query.as_deref().unwrap_or("").contains(
            "fieldSelector=spec.nodeName%3Dnode-a%2Cspec.driver%3Dsriov.rdma.example.org"
        ),
        "{list:?}"
    );
    let slice = s.slices().into_values().next().unwrap();
    assert_eq!(slice["spec"]["nodeName"], NODE);
    assert_eq!(slice["spec"]["driver"], DRIVER);
    assert_eq!(slice["spec"]["pool"]["resourceSliceCount"], 1);
    assert!(slice["spec"].get("allNodes").is_none());
    let vf = h.vf_address(1, 3);
    let d = stored_device(&s, &device_name(&vf));
    let a = &d["attributes"];
    assert_eq!(a[format!("{DRIVER}/vfIndex")], json!({"int": 3}));
    assert_eq!(a[format!("{DRIVER}/numaNode")], json!({"int": 1}));
    assert_eq!(a[format!("{DRIVER}/pciAddress")], json!({"string": vf}));
    assert_eq!(
        a[format!("{DRIVER}/pfPciAddress")],
        json!({"string": h.pf_address(1)})
    );
    assert_eq!(a[format!("{DRIVER}/pfName")], json!({"string": "ens1f1"}));
    assert_eq!(a[format!("{DRIVER}/rdma")], json!({"bool": true}));
    assert_eq!(
        a["resource.kubernetes.io/pcieRoot"],
        json!({"string": "pci0000:3a"})
    );
    assert_eq!(a["resource.kubernetes.io/pciBusID"], json!({"string": vf}));
}

#[tokio::test]
async fn unchanged_sync_only_lists_and_restart_keeps_the_generation() {
    let (_d, h) = host(Profile::Cx6Dx);
    let s = ApiServer::start().await.unwrap();
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    p.sync(&devices(&h, "")).await.unwrap();
    s.clear_requests();
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert!(r.unchanged());
    assert_eq!(r.generation, 1);
    assert_eq!(s.requests().len(), 1, "one list, no writes");
    // a restarted daemon (new publisher) finds its slices and writes nothing
    let mut again = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    assert!(again.sync(&devices(&h, "")).await.unwrap().unchanged());
    // ... and continues the generation on change
    h.set_operstate("ens1f1", "down").unwrap();
    let r = again.sync(&devices(&h, "")).await.unwrap();
    assert_eq!((r.generation, r.devices, r.updated), (2, 8, 1));
    assert_eq!(s.pool(DRIVER, NODE).unwrap().generation, 2);
}

#[tokio::test]
async fn large_host_slices_follow_removal_and_health() {
    let (_d, h) = host(Profile::Large);
    let s = ApiServer::start().await.unwrap();
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!((r.slices, r.devices, r.created), (8, 1024, 8));
    let pool = s.pool(DRIVER, NODE).unwrap();
    assert_eq!(
        (pool.generation, pool.slices, pool.devices.len()),
        (1, 8, 1024)
    );
    for sl in s.slices().values() {
        assert_eq!(sl["spec"]["devices"].as_array().unwrap().len(), 128);
    }
    // a VF goes away (unbound): every slice moves to generation 2, the VF is gone
    let gone = h.vf_address(5, 10);
    h.unbind(&gone).unwrap();
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!(
        (r.generation, r.devices, r.updated, r.created, r.deleted),
        (2, 1023, 8, 0, 0)
    );
    let pool = s.pool(DRIVER, NODE).unwrap();
    assert_eq!((pool.generation, pool.slices), (2, 8));
    assert!(!pool.devices.contains(&device_name(&gone)));
    assert_eq!(pool.devices.len(), 1023);
    // three PFs lose link: their 192 VFs are unhealthy and leave; 831 devices = 7 slices
    for pf in 1..4 {
        h.set_operstate(&h.pfs()[pf].netdev, "down").unwrap();
    }
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!(
        (r.generation, r.slices, r.devices, r.deleted),
        (3, 7, 831, 1)
    );
    let pool = s.pool(DRIVER, NODE).unwrap();
    assert_eq!(
        (pool.generation, pool.slices, pool.devices.len()),
        (3, 7, 831)
    );
    assert!(!pool.devices.contains(&device_name(&h.vf_address(2, 0))));
    assert_eq!(s.slices().len(), 7);
}

#[tokio::test]
async fn a_conflict_relists_once_then_gives_up_naming_the_slice() {
    let (_d, h) = host(Profile::Cx6Dx);
    let s = ApiServer::start().await.unwrap();
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    p.sync(&devices(&h, "")).await.unwrap();
    h.set_operstate("ens1f1", "down").unwrap();
    // one conflict: list, 409, list again, PUT
    s.conflict_next_writes(1);
    s.clear_requests();
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!((r.generation, r.devices, r.updated), (2, 8, 1));
    let seen: Vec<(String, u16)> = s
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    let want = [("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)];
    let want: Vec<(String, u16)> = want.iter().map(|(m, c)| (m.to_string(), *c)).collect();
    assert_eq!(seen, want);
    assert_eq!(s.pool(DRIVER, NODE).unwrap().generation, 2);
    // two in a row: the error names the operation and the slice
    h.set_operstate("ens1f1", "up").unwrap();
    s.conflict_next_writes(2);
    let e = p.sync(&devices(&h, "")).await.unwrap_err().to_string();
    assert!(
        e.contains("update ResourceSlice node-a-sriov.rdma.example.org-0"),
        "{e}"
    );
    // the next sync recovers, at a generation above any seen
    let r = p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!((r.generation, r.devices), (3, 16));
}

#[tokio::test]
async fn mixed_host_offers_vfio_and_netdev_vfs() {
    let (_d, h) = host(Profile::Mixed);
    let s = ApiServer::start().await.unwrap();
    let cfg = r#"{"resourceList":[
        {"resourceName":"cx5_vfio","selectors":{"drivers":["vfio-pci"]}},
        {"resourceName":"cx5_netdev","selectors":{"vendors":["15b3"],"isRdma":true}}]}"#;
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    p.sync(&devices(&h, cfg)).await.unwrap();
    let pool = s.pool(DRIVER, NODE).unwrap();
    assert_eq!(pool.devices.len(), 6);
    let vfio = stored_device(&s, &device_name(&h.vf_address(0, 4)));
    assert_eq!(
        vfio["attributes"][format!("{DRIVER}/driver")],
        json!({"string": "vfio-pci"})
    );
    assert!(vfio["attributes"].get(format!("{DRIVER}/netdev")).is_none());
}

#[tokio::test]
async fn shutdown_deletes_slices_only_without_prepared_claims() {
    let (_d, h) = host(Profile::Cx6Dx);
    let s = ApiServer::start().await.unwrap();
    // another node's slice and another driver's slice on this node are not ours
    let other = |name: &str, node: &str, driver: &str| {
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": {"driver": driver, "nodeName": node,
                "pool": {"name": node, "generation": 4, "resourceSliceCount": 1}}})
    };
    s.insert_slice(other("b-0", "node-b", DRIVER)).unwrap();
    s.insert_slice(other("a-gpu-0", NODE, "gpu.example.com"))
        .unwrap();
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    p.sync(&devices(&h, "")).await.unwrap();
    assert_eq!(s.slices().len(), 3);
    // claims prepared: slices stay, nothing is written
    s.clear_requests();
    assert_eq!(p.clone().shutdown(true).await.unwrap(), 0);
    assert!(s.requests().is_empty());
    assert_eq!(s.slices().len(), 3);
    // none prepared: ours go, the others stay
    assert_eq!(p.shutdown(false).await.unwrap(), 1);
    assert_eq!(writes(&s), vec![("DELETE".to_string(), 200)]);
    let left: Vec<String> = s.slices().into_keys().collect();
    assert_eq!(left, vec!["a-gpu-0", "b-0"]);
}

#[tokio::test]
async fn stand_in_refuses_what_the_real_server_refuses() {
    let s = ApiServer::start().await.unwrap();
    let api: Api<ResourceSlice> = Api::all(client(&s));
    let (_d, h) = host(Profile::Large);
    let devs = devices(&h, "");
    let mut slices = device_plugin::dra::slices::build_slices(NODE, DRIVER, &devs[..128], 1);
    let mut too_many = slices.remove(0);
    too_many.spec.devices = Some(devs[..129].to_vec());
    let err = api
        .create(&PostParams::default(), &too_many)
        .await
        .unwrap_err();
    let kube::Error::Api(st) = err else {
        panic!("{err:?}")
    };
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));
    assert!(st.message.contains("spec.devices"), "{}", st.message);
    // no node selection at all
    let mut nowhere = too_many.clone();
    nowhere.spec.devices = None;
    nowhere.spec.node_name = None;
    let err = api
        .create(&PostParams::default(), &nowhere)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 422 && s.message.contains("exactly one of"))
    );
    // both nodeName and allNodes
    let mut both = nowhere.clone();
    both.spec.node_name = Some(NODE.into());
    both.spec.all_nodes = Some(true);
    let err = api.create(&PostParams::default(), &both).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));
    // raw HTTP, as any client: an unknown field and a missing pool
    let body = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "x"}, "spec": {"driver": DRIVER, "nodeName": NODE, "bogus": 1}});
    let (code, resp) = raw(
        &s,
        "POST",
        "/apis/resource.k8s.io/v1/resourceslices",
        &body.to_string(),
    )
    .await;
    assert_eq!(code, 422, "{resp}");
    assert!(
        resp.contains("spec.bogus") && resp.contains("spec.pool"),
        "{resp}"
    );
    // an attribute with two values, a bad device name
    let body = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "x"}, "spec": {"driver": DRIVER, "nodeName": NODE,
        "pool": {"name": NODE, "generation": 0, "resourceSliceCount": 1},
        "devices": [{"name": "0000:3b:00.2", "attributes": {"a/b": {"int": 1, "string": "x"}}}]}});
    let (code, resp) = raw(
        &s,
        "POST",
        "/apis/resource.k8s.io/v1/resourceslices",
        &body.to_string(),
    )
    .await;
    assert_eq!(code, 422, "{resp}");
    assert!(
        resp.contains("DNS label") && resp.contains("exactly one value"),
        "{resp}"
    );
    // unsupported field selector
    let (code, resp) = raw(
        &s,
        "GET",
        "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.foo%3Dx",
        "",
    )
    .await;
    assert_eq!(code, 400, "{resp}");
    assert!(s.slices().is_empty());
}

#[tokio::test]
async fn stale_update_conflicts_and_claims_are_served() {
    let s = ApiServer::start().await.unwrap();
    let api: Api<ResourceSlice> = Api::all(client(&s));
    let sl = device_plugin::dra::slices::build_slices(NODE, DRIVER, &[], 1).remove(0);
    let created = api.create(&PostParams::default(), &sl).await.unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let mut upd = created.clone();
    upd.spec.pool.generation = 2;
    let name = upd.metadata.name.clone().unwrap();
    api.replace(&name, &PostParams::default(), &upd)
        .await
        .unwrap();
    // the same (now stale) resourceVersion again
    upd.metadata.resource_version = Some(rv);
    let err = api
        .replace(&name, &PostParams::default(), &upd)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
    // immutable driver
    let mut moved = api.get(&name).await.unwrap();
    moved.spec.driver = "other.example.com".into();
    let err = api
        .replace(&name, &PostParams::default(), &moved)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422 && s.message.contains("immutable")));
    // a seeded claim, read the way the kubelet plugin reads it
    s.seed_claim(
        "ns1",
        "claim-a",
        json!({"spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "sriov-vf"}}]}},
               "status": {"allocation": {"devices": {"results": [{"request": "vf", "driver": DRIVER,
                   "pool": NODE, "device": "pci-0000-3b-00-2"}]}}}}),
    );
    let claims: Api<ResourceClaim> = Api::namespaced(client(&s), "ns1");
    let c = claims.get("claim-a").await.unwrap();
    let res = &c
        .status
        .unwrap()
        .allocation
        .unwrap()
        .devices
        .unwrap()
        .results
        .unwrap()[0];
    assert_eq!(
        (res.driver.as_str(), res.device.as_str()),
        (DRIVER, "pci-0000-3b-00-2")
    );
    let err = claims.get("missing").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test]
async fn watch_sees_the_publisher_write() {
    use futures::StreamExt;
    let (_d, h) = host(Profile::Cx6Dx);
    let s = ApiServer::start().await.unwrap();
    let api: Api<ResourceSlice> = Api::all(client(&s));
    let wp = kube::api::WatchParams::default().fields(&format!("spec.nodeName={NODE}"));
    let mut events = api.watch(&wp, "0").await.unwrap().boxed();
    let mut p = Publisher::new(client(&s), NODE, DRIVER).unwrap();
    p.sync(&devices(&h, "")).await.unwrap();
    let ev = tokio::time::timeout(node_tests::DEFAULT_TIMEOUT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let kube::api::WatchEvent::Added(sl) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(sl.spec.devices.map(|d| d.len()), Some(16));
}

/// One HTTP/1.1 request over a plain TCP socket: status code and body.
async fn raw(s: &ApiServer, method: &str, path: &str, body: &str) -> (u16, String) {
    let addr = s.url().trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn the_written_kubeconfig_reaches_the_stand_in() {
    let (_d, h) = host(Profile::Cx6Dx);
    let s = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    s.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let mut p = Publisher::new(kube::Client::try_from(cfg).unwrap(), NODE, DRIVER).unwrap();
    assert_eq!(p.sync(&devices(&h, "")).await.unwrap().created, 1);
    assert_eq!(s.pool(DRIVER, NODE).unwrap().devices.len(), 16);
}
