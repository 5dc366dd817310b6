//! IstioCertificateService end to end: an in-process TLS gRPC server on a
//! loopback port and a tonic client, authenticating with JWTs (keys from a
//! file or a URL), Kubernetes TokenReview (a stand-in API server) and client
//! certificates, in the order citadel chains them.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use citadel::auth::{
    Authenticator, AuthenticatorChain, ClientCertAuthenticator, JwksRefresh, JwtAuthenticator,
    JwtConfig, KubeApiTokenReviewer, TokenReviewAuthenticator,
};
use citadel::authority::{Authority, RootKey, SigningPolicy};
use citadel::server::{GrpcServer, SERVING_CERT_TTL, ServingTls};
use citadel::service::{CertificateService, CitadelMetrics};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use trireme_proto::istio::v1::auth::IstioCertificateRequest;
use trireme_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;

const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "istio-ca";

struct TestCa {
    dir: tempfile::TempDir,
    authority: Arc<Authority>,
    addr: SocketAddr,
    jwt_key: KeyPair,
    metrics_text: Arc<prometheus_client::registry::Registry>,
}

fn token_signer(key: &KeyPair) -> EncodingKey {
    EncodingKey::from_ec_der(&key.serialize_der())
}

fn jwks(key: &KeyPair) -> String {
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "test", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]})
    .to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(key: &KeyPair, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("test".into());
    jsonwebtoken::encode(&header, &claims, &token_signer(key)).unwrap()
}

fn token(key: &KeyPair, ns: &str, sa: &str) -> String {
    token_with(
        key,
        serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "iat": now(),
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        }),
    )
}

fn id(ns: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
}

fn jwt_config() -> JwtConfig {
    JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        identity_claim: "sub".into(),
        trust_domain: "cluster.local".into(),
    }
}

/// citadel with the client-certificate authenticator first, as in main.rs,
/// then a JWT authenticator with a JWKS file of `jwt_key`.
async fn start_ca() -> TestCa {
    start_ca_with(|dir, jwt_key| {
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks(jwt_key)).unwrap();
        let jwt = JwtAuthenticator::from_jwks_file(jwt_config(), &jwks_path).unwrap();
        vec![Arc::new(jwt)]
    })
    .await
}

/// citadel with the client-certificate authenticator followed by those
/// `authenticators` makes, given a scratch directory and the JWT signing key.
async fn start_ca_with(
    authenticators: impl FnOnce(&Path, &KeyPair) -> Vec<Arc<dyn Authenticator>>,
) -> TestCa {
    let dir = tempfile::tempdir().unwrap();
    let authority = Arc::new(
        Authority::load_or_create(
            &dir.path().join("ca"),
            "Test",
            RootKey::GenerateEcdsaP256,
            SigningPolicy::default(),
        )
        .unwrap(),
    );
    let jwt_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let client_cert = ClientCertAuthenticator::from_roots_pem(authority.root_cert_pem()).unwrap();
    let mut chain: Vec<Arc<dyn Authenticator>> = vec![Arc::new(client_cert)];
    chain.extend(authenticators(dir.path(), &jwt_key));
    let chain = AuthenticatorChain::new(chain);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = CitadelMetrics::register(&mut registry);
    let service = CertificateService::new(authority.clone(), chain, metrics);
    let tls = ServingTls::new(&authority, vec!["localhost".to_owned()], SERVING_CERT_TTL).unwrap();
    let tls = Arc::new(tls);
    let server = GrpcServer::bind("127.0.0.1:0".parse().unwrap(), tls)
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(service, std::future::pending()));
    TestCa {
        dir,
        authority,
        addr,
        jwt_key,
        metrics_text: Arc::new(registry),
    }
}

