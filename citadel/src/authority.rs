//! The certificate authority: a signing CA (self-signed root or plug-in
//! intermediate) that issues short-lived workload certificates.
//!
//! Its state lives in a directory with Istio's file names, so a directory
//! prepared for Istio's plug-in CA works here unchanged.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::VerifiedCsr;
use crate::identity::SpiffeId;
use crate::keys::{KeyError, RsaKeySize, generate_rsa_pkcs8_pem};

/// The signing CA's certificate (the root itself when self-signed).
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// The signing CA's private key, PKCS#8 PEM.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The trust bundle workloads are given: every trusted root, one or more
/// (two while a root rotation is under way).
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// The signing CA's chain up to the root, signing CA first.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

pub const DEFAULT_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
pub const DEFAULT_MAX_WORKLOAD_CERT_TTL: Duration = Duration::from_secs(90 * 24 * 60 * 60);
pub const ROOT_CERT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// Certificates start a little in the past so a peer whose clock runs slightly
/// behind ours does not reject a certificate that is not yet valid.
pub(crate) const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(60);

/// Why the authority could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
    #[error("CA key does not match the public key of {CA_CERT_FILE}")]
    KeyMismatch,
    #[error("{CA_CERT_FILE} is not a CA certificate (basicConstraints CA:TRUE missing)")]
    NotACa,
    #[error("CA chain is broken: {subject:?} is not signed by {issuer:?}")]
    BrokenChain { subject: String, issuer: String },
    #[error("{ROOT_CERT_FILE} does not hold the root that issued {CA_CERT_FILE} ({issuer:?})")]
    RootNotInBundle { issuer: String },
    #[error("creating the root certificate: {0}")]
    Generation(rcgen::Error),
    #[error("creating the root key: {0}")]
    KeyGeneration(KeyError),
    #[error("system random number generator failed")]
    RandomUnavailable,
}

/// Why a signing request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("requested certificate TTL {requested:?} exceeds the maximum {max:?}")]
    TtlTooLong { requested: Duration, max: Duration },
    #[error("requested certificate TTL must be positive")]
    ZeroTtl,
    #[error("CSR asks for identity {requested:?} but the caller proved {proved:?}")]
    IdentityMismatch { requested: String, proved: String },
    #[error("CSR public key is not usable for a certificate: {0}")]
    UnusableKey(String),
    #[error("signing CA has expired")]
    CaExpired,
    #[error("signing the certificate: {0}")]
    Signing(String),
}

/// The key the self-signed root is made with.
pub enum RootKey {
    /// Generate a fresh ECDSA P-256 key (the default).
    GenerateEcdsaP256,
    /// Generate a fresh RSA key of `bits`.
    GenerateRsa { bits: RsaKeySize },
    /// Use a key made elsewhere, e.g. with openssl.
    Pkcs8Pem(String),
}

/// Limits applied to every signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigningPolicy {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for SigningPolicy {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_WORKLOAD_CERT_TTL,
            max_ttl: DEFAULT_MAX_WORKLOAD_CERT_TTL,
        }
    }
}

/// The PEM files that make up a CA, named as in Istio's CA directory.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFiles {
    pub ca_cert: String,
    pub ca_key: String,
    pub root_cert: String,
    pub cert_chain: String,
}

/// Never prints the private key, so a CaFiles can be logged safely.
impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFiles")
            .field("ca_cert", &self.ca_cert)
            .field("ca_key", &"<redacted>")
            .field("root_cert", &self.root_cert)
            .field("cert_chain", &self.cert_chain)
            .finish()
    }
}

impl CaFiles {
    /// Reads the four files; `cert-chain.pem` may be absent for a
    /// self-signed CA, and `root-cert.pem` then defaults to `ca-cert.pem`.
    pub fn read_from(dir: &Path) -> Result<Self, AuthorityError> {
        let ca_cert = read_file(&dir.join(CA_CERT_FILE))?;
        let ca_key = read_file(&dir.join(CA_KEY_FILE))?;
        let root_cert = read_optional_file(&dir.join(ROOT_CERT_FILE))?.unwrap_or(ca_cert.clone());
        let cert_chain = read_optional_file(&dir.join(CERT_CHAIN_FILE))?.unwrap_or_default();
        Ok(Self {
            ca_cert,
            ca_key,
            root_cert,
            cert_chain,
        })
    }

