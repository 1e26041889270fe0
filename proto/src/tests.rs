//! Wire-level checks that our .proto copies match kubelet's: gRPC paths and field numbers.

use crate::deviceplugin::v1beta1 as dp;
use crate::pluginregistration as pr;
use crate::podresources::v1 as podres;
use prost::Message;

/// The full gRPC path of a generated service method, read from the generated code's
/// `NamedService` name plus method name as tonic routes it.
fn path(service: &str, method: &str) -> String {
    format!("/{service}/{method}")
}

#[test]
fn service_names_are_kubelets() {
    use tonic::server::NamedService;
    assert_eq!(
        <dp::registration_server::RegistrationServer<Reg> as NamedService>::NAME,
        "v1beta1.Registration"
    );
    assert_eq!(
        <dp::device_plugin_server::DevicePluginServer<Dp> as NamedService>::NAME,
        "v1beta1.DevicePlugin"
    );
    assert_eq!(
        <pr::registration_server::RegistrationServer<Pw> as NamedService>::NAME,
        "pluginregistration.Registration"
    );
    assert_eq!(
        <podres::pod_resources_lister_server::PodResourcesListerServer<Pl> as NamedService>::NAME,
        "v1.PodResourcesLister"
    );
}

/// Every method path kubelet uses must appear verbatim in the generated client code.
#[test]
fn method_paths_are_kubelets() {
    let generated = [
        include_str!(concat!(env!("OUT_DIR"), "/v1beta1.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/pluginregistration.rs")),
        include_str!(concat!(env!("OUT_DIR"), "/v1.rs")),
    ]
    .concat();
    for (svc, method) in [
        ("v1beta1.Registration", "Register"),
        ("v1beta1.DevicePlugin", "GetDevicePluginOptions"),
        ("v1beta1.DevicePlugin", "ListAndWatch"),
        ("v1beta1.DevicePlugin", "GetPreferredAllocation"),
        ("v1beta1.DevicePlugin", "Allocate"),
        ("v1beta1.DevicePlugin", "PreStartContainer"),
        ("pluginregistration.Registration", "GetInfo"),
        (
            "pluginregistration.Registration",
            "NotifyRegistrationStatus",
        ),
        ("v1.PodResourcesLister", "List"),
        ("v1.PodResourcesLister", "GetAllocatableResources"),
        ("v1.PodResourcesLister", "Get"),
    ] {
        let p = path(svc, method);
        assert!(
            generated.contains(&format!("\"{p}\"")),
            "{p} not in generated code"
        );
    }
}

/// First byte of a length-delimited field: (number << 3) | 2.
fn ld_tag(field: u8) -> u8 {
    (field << 3) | 2
}

#[test]
fn cdi_devices_is_field_5_of_container_allocate_response() {
    let msg = dp::ContainerAllocateResponse {
        cdi_devices: vec![dp::CdiDevice {
            name: "nvidia.com/net=vf0".into(),
        }],
        ..Default::default()
    };
    let buf = msg.encode_to_vec();
    assert_eq!(buf[0], ld_tag(5));
    // Nested CDIDevice.name is field 1.
    assert_eq!(buf[2], ld_tag(1));
    assert_eq!(dp::ContainerAllocateResponse::decode(&*buf).unwrap(), msg);
}

#[test]
fn register_request_field_numbers() {
    let msg = dp::RegisterRequest {
        version: String::new(),
        endpoint: String::new(),
        resource_name: "rdma/hca".into(),
        options: Some(dp::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }),
    };
    let buf = msg.encode_to_vec();
    // resource_name = 3, then options = 4 holding get_preferred_allocation_available = 2 (varint).
    assert_eq!(buf[0], ld_tag(3));
    let opts_at = 2 + buf[1] as usize;
    assert_eq!(&buf[opts_at..], &[ld_tag(4), 2, 2 << 3, 1]);
}

#[test]
fn device_topology_and_numa_id_field_numbers() {
    let msg = dp::Device {
        id: String::new(),
        health: String::new(),
        topology: Some(dp::TopologyInfo {
            nodes: vec![dp::NumaNode { id: 1 }],
        }),
    };
    // topology = 3 { nodes = 1 { ID = 1 (varint) } }
    assert_eq!(
        msg.encode_to_vec(),
        vec![ld_tag(3), 4, ld_tag(1), 2, 1 << 3, 1]
    );
}

#[test]
fn preferred_allocation_field_numbers() {
    let msg = dp::ContainerPreferredAllocationRequest {
        available_device_i_ds: vec![],
        must_include_device_i_ds: vec!["a".into()],
        allocation_size: 2,
    };
    assert_eq!(msg.encode_to_vec(), vec![ld_tag(2), 1, b'a', 3 << 3, 2]);
}

