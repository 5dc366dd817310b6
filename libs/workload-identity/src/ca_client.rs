//! The client side of `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! Each request opens its own TLS connection: requests are rare (one per
//! rotation), and a fresh connection picks up a changed root-cert file and
//! the current client certificate without any cache to invalidate.

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use trireme_proto::istio::v1::auth::IstioCertificateRequest;
use trireme_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;

use crate::identity::{WorkloadIdentity, split_certificates};

/// Why a certificate could not be obtained from the CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("reading the CA root certificate {}: {source}", path.display())]
    RootCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA root certificate file {} holds no PEM certificate", path.display())]
    NoRootCert { path: PathBuf },
    #[error("reading the token {}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file {} is empty or not a valid header value", path.display())]
    InvalidToken { path: PathBuf },
    #[error("CA address {0:?} is not host:port")]
    InvalidAddress(String),
    #[error("connecting to the CA at {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("the CA refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
}

/// Where the CA is and how to prove who we are to it.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// `host:port` of citadel's gRPC TLS port.
    pub address: String,
    /// PEM file with the root(s) that vouch for the CA's serving certificate;
    /// re-read before every request, so a rotated file takes effect.
    pub root_cert: PathBuf,
    /// File holding the bearer token (a projected service-account token or
    /// a JWT); re-read before every request, as the kubelet rotates it.
    pub token_path: PathBuf,
    /// Name to check the CA's certificate against; the address's host when
    /// unset.
    pub server_name: Option<String>,
    /// Bound on connecting and on each request.
    pub timeout: Duration,
}

impl CaClientConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn server_name(&self) -> Result<String, CaError> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let (host, port) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| CaError::InvalidAddress(self.address.clone()))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(CaError::InvalidAddress(self.address.clone()));
        }
        Ok(host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned())
    }
}

/// What the manager asks a CA for.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    pub csr_pem: &'a str,
    /// Requested validity; the CA may shorten it.
    pub ttl: Duration,
    /// The identity being replaced: while still valid, it authenticates the
    /// renewal instead of the token.
    pub current: Option<&'a WorkloadIdentity>,
}

/// A CA's answer.
#[derive(Debug, Clone)]
pub struct Signed {
    /// PEM certificates, leaf first, root last.
    pub chain: Vec<String>,
    /// Roots configured locally (the root-cert file), which join the chain's
    /// root in the trust bundle.
    pub configured_roots: Vec<String>,
}

/// A certificate authority the manager can ask to sign. [`CaClient`] is the
/// real one; tests use an in-memory CA (feature `testing`).
pub trait CertificateSigner: Send + Sync + 'static {
    fn sign<'a>(
        &'a self,
        request: SignRequest<'a>,
    ) -> impl Future<Output = Result<Signed, CaError>> + Send + 'a;
}

impl<T: CertificateSigner> CertificateSigner for std::sync::Arc<T> {
    fn sign<'a>(
        &'a self,
        request: SignRequest<'a>,
    ) -> impl Future<Output = Result<Signed, CaError>> + Send + 'a {
        (**self).sign(request)
    }
}

/// How one attempt proves the caller's identity.
enum Credential<'a> {
    Token(String),
    Certificate(&'a WorkloadIdentity),
}

/// Asks citadel (or Istio's CA) for certificates over TLS.
#[derive(Debug, Clone)]
pub struct CaClient {
    config: CaClientConfig,
}

impl CaClient {
    pub fn new(config: CaClientConfig) -> Result<Self, CaError> {
        config.server_name()?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &CaClientConfig {
        &self.config
    }

    /// Renews with the current certificate while it is valid; when that
    /// fails (or there is none) asks with the token.
    async fn sign_request(&self, request: SignRequest<'_>) -> Result<Signed, CaError> {
        let roots_pem = self.read_roots().await?;
        let configured_roots = split_certificates(&roots_pem).unwrap_or_default();
        let renewable = request
            .current
            .filter(|current| current.is_valid_at(SystemTime::now()));
        if let Some(current) = renewable {
            match self
                .create(&roots_pem, Credential::Certificate(current), request)
                .await
            {
                Ok(chain) => {
                    return Ok(Signed {
                        chain,
                        configured_roots,
                    });
                }
                Err(error) => tracing::warn!(
                    %error,
                    "renewing with the current certificate failed; trying the token"
                ),
            }
        }
        let token = self.read_token().await?;
        let chain = self
            .create(&roots_pem, Credential::Token(token), request)
            .await?;
        Ok(Signed {
            chain,
            configured_roots,
        })
    }

    async fn read_roots(&self) -> Result<String, CaError> {
        let path = &self.config.root_cert;
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| CaError::RootCert {
                path: path.clone(),
                source,
            })?;
        match split_certificates(&text) {
            Ok(roots) if !roots.is_empty() => Ok(text),
            _ => Err(CaError::NoRootCert { path: path.clone() }),
        }
    }