impl TestCa {
    async fn client(&self, identity: Option<Identity>) -> IstioCertificateServiceClient<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.authority.root_cert_pem()))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let channel = Channel::from_shared(format!("https://{}", self.addr))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        IstioCertificateServiceClient::new(channel)
    }

    async fn request(
        &self,
        bearer: Option<&str>,
        identity: Option<Identity>,
        csr: &str,
        validity_duration: i64,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.to_owned(),
            validity_duration,
            metadata: None,
        });
        if let Some(token) = bearer {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        self.client(identity)
            .await
            .create_certificate(request)
            .await
            .map(|response| response.into_inner().cert_chain)
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A CSR for `uri` and the key that made it.
fn csr_with_key(uri: &str) -> (String, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    (params.serialize_request(&key).unwrap().pem().unwrap(), key)
}

#[tokio::test]
async fn jwt_gets_a_chain_that_openssl_verifies() {
    let ca = start_ca().await;
    let token = token(&ca.jwt_key, "default", "reviews");
    let csr = support::p256_csr(&[support::WORKLOAD_ID]);
    let chain = ca.request(Some(&token), None, &csr, 3600).await.unwrap();
    assert_eq!(chain.last().unwrap(), ca.authority.root_cert_pem());
    let root = support::write(ca.dir(), "root.pem", ca.authority.root_cert_pem());
    let verified = support::openssl_verify(ca.dir(), &root, &chain);
    assert!(verified.contains("OK"), "{verified}");
    let leaf = support::write(ca.dir(), "issued.pem", &chain[0]);
    let text = support::openssl(ca.dir(), &["x509", "-in", &leaf, "-noout", "-text"]);
    assert!(text.contains(support::WORKLOAD_ID), "{text}");

    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &ca.metrics_text).unwrap();
    assert!(metrics.contains("citadel_server_csr_count 1"), "{metrics}");
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count 1"),
        "{metrics}"
    );
    assert!(metrics.contains("citadel_server_root_cert_expiry_timestamp "));
}