    /// Writes the files, the key readable by its owner only. `ca-cert.pem` is
    /// written last: its presence is what marks the directory as holding a CA.
    pub fn write_to(&self, dir: &Path) -> Result<(), AuthorityError> {
        fs::create_dir_all(dir).map_err(|source| io_error(dir, source))?;
        write_file_atomically(&dir.join(CA_KEY_FILE), &self.ca_key, 0o600)?;
        write_file_atomically(&dir.join(ROOT_CERT_FILE), &self.root_cert, 0o644)?;
        write_file_atomically(&dir.join(CERT_CHAIN_FILE), &self.cert_chain, 0o644)?;
        write_file_atomically(&dir.join(CA_CERT_FILE), &self.ca_cert, 0o644)
    }
}

/// A loaded CA, ready to sign.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// The earliest expiry in the chain; no leaf may outlive it.
    chain_not_after: OffsetDateTime,
    root_not_after: OffsetDateTime,
    /// Signing CA first, root last: what follows the leaf in every chain.
    chain_above_leaf: Vec<String>,
    /// Every trusted root, PEM concatenated as in `root-cert.pem`.
    trust_bundle: String,
    trust_bundle_der: Vec<Vec<u8>>,
    policy: SigningPolicy,
}

impl Authority {
    /// Loads the CA kept in `dir`, or creates a self-signed root there on
    /// first start and reuses it on every later one.
    pub fn load_or_create(
        dir: &Path,
        organization: &str,
        root_key: RootKey,
        policy: SigningPolicy,
    ) -> Result<Self, AuthorityError> {
        if !Self::holds_ca(dir) {
            create_self_signed_root(organization, root_key)?.write_to(dir)?;
        }
        Self::load_from_dir(dir, policy)
    }

    /// Whether `dir` holds a CA already (its `ca-cert.pem` is written last).
    pub fn holds_ca(dir: &Path) -> bool {
        dir.join(CA_CERT_FILE).exists()
    }

    /// Loads a CA from a directory in Istio's layout, self-signed or plug-in.
    pub fn load_from_dir(dir: &Path, policy: SigningPolicy) -> Result<Self, AuthorityError> {
        Self::from_dir_files(dir, &CaFiles::read_from(dir)?, policy)
    }

    /// Like [`Authority::from_files`] for files read from `dir`, which errors
    /// then name.
    pub fn from_dir_files(
        dir: &Path,
        files: &CaFiles,
        policy: SigningPolicy,
    ) -> Result<Self, AuthorityError> {
        Self::from_files(files, policy).map_err(|error| match error {
            AuthorityError::InvalidFile { path, reason } => AuthorityError::InvalidFile {
                path: dir.join(path),
                reason,
            },
            other => other,
        })
    }

    pub fn from_files(files: &CaFiles, policy: SigningPolicy) -> Result<Self, AuthorityError> {
        let ca_cert_der = single_cert_der(CA_CERT_FILE, &files.ca_cert)?;
        let trust_bundle_der = cert_ders(ROOT_CERT_FILE, &files.root_cert)?;
        let chain_ders = cert_ders(CERT_CHAIN_FILE, &files.cert_chain)?;
        let ca_key =
            KeyPair::from_pem(&files.ca_key).map_err(|error| AuthorityError::InvalidFile {
                path: CA_KEY_FILE.into(),
                reason: error.to_string(),
            })?;

        check_signing_ca(&ca_cert_der, &ca_key)?;
        let chain = chain_to_root(ca_cert_der.clone(), chain_ders, &trust_bundle_der)?;
        let expiry = check_chain_links(&chain)?;
        let issuer = Issuer::from_ca_cert_der(&ca_cert_der.into(), ca_key).map_err(|error| {
            AuthorityError::InvalidFile {
                path: CA_CERT_FILE.into(),
                reason: error.to_string(),
            }
        })?;
        Ok(Self {
            issuer,
            chain_not_after: expiry.earliest,
            root_not_after: expiry.root,
            chain_above_leaf: chain.iter().map(|der| der_to_pem(der)).collect(),
            trust_bundle: trust_bundle_der.iter().map(|der| der_to_pem(der)).collect(),
            trust_bundle_der,
            policy,
        })
    }

