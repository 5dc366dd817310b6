//! The gRPC server: TLS with a serving certificate citadel issues to itself
//! and renews before it expires, client certificates optional (renewal) and
//! checked against the current trust bundle, all without a restart. Bound
//! first and served second so tests can start it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use service_runtime::tls_incoming::tls_incoming;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::transport::Server;

use crate::authority::{Authority, SignError};
use crate::reload::SharedAuthority;
use crate::service::CertificateService;

/// Default lifetime of citadel's own serving certificate; it is renewed at
/// half of it, like workload certificates.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// After a failed renewal, try again this soon (the current certificate is
/// still valid: renewal starts at half its lifetime).
const RENEWAL_RETRY: Duration = Duration::from_secs(10);

const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(1);

/// Why the TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("issuing the serving certificate: {0}")]
    Issue(#[from] SignError),
    #[error("trust bundle: {0}")]
    TrustBundle(String),
    #[error("reading the issued serving certificate: {0}")]
    Certificate(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS settings in use, replaced whole when the serving certificate is
/// renewed or the trust bundle changes; each new connection takes the
/// settings current when it arrives.
pub struct ServingTls {
    dns_names: Vec<String>,
    ttl: Duration,
    current: RwLock<Current>,
    /// What the accept loop handshakes with, replaced with `current`.
    acceptors: watch::Sender<Option<TlsAcceptor>>,
}

struct Current {
    config: Arc<rustls::ServerConfig>,
    /// When it was issued; `notBefore` is backdated for clock skew, so it
    /// would make renewal come early.
    issued_at: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl ServingTls {
    /// Issues the first serving certificate for `dns_names`, valid for `ttl`.
    pub fn new(
        authority: &Authority,
        dns_names: Vec<String>,
        ttl: Duration,
    ) -> Result<Self, TlsError> {
        let current = issue(authority, &dns_names, ttl)?;
        let (acceptors, _) = watch::channel(Some(TlsAcceptor::from(current.config.clone())));
        Ok(Self {
            dns_names,
            ttl,
            current: RwLock::new(current),
            acceptors,
        })
    }

    /// Issues a fresh serving certificate from `authority` and trusts its
    /// current bundle for client certificates.
    pub fn renew(&self, authority: &Authority) -> Result<OffsetDateTime, TlsError> {
        let fresh = issue(authority, &self.dns_names, self.ttl)?;
        let not_after = fresh.not_after;
        self.acceptors
            .send_replace(Some(TlsAcceptor::from(fresh.config.clone())));
        *self.current.write().expect("TLS settings lock poisoned") = fresh;
        Ok(not_after)
    }

    /// When the serving certificate should be renewed: half-way through its
    /// life.
    pub fn renew_at(&self) -> OffsetDateTime {
        let current = self.current.read().expect("TLS settings lock poisoned");
        current.issued_at + (current.not_after - current.issued_at) / 2
    }

    /// Renews the serving certificate at half its life and whenever the
    /// authority changes (a new signing CA or trust bundle), until `shutdown`.
    pub async fn keep_fresh(
        &self,
        mut authority: SharedAuthority,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut renew_at = self.renew_at();
        loop {
            // Never spin, even when a CA about to expire leaves little time.
            let wait = (renew_at - OffsetDateTime::now_utc())
                .try_into()
                .unwrap_or(Duration::ZERO)
                .max(MIN_RENEWAL_INTERVAL);
            tokio::select! {
                _ = &mut shutdown => return,
                changed = authority.changed() => {
                    if changed.is_err() {
                        // The watcher is gone (shutting down): keep what we have.
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let current = authority.borrow_and_update().clone();
            renew_at = match self.renew(&current) {
                Ok(not_after) => {
                    tracing::info!(%not_after, dns_names = ?self.dns_names, "serving certificate renewed");
                    self.renew_at()
                }
                Err(error) => {
                    tracing::error!(%error, "renewing the serving certificate failed; retrying");
                    OffsetDateTime::now_utc() + RENEWAL_RETRY
                }
            };
        }
    }
}

fn issue(authority: &Authority, dns_names: &[String], ttl: Duration) -> Result<Current, TlsError> {
    let issued_at = OffsetDateTime::now_utc();
    let (chain, key) = authority.issue_serving_cert(dns_names, ttl)?;
    let chain: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|pem| pem_der(pem).map(CertificateDer::from))
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pem_der(&key)?));
    let not_after = not_after(&chain[0])?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(trust_store(authority)?, provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|error| TlsError::TrustBundle(error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Current {
        config: Arc::new(config),
        issued_at,
        not_after,
    })
}

fn trust_store(authority: &Authority) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in authority.trust_bundle_der() {
        roots
            .add(CertificateDer::from(der.clone()))
            .map_err(|error| TlsError::TrustBundle(error.to_string()))?;
    }
    Ok(Arc::new(roots))
}

fn pem_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    pem::parse(pem)
        .map(pem::Pem::into_contents)
        .map_err(|error| TlsError::Certificate(error.to_string()))
}

fn not_after(der: &[u8]) -> Result<OffsetDateTime, TlsError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|error| TlsError::Certificate(error.to_string()))?;
    Ok(cert.validity().not_after.to_datetime())
}

/// A bound, not yet serving, gRPC listener.
pub struct GrpcServer {
    listener: TcpListener,
    tls: Arc<ServingTls>,
}

impl GrpcServer {
    pub async fn bind(addr: SocketAddr, tls: Arc<ServingTls>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then lets in-flight calls finish.
    pub async fn serve(
        self,
        service: CertificateService,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let (incoming, acceptor) = tls_incoming(self.listener, self.tls.acceptors.subscribe());
        let served = Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        acceptor.abort();
        served
    }
}
