//! Kubernetes service-account tokens, checked by asking the API server
//! (a TokenReview) rather than offline: the API server knows its own signing
//! keys and whether the token's pod and service account still exist.
//!
//! The decision lives in [`TokenReviewAuthenticator`]; the API call sits
//! behind [`TokenReviewer`] so the decision is tested without a cluster.

use std::sync::Arc;

use serde::Deserialize;

use super::{AuthError, Authenticator, Credentials, bearer_token, service_account_identity};
use crate::identity::SpiffeId;

const KIND: &str = "Kubernetes TokenReview";

/// The part of a TokenReview's `status` citadel reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenReviewStatus {
    #[serde(default)]
    pub authenticated: bool,
    #[serde(default)]
    pub user: TokenReviewUser,
    /// The audiences the token is valid for, out of those asked; absent when
    /// the API server does not report them.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenReviewUser {
    #[serde(default)]
    pub username: String,
}

/// Why a review could not be obtained (as opposed to a review saying no).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("TokenReview request to {url} failed: {reason}")]
    Request { url: String, reason: String },
    #[error("API server answered HTTP {status} to the TokenReview: {reason}")]
    Status { status: u16, reason: String },
    #[error("TokenReview response unreadable: {0}")]
    Response(String),
    #[error("reading citadel's own service-account token {path}: {reason}")]
    CallerToken { path: String, reason: String },
}

/// Asks whoever can tell (the Kubernetes API server) whether `token` is
/// valid for one of `audiences`.
#[tonic::async_trait]
pub trait TokenReviewer: Send + Sync {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, ReviewError>;
}

/// Accepts a bearer token when the API server says it authenticates a
/// service account for our audience; the identity is that service account.
/// Every bearer token is claimed, so this goes last in the chain.
pub struct TokenReviewAuthenticator {
    reviewer: Arc<dyn TokenReviewer>,
    /// Which API server and why, for the startup log.
    description: String,
    /// Requested in each review, and required in the answer's audiences.
    audience: String,
    trust_domain: String,
}

impl TokenReviewAuthenticator {
    pub fn new(reviewer: Arc<dyn TokenReviewer>, audience: String, trust_domain: String) -> Self {
        Self {
            reviewer,
            description: String::new(),
            audience,
            trust_domain,
        }
    }

    /// Adds where reviews go to [`Authenticator::describe`].
    pub fn described_as(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The identity a review proves, or why it proves none.
    fn decide(&self, status: &TokenReviewStatus) -> Result<SpiffeId, String> {
        if let Some(error) = status.error.as_deref().filter(|e| !e.is_empty()) {
            return Err(format!("API server: {error}"));
        }
        if !status.authenticated {
            return Err("API server did not authenticate the token".into());
        }
        if let Some(audiences) = &status.audiences
            && !audiences.contains(&self.audience)
        {
            return Err(format!(
                "token is valid for audiences {audiences:?}, not {:?}",
                self.audience
            ));
        }
        service_account_identity(&self.trust_domain, "username", &status.user.username)
    }
}

#[tonic::async_trait]
impl Authenticator for TokenReviewAuthenticator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn describe(&self) -> String {
        format!("{KIND} (audience {}; {})", self.audience, self.description)
    }

    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        let token = bearer_token(KIND, credentials.metadata)?;
        let rejected = |reason: String| AuthError::Rejected { kind: KIND, reason };
        // Nothing is cached: each request is reviewed, so an API server error
        // or a deleted service account is never remembered as a success.
        let status = self
            .reviewer
            .review(token, std::slice::from_ref(&self.audience))
            .await
            .map_err(|error| rejected(error.to_string()))?;
        self.decide(&status).map_err(rejected)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tonic::metadata::MetadataMap;

    use super::*;

    /// Answers every review with a fixed outcome and records what it was asked.
    struct FakeReviewer {
        answer: fn() -> Result<TokenReviewStatus, ReviewError>,
        asked: Mutex<Vec<(String, Vec<String>)>>,
    }

    #[tonic::async_trait]
    impl TokenReviewer for FakeReviewer {
        async fn review(
            &self,
            token: &str,
            audiences: &[String],
        ) -> Result<TokenReviewStatus, ReviewError> {
            self.asked
                .lock()
                .unwrap()
                .push((token.to_owned(), audiences.to_vec()));
            (self.answer)()
        }
    }

