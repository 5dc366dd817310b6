//! Self-signed serving certificates with chosen serials, and HTTPS clients
//! that trust exactly them. Enough for the injector's tests and benchmark:
//! the client pins the leaf itself, so no CA is needed (galley's tests keep
//! a throwaway CA in `galley/tests/support/certs.rs` because they check a
//! chain).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair, SerialNumber};
use rustls::pki_types::CertificateDer;

/// The name the webhook certificates carry, as Istio's injector Service.
pub const WEBHOOK_HOST: &str = "istio-sidecar-injector.istio-system.svc";

/// A self-signed certificate for [`WEBHOOK_HOST`] and its key.
pub struct SelfSigned {
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl SelfSigned {
    pub fn new(serial: u8) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec![WEBHOOK_HOST.to_string()]).expect("certificate params");
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the pair where the webhook reads it; the key first, so the
    /// watcher rarely sees a new certificate with the old key.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(key, &self.key_pem).unwrap();
        std::fs::write(cert, &self.cert_pem).unwrap();
    }
}

/// `cert-chain.pem` and `key.pem` in `dir`, Istio's file names.
pub fn cert_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert-chain.pem"), dir.join("key.pem"))
}

/// An HTTPS client that trusts only `trusted`, checks [`WEBHOOK_HOST`] as
/// the API server would, reaches it at `addr`, reports the peer's
/// certificate (`TlsInfo`) and keeps one connection alive.
pub fn client(trusted: &[&SelfSigned], addr: SocketAddr) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).expect("a trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve(WEBHOOK_HOST, addr)
        .no_proxy()
        .tls_info(true)
        .pool_max_idle_per_host(1)
        .build()
        .expect("HTTPS client")
}

/// `https://<WEBHOOK_HOST>:<port><path>`.
pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("https://{WEBHOOK_HOST}:{}{path}", addr.port())
}
