//! Every manifest in deploy/ parses strictly into its typed object, and the objects agree
//! with each other and with the code they deploy: resource names, host paths, the CNI
//! binary's name, the image's files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use deploy_manifests::*;
use device_plugin::config::{Config, ConfigError, ConfigFormat, DeviceType, ResourceKind};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Container;

fn deployed() -> Deployment {
    Deployment::load(&deploy_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// Every ConfigMap key, parsed.
fn configs(d: &Deployment) -> BTreeMap<String, Config> {
    d.config_files()
        .keys()
        .map(|k| (k.clone(), d.config(k).unwrap_or_else(|e| panic!("{e}"))))
        .collect()
}

fn daemons(d: &Deployment) -> Vec<&Container> {
    d.daemon_containers()
}

/// The config a daemon container reads: the ConfigMap key its --config-file (default
/// /etc/pcidp/config.json) lands on, through the ConfigMap mounted at /etc/pcidp.
fn config_of(d: &Deployment, c: &Container) -> (String, Config) {
    let key = d.config_key(c).unwrap_or_else(|e| panic!("{e}"));
    let cfg = d.config(&key).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    (key, cfg)
}

/// Every resource the DaemonSet serves, with the container serving it; a resource served
/// twice would make two sockets register the same name with kubelet.
fn served_by(d: &Deployment) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for c in daemons(d) {
        for r in config_of(d, c).1.resources {
            let prev = out.insert(r.full_name(), c.name.clone());
            assert_eq!(prev, None, "{} served by two containers", r.full_name());
        }
    }
    out
}

fn served(d: &Deployment) -> BTreeSet<String> {
    served_by(d).into_keys().collect()
}

fn pod_spec(d: &Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.pod_spec().unwrap()
}

fn container<'a>(list: &'a [Container], name: &str) -> &'a Container {
    list.iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("container {name}"))
}

/// hostPath of the volume mounted at `mount_path` in `c`.
fn host_path_at(ds: &Deployment, c: &Container, mount_path: &str) -> Option<String> {
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == mount_path.trim_end_matches('/'))?;
    let v = pod_spec(ds)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == m.name)?;
    v.host_path.as_ref().map(|h| h.path.clone())
}

#[test]
fn every_manifest_parses_into_typed_objects() {
    let files = manifest_files(&deploy_dir()).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "configmap.yaml",
            "daemonset.yaml",
            "networks.yaml",
            "pods.yaml"
        ]
    );
    let d = deployed();
    assert_eq!(d.nads.len(), 3);
    assert_eq!(d.pods.len(), 3);
    for nad in &d.nads {
        assert_eq!(nad.api_version, "k8s.cni.cncf.io/v1");
        assert_eq!(nad.kind, "NetworkAttachmentDefinition");
        NetConf::parse(nad.name(), &nad.spec.config).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn unknown_fields_are_rejected_where_k8s_openapi_would_drop_them() {
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    let typo = ds.replace("hostNetwork: true", "hostNetwrok: true");
    assert_ne!(typo, ds);
    // k8s-openapi on its own accepts the typo and drops the field...
    let lax: DaemonSet = serde_yaml::from_str(&typo).unwrap();
    assert_eq!(
        lax.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .host_network,
        None
    );
    // ...the strict reader names it.
    match parse_documents("typo.yaml", &typo) {
        Err(ManifestError::UnknownFields { origin, fields }) => {
            assert_eq!(origin, "typo.yaml#1");
            assert_eq!(fields, ["spec.template.spec.hostNetwrok"]);
        }
        other => panic!("expected UnknownFields, got {other:?}"),
    }
    // Deep inside a list, and several at once.
    let deep = ds
        .replace(
            "readOnly: true\n            - name: dev",
            "readOnly: true\n              readonly: true\n            - name: dev",
        )
        .replace(
            "  updateStrategy:",
            "  updateStrategey:\n    type: OnDelete\n  updateStrategy:",
        );
    match parse_documents("deep.yaml", &deep) {
        Err(ManifestError::UnknownFields { fields, .. }) => assert_eq!(
            fields,
            [
                "spec.updateStrategey",
                "spec.template.spec.containers.0.volumeMounts.4.readonly",
                "spec.template.spec.containers.1.volumeMounts.2.readonly"
            ]
        ),
        other => panic!("expected UnknownFields, got {other:?}"),
    }
}

#[test]
fn unknown_fields_in_our_own_types_and_embedded_json_are_rejected() {
    let nad = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: x\n  annotaions: {}\nspec:\n  config: '{}'\n";
    assert!(matches!(
        parse_documents("nad.yaml", nad),
        Err(ManifestError::UnknownFields { fields, .. }) if fields == ["metadata.annotaions"]
    ));
    let spec = "apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: x\nspec:\n  config: '{}'\n  resourceName: a/b\n";
    let err = parse_documents("nad.yaml", spec).unwrap_err().to_string();
    assert!(err.contains("resourceName"), "{err}");

    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"sriov","vlanQos":1,"vlan":5}"#;
    let err = NetConf::parse("nad n", conf).unwrap_err().to_string();
    assert!(err.contains("vlanQos"), "{err}");
    let ipam = r#"{"cniVersion":"1.0.0","name":"n","type":"sriov","ipam":{"type":"host-local","subnet":"10.0.0.0/24","rangestart":"10.0.0.5"}}"#;
    let err = NetConf::parse("nad n", ipam).unwrap_err().to_string();
    assert!(err.contains("rangestart"), "{err}");

    let dp =
        r#"{"resourceList":[{"resourceName":"a","selectors":{"vendors":["15b3"],"isRDMA":true}}]}"#;
    let err = device_plugin_config("cfg", dp).unwrap_err().to_string();
    assert!(err.contains("isRDMA"), "{err}");
}

