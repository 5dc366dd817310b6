//! Generates the certificate service from `protos/` with a vendored `protoc`,
//! so that building needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["protos/istio/v1/auth/ca.proto"], &["protos"])?;
    println!("cargo:rerun-if-changed=protos");
    Ok(())
}