#[tokio::test]
async fn without_credentials_is_unauthenticated() {
    let ca = start_ca().await;
    let csr = support::p256_csr(&[support::WORKLOAD_ID]);
    let status = ca.request(None, None, &csr, 0).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let ca = start_ca().await;
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sub = "system:serviceaccount:default:reviews";
    let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({"iss": iss, "aud": aud, "exp": exp, "sub": sub});
    let cases = [
        (
            "expired",
            token_with(&ca.jwt_key, claims(ISSUER, AUDIENCE, now() - 3600)),
        ),
        (
            "wrong issuer",
            token_with(
                &ca.jwt_key,
                claims("https://evil.test", AUDIENCE, now() + 600),
            ),
        ),
        (
            "wrong audience",
            token_with(&ca.jwt_key, claims(ISSUER, "other", now() + 600)),
        ),
        (
            "wrongly signed",
            token_with(&other_key, claims(ISSUER, AUDIENCE, now() + 600)),
        ),
        ("not a JWT", "garbage".to_owned()),
    ];
    let csr = support::p256_csr(&[support::WORKLOAD_ID]);
    for (case, token) in cases {
        let status = ca.request(Some(&token), None, &csr, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }
}

/// A token for ns/a/sa/x gets a certificate for exactly that identity:
/// asking for ns/a/sa/y or ns/b/sa/x is PERMISSION_DENIED.
async fn assert_only_a_x(ca: &TestCa, token: &str) {
    for other in [id("a", "y"), id("b", "x")] {
        let csr = support::p256_csr(&[&other]);
        let status = ca.request(Some(token), None, &csr, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{other}: {status:?}");
    }
    let csr = support::p256_csr(&[&id("a", "x")]);
    let chain = ca.request(Some(token), None, &csr, 0).await.unwrap();
    let leaf = support::write(ca.dir(), "a-x.pem", &chain[0]);
    let text = support::openssl(
        ca.dir(),
        &["x509", "-in", &leaf, "-noout", "-ext", "subjectAltName"],
    );
    assert!(text.contains(&format!("URI:{}", id("a", "x"))), "{text}");
}

#[tokio::test]
async fn token_cannot_get_another_identity() {
    let ca = start_ca().await;
    let token = token(&ca.jwt_key, "a", "x");
    assert_only_a_x(&ca, &token).await;
}

#[tokio::test]
async fn garbage_csr_and_excessive_ttl_are_invalid_arguments() {
    let ca = start_ca().await;
    let token = token(&ca.jwt_key, "default", "reviews");
    let status = ca
        .request(Some(&token), None, "not a csr", 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("PEM"), "{status:?}");

    let csr = support::p256_csr(&[support::WORKLOAD_ID]);
    let year = 365 * 24 * 3600;
    let status = ca
        .request(Some(&token), None, &csr, year)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("exceeds the maximum"),
        "{status:?}"
    );

    let huge = "A".repeat(128 * 1024);
    let status = ca.request(Some(&token), None, &huge, 0).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
}

#[tokio::test]
async fn renewal_with_client_certificate() {
    let ca = start_ca().await;
    let token = token(&ca.jwt_key, "default", "reviews");
    let (csr, key) = csr_with_key(support::WORKLOAD_ID);
    let chain = ca.request(Some(&token), None, &csr, 0).await.unwrap();
    let identity = Identity::from_pem(chain.concat(), key.serialize_pem());

    let (renewal_csr, _) = csr_with_key(support::WORKLOAD_ID);
    let renewed = ca
        .request(None, Some(identity.clone()), &renewal_csr, 0)
        .await
        .unwrap();
    assert_ne!(renewed[0], chain[0]);

    // The certificate proves only its own identity.
    let (other_csr, _) = csr_with_key(&id("default", "ratings"));
    let status = ca
        .request(None, Some(identity), &other_csr, 0)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let ca = start_ca().await;
    let other_dir = tempfile::tempdir().unwrap();
    let other = Authority::load_or_create(
        other_dir.path(),
        "Other",
        RootKey::GenerateEcdsaP256,
        SigningPolicy::default(),
    )
    .unwrap();
    let (csr, key) = csr_with_key(support::WORKLOAD_ID);
    let verified = citadel::csr::VerifiedCsr::from_pem(csr.as_bytes()).unwrap();
    let foreign_chain = other
        .sign(&verified, &support::WORKLOAD_ID.parse().unwrap(), None)
        .unwrap();
    let identity = Identity::from_pem(foreign_chain.concat(), key.serialize_pem());
    let (renewal_csr, _) = csr_with_key(support::WORKLOAD_ID);
    // Refused during the TLS handshake or by the authenticator; never signed.
    let outcome = ca.request(None, Some(identity), &renewal_csr, 0).await;
    assert!(
        outcome.is_err(),
        "a foreign client certificate got {outcome:?}"
    );
}

/// An RS256 token verified against an RSA JWK made with openssl.
#[tokio::test]
async fn rs256_tokens_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    support::openssl_rsa_key(dir.path(), "jwt.key", 2048);
    support::openssl(
        dir.path(),
        &[
            "rsa",
            "-in",
            "jwt.key",
            "-traditional",
            "-outform",
            "DER",
            "-out",
            "jwt.der",
        ],
    );
    let modulus_hex =
        support::openssl(dir.path(), &["rsa", "-in", "jwt.key", "-noout", "-modulus"]);
    let modulus_hex = modulus_hex.trim().trim_start_matches("Modulus=");
    let modulus: Vec<u8> = (0..modulus_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&modulus_hex[i..i + 2], 16).unwrap())
        .collect();
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "kid": "rsa", "alg": "RS256", "use": "sig",
        "n": URL_SAFE_NO_PAD.encode(&modulus), "e": "AQAB",
    }]});
    let config = JwtConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        identity_claim: "sub".into(),
        trust_domain: "cluster.local".into(),
    };
    let authenticator = JwtAuthenticator::from_jwks_json(config, &jwks.to_string()).unwrap();
    let signer = EncodingKey::from_rsa_der(&std::fs::read(dir.path().join("jwt.der")).unwrap());
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".into());
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600,
        "sub": "system:serviceaccount:ns1:sa1",
    });
    let token = jsonwebtoken::encode(&header, &claims, &signer).unwrap();
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let credentials = citadel::auth::Credentials {
        metadata: &metadata,
        peer_certs: &[],
    };
    let identity = authenticator.authenticate(&credentials).await.unwrap();
    assert_eq!(identity.to_uri(), id("ns1", "sa1"));

    // The same token with its algorithm switched to ES256 finds no key.
    let mut tampered = tonic::metadata::MetadataMap::new();
    let es_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"rsa"}"#);
    let rest = token.split_once('.').unwrap().1;
    tampered.insert(
        "authorization",
        format!("Bearer {es_header}.{rest}").parse().unwrap(),
    );
    let credentials = citadel::auth::Credentials {
        metadata: &tampered,
        peer_certs: &[],
    };
    assert!(authenticator.authenticate(&credentials).await.is_err());
}

