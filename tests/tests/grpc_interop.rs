//! The daemon's sockets against gRPC implementations that are not ours, dialling the way
//! the real peers do (issue: the kubelet's plugin watcher sends the socket path as
//! `:authority`, which h2 alone refuses):
//!
//! - grpc-go (Debian's `golang-google-grpc-dev`, built here in GOPATH mode from
//!   `tests/interop/grpc_go_probe.go`): bare socket path as the target and a unix context
//!   dialer, with no authority (the kubelet's plugin watcher, so the raw path is sent) and
//!   with `WithAuthority("localhost")` (its device manager since 1.26);
//! - grpcio (Debian's `python3-grpcio`, C-core, `tests/interop/grpcio_probe.py`): its
//!   default authority for a `unix:` target, the raw path, and the percent-encoded path
//!   (what newer grpc-go sends).
//!
//! Each makes the kubelet's calls on both sockets of a cx6dx node in plugins_registry
//! mode: GetInfo, NotifyRegistrationStatus, GetDevicePluginOptions, ListAndWatch (first
//! list), GetPreferredAllocation, Allocate; the plugin-watcher dial is repeated on a new
//! connection, as a restarted kubelet re-dials the registration socket. Requests and
//! responses are encoded and decoded here with prost; the probes pass raw bytes.
//!
//! The probes need `go`, `golang-google-grpc-dev` and `python3-grpcio` (installed by
//! `scripts/deps.sh test`). Without them the test is skipped on a developer machine and
//! fails under `CI=true` or as root, naming what is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod interop_common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use interop_common::{Call, DIALERS, Dialer, probe, probes_available, unary, watcher_calls};
use node_tests::DEFAULT_TIMEOUT;
use node_tests::fswait::wait_for_path;
use prost::Message;
use proto::deviceplugin::v1beta1 as dp;
use proto::pluginregistration as pr;
use simhost::{Profile, SimHost};

/// A cx6dx node with the daemon in plugins_registry mode.
struct Node {
    dir: tempfile::TempDir,
    _host: SimHost,
    daemon: Child,
}

