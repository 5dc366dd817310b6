//! Workload certificates issued by one authority complete an mTLS handshake
//! with rustls, each side checking the other's SPIFFE ID; certificates from
//! another CA, peers with the wrong identity and peers without a certificate
//! are refused.
//!
//! SPIFFE certificates carry no DNS name, so the verifiers below do the
//! webpki chain check against the trust bundle themselves and then compare
//! the single URI SAN with the identity expected of the peer, instead of
//! rustls' hostname check.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use citadel::authority::{Authority, RootKey, SigningPolicy};
use citadel::csr::VerifiedCsr;
use citadel::identity::SpiffeId;
use citadel::rotation::{self, RotationPolicy, RotationStep};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    DistinguishedName as TlsDistinguishedName, RootCertStore, ServerConfig, ServerConnection,
    SignatureScheme, StreamOwned, SupportedProtocolVersion,
};
use time::OffsetDateTime;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const ID_X: &str = "spiffe://cluster.local/ns/a/sa/x";
const ID_Y: &str = "spiffe://cluster.local/ns/b/sa/y";
const ID_Z: &str = "spiffe://cluster.local/ns/b/sa/z";

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn new_authority(dir: &Path) -> Authority {
    new_authority_named(dir, "trireme-mtls-test")
}

fn new_authority_named(dir: &Path, organization: &str) -> Authority {
    Authority::load_or_create(
        dir,
        organization,
        RootKey::GenerateEcdsaP256,
        SigningPolicy::default(),
    )
    .unwrap()
}

fn trust_bundle(authority: &Authority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(authority.root_cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(roots)
}

/// A workload's credentials: the chain citadel returned, leaf first, and the
/// key that never left the workload.
struct Workload {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Does what a workload agent does: makes a key, sends a CSR for `id`, and
/// keeps the chain the authority signs.
fn issue(authority: &Authority, id: &str) -> Workload {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
    let csr = VerifiedCsr::from_pem(csr_pem.as_bytes()).unwrap();
    let identity: SpiffeId = id.parse().unwrap();
    let chain_pem = authority.sign(&csr, &identity, None).unwrap();
    let chain = chain_pem
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
        .collect();
    Workload {
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// The URI SANs of a certificate.
fn uri_sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut uris = Vec::new();
    for extension in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push((*uri).to_owned());
                }
            }
        }
    }
    uris
}

/// The peer must hold exactly one identity, the expected one.
fn check_peer_identity(
    end_entity: &CertificateDer<'_>,
    expected: &str,
) -> Result<(), rustls::Error> {
    if uri_sans(end_entity) == [expected] {
        Ok(())
    } else {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }
}

/// Client side: chain to the trust bundle, then the server's SPIFFE ID. The
/// TLS server name is ignored, since workload certificates have no DNS SAN.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected_id: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        check_peer_identity(end_entity, &self.expected_id)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side: rustls' webpki client verifier (chain, validity, clientAuth
/// usage), then the client's SPIFFE ID.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    expected_id: String,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[TlsDistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        check_peer_identity(end_entity, &self.expected_id)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn server_config(
    workload: &Workload,
    roots: Arc<RootCertStore>,
    expected_client_id: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .unwrap();
    let verifier = Arc::new(SpiffeClientVerifier {
        inner,
        expected_id: expected_client_id.to_owned(),
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(workload.chain.clone(), workload.key.clone_key())
        .unwrap();
    Arc::new(config)
}

fn client_builder(
    roots: Arc<RootCertStore>,
    expected_server_id: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let provider = provider();
    let verifier = Arc::new(SpiffeServerVerifier {
        roots,
        expected_id: expected_server_id.to_owned(),
        provider: provider.clone(),
    });
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
}

fn client_config(
    workload: &Workload,
    roots: Arc<RootCertStore>,
    expected_server_id: &str,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let config = client_builder(roots, expected_server_id, versions)
        .with_client_auth_cert(workload.chain.clone(), workload.key.clone_key())
        .unwrap();
    Arc::new(config)
}

/// How one side of a connection ended: the peer identity it authenticated,
/// or the TLS error (or, failing that, the I/O error) that stopped it.
type SideOutcome = Result<Vec<String>, rustls::Error>;

fn tls_error(error: io::Error) -> rustls::Error {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.clone(),
        None => rustls::Error::General(format!("i/o: {error}")),
    }
}