/// Tokens of each bad kind, for `ISSUER`, `AUDIENCE` and ns/a/sa/x unless
/// the case says otherwise.
fn bad_tokens(key: &KeyPair, issuer: &str) -> Vec<(&'static str, String)> {
    let other_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let sub = "system:serviceaccount:a:x";
    let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({"iss": iss, "aud": aud, "exp": exp, "iat": now(), "sub": sub});
    vec![
        (
            "expired",
            token_with(key, claims(issuer, AUDIENCE, now() - 3600)),
        ),
        (
            "wrongly signed",
            token_with(&other_key, claims(issuer, AUDIENCE, now() + 600)),
        ),
        (
            "wrong audience",
            token_with(key, claims(issuer, "other", now() + 600)),
        ),
        (
            "wrong issuer",
            token_with(key, claims("https://evil.test", AUDIENCE, now() + 600)),
        ),
    ]
}

async fn assert_unauthenticated(ca: &TestCa, tokens: Vec<(&'static str, String)>) {
    let csr = support::p256_csr(&[&id("a", "x")]);
    for (case, token) in tokens {
        let status = ca.request(Some(&token), None, &csr, 0).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{case}: {status:?}");
    }
}

#[tokio::test]
async fn jwks_url_tokens_get_certificates_and_bad_ones_do_not() {
    let endpoint = support::https::JwksEndpoint::new(axum::http::StatusCode::OK, String::new());
    let server = endpoint.serve().await;
    let url = server.url("/jwks");
    let ca = start_ca_with(|_, jwt_key| {
        endpoint.set(axum::http::StatusCode::OK, jwks(jwt_key));
        let source = url.parse().unwrap();
        let jwt = JwtAuthenticator::from_source(
            jwt_config(),
            &source,
            JwksRefresh::default(),
            Some(&server.ca_file),
        )
        .unwrap();
        vec![Arc::new(jwt)]
    })
    .await;
    let good = token(&ca.jwt_key, "a", "x");
    assert_only_a_x(&ca, &good).await;
    assert_unauthenticated(&ca, bad_tokens(&ca.jwt_key, ISSUER)).await;
    assert_eq!(endpoint.hits(), 1, "one fetch served every request");
}

/// The full chain of main.rs: client certificate, JWT of our issuer, then
/// TokenReview, which gets the Kubernetes tokens the JWT authenticator passes on.
#[tokio::test]
async fn kubernetes_tokens_are_reviewed_by_the_api_server() {
    let api = support::kube::FakeApiServer::start().await;
    let ca = start_ca_with(|dir, jwt_key| {
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks(jwt_key)).unwrap();
        let jwt = JwtAuthenticator::from_jwks_file(jwt_config(), &jwks_path).unwrap();
        let reviewer = KubeApiTokenReviewer::new(&api.config()).unwrap();
        let review = TokenReviewAuthenticator::new(
            Arc::new(reviewer),
            AUDIENCE.into(),
            "cluster.local".into(),
        );
        vec![Arc::new(jwt), Arc::new(review)]
    })
    .await;

    let kube_token = api.token("a", "x", AUDIENCE, now() + 600);
    assert_only_a_x(&ca, &kube_token).await;
    let reviewed = api.recorded().len();
    assert_eq!(reviewed, 3, "each request reviewed");

    let mut bad = bad_tokens(&api.signer.key, support::kube::KUBE_ISSUER);
    bad.push((
        "API server refuses citadel",
        support::kube::FORBIDDEN_TOKEN.into(),
    ));
    assert_unauthenticated(&ca, bad).await;

    // Tokens of the JWT issuer are still verified offline, never sent to the
    // API server.
    let reviewed = api.recorded().len();
    let csr = support::p256_csr(&[&id("a", "x")]);
    let jwt = token(&ca.jwt_key, "a", "x");
    ca.request(Some(&jwt), None, &csr, 0).await.unwrap();
    assert_eq!(api.recorded().len(), reviewed);
}

/// Without TCP_NODELAY on the server's sockets every answer waits for the
/// client's delayed ACK, at least 40 ms on Linux; the fastest of a few
/// requests on one connection shows it even on a busy machine.
#[tokio::test]
async fn answers_without_waiting_for_a_delayed_ack() {
    let ca = start_ca().await;
    let bearer = format!("Bearer {}", token(&ca.jwt_key, "default", "reviews"));
    let csr = support::p256_csr(&[support::WORKLOAD_ID]);
    let mut client = ca.client(None).await;
    let mut fastest = Duration::MAX;
    for _ in 0..10 {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 3600,
            metadata: None,
        });
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        let started = Instant::now();
        client.create_certificate(request).await.unwrap();
        fastest = fastest.min(started.elapsed());
    }
    assert!(fastest < Duration::from_millis(35), "fastest {fastest:?}");
}
