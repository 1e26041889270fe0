//! [`KubeClaims`], the real ClaimSource, over real HTTP: kube's client (configured from a
//! kubeconfig, as on a node) against a minimal loopback server answering
//! `GET /apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}` with API-server
//! JSON (the claim, or a 404 `Status`). Then a full prepare through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use device_plugin::config::Config;
use device_plugin::dra::claims::{ClaimRef, ClaimSource, ClaimSourceError, KubeClaims};
use device_plugin::dra::devices::DraDevices;
use device_plugin::dra::prepare::{Driver, PrepareOptions};
use device_plugin::dra::{self};
use device_plugin::pools::Pools;
use rdma_hca::Host;
use serde_json::{Value, json};
use simhost::{Profile, SimHost};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Claims by path; every request line seen.
#[derive(Default)]
struct Server {
    claims: Mutex<HashMap<String, Value>>,
    seen: Mutex<Vec<String>>,
}

async fn serve(listener: TcpListener, s: Arc<Server>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            return;
        };
        let s = s.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut r = BufReader::new(r);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                // headers up to the blank line (GETs have no body)
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                s.seen.lock().unwrap().push(format!("{method} {target}"));
                let path = target.split('?').next().unwrap_or("");
                let found = s.claims.lock().unwrap().get(path).cloned();
                let (code, body) = match (method, found) {
                    ("GET", Some(c)) => ("200 OK", c),
                    _ => (
                        "404 Not Found",
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
                    ),
                };
                let body = body.to_string();
                let resp = format!(
                    "HTTP/1.1 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn client(port: u16) -> KubeClaims {
    let kc = kube::config::Kubeconfig::from_yaml(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n"
    ))
    .unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    KubeClaims::new(kube::Client::try_from(cfg).unwrap())
}

#[tokio::test]
async fn kube_claims_get_and_prepare_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let host = SimHost::create(dir.path().join("host"), Profile::Cx6Dx).unwrap();
    let pci = host.vf_address(1, 4);
    let dev = dra::device_name(&pci);
    let driver = dra::DEFAULT_DRIVER_NAME;
    let srv = Arc::new(Server::default());
    srv.claims.lock().unwrap().insert(
        "/apis/resource.k8s.io/v1/namespaces/ns1/resourceclaims/net".into(),
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"namespace": "ns1", "name": "net", "uid": "u-net", "resourceVersion": "7"},
            "spec": {"devices": {"requests": [{"name": "vf", "exactly": {"deviceClassName": "vf.sriov.rdma-hca.io"}}]}},
            "status": {"allocation": {"devices": {
                "results": [{"request": "vf", "driver": driver, "pool": "node-a", "device": dev}],
                "config": [{"source": "FromClass", "requests": ["vf"], "opaque": {"driver": driver,
                    "parameters": {"apiVersion": format!("{driver}/v1alpha1"), "kind": "VfConfig", "vlan": 7}}}]}}}
        }),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(serve(l, srv.clone()));
    let kc = client(port).await;

    let c = kc.get("ns1", "net").await.unwrap();
    assert_eq!(c.metadata.uid.as_deref(), Some("u-net"));
    assert!(matches!(
        kc.get("ns1", "absent").await,
        Err(ClaimSourceError::NotFound)
    ));
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "GET /apis/resource.k8s.io/v1/namespaces/ns1/resourceclaims/net",
            "GET /apis/resource.k8s.io/v1/namespaces/ns1/resourceclaims/absent"
        ]
    );

    let inv = Host::new(host.root()).inventory().unwrap();
    let devices = DraDevices::from_pools(&Pools::compute(&inv, &Config::embedded(), false));
    let d = Driver::new(
        PrepareOptions {
            driver: driver.into(),
            cdi_dir: dir.path().join("cdi"),
            device_info_dir: Some(dir.path().join("devinfo")),
            checkpoint: dir.path().join("state/checkpoint.json"),
        },
        Arc::new(kc),
        devices,
    )
    .unwrap();
    let claim = ClaimRef {
        namespace: "ns1".into(),
        uid: "u-net".into(),
        name: "net".into(),
    };
    let p = d.prepare(&claim).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].pci, pci);
    assert_eq!(p[0].cdi_device_ids, [format!("{driver}/vf=u-net-{dev}")]);
    assert_eq!(p[0].config.as_ref().unwrap().vlan, Some(7));
}
