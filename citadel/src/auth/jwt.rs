//! JWTs from a configured issuer, verified offline against a JWKS read from
//! a file or fetched from a URL (see [`super::jwks`]). Issuer, audience,
//! expiry and not-before are checked; the identity comes from one claim.
//!
//! The authenticator claims only tokens whose unverified `iss` is its issuer.
//! Anything else — another issuer's token, or a bearer token that is not a
//! JWT at all — is no credential of this kind, so a Kubernetes token falls
//! through to TokenReview; with nothing after it the chain answers that no
//! authenticator accepted the request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Validation, decode, decode_header};

use super::jwks::{JwksRefresh, JwksSource, KeySet, RemoteJwks};
use super::{AuthError, Authenticator, Credentials, bearer_token, service_account_identity};
use crate::http_client::{self, TrustRoots};
use crate::identity::SpiffeId;

const KIND: &str = "JWT";
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Why the JWT authenticator could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("reading JWKS {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JWKS {path} is not a valid key set: {reason}")]
    InvalidJwks { path: String, reason: String },
    #[error("HTTP client for JWKS {url}: {reason}")]
    HttpClient { url: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    /// Claim holding `system:serviceaccount:<ns>:<sa>`.
    pub identity_claim: String,
    pub trust_domain: String,
}

/// Where the verification keys come from.
enum Keys {
    /// Read once, from a file or given inline.
    Fixed(Arc<KeySet>),
    Remote(Arc<RemoteJwks>),
}

pub struct JwtAuthenticator {
    config: JwtConfig,
    keys: Keys,
}

