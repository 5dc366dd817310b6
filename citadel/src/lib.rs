//! Trireme citadel's certificate authority core: SPIFFE identities, CSR
//! checking and certificate signing, authentication of callers (with the
//! HTTPS client that fetches key sets and asks the Kubernetes API server), the
//! in-cluster root kept in the `istio-ca-secret` Secret, and the
//! `IstioCertificateService` gRPC service over TLS.

pub mod auth;
pub mod authority;
pub mod csr;
pub mod http_client;
pub mod identity;
pub mod keys;
pub mod kube_ca;
pub mod reload;
pub mod rotation;
pub mod server;
pub mod service;
pub mod trust_bundle;
