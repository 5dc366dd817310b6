//! JWT keys fetched from a JWKS URL (a local HTTPS server): fetched in the
//! background, refreshed, fetched again for an unknown `kid` at most once per
//! interval, last good set kept, bounded responses, and tokens refused while
//! no set could be fetched.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use citadel::auth::{AuthError, JwksRefresh, JwtAuthenticator, JwtConfig};
use support::https::{HttpsServer, JwksEndpoint};
use support::jwt::{AUDIENCE, ISSUER, Signer, authenticate, jwks};

fn config() -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        identity_claim: "sub".into(),
        trust_domain: "cluster.local".into(),
    }
}

/// Fast timings so tests finish quickly; each test overrides what it needs.
fn refresh() -> JwksRefresh {
    JwksRefresh {
        interval: Duration::from_secs(3600),
        min_refetch_interval: Duration::from_millis(300),
        timeout: Duration::from_secs(5),
        ..JwksRefresh::default()
    }
}

fn authenticator(server: &HttpsServer, url: &str, refresh: JwksRefresh) -> JwtAuthenticator {
    let source = url.parse().unwrap();
    JwtAuthenticator::from_source(config(), &source, refresh, Some(&server.ca_file)).unwrap()
}

fn rejection(outcome: Result<citadel::identity::SpiffeId, AuthError>) -> String {
    match outcome {
        Err(AuthError::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Polls until `check` holds, for at most five seconds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn keys_from_a_url_verify_tokens() {
    let signer = Signer::new("k1");
    let endpoint = JwksEndpoint::new(StatusCode::OK, jwks(&[&signer]));
    let server = endpoint.serve().await;
    let jwt = authenticator(&server, &server.url("/jwks"), refresh());
    let token = signer.token("a", "x");
    // The first request waits for the first fetch if it is still running.
    let id = authenticate(&jwt, &token).await.unwrap();
    assert_eq!(id.to_uri(), "spiffe://cluster.local/ns/a/sa/x");
    assert_eq!(endpoint.hits(), 1);
    // Further tokens use the fetched set without asking again.
    authenticate(&jwt, &signer.token("a", "y")).await.unwrap();
    assert_eq!(endpoint.hits(), 1);
}

#[tokio::test]
async fn issuer_down_at_start_rejects_until_a_fetch_succeeds() {
    let signer = Signer::new("k1");
    let endpoint = JwksEndpoint::new(StatusCode::SERVICE_UNAVAILABLE, "down".into());
    let server = endpoint.serve().await;
    // Building the authenticator never fails because the URL is down.
    let jwt = authenticator(&server, &server.url("/jwks"), refresh());
    let token = signer.token("a", "x");
    let reason = rejection(authenticate(&jwt, &token).await);
    assert!(
        reason.starts_with(&format!(
            "JWKS from {} not fetched yet: HTTP 503",
            server.url("/jwks")
        )),
        "{reason}"
    );

    endpoint.set(StatusCode::OK, jwks(&[&signer]));
    // Background retries (every min_refetch_interval while there is no set)
    // or the next request's refetch pick the keys up.
    eventually("token accepted once the issuer is up", async || {
        authenticate(&jwt, &token).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn unreachable_url_names_the_url_and_the_cause() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = JwksEndpoint::new(StatusCode::OK, String::new())
        .serve()
        .await;
    let url = format!("https://127.0.0.1:{port}/jwks");
    let jwt = authenticator(&server, &url, refresh());
    let reason = rejection(authenticate(&jwt, &Signer::new("k1").token("a", "x")).await);
    assert!(
        reason.starts_with(&format!("JWKS from {url} not fetched yet: ")),
        "{reason}"
    );
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let old = Signer::new("old");
    let new = Signer::new("new");
    let endpoint = JwksEndpoint::new(StatusCode::OK, jwks(&[&old]));
    let server = endpoint.serve().await;
    let mut timing = refresh();
    timing.min_refetch_interval = Duration::from_millis(500);
    let jwt = authenticator(&server, &server.url("/jwks"), timing);
    authenticate(&jwt, &old.token("a", "x")).await.unwrap();
    assert_eq!(endpoint.hits(), 1);

    // The issuer rotates; right after the first fetch, an unknown kid does
    // not cause another request.
    endpoint.set(StatusCode::OK, jwks(&[&old, &new]));
    let reason = rejection(authenticate(&jwt, &new.token("a", "x")).await);
    assert!(reason.contains("kid \"new\""), "{reason}");
    assert_eq!(endpoint.hits(), 1);

    tokio::time::sleep(Duration::from_millis(600)).await;
    authenticate(&jwt, &new.token("a", "x")).await.unwrap();
    assert_eq!(endpoint.hits(), 2);

    // A flood of tokens naming keys nobody has costs one fetch per interval.
    let stranger = Signer::new("stranger");
    for _ in 0..20 {
        assert!(authenticate(&jwt, &stranger.token("a", "x")).await.is_err());
    }
    assert_eq!(endpoint.hits(), 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..20 {
        assert!(authenticate(&jwt, &stranger.token("a", "x")).await.is_err());
    }
    assert_eq!(endpoint.hits(), 3);
}

#[tokio::test]
async fn refresh_replaces_keys_and_failures_keep_the_last_good_set() {
    let first = Signer::new("first");
    let second = Signer::new("second");
    let endpoint = JwksEndpoint::new(StatusCode::OK, jwks(&[&first]));
    let server = endpoint.serve().await;
    let mut timing = refresh();
    timing.interval = Duration::from_millis(100);
    // Rate-limit kid refetches far beyond the test, so only the periodic
    // refresh can change the set.
    timing.min_refetch_interval = Duration::from_secs(3600);
    let jwt = authenticator(&server, &server.url("/jwks"), timing);
    authenticate(&jwt, &first.token("a", "x")).await.unwrap();

    for (status, body) in [
        (StatusCode::INTERNAL_SERVER_ERROR, "oops".to_owned()),
        (StatusCode::OK, "not a key set".to_owned()),
        (StatusCode::OK, r#"{"keys": []}"#.to_owned()),
    ] {
        endpoint.set(status, body);
        let seen = endpoint.hits();
        eventually("a refresh happened", async || endpoint.hits() >= seen + 2).await;
        authenticate(&jwt, &first.token("a", "x")).await.unwrap();
    }

    // A good refresh replaces the set: the rotated-out key stops working.
    endpoint.set(StatusCode::OK, jwks(&[&second]));
    eventually("the new key set is in use", async || {
        authenticate(&jwt, &second.token("a", "x")).await.is_ok()
    })
    .await;
    let reason = rejection(authenticate(&jwt, &first.token("a", "x")).await);
    assert!(reason.contains("kid \"first\""), "{reason}");
}

#[tokio::test]
async fn oversized_key_set_is_refused() {
    let signer = Signer::new("k1");
    let padding = "x".repeat(64 * 1024);
    let body = format!(r#"{{"keys": [{}], "padding": "{padding}"}}"#, signer.jwk());
    let endpoint = JwksEndpoint::new(StatusCode::OK, body);
    let server = endpoint.serve().await;
    let mut timing = refresh();
    timing.max_bytes = 16 * 1024;
    let jwt = authenticator(&server, &server.url("/jwks"), timing);
    let reason = rejection(authenticate(&jwt, &signer.token("a", "x")).await);
    assert!(reason.contains("larger than 16384"), "{reason}");
}

#[tokio::test]
async fn server_not_signed_by_a_trusted_ca_is_refused() {
    let signer = Signer::new("k1");
    let endpoint = JwksEndpoint::new(StatusCode::OK, jwks(&[&signer]));
    let server = endpoint.serve().await;
    // Another server's CA: the JWKS server's certificate is not trusted.
    let other = JwksEndpoint::new(StatusCode::OK, String::new())
        .serve()
        .await;
    let jwt = authenticator(&other, &server.url("/jwks"), refresh());
    let reason = rejection(authenticate(&jwt, &signer.token("a", "x")).await);
    assert!(reason.contains("not fetched yet"), "{reason}");
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    assert_eq!(endpoint.hits(), 0);
}