#[test]
fn plugin_info_and_pod_resources_field_numbers() {
    let info = pr::PluginInfo {
        r#type: String::new(),
        name: String::new(),
        endpoint: String::new(),
        supported_versions: vec!["v1beta1".into()],
    };
    assert_eq!(info.encode_to_vec()[0], ld_tag(4));

    let dev = podres::ContainerDevices {
        resource_name: String::new(),
        device_ids: vec!["0000:3b:00.2".into()],
        topology: None,
    };
    assert_eq!(dev.encode_to_vec()[0], ld_tag(2));
    let c = podres::ContainerResources {
        dynamic_resources: vec![podres::DynamicResource::default()],
        ..Default::default()
    };
    assert_eq!(c.encode_to_vec(), vec![ld_tag(5), 0]);
}

// Minimal service impls only to name the generated server types.
struct Reg;
#[tonic::async_trait]
impl dp::registration_server::Registration for Reg {
    async fn register(
        &self,
        _: tonic::Request<dp::RegisterRequest>,
    ) -> Result<tonic::Response<dp::Empty>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}
struct Dp;
#[tonic::async_trait]
impl dp::device_plugin_server::DevicePlugin for Dp {
    type ListAndWatchStream = tokio_stream::Empty<Result<dp::ListAndWatchResponse, tonic::Status>>;
    async fn get_device_plugin_options(
        &self,
        _: tonic::Request<dp::Empty>,
    ) -> Result<tonic::Response<dp::DevicePluginOptions>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_and_watch(
        &self,
        _: tonic::Request<dp::Empty>,
    ) -> Result<tonic::Response<Self::ListAndWatchStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_preferred_allocation(
        &self,
        _: tonic::Request<dp::PreferredAllocationRequest>,
    ) -> Result<tonic::Response<dp::PreferredAllocationResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn allocate(
        &self,
        _: tonic::Request<dp::AllocateRequest>,
    ) -> Result<tonic::Response<dp::AllocateResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn pre_start_container(
        &self,
        _: tonic::Request<dp::PreStartContainerRequest>,
    ) -> Result<tonic::Response<dp::PreStartContainerResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}
struct Pw;
#[tonic::async_trait]
impl pr::registration_server::Registration for Pw {
    async fn get_info(
        &self,
        _: tonic::Request<pr::InfoRequest>,
    ) -> Result<tonic::Response<pr::PluginInfo>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn notify_registration_status(
        &self,
        _: tonic::Request<pr::RegistrationStatus>,
    ) -> Result<tonic::Response<pr::RegistrationStatusResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}
struct Pl;
#[tonic::async_trait]
impl podres::pod_resources_lister_server::PodResourcesLister for Pl {
    async fn list(
        &self,
        _: tonic::Request<podres::ListPodResourcesRequest>,
    ) -> Result<tonic::Response<podres::ListPodResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_allocatable_resources(
        &self,
        _: tonic::Request<podres::AllocatableResourcesRequest>,
    ) -> Result<tonic::Response<podres::AllocatableResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get(
        &self,
        _: tonic::Request<podres::GetPodResourcesRequest>,
    ) -> Result<tonic::Response<podres::GetPodResourcesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}

/// The DRA service paths the kubelet calls, for both packages, and the names it lists in
/// `supported_versions` (`<last package component>.DRAPlugin`).
#[test]
fn dra_method_paths_are_kubelets() {
    use crate::dra;
    let generated = [
        include_str!(concat!(
            env!("OUT_DIR"),
            "/k8s.io.kubelet.pkg.apis.dra.v1.rs"
        )),
        include_str!(concat!(
            env!("OUT_DIR"),
            "/k8s.io.kubelet.pkg.apis.dra.v1beta1.rs"
        )),
    ]
    .concat();
    for pkg in ["v1", "v1beta1"] {
        for method in ["NodePrepareResources", "NodeUnprepareResources"] {
            let p = format!("/k8s.io.kubelet.pkg.apis.dra.{pkg}.DRAPlugin/{method}");
            assert!(generated.contains(&format!("\"{p}\"")), "{p} not generated");
        }
    }
    assert_eq!(
        dra::SUPPORTED_SERVICES,
        ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
    );
}

/// Field numbers of the DRA messages, checked on the wire.
#[test]
fn dra_field_numbers() {
    use crate::dra::v1 as d;
    let c = d::Claim {
        namespace: "n".into(),
        uid: "u".into(),
        name: "m".into(),
    };
    assert_eq!(
        c.encode_to_vec(),
        [ld_tag(1), 1, b'n', ld_tag(2), 1, b'u', ld_tag(3), 1, b'm']
    );
    let dev = d::Device {
        request_names: vec!["r".into()],
        pool_name: "p".into(),
        device_name: "x".into(),
        cdi_device_ids: vec!["a/b=c".into()],
    };
    let b = dev.encode_to_vec();
    assert_eq!(&b[..6], [ld_tag(1), 1, b'r', ld_tag(2), 1, b'p']);
    assert_eq!(&b[6..9], [ld_tag(3), 1, b'x']);
    assert_eq!(&b[9..11], [ld_tag(4), 5]);
    let r = d::NodePrepareResourceResponse {
        devices: vec![],
        error: "e".into(),
    };
    assert_eq!(r.encode_to_vec(), [ld_tag(2), 1, b'e']);
    let u = d::NodeUnprepareResourceResponse { error: "e".into() };
    assert_eq!(u.encode_to_vec(), [ld_tag(1), 1, b'e']);
}
