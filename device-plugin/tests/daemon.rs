//! The daemon in process: `apply` reconciles served resources with new pools (the path a
//! rescan or a config reload takes), ListAndWatch resends on change, `restart_resource`
//! recreates a socket and registers again, shutdown removes the sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_plugin::config::Config;
use device_plugin::daemon::{Daemon, DaemonOptions};
use proto::deviceplugin::v1beta1 as dp;
use proto::unix::{UnixServer, connect_unix};
use simhost::{Profile, SimHost};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::service::Routes;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Recorder(mpsc::UnboundedSender<dp::RegisterRequest>);

#[tonic::async_trait]
impl dp::registration_server::Registration for Recorder {
    async fn register(
        &self,
        req: tonic::Request<dp::RegisterRequest>,
    ) -> Result<tonic::Response<dp::Empty>, tonic::Status> {
        let _ = self.0.send(req.into_inner());
        Ok(tonic::Response::new(dp::Empty {}))
    }
}

fn options(dir: &Path, root: &Path) -> DaemonOptions {
    DaemonOptions {
        root: root.to_path_buf(),
        config_file: None,
        device_plugin_path: dir.join("dp"),
        device_info_dir: Some(dir.join("devinfo")),
        cdi_dir: None,
        register_backoff: Duration::from_millis(20),
        register_backoff_max: Duration::from_millis(200),
        pod_resources_socket: dir.join("absent.sock"),
        device_info_gc_interval: Duration::ZERO,
        device_info_gc_grace: Duration::from_secs(120),
        dra: None,
    }
}

async fn next_list(s: &mut tonic::Streaming<dp::ListAndWatchResponse>) -> Vec<String> {
    let m = tokio::time::timeout(TIMEOUT, s.message())
        .await
        .expect("ListAndWatch message in time")
        .unwrap()
        .unwrap();
    m.devices.into_iter().map(|d| d.id).collect()
}

async fn registered(rx: &mut mpsc::UnboundedReceiver<dp::RegisterRequest>) -> dp::RegisterRequest {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("Register in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rescan_restart_and_shutdown() {
    let d = simhost::tempdir().unwrap();
    let mut host = SimHost::create(d.path().join("host"), Profile::Cx6Dx).unwrap();
    let opts = options(d.path(), host.root());
    std::fs::create_dir_all(&opts.device_plugin_path).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _kubelet = UnixServer::spawn(
        opts.kubelet_socket(),
        Routes::new(dp::registration_server::RegistrationServer::new(Recorder(
            tx,
        ))),
    )
    .unwrap();
    let dp_dir = opts.device_plugin_path.clone();
    let mut daemon = Daemon::new(opts).unwrap();
    let config = Config::embedded();
    daemon.rescan(&config).unwrap();
    let mut names = vec![
        registered(&mut rx).await.resource_name,
        registered(&mut rx).await.resource_name,
    ];
    names.sort();
    assert_eq!(names, vec!["rdma/hca", "rdma/vhca"]);
    assert_eq!(daemon.resources(), vec!["rdma/hca", "rdma/vhca"]);

    let mut c = dp::device_plugin_client::DevicePluginClient::new(
        connect_unix(dp_dir.join("rdma_vhca.sock")).await.unwrap(),
    );
    let mut s = c.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
    assert_eq!(next_list(&mut s).await.len(), 16);

    // sriov_numvfs 8 -> 4 on the second PF: the open stream gets the shorter list
    host.set_num_vfs(1, 4).unwrap();
    daemon.rescan(&config).unwrap();
    let l = next_list(&mut s).await;
    assert_eq!(l.len(), 12);
    assert!(!l.contains(&host.vf_address(1, 4)));

    // a config without rdma/hca: that resource stops and its socket goes
    let only_vhca = Config::parse(
        Path::new("reload.json"),
        r#"{"mode":"sriov","pfNetdevices":["ens1f0"]}"#,
    )
    .unwrap();
    daemon.rescan(&only_vhca).unwrap();
    assert_eq!(daemon.resources(), vec!["rdma/vhca"]);
    assert_eq!(next_list(&mut s).await.len(), 8);
    let hca_sock = dp_dir.join("rdma_hca.sock");
    let gone = tokio::time::timeout(TIMEOUT, async {
        while hca_sock.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "rdma_hca.sock still there");

    // a kubelet restart wiped the socket: restart recreates it and registers again
    std::fs::remove_file(dp_dir.join("rdma_vhca.sock")).unwrap();
    daemon.restart_all().unwrap();
    assert_eq!(registered(&mut rx).await.resource_name, "rdma/vhca");
    let mut c = dp::device_plugin_client::DevicePluginClient::new(
        connect_unix(dp_dir.join("rdma_vhca.sock")).await.unwrap(),
    );
    let mut s2 = c.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
    assert_eq!(next_list(&mut s2).await.len(), 8);

    daemon.shutdown().await;
    assert!(!dp_dir.join("rdma_vhca.sock").exists());
}
