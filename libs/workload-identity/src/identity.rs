//! A workload's identity as issued: its private key, the certificate chain the
//! CA returned, and the roots it trusts. Built only from a chain that was
//! checked to name the requested SPIFFE ID and to certify our own key.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::KeyPair;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

/// Why a CA's answer cannot be used as our identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the CA returned an empty certificate chain")]
    EmptyChain,
    #[error("certificate {index} of the chain is not a readable PEM certificate: {reason}")]
    UnreadableCertificate { index: usize, reason: String },
    #[error("the certificate is for {found:?}, not the requested {expected}")]
    WrongIdentity {
        expected: String,
        found: Vec<String>,
    },
    #[error("the certificate does not certify the key we generated")]
    WrongKey,
    #[error("the certificate expired at {not_after:?}, before it arrived")]
    AlreadyExpired { not_after: SystemTime },
    #[error("the private key is unreadable: {0}")]
    UnreadableKey(rcgen::Error),
}

/// A private key, PKCS#8 PEM. Wiped from memory when dropped and never shown
/// by `Debug`, so it cannot reach a log line by accident.
#[derive(Clone)]
pub struct PrivateKey(Zeroizing<String>);

impl PrivateKey {
    pub fn new(pkcs8_pem: Zeroizing<String>) -> Self {
        Self(pkcs8_pem)
    }

    /// The key in PEM: only for handing it to a TLS stack (Envoy over SDS,
    /// rustls), never for logging.
    pub fn pem(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

/// What we read from the leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Leaf {
    /// Lowercase hex, no leading zeros: how Envoy's admin `/certs` and
    /// `openssl x509 -serial` (in uppercase) print it.
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// A certificate held by this workload, with its key and trust bundle.
#[derive(Clone)]
pub struct WorkloadIdentity {
    spiffe_id: String,
    key: PrivateKey,
    chain: Vec<String>,
    trust_bundle: Vec<String>,
    leaf: Leaf,
    received_at: SystemTime,
}

impl WorkloadIdentity {
    /// Checks the CA's `chain` (PEM, leaf first) against what we asked for:
    /// `spiffe_id` as the leaf's only URI SAN, our `key`, not yet expired at
    /// `received_at`. `configured_roots` (PEM certificates, e.g. the
    /// root-cert file) plus the chain's last certificate become the trust
    /// bundle.
    pub fn new(
        spiffe_id: &str,
        key: PrivateKey,
        chain: Vec<String>,
        configured_roots: &[String],
        received_at: SystemTime,
    ) -> Result<Self, IdentityError> {
        let leaf_pem = chain.first().ok_or(IdentityError::EmptyChain)?;
        let leaf_der = certificate_der(leaf_pem, 0)?;
        let leaf = check_leaf(&leaf_der, spiffe_id, &key, received_at)?;
        let trust_bundle = trust_bundle(configured_roots, chain.last())?;
        Ok(Self {
            spiffe_id: spiffe_id.to_owned(),
            key,
            chain,
            trust_bundle,
            leaf,
            received_at,
        })
    }

    pub fn spiffe_id(&self) -> &str {
        &self.spiffe_id
    }

    pub fn private_key(&self) -> &PrivateKey {
        &self.key
    }

    /// The chain as the CA returned it, PEM, leaf first, root last.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// The chain as one PEM document, the way Envoy and rustls take it.
    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|pem| with_newline(pem)).collect()
    }

    /// The roots this workload trusts, PEM, each once.
    pub fn trust_bundle(&self) -> &[String] {
        &self.trust_bundle
    }

    pub fn trust_bundle_pem(&self) -> String {
        self.trust_bundle
            .iter()
            .map(|pem| with_newline(pem))
            .collect()
    }

    /// The leaf's serial number in lowercase hex without leading zeros.
    pub fn serial(&self) -> &str {
        &self.leaf.serial
    }

    pub fn not_before(&self) -> SystemTime {
        self.leaf.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.leaf.not_after
    }

    /// When the certificate arrived. The CA backdates `not_before` for
    /// clock skew, so this, not `not_before`, starts the lifetime the
    /// refresh is scheduled from.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }

