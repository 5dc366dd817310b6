//! Generates the certificate service from `protos/` with a vendored `protoc`
//! (no system protobuf compiler needed), and makes Envoy's API descriptors
//! (shipped inside the `envoy-types` crate) available for proto3 JSON output.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe { std::env::set_var("PROTOC", protoc) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["protos/istio/v1/auth/ca.proto"], &["protos"])?;
    println!("cargo:rerun-if-changed=protos");

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = envoy_types_descriptors()
        .ok_or("cannot find envoy-types' src/generated/types.bin in the cargo registry")?;
    std::fs::copy(&descriptors, out_dir.join("envoy_descriptors.bin"))?;
    println!("cargo:rerun-if-changed={}", descriptors.display());
    Ok(())
}

/// The descriptor set envoy-types was generated with, found next to its
/// sources in the cargo registry (the crate does not export it).
fn envoy_types_descriptors() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))?;
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(Result::ok)
        .flat_map(|index| std::fs::read_dir(index.path()).into_iter().flatten())
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("envoy-types-0.7."))
        })
        .map(|dir| dir.join("src/generated/types.bin"))
        .filter(|file| file.exists())
        .collect();
    // The newest 0.7.x, which is what Cargo.lock resolves to.
    candidates.sort_by_key(|path| patch_version(path));
    candidates.pop()
}

fn patch_version(types_bin: &Path) -> u32 {
    types_bin
        .ancestors()
        .nth(3)
        .and_then(|dir| dir.file_name()?.to_str()?.rsplit('.').next()?.parse().ok())
        .unwrap_or(0)
}