impl Node {
    async fn start() -> Node {
        let dir = node_tests::scratch();
        let host = SimHost::create(dir.path().join("host"), Profile::Cx6Dx).unwrap();
        let registry = dir.path().join("plugins_registry");
        std::fs::create_dir_all(&registry).unwrap();
        let daemon = Command::new(node_tests::project_bin("device-plugin", "device-plugin"))
            .arg("--root")
            .arg(host.root())
            .arg("--plugins-registry")
            .arg(&registry)
            .arg("--device-plugin-path")
            .arg(dir.path().join("device-plugins"))
            .arg("--device-info-dir")
            .arg(dir.path().join("devinfo"))
            .args(["--device-info-gc-interval", "0"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let n = Node {
            dir,
            _host: host,
            daemon,
        };
        for r in ["rdma_hca.sock", "rdma_vhca.sock"] {
            wait_for_path(&n.socket(r), DEFAULT_TIMEOUT).await.unwrap();
        }
        n
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.path().join("plugins_registry").join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The kubelet's calls on one socket, checked; returns how many devices were listed.
fn kubelet_calls(dialer: Dialer, socket: &Path, resource: &str) -> usize {
    let what = format!("{dialer:?} on {resource}");
    // The plugin watcher: GetInfo then NotifyRegistrationStatus, on one connection.
    let got = probe(dialer, socket, &watcher_calls());
    let info = pr::PluginInfo::decode(got[0].as_deref().expect(&what)).unwrap();
    assert_eq!(info.r#type, "DevicePlugin", "{what}");
    assert_eq!(info.name, resource, "{what}");
    assert_eq!(Path::new(&info.endpoint), socket, "{what}");
    assert_eq!(info.supported_versions, ["v1beta1"], "{what}");
    got[1].as_ref().expect(&what);

    // The device manager: options and the first list ...
    let got = probe(
        dialer,
        socket,
        &[
            unary(
                "/v1beta1.DevicePlugin/GetDevicePluginOptions",
                &dp::Empty {},
            ),
            Call {
                stream: true,
                method: "/v1beta1.DevicePlugin/ListAndWatch",
                request: dp::Empty {}.encode_to_vec(),
            },
        ],
    );
    let options = dp::DevicePluginOptions::decode(got[0].as_deref().expect(&what)).unwrap();
    let list = dp::ListAndWatchResponse::decode(got[1].as_deref().expect(&what)).unwrap();
    assert!(!list.devices.is_empty(), "{what}");
    assert!(list.devices.iter().all(|d| d.health == "Healthy"), "{what}");
    let ids: Vec<String> = list.devices.iter().map(|d| d.id.clone()).collect();

    // ... then a pod's admission: GetPreferredAllocation (if offered) and Allocate.
    let mut calls = Vec::new();
    if options.get_preferred_allocation_available {
        calls.push(unary(
            "/v1beta1.DevicePlugin/GetPreferredAllocation",
            &dp::PreferredAllocationRequest {
                container_requests: vec![dp::ContainerPreferredAllocationRequest {
                    available_device_i_ds: ids.clone(),
                    must_include_device_i_ds: vec![],
                    allocation_size: 1,
                }],
            },
        ));
    }
    calls.push(unary(
        "/v1beta1.DevicePlugin/Allocate",
        &dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: vec![ids[0].clone()],
            }],
        },
    ));
    let got = probe(dialer, socket, &calls);
    if options.get_preferred_allocation_available {
        let pref =
            dp::PreferredAllocationResponse::decode(got[0].as_deref().expect(&what)).unwrap();
        assert_eq!(pref.container_responses[0].device_i_ds.len(), 1, "{what}");
    }
    let alloc = dp::AllocateResponse::decode(got.last().unwrap().as_deref().expect(&what)).unwrap();
    let c = &alloc.container_responses[0];
    assert!(
        c.devices
            .iter()
            .any(|d| d.host_path.starts_with("/dev/infiniband")),
        "{what}: {c:?}"
    );
    ids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_calls_from_grpc_go_and_grpcio_with_every_authority() {
    if let Err(why) = probes_available() {
        simhost::skip::skip(
            "kubelet_calls_from_grpc_go_and_grpcio_with_every_authority",
            &why,
        );
        return;
    }
    let node = Node::start().await;
    for dialer in DIALERS {
        for (sock, resource) in [
            ("rdma_hca.sock", "rdma/hca"),
            ("rdma_vhca.sock", "rdma/vhca"),
        ] {
            let path = node.socket(sock);
            let n = tokio::task::block_in_place(|| kubelet_calls(dialer, &path, resource));
            assert!(n > 0);
        }
    }
    // A restarted kubelet's plugin watcher re-dials the same registration socket.
    for _ in 0..2 {
        let path = node.socket("rdma_vhca.sock");
        let got = tokio::task::block_in_place(|| {
            probe(
                Dialer::Go(None),
                &path,
                &[unary(
                    "/pluginregistration.Registration/GetInfo",
                    &pr::InfoRequest {},
                )],
            )
        });
        let info = pr::PluginInfo::decode(got[0].as_deref().unwrap()).unwrap();
        assert_eq!(info.name, "rdma/vhca");
    }
    let log = node.log();
    assert!(!log.contains("refused the request"), "{log}");
    assert!(!log.contains("not understood"), "{log}");
}

/// A request h2 still refuses (a connection-specific header, malformed in HTTP/2) is
/// refused as before, and the daemon's log now says so, naming the socket and the code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_h2_refuses_is_logged_naming_the_socket() {
    let node = Node::start().await;
    let sock = node.socket("rdma_hca.sock");
    let mut block = Vec::new();
    loona_hpack::Encoder::new()
        .encode_into(
            [
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", b"/v1beta1.DevicePlugin/GetDevicePluginOptions"),
                (b":authority", b"localhost"),
                (b"content-type", b"application/grpc"),
                (b"connection", b"keep-alive"),
            ],
            &mut block,
        )
        .unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    bytes.extend_from_slice(&[len[1], len[2], len[3], 0x1, 0x4 | 0x1, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    let rst = tokio::task::block_in_place(|| {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(DEFAULT_TIMEOUT)).unwrap();
        s.write_all(&bytes).unwrap();
        // Read frames until the server resets stream 1.
        loop {
            let mut h = [0u8; 9];
            s.read_exact(&mut h).unwrap();
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let mut payload = vec![0; len];
            s.read_exact(&mut payload).unwrap();
            if h[3] == 0x3 {
                break u32::from_be_bytes(payload[..4].try_into().unwrap());
            }
        }
    });
    assert_eq!(rst, 1, "PROTOCOL_ERROR");
    // The warning is written just after the frame, so it may trail the client's read.
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    let line = loop {
        let log = node.log();
        if let Some(l) = log.lines().find(|l| l.contains("refused the request")) {
            break l.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning in:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("rdma_hca.sock"), "{line}");
    assert!(!line.contains(".tmp"), "names the published socket: {line}");
    assert!(line.contains("RST_STREAM PROTOCOL_ERROR"), "{line}");
}