impl JwtAuthenticator {
    pub fn from_jwks_file(config: JwtConfig, path: &Path) -> Result<Self, JwtError> {
        let text = std::fs::read(path).map_err(|source| JwtError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let keys = KeySet::from_json(&text).map_err(|reason| JwtError::InvalidJwks {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(Self::from_key_set(config, keys))
    }

    pub fn from_jwks_json(config: JwtConfig, json: &str) -> Result<Self, String> {
        KeySet::from_json(json.as_bytes()).map(|keys| Self::from_key_set(config, keys))
    }

    pub fn from_key_set(config: JwtConfig, keys: KeySet) -> Self {
        Self {
            config,
            keys: Keys::Fixed(Arc::new(keys)),
        }
    }

    /// Keys fetched from `url` with `client`, in the background (see
    /// [`RemoteJwks::start`]); must be called inside a Tokio runtime.
    pub fn from_jwks_url(
        config: JwtConfig,
        url: reqwest::Url,
        client: reqwest::Client,
        refresh: JwksRefresh,
    ) -> Self {
        Self {
            config,
            keys: Keys::Remote(RemoteJwks::start(url, client, refresh)),
        }
    }

    /// From a `--jwks` value: a file read now, or a URL fetched with a client
    /// trusting the system roots plus `extra_ca_file`.
    pub fn from_source(
        config: JwtConfig,
        source: &JwksSource,
        refresh: JwksRefresh,
        extra_ca_file: Option<&Path>,
    ) -> Result<Self, JwtError> {
        match source {
            JwksSource::File(path) => Self::from_jwks_file(config, path),
            JwksSource::Url(url) => {
                let roots = TrustRoots {
                    native: true,
                    ca_file: extra_ca_file,
                };
                let client = http_client::client(roots, refresh.timeout).map_err(|error| {
                    JwtError::HttpClient {
                        url: url.to_string(),
                        reason: error.to_string(),
                    }
                })?;
                Ok(Self::from_jwks_url(config, url.clone(), client, refresh))
            }
        }
    }

    /// Whether `token` says it comes from our issuer. Unverified: it only
    /// decides which authenticator looks at the token; `verify` checks it.
    fn is_ours(&self, token: &str) -> bool {
        unverified_issuer(token).is_some_and(|issuer| issuer == self.config.issuer)
    }

    /// The key set to verify a token naming `kid`, fetching again when a
    /// remote set lacks that key (the issuer may have rotated) or has not
    /// been fetched yet.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, String> {
        match &self.keys {
            Keys::Fixed(keys) => Ok(keys.clone()),
            Keys::Remote(remote) => match remote.current() {
                Ok(keys) if kid.is_none_or(|kid| keys.has_kid(kid)) => Ok(keys),
                _ => remote.refetch().await,
            },
        }
    }

    async fn verify(&self, token: &str) -> Result<SpiffeId, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let keys = self.keys_for(header.kid.as_deref()).await?;
        let mut last_error = match &header.kid {
            Some(kid) => format!("no {:?} key with kid {kid:?}", header.alg),
            None => format!("no key for algorithm {:?}", header.alg),
        };
        for key in keys.candidates(header.alg, header.kid.as_deref()) {
            match decode::<HashMap<String, serde_json::Value>>(
                token,
                &key.key,
                &self.validation(key.algorithm),
            ) {
                Ok(data) => return self.identity(&data.claims),
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(last_error)
    }

    fn validation(&self, algorithm: jsonwebtoken::Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        validation
    }

    fn identity(&self, claims: &HashMap<String, serde_json::Value>) -> Result<SpiffeId, String> {
        let claim = &self.config.identity_claim;
        let value = claims
            .get(claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("claim {claim:?} missing or not a string"))?;
        service_account_identity(
            &self.config.trust_domain,
            &format!("claim {claim:?}"),
            value,
        )
    }
}

/// The `iss` claim of something shaped like a JWT, without verifying it.
fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

#[tonic::async_trait]
impl Authenticator for JwtAuthenticator {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn describe(&self) -> String {
        let keys = match &self.keys {
            Keys::Fixed(_) => "a fixed key set".to_owned(),
            Keys::Remote(remote) => format!("keys from {}", remote.url()),
        };
        format!(
            "{KIND} (issuer {}, audience {}, {keys})",
            self.config.issuer, self.config.audience
        )
    }

    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        let token = bearer_token(KIND, credentials.metadata)?;
        if !self.is_ours(token) {
            return Err(AuthError::NoCredential(KIND));
        }
        self.verify(token)
            .await
            .map_err(|reason| AuthError::Rejected { kind: KIND, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use tonic::metadata::MetadataMap;

    const ISSUER: &str = "https://issuer.test";

    struct Signer {
        key: rcgen::KeyPair,
    }

    impl Signer {
        fn new() -> Self {
            Self {
                key: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            }
        }

        fn jwks(&self, kid: &str) -> String {
            let point = self.key.public_key_raw();
            serde_json::json!({"keys": [{
                "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }]})
            .to_string()
        }

        fn token(&self, kid: &str, claims: serde_json::Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some(kid.into());
            let key = EncodingKey::from_ec_der(&self.key.serialize_der());
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(iss: &str, aud: &str, sub: &str) -> serde_json::Value {
        serde_json::json!({"iss": iss, "aud": aud, "sub": sub, "exp": now() + 600})
    }

    fn authenticator(signer: &Signer) -> JwtAuthenticator {
        let config = JwtConfig {
            issuer: ISSUER.into(),
            audience: "istio-ca".into(),
            identity_claim: "sub".into(),
            trust_domain: "cluster.local".into(),
        };
        JwtAuthenticator::from_jwks_json(config, &signer.jwks("k1")).unwrap()
    }

    async fn authenticate(
        authenticator: &JwtAuthenticator,
        token: &str,
    ) -> Result<SpiffeId, AuthError> {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        let credentials = Credentials {
            metadata: &metadata,
            peer_certs: &[],
        };
        authenticator.authenticate(&credentials).await
    }

    fn rejection(outcome: Result<SpiffeId, AuthError>) -> String {
        match outcome {
            Err(AuthError::Rejected { reason, .. }) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn other_issuers_and_non_jwts_are_passed_on() {
        let signer = Signer::new();
        let jwt = authenticator(&signer);
        let sub = "system:serviceaccount:a:x";
        let kubernetes = signer.token(
            "k1",
            claims("https://kubernetes.default.svc", "istio-ca", sub),
        );
        for token in [kubernetes.as_str(), "opaque-token", "a.b.c", "a.e30.c"] {
            assert!(
                matches!(
                    authenticate(&jwt, token).await,
                    Err(AuthError::NoCredential(KIND))
                ),
                "{token}"
            );
        }
    }

    #[tokio::test]
    async fn good_token_proves_its_service_account_only() {
        let signer = Signer::new();
        let jwt = authenticator(&signer);
        let token = signer.token(
            "k1",
            claims(ISSUER, "istio-ca", "system:serviceaccount:a:x"),
        );
        let id = authenticate(&jwt, &token).await.unwrap();
        assert_eq!(id.to_uri(), "spiffe://cluster.local/ns/a/sa/x");
    }

    #[tokio::test]
    async fn bad_tokens_of_our_issuer_are_rejected_with_the_reason() {
        let signer = Signer::new();
        let other = Signer::new();
        let jwt = authenticator(&signer);
        let sub = "system:serviceaccount:a:x";
        let expired =
            serde_json::json!({"iss": ISSUER, "aud": "istio-ca", "sub": sub, "exp": now() - 3600});
        let not_yet = serde_json::json!({"iss": ISSUER, "aud": "istio-ca", "sub": sub, "exp": now() + 7200, "nbf": now() + 3600});
        let no_exp = serde_json::json!({"iss": ISSUER, "aud": "istio-ca", "sub": sub});
        let cases = [
            (signer.token("k1", expired), "ExpiredSignature"),
            (signer.token("k1", not_yet), "ImmatureSignature"),
            (signer.token("k1", no_exp), "exp"),
            (
                signer.token("k1", claims(ISSUER, "other", sub)),
                "InvalidAudience",
            ),
            (
                other.token("k1", claims(ISSUER, "istio-ca", sub)),
                "InvalidSignature",
            ),
            (
                signer.token("k2", claims(ISSUER, "istio-ca", sub)),
                "kid \"k2\"",
            ),
            (
                signer.token("k1", claims(ISSUER, "istio-ca", "alice")),
                "claim \"sub\"",
            ),
            (
                signer.token(
                    "k1",
                    claims(ISSUER, "istio-ca", "system:serviceaccount:A:x"),
                ),
                "invalid namespace",
            ),
        ];
        for (token, expected) in cases {
            let reason = rejection(authenticate(&jwt, &token).await);
            assert!(reason.contains(expected), "{expected}: {reason}");
        }
    }
}
