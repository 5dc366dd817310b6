//! JSON Web Key Sets: parsed into verification keys, read once from a file
//! or fetched from a URL and kept fresh — refreshed periodically, fetched
//! again (at most once per interval) when a token names a key the set lacks,
//! and the last good set kept when a fetch fails.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use crate::http_client::{MAX_RESPONSE_BYTES, error_chain, read_bounded};

/// One key of a set, with the only algorithm it may verify.
pub(super) struct VerificationKey {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The usable keys of a JWKS.
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| e.to_string())?;
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
            keys.push(VerificationKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err("no RSA or EC keys".into());
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    /// Keys that may verify a token with header `alg` and `kid`; a token
    /// naming no `kid` is tried against every key of its algorithm.
    pub(super) fn candidates<'a>(
        &'a self,
        algorithm: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerificationKey> {
        self.keys.iter().filter(move |key| {
            key.algorithm == algorithm && (kid.is_none() || key.kid.as_deref() == kid)
        })
    }
}

/// Where `--jwks` points: an http(s) URL, or else a file path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(reqwest::Url),
}

impl FromStr for JwksSource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("http://") || text.starts_with("https://") {
            reqwest::Url::parse(text)
                .map(Self::Url)
                .map_err(|error| format!("JWKS URL {text:?}: {error}"))
        } else if text.is_empty() {
            Err("JWKS location is empty".into())
        } else {
            Ok(Self::File(PathBuf::from(text)))
        }
    }
}

impl fmt::Display for JwksSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => write!(f, "{url}"),
        }
    }
}

/// Timing and size limits of a JWKS fetched from a URL.
#[derive(Debug, Clone)]
pub struct JwksRefresh {
    /// How often the set is fetched again.
    pub interval: Duration,
    /// Least time between two fetches caused by tokens naming unknown keys
    /// (or by a set not fetched yet), so such tokens cannot hammer the issuer.
    pub min_refetch_interval: Duration,
    /// Bound on one fetch, connection included.
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl Default for JwksRefresh {
    fn default() -> Self {
        Self {
            // Istio's default refresh interval for JWT public keys.
            interval: Duration::from_secs(20 * 60),
            min_refetch_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_bytes: MAX_RESPONSE_BYTES,
        }
    }
}

/// The outcome of the fetches so far.
#[derive(Default)]
struct Fetched {
    keys: Option<Arc<KeySet>>,
    last_error: Option<String>,
}

/// A key set fetched from a URL and refreshed in the background.
pub struct RemoteJwks {
    url: reqwest::Url,
    client: reqwest::Client,
    refresh: JwksRefresh,
    fetched: RwLock<Fetched>,
    /// Held while fetching, so concurrent refetches collapse into one;
    /// records when the last fetch ended, for the refresh schedule and
    /// `min_refetch_interval`.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl RemoteJwks {
    /// Starts fetching `url` in the background and returns at once: citadel
    /// starts even when the issuer is down. Must run inside a Tokio runtime;
    /// the background task ends once the returned set is dropped.
    pub fn start(url: reqwest::Url, client: reqwest::Client, refresh: JwksRefresh) -> Arc<Self> {
        if url.scheme() == "http" {
            tracing::warn!(%url, "JWKS fetched over plain HTTP: anyone on the path can substitute keys");
        }
        let jwks = Arc::new(Self {
            url,
            client,
            refresh,
            fetched: RwLock::default(),
            last_fetch: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&jwks)));
        jwks
    }

    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The last good set, or why there is none yet.
    pub fn current(&self) -> Result<Arc<KeySet>, String> {
        let fetched = self.fetched.read().unwrap_or_else(|e| e.into_inner());
        match (&fetched.keys, &fetched.last_error) {
            (Some(keys), _) => Ok(keys.clone()),
            (None, error) => Err(format!(
                "JWKS from {} not fetched yet: {}",
                self.url,
                error.as_deref().unwrap_or("first fetch in progress")
            )),
        }
    }

