//! pilot over mutual TLS (`controlPlaneAuthPolicy: MUTUAL_TLS`): the agent
//! presents its workload certificate and accepts pilot only when pilot's
//! certificate chains to the current trust bundle and names the expected
//! identity (`--discovery-san`). Each new connection takes the identity
//! current at that moment, so a renewed certificate or bundle is used from
//! the next reconnect on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use service_runtime::server_cert_check::{CheckedServerCert, ServerCertCheck};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};
use workload_identity::{IdentityReceiver, WorkloadIdentity};

use super::xds_proxy::Upstream;

/// How long a connect waits for the first workload certificate before
/// failing (and being retried by the xDS proxy).
const IDENTITY_WAIT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why pilot's certificate was refused, or our own identity unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsUpstreamError {
    #[error("pilot's certificate names {found:?}, not the expected {expected:?} (--discovery-san)")]
    SanMismatch {
        expected: String,
        found: Vec<String>,
    },
    #[error("pilot's certificate cannot be read: {0}")]
    Unparsable(String),
    #[error("no workload certificate yet")]
    NoIdentity,
    #[error("workload certificate: {0}")]
    Identity(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Connects to pilot's TLS port with the workload certificate.
pub struct TlsUpstream {
    /// host:port of pilot's TLS port.
    pub address: String,
    /// The URI or DNS SAN pilot's certificate must carry.
    pub san: String,
    pub identities: IdentityReceiver,
}

impl Upstream for TlsUpstream {
    fn connect(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Channel>> + Send + '_>> {
        Box::pin(async move {
            // Without a certificate pilot would refuse us anyway.
            let mut identities = self.identities.clone();
            tokio::time::timeout(IDENTITY_WAIT, identities.wait_for(Option::is_some))
                .await
                .map_err(|_| TlsUpstreamError::NoIdentity)?
                .map_err(|_| TlsUpstreamError::NoIdentity)?;
            let (address, san, identities) = (
                self.address.clone(),
                self.san.clone(),
                self.identities.clone(),
            );
            let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
                let (address, san, identities) = (address.clone(), san.clone(), identities.clone());
                async move {
                    let identity = identities
                        .borrow()
                        .clone()
                        .ok_or(TlsUpstreamError::NoIdentity)?;
                    let config = client_config(&identity, &san)?;
                    let tcp = TcpStream::connect(&address).await?;
                    tcp.set_nodelay(true)?;
                    let tls = TlsConnector::from(Arc::new(config))
                        .connect(server_name(&address)?, tcp)
                        .await?;
                    Ok::<_, anyhow::Error>(TokioIo::new(tls))
                }
            });
            // The scheme only tells tonic to speak HTTP/2 over the stream the
            // connector returns; TLS is the connector's business.
            let endpoint = Endpoint::from_shared(format!("http://{}", self.address))?
                .connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(Duration::from_secs(30));
            Ok(endpoint.connect_with_connector(connector).await?)
        })
    }

    fn describe(&self) -> String {
        format!("{} (mutual TLS, expecting {})", self.address, self.san)
    }
}

/// The name sent as SNI: the address's host. pilot is checked by its SAN
/// (see [`SanVerifier`]), not by this name.
fn server_name(address: &str) -> anyhow::Result<ServerName<'static>> {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok(ServerName::try_from(host.to_string())?)
}

/// Client settings for `identity`: its chain and key as our certificate,
/// pilot verified against its trust bundle and `san`.
pub fn client_config(
    identity: &WorkloadIdentity,
    san: &str,
) -> Result<rustls::ClientConfig, TlsUpstreamError> {
    let chain = identity
        .chain()
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsUpstreamError::Identity(error.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(identity.private_key().pem().as_bytes())
        .map_err(|error| TlsUpstreamError::Identity(error.to_string()))?;
    let mut roots = RootCertStore::empty();
    for pem in identity.trust_bundle() {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|error| TlsUpstreamError::Identity(error.to_string()))?;
        roots.add(der)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = CheckedServerCert::new(
        SanVerifier {
            roots: Arc::new(roots),
            san: san.to_string(),
        },
        provider.clone(),
    );
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts a server certificate that chains to `roots` and carries `san` as
/// a URI or DNS SAN, whatever name was dialled: pilot is reached by IP or
/// service name, but it is known by its SPIFFE ID (rustls' own
/// `WebPkiServerVerifier` would check the dialled name instead).
#[derive(Debug)]
struct SanVerifier {
    roots: Arc<RootCertStore>,
    san: String,
}

impl ServerCertCheck for SanVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        provider: &CryptoProvider,
    ) -> Result<(), rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            provider.signature_verification_algorithms.all,
        )?;
        // `General` rather than `CertificateError::Other`: rustls prints the
        // latter with Debug, and the operator needs the names in the log.
        check_san(end_entity, &self.san).map_err(|error| rustls::Error::General(error.to_string()))
    }
}

