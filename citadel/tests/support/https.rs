//! A local HTTPS server for tests that stands in for servers citadel calls (a
//! JWKS URL, the Kubernetes API server): an axum router behind rustls, with a
//! test CA made by rcgen whose certificate the client is given as a CA file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub struct HttpsServer {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server's certificate.
    pub ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpsServer {
    /// Serves `router` on a free loopback port until the test ends.
    pub async fn start(router: axum::Router) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, tls) = server_tls();
        let ca_file = dir.path().join("server-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
        };
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            addr,
            ca_file,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost.
fn server_tls() -> (String, rustls::ServerConfig) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (ca.pem(), tls)
}

/// TCP accepted and TLS-terminated before axum sees the connection.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that fails the handshake (e.g. not trusting us) is
            // simply dropped.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A JWKS endpoint whose answer tests change while it runs, counting fetches.
#[derive(Clone)]
pub struct JwksEndpoint {
    answer: Arc<Mutex<(StatusCode, String)>>,
    hits: Arc<AtomicUsize>,
}

impl JwksEndpoint {
    pub fn new(status: StatusCode, body: String) -> Self {
        Self {
            answer: Arc::new(Mutex::new((status, body))),
            hits: Arc::default(),
        }
    }

    pub fn set(&self, status: StatusCode, body: String) {
        *self.answer.lock().unwrap() = (status, body);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Serves the endpoint at `/jwks` over HTTPS.
    pub async fn serve(&self) -> HttpsServer {
        let endpoint = self.clone();
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let endpoint = endpoint.clone();
                async move {
                    endpoint.hits.fetch_add(1, Ordering::SeqCst);
                    endpoint.answer.lock().unwrap().clone()
                }
            }),
        );
        HttpsServer::start(router).await
    }
}