    /// Fetches the set again unless the last fetch was less than
    /// `min_refetch_interval` ago, then returns the current set.
    pub async fn refetch(&self) -> Result<Arc<KeySet>, String> {
        let mut last_fetch = self.last_fetch.lock().await;
        let recent = last_fetch.is_some_and(|at| at.elapsed() < self.refresh.min_refetch_interval);
        if !recent {
            self.fetch_and_store().await;
            *last_fetch = Some(Instant::now());
        }
        drop(last_fetch);
        self.current()
    }

    /// The scheduled fetch: done when due counting from the last fetch,
    /// whoever caused it. Returns how long until the next one is due.
    async fn refresh_if_due(&self) -> Duration {
        let mut last_fetch = self.last_fetch.lock().await;
        let due = last_fetch.is_none_or(|at| at.elapsed() >= self.next_delay());
        if due {
            self.fetch_and_store().await;
            // Counted from the end of the fetch, so a slow issuer cannot make
            // the loop spin.
            *last_fetch = Some(Instant::now());
        }
        let since = last_fetch.map_or(Duration::ZERO, |at| at.elapsed());
        self.next_delay().saturating_sub(since)
    }

    async fn fetch_and_store(&self) {
        let outcome = self.fetch().await;
        let mut fetched = self.fetched.write().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(keys) => {
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                fetched.keys = Some(Arc::new(keys));
                fetched.last_error = None;
            }
            Err(error) => {
                // Keep serving the last good set: a flaky issuer must not
                // stop issuance.
                tracing::warn!(url = %self.url, %error, has_previous = fetched.keys.is_some(), "JWKS fetch failed");
                fetched.last_error = Some(error);
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let response = self
            .client
            .get(self.url.clone())
            .timeout(self.refresh.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| error_chain(&error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let body = read_bounded(response, self.refresh.max_bytes).await?;
        KeySet::from_json(&body).map_err(|reason| format!("not a valid key set: {reason}"))
    }

    /// When the next scheduled fetch is due: the refresh interval once a set
    /// is known, sooner while none could be fetched yet.
    fn next_delay(&self) -> Duration {
        let has_keys = self
            .fetched
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .is_some();
        if has_keys {
            self.refresh.interval
        } else {
            self.refresh.interval.min(self.refresh.min_refetch_interval)
        }
    }
}

async fn refresh_loop(jwks: Weak<RemoteJwks>) {
    while let Some(delay) = refresh_once(&jwks).await {
        tokio::time::sleep(delay).await;
    }
}

/// Holds the set only while fetching, so dropping it ends the loop.
async fn refresh_once(jwks: &Weak<RemoteJwks>) -> Option<Duration> {
    Some(jwks.upgrade()?.refresh_if_due().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_source_is_a_url_only_with_an_http_scheme() {
        assert_eq!(
            "jwks.json".parse::<JwksSource>().unwrap(),
            JwksSource::File("jwks.json".into())
        );
        assert_eq!(
            "/etc/jwks.json".parse::<JwksSource>().unwrap(),
            JwksSource::File("/etc/jwks.json".into())
        );
        assert!(matches!(
            "https://issuer.example/keys".parse::<JwksSource>().unwrap(),
            JwksSource::Url(_)
        ));
        assert!(matches!(
            "http://127.0.0.1:8080/jwks".parse::<JwksSource>().unwrap(),
            JwksSource::Url(_)
        ));
        let error = "https://".parse::<JwksSource>().unwrap_err();
        assert!(error.contains("JWKS URL"), "{error}");
        assert!("".parse::<JwksSource>().is_err());
    }

    #[test]
    fn key_sets_keep_only_rsa_and_ec_keys() {
        let error = KeySet::from_json(br#"{"keys": []}"#).err().unwrap();
        assert!(error.contains("no RSA or EC keys"), "{error}");
        let error = KeySet::from_json(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#)
            .err()
            .unwrap();
        assert!(error.contains("no RSA or EC keys"), "{error}");
        assert!(KeySet::from_json(b"not json").is_err());
    }
}
