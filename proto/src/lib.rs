//! Protobuf and gRPC types shared by Trireme's services.
//!
//! - [`envoy`]: Envoy's xDS API, from the `envoy-types` crate (not re-vendored).
//! - [`istio::v1::auth`]: the certificate signing service, wire-compatible with
//!   Istio's `istio.v1.auth.IstioCertificateService`.

pub use envoy_types as envoy;

pub mod json;

pub mod istio {
    pub mod v1 {
        pub mod auth {
            tonic::include_proto!("istio.v1.auth");
        }
    }
}

/// Fully qualified gRPC path of the certificate signing method, as Istio names it.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
