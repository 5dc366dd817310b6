//! TokenReview against a stand-in API server over HTTPS: what
//! `KubeApiTokenReviewer` sends (path, citadel's own bearer token, JSON body),
//! how it reads answers and errors, and the authenticator's decisions on
//! good, expired, wrongly signed, wrong-audience and wrong-issuer tokens.

mod support;

use std::sync::Arc;

use citadel::auth::{
    AuthError, KubeApiConfig, KubeApiTokenReviewer, ReviewError, TokenReviewAuthenticator,
    TokenReviewer,
};
use serde_json::json;
use support::jwt::{AUDIENCE, Signer, authenticate, claims, now};
use support::kube::{
    BROKEN_TOKEN, FORBIDDEN_TOKEN, FakeApiServer, KUBE_ISSUER, LYING_TOKEN, TOKEN_REVIEWS,
};

fn audiences() -> Vec<String> {
    vec![AUDIENCE.to_owned()]
}

fn authenticator(api: &FakeApiServer) -> TokenReviewAuthenticator {
    let reviewer = KubeApiTokenReviewer::new(&api.config()).unwrap();
    TokenReviewAuthenticator::new(Arc::new(reviewer), AUDIENCE.into(), "cluster.local".into())
}

#[tokio::test]
async fn posts_a_token_review_as_citadel_and_reads_the_status() {
    let api = FakeApiServer::start().await;
    let reviewer = KubeApiTokenReviewer::new(&api.config()).unwrap();
    let token = api.token("a", "x", AUDIENCE, now() + 600);
    let status = reviewer.review(&token, &audiences()).await.unwrap();
    assert!(status.authenticated, "{status:?}");
    assert_eq!(status.user.username, "system:serviceaccount:a:x");
    assert_eq!(status.audiences, Some(audiences()));
    assert_eq!(status.error, None);

    let recorded = api.recorded();
    assert_eq!(recorded.len(), 1);
    let request = &recorded[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, TOKEN_REVIEWS);
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer citadel-token-1")
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.body,
        json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]},
        })
    );
}

#[tokio::test]
async fn rereads_its_own_rotated_token() {
    let api = FakeApiServer::start().await;
    let reviewer = KubeApiTokenReviewer::new(&api.config()).unwrap();
    let token = api.token("a", "x", AUDIENCE, now() + 600);
    reviewer.review(&token, &audiences()).await.unwrap();
    api.set_caller_token("citadel-token-2");
    reviewer.review(&token, &audiences()).await.unwrap();
    let bearers: Vec<_> = api
        .recorded()
        .into_iter()
        .map(|r| r.authorization.unwrap())
        .collect();
    assert_eq!(
        bearers,
        ["Bearer citadel-token-1", "Bearer citadel-token-2"]
    );
}

#[tokio::test]
async fn api_server_errors_carry_status_and_message() {
    let api = FakeApiServer::start().await;
    let reviewer = KubeApiTokenReviewer::new(&api.config()).unwrap();
    match reviewer.review(FORBIDDEN_TOKEN, &audiences()).await {
        Err(ReviewError::Status { status, reason }) => {
            assert_eq!(status, 403);
            assert!(reason.contains("cannot create resource"), "{reason}");
        }
        other => panic!("expected HTTP 403, got {other:?}"),
    }
    match reviewer.review(BROKEN_TOKEN, &audiences()).await {
        Err(ReviewError::Status { status, reason }) => {
            assert_eq!((status, reason.as_str()), (500, "etcd is on fire"));
        }
        other => panic!("expected HTTP 500, got {other:?}"),
    }

    // citadel's own token refused by the API server.
    std::fs::write(&api.token_file, "stale").unwrap();
    let token = api.token("a", "x", AUDIENCE, now() + 600);
    match reviewer.review(&token, &audiences()).await {
        Err(ReviewError::Status { status: 401, .. }) => {}
        other => panic!("expected HTTP 401, got {other:?}"),
    }
}

#[tokio::test]
async fn api_server_errors_never_authenticate() {
    let api = FakeApiServer::start().await;
    let authenticator = authenticator(&api);
    // Each request is reviewed anew: a failure is never remembered as
    // anything, let alone a success.
    for token in [FORBIDDEN_TOKEN, BROKEN_TOKEN, FORBIDDEN_TOKEN] {
        match authenticate(&authenticator, token).await {
            Err(AuthError::Rejected { reason, .. }) => {
                assert!(reason.contains("HTTP"), "{reason}")
            }
            other => panic!("{token}: expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(api.recorded().len(), 3);
}

#[tokio::test]
async fn missing_own_token_and_untrusted_api_server_are_errors() {
    let api = FakeApiServer::start().await;
    let mut config = api.config();
    config.token_file = api.token_file.with_file_name("absent");
    let reviewer = KubeApiTokenReviewer::new(&config).unwrap();
    let error = reviewer.review("t", &audiences()).await.unwrap_err();
    assert!(matches!(error, ReviewError::CallerToken { .. }), "{error}");
    assert!(error.to_string().contains("absent"), "{error}");
    assert!(api.recorded().is_empty(), "nothing sent without a token");

    // Trusting another CA than the API server's.
    let other = FakeApiServer::start().await;
    let config = KubeApiConfig {
        ca_file: other.server.ca_file.clone(),
        ..api.config()
    };
    let reviewer = KubeApiTokenReviewer::new(&config).unwrap();
    let error = reviewer.review("t", &audiences()).await.unwrap_err();
    assert!(matches!(error, ReviewError::Request { .. }), "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
}

#[tokio::test]
async fn good_service_account_token_proves_its_identity() {
    let api = FakeApiServer::start().await;
    let authenticator = authenticator(&api);
    let token = api.token("a", "x", AUDIENCE, now() + 600);
    let id = authenticate(&authenticator, &token).await.unwrap();
    assert_eq!(id.to_uri(), "spiffe://cluster.local/ns/a/sa/x");
}

#[tokio::test]
async fn bad_service_account_tokens_are_rejected() {
    let api = FakeApiServer::start().await;
    let authenticator = authenticator(&api);
    let stranger = Signer::new("kube");
    let cases = [
        ("expired", api.token("a", "x", AUDIENCE, now() - 60)),
        (
            "wrongly signed",
            stranger.token_with(claims(KUBE_ISSUER, AUDIENCE, now() + 600, "a", "x")),
        ),
        (
            "wrong audience",
            api.token("a", "x", "https://kubernetes.default.svc", now() + 600),
        ),
        (
            "wrong issuer",
            api.signer
                .token_with(claims("https://evil.test", AUDIENCE, now() + 600, "a", "x")),
        ),
        ("not a token", "garbage".to_owned()),
    ];
    for (case, token) in cases {
        match authenticate(&authenticator, &token).await {
            Err(AuthError::Rejected { reason, .. }) => {
                assert!(reason.starts_with("API server: "), "{case}: {reason}")
            }
            other => panic!("{case}: expected a rejection, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_answer_for_another_audience_is_rejected() {
    let api = FakeApiServer::start().await;
    let authenticator = authenticator(&api);
    match authenticate(&authenticator, LYING_TOKEN).await {
        Err(AuthError::Rejected { reason, .. }) => {
            assert!(reason.contains("not \"istio-ca\""), "{reason}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