#[test]
fn wrong_kinds_and_types_are_rejected_with_the_field() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n";
    assert!(matches!(
        parse_documents("svc.yaml", svc),
        Err(ManifestError::UnsupportedKind { kind, .. }) if kind == "Service"
    ));
    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  hostNetwork: yes please\n  containers: []\n";
    match parse_documents("pod.yaml", bad) {
        Err(ManifestError::Invalid { field, .. }) => assert_eq!(field, "spec.hostNetwork"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let nameless = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n";
    assert!(matches!(
        parse_documents("cm.yaml", nameless),
        Err(ManifestError::Invalid { field, .. }) if field == "metadata.name"
    ));
}

#[test]
fn configmap_has_a_commented_example_of_each_format() {
    let d = deployed();
    let cfgs = configs(&d);
    // The three formats, and k8s-rdma-sriov-dev-plugin's in both its modes.
    let formats: BTreeSet<String> = cfgs.values().map(|c| format!("{:?}", c.format)).collect();
    assert_eq!(
        formats,
        BTreeSet::from(
            ["SriovDp", "RdmaShared", "RdmaSriovHca", "RdmaSriovSriov"].map(str::to_owned)
        )
    );
    // Each key is preceded by a YAML comment explaining it.
    let text = std::fs::read_to_string(deploy_dir().join("configmap.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for key in cfgs.keys() {
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("key {key} in configmap.yaml"));
        assert!(
            lines[at - 1].trim_start().starts_with('#'),
            "no comment above {key}"
        );
    }
    // The shared format's default prefix gives the seed notes' rdma/hca.
    let shared = cfgs
        .values()
        .find(|c| c.format == ConfigFormat::RdmaShared)
        .unwrap();
    assert_eq!(shared.resources[0].full_name(), "rdma/hca");
}

#[test]
fn daemonset_host_paths_match_the_daemon_defaults() {
    let d = deployed();
    let ds = &d;
    let spec = pod_spec(ds);
    assert_eq!(spec.host_network, Some(true));
    let daemons = daemons(ds);
    assert_eq!(
        daemons.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["device-plugin", "rdma-shared"]
    );
    let dp_dir = DEFAULT_DEVICE_PLUGIN_PATH.trim_end_matches('/');
    let devinfo = Path::new(DEVINFO_DP_DIR)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(DEVINFO_DP_DIR.starts_with(&format!("{devinfo}/")));
    let cfg_dir = Path::new(DEFAULT_CONFIG_FILE)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    for c in daemons {
        // The daemon runs with root "/", so each host path is mounted at itself.
        let mut paths = vec![dp_dir, PLUGINS_REGISTRY_DIR, "/sys", "/dev"];
        let (key, cfg) = config_of(&d, c);
        let pod_resources = Path::new(POD_RESOURCES_SOCKET)
            .parent()
            .unwrap()
            .to_str()
            .unwrap();
        if cfg.format == ConfigFormat::SriovDp {
            // VF pools write device-info files, and sweep them by asking pod-resources.
            paths.extend([devinfo, pod_resources]);
            assert_eq!(
                arg_value(c, "--pod-resources-socket").as_deref(),
                Some(POD_RESOURCES_SOCKET)
            );
            let m = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == pod_resources)
                .unwrap();
            assert_eq!(
                m.read_only,
                Some(true),
                "{}: pod-resources read-only",
                c.name
            );
        }
        for path in paths {
            assert_eq!(
                host_path_at(ds, c, path).as_deref(),
                Some(path),
                "{}: host path {path} mounted at itself",
                c.name
            );
        }
        // Flags: the defaults, spelt out (the config file differs per container).
        assert_eq!(
            arg_value(c, "--device-plugin-path")
                .map(|p| p.trim_end_matches('/').to_owned())
                .as_deref(),
            Some(dp_dir)
        );
        if c.name == "device-plugin" {
            assert_eq!(key, "config.json");
            assert_eq!(
                arg_value(c, "--config-file").as_deref(),
                Some(DEFAULT_CONFIG_FILE)
            );
        }
        // /etc/pcidp is the ConfigMap of deploy/, whole (a subPath would miss updates).
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == cfg_dir)
            .expect("config mount");
        assert!(m.sub_path.is_none(), "{}: subPath", c.name);
        let v = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == m.name)
            .unwrap();
        assert_eq!(
            v.config_map.as_ref().unwrap().name,
            d.configmap.metadata.name.clone().unwrap()
        );
        // Read-only where the daemon only reads.
        for path in ["/sys", "/dev", cfg_dir] {
            let m = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.mount_path == path)
                .unwrap();
            assert_eq!(m.read_only, Some(true), "{}: {path} read-only", c.name);
        }
    }
    assert_eq!(
        d.daemonset.metadata.namespace,
        d.configmap.metadata.namespace
    );
}