fn peer_ids(certs: Option<&[CertificateDer<'static>]>) -> Vec<String> {
    certs
        .and_then(|certs| certs.first())
        .map(uri_sans)
        .unwrap_or_default()
}

/// Runs one connection over loopback TCP: the client sends "ping" and waits
/// for "pong", so each side only succeeds once the other accepted it (in TLS
/// 1.3 the client finishes before the server has checked its certificate).
fn connect(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> (SideOutcome, SideOutcome) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server_side = thread::spawn(move || -> SideOutcome {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut tls = StreamOwned::new(ServerConnection::new(server).unwrap(), tcp);
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).map_err(tls_error)?;
        assert_eq!(&ping, b"ping");
        tls.write_all(b"pong").map_err(tls_error)?;
        tls.flush().map_err(tls_error)?;
        let ids = peer_ids(tls.conn.peer_certificates());
        tls.conn.send_close_notify();
        let _ = tls.flush();
        Ok(ids)
    });

    let client_side = (|| -> SideOutcome {
        let tcp = TcpStream::connect(address).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        // Any name will do: the verifier checks the SPIFFE ID instead.
        let name = ServerName::try_from("workload.invalid").unwrap();
        let mut tls = StreamOwned::new(ClientConnection::new(client, name).unwrap(), tcp);
        tls.write_all(b"ping").map_err(tls_error)?;
        tls.flush().map_err(tls_error)?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).map_err(tls_error)?;
        assert_eq!(&pong, b"pong");
        Ok(peer_ids(tls.conn.peer_certificates()))
    })();

    (server_side.join().unwrap(), client_side)
}

const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn assert_certificate_refused(outcome: &SideOutcome, expected: CertificateError) {
    match outcome {
        Err(rustls::Error::InvalidCertificate(error)) => assert_eq!(*error, expected),
        other => panic!("expected the certificate to be refused with {expected:?}, got {other:?}"),
    }
}

#[test]
fn two_workloads_of_one_ca_complete_mtls_checking_each_others_identity() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let roots = trust_bundle(&authority);
    let x = issue(&authority, ID_X);
    let y = issue(&authority, ID_Y);

    for versions in [TLS13, TLS12] {
        // y serves and expects x; x connects and expects y.
        let (server, client) = connect(
            server_config(&y, roots.clone(), ID_X, versions),
            client_config(&x, roots.clone(), ID_Y, versions),
        );
        assert_eq!(server.unwrap(), [ID_X], "{versions:?}");
        assert_eq!(client.unwrap(), [ID_Y], "{versions:?}");
    }
}

/// Another CA, and a lookalike CA whose root has exactly our root's subject
/// name (so the chain builder finds a candidate anchor, whose signature then
/// does not verify), with the error each yields.
fn foreign_authorities(dir: &Path) -> [(Authority, CertificateError); 2] {
    [
        (
            new_authority_named(&dir.join("theirs"), "another-mesh"),
            CertificateError::UnknownIssuer,
        ),
        (
            new_authority(&dir.join("lookalike")),
            CertificateError::BadSignature,
        ),
    ]
}

#[test]
fn client_refuses_a_server_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ours = new_authority(&dir.path().join("ours"));
    let roots = trust_bundle(&ours);
    let x = issue(&ours, ID_X);

    for (theirs, expected) in foreign_authorities(dir.path()) {
        // The right identity, but vouched for by a CA the client does not trust.
        let impostor = issue(&theirs, ID_Y);
        let (server, client) = connect(
            server_config(&impostor, roots.clone(), ID_X, TLS13),
            client_config(&x, roots.clone(), ID_Y, TLS13),
        );
        assert_certificate_refused(&client, expected);
        assert!(server.is_err(), "server got {server:?}");
    }
}

#[test]
fn server_refuses_a_client_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ours = new_authority(&dir.path().join("ours"));
    let roots = trust_bundle(&ours);
    let y = issue(&ours, ID_Y);

    for (theirs, expected) in foreign_authorities(dir.path()) {
        let impostor = issue(&theirs, ID_X);
        for versions in [TLS13, TLS12] {
            let (server, client) = connect(
                server_config(&y, roots.clone(), ID_X, versions),
                client_config(&impostor, roots.clone(), ID_Y, versions),
            );
            assert_certificate_refused(&server, expected.clone());
            assert!(client.is_err(), "{versions:?}: client got {client:?}");
        }
    }
}

#[test]
fn client_refuses_a_server_with_the_wrong_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let roots = trust_bundle(&authority);
    let x = issue(&authority, ID_X);
    // Same CA, same namespace, another service account.
    let z = issue(&authority, ID_Z);

    let (server, client) = connect(
        server_config(&z, roots.clone(), ID_X, TLS13),
        client_config(&x, roots, ID_Y, TLS13),
    );
    assert_certificate_refused(&client, CertificateError::ApplicationVerificationFailure);
    assert!(server.is_err(), "server got {server:?}");
}

#[test]
fn server_refuses_a_client_with_the_wrong_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let roots = trust_bundle(&authority);
    let y = issue(&authority, ID_Y);
    let z = issue(&authority, ID_Z);

    let (server, client) = connect(
        server_config(&y, roots.clone(), ID_X, TLS13),
        client_config(&z, roots, ID_Y, TLS13),
    );
    assert_certificate_refused(&server, CertificateError::ApplicationVerificationFailure);
    assert!(client.is_err(), "client got {client:?}");
}

