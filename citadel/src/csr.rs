//! Parsing and checking of PEM PKCS#10 certificate signing requests.
//!
//! Every CSR comes from an untrusted caller, so each check fails closed with a
//! typed reason the transport layer can return as `INVALID_ARGUMENT`.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_SHA256WITHRSA,
    OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, Oid,
};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// The largest PEM CSR we read. A 4096-bit RSA CSR is about 2 KiB; the bound
/// keeps a hostile caller from making us parse megabytes.
pub const MAX_CSR_PEM_BYTES: usize = 64 * 1024;

/// RSA modulus sizes we sign for; smaller keys are weak, others unusual.
const ACCEPTED_RSA_BITS: [usize; 3] = [2048, 3072, 4096];
const MIN_RSA_BITS: usize = 2048;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is {size} bytes, larger than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("CSR is not valid PEM: {0}")]
    MalformedPem(String),
    #[error("PEM block is {0:?}, expected \"CERTIFICATE REQUEST\"")]
    NotACertificateRequest(String),
    #[error("CSR PEM holds more than one block")]
    SeveralPemBlocks,
    #[error("CSR is not a valid PKCS#10 request: {0}")]
    MalformedRequest(String),
    #[error("CSR signature algorithm {0} is not accepted (use ECDSA or RSA with SHA-2)")]
    UnsupportedSignatureAlgorithm(String),
    #[error("CSR signature does not verify against its own public key")]
    BadSignature,
    #[error("CSR key type {0} is not accepted (use ECDSA P-256 or RSA)")]
    UnsupportedKeyType(String),
    #[error("CSR EC key is on curve {0}, only P-256 is accepted")]
    UnsupportedCurve(String),
    #[error("CSR RSA key is {bits} bits, the minimum is {MIN_RSA_BITS}")]
    WeakRsaKey { bits: usize },
    #[error("CSR RSA key is {bits} bits, accepted sizes are 2048, 3072 and 4096")]
    UnsupportedRsaKeySize { bits: usize },
    #[error("CSR asks for {0} URI SANs, a workload certificate carries exactly one identity")]
    SeveralIdentities(usize),
}

/// The key types citadel signs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrKeyType {
    EcdsaP256,
    Rsa { bits: usize },
}

/// A CSR whose signature verified and whose key is acceptable. It holds only
/// what signing needs, so nothing else in the request can reach a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCsr {
    key_type: CsrKeyType,
    subject_public_key_info_der: Vec<u8>,
    requested_uri: Option<String>,
}

impl VerifiedCsr {
    /// Parses a PEM CSR and runs every check; see [`CsrError`] for the reasons
    /// a request is refused.
    pub fn from_pem(pem: &[u8]) -> Result<Self, CsrError> {
        let der = pem_to_der(pem)?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        let request = parse_request(der)?;
        check_signature_algorithm(request.signature_algorithm.oid())?;
        let key_type = check_public_key(&request.certification_request_info.subject_pki)?;
        request
            .verify_signature()
            .map_err(|_| CsrError::BadSignature)?;
        Ok(Self {
            key_type,
            subject_public_key_info_der: request
                .certification_request_info
                .subject_pki
                .raw
                .to_vec(),
            requested_uri: single_requested_uri(&request)?,
        })
    }

    pub fn key_type(&self) -> CsrKeyType {
        self.key_type
    }

    /// The DER SubjectPublicKeyInfo the issued certificate will certify.
    pub fn subject_public_key_info_der(&self) -> &[u8] {
        &self.subject_public_key_info_der
    }

    /// The URI SAN the CSR asks for, if any. It is only a request: the signer
    /// compares it with the identity the caller proved.
    pub fn requested_uri(&self) -> Option<&str> {
        self.requested_uri.as_deref()
    }
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, CsrError> {
    if pem.len() > MAX_CSR_PEM_BYTES {
        return Err(CsrError::TooLarge {
            size: pem.len(),
            limit: MAX_CSR_PEM_BYTES,
        });
    }
    let (rest, block) = parse_x509_pem(pem).map_err(|e| CsrError::MalformedPem(e.to_string()))?;
    if !matches!(
        block.label.as_str(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(CsrError::NotACertificateRequest(block.label));
    }
    // A second block would be a second request we never look at; refuse it
    // rather than guess which one the caller meant.
    if rest
        .windows(b"-----BEGIN".len())
        .any(|w| w == b"-----BEGIN")
    {
        return Err(CsrError::SeveralPemBlocks);
    }
    Ok(block.contents)
}

fn parse_request(der: &[u8]) -> Result<X509CertificationRequest<'_>, CsrError> {
    let (rest, request) = X509CertificationRequest::from_der(der)
        .map_err(|e| CsrError::MalformedRequest(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::MalformedRequest(format!(
            "{} trailing bytes after the request",
            rest.len()
        )));
    }
    Ok(request)
}

/// Only SHA-2 signatures: x509-parser would also verify SHA-1 RSA, which is
/// broken for collision resistance.
fn check_signature_algorithm(algorithm: &Oid<'_>) -> Result<(), CsrError> {
    let accepted = [
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
    ];
    if accepted.contains(algorithm) {
        Ok(())
    } else {
        Err(CsrError::UnsupportedSignatureAlgorithm(
            algorithm.to_id_string(),
        ))
    }
}

fn check_public_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrKeyType, CsrError> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        check_ec_curve(spki)?;
        Ok(CsrKeyType::EcdsaP256)
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let bits = rsa_modulus_bits(spki)?;
        match bits {
            _ if bits < MIN_RSA_BITS => Err(CsrError::WeakRsaKey { bits }),
            _ if ACCEPTED_RSA_BITS.contains(&bits) => Ok(CsrKeyType::Rsa { bits }),
            _ => Err(CsrError::UnsupportedRsaKeySize { bits }),
        }
    } else {
        Err(CsrError::UnsupportedKeyType(algorithm.to_id_string()))
    }
}

fn check_ec_curve(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), CsrError> {
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok())
        .ok_or_else(|| CsrError::UnsupportedCurve("(none named)".to_owned()))?;
    if curve == OID_EC_P256 {
        Ok(())
    } else {
        Err(CsrError::UnsupportedCurve(curve.to_id_string()))
    }
}

/// Counts the modulus' significant bits ourselves: the DER integer may carry a
/// leading zero byte, and a hostile key may pad with more than one.
fn rsa_modulus_bits(spki: &SubjectPublicKeyInfo<'_>) -> Result<usize, CsrError> {
    let key = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(key)) => key,
        _ => {
            return Err(CsrError::MalformedRequest(
                "unreadable RSA public key".into(),
            ));
        }
    };
    let modulus = key.modulus;
    let first_significant = modulus.iter().position(|&byte| byte != 0);
    Ok(first_significant.map_or(0, |index| {
        (modulus.len() - index) * 8 - modulus[index].leading_zeros() as usize
    }))
}

fn single_requested_uri(
    request: &X509CertificationRequest<'_>,
) -> Result<Option<String>, CsrError> {
    let mut uris: Vec<String> = Vec::new();
    for extension in request.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            uris.extend(san.general_names.iter().filter_map(|name| match name {
                GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            }));
        }
    }
    match uris.len() {
        0 | 1 => Ok(uris.pop()),
        n => Err(CsrError::SeveralIdentities(n)),
    }
}
