//! The Kubernetes manifests of `deploy/`, and the typed, strict reader the tests use to
//! hold them to the code they deploy.
//!
//! # What is in `deploy/`
//!
//! | file | objects |
//! | --- | --- |
//! | `daemonset.yaml` | DaemonSet `kube-system/sriov-rdma-device-plugin`, hostNetwork: init container `install-cni` copies `/usr/bin/sriov` to the host's `/opt/cni/bin/sriov` (copy to a temporary name, then rename) and links `ib-sriov` to it the same way; container `device-plugin` serves the VF pools of `config.json` (and sweeps device-info files through pod-resources); container `rdma-shared` serves `rdma/hca` from `rdma-shared.json` (one file holds one format) |
//! | `configmap.yaml` | ConfigMap `sriov-rdma-device-plugin-config`, mounted at `/etc/pcidp`: the two files the daemons read plus examples of k8s-rdma-sriov-dev-plugin's `mode` format, each explained in YAML comments |
//! | `networks.yaml` | NetworkAttachmentDefinitions: `sriov-net` (VF pool `intel.com/mlnx_sriov_rdma`, host-local IPAM), `sriov-vlan100` (same pool, VLAN 100), `macvlan-conf` (the seed notes' macvlan network) |
//! | `pods.yaml` | example pods: `rdma-hca-pod` (`rdma/hca: 1`, IPC_LOCK, default network only), `sriov-pod` (one VF as `net1`), `rdma-sriov-pod` (both, plus macvlan as `net2`) |
//! | `dra/daemonset.yaml` | the DaemonSet above with container `device-plugin` also a DRA driver (`--dra`, driver `sriov.rdma-hca.io`, `NODE_NAME` from `spec.nodeName`, the kubelet's plugins dir and `/var/run/cdi` mounted), run as ServiceAccount `sriov-rdma-dra`; apply instead of `daemonset.yaml` on Kubernetes 1.34+ |
//! | `dra/rbac.yaml` | ServiceAccount, ClusterRole and binding `sriov-rdma-dra`: ResourceSlices list/create/update/delete, ResourceClaims get (the verbs the driver calls) |
//! | `dra/deviceclass.yaml` | DeviceClasses `vf.sriov.rdma-hca.io` (every VF the driver offers) and `rdma-vf.sriov.rdma-hca.io` (those with an RDMA device) |
//! | `dra/claim.yaml` | example: ResourceClaimTemplate `rdma-vf-vlan100` (one RDMA VF, opaque `VfConfig` VLAN 100) and pod `dra-rdma-vf-pod` using it |
//! | `Containerfile` | multi-stage build: static musl binaries, Debian's static busybox, a `scratch` runtime image |
//! | `config/` | sample daemon config files, one per format (owned by the device plugin) |
//!
//! # How strict the reader is
//! Each YAML document is deserialised into its k8s-openapi type (Kubernetes 1.34 API) or
//! our [`NetworkAttachmentDefinition`]. k8s-openapi skips unknown fields, as the API
//! server does, so a typo such as `hostNetwrok` would deploy and silently do nothing;
//! [`deserialize_strict`] tracks every skipped field with `serde_ignored` and rejects the
//! document, naming the field's path. The JSON configs inside them are read by the
//! parsers of the programs that read them in production, so the manifests are held to
//! one model of each contract: the ConfigMap's files by the daemon's
//! [`device_plugin::config::Config::parse`] ([`device_plugin_config`], which also
//! refuses any key the daemon would ignore), `type: sriov` NAD configs by the plugin's
//! [`sriov_cni::config::NetConf::parse`] ([`NetConf`], which also refuses keys the plugin
//! would skip). [`Deployment`] holds the objects of a directory by kind and answers which
//! containers run the daemon and which ConfigMap key each one reads; [`DraDeployment`]
//! holds those of `dra/`.

mod cni;
mod deployment;
mod error;
mod manifest;
mod strict;

pub use cni::{
    HostLocalIpam, Ipam, MacvlanNetConf, NetConf, NetworkSelection, Route, SRIOV_NAD_KEYS,
    SriovNetConf, parse_networks_annotation,
};
pub use deployment::{DAEMON_COMMAND, Deployment, DraDeployment, device_plugin_config};
pub use error::ManifestError;
pub use manifest::{
    Document, NETWORKS_ANNOTATION, NadSpec, NetworkAttachmentDefinition, Object,
    RESOURCE_NAME_ANNOTATION, load_dir, load_file, manifest_files, parse_documents,
};
pub use strict::{deserialize_strict, from_json_strict};

/// The daemon's crate, whose config types [`Deployment::config`] returns.
pub use device_plugin;
/// The Kubernetes API types the manifests are read into (1.33).
pub use k8s_openapi;
/// The CNI plugin's crate, whose config type [`SriovNetConf`] holds.
pub use sriov_cni;

/// The daemon's default `--device-plugin-path` (kubelet's device-plugin directory).
pub const DEFAULT_DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins/";
/// Kubelet's plugin-watcher directory.
pub const PLUGINS_REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// The daemon's default `--config-file`.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/pcidp/config.json";
/// Where the daemon writes device-info files (Network Plumbing WG device-info spec).
pub const DEVINFO_DP_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo/dp";
/// Kubelet's pod-resources socket, which the daemon asks which devices are still
/// allocated (to remove the other devices' device-info files).
pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// Name of the CNI binary, which is also the `type` of its network configs.
pub const CNI_BINARY: &str = "sriov";
/// Its second name on the host (a symlink to [`CNI_BINARY`]), the `type` ib-sriov-cni's
/// network configs use. The binary behaves the same under both names.
pub const CNI_BINARY_IB: &str = "ib-sriov";
/// Where CNI runtimes look for plugin binaries.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";

/// The value of `flag` in a container's args (`--flag=value` or `--flag value`).
pub fn arg_value(c: &k8s_openapi::api::core::v1::Container, flag: &str) -> Option<String> {
    let args = c.args.as_deref().unwrap_or_default();
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix(flag) {
            Some(v) if v.starts_with('=') => Some(v[1..].to_owned()),
            Some("") => args.get(i + 1).cloned(),
            _ => None,
        })
}

/// The `deploy/` directory of this checkout.
pub fn deploy_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