#[test]
fn liveness_probes_check_exactly_the_sockets_each_container_serves() {
    let d = deployed();
    for c in daemons(&d) {
        let probe = c
            .liveness_probe
            .as_ref()
            .unwrap_or_else(|| panic!("{}: liveness probe", c.name));
        assert!(probe.period_seconds.unwrap_or(10) >= 10);
        let cmd = probe
            .exec
            .as_ref()
            .and_then(|e| e.command.clone())
            .expect("exec probe");
        assert_eq!(cmd[..3], ["/bin/busybox", "sh", "-c"]);
        let script = &cmd[3];
        let dp_dir = DEFAULT_DEVICE_PLUGIN_PATH.trim_end_matches('/');
        assert!(script.starts_with(&format!("cd {dp_dir} &&")), "{script}");
        let tested: BTreeSet<&str> = script
            .split("&&")
            .filter_map(|s| s.trim().strip_prefix("test -S "))
            .collect();
        // The daemon's socket name for a resource: <prefix>_<name>.sock.
        let expected: BTreeSet<String> = config_of(&d, c)
            .1
            .resources
            .iter()
            .map(|r| format!("{}_{}.sock", r.prefix, r.name))
            .collect();
        assert_eq!(
            tested,
            expected.iter().map(String::as_str).collect(),
            "{}",
            c.name
        );
    }
}

#[test]
fn daemonset_runs_on_mellanox_nodes_with_requests_and_one_image() {
    let d = deployed();
    let spec = pod_spec(&d);
    let sel = spec.node_selector.as_ref().unwrap();
    assert_eq!(
        sel.get("feature.node.kubernetes.io/pci-15b3.present")
            .map(String::as_str),
        Some("true")
    );
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    assert_eq!(all.len(), 3);
    for c in &all {
        let req = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .unwrap();
        assert!(
            req.contains_key("cpu") && req.contains_key("memory"),
            "{} requests",
            c.name
        );
        let lim = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .unwrap();
        assert!(lim.contains_key("memory"), "{} memory limit", c.name);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
    }
    // One image for all containers, so the installed `sriov` matches the daemon.
    let images: BTreeSet<_> = all.iter().map(|c| c.image.clone()).collect();
    assert_eq!(images.len(), 1, "{images:?}");
}

