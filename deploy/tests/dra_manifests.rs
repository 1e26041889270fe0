//! `deploy/dra/` held to the code: the DRA DaemonSet is the main one plus exactly the DRA
//! additions, its paths are the daemon's DRA defaults on mounted host directories, the
//! RBAC grants the verbs the driver calls, and the classes and example claim name our
//! driver with an opaque config the driver accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use deploy_manifests::device_plugin::dra::{self, plugin::DraOptions, vfconfig::VfConfig};
use deploy_manifests::k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, HostPathVolumeSource, ObjectFieldSelector, Volume, VolumeMount,
};
use deploy_manifests::{Deployment, DraDeployment, ManifestError, arg_value, deploy_dir};

fn main_ds() -> Deployment {
    Deployment::load(&deploy_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn dra_ds() -> DraDeployment {
    DraDeployment::load(&deploy_dir().join("dra")).unwrap_or_else(|e| panic!("{e}"))
}

fn container<'a>(d: &'a DraDeployment, name: &str) -> &'a Container {
    let spec = d.daemonset.spec.as_ref().unwrap().template.spec.as_ref();
    spec.unwrap()
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("container {name}"))
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn host_volume(name: &str, path: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some("DirectoryOrCreate".into()),
        }),
        ..Default::default()
    }
}

