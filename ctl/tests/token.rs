//! `trireme token keygen` and `mint` run as the built binary; citadel's
//! JwtAuthenticator, given the JWKS keygen wrote, accepts the minted token
//! and refuses tokens for another audience or issuer, expired ones, and ones
//! signed by another key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use citadel::auth::{AuthError, Authenticator, Credentials, JwtAuthenticator, JwtConfig};
use citadel::identity::SpiffeId;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

const ISSUER: &str = "https://trireme.local";

fn trireme(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(args)
        .output()
        .unwrap()
}

fn succeed(args: &[&str]) -> String {
    let output = trireme(args);
    assert!(
        output.status.success(),
        "trireme {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The error text of a trireme run that must fail.
fn fail(args: &[&str]) -> String {
    let output = trireme(args);
    assert!(!output.status.success(), "trireme {args:?} succeeded");
    String::from_utf8(output.stderr).unwrap()
}

fn keygen(dir: &Path, name: &str) -> (String, String) {
    let key = dir.join(format!("{name}.key")).display().to_string();
    let jwks = dir.join(format!("{name}.jwks")).display().to_string();
    succeed(&["token", "keygen", "--key-out", &key, "--jwks-out", &jwks]);
    (key, jwks)
}

fn mint(key: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "mint",
        "--key",
        key,
        "--namespace",
        "a",
        "--service-account",
        "x",
    ];
    if !extra.contains(&"--issuer") {
        args.extend(["--issuer", ISSUER]);
    }
    args.extend(extra);
    succeed(&args).trim().to_owned()
}

fn citadel_jwt(jwks: &str) -> JwtAuthenticator {
    let config = JwtConfig {
        issuer: ISSUER.into(),
        audience: "istio-ca".into(),
        identity_claim: "sub".into(),
        trust_domain: "cluster.local".into(),
    };
    JwtAuthenticator::from_jwks_file(config, Path::new(jwks)).unwrap()
}

async fn authenticate(jwt: &JwtAuthenticator, token: &str) -> Result<SpiffeId, AuthError> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let credentials = Credentials {
        metadata: &metadata,
        peer_certs: &[],
    };
    jwt.authenticate(&credentials).await
}

fn payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn minted_token_is_accepted_by_citadel() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keygen(dir.path(), "dev");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the signing key is private");
    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");

    let set: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
    let jwk = &set["keys"][0];
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
    for (field, value) in [
        ("kty", "EC"),
        ("crv", "P-256"),
        ("alg", "ES256"),
        ("use", "sig"),
    ] {
        assert_eq!(jwk[field], value, "{field}");
    }
    assert!(jwk.get("d").is_none(), "no private part in the JWKS");

    let token = mint(&key, &["--ttl", "10m"]);
    let claims = payload(&token);
    assert_eq!(claims["sub"], "system:serviceaccount:a:x");
    assert_eq!(claims["aud"], "istio-ca");
    assert_eq!(claims["kubernetes.io"]["namespace"], "a");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "x");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );

    let jwt = citadel_jwt(&jwks);
    let id = authenticate(&jwt, &token).await.unwrap();
    assert_eq!(id.to_uri(), "spiffe://cluster.local/ns/a/sa/x");

    // An explicit kid must match on both sides.
    let (named_key, named_jwks) = (
        dir.path().join("named.key").display().to_string(),
        dir.path().join("named.jwks").display().to_string(),
    );
    succeed(&[
        "token",
        "keygen",
        "--key-out",
        &named_key,
        "--jwks-out",
        &named_jwks,
        "--kid",
        "dev-1",
    ]);
    let named = citadel_jwt(&named_jwks);
    assert!(
        authenticate(&named, &mint(&named_key, &["--kid", "dev-1"]))
            .await
            .is_ok()
    );
    assert!(authenticate(&named, &mint(&named_key, &[])).await.is_err());
}

#[tokio::test]
async fn tokens_for_another_audience_or_issuer_expired_or_foreign_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, jwks) = keygen(dir.path(), "dev");
    let (other_key, _) = keygen(dir.path(), "other");
    let jwt = citadel_jwt(&jwks);

    let wrong_audience = mint(&key, &["--audience", "someone-else"]);
    match authenticate(&jwt, &wrong_audience).await {
        Err(AuthError::Rejected { reason, .. }) => {
            assert!(reason.contains("InvalidAudience"), "{reason}")
        }
        other => panic!("wrong audience: {other:?}"),
    }

    // Another issuer's token is not this authenticator's to judge.
    let wrong_issuer = mint(&key, &["--issuer", "https://elsewhere"]);
    assert!(matches!(
        authenticate(&jwt, &wrong_issuer).await,
        Err(AuthError::NoCredential(_))
    ));

    // Signed by another key, though the header names ours.
    let dev_kid = jsonwebtoken::decode_header(&mint(&key, &[]))
        .unwrap()
        .kid
        .unwrap();
    let foreign = mint(&other_key, &["--kid", &dev_kid]);
    match authenticate(&jwt, &foreign).await {
        Err(AuthError::Rejected { reason, .. }) => {
            assert!(reason.contains("InvalidSignature"), "{reason}")
        }
        other => panic!("foreign key: {other:?}"),
    }

    // The CLI refuses to mint an expired token, so craft one with the key.
    let pem = pem::parse(std::fs::read(&key).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(dev_kid);
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": "istio-ca", "sub": "system:serviceaccount:a:x",
        "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600,
    });
    let expired =
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pem.contents())).unwrap();
    match authenticate(&jwt, &expired).await {
        Err(AuthError::Rejected { reason, .. }) => {
            assert!(reason.contains("ExpiredSignature"), "{reason}")
        }
        other => panic!("expired: {other:?}"),
    }
}

#[test]
fn errors_name_the_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.key").display().to_string();
    let error = fail(&[
        "token",
        "mint",
        "--key",
        &missing,
        "--issuer",
        ISSUER,
        "-n",
        "a",
        "--service-account",
        "x",
    ]);
    assert!(
        error.contains("--key") && error.contains("missing.key"),
        "{error}"
    );

    let (key, jwks) = keygen(dir.path(), "dev");
    let error = fail(&[
        "token",
        "mint",
        "--key",
        &jwks,
        "--issuer",
        ISSUER,
        "-n",
        "a",
        "--service-account",
        "x",
    ]);
    assert!(error.contains("not a PEM file"), "{error}");

    let error = fail(&[
        "token",
        "mint",
        "--key",
        &key,
        "--issuer",
        ISSUER,
        "-n",
        "A",
        "--service-account",
        "x",
    ]);
    assert!(error.contains("--namespace \"A\""), "{error}");

    for ttl in ["0s", "-1h"] {
        let error = fail(&[
            "token",
            "mint",
            "--key",
            &key,
            "--issuer",
            ISSUER,
            "-n",
            "a",
            "--service-account",
            "x",
            &format!("--ttl={ttl}"),
        ]);
        assert!(error.contains("--ttl"), "{ttl}: {error}");
    }

    // keygen keeps an existing key unless told otherwise.
    let before = std::fs::read(&key).unwrap();
    let error = fail(&["token", "keygen", "--key-out", &key, "--jwks-out", &jwks]);
    assert!(
        error.contains("--key-out") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    succeed(&[
        "token",
        "keygen",
        "--key-out",
        &key,
        "--jwks-out",
        &jwks,
        "--force",
    ]);
    assert_ne!(std::fs::read(&key).unwrap(), before);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
