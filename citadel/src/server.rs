//! The gRPC server: TLS with a serving certificate citadel issues to itself,
//! client certificates optional (renewal), bound first and served second so
//! tests can start it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::authority::{Authority, SignError};
use crate::service::CertificateService;

/// Lifetime of citadel's own serving certificate.
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// TLS settings: a fresh serving certificate for `dns_names`, and client
/// certificates accepted (not required) when they chain to this CA's root.
pub fn tls_config(
    authority: &Authority,
    dns_names: &[String],
) -> Result<ServerTlsConfig, SignError> {
    let (chain, key) = authority.issue_serving_cert(dns_names, SERVING_CERT_TTL)?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(chain.concat(), key))
        .client_ca_root(Certificate::from_pem(authority.root_cert_pem()))
        .client_auth_optional(true))
}

/// A bound, not yet serving, gRPC listener.
pub struct GrpcServer {
    listener: TcpListener,
    tls: ServerTlsConfig,
}

impl GrpcServer {
    pub async fn bind(addr: SocketAddr, tls: ServerTlsConfig) -> std::io::Result<Self> {
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
        // tonic sets TCP_NODELAY only on listeners it binds itself. Without
        // it each small response waits for the client's delayed ACK: about
        // 40 ms per CreateCertificate, whatever the load.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        Server::builder()
            .tls_config(self.tls)?
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }
}
