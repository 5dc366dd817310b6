//! Authentication of certificate requests: each [`Authenticator`] tries to
//! prove the caller's SPIFFE identity from the request metadata or the TLS
//! client certificate; a [`AuthenticatorChain`] tries them in order and the
//! first that recognises a credential decides.
//!
//! Bearer tokens are shared between two authenticators: the offline JWT one
//! claims only tokens whose (unverified) `iss` is its issuer and passes every
//! other token on, so a Kubernetes service-account token reaches TokenReview.

use std::sync::Arc;

use tonic::metadata::MetadataMap;

use crate::identity::SpiffeId;

mod client_cert;
mod jwks;
mod jwt;
mod kube_api;
mod token_review;

pub use client_cert::ClientCertAuthenticator;
pub use jwks::{JwksRefresh, JwksSource, KeySet, RemoteJwks};
pub use jwt::{JwtAuthenticator, JwtConfig, JwtError};
pub use kube_api::{
    ApiServerOrigin, IN_CLUSTER_CA_FILE, IN_CLUSTER_TOKEN_FILE, KubeApiConfig,
    KubeApiTokenReviewer, in_cluster_api_server,
};
pub use token_review::{
    ReviewError, TokenReviewAuthenticator, TokenReviewStatus, TokenReviewUser, TokenReviewer,
};

/// Tokens are small (a projected service-account token is about 1 KiB); a
/// bigger one is hostile or a mistake, and is not worth decoding or sending on.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

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
    /// Every authenticator passed: the request carried nothing any of them
    /// takes (no client certificate, no token, or a token of an unknown issuer).
    #[error("no authenticator accepted the request's credentials (tried: {})", .tried.join(", "))]
    NotAccepted { tried: Vec<&'static str> },
}

/// Proves an identity from one kind of credential.
#[tonic::async_trait]
pub trait Authenticator: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The kind and its configuration, for the startup log.
    fn describe(&self) -> String {
        self.kind().to_owned()
    }
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

    /// Each authenticator with its configuration, in order.
    pub fn describe(&self) -> Vec<String> {
        self.authenticators.iter().map(|a| a.describe()).collect()
    }

    pub async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        for authenticator in &self.authenticators {
            match authenticator.authenticate(credentials).await {
                Err(AuthError::NoCredential(_)) => continue,
                outcome => return outcome,
            }
        }
        Err(AuthError::NotAccepted {
            tried: self.kinds(),
        })
    }
}

/// The token of an `authorization: Bearer <token>` header. A missing header,
/// or one of another scheme, is no credential of `kind`; an oversized token
/// is rejected before anyone decodes or forwards it.
pub(crate) fn bearer_token<'a>(
    kind: &'static str,
    metadata: &'a MetadataMap,
) -> Result<&'a str, AuthError> {
    let token = metadata
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(AuthError::NoCredential(kind))?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Rejected {
            kind,
            reason: format!("bearer token longer than {MAX_TOKEN_BYTES} bytes"),
        });
    }
    Ok(token)
}

/// The identity named by a Kubernetes service-account user name,
/// `system:serviceaccount:<namespace>:<name>`. `what` names where the value
/// came from, for the error.
pub(crate) fn service_account_identity(
    trust_domain: &str,
    what: &str,
    value: &str,
) -> Result<SpiffeId, String> {
    let (namespace, service_account) = value
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| {
            format!("{what} {value:?} is not system:serviceaccount:<namespace>:<name>")
        })?;
    SpiffeId::new(trust_domain, namespace, service_account)
        .map_err(|error| format!("{what} {value:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(authorization: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(value) = authorization {
            metadata.insert("authorization", value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn bearer_token_takes_only_bearer_headers_of_bounded_size() {
        assert_eq!(
            bearer_token("T", &metadata(Some("Bearer abc"))).unwrap(),
            "abc"
        );
        for absent in [None, Some("Basic abc"), Some("bearer")] {
            assert!(matches!(
                bearer_token("T", &metadata(absent)),
                Err(AuthError::NoCredential("T"))
            ));
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(
            bearer_token("T", &metadata(Some(&huge))),
            Err(AuthError::Rejected { kind: "T", .. })
        ));
    }

    #[test]
    fn service_account_names_map_to_spiffe_ids() {
        let id = service_account_identity("td", "sub", "system:serviceaccount:ns:sa").unwrap();
        assert_eq!(id.to_uri(), "spiffe://td/ns/ns/sa/sa");
        for bad in [
            "system:serviceaccount:ns",
            "system:serviceaccount:ns:sa:extra",
            "system:serviceaccount::sa",
            "system:node:worker-1",
            "alice",
        ] {
            let error = service_account_identity("td", "sub", bad).unwrap_err();
            assert!(error.contains(&format!("sub {bad:?}")), "{error}");
        }
    }

    struct Fixed(Result<&'static str, fn() -> AuthError>);

    #[tonic::async_trait]
    impl Authenticator for Fixed {
        fn kind(&self) -> &'static str {
            "fixed"
        }
        async fn authenticate(&self, _: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
            match &self.0 {
                Ok(uri) => Ok(uri.parse().unwrap()),
                Err(error) => Err(error()),
            }
        }
    }

    #[tokio::test]
    async fn chain_skips_authenticators_without_a_credential_and_stops_at_a_decision() {
        let metadata = MetadataMap::new();
        let credentials = Credentials {
            metadata: &metadata,
            peer_certs: &[],
        };
        let pass = || AuthError::NoCredential("fixed");
        let reject = || AuthError::Rejected {
            kind: "fixed",
            reason: "no".into(),
        };
        let id = "spiffe://td/ns/a/sa/x";
        let chain = |items: Vec<Fixed>| {
            AuthenticatorChain::new(
                items
                    .into_iter()
                    .map(|a| Arc::new(a) as Arc<dyn Authenticator>)
                    .collect(),
            )
        };

        let accepted = chain(vec![Fixed(Err(pass)), Fixed(Ok(id))]);
        assert_eq!(
            accepted.authenticate(&credentials).await.unwrap().to_uri(),
            id
        );

        let rejected = chain(vec![Fixed(Err(reject)), Fixed(Ok(id))]);
        assert!(matches!(
            rejected.authenticate(&credentials).await,
            Err(AuthError::Rejected { .. })
        ));

        let nobody = chain(vec![Fixed(Err(pass)), Fixed(Err(pass))]);
        let error = nobody.authenticate(&credentials).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "no authenticator accepted the request's credentials (tried: fixed, fixed)"
        );
    }
}
