//! The HTTP(S) client citadel uses to reach other servers — a JWKS URL, the
//! Kubernetes API server: rustls with the ring provider and explicit roots,
//! timeouts, no redirects, and response bodies read with a size bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// Bound on any response body citadel reads: key sets and TokenReviews are
/// a few KiB.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// How long establishing a connection may take, within the overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("reading CA file {path}: {reason}")]
    ReadCa { path: PathBuf, reason: String },
    #[error("CA file {path}: {reason}")]
    InvalidCa { path: PathBuf, reason: String },
    #[error("no trusted root certificates ({0})")]
    NoRoots(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("building the HTTP client: {0}")]
    Build(String),
}

/// Which certificates the client trusts for HTTPS servers.
#[derive(Debug, Clone, Copy)]
pub struct TrustRoots<'a> {
    /// The operating system's roots (rustls-native-certs).
    pub native: bool,
    /// A PEM file of further CA certificates, e.g. a private issuer's or the
    /// cluster CA.
    pub ca_file: Option<&'a Path>,
}

/// A client trusting `roots`, giving up on any request after `timeout`.
/// Redirects are not followed: a key set or an API server that moved is a
/// configuration error better reported than silently chased.
pub fn client(
    roots: TrustRoots<'_>,
    timeout: Duration,
) -> Result<reqwest::Client, HttpClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| HttpClientError::Tls(error.to_string()))?
        .with_root_certificates(root_store(roots)?)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| HttpClientError::Build(error.to_string()))
}

fn root_store(roots: TrustRoots<'_>) -> Result<RootCertStore, HttpClientError> {
    let mut store = RootCertStore::empty();
    if roots.native {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "some system root certificates could not be loaded");
        }
        // Unparseable system roots are skipped, as browsers do.
        let (added, ignored) = store.add_parsable_certificates(native.certs);
        tracing::debug!(added, ignored, "system root certificates loaded");
    }
    if let Some(path) = roots.ca_file {
        for cert in read_ca_file(path)? {
            store
                .add(cert)
                .map_err(|error| HttpClientError::InvalidCa {
                    path: path.to_owned(),
                    reason: error.to_string(),
                })?;
        }
    }
    if store.is_empty() {
        return Err(HttpClientError::NoRoots(match roots.ca_file {
            Some(path) => format!("none in {} or the system store", path.display()),
            None => "the system store is empty; give a CA file".into(),
        }));
    }
    Ok(store)
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpClientError> {
    let text = std::fs::read(path).map_err(|error| HttpClientError::ReadCa {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let invalid = |reason: String| HttpClientError::InvalidCa {
        path: path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(&text)
        .map_err(|error| invalid(error.to_string()))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(invalid("no PEM CERTIFICATE blocks".into()));
    }
    Ok(certs)
}

/// The body of `response`, refusing more than `max` bytes whether or not the
/// server announced its length.
pub async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if let Some(length) = response.content_length()
        && length > max as u64
    {
        return Err(format!("response of {length} bytes is larger than {max}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| format!("reading the response: {}", error_chain(&error)))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("response is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error with its causes ("error sending request" alone hides
/// whether DNS, TCP or the TLS handshake failed).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let roots = TrustRoots {
            native: false,
            ca_file: Some(&missing),
        };
        let error = client(roots, Duration::from_secs(1)).unwrap_err();
        assert!(error.to_string().contains("missing.pem"), "{error}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        let roots = TrustRoots {
            native: false,
            ca_file: Some(&empty),
        };
        let error = client(roots, Duration::from_secs(1)).unwrap_err();
        assert!(error.to_string().contains("no PEM CERTIFICATE"), "{error}");
    }

    #[test]
    fn a_ca_file_alone_is_enough() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        let roots = TrustRoots {
            native: false,
            ca_file: Some(&path),
        };
        client(roots, Duration::from_secs(1)).unwrap();
        let nothing = TrustRoots {
            native: false,
            ca_file: None,
        };
        assert!(matches!(
            client(nothing, Duration::from_secs(1)),
            Err(HttpClientError::NoRoots(_))
        ));
    }
}