    /// From arrival to expiry.
    pub fn lifetime(&self) -> Duration {
        self.leaf
            .not_after
            .duration_since(self.received_at)
            .unwrap_or_default()
    }

    /// Time left before expiry at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.leaf.not_after.duration_since(now).unwrap_or_default()
    }

    /// Seconds left at `now`, negative once expired (Istio's
    /// `cert_expiry_seconds` reports it that way).
    pub fn seconds_until_expiry(&self, now: SystemTime) -> f64 {
        match self.leaf.not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }

    /// Whether the certificate is inside its validity window at `now`: only
    /// then can it prove who we are (e.g. to renew).
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.leaf.not_before <= now && now < self.leaf.not_after
    }
}

impl fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.leaf.serial)
            .field("not_after", &unix_seconds(self.leaf.not_after))
            .field("chain_len", &self.chain.len())
            .field("trust_bundle_len", &self.trust_bundle.len())
            .field("key", &self.key)
            .finish()
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn with_newline(pem: &str) -> String {
    if pem.ends_with('\n') {
        pem.to_owned()
    } else {
        format!("{pem}\n")
    }
}

fn certificate_der(pem_text: &str, index: usize) -> Result<Vec<u8>, IdentityError> {
    let unreadable = |reason: String| IdentityError::UnreadableCertificate { index, reason };
    let block = pem::parse(pem_text).map_err(|error| unreadable(error.to_string()))?;
    if block.tag() != "CERTIFICATE" {
        return Err(unreadable(format!("a {} block", block.tag())));
    }
    Ok(block.into_contents())
}

fn check_leaf(
    der: &[u8],
    spiffe_id: &str,
    key: &PrivateKey,
    received_at: SystemTime,
) -> Result<Leaf, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|error| IdentityError::UnreadableCertificate {
            index: 0,
            reason: error.to_string(),
        })?;
    let uris = uri_sans(&cert);
    if uris != [spiffe_id] {
        return Err(IdentityError::WrongIdentity {
            expected: spiffe_id.to_owned(),
            found: uris,
        });
    }
    let our_key = KeyPair::from_pem(key.pem()).map_err(IdentityError::UnreadableKey)?;
    if cert.public_key().subject_public_key.data.as_ref() != our_key.public_key_raw() {
        return Err(IdentityError::WrongKey);
    }
    let leaf = Leaf {
        serial: format!("{:x}", cert.serial),
        not_before: system_time(cert.validity().not_before.timestamp()),
        not_after: system_time(cert.validity().not_after.timestamp()),
    };
    if leaf.not_after <= received_at {
        return Err(IdentityError::AlreadyExpired {
            not_after: leaf.not_after,
        });
    }
    Ok(leaf)
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

fn system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(seconds) => UNIX_EPOCH + Duration::from_secs(seconds),
        Err(_) => UNIX_EPOCH,
    }
}

/// `configured` roots then the chain's own root, each certificate once
/// (compared by DER, so formatting differences do not duplicate a root).
fn trust_bundle(
    configured: &[String],
    chain_root: Option<&String>,
) -> Result<Vec<String>, IdentityError> {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut bundle = Vec::new();
    for (index, pem_text) in configured.iter().chain(chain_root).enumerate() {
        let der = certificate_der(pem_text, index)?;
        if !seen.contains(&der) {
            seen.push(der);
            bundle.push(pem_text.clone());
        }
    }
    Ok(bundle)
}

