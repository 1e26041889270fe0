//! The manifests against the code they deploy: the daemon's config parser reads every
//! ConfigMap key the way our reader does, its defaults are the paths the DaemonSet mounts,
//! on the simulated ConnectX hosts the configs the DaemonSet runs give the NADs' pools
//! real VFs and rdma/hca real RDMA devices, and the `sriov` plugin's own parser accepts
//! the NADs' configs once multus has injected the VF.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use deploy_manifests::*;
use device_plugin::config::Config;
use device_plugin::pools::{Pools, ResourceDevices};
use simhost::{Profile, SimHost};

fn deployment() -> Deployment {
    Deployment::load(&deploy_dir()).unwrap()
}

fn configmap_data() -> BTreeMap<String, String> {
    deployment().config_files().clone()
}

/// The ConfigMap keys the DaemonSet's daemon containers read.
fn running_keys() -> Vec<String> {
    let d = deployment();
    d.daemon_containers()
        .into_iter()
        .map(|c| d.config_key(c).unwrap())
        .collect()
}

#[test]
fn defaults_are_the_daemons() {
    assert_eq!(
        DEFAULT_CONFIG_FILE,
        device_plugin::config::DEFAULT_CONFIG_FILE
    );
    assert_eq!(
        DEVINFO_DP_DIR,
        device_plugin::allocate::DEFAULT_DEVICE_INFO_DIR
    );
    assert_eq!(DEFAULT_DEVICE_PLUGIN_PATH, proto::DEVICE_PLUGIN_PATH);
    assert_eq!(
        POD_RESOURCES_SOCKET,
        device_plugin::device_info_gc::DEFAULT_POD_RESOURCES_SOCKET
    );
}

#[test]
fn the_daemon_reads_every_configmap_key_without_warnings() {
    let d = deployment();
    let data = d.config_files();
    assert_eq!(data.len(), 4);
    for (key, text) in data {
        let theirs = Config::parse(Path::new(key), text).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            theirs.warnings.is_empty(),
            "{key}: ignored keys {:?}",
            theirs
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        assert!(!theirs.resources.is_empty(), "{key}");
        // The manifests' reader is the daemon's parser, file name aside.
        let ours = d.config(key).unwrap();
        assert_eq!(ours.resources, theirs.resources, "{key}");
        assert_eq!(ours.format, theirs.format, "{key}");
    }
}

/// Device counts per resource that the DaemonSet's configs give on a simulated host, and
/// each resource's socket name.
fn served_on(profile: Profile) -> (BTreeMap<String, usize>, BTreeSet<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let sim = SimHost::create(tmp.path().join("root"), profile).unwrap();
    let inv = rdma_hca::Host::new(sim.root()).inventory().unwrap();
    let data = configmap_data();
    let (mut counts, mut sockets) = (BTreeMap::new(), BTreeSet::new());
    for key in running_keys() {
        let config = Config::parse(Path::new(&key), &data[&key]).unwrap();
        for r in Pools::compute(&inv, &config, false).resources {
            let n = match &r.devices {
                ResourceDevices::Pool(devs) => devs.values().filter(|d| d.healthy).count(),
                ResourceDevices::Shared(s) => s.rdma.len(),
            };
            assert!(sockets.insert(r.socket_name()), "{} twice", r.socket_name());
            assert_eq!(
                counts.insert(r.full_name(), n),
                None,
                "{} served twice",
                r.full_name()
            );
        }
    }
    (counts, sockets)
}

#[test]
fn on_simulated_connectx_hosts_the_pools_get_devices() {
    // ConnectX-6 Dx, 2 PFs x 8 mlx5 VFs: the NADs' pool gets all 16 VFs, rdma/hca the 2
    // PFs' RDMA devices (not the VFs'); no vfio or InfiniBand VFs here.
    let (cx6, _) = served_on(Profile::Cx6Dx);
    assert_eq!(cx6["intel.com/mlnx_sriov_rdma"], 16);
    assert_eq!(cx6["rdma/hca"], 2);
    assert_eq!(cx6["nvidia.com/mlnx_sriov_dpdk"], 0);
    assert_eq!(cx6["nvidia.com/mlnx_sriov_ib"], 0);
    // ConnectX-5 with VFs 0-3 on mlx5_core, 4-5 on vfio-pci, 6-7 unbound.
    let (cx5, _) = served_on(Profile::Mixed);
    assert_eq!(cx5["intel.com/mlnx_sriov_rdma"], 4);
    assert_eq!(cx5["nvidia.com/mlnx_sriov_dpdk"], 2);
    assert_eq!(cx5["rdma/hca"], 1);
    // InfiniBand: ib0's VFs 0-3 (pfNames "ib0#0-3"), not ib1's.
    let (ib, _) = served_on(Profile::Infiniband);
    assert_eq!(ib["nvidia.com/mlnx_sriov_ib"], 4);
    assert_eq!(ib["intel.com/mlnx_sriov_rdma"], 0);
    assert_eq!(ib["rdma/hca"], 2);
}

