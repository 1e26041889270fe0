//! The `device-plugin` binary with `--dra`, end to end against the API server stand-in
//! (over real HTTP on loopback, through `--kubeconfig`) and the DRA kubelet stand-in
//! (dialling the registration socket and the endpoint it names): the daemon publishes
//! this node's ResourceSlices at start, a rescan after a VF removal rewrites them at the
//! next generation, a PF link going down (health) takes its VFs out, a clean shutdown
//! deletes them, and with a claim still prepared a shutdown keeps them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dra_common;

use dra_common::{DRIVER, NODE, Node};
use node_tests::DEFAULT_TIMEOUT;
use node_tests::dra_kubelet::{ClaimId, DraKubelet};
use node_tests::simhost::Profile;

#[tokio::test]
async fn slices_follow_start_rescan_health_and_a_clean_shutdown_deletes_them() {
    let mut n = Node::new(Profile::Cx6Dx).await;
    n.spawn();
    let p = n.wait_pool("published", |p| p.devices.len() == 16).await;
    assert_eq!((p.generation, p.slices), (1, 1));
    let gone = n.device(1, 6);
    assert!(p.devices.contains(&gone));
    for s in n.api.slices().values() {
        assert_eq!(s["spec"]["nodeName"], NODE);
        assert_eq!(s["spec"]["driver"], DRIVER);
    }
    // a VF removal seen by a rescan (SIGHUP: reload + rescan) leaves its slice
    n.host.set_num_vfs(1, 4).unwrap();
    n.signal(nix::sys::signal::Signal::SIGHUP);
    let p = n.wait_pool("shrunk", |p| p.devices.len() == 12).await;
    assert_eq!(p.generation, 2);
    assert!(!p.devices.contains(&gone));
    // health: PF 0's link down takes its VFs out of the pool
    n.host.set_operstate("ens1f0", "down").unwrap();
    n.signal(nix::sys::signal::Signal::SIGHUP);
    let p = n.wait_pool("without PF 0", |p| p.devices.len() == 4).await;
    assert_eq!(p.generation, 3);
    assert!(!p.devices.contains(&n.device(0, 0)));
    // an unchanged rescan lists and writes nothing
    n.api.clear_requests();
    n.signal(nix::sys::signal::Signal::SIGHUP);
    n.wait_list().await;
    let reqs = n.api.requests();
    assert!(reqs.iter().all(|r| r.method == "GET"), "{reqs:?}");
    n.terminate().await;
    assert!(n.api.slices().is_empty(), "{:?}", n.api.slices().keys());
    assert!(n.log().contains("ResourceSlices deleted"), "{}", n.log());
}

#[tokio::test]
async fn a_prepared_claim_keeps_the_slices_across_shutdown() {
    let mut n = Node::new(Profile::Cx6Dx).await;
    let dev = n.device(0, 0);
    n.seed_vf_claim("ns1", "claim-a", "uid-a", &dev);
    n.spawn();
    n.wait_pool("published", |p| p.devices.len() == 16).await;
    node_tests::fswait::wait_for_path(&n.registration(), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    let mut k = DraKubelet::register(&n.registration()).await.unwrap();
    let claim = ClaimId {
        namespace: "ns1".into(),
        name: "claim-a".into(),
        uid: "uid-a".into(),
    };
    let r = k.prepare(std::slice::from_ref(&claim)).await.unwrap();
    let devs = r["uid-a"].as_ref().unwrap();
    assert_eq!(devs.len(), 1);
    assert_eq!(
        (devs[0].pool.as_str(), devs[0].device.as_str()),
        (NODE, dev.as_str())
    );
    let before = n.api.slices();
    n.terminate().await;
    assert!(n.log().contains("claims still prepared"), "{}", n.log());
    assert_eq!(n.api.slices(), before, "slices kept as they were");
    // back up: the same slices, nothing rewritten; unprepared, the next stop deletes them
    n.api.clear_requests();
    n.spawn();
    node_tests::fswait::wait_for_path(&n.registration(), DEFAULT_TIMEOUT)
        .await
        .unwrap();
    n.wait_list().await;
    let mut k = DraKubelet::register(&n.registration()).await.unwrap();
    let r = k.unprepare(std::slice::from_ref(&claim)).await.unwrap();
    assert_eq!(r["uid-a"], Ok(()));
    n.terminate().await;
    assert!(
        n.api
            .requests()
            .iter()
            .all(|r| r.method != "PUT" && r.method != "POST"),
        "{:?}",
        n.api.requests()
    );
    assert!(n.api.slices().is_empty());
}

#[tokio::test]
async fn api_server_refusals_are_retried_and_the_device_plugin_side_keeps_serving() {
    let mut n = Node::new(Profile::Cx6Dx).await;
    // two writes refused: the publisher's own conflict retry, then the feed's back-off
    n.api.conflict_next_writes(2);
    n.spawn();
    let p = n.wait_pool("published", |p| p.devices.len() == 16).await;
    assert_eq!(p.generation, 1);
    let log = n.wait_log("sync succeeded again").await;
    assert!(log.contains("sync failed; retrying"), "{log}");
    assert!(
        n.dir
            .path()
            .join("plugins_registry")
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().file_name() != *format!("{DRIVER}-reg.sock")),
        "a device-plugin socket is served too"
    );
    n.terminate().await;
}

#[tokio::test]
async fn dra_without_a_node_name_fails_naming_the_flag_and_the_variable() {
    let n = Node::new(Profile::Cx6Dx).await;
    let out = n
        .command()
        .arg("--kubeconfig")
        .arg(n.dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--node-name") && err.contains("NODE_NAME"),
        "{err}"
    );
    assert!(n.api.requests().is_empty());
}
