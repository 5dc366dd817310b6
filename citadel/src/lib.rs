//! Trireme citadel's certificate authority core: SPIFFE identities, CSR
//! checking and certificate signing, with no transport attached.

pub mod authority;
pub mod csr;
pub mod identity;
