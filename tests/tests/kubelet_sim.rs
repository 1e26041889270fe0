//! The kubelet simulator against a tiny in-test device plugin: registration, device lists,
//! the allocation calls, pod admission with pod-resources, restarts and the plugin-watcher
//! path. Every wait is an event wait with a bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use node_tests::{
    DEFAULT_TIMEOUT as T, KubeletSim, PodSpec, RegisteredVia, SimError, podresources,
};
use proto::deviceplugin::v1beta1::{
    self as dp, Device, DevicePluginOptions, NumaNode, RegisterRequest, TopologyInfo,
    device_plugin_server::{DevicePlugin, DevicePluginServer},
    registration_client::RegistrationClient,
};
use proto::pluginregistration::{
    self as pr,
    registration_server::{Registration as PluginRegistration, RegistrationServer},
};
use proto::unix::{UnixServer, connect_unix};
use tokio::sync::watch;
use tonic::service::Routes;
use tonic::{Request, Response, Status};

const RES: &str = "example.com/fake";

fn dev(id: &str, healthy: bool, numa: Option<i64>) -> Device {
    Device {
        id: id.into(),
        health: if healthy {
            proto::HEALTHY
        } else {
            proto::UNHEALTHY
        }
        .into(),
        topology: numa.map(|n| TopologyInfo {
            nodes: vec![NumaNode { id: n }],
        }),
    }
}

/// What the fake plugin saw.
#[derive(Default)]
struct Calls {
    allocate: Vec<Vec<String>>,
    pre_start: Vec<Vec<String>>,
    preferred: Vec<dp::ContainerPreferredAllocationRequest>,
    notified: Vec<pr::RegistrationStatus>,
}

#[derive(Clone)]
struct Fake {
    devices: watch::Sender<Vec<Device>>,
    options: DevicePluginOptions,
    calls: Arc<Mutex<Calls>>,
    info: pr::PluginInfo,
}

impl Fake {
    fn new(devices: Vec<Device>, options: DevicePluginOptions) -> Self {
        Self {
            devices: watch::channel(devices).0,
            options,
            calls: Arc::default(),
            info: pr::PluginInfo::default(),
        }
    }
    fn known(&self, id: &str) -> bool {
        self.devices.borrow().iter().any(|d| d.id == id)
    }
    /// Serves DevicePlugin (and the plugin-watcher Registration) on `sock`.
    fn serve(&self, sock: &Path) -> UnixServer {
        let routes = Routes::new(DevicePluginServer::new(self.clone()))
            .add_service(RegistrationServer::new(self.clone()));
        UnixServer::spawn(sock, routes).unwrap()
    }
}

type LawStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<dp::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Fake {
    type ListAndWatchStream = LawStream;

    async fn get_device_plugin_options(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(self.options))
    }

    async fn list_and_watch(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut rx = self.devices.subscribe();
        rx.mark_changed();
        let s = futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let devices = rx.borrow_and_update().clone();
            Some((Ok(dp::ListAndWatchResponse { devices }), rx))
        });
        Ok(Response::new(Box::pin(s)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<dp::PreferredAllocationRequest>,
    ) -> Result<Response<dp::PreferredAllocationResponse>, Status> {
        let req = req.into_inner();
        let mut out = Vec::new();
        for c in req.container_requests {
            // Policy of this fake: must-include first, then the highest IDs.
            let mut ids = c.must_include_device_i_ds.clone();
            let mut rest = c.available_device_i_ds.clone();
            rest.sort();
            rest.reverse();
            for id in rest {
                if ids.len() >= c.allocation_size as usize {
                    break;
                }
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            self.calls.lock().unwrap().preferred.push(c);
            out.push(dp::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(Response::new(dp::PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        req: Request<dp::AllocateRequest>,
    ) -> Result<Response<dp::AllocateResponse>, Status> {
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            let unknown: Vec<_> = c.devices_ids.iter().filter(|i| !self.known(i)).collect();
            if !unknown.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "unknown devices {unknown:?}"
                )));
            }
            self.calls
                .lock()
                .unwrap()
                .allocate
                .push(c.devices_ids.clone());
            out.push(dp::ContainerAllocateResponse {
                envs: [("FAKE_DEVICES".to_string(), c.devices_ids.join(","))].into(),
                devices: c
                    .devices_ids
                    .iter()
                    .map(|i| dp::DeviceSpec {
                        container_path: format!("/dev/fake-{i}"),
                        host_path: format!("/dev/fake-{i}"),
                        permissions: "rw".into(),
                    })
                    .collect(),
                cdi_devices: vec![dp::CdiDevice {
                    name: format!("example.com/fake={}", c.devices_ids.join("+")),
                }],
                ..Default::default()
            });
        }
        Ok(Response::new(dp::AllocateResponse {
            container_responses: out,
        }))
    }

    async fn pre_start_container(
        &self,
        req: Request<dp::PreStartContainerRequest>,
    ) -> Result<Response<dp::PreStartContainerResponse>, Status> {
        self.calls
            .lock()
            .unwrap()
            .pre_start
            .push(req.into_inner().devices_ids);
        Ok(Response::new(dp::PreStartContainerResponse {}))
    }
}