    /// When the root expires, for `citadel_server_root_cert_expiry_timestamp`.
    pub fn root_not_after(&self) -> OffsetDateTime {
        self.root_not_after
    }

    /// When the first certificate of the signing chain expires, for
    /// `citadel_server_cert_chain_expiry_timestamp`.
    pub fn cert_chain_not_after(&self) -> OffsetDateTime {
        self.chain_not_after
    }

    /// The trust bundle workloads should be given: every trusted root, PEM,
    /// as in `root-cert.pem`. One root, except during a root rotation.
    pub fn root_cert_pem(&self) -> &str {
        &self.trust_bundle
    }

    /// The trusted roots, DER, in bundle order.
    pub fn trust_bundle_der(&self) -> &[Vec<u8>] {
        &self.trust_bundle_der
    }

    /// The root the signing chain ends in, PEM: the last certificate of every
    /// chain this authority issues.
    pub fn signing_root_pem(&self) -> &str {
        self.chain_above_leaf.last().map_or("", String::as_str)
    }

    pub fn policy(&self) -> SigningPolicy {
        self.policy
    }

    /// Issues a workload certificate for `identity`, the identity the caller
    /// proved, never one it merely asked for. Returns PEM certificates, leaf
    /// first and root last.
    pub fn sign(
        &self,
        csr: &VerifiedCsr,
        identity: &SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, SignError> {
        let ttl = self.checked_ttl(ttl)?;
        check_requested_identity(csr, identity)?;
        let public_key = SubjectPublicKeyInfo::from_der(csr.subject_public_key_info_der())
            .map_err(|error| SignError::UnusableKey(error.to_string()))?;
        let params = self.leaf_params(identity, ttl)?;
        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|error| SignError::Signing(error.to_string()))?;
        Ok(std::iter::once(der_to_pem(leaf.der()))
            .chain(self.chain_above_leaf.iter().cloned())
            .collect())
    }

