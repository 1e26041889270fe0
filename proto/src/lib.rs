//! The kubelet's gRPC APIs that device plugins and their tests speak, compiled from our
//! copies of kubelet's `.proto` files (in `proto/`) without a system `protoc`:
//!
//! - [`deviceplugin::v1beta1`]: `Registration` (served by the kubelet on
//!   [`KUBELET_SOCKET`]) and `DevicePlugin` (served by each plugin on its own socket).
//! - [`pluginregistration`]: the plugin-watcher `Registration` service a plugin serves in
//!   [`PLUGINS_REGISTRY_PATH`] instead of calling `Register`.
//! - [`podresources::v1`]: `PodResourcesLister`, served by the kubelet on
//!   [`POD_RESOURCES_SOCKET`].
//! - [`dra::v1`], [`dra::v1beta1`]: `DRAPlugin`, served by a DRA driver's kubelet plugin
//!   (`k8s.io/kubelet/pkg/apis/dra/v1`, protobuf package `k8s.io.kubelet.pkg.apis.dra.v1`).
//!
//! Package, service, message and field names and numbers are exactly kubelet's, so the
//! gRPC paths are too (`/v1beta1.Registration/Register`, `/v1beta1.DevicePlugin/Allocate`,
//! `/pluginregistration.Registration/GetInfo`, `/v1.PodResourcesLister/List`,
//! `/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources`).
//!
//! [`unix`] holds the small helpers for gRPC over unix sockets (client channel, server
//! with bounded shutdown); [`h2front`] the connection layer in front of h2 that lets every
//! gRPC client in, whatever `:authority` it sends.

pub mod h2front;
pub mod unix;

/// Kubelet's device-plugin API.
pub mod deviceplugin {
    /// `k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1` (protobuf package `v1beta1`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");
    }
}

/// `k8s.io/kubelet/pkg/apis/pluginregistration/v1` (protobuf package `pluginregistration`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");
}

/// Kubelet's pod-resources API.
pub mod podresources {
    /// `k8s.io/kubelet/pkg/apis/podresources/v1` (protobuf package `v1`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("v1");
    }
}

/// Kubelet's DRA plugin API.
pub mod dra {
    /// `k8s.io/kubelet/pkg/apis/dra/v1` (protobuf package `k8s.io.kubelet.pkg.apis.dra.v1`).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
    }
    /// `k8s.io/kubelet/pkg/apis/dra/v1beta1` (same messages as v1, older package).
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1beta1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
    }

    /// `PluginInfo.type` of a DRA kubelet plugin.
    pub const PLUGIN_TYPE: &str = "DRAPlugin";
    /// `supported_versions` entry of the v1 service (kubelet's `DRAPluginService`).
    pub const V1_SERVICE: &str = "v1.DRAPlugin";
    /// `supported_versions` entry of the v1beta1 service.
    pub const V1BETA1_SERVICE: &str = "v1beta1.DRAPlugin";
    /// What a plugin serving both lists, most recent first: the kubelet picks the first
    /// one it knows (1.34 knows both, 1.32-1.33 only v1beta1).
    pub const SUPPORTED_SERVICES: [&str; 2] = [V1_SERVICE, V1BETA1_SERVICE];
    /// Where kubelet plugins keep their own sockets (`<dir>/<driver>/dra.sock`).
    pub const KUBELET_PLUGINS_DIR: &str = "/var/lib/kubelet/plugins";
    /// File name of a DRA plugin's service socket in its plugin dir.
    pub const DRA_SOCKET_NAME: &str = "dra.sock";
}

/// Device-plugin API version a plugin puts in `RegisterRequest.version`.
pub const VERSION: &str = "v1beta1";

/// Device-plugin API versions this crate speaks (`PluginInfo.supported_versions`).
pub const SUPPORTED_VERSIONS: [&str; 1] = [VERSION];

/// File name of the kubelet's registration socket inside the device-plugin directory.
pub const KUBELET_SOCKET_NAME: &str = "kubelet.sock";

/// The kubelet's default device-plugin directory (trailing slash as kubelet has it).
pub const DEVICE_PLUGIN_PATH: &str = "/var/lib/kubelet/device-plugins/";

/// The kubelet's default registration socket: [`DEVICE_PLUGIN_PATH`] + [`KUBELET_SOCKET_NAME`].
pub const KUBELET_SOCKET: &str = "/var/lib/kubelet/device-plugins/kubelet.sock";

/// The directory the kubelet plugin watcher watches for plugin sockets.
pub const PLUGINS_REGISTRY_PATH: &str = "/var/lib/kubelet/plugins_registry";

/// The kubelet's default pod-resources directory.
pub const POD_RESOURCES_PATH: &str = "/var/lib/kubelet/pod-resources";

/// The kubelet's default pod-resources socket.
pub const POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// `Device.health` of a usable device.
pub const HEALTHY: &str = "Healthy";

/// `Device.health` of a device that must not be allocated.
pub const UNHEALTHY: &str = "Unhealthy";

/// `PluginInfo.type` of a device plugin (the plugin watcher's `DevicePlugin`).
pub const DEVICE_PLUGIN_TYPE: &str = "DevicePlugin";

#[cfg(test)]
mod tests;