    fn authenticated(username: &str, audiences: Option<&[&str]>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: true,
            user: TokenReviewUser {
                username: username.into(),
            },
            audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
            error: None,
        }
    }

    async fn run(
        answer: fn() -> Result<TokenReviewStatus, ReviewError>,
        authorization: Option<&str>,
    ) -> (Result<SpiffeId, AuthError>, Vec<(String, Vec<String>)>) {
        let reviewer = Arc::new(FakeReviewer {
            answer,
            asked: Mutex::default(),
        });
        let authenticator = TokenReviewAuthenticator::new(
            reviewer.clone(),
            "istio-ca".into(),
            "cluster.local".into(),
        );
        let mut metadata = MetadataMap::new();
        if let Some(value) = authorization {
            metadata.insert("authorization", value.parse().unwrap());
        }
        let credentials = Credentials {
            metadata: &metadata,
            peer_certs: &[],
        };
        let outcome = authenticator.authenticate(&credentials).await;
        let asked = reviewer.asked.lock().unwrap().clone();
        (outcome, asked)
    }

    fn reason(outcome: Result<SpiffeId, AuthError>) -> String {
        match outcome {
            Err(AuthError::Rejected { kind: KIND, reason }) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn authenticated_service_account_is_the_identity() {
        let (outcome, asked) = run(
            || {
                Ok(authenticated(
                    "system:serviceaccount:a:x",
                    Some(&["istio-ca"]),
                ))
            },
            Some("Bearer k8s-token"),
        )
        .await;
        assert_eq!(
            outcome.unwrap().to_uri(),
            "spiffe://cluster.local/ns/a/sa/x"
        );
        assert_eq!(
            asked,
            vec![("k8s-token".to_owned(), vec!["istio-ca".to_owned()])]
        );

        // An API server that does not report audiences checked the requested
        // one itself.
        let (outcome, _) = run(
            || Ok(authenticated("system:serviceaccount:a:x", None)),
            Some("Bearer k8s-token"),
        )
        .await;
        assert!(outcome.is_ok());
    }

    #[tokio::test]
    async fn no_token_is_no_credential_and_asks_nobody() {
        let (outcome, asked) = run(|| panic!("must not be asked"), None).await;
        assert!(matches!(outcome, Err(AuthError::NoCredential(KIND))));
        assert!(asked.is_empty());
    }

    #[tokio::test]
    async fn unauthenticated_with_error_is_rejected_with_it() {
        let (outcome, _) = run(
            || {
                Ok(TokenReviewStatus {
                    error: Some("token has expired".into()),
                    ..TokenReviewStatus::default()
                })
            },
            Some("Bearer t"),
        )
        .await;
        assert_eq!(reason(outcome), "API server: token has expired");

        let (outcome, _) = run(|| Ok(TokenReviewStatus::default()), Some("Bearer t")).await;
        assert!(reason(outcome).contains("did not authenticate"));

        // An error wins even over `authenticated: true`.
        let (outcome, _) = run(
            || {
                Ok(TokenReviewStatus {
                    error: Some("webhook failed".into()),
                    ..authenticated("system:serviceaccount:a:x", None)
                })
            },
            Some("Bearer t"),
        )
        .await;
        assert!(reason(outcome).contains("webhook failed"));
    }

    #[tokio::test]
    async fn wrong_audience_is_rejected() {
        let other = || {
            Ok(authenticated(
                "system:serviceaccount:a:x",
                Some(&["https://kubernetes.default.svc"]),
            ))
        };
        let none = || Ok(authenticated("system:serviceaccount:a:x", Some(&[])));
        for answer in [other as fn() -> _, none] {
            let (outcome, _) = run(answer, Some("Bearer t")).await;
            let reason = reason(outcome);
            assert!(reason.contains("not \"istio-ca\""), "{reason}");
        }
    }

    #[tokio::test]
    async fn users_that_are_not_service_accounts_are_rejected() {
        let (outcome, _) = run(
            || Ok(authenticated("system:node:worker-1", Some(&["istio-ca"]))),
            Some("Bearer t"),
        )
        .await;
        assert!(reason(outcome).contains("not system:serviceaccount:"));

        let (outcome, _) = run(
            || Ok(authenticated("alice@example.com", None)),
            Some("Bearer t"),
        )
        .await;
        assert!(reason(outcome).contains("username \"alice@example.com\""));
    }

    #[tokio::test]
    async fn malformed_service_account_names_are_rejected() {
        let (outcome, _) = run(
            || Ok(authenticated("system:serviceaccount:ns-only", None)),
            Some("Bearer t"),
        )
        .await;
        assert!(reason(outcome).contains("not system:serviceaccount:<namespace>:<name>"));

        let (outcome, _) = run(
            || Ok(authenticated("system:serviceaccount:a:x:y", None)),
            Some("Bearer t"),
        )
        .await;
        assert!(reason(outcome).contains("invalid service account"));

        let (outcome, _) = run(
            || Ok(authenticated("system:serviceaccount:Bad_NS:x", None)),
            Some("Bearer t"),
        )
        .await;
        assert!(reason(outcome).contains("invalid namespace"));
    }

    #[tokio::test]
    async fn review_failures_are_rejections_naming_the_cause() {
        let (outcome, _) = run(
            || {
                Err(ReviewError::Status {
                    status: 403,
                    reason: "tokenreviews.authentication.k8s.io is forbidden".into(),
                })
            },
            Some("Bearer t"),
        )
        .await;
        let reason = reason(outcome);
        assert!(reason.contains("HTTP 403"), "{reason}");
        assert!(reason.contains("forbidden"), "{reason}");
    }
}
