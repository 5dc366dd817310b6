//! Authentication of certificate requests: each [`Authenticator`] tries to
//! prove the caller's SPIFFE identity from the request metadata or the TLS
//! client certificate; a [`AuthenticatorChain`] tries them in order and the
//! first that recognises a credential decides.

use std::sync::Arc;

use tonic::metadata::MetadataMap;

use crate::identity::SpiffeId;

mod client_cert;
mod jwt;

pub use client_cert::ClientCertAuthenticator;
pub use jwt::{JwtAuthenticator, JwtConfig, JwtError};

/// What an authenticator sees of a request.
pub struct Credentials<'a> {
    pub metadata: &'a MetadataMap,
    /// The peer's TLS certificate chain, leaf first, DER; empty without one.
    pub peer_certs: &'a [Vec<u8>],
}

/// Why a request could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// This authenticator found no credential of its kind; the next one may.
    #[error("no {0} credential")]
    NoCredential(&'static str),
    #[error("{kind} credential rejected: {reason}")]
    Rejected { kind: &'static str, reason: String },
}

/// Proves an identity from one kind of credential. Kubernetes TokenReview
/// would be one more implementation of this trait.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync {
    fn kind(&self) -> &'static str;
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError>;
}

/// Tries authenticators in order; the first one that finds its kind of
/// credential decides, whether it accepts or rejects it.
#[derive(Clone, Default)]
pub struct AuthenticatorChain {
    authenticators: Vec<Arc<dyn Authenticator>>,
}

impl AuthenticatorChain {
    pub fn new(authenticators: Vec<Arc<dyn Authenticator>>) -> Self {
        Self { authenticators }
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.authenticators.iter().map(|a| a.kind()).collect()
    }

    pub async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        for authenticator in &self.authenticators {
            match authenticator.authenticate(credentials).await {
                Err(AuthError::NoCredential(_)) => continue,
                outcome => return outcome,
            }
        }
        Err(AuthError::NoCredential("any"))
    }
}