#[tonic::async_trait]
impl PluginRegistration for Fake {
    async fn get_info(
        &self,
        _: Request<pr::InfoRequest>,
    ) -> Result<Response<pr::PluginInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }
    async fn notify_registration_status(
        &self,
        req: Request<pr::RegistrationStatus>,
    ) -> Result<Response<pr::RegistrationStatusResponse>, Status> {
        self.calls.lock().unwrap().notified.push(req.into_inner());
        Ok(Response::new(pr::RegistrationStatusResponse {}))
    }
}

fn opts(preferred: bool, pre_start: bool) -> DevicePluginOptions {
    DevicePluginOptions {
        pre_start_required: pre_start,
        get_preferred_allocation_available: preferred,
    }
}

async fn register(dir: &Path, endpoint: &str, resource: &str, version: &str) -> Result<(), Status> {
    let mut c = RegistrationClient::new(connect_unix(dir.join("kubelet.sock")).await.unwrap());
    c.register(RegisterRequest {
        version: version.into(),
        endpoint: endpoint.into(),
        resource_name: resource.into(),
        // Deliberately different from what GetDevicePluginOptions answers.
        options: Some(opts(false, false)),
    })
    .await
    .map(|_| ())
}

fn four_devices() -> Vec<Device> {
    vec![
        dev("d0", true, Some(0)),
        dev("d1", true, Some(0)),
        dev("d2", true, Some(1)),
        dev("d3", false, None),
    ]
}

/// A sim plus a fake plugin registered as RES.
async fn setup(options: DevicePluginOptions) -> (tempfile::TempDir, KubeletSim, Fake, UnixServer) {
    let dir = tempfile::tempdir().unwrap();
    let sim = KubeletSim::start(dir.path()).await.unwrap();
    let fake = Fake::new(four_devices(), options);
    let server = fake.serve(&dir.path().join("fake.sock"));
    register(dir.path(), "fake.sock", RES, proto::VERSION)
        .await
        .unwrap();
    (dir, sim, fake, server)
}

#[tokio::test]
async fn registration_is_recorded_and_device_list_arrives() {
    let (dir, sim, _fake, _server) = setup(opts(true, false)).await;
    let reg = sim.wait_registered(RES, T).await.unwrap();
    assert_eq!(reg.resource, RES);
    assert_eq!(reg.request.version, "v1beta1");
    assert_eq!(reg.request.endpoint, "fake.sock");
    assert_eq!(reg.endpoint, dir.path().join("fake.sock"));
    assert_eq!(reg.via, RegisteredVia::Register);
    assert_eq!(reg.epoch, 1);
    // The options in force are the ones GetDevicePluginOptions answered.
    assert_eq!(reg.options, opts(true, false));
    assert_eq!(reg.request.options, Some(opts(false, false)));

    let list = sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();
    assert_eq!(list.healthy_count(), 3);
    assert!(list.open);
    assert_eq!(
        list.get("d2").unwrap().topology.as_ref().unwrap().nodes[0].id,
        1
    );
    assert_eq!(sim.attempts().len(), 1);
    assert!(sim.attempts()[0].error.is_none());
}