#[test]
fn init_container_installs_sriov_atomically() {
    let d = deployed();
    let spec = pod_spec(&d);
    let init = container(spec.init_containers.as_deref().unwrap(), "install-cni");
    let host = init
        .volume_mounts
        .iter()
        .flatten()
        .find_map(|m| {
            let v = spec.volumes.iter().flatten().find(|v| v.name == m.name)?;
            (v.host_path.as_ref()?.path == CNI_BIN_DIR).then(|| m.mount_path.clone())
        })
        .expect("the host's /opt/cni/bin is mounted");
    let script = init.command.as_ref().unwrap().last().unwrap().clone();
    let steps: Vec<&str> = script
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        steps.first(),
        Some(&"set -e"),
        "stop at the first failed step"
    );
    let target = format!("{host}/{CNI_BINARY}");
    // cp SRC TMP, with TMP in the same directory (rename(2) does not cross filesystems)...
    let cp: Vec<&str> = steps
        .iter()
        .find(|s| s.starts_with("cp "))
        .unwrap()
        .split_whitespace()
        .collect();
    let tmp = cp[2];
    assert_eq!(Path::new(tmp).parent(), Path::new(&target).parent());
    assert_ne!(tmp, target);
    assert_eq!(Path::new(cp[1]).file_name().unwrap(), CNI_BINARY);
    // ...then mv TMP TARGET.
    let cp_at = steps.iter().position(|s| s.starts_with("cp ")).unwrap();
    let mv_at = steps
        .iter()
        .position(|s| s.starts_with("mv ") && s.ends_with(&format!(" {target}")))
        .expect("sriov is renamed into place");
    let mv: Vec<&str> = steps[mv_at].split_whitespace().collect();
    assert_eq!(&mv[mv.len() - 2..], [tmp, target.as_str()]);
    assert!(cp_at < mv_at);
    // ib-sriov: a relative symlink to sriov made under a temporary name in the same
    // directory, renamed into place last (after sriov exists, so it never dangles).
    let ib = format!("{host}/{CNI_BINARY_IB}");
    let ln: Vec<&str> = steps
        .iter()
        .find(|s| s.starts_with("ln "))
        .expect("ib-sriov is linked")
        .split_whitespace()
        .collect();
    assert_eq!(&ln[..2], ["ln", "-sf"]);
    assert_eq!(ln[2], CNI_BINARY, "relative link to the binary next to it");
    let ib_tmp = ln[3];
    assert_eq!(Path::new(ib_tmp).parent(), Path::new(&ib).parent());
    assert_ne!(ib_tmp, ib);
    let last: Vec<&str> = steps.last().unwrap().split_whitespace().collect();
    assert_eq!(last[0], "mv");
    assert_eq!(&last[last.len() - 2..], [ib_tmp, ib.as_str()]);
    assert!(mv_at < steps.len() - 1);
}

