// SPDX-License-Identifier: GPL-2.0
//! Compiles kubelet's protos (proto/) into tonic clients and servers, with protox rather than
//! protoc so that the build needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/deviceplugin-v1beta1.proto",
        "proto/podresources-v1.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    let mut config = prost_build::Config::new();
    config.service_generator(tonic_build::configure().service_generator());
    config.compile_fds(descriptors)?;
    Ok(())
}
