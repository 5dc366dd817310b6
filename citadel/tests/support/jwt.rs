//! ES256 token signing for tests: a P-256 key, its JWKS, and tokens with
//! chosen claims.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use citadel::auth::{AuthError, Authenticator, Credentials};
use citadel::identity::SpiffeId;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "istio-ca";

pub struct Signer {
    pub key: KeyPair,
    pub kid: String,
}

impl Signer {
    pub fn new(kid: &str) -> Self {
        Self {
            key: KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            kid: kid.into(),
        }
    }

    /// This key as one JWK.
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key_raw();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        json!({
            "kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    pub fn token_with(&self, claims: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    /// A good token of [`ISSUER`] for [`AUDIENCE`] naming `ns`/`sa`.
    pub fn token(&self, ns: &str, sa: &str) -> String {
        self.token_with(claims(ISSUER, AUDIENCE, now() + 600, ns, sa))
    }
}

/// A JWKS of the given signers' keys.
pub fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn claims(iss: &str, aud: &str, exp: u64, ns: &str, sa: &str) -> Value {
    json!({
        "iss": iss, "aud": aud, "exp": exp, "iat": now(),
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    })
}

/// Runs `authenticator` on a request carrying `token` as a bearer token.
pub async fn authenticate(
    authenticator: &dyn Authenticator,
    token: &str,
) -> Result<SpiffeId, AuthError> {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let credentials = Credentials {
        metadata: &metadata,
        peer_certs: &[],
    };
    authenticator.authenticate(&credentials).await
}
