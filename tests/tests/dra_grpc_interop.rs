//! The DRA kubelet plugin of `device-plugin --dra` against gRPC implementations that are
//! not ours (the probes of `interop_common`: grpc-go and grpcio), dialling the way the
//! kubelet does: grpc-go with a bare socket path and no authority (the plugin watcher, so
//! the raw path is sent as `:authority`) and with `WithAuthority("localhost")`; grpcio with
//! its own authority for a `unix:` target, the raw path, and the percent-encoded path.
//!
//! With each: GetInfo + NotifyRegistrationStatus on `<plugins_registry>/<driver>-reg.sock`,
//! then on the endpoint it names NodePrepareResources twice (the second answered from the
//! checkpoint, the same) and NodeUnprepareResources twice (the second a no-op), over the
//! v1 service and over v1beta1, for one ResourceClaim allocated a VF on the API server
//! stand-in. Requests and responses are encoded and decoded with prost here; the probes
//! pass raw bytes. Skipped (or failed under `CI=true` / as root) without the probes, as
//! `grpc_interop.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dra_common;
mod interop_common;

use dra_common::{DRIVER, NODE, Node};
use interop_common::{DIALERS, Dialer, probe, probes_available, unary, watcher_calls};
use node_tests::DEFAULT_TIMEOUT;
use node_tests::fswait::wait_for_path;
use node_tests::simhost::Profile;
use prost::Message;
use proto::dra::{v1, v1beta1};
use proto::pluginregistration as pr;
use std::path::Path;

const NS: &str = "ns1";
const CLAIM: &str = "claim-a";
const UID: &str = "uid-a";

/// One prepared device as a response carries it: request names, pool, device, CDI IDs.
type Prepared = (Vec<String>, String, String, Vec<String>);

/// The plugin watcher's calls on the registration socket, checked.
fn register(dialer: Dialer, reg: &Path, endpoint: &Path) {
    let got = probe(dialer, reg, &watcher_calls());
    let what = format!("{dialer:?} on {}", reg.display());
    let info = pr::PluginInfo::decode(got[0].as_deref().expect(&what)).unwrap();
    assert_eq!(info.r#type, proto::dra::PLUGIN_TYPE, "{what}");
    assert_eq!(info.name, DRIVER, "{what}");
    assert_eq!(Path::new(&info.endpoint), endpoint, "{what}");
    assert!(
        info.supported_versions
            .iter()
            .any(|v| v == proto::dra::V1_SERVICE),
        "{what}: {:?}",
        info.supported_versions
    );
    got[1].as_ref().expect(&what);
}

/// Prepare twice then unprepare twice over one `DRAPlugin` service (`v1` or `v1beta1`,
/// the same messages in another package), on one connection each; returns the devices
/// of both prepares.
macro_rules! prepare_and_unprepare {
    ($api:ident, $package:literal, $dialer:expr, $node:expr) => {{
        let (dialer, n): (Dialer, &Node) = ($dialer, $node);
        let what = format!("{dialer:?} on {}", $package);
        let claims = vec![$api::Claim {
            namespace: NS.into(),
            uid: UID.into(),
            name: CLAIM.into(),
        }];
        let prepare = unary(
            concat!("/", $package, ".DRAPlugin/NodePrepareResources"),
            &$api::NodePrepareResourcesRequest {
                claims: claims.clone(),
            },
        );
        let again = unary(
            prepare.method,
            &$api::NodePrepareResourcesRequest {
                claims: claims.clone(),
            },
        );
        let got = probe(dialer, &n.endpoint(), &[prepare, again]);
        let prepared: Vec<Vec<Prepared>> = got
            .iter()
            .map(|r| {
                let mut r =
                    $api::NodePrepareResourcesResponse::decode(r.as_deref().expect(&what)).unwrap();
                assert_eq!(r.claims.len(), 1, "{what}: {r:?}");
                let c = r.claims.remove(UID).expect(&what);
                assert_eq!(c.error, "", "{what}");
                c.devices
                    .into_iter()
                    .map(|d| {
                        (
                            d.request_names,
                            d.pool_name,
                            d.device_name,
                            d.cdi_device_ids,
                        )
                    })
                    .collect()
            })
            .collect();
        assert!(
            n.cdi_spec(UID).is_file(),
            "{what}: no CDI spec\n{}",
            n.log()
        );
        let unprepare = unary(
            concat!("/", $package, ".DRAPlugin/NodeUnprepareResources"),
            &$api::NodeUnprepareResourcesRequest {
                claims: claims.clone(),
            },
        );
        let again = unary(
            unprepare.method,
            &$api::NodeUnprepareResourcesRequest { claims },
        );
        for r in probe(dialer, &n.endpoint(), &[unprepare, again]) {
            let r =
                $api::NodeUnprepareResourcesResponse::decode(r.as_deref().expect(&what)).unwrap();
            assert_eq!(r.claims.len(), 1, "{what}: {r:?}");
            assert_eq!(r.claims[UID].error, "", "{what}");
        }
        assert!(!n.cdi_spec(UID).exists(), "{what}: CDI spec left");
        prepared
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dra_sockets_answer_grpc_go_and_grpcio_with_every_authority_over_v1_and_v1beta1() {
    if let Err(why) = probes_available() {
        simhost::skip::skip(
            "dra_sockets_answer_grpc_go_and_grpcio_with_every_authority_over_v1_and_v1beta1",
            &why,
        );
        return;
    }
    let mut n = Node::new(Profile::Cx6Dx).await;
    let dev = n.device(0, 0);
    n.seed_vf_claim(NS, CLAIM, UID, &dev);
    n.spawn();
    n.wait_pool("published", |p| p.devices.contains(&dev)).await;
    wait_for_path(&n.registration(), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let want: Prepared = (
        vec!["vf".to_string()],
        NODE.to_string(),
        dev.clone(),
        vec![format!("{DRIVER}/vf={UID}-{dev}")],
    );
    for dialer in DIALERS {
        let n = &n;
        tokio::task::block_in_place(|| {
            register(dialer, &n.registration(), &n.endpoint());
            for prepared in [
                prepare_and_unprepare!(v1, "k8s.io.kubelet.pkg.apis.dra.v1", dialer, n),
                prepare_and_unprepare!(v1beta1, "k8s.io.kubelet.pkg.apis.dra.v1beta1", dialer, n),
            ] {
                for devices in prepared {
                    assert_eq!(devices, std::slice::from_ref(&want), "{dialer:?}");
                }
            }
        });
    }
    // Each first prepare read the claim from the API server (unprepared in between).
    let claim_path = format!("/apis/resource.k8s.io/v1/namespaces/{NS}/resourceclaims/{CLAIM}");
    let gets = n
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == claim_path)
        .count();
    assert_eq!(gets, 2 * DIALERS.len(), "{:?}", n.api.requests());
    // Nothing prepared: a clean stop deletes the slices, with no warning on the way.
    n.terminate().await;
    assert!(n.api.slices().is_empty(), "{:?}", n.api.slices().keys());
    let log = n.log();
    assert!(log.contains("ResourceSlices deleted"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "{log}"
    );
}
