//! Compiles kubelet's .proto files with protox (no system protoc needed).

use std::error::Error;

const PROTOS: [&str; 5] = [
    "deviceplugin/v1beta1/api.proto",
    "pluginregistration/v1/api.proto",
    "podresources/v1/api.proto",
    "dra/v1/api.proto",
    "dra/v1beta1/api.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    for p in PROTOS {
        // Neither protox nor tonic-prost-build prints these.
        println!("cargo:rerun-if-changed=proto/{p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