    async fn read_token(&self) -> Result<String, CaError> {
        let path = &self.config.token_path;
        let token = tokio::fs::read_to_string(path)
            .await
            .map_err(|source| CaError::Token {
                path: path.clone(),
                source,
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(CaError::InvalidToken { path: path.clone() });
        }
        Ok(token.to_owned())
    }

    async fn create(
        &self,
        roots_pem: &str,
        credential: Credential<'_>,
        request: SignRequest<'_>,
    ) -> Result<Vec<String>, CaError> {
        let (client_identity, token) = match credential {
            Credential::Certificate(current) => (Some(current), None),
            Credential::Token(token) => (None, Some(token)),
        };
        let channel = self.connect(roots_pem, client_identity).await?;
        let mut grpc_request = tonic::Request::new(IstioCertificateRequest {
            csr: request.csr_pem.to_owned(),
            validity_duration: i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        });
        if let Some(token) = token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                CaError::InvalidToken {
                    path: self.config.token_path.clone(),
                }
            })?;
            grpc_request.metadata_mut().insert("authorization", value);
        }
        let response = IstioCertificateServiceClient::new(channel)
            .create_certificate(grpc_request)
            .await
            .map_err(refused)?;
        Ok(response.into_inner().cert_chain)
    }

    async fn connect(
        &self,
        roots_pem: &str,
        client_identity: Option<&WorkloadIdentity>,
    ) -> Result<Channel, CaError> {
        let address = &self.config.address;
        let connect_error = |error: &dyn Error| CaError::Connect {
            address: address.clone(),
            detail: error_chain(error),
        };
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(roots_pem))
            .domain_name(self.config.server_name()?);
        if let Some(identity) = client_identity {
            tls = tls.identity(Identity::from_pem(
                identity.chain_pem(),
                identity.private_key().pem(),
            ));
        }
        Endpoint::from_shared(format!("https://{address}"))
            .map_err(|error| connect_error(&error))?
            .tls_config(tls)
            .map_err(|error| connect_error(&error))?
            .connect_timeout(self.config.timeout)
            .timeout(self.config.timeout)
            .connect()
            .await
            .map_err(|error| connect_error(&error))
    }
}

impl CertificateSigner for CaClient {
    fn sign<'a>(
        &'a self,
        request: SignRequest<'a>,
    ) -> impl Future<Output = Result<Signed, CaError>> + Send + 'a {
        self.sign_request(request)
    }
}

/// A failed call, with what lies under tonic's message: a TLS alert, say,
/// arrives as "transport error" with the alert as its source.
fn refused(status: tonic::Status) -> CaError {
    let mut message = status.message().to_owned();
    if let Some(source) = Error::source(&status) {
        let causes = error_chain(source);
        message = if causes.starts_with(&message) {
            causes
        } else {
            format!("{message}: {causes}")
        };
    }
    CaError::Refused {
        code: status.code(),
        message,
    }
}

/// An error and its causes on one line: tonic's transport errors say only
/// "transport error" at the top.
fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(address: &str, server_name: Option<&str>) -> CaClientConfig {
        CaClientConfig {
            address: address.to_owned(),
            root_cert: "root-cert.pem".into(),
            token_path: "istio-token".into(),
            server_name: server_name.map(str::to_owned),
            timeout: CaClientConfig::DEFAULT_TIMEOUT,
        }
    }

    #[test]
    fn checks_the_ca_certificate_against_the_address_host() {
        let name = |address| config(address, None).server_name().unwrap();
        assert_eq!(
            name("citadel.istio-system.svc:15012"),
            "citadel.istio-system.svc"
        );
        assert_eq!(name("localhost:1234"), "localhost");
        assert_eq!(name("[::1]:15012"), "::1");
    }

    #[test]
    fn an_explicit_server_name_wins() {
        let config = config("10.0.0.7:15012", Some("citadel.istio-system.svc"));
        assert_eq!(config.server_name().unwrap(), "citadel.istio-system.svc");
    }

    #[test]
    fn refuses_an_address_without_a_port() {
        for address in ["citadel", "citadel:", ":15012", "citadel:http"] {
            let error = CaClient::new(config(address, None)).unwrap_err();
            assert!(
                matches!(error, CaError::InvalidAddress(_)),
                "{address}: {error}"
            );
        }
    }
}
