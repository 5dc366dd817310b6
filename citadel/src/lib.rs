//! Trireme citadel's certificate authority core: SPIFFE identities, CSR
//! checking and certificate signing, authentication of callers, and the
//! `IstioCertificateService` gRPC service over TLS.

pub mod auth;
pub mod authority;
pub mod csr;
pub mod identity;
pub mod keys;
pub mod server;
pub mod service;