/// Whether the certificate `der` carries `expected` as a URI or DNS SAN
/// (exact match; DNS names compare case-insensitively).
pub fn check_san(der: &[u8], expected: &str) -> Result<(), TlsUpstreamError> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|error| TlsUpstreamError::Unparsable(error.to_string()))?;
    let names = cert
        .subject_alternative_name()
        .map_err(|error| TlsUpstreamError::Unparsable(error.to_string()))?
        .map(|extension| extension.value.general_names.clone())
        .unwrap_or_default();
    let mut found = Vec::new();
    for name in names {
        let matches = match name {
            GeneralName::URI(uri) => {
                found.push(uri.to_string());
                uri == expected
            }
            GeneralName::DNSName(dns) => {
                found.push(dns.to_string());
                dns.eq_ignore_ascii_case(expected)
            }
            _ => false,
        };
        if matches {
            return Ok(());
        }
    }
    Err(TlsUpstreamError::SanMismatch {
        expected: expected.to_string(),
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use workload_identity::testing::TestCa;

    const PILOT: &str = "spiffe://cluster.local/ns/istio-system/sa/pilot";

    fn der_of(identity: &WorkloadIdentity) -> Vec<u8> {
        CertificateDer::from_pem_slice(identity.chain()[0].as_bytes())
            .unwrap()
            .to_vec()
    }

    fn with_dns_name(name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn accepts_the_expected_spiffe_id() {
        let identity = TestCa::new().issue(PILOT, Duration::from_secs(3600));
        check_san(&der_of(&identity), PILOT).unwrap();
    }

    #[test]
    fn refuses_another_spiffe_id_and_says_what_it_found() {
        let identity = TestCa::new().issue(
            "spiffe://cluster.local/ns/default/sa/impostor",
            Duration::from_secs(3600),
        );
        let error = check_san(&der_of(&identity), PILOT).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("ns/default/sa/impostor"), "{message}");
        assert!(message.contains(PILOT), "{message}");
    }

    #[test]
    fn refuses_a_prefix_or_a_different_trust_domain() {
        let identity = TestCa::new().issue(
            "spiffe://cluster.local/ns/istio-system/sa/pilot-canary",
            Duration::from_secs(3600),
        );
        assert!(check_san(&der_of(&identity), PILOT).is_err());
        let other_domain = TestCa::new().issue(
            "spiffe://other.example/ns/istio-system/sa/pilot",
            Duration::from_secs(3600),
        );
        assert!(check_san(&der_of(&other_domain), PILOT).is_err());
    }

    #[test]
    fn accepts_a_dns_san_case_insensitively() {
        let der = with_dns_name("istiod.istio-system.svc");
        check_san(&der, "Istiod.Istio-System.svc").unwrap();
        assert!(check_san(&der, "pilot.istio-system.svc").is_err());
        assert!(check_san(&der, PILOT).is_err());
    }

    #[test]
    fn sni_is_the_dialled_host() {
        assert_eq!(
            server_name("127.0.0.1:15012").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("pilot.istio-system.svc:15012").unwrap(),
            ServerName::try_from("pilot.istio-system.svc").unwrap()
        );
        assert_eq!(
            server_name("[::1]:15012").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
    }

    #[test]
    fn builds_client_settings_with_h2() {
        let identity = TestCa::new().issue(
            "spiffe://cluster.local/ns/default/sa/app",
            Duration::from_secs(3600),
        );
        let config = client_config(&identity, PILOT).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