#[test]
fn the_dra_daemonset_is_the_main_one_plus_the_dra_additions() {
    let mut want = main_ds().daemonset;
    let pod = want.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.service_account_name = Some("sriov-rdma-dra".into());
    let c = pod
        .containers
        .iter_mut()
        .find(|c| c.name == "device-plugin")
        .unwrap();
    let args = c.args.as_mut().unwrap();
    let at = args.iter().position(|a| a == "--log-level=info").unwrap();
    for (i, a) in [
        "--dra",
        "--dra-driver-name=sriov.rdma-hca.io",
        "--cdi-dir=/var/run/cdi",
    ]
    .into_iter()
    .enumerate()
    {
        args.insert(at + i, a.into());
    }
    c.env = Some(vec![EnvVar {
        name: "NODE_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "spec.nodeName".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let mounts = c.volume_mounts.as_mut().unwrap();
    let at = mounts
        .iter()
        .position(|m| m.name == "pod-resources")
        .unwrap()
        + 1;
    mounts.insert(at, mount("cdi", "/var/run/cdi"));
    mounts.insert(
        at,
        mount("kubelet-plugins", proto::dra::KUBELET_PLUGINS_DIR),
    );
    let volumes = pod.volumes.as_mut().unwrap();
    let at = volumes.iter().position(|v| v.name == "sys").unwrap();
    volumes.insert(at, host_volume("cdi", "/var/run/cdi"));
    volumes.insert(
        at,
        host_volume("kubelet-plugins", proto::dra::KUBELET_PLUGINS_DIR),
    );
    let (want, got) = (
        serde_json::to_value(&want).unwrap(),
        serde_json::to_value(&dra_ds().daemonset).unwrap(),
    );
    assert_eq!(got, want, "dra/daemonset.yaml drifted from daemonset.yaml");
}

/// The host directory a container path is on, through the container's mounts.
fn host_path_of(d: &DraDeployment, c: &Container, path: &Path) -> Option<String> {
    let pod = d.daemonset.spec.as_ref()?.template.spec.as_ref()?;
    let m = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())?;
    let v = pod.volumes.iter().flatten().find(|v| v.name == m.name)?;
    let host = &v.host_path.as_ref()?.path;
    let rest = path.strip_prefix(&m.mount_path).ok()?;
    if rest.as_os_str().is_empty() {
        return Some(host.clone());
    }
    Some(Path::new(host).join(rest).display().to_string())
}

#[test]
fn dra_paths_are_the_daemons_defaults_on_the_host_directories_the_kubelet_uses() {
    let d = dra_ds();
    let c = container(&d, "device-plugin");
    let driver = arg_value(c, "--dra-driver-name").unwrap();
    assert_eq!(driver, dra::DEFAULT_DRIVER_NAME);
    assert!(c.args.as_ref().unwrap().iter().any(|a| a == "--dra"));
    let mut o = DraOptions::new(&driver);
    o.cdi_dir = arg_value(c, "--cdi-dir").unwrap().into();
    // unmounted paths would be written into the container's (read-only) root
    for (what, p) in [
        ("dra.sock", o.socket()),
        ("registration socket", o.registration_socket()),
        ("checkpoint", o.checkpoint()),
        ("CDI dir", o.cdi_dir.clone()),
        ("device-info dir", o.device_info_dir.clone().unwrap()),
    ] {
        assert_eq!(
            host_path_of(&d, c, &p).as_deref(),
            Some(p.to_str().unwrap()),
            "{what} {} is not on the same host path",
            p.display()
        );
    }
    let env = c.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    let field = node
        .value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap();
    assert_eq!(field.field_path, "spec.nodeName");
}

#[test]
fn rbac_grants_the_service_account_exactly_the_verbs_the_driver_calls() {
    let d = dra_ds();
    let pod = d.daemonset.spec.as_ref().unwrap().template.spec.as_ref();
    let sa = &d.service_account.metadata;
    assert_eq!(
        pod.unwrap().service_account_name.as_deref(),
        sa.name.as_deref()
    );
    assert_eq!(sa.namespace, d.daemonset.metadata.namespace);
    let subject = &d.binding.subjects.as_ref().unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            Some(&subject.name),
            &subject.namespace
        ),
        ("ServiceAccount", sa.name.as_ref(), &sa.namespace)
    );
    assert_eq!(d.binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&d.binding.role_ref.name),
        d.cluster_role.metadata.name.as_ref()
    );
    let granted: BTreeSet<(String, String, String)> = d
        .cluster_role
        .rules
        .iter()
        .flatten()
        .flat_map(|r| {
            let groups = r.api_groups.clone().unwrap_or_default();
            let resources = r.resources.clone().unwrap_or_default();
            groups.into_iter().flat_map(move |g| {
                let verbs = r.verbs.clone();
                resources.clone().into_iter().flat_map(move |res| {
                    let g = g.clone();
                    verbs
                        .clone()
                        .into_iter()
                        .map(move |v| (g.clone(), res.clone(), v))
                })
            })
        })
        .collect();
    // publish.rs: list, replace (update), create, delete; claims.rs: get
    let want: BTreeSet<_> = [
        ("resourceslices", "list"),
        ("resourceslices", "create"),
        ("resourceslices", "update"),
        ("resourceslices", "delete"),
        ("resourceclaims", "get"),
    ]
    .into_iter()
    .map(|(r, v)| ("resource.k8s.io".to_owned(), r.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(granted, want);
}

#[test]
fn classes_and_the_example_claim_name_our_driver_with_a_config_it_accepts() {
    let d = dra_ds();
    let driver = dra::DEFAULT_DRIVER_NAME;
    let classes: Vec<&str> = d
        .device_classes
        .iter()
        .map(|c| c.metadata.name.as_deref().unwrap())
        .collect();
    assert_eq!(
        classes,
        ["vf.sriov.rdma-hca.io", "rdma-vf.sriov.rdma-hca.io"]
    );
    for c in &d.device_classes {
        let sel = c.spec.selectors.as_ref().unwrap();
        let cel = &sel[0].cel.as_ref().unwrap().expression;
        assert!(
            cel.contains(&format!("device.driver == \"{driver}\"")),
            "{cel}"
        );
    }
    let rdma = &d.device_classes[1].spec.selectors.as_ref().unwrap()[0];
    assert!(
        rdma.cel
            .as_ref()
            .unwrap()
            .expression
            .contains(&format!("device.attributes[\"{driver}\"].rdma == true"))
    );
    assert_eq!(d.claim_templates.len(), 1);
    let spec = &d.claim_templates[0].spec.spec.devices.as_ref().unwrap();
    let req = &spec.requests.as_ref().unwrap()[0];
    let class = &req.exactly.as_ref().unwrap().device_class_name;
    assert!(classes.contains(&class.as_str()), "{class}");
    let config = &spec.config.as_ref().unwrap()[0];
    assert_eq!(config.requests.as_deref(), Some(&[req.name.clone()][..]));
    let opaque = config.opaque.as_ref().unwrap();
    assert_eq!(opaque.driver, driver);
    let vf: VfConfig = VfConfig::parse(driver, &opaque.parameters.0).unwrap();
    assert_eq!(vf.vlan, Some(100));
    let pod = &d.pods[0];
    let pod_claim = &pod.spec.as_ref().unwrap().resource_claims.as_ref().unwrap()[0];
    assert_eq!(
        pod_claim.resource_claim_template_name.as_deref(),
        d.claim_templates[0].metadata.name.as_deref()
    );
    let used = &pod.spec.as_ref().unwrap().containers[0]
        .resources
        .as_ref()
        .unwrap()
        .claims
        .as_ref()
        .unwrap()[0];
    assert_eq!(used.name, pod_claim.name);
}

#[test]
fn dra_kinds_in_the_main_directory_and_shared_kinds_in_dra_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["configmap.yaml", "daemonset.yaml"] {
        std::fs::copy(deploy_dir().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        deploy_dir().join("dra/rbac.yaml"),
        dir.path().join("rbac.yaml"),
    )
    .unwrap();
    match Deployment::load(dir.path()) {
        Err(ManifestError::Invalid {
            origin, message, ..
        }) => {
            assert!(origin.ends_with("rbac.yaml#1"), "{origin}");
            assert!(message.contains("ServiceAccount"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    for f in ["daemonset.yaml", "rbac.yaml"] {
        std::fs::copy(deploy_dir().join("dra").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        deploy_dir().join("configmap.yaml"),
        dir.path().join("configmap.yaml"),
    )
    .unwrap();
    match DraDeployment::load(dir.path()) {
        Err(ManifestError::Invalid { message, .. }) => {
            assert!(message.contains("ConfigMap"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}