#[test]
fn nad_resource_names_are_pools_the_daemon_serves() {
    let d = deployed();
    let served = served(&d);
    // Every VF pool of every daemon container's config, by full name.
    let pools: BTreeMap<String, DeviceType> = daemons(&d)
        .into_iter()
        .flat_map(|c| config_of(&d, c).1.resources)
        .filter_map(|r| match r.kind {
            ResourceKind::VfPool { device_type, .. } => Some((r.full_name(), device_type)),
            ResourceKind::SharedHca { .. } => None,
        })
        .collect();
    let mut with_resource = 0;
    for nad in &d.nads {
        let conf = NetConf::parse(nad.name(), &nad.spec.config).unwrap();
        match (&conf, nad.resource_name()) {
            (NetConf::Sriov(c), Some(res)) => {
                with_resource += 1;
                assert_eq!(c.conf.plugin_type, CNI_BINARY);
                assert_eq!(c.conf.name, nad.name(), "network name = NAD name");
                assert!(
                    served.contains(res),
                    "{}: {res} not in {served:?}",
                    nad.name()
                );
                // A VF pool, and one whose VFs have netdevs: the CNI moves a netdev.
                let device_type = pools
                    .get(res)
                    .unwrap_or_else(|| panic!("{res} is not a VF pool"));
                assert_eq!(*device_type, DeviceType::NetDevice, "{res}");
            }
            (NetConf::Sriov(_), None) => panic!("{}: sriov NAD without resourceName", nad.name()),
            (NetConf::Macvlan(_), res) => assert_eq!(res, None),
        }
    }
    assert_eq!(with_resource, 2);
    // The prefix defaulting is real: the pool in the NADs has none in config.json.
    assert!(pools.contains_key("intel.com/mlnx_sriov_rdma"));
    let text: serde_json::Value = serde_json::from_str(&d.config_files()["config.json"]).unwrap();
    let pool = text["resourceList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["resourceName"] == "mlnx_sriov_rdma")
        .unwrap();
    assert!(pool.get("resourcePrefix").is_none(), "{pool}");
}

#[test]
fn nads_cover_plain_vlan_and_the_seed_macvlan() {
    let d = deployed();
    let parsed: BTreeMap<&str, NetConf> = d
        .nads
        .iter()
        .map(|n| (n.name(), NetConf::parse(n.name(), &n.spec.config).unwrap()))
        .collect();
    let NetConf::Sriov(plain) = &parsed["sriov-net"] else {
        panic!()
    };
    assert_eq!(plain.conf.vlan, None);
    let NetConf::Sriov(vlan) = &parsed["sriov-vlan100"] else {
        panic!()
    };
    assert_eq!(vlan.conf.vlan, Some(100));
    for c in [plain, vlan] {
        assert!(
            matches!(c.ipam, Some(Ipam::HostLocal(_))),
            "{} host-local",
            c.conf.name
        );
    }
    let NetConf::Macvlan(mv) = &parsed["macvlan-conf"] else {
        panic!()
    };
    assert_eq!(
        (
            mv.master.as_str(),
            mv.mode.as_deref(),
            mv.cni_version.as_str()
        ),
        ("ens192", Some("bridge"), "0.3.0")
    );
    let Some(Ipam::HostLocal(h)) = &mv.ipam else {
        panic!()
    };
    assert_eq!(h.subnet, "192.168.1.0/24");
    assert_eq!(
        (
            h.range_start.unwrap().to_string(),
            h.range_end.unwrap().to_string()
        ),
        ("192.168.1.200".into(), "192.168.1.216".into())
    );
    // Two sriov networks on one node must not hand out overlapping addresses.
    let subnets: BTreeSet<_> = parsed
        .values()
        .filter_map(|c| match c.ipam() {
            Some(Ipam::HostLocal(h)) => Some(h.subnet.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(subnets.len(), 3);
}

#[test]
fn pods_ask_for_served_resources_and_existing_networks() {
    let d = deployed();
    let served = served(&d);
    let nads: BTreeMap<(String, String), &NetworkAttachmentDefinition> = d
        .nads
        .iter()
        .map(|n| {
            (
                (
                    n.metadata.namespace.clone().unwrap_or_default(),
                    n.name().to_owned(),
                ),
                n,
            )
        })
        .collect();
    let mut shapes = BTreeSet::new();
    for pod in &d.pods {
        let name = pod.metadata.name.clone().unwrap();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.as_ref().unwrap();
        let mut asked: BTreeMap<String, i64> = BTreeMap::new();
        for c in &spec.containers {
            for (res, q) in c
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .into_iter()
                .flatten()
            {
                if res.contains('/') {
                    assert!(
                        served.contains(res),
                        "{name}: {res} not served ({served:?})"
                    );
                    *asked.entry(res.clone()).or_default() +=
                        q.0.parse::<i64>().expect("integer count");
                }
            }
            if asked.contains_key("rdma/hca") {
                let caps = c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.capabilities.as_ref());
                let add = caps.and_then(|c| c.add.clone()).unwrap_or_default();
                assert!(
                    add.iter().any(|a| a == "IPC_LOCK"),
                    "{name}: rdma/hca without IPC_LOCK"
                );
            }
        }
        // Each network exists, and each device-backed network has its device asked for.
        let mut needed: BTreeMap<String, i64> = BTreeMap::new();
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let nets = match annotations.get(NETWORKS_ANNOTATION) {
            Some(a) => parse_networks_annotation(&name, a).unwrap(),
            None => vec![],
        };
        let mut ifnames = BTreeSet::new();
        for (i, n) in nets.iter().enumerate() {
            let key = (n.namespace.clone().unwrap_or(ns.clone()), n.name.clone());
            let nad = nads
                .get(&key)
                .unwrap_or_else(|| panic!("{name}: no NAD {key:?}"));
            if let Some(res) = nad.resource_name() {
                *needed.entry(res.to_owned()).or_default() += 1;
            }
            assert!(ifnames.insert(n.interface.clone().unwrap_or(format!("net{}", i + 1))));
        }
        for (res, n) in &needed {
            assert!(
                asked.get(res).copied().unwrap_or(0) >= *n,
                "{name}: {n} x {res} needed by its networks"
            );
        }
        shapes.insert((asked.contains_key("rdma/hca"), !needed.is_empty()));
    }
    // rdma/hca only, a VF only, both.
    assert_eq!(
        shapes,
        BTreeSet::from([(true, false), (false, true), (true, true)])
    );
}

#[test]
fn device_plugin_config_rules() {
    let p = |t: &str| device_plugin_config("t", t);
    let names = |t: &str| {
        p(t).unwrap()
            .resources
            .iter()
            .map(|r| r.full_name())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            r#"{"resourceList":[{"resourceName":"a"},{"resourceName":"b","resourcePrefix":"x.io"}]}"#
        ),
        ["intel.com/a", "x.io/b"]
    );
    assert_eq!(
        names(r#"{"configList":[{"resourceName":"hca","rdmaHcaMax":5,"devices":["p0"]}]}"#),
        ["rdma/hca"]
    );
    assert_eq!(names(r#"{"mode":"hca"}"#), ["rdma/hca"]);
    assert_eq!(
        names(r#"{"mode":"sriov","pfNetdevices":["p0"]}"#),
        ["rdma/vhca"]
    );
    assert_eq!(
        names(
            r#"{"resourceList":[{"resourceName":"a","selectors":[{"vendors":["15b3"]},{"drivers":["vfio-pci"]}]}]}"#
        ),
        ["intel.com/a"]
    );
    // The daemon refuses these, naming the JSON path.
    for (bad, field) in [
        (
            r#"{"resourceList":[{"resourceName":"a/b"}]}"#,
            "resourceList[0].resourceName",
        ),
        (
            r#"{"resourceList":[{"resourceName":"a"},{"resourceName":"a"}]}"#,
            "resourceList[1].resourceName",
        ),
        (
            r#"{"resourceList":[{"resourceName":"a","resourcePrefix":"Bad_Prefix"}]}"#,
            "resourceList[0].resourcePrefix",
        ),
        (
            r#"{"resourceList":[{"resourceName":"a","selectors":{"vendors":["mlx"]}}]}"#,
            "resourceList[0].selectors.vendors[0]",
        ),
        (
            r#"{"resourceList":[{"resourceName":"a","selectors":[{"linkTypes":["token-ring"]}]}]}"#,
            "resourceList[0].selectors[0].linkTypes[0]",
        ),
        (
            r#"{"configList":[{"resourceName":"h","rdmaHcaMax":0,"devices":["p0"]}]}"#,
            "configList[0].rdmaHcaMax",
        ),
        (r#"{"mode":"sriov"}"#, "pfNetdevices"),
        (r#"{"mode":"vf"}"#, "mode"),
    ] {
        match p(bad) {
            Err(ManifestError::DevicePluginConfig(
                ConfigError::Invalid { path, .. } | ConfigError::Duplicate { path, .. },
            )) => assert_eq!(path, field, "{bad}"),
            other => panic!("{bad}: expected Invalid, got {other:?}"),
        }
    }
    // The daemon would run these, ignoring a key with a warning; a deployed config must
    // have none (a second format's key, a key of the other mode, a typo).
    for (ignored, key) in [
        (r#"{"resourceList":[],"mode":"hca"}"#, "mode"),
        (r#"{"mode":"hca","pfNetdevices":["p0"]}"#, "pfNetdevices"),
        (
            r#"{"resourceList":[{"resourceName":"a","selectors":{"isRDMA":true}}]}"#,
            "resourceList[0].selectors.isRDMA",
        ),
    ] {
        match p(ignored) {
            Err(ManifestError::IgnoredKeys { origin, warnings }) => {
                assert_eq!(origin, "t");
                let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
                assert_eq!(paths, [key], "{ignored}");
            }
            other => panic!("{ignored}: expected IgnoredKeys, got {other:?}"),
        }
    }
    assert!(matches!(
        p(r#"{"foo":1}"#),
        Err(ManifestError::DevicePluginConfig(
            ConfigError::UnknownFormat { .. }
        ))
    ));
    assert!(matches!(
        p("{"),
        Err(ManifestError::DevicePluginConfig(
            ConfigError::Syntax { .. }
        ))
    ));
}

#[test]
fn net_conf_rules() {
    let base =
        |extra: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"sriov"{extra}}}"#);
    NetConf::parse(
        "ok",
        &base(r#","vlan":4094,"vlanQoS":7,"vlanProto":"802.1ad""#),
    )
    .unwrap();
    for (extra, field) in [
        (r#","vlan":4095"#, "vlan"),
        (r#","vlan":1,"vlanQoS":8"#, "vlanQoS"),
        (r#","vlanQoS":1"#, "vlanQoS"),
        (r#","min_tx_rate":200,"max_tx_rate":100"#, "min_tx_rate"),
        (r#","deviceID":"0000:3b:00.2""#, "deviceID"),
        (r#","spoofchk":"yes""#, "spoofchk"),
        (r#","link_state":"up""#, "link_state"),
        (
            r#","ipam":{"type":"host-local","subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}"#,
            "ipam.rangeStart",
        ),
        (
            r#","ipam":{"type":"host-local","subnet":"10.0.0.0/24","rangeStart":"10.0.0.9","rangeEnd":"10.0.0.5"}"#,
            "ipam.rangeEnd",
        ),
        (
            r#","ipam":{"type":"host-local","subnet":"10.0.0.0/24","rangeStart":"10.0.0.2","rangeEnd":"10.0.0.9","gateway":"10.0.0.5"}"#,
            "ipam.gateway",
        ),
        (
            r#","ipam":{"type":"host-local","subnet":"10.0.0.0/33"}"#,
            "ipam.subnet",
        ),
    ] {
        match NetConf::parse("t", &base(extra)) {
            Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{extra}"),
            other => panic!("{extra}: expected Invalid, got {other:?}"),
        }
    }
    let v = r#"{"cniVersion":"0.2.0","name":"n","type":"sriov"}"#;
    assert!(
        matches!(NetConf::parse("t", v), Err(ManifestError::Invalid { field, .. }) if field == "cniVersion")
    );
    let other = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#;
    assert!(
        matches!(NetConf::parse("t", other), Err(ManifestError::Invalid { field, .. }) if field == "type")
    );
}

#[test]
fn networks_annotation_forms() {
    let short = parse_networks_annotation("p", "sriov-net, other/macvlan-conf@net5").unwrap();
    assert_eq!(short.len(), 2);
    assert_eq!(
        (
            short[0].name.as_str(),
            short[0].namespace.as_deref(),
            short[0].interface.as_deref()
        ),
        ("sriov-net", None, None)
    );
    assert_eq!(
        (
            short[1].name.as_str(),
            short[1].namespace.as_deref(),
            short[1].interface.as_deref()
        ),
        ("macvlan-conf", Some("other"), Some("net5"))
    );
    let json = parse_networks_annotation(
        "p",
        r#"[{"name":"a","interface":"net1"},{"name":"b","namespace":"x"}]"#,
    )
    .unwrap();
    assert_eq!(json[1].namespace.as_deref(), Some("x"));
    assert!(parse_networks_annotation("p", r#"[{"name":"a","intreface":"net1"}]"#).is_err());
    assert!(parse_networks_annotation("p", "a,@net1").is_err());
    assert!(parse_networks_annotation("p", "a@").is_err());
}

/// `(package, binary)` pairs of the workspace, from `cargo metadata`.
fn workspace_binaries() -> BTreeSet<(String, String)> {
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(deploy_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bins = BTreeSet::new();
    for p in meta["packages"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            if t["kind"].as_array().unwrap().iter().any(|k| k == "bin") {
                bins.insert((
                    p["name"].as_str().unwrap().to_owned(),
                    t["name"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    bins
}

/// Files the final stage of the Containerfile puts in the image: `install -D ... /out/X`
/// lines of the stages it copies `/out/` from.
fn image_files(containerfile: &str) -> BTreeSet<String> {
    let stages: Vec<&str> = containerfile.split("\nFROM ").collect();
    let last = stages.last().unwrap();
    assert!(last.starts_with("scratch"), "runtime stage is FROM scratch");
    let copied: BTreeSet<&str> = last
        .lines()
        .filter_map(|l| l.strip_prefix("COPY --from="))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let mut files = BTreeSet::new();
    for stage in &stages[..stages.len() - 1] {
        let name = stage
            .lines()
            .next()
            .unwrap()
            .split(" AS ")
            .nth(1)
            .unwrap_or_default()
            .trim();
        if copied.contains(name) {
            for word in stage.split_whitespace() {
                if let Some(f) = word.strip_prefix("/out/") {
                    files.insert(format!("/{f}"));
                }
            }
        }
    }
    files
}

#[test]
fn image_holds_the_workspace_binaries_the_daemonset_runs() {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let files = image_files(&text);
    assert_eq!(
        files,
        BTreeSet::from([
            "/usr/bin/device-plugin".to_owned(),
            "/usr/bin/sriov".to_owned(),
            "/bin/busybox".to_owned()
        ])
    );
    // Every `-p PKG` built is a workspace package, and each /usr/bin file is one of its
    // binaries, built for the static target it is copied from.
    let bins = workspace_binaries();
    let built: Vec<&str> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "-p")
        .map(|w| w[1])
        .collect();
    assert_eq!(built, ["device-plugin", "sriov-cni"]);
    for f in files.iter().filter_map(|f| f.strip_prefix("/usr/bin/")) {
        assert!(
            bins.iter()
                .any(|(p, b)| b == f && built.contains(&p.as_str())),
            "{f} is not a binary of {built:?}: {bins:?}"
        );
        assert!(text.contains(&format!(
            "target/x86_64-unknown-linux-musl/release/{f} /out/usr/bin/{f}"
        )));
    }
    assert!(bins.contains(&("sriov-cni".to_owned(), CNI_BINARY.to_owned())));
    // Each program the DaemonSet starts (command[0], probe command[0]) is in the image.
    let d = deployed();
    let spec = pod_spec(&d);
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let mut progs = vec![c.command.as_ref().unwrap()[0].clone()];
        if let Some(cmd) = c
            .liveness_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone())
        {
            progs.push(cmd[0].clone());
        }
        for p in progs {
            assert!(
                files.contains(&p),
                "{}: {p} not in the image {files:?}",
                c.name
            );
        }
    }
    // The init container copies the image's sriov.
    let init = container(spec.init_containers.as_deref().unwrap(), "install-cni");
    assert!(
        init.command
            .as_ref()
            .unwrap()
            .last()
            .unwrap()
            .contains(&format!("cp /usr/bin/{CNI_BINARY} "))
    );
}

#[test]
fn deployment_wants_one_daemonset_one_configmap_and_configs_under_etc_pcidp() {
    let dir = tempfile::tempdir().unwrap();
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    let cm = std::fs::read_to_string(deploy_dir().join("configmap.yaml")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), &ds).unwrap();
    match Deployment::load(dir.path()) {
        Err(ManifestError::Invalid { field, message, .. }) => {
            assert_eq!(
                (field.as_str(), message.as_str()),
                ("ConfigMap", "expected exactly one, found 0")
            )
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(dir.path().join("b.yaml"), &cm).unwrap();
    std::fs::write(dir.path().join("c.yaml"), &ds).unwrap();
    assert!(matches!(
        Deployment::load(dir.path()),
        Err(ManifestError::Invalid { field, .. }) if field == "DaemonSet"
    ));
    std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
    let d = Deployment::load(dir.path()).unwrap();
    let mut c = d.daemon_containers()[0].clone();
    c.args = Some(vec![
        "--config-file".into(),
        "/etc/other/config.json".into(),
    ]);
    assert!(d.config_key(&c).is_err());
    c.args = Some(vec!["--config-file".into(), "/etc/pcidp/x.json".into()]);
    assert_eq!(d.config_key(&c).unwrap(), "x.json");
    assert!(d.config("x.json").is_err());
    c.args = None;
    assert_eq!(d.config_key(&c).unwrap(), "config.json");
}

#[test]
fn duplicate_keys_are_rejected() {
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).unwrap();
    let dup = ds.replace(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetwork: false",
    );
    assert_ne!(dup, ds);
    match parse_documents("dup.yaml", &dup) {
        Err(ManifestError::Syntax { message, .. }) => {
            assert!(message.contains("duplicate"), "{message}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn the_build_stage_copies_every_workspace_member_and_no_target_dir() {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let build = text
        .split("\nFROM ")
        .find(|s| s.contains(" AS build"))
        .unwrap();
    let copied: Vec<&str> = build
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1].to_vec()
        })
        .collect();
    assert!(copied.contains(&"Cargo.toml") && copied.contains(&"Cargo.lock"));
    assert!(
        !copied.iter().any(|c| *c == "." || c.starts_with("target")),
        "{copied:?}"
    );
    // cargo must find every member's manifest to load the workspace.
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(deploy_dir())
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let root = Path::new(meta["workspace_root"].as_str().unwrap());
    let members: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let dir = Path::new(p["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap();
            dir.strip_prefix(root).unwrap().display().to_string()
        })
        .collect();
    assert!(members.len() >= 7, "{members:?}");
    for m in &members {
        assert!(
            copied
                .iter()
                .any(|c| m == c || m.starts_with(&format!("{c}/"))),
            "workspace member {m} is not copied into the build stage ({copied:?})"
        );
    }
}

#[test]
fn cargo_lock_is_current_for_the_locked_image_build() {
    let text = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    assert!(text.contains("cargo build --release --locked"));
    // `--locked` fails when Cargo.lock does not match the manifests; so would the image.
    // (The resolution covers the whole workspace; `tree` needs only this host's crates.)
    let cargo = std::env::var("CARGO").unwrap_or("cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "--locked", "--offline", "--depth", "0", "-q"])
        .current_dir(deploy_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Cargo.lock is not current (commit it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ib_sriov_nads_parse_as_the_same_plugin() {
    let ib = r#"{"cniVersion":"0.3.1","name":"ib","type":"ib-sriov","pkey":"0x8001","link_state":"enable","rdmaIsolation":true,"ibKubernetesEnabled":true}"#;
    match NetConf::parse("ib.json", ib).unwrap() {
        NetConf::Sriov(c) => assert_eq!(c.conf.plugin_type, CNI_BINARY_IB),
        other => panic!("{other:?}"),
    }
    let typo = ib.replace("rdmaIsolation", "rdmaIsolaton");
    let err = NetConf::parse("ib.json", &typo).unwrap_err().to_string();
    assert!(err.contains("rdmaIsolaton"), "{err}");
}