    /// Issues citadel's own TLS serving certificate for `dns_names`, with a
    /// fresh P-256 key. Returns the PEM chain (leaf first) and the PKCS#8 key.
    pub fn issue_serving_cert(
        &self,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<(Vec<String>, String), SignError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|error| SignError::Signing(error.to_string()))?;
        let now = OffsetDateTime::now_utc();
        if now >= self.chain_not_after {
            return Err(SignError::CaExpired);
        }
        let mut params = CertificateParams::new(dns_names.to_vec())
            .map_err(|error| SignError::Signing(error.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params.serial_number = Some(
            random_serial_number()
                .map_err(|_| SignError::Signing("system random number generator failed".into()))?,
        );
        params.not_before = now - CLOCK_SKEW_BACKDATE;
        params.not_after = (now + ttl).min(self.chain_not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|error| SignError::Signing(error.to_string()))?;
        let chain = std::iter::once(der_to_pem(leaf.der()))
            .chain(self.chain_above_leaf.iter().cloned())
            .collect();
        Ok((chain, encode_pem("PRIVATE KEY", &key.serialize_der())))
    }

    fn checked_ttl(&self, requested: Option<Duration>) -> Result<Duration, SignError> {
        let ttl = requested.unwrap_or(self.policy.default_ttl);
        if ttl.is_zero() {
            return Err(SignError::ZeroTtl);
        }
        if ttl > self.policy.max_ttl {
            return Err(SignError::TtlTooLong {
                requested: ttl,
                max: self.policy.max_ttl,
            });
        }
        Ok(ttl)
    }

    fn leaf_params(
        &self,
        identity: &SpiffeId,
        ttl: Duration,
    ) -> Result<CertificateParams, SignError> {
        let now = OffsetDateTime::now_utc();
        if now >= self.chain_not_after {
            return Err(SignError::CaExpired);
        }
        let uri = identity
            .to_uri()
            .try_into()
            .map_err(|error: rcgen::Error| SignError::Signing(error.to_string()))?;
        let mut params = CertificateParams::default();
        // Like Istio's workload certificates the subject is empty and the
        // identity lives only in the (then critical) URI SAN.
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.serial_number = Some(
            random_serial_number()
                .map_err(|_| SignError::Signing("system random number generator failed".into()))?,
        );
        params.not_before = now - CLOCK_SKEW_BACKDATE;
        // A leaf never outlives the chain that vouches for it.
        params.not_after = (now + ttl).min(self.chain_not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

fn check_requested_identity(csr: &VerifiedCsr, identity: &SpiffeId) -> Result<(), SignError> {
    let proved = identity.to_uri();
    match csr.requested_uri() {
        Some(requested) if requested != proved => Err(SignError::IdentityMismatch {
            requested: requested.to_owned(),
            proved,
        }),
        _ => Ok(()),
    }
}

/// 16 random bytes, unique in practice: the top bit cleared keeps the serial
/// positive and a set low bit keeps its first byte non-zero, so it encodes to
/// exactly 16 octets, within RFC 5280's 20-octet limit.
fn random_serial_number() -> Result<SerialNumber, ring::error::Unspecified> {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Makes the files of a new self-signed root CA, valid for ten years.
pub fn create_self_signed_root(
    organization: &str,
    root_key: RootKey,
) -> Result<CaFiles, AuthorityError> {
    create_self_signed_root_valid_for(organization, root_key, ROOT_CERT_VALIDITY)
}

/// Makes the files of a new self-signed root CA valid for `validity`.
pub fn create_self_signed_root_valid_for(
    organization: &str,
    root_key: RootKey,
    validity: Duration,
) -> Result<CaFiles, AuthorityError> {
    let key = match root_key {
        RootKey::GenerateEcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(AuthorityError::Generation)?,
        RootKey::GenerateRsa { bits } => {
            let pem = generate_rsa_pkcs8_pem(bits).map_err(AuthorityError::KeyGeneration)?;
            KeyPair::from_pem(&pem).map_err(AuthorityError::Generation)?
        }
        RootKey::Pkcs8Pem(pem) => KeyPair::from_pem(&pem).map_err(AuthorityError::Generation)?,
    };
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, organization);
    params
        .distinguished_name
        .push(DnType::CommonName, "Trireme root CA");
    params.serial_number =
        Some(random_serial_number().map_err(|_| AuthorityError::RandomUnavailable)?);
    params.not_before = now - CLOCK_SKEW_BACKDATE;
    params.not_after = now + validity;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params
        .self_signed(&key)
        .map_err(AuthorityError::Generation)?;
    let root_pem = der_to_pem(root.der());
    Ok(CaFiles {
        ca_cert: root_pem.clone(),
        ca_key: encode_pem("PRIVATE KEY", &key.serialize_der()),
        root_cert: root_pem.clone(),
        cert_chain: root_pem,
    })
}

struct ChainExpiry {
    /// The first certificate of the chain to expire.
    earliest: OffsetDateTime,
    root: OffsetDateTime,
}

/// The chain that follows a leaf: the signing CA, whatever `cert-chain.pem`
/// adds above it, then the bundle root that issued the top of that, each
/// certificate once and in that order.
fn chain_to_root(
    ca_cert: Vec<u8>,
    cert_chain: Vec<Vec<u8>>,
    trust_bundle: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, AuthorityError> {
    let mut ordered: Vec<Vec<u8>> = Vec::new();
    for der in std::iter::once(ca_cert).chain(cert_chain) {
        if !ordered.contains(&der) {
            ordered.push(der);
        }
    }
    let top = ordered.last().expect("the signing CA is always there");
    if trust_bundle.contains(top) {
        return Ok(ordered);
    }
    let top_cert = parse_cert(top)?;
    let root = trust_bundle.iter().find(|root_der| {
        parse_cert(root_der).is_ok_and(|root| {
            root.subject() == top_cert.issuer()
                && top_cert.verify_signature(Some(root.public_key())).is_ok()
        })
    });
    match root {
        Some(root) => {
            ordered.push(root.clone());
            Ok(ordered)
        }
        None => Err(AuthorityError::RootNotInBundle {
            issuer: top_cert.issuer().to_string(),
        }),
    }
}

/// Checks each certificate is signed by the next and the last by itself, so
/// a plug-in directory with a mismatched root is refused at load time rather
/// than producing chains no workload can verify.
fn check_chain_links(chain: &[Vec<u8>]) -> Result<ChainExpiry, AuthorityError> {
    let certs = chain
        .iter()
        .map(|der| parse_cert(der))
        .collect::<Result<Vec<_>, _>>()?;
    for (index, cert) in certs.iter().enumerate() {
        let issuer = certs.get(index + 1).unwrap_or(cert);
        cert.verify_signature(Some(issuer.public_key()))
            .map_err(|_| AuthorityError::BrokenChain {
                subject: cert.subject().to_string(),
                issuer: issuer.subject().to_string(),
            })?;
    }
    let not_after = |cert: &X509Certificate<'_>| cert.validity().not_after.to_datetime();
    // The chain always holds the signing CA and the root; were it empty,
    // "expired now" makes signing fail closed.
    let now = OffsetDateTime::now_utc();
    Ok(ChainExpiry {
        earliest: certs.iter().map(not_after).min().unwrap_or(now),
        root: certs.last().map_or(now, not_after),
    })
}

/// Checks the signing CA is a CA and matches its key.
fn check_signing_ca(ca_cert_der: &[u8], ca_key: &KeyPair) -> Result<(), AuthorityError> {
    let cert = parse_cert(ca_cert_der)?;
    if !cert.is_ca() {
        return Err(AuthorityError::NotACa);
    }
    if cert.public_key().raw != ca_key.subject_public_key_info().as_slice() {
        return Err(AuthorityError::KeyMismatch);
    }
    Ok(())
}

pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, AuthorityError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|error| AuthorityError::InvalidFile {
            path: CA_CERT_FILE.into(),
            reason: error.to_string(),
        })
}

pub(crate) fn single_cert_der(file: &str, pem: &str) -> Result<Vec<u8>, AuthorityError> {
    let mut ders = cert_ders(file, pem)?;
    match ders.len() {
        1 => Ok(ders.remove(0)),
        n => Err(AuthorityError::InvalidFile {
            path: file.into(),
            reason: format!("expected one certificate, found {n}"),
        }),
    }
}

/// The DER of every certificate in a PEM file, in file order.
pub(crate) fn cert_ders(file: &str, pem: &str) -> Result<Vec<Vec<u8>>, AuthorityError> {
    let invalid = |reason: String| AuthorityError::InvalidFile {
        path: file.into(),
        reason,
    };
    let blocks = pem::parse_many(pem).map_err(|error| invalid(error.to_string()))?;
    blocks
        .into_iter()
        .map(|block| {
            if block.tag() != "CERTIFICATE" {
                return Err(invalid(format!("unexpected PEM block {:?}", block.tag())));
            }
            X509Certificate::from_der(block.contents())
                .map_err(|error| invalid(error.to_string()))?;
            Ok(block.into_contents())
        })
        .collect()
}

pub(crate) fn der_to_pem(der: &[u8]) -> String {
    encode_pem("CERTIFICATE", der)
}

/// PEM with Unix line endings, as openssl writes it; the `pem` crate would
/// otherwise use CRLF.
fn encode_pem(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> AuthorityError {
    AuthorityError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_file(path: &Path) -> Result<String, AuthorityError> {
    fs::read_to_string(path).map_err(|source| io_error(path, source))
}

pub(crate) fn read_optional_file(path: &Path) -> Result<Option<String>, AuthorityError> {
    match fs::read_to_string(path) {
        Ok(contents) if contents.trim().is_empty() => Ok(None),
        Ok(contents) => Ok(Some(contents)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error(path, source)),
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves a
/// half-written key or certificate behind.
pub(crate) fn write_file_atomically(
    path: &Path,
    contents: &str,
    mode: u32,
) -> Result<(), AuthorityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = path.with_extension("pem.tmp");
    // A leftover from a crash would keep its old mode; start afresh.
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|source| io_error(&temporary, source))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, source))?;
    fs::rename(&temporary, path).map_err(|source| io_error(path, source))
}