#[tokio::test]
async fn device_list_updates_and_stream_end_are_seen() {
    let (_dir, sim, fake, server) = setup(opts(false, false)).await;
    sim.wait_healthy_count(RES, 3, T).await.unwrap();
    fake.devices
        .send_modify(|d| d[3].health = proto::HEALTHY.into());
    let list = sim.wait_healthy_count(RES, 4, T).await.unwrap();
    assert!(list.updates >= 2, "{list:?}");
    fake.devices.send_modify(|d| d.truncate(1));
    sim.wait_devices(RES, T, |d| d.len() == 1).await.unwrap();

    // The plugin going away ends the stream.
    server
        .shutdown_within(Duration::from_millis(100))
        .await
        .unwrap();
    sim.wait_for("stream to close", T, |s| {
        s.devices.get(RES).filter(|l| !l.open).cloned()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn allocation_calls_round_trip() {
    let (_dir, sim, fake, _server) = setup(opts(true, true)).await;
    sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();

    assert_eq!(sim.options(RES).await.unwrap(), opts(true, true));
    let ids = vec!["d1".to_string(), "d2".to_string()];
    let resp = sim.allocate(RES, &ids).await.unwrap();
    assert_eq!(resp.envs["FAKE_DEVICES"], "d1,d2");
    assert_eq!(resp.devices.len(), 2);
    assert_eq!(resp.devices[1].host_path, "/dev/fake-d2");
    assert_eq!(resp.cdi_devices[0].name, "example.com/fake=d1+d2");
    assert_eq!(fake.calls.lock().unwrap().allocate, vec![ids.clone()]);

    let err = sim.allocate(RES, &["nope".to_string()]).await.unwrap_err();
    match err {
        SimError::Rpc { rpc, status, .. } => {
            assert_eq!(rpc, "Allocate");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains("nope"));
        }
        e => panic!("unexpected {e:?}"),
    }

    let all: Vec<String> = ["d0", "d1", "d2"].map(String::from).to_vec();
    let pref = sim
        .preferred_allocation(RES, &all, &["d0".to_string()], 2)
        .await
        .unwrap();
    assert_eq!(pref, ["d0", "d2"]);
    let seen = fake.calls.lock().unwrap().preferred[0].clone();
    assert_eq!(seen.allocation_size, 2);
    assert_eq!(seen.available_device_i_ds, all);

    sim.pre_start_container(RES, &ids).await.unwrap();
    assert_eq!(fake.calls.lock().unwrap().pre_start, vec![ids]);

    assert!(matches!(
        sim.allocate("example.com/other", &[]).await,
        Err(SimError::NotRegistered { .. })
    ));
}

#[tokio::test]
async fn pods_are_admitted_and_served_on_pod_resources() {
    let (dir, sim, fake, _server) = setup(opts(true, true)).await;
    sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();
    let pr_sock = dir.path().join("pod-resources.sock");
    let _pr = sim.serve_pod_resources(&pr_sock).unwrap();

    // The fake prefers the highest free healthy IDs: d2, then d1.
    let a = sim
        .admit_pod(&PodSpec::new("ns", "a").container("c", &[(RES, 2)]))
        .await
        .unwrap();
    let got = a.get("c", RES).unwrap();
    assert_eq!(
        got.preferred.as_deref(),
        Some(&["d2".to_string(), "d1".to_string()][..])
    );
    assert_eq!(got.device_ids, ["d2", "d1"]);
    assert_eq!(got.response.envs["FAKE_DEVICES"], "d2,d1");
    // Unhealthy d3 was never offered.
    assert_eq!(
        fake.calls.lock().unwrap().preferred[0].available_device_i_ds,
        ["d0", "d1", "d2"]
    );
    assert_eq!(
        fake.calls.lock().unwrap().pre_start,
        vec![vec!["d2".to_string(), "d1".to_string()]]
    );

    // Only d0 is left.
    let err = sim
        .admit_pod(&PodSpec::new("ns", "b").container("c", &[(RES, 2)]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SimError::NotEnoughDevices {
                wanted: 2,
                free: 1,
                ..
            }
        ),
        "{err}"
    );
    let b = sim
        .admit_pod(&PodSpec::new("ns", "b").container("c", &[(RES, 1)]))
        .await
        .unwrap();
    assert_eq!(b.device_ids(RES), ["d0"]);
    assert!(matches!(
        sim.admit_pod(&PodSpec::new("ns", "b")).await,
        Err(SimError::PodExists { .. })
    ));

    let list = podresources::list(&pr_sock).await.unwrap();
    assert_eq!(list.pod_resources.len(), 2);
    assert_eq!(
        podresources::devices_of(&list, "ns", "a", RES),
        ["d2", "d1"]
    );
    assert_eq!(podresources::devices_of(&list, "ns", "b", RES), ["d0"]);
    let pod_a = &list.pod_resources[0];
    assert_eq!(pod_a.containers[0].name, "c");
    // One entry per device, with the device's NUMA node.
    let numa: Vec<_> = pod_a.containers[0]
        .devices
        .iter()
        .map(|d| d.topology.as_ref().unwrap().nodes[0].id)
        .collect();
    assert_eq!(numa, [1, 0]);

    let mut client = podresources::client(&pr_sock).await.unwrap();
    let alloc = client
        .get_allocatable_resources(proto::podresources::v1::AllocatableResourcesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alloc.devices.len(), 4);
    let got = client
        .get(proto::podresources::v1::GetPodResourcesRequest {
            pod_name: "b".into(),
            pod_namespace: "ns".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.pod_resources.unwrap().containers[0].devices[0].device_ids,
        ["d0"]
    );
    let missing = client
        .get(proto::podresources::v1::GetPodResourcesRequest {
            pod_name: "zz".into(),
            pod_namespace: "ns".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Deleting a pod frees its devices.
    assert!(sim.delete_pod("ns", "a").is_some());
    assert!(sim.delete_pod("ns", "a").is_none());
    let list = podresources::list(&pr_sock).await.unwrap();
    assert_eq!(list.pod_resources.len(), 1);
    let c = sim
        .admit_pod(&PodSpec::new("ns", "c").container("c", &[(RES, 2)]))
        .await
        .unwrap();
    assert_eq!(c.device_ids(RES), ["d2", "d1"]);
}

#[tokio::test]
async fn bad_registrations_are_refused_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let sim = KubeletSim::start(dir.path()).await.unwrap();
    let fake = Fake::new(four_devices(), opts(false, false));
    let _server = fake.serve(&dir.path().join("fake.sock"));

    let e = register(dir.path(), "fake.sock", RES, "v1alpha")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unknown);
    assert!(e.message().contains("v1alpha"), "{e}");
    let e = register(dir.path(), "fake.sock", "no-domain", proto::VERSION)
        .await
        .unwrap_err();
    assert!(e.message().contains("no-domain"), "{e}");
    let e = register(dir.path(), "missing.sock", RES, proto::VERSION)
        .await
        .unwrap_err();
    assert!(e.message().contains("missing.sock"), "{e}");
    sim.set_reject_registrations(Some("kubelet not ready".into()));
    let e = register(dir.path(), "fake.sock", RES, proto::VERSION)
        .await
        .unwrap_err();
    assert!(e.message().contains("kubelet not ready"), "{e}");

    let attempts = sim.attempts();
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a.error.is_some()));
    assert!(sim.registrations().is_empty());
    assert!(matches!(
        sim.client(RES),
        Err(SimError::NotRegistered { .. })
    ));

    sim.set_reject_registrations(None);
    register(dir.path(), "fake.sock", RES, proto::VERSION)
        .await
        .unwrap();
    sim.wait_registered(RES, T).await.unwrap();
    assert_eq!(sim.attempts().len(), 5);
}

#[tokio::test]
async fn restart_wipes_the_dir_and_measures_reregistration() {
    let (dir, sim, fake, server) = setup(opts(false, false)).await;
    let first = sim.wait_registered(RES, T).await.unwrap();
    sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();
    std::fs::write(dir.path().join("stale-file"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("subdir")).unwrap();

    let mut server = Some(server);
    for round in 2..=4u64 {
        assert_eq!(sim.restart().await.unwrap(), round);
        // Everything but subdirectories is gone; a new kubelet.sock listens.
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["kubelet.sock", "subdir"]);
        // Until the plugin registers again, the resource is unknown.
        assert!(matches!(
            sim.client(RES),
            Err(SimError::NotRegistered { .. })
        ));
        assert!(sim.devices(RES).is_none());

        // The plugin, as a real one must: new socket, register again.
        server
            .take()
            .unwrap()
            .shutdown_within(Duration::from_millis(100))
            .await
            .unwrap();
        server = Some(fake.serve(&dir.path().join("fake.sock")));
        register(dir.path(), "fake.sock", RES, proto::VERSION)
            .await
            .unwrap();

        let times = sim.reregistration_times(&[RES], T).await.unwrap();
        let reg = sim.wait_registered(RES, T).await.unwrap();
        assert_eq!(reg.epoch, round);
        assert!(reg.seq > first.seq);
        assert_eq!(times[RES], reg.since_socket);
        assert!(times[RES] < T, "{times:?}");
        // The device list comes from the new stream.
        let list = sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();
        assert_eq!(list.seq, reg.seq);
    }
    assert_eq!(sim.registrations().len(), 4);
    assert!(sim.state().socket_created_at.is_some());
    sim.shutdown().await.unwrap();
    assert!(!dir.path().join("kubelet.sock").exists());
}

#[tokio::test]
async fn plugin_reregistering_replaces_the_old_connection() {
    let (dir, sim, fake, server) = setup(opts(false, false)).await;
    let first = sim.wait_registered(RES, T).await.unwrap();
    sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();
    server
        .shutdown_within(Duration::from_millis(100))
        .await
        .unwrap();
    // A new plugin process, with other devices, on another socket.
    fake.devices.send_replace(vec![dev("n0", true, None)]);
    let _server = fake.serve(&dir.path().join("fake2.sock"));
    register(dir.path(), "fake2.sock", RES, proto::VERSION)
        .await
        .unwrap();
    let again = sim.wait_reregistered(RES, first.seq, T).await.unwrap();
    assert_eq!(again.endpoint, dir.path().join("fake2.sock"));
    assert_eq!(again.epoch, 1);
    let list = sim.wait_devices(RES, T, |d| d.len() == 1).await.unwrap();
    assert_eq!(list.devices[0].id, "n0");
    assert_eq!(
        sim.allocate(RES, &["n0".into()]).await.unwrap().envs["FAKE_DEVICES"],
        "n0"
    );
}

fn registry_fake(dir: &Path, name: &str, endpoint: &Path) -> Fake {
    let mut fake = Fake::new(four_devices(), opts(true, false));
    fake.info = pr::PluginInfo {
        r#type: proto::DEVICE_PLUGIN_TYPE.into(),
        name: name.into(),
        endpoint: endpoint.display().to_string(),
        supported_versions: vec!["v1beta1".into()],
    };
    let _ = dir;
    fake
}

#[tokio::test]
async fn plugins_registry_registration_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let dp_dir = dir.path().join("device-plugins");
    let reg_dir = dir.path().join("plugins_registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let sim = KubeletSim::start(&dp_dir).await.unwrap();

    // Registry socket and device-plugin endpoint are separate sockets here.
    let endpoint: PathBuf = dir.path().join("fake-dp.sock");
    let fake = registry_fake(dir.path(), RES, &endpoint);
    let _dp = fake.serve(&endpoint);
    let reg_sock = reg_dir.join("example.com-fake.sock");
    let _reg = fake.serve(&reg_sock);

    let reg = sim.register_plugin_socket(&reg_sock).await.unwrap();
    assert_eq!(reg.via, RegisteredVia::PluginWatcher);
    assert_eq!(reg.endpoint, endpoint);
    assert_eq!(reg.options, opts(true, false));
    let notified = fake.calls.lock().unwrap().notified.clone();
    assert_eq!(
        notified,
        vec![pr::RegistrationStatus {
            plugin_registered: true,
            error: String::new()
        }]
    );
    sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();

    // A wrong plugin type is refused and told so.
    let mut csi = registry_fake(dir.path(), "x.example.com/csi", &endpoint);
    csi.info.r#type = "CSIPlugin".into();
    let csi_sock = reg_dir.join("csi.sock");
    let _csi = csi.serve(&csi_sock);
    assert!(sim.register_plugin_socket(&csi_sock).await.is_err());
    let n = csi.calls.lock().unwrap().notified.clone();
    assert_eq!(n.len(), 1);
    assert!(!n[0].plugin_registered);
    assert!(n[0].error.contains("CSIPlugin"), "{}", n[0].error);
}

#[tokio::test]
async fn plugins_registry_watch_finds_new_sockets_and_rescans_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dp_dir = dir.path().join("device-plugins");
    let reg_dir = dir.path().join("plugins_registry");
    let sim = KubeletSim::start(&dp_dir).await.unwrap();
    sim.watch_plugins_registry(&reg_dir).unwrap();

    // Empty endpoint: the registry socket itself serves DevicePlugin.
    let mut fake = registry_fake(dir.path(), RES, Path::new(""));
    fake.info.endpoint = String::new();
    let sock = reg_dir.join("fake.sock");
    let _server = fake.serve(&sock);
    let reg = sim.wait_registered(RES, T).await.unwrap();
    assert_eq!(reg.endpoint, sock);
    assert_eq!(reg.via, RegisteredVia::PluginWatcher);

    // A restarted kubelet reads the registry directory again (it does not wipe it).
    sim.restart().await.unwrap();
    let again = sim.wait_registered(RES, T).await.unwrap();
    assert_eq!(again.epoch, 2);
    assert!(sock.exists());
    sim.wait_devices(RES, T, |d| d.len() == 4).await.unwrap();
}