/// Splits a PEM file's text into its certificates, one PEM string each;
/// other blocks (keys, comments) are skipped.
pub fn split_certificates(pem_text: &str) -> Result<Vec<String>, pem::PemError> {
    Ok(pem::parse_many(pem_text)?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| {
            pem::encode_config(
                &block,
                pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, KeyType};
    use crate::testing::TestCa;

    const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

    fn key() -> PrivateKey {
        PrivateKey::new(keys::generate(KeyType::EcdsaP256).unwrap())
    }

    fn chain_for(ca: &TestCa, id: &str, key: &PrivateKey) -> Vec<String> {
        let csr = keys::csr_pem(id, key.pem()).unwrap();
        ca.sign_csr(&csr, Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let identity = TestCa::new().issue(ID, Duration::from_secs(3600));
        let key_pem = identity.private_key().pem().to_owned();
        let key_body: String = key_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        for shown in [
            format!("{identity:?}"),
            format!("{identity:#?}"),
            format!("{:?}", identity.private_key()),
            format!("{:?}", Some(Arc::new(identity.clone()))),
        ] {
            assert!(!shown.contains(&key_body), "{shown}");
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        let shown = format!("{identity:?}");
        assert!(
            shown.contains(ID) && shown.contains(identity.serial()),
            "{shown}"
        );
    }

    use std::sync::Arc;

    #[test]
    fn reads_serial_and_validity_from_the_leaf() {
        let ca = TestCa::new();
        let key = key();
        let before = SystemTime::now();
        let identity =
            WorkloadIdentity::new(ID, key.clone(), chain_for(&ca, ID, &key), &[], before).unwrap();
        assert!(!identity.serial().is_empty());
        assert!(!identity.serial().starts_with('0'), "{}", identity.serial());
        let lifetime = identity.lifetime().as_secs();
        assert!((3599..=3600).contains(&lifetime), "{lifetime}");
        assert!(identity.is_valid_at(before));
        assert!(!identity.is_valid_at(identity.not_after()));
        assert!(
            identity.seconds_until_expiry(identity.not_after() + Duration::from_secs(5)) < -4.0
        );
        assert_eq!(identity.chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn refuses_a_certificate_for_another_identity() {
        let ca = TestCa::new();
        let key = key();
        let other = "spiffe://cluster.local/ns/bookinfo/sa/ratings";
        let error = WorkloadIdentity::new(
            ID,
            key.clone(),
            chain_for(&ca, other, &key),
            &[],
            SystemTime::now(),
        )
        .unwrap_err();
        assert!(
            matches!(error, IdentityError::WrongIdentity { .. }),
            "{error}"
        );
    }

    #[test]
    fn refuses_a_certificate_for_another_key() {
        let ca = TestCa::new();
        let chain = chain_for(&ca, ID, &key());
        let error = WorkloadIdentity::new(ID, key(), chain, &[], SystemTime::now()).unwrap_err();
        assert!(matches!(error, IdentityError::WrongKey), "{error}");
    }

    #[test]
    fn refuses_a_certificate_that_expired_before_it_arrived() {
        let ca = TestCa::new();
        let key = key();
        let chain = chain_for(&ca, ID, &key);
        let late = SystemTime::now() + Duration::from_secs(7200);
        let error = WorkloadIdentity::new(ID, key, chain, &[], late).unwrap_err();
        assert!(
            matches!(error, IdentityError::AlreadyExpired { .. }),
            "{error}"
        );
    }

    #[test]
    fn refuses_an_empty_chain() {
        let error =
            WorkloadIdentity::new(ID, key(), Vec::new(), &[], SystemTime::now()).unwrap_err();
        assert!(matches!(error, IdentityError::EmptyChain), "{error}");
    }

    #[test]
    fn the_trust_bundle_holds_configured_roots_and_the_chain_root_once_each() {
        let (ca, other_root) = (TestCa::new(), TestCa::new());
        let key = key();
        let chain = chain_for(&ca, ID, &key);
        // The configured file repeats the chain's root, reformatted.
        let configured = [
            other_root.root_pem().to_owned(),
            ca.root_pem().replace('\n', "\r\n"),
        ];
        let identity =
            WorkloadIdentity::new(ID, key, chain, &configured, SystemTime::now()).unwrap();
        assert_eq!(
            identity.trust_bundle().len(),
            2,
            "{:?}",
            identity.trust_bundle()
        );
        assert_eq!(identity.trust_bundle()[0], other_root.root_pem());
        let bundle = identity.trust_bundle_pem();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    }

    #[test]
    fn splits_a_pem_file_into_its_certificates() {
        let (first, second) = (TestCa::new(), TestCa::new());
        let file = format!(
            "# roots\n{}{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            first.root_pem(),
            second.root_pem()
        );
        let certificates = split_certificates(&file).unwrap();
        assert_eq!(certificates.len(), 2);
    }
}
