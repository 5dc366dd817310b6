//! The kind of key citadel's self-signed root is made with. Key generation
//! itself (RSA through the `rsa` crate, which `ring` cannot do) lives in
//! `workload-identity`, shared with every workload that requests a
//! certificate.

pub use workload_identity::keys::{KeyError, RsaKeySize, generate_rsa_pkcs8_pem};

/// The kind of key a self-signed root is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaKeyType {
    /// ECDSA P-256: small certificates and the cheapest signatures.
    Ecdsa,
    /// RSA of `--ca-rsa-key-size` bits, for peers that only trust RSA roots.
    Rsa,
}
