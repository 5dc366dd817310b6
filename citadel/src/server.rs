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
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;

use crate::authority::{Authority, SignError};
use crate::reload::SharedAuthority;
use crate::service::CertificateService;

/// Default lifetime of citadel's own serving certificate; it is renewed at
/// half of it, like workload certificates.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// A client that has not finished its handshake by then is dropped, so slow
/// or stuck peers cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
        Ok(Self {
            dns_names,
            ttl,
            current: RwLock::new(current),
        })
    }

    /// Issues a fresh serving certificate from `authority` and trusts its
    /// current bundle for client certificates.
    pub fn renew(&self, authority: &Authority) -> Result<OffsetDateTime, TlsError> {
        let fresh = issue(authority, &self.dns_names, self.ttl)?;
        let not_after = fresh.not_after;
        *self.current.write().expect("TLS settings lock poisoned") = fresh;
        Ok(not_after)
    }

    /// When the serving certificate should be renewed: half-way through its
    /// life.
    pub fn renew_at(&self) -> OffsetDateTime {
        let current = self.current.read().expect("TLS settings lock poisoned");
        current.issued_at + (current.not_after - current.issued_at) / 2
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().expect("TLS settings lock poisoned");
        TlsAcceptor::from(current.config.clone())
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
        let (connections, incoming) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_tls(self.listener, self.tls, connections));
        let served = Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(ReceiverStream::new(incoming), shutdown)
            .await;
        acceptor.abort();
        served
    }
}

type Connection = Result<TlsStream<TcpStream>, std::io::Error>;

/// Accepts TCP connections and hands each to the server once its TLS
/// handshake, with the settings current at that moment, has completed.
async fn accept_tls(
    listener: TcpListener,
    tls: Arc<ServingTls>,
    connections: mpsc::Sender<Connection>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Without it each small response waits for the client's delayed
        // ACK: about 40 ms per CreateCertificate, whatever the load.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "setting TCP_NODELAY failed");
        }
        let acceptor = tls.acceptor();
        let connections = connections.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = connections.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
