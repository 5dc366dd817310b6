//! JWTs from a configured issuer, verified offline against a JWKS file.
//! (Fetching the JWKS from a URL is not implemented yet.)

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

use super::{AuthError, Authenticator, Credentials};
use crate::identity::SpiffeId;

const KIND: &str = "JWT";
/// Tokens are small; a bigger header is hostile or a mistake.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

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
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    /// Claim holding `system:serviceaccount:<ns>:<sa>`.
    pub identity_claim: String,
    pub trust_domain: String,
}

struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

pub struct JwtAuthenticator {
    config: JwtConfig,
    /// Keys by `kid`; keys without one are tried when the token names none.
    keys: Vec<(Option<String>, Key)>,
}

impl JwtAuthenticator {
    pub fn from_jwks_file(config: JwtConfig, path: &Path) -> Result<Self, JwtError> {
        let text = std::fs::read_to_string(path).map_err(|source| JwtError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_jwks_json(config, &text).map_err(|reason| JwtError::InvalidJwks {
            path: path.display().to_string(),
            reason,
        })
    }

    pub fn from_jwks_json(config: JwtConfig, json: &str) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            // Only the two algorithms we promise; the key type fixes it, so a
            // token cannot pick a weaker one through its header.
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
            keys.push((jwk.common.key_id.clone(), Key { algorithm, key }));
        }
        if keys.is_empty() {
            return Err("no RSA or EC keys".into());
        }
        Ok(Self { config, keys })
    }

    fn verify(&self, token: &str) -> Result<SpiffeId, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let candidates = self.keys.iter().filter(|(kid, key)| {
            key.algorithm == header.alg && (header.kid.is_none() || kid == &header.kid)
        });
        let mut last_error = format!("no key for algorithm {:?}", header.alg);
        for (_, key) in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.set_issuer(&[&self.config.issuer]);
            validation.set_audience(&[&self.config.audience]);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.leeway = 30;
            match decode::<HashMap<String, serde_json::Value>>(token, &key.key, &validation) {
                Ok(data) => return self.identity(&data.claims),
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(last_error)
    }

    fn identity(&self, claims: &HashMap<String, serde_json::Value>) -> Result<SpiffeId, String> {
        let claim = &self.config.identity_claim;
        let value = claims
            .get(claim)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("claim {claim:?} missing or not a string"))?;
        let (namespace, service_account) = value
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                format!("claim {claim:?} is not system:serviceaccount:<namespace>:<name>")
            })?;
        SpiffeId::new(&self.config.trust_domain, namespace, service_account)
            .map_err(|e| e.to_string())
    }
}

#[tonic::async_trait]
impl Authenticator for JwtAuthenticator {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        let Some(value) = credentials.metadata.get("authorization") else {
            return Err(AuthError::NoCredential(KIND));
        };
        let rejected = |reason: String| AuthError::Rejected { kind: KIND, reason };
        let value = value
            .to_str()
            .map_err(|_| rejected("authorization header is not ASCII".into()))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| rejected("authorization header is not `Bearer <token>`".into()))?;
        self.verify(token.trim()).map_err(rejected)
    }
}
