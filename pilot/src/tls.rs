//! xDS over mutual TLS: pilot serves with its own workload certificate (kept
//! fresh by a [`workload_identity::CertificateManager`]) and accepts only
//! clients whose certificate chains to the mesh's trust bundle. The listener
//! is bound at once; handshakes wait until the first certificate arrives, and
//! each new connection takes the settings current when it arrives, so a
//! renewed certificate or a new bundle needs no restart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use service_runtime::tls_incoming::tls_incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use workload_identity::{IdentityReceiver, WorkloadIdentity};

/// Why an identity could not become TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("certificate chain: {0}")]
    Chain(rustls::pki_types::pem::Error),
    #[error("private key: {0}")]
    Key(rustls::pki_types::pem::Error),
    #[error("trust bundle: {0}")]
    TrustBundle(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Server settings for `identity`: its chain and key, TLS 1.2/1.3, ALPN h2,
/// and a client certificate required and verified against its trust bundle.
pub fn server_config(identity: &WorkloadIdentity) -> Result<rustls::ServerConfig, TlsConfigError> {
    let chain = identity
        .chain()
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsConfigError::Chain)?;
    let key = PrivateKeyDer::from_pem_slice(identity.private_key().pem().as_bytes())
        .map_err(TlsConfigError::Key)?;
    let mut roots = RootCertStore::empty();
    for pem in identity.trust_bundle() {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|error| TlsConfigError::TrustBundle(error.to_string()))?;
        roots
            .add(der)
            .map_err(|error| TlsConfigError::TrustBundle(error.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| TlsConfigError::TrustBundle(error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Turns each identity into an acceptor and publishes it; an identity that
/// cannot be used keeps the previous acceptor (logged).
fn follow_identities(mut identities: IdentityReceiver) -> watch::Receiver<Option<TlsAcceptor>> {
    let (publish, acceptors) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let identity = identities.borrow_and_update().clone();
            if let Some(identity) = identity {
                match server_config(&identity) {
                    Ok(config) => {
                        tracing::info!(
                            serial = identity.serial(),
                            spiffe_id = identity.spiffe_id(),
                            "xDS TLS serving certificate in use"
                        );
                        publish.send_replace(Some(TlsAcceptor::from(Arc::new(config))));
                    }
                    Err(error) => {
                        tracing::error!(%error, serial = identity.serial(), "cannot serve with the new certificate; keeping the previous one");
                    }
                }
            }
            tokio::select! {
                changed = identities.changed() => if changed.is_err() { return },
                // Nobody accepts any more: stop.
                _ = publish.closed() => return,
            }
        }
    });
    acceptors
}

/// The bound, not yet serving, TLS port.
pub struct TlsListener {
    listener: TcpListener,
    acceptors: watch::Receiver<Option<TlsAcceptor>>,
}

impl TlsListener {
    /// Binds `addr` now; handshakes complete once `identities` has a
    /// certificate.
    pub async fn bind(addr: SocketAddr, identities: IdentityReceiver) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            acceptors: follow_identities(identities),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `router` (a tonic router) on connections whose handshake
    /// succeeded, until `shutdown`.
    pub async fn serve(
        self,
        router: tonic::transport::server::Router,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let (incoming, accept) = tls_incoming(self.listener, self.acceptors);
        let served = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        accept.abort();
        served
    }
}

/// Readiness of the TLS port: whether it has a certificate to serve with.
pub fn describe_identity(identity: &Option<Arc<WorkloadIdentity>>) -> (bool, String) {
    match identity {
        Some(identity) => (
            true,
            format!(
                "serving certificate {} for {}",
                identity.serial(),
                identity.spiffe_id()
            ),
        ),
        None => (false, "no serving certificate yet".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use workload_identity::testing::TestCa;

    #[test]
    fn builds_server_settings_from_an_identity() {
        let ca = TestCa::new();
        let identity = ca.issue(
            "spiffe://cluster.local/ns/istio-system/sa/pilot",
            Duration::from_secs(3600),
        );
        let config = server_config(&identity).expect("usable identity");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(describe_identity(&Some(Arc::new(identity))).0);
        assert!(!describe_identity(&None).0);
    }
}