#[test]
fn server_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let roots = trust_bundle(&authority);
    let y = issue(&authority, ID_Y);
    let anonymous = Arc::new(client_builder(roots.clone(), ID_Y, TLS13).with_no_client_auth());

    let (server, client) = connect(server_config(&y, roots, ID_X, TLS13), anonymous);
    assert!(
        matches!(server, Err(rustls::Error::NoCertificatesPresented)),
        "server got {server:?}"
    );
    assert!(client.is_err(), "client got {client:?}");
}

/// Takes the rotation one step at `now`, as citadel's periodic check does.
fn rotate(dir: &Path, policy: &RotationPolicy, now: OffsetDateTime) -> Option<RotationStep> {
    rotation::advance(dir, "trireme-mtls-test", policy, now, &|| {
        Ok(RootKey::GenerateEcdsaP256)
    })
    .unwrap()
}

fn reload(dir: &Path) -> Authority {
    Authority::load_from_dir(dir, SigningPolicy::default()).unwrap()
}

/// Both directions of an mTLS connection between `a` and `b`, each trusting
/// `roots`: (what the server saw, what the client saw) per direction.
fn mutual(
    a: (&Workload, &str),
    b: (&Workload, &str),
    roots: &Arc<RootCertStore>,
) -> [(SideOutcome, SideOutcome); 2] {
    [
        connect(
            server_config(a.0, roots.clone(), b.1, TLS13),
            client_config(b.0, roots.clone(), a.1, TLS13),
        ),
        connect(
            server_config(b.0, roots.clone(), a.1, TLS13),
            client_config(a.0, roots.clone(), b.1, TLS13),
        ),
    ]
}

#[test]
fn root_rotation_keeps_certificates_from_before_and_after_mutually_trusted_during_the_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let old = new_authority(dir.path());
    let before = issue(&old, ID_X);
    let policy = RotationPolicy {
        // Due at once, so the test need not wait years.
        grace_period_percentile: 100,
        root_validity: Duration::from_secs(10 * 365 * 24 * 3600),
        propagation_delay: Duration::from_secs(600),
        overlap: Duration::from_secs(3600),
    };
    let start = OffsetDateTime::now_utc();

    // Step 1: the new root is trusted, but the old one still signs.
    assert_eq!(
        rotate(dir.path(), &policy, start),
        Some(RotationStep::NewRootTrusted)
    );
    let trusting_both = reload(dir.path());
    assert_eq!(trusting_both.trust_bundle_der().len(), 2);
    assert_eq!(trusting_both.signing_root_pem(), old.signing_root_pem());
    let too_early = start + Duration::from_secs(300);
    assert_eq!(rotate(dir.path(), &policy, too_early), None);

    // Step 2: after the propagation delay the new root signs.
    let switch = start + Duration::from_secs(601);
    assert!(matches!(
        rotate(dir.path(), &policy, switch),
        Some(RotationStep::NewRootSigning { .. })
    ));
    let new = reload(dir.path());
    assert_ne!(new.signing_root_pem(), old.signing_root_pem());
    assert_eq!(new.trust_bundle_der().len(), 2);
    let after = issue(&new, ID_Y);
    let roots = trust_bundle(&new);
    for (server, client) in mutual((&before, ID_X), (&after, ID_Y), &roots) {
        assert!(
            server.is_ok() && client.is_ok(),
            "during the overlap: {server:?} / {client:?}"
        );
    }
    // A peer that never learnt the new root would refuse the new leaf: that
    // is what the propagation delay is for.
    let old_roots_only = trust_bundle(&old);
    let (_, client) = connect(
        server_config(&after, old_roots_only.clone(), ID_X, TLS13),
        client_config(&before, old_roots_only, ID_Y, TLS13),
    );
    assert!(client.is_err());

    // Step 3: once the overlap is over the old root leaves the bundle.
    assert_eq!(
        rotate(dir.path(), &policy, switch + Duration::from_secs(1800)),
        None
    );
    assert_eq!(
        rotate(dir.path(), &policy, switch + Duration::from_secs(3601)),
        Some(RotationStep::PreviousRootsRetired { count: 1 })
    );
    let retired = reload(dir.path());
    assert_eq!(retired.trust_bundle_der().len(), 1);
    assert_eq!(retired.root_cert_pem(), new.signing_root_pem());
    let roots = trust_bundle(&retired);
    let [(server, _), _] = mutual((&after, ID_Y), (&before, ID_X), &roots);
    assert!(
        server.is_err(),
        "a leaf of the retired root is no longer trusted"
    );
}