#[test]
fn probes_test_the_daemons_socket_names() {
    let (_, sockets) = served_on(Profile::Cx6Dx);
    let d = deployment();
    let probed: BTreeSet<String> = d
        .pod_spec()
        .unwrap()
        .containers
        .iter()
        .filter_map(|c| {
            c.liveness_probe
                .as_ref()?
                .exec
                .as_ref()?
                .command
                .as_ref()?
                .last()
                .cloned()
        })
        .flat_map(|script| {
            script
                .split_whitespace()
                .filter(|w| w.ends_with(".sock"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(probed, sockets);
}

#[test]
fn the_sriov_plugin_accepts_the_nads_configs_with_an_injected_device() {
    let mut checked = 0;
    for nad in deployment().nads {
        let mut conf: serde_json::Value = serde_json::from_str(&nad.spec.config).unwrap();
        if conf["type"] != CNI_BINARY {
            continue;
        }
        // Without a device, ADD must be refused (the NAD alone names no VF)...
        let raw = serde_json::to_vec(&conf).unwrap();
        assert!(
            sriov_cni::config::NetConf::parse(&raw, true).is_err(),
            "{}",
            nad.name()
        );
        // ...with the one multus injects from the pod's allocation, accepted as is.
        conf["deviceID"] = "0000:3b:00.2".into();
        let raw = serde_json::to_vec(&conf).unwrap();
        let parsed = sriov_cni::config::NetConf::parse(&raw, true)
            .unwrap_or_else(|e| panic!("{}: {e}", nad.name()));
        assert_eq!(parsed.name, nad.name());
        assert_eq!(parsed.plugin_type, CNI_BINARY);
        // The manifests' reader holds the plugin's own parse, less the injected device.
        let ours = NetConf::parse(nad.name(), &nad.spec.config).unwrap();
        let NetConf::Sriov(ours) = ours else { panic!() };
        let expected = sriov_cni::config::NetConf {
            device_id: None,
            raw: serde_json::from_str(&nad.spec.config).unwrap(),
            ..parsed
        };
        assert_eq!(ours.conf, expected, "{}", nad.name());
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn the_sriov_plugin_reads_every_key_a_nad_may_carry() {
    // Each key of SRIOV_NAD_KEYS is one the plugin's parser reads: a value of the wrong
    // type there makes it fail naming that key. (Keys outside the list are typos the
    // manifests' reader refuses; the plugin would skip them.)
    for key in SRIOV_NAD_KEYS {
        let mut conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "n",
            "type": CNI_BINARY,
        });
        conf[key] = serde_json::json!(["wrong type"]);
        let raw = serde_json::to_vec(&conf).unwrap();
        // No device needed, so that deviceID does not hide its alias pciBusID.
        match sriov_cni::config::NetConf::parse(&raw, false) {
            Err(sriov_cni::Error::Config(e)) => assert_eq!(e.field, key),
            other => panic!("{key}: expected a config error, got {other:?}"),
        }
    }
    let typo = r#"{"cniVersion":"1.0.0","name":"n","type":"sriov","deviceID":"0000:3b:00.2","spoofChk":"on"}"#;
    assert!(sriov_cni::config::NetConf::parse(typo.as_bytes(), true).is_ok());
    let ours = r#"{"cniVersion":"1.0.0","name":"n","type":"sriov","spoofChk":"on"}"#;
    assert!(matches!(
        NetConf::parse("t", ours),
        Err(ManifestError::UnknownFields { fields, .. }) if fields == ["spoofChk"]
    ));
}
