//! Private keys and certificate signing requests.
//!
//! ECDSA P-256 keys come from `ring` (through rcgen). `ring` cannot make RSA
//! keys, so those come from the `rsa` crate; they leave this module as PKCS#8
//! PEM, the form rcgen loads, Envoy reads and citadel stores as `ca-key.pem`.

use std::fmt;
use std::str::FromStr;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;
use zeroize::Zeroizing;

/// RSA modulus sizes we make keys of. Smaller keys are weak; larger ones are
/// unusual and slow to sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaKeySize {
    Bits2048,
    Bits3072,
    Bits4096,
}

impl RsaKeySize {
    pub const fn bits(self) -> usize {
        match self {
            Self::Bits2048 => 2048,
            Self::Bits3072 => 3072,
            Self::Bits4096 => 4096,
        }
    }
}

impl fmt::Display for RsaKeySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bits())
    }
}

impl FromStr for RsaKeySize {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        match text.trim() {
            "2048" => Ok(Self::Bits2048),
            "3072" => Ok(Self::Bits3072),
            "4096" => Ok(Self::Bits4096),
            _ => Err(KeyError::UnsupportedRsaKeySize(text.to_owned())),
        }
    }
}

/// The kind of key a workload certificate is requested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA P-256: small certificates, fast handshakes, cheap to make.
    #[default]
    EcdsaP256,
    /// RSA, for peers that only speak RSA.
    Rsa(RsaKeySize),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ECDSA P-256"),
            Self::Rsa(size) => write!(f, "RSA {size}"),
        }
    }
}

/// Why a key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key size {0:?} is not allowed: use 2048, 3072 or 4096")]
    UnsupportedRsaKeySize(String),
    #[error("generating an RSA key: {0}")]
    RsaGeneration(rsa::Error),
    #[error("encoding the RSA key as PKCS#8: {0}")]
    Pkcs8(rsa::pkcs8::Error),
    #[error("generating an ECDSA key: {0}")]
    EcdsaGeneration(rcgen::Error),
    #[error("loading the generated key: {0}")]
    Load(rcgen::Error),
    #[error("{0:?} is not a valid URI for a certificate's SAN: {1}")]
    InvalidSpiffeId(String, rcgen::Error),
    #[error("building the certificate signing request: {0}")]
    Csr(rcgen::Error),
}

/// A fresh RSA private key of `size`, PKCS#8 PEM with Unix line endings.
///
/// The PEM is returned as a plain `String` because that is how citadel's CA
/// directory and rcgen take it; callers holding a workload key wrap it in
/// [`Zeroizing`] (see [`generate`]).
pub fn generate_rsa_pkcs8_pem(size: RsaKeySize) -> Result<String, KeyError> {
    let key = RsaPrivateKey::new(&mut OsRng, size.bits()).map_err(KeyError::RsaGeneration)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(KeyError::Pkcs8)?;
    Ok(pem.as_str().to_owned())
}

/// A fresh key of `key_type` as PKCS#8 PEM, wiped from memory when dropped.
pub fn generate(key_type: KeyType) -> Result<Zeroizing<String>, KeyError> {
    match key_type {
        KeyType::EcdsaP256 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(KeyError::EcdsaGeneration)?;
            Ok(Zeroizing::new(key.serialize_pem()))
        }
        KeyType::Rsa(size) => generate_rsa_pkcs8_pem(size).map(Zeroizing::new),
    }
}

/// A PEM certificate signing request for `spiffe_id`, signed with `key_pem`.
///
/// The subject is empty and the identity sits in a URI SAN only, as a SPIFFE
/// X.509-SVID has it; the CA fills in everything else.
pub fn csr_pem(spiffe_id: &str, key_pem: &str) -> Result<String, KeyError> {
    let key = KeyPair::from_pem(key_pem).map_err(KeyError::Load)?;
    let uri = spiffe_id
        .try_into()
        .map_err(|error| KeyError::InvalidSpiffeId(spiffe_id.to_owned(), error))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(KeyError::Csr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    #[test]
    fn reads_the_allowed_sizes() {
        for (text, size) in [
            ("2048", RsaKeySize::Bits2048),
            ("3072", RsaKeySize::Bits3072),
            ("4096", RsaKeySize::Bits4096),
        ] {
            assert_eq!(text.parse::<RsaKeySize>().unwrap(), size);
            assert_eq!(size.to_string(), text);
        }
    }

    #[test]
    fn refuses_other_sizes_naming_the_allowed_ones() {
        for text in ["1024", "2047", "8192", "", "big"] {
            let error = text.parse::<RsaKeySize>().unwrap_err().to_string();
            assert!(
                error.contains("not allowed") && error.contains("2048, 3072 or 4096"),
                "{error}"
            );
        }
    }

    #[test]
    fn generates_a_2048_bit_key_rcgen_can_sign_with() {
        let pem = generate_rsa_pkcs8_pem(RsaKeySize::Bits2048).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert!(!pem.contains('\r'));
        let key = RsaPrivateKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(key.n().bits(), 2048);
        let signer = rcgen::KeyPair::from_pem(&pem).unwrap();
        assert_eq!(signer.algorithm(), &rcgen::PKCS_RSA_SHA256);
    }

    /// The SAN URIs and signature algorithm OID of a PEM CSR, after checking
    /// its self-signature.
    fn read_csr(csr_pem: &str) -> (Vec<String>, String) {
        let der = pem::parse(csr_pem).unwrap().into_contents();
        let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
        csr.verify_signature().unwrap();
        let uris = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|extension| match extension {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Some(uri.to_string()),
                _ => None,
            })
            .collect();
        (uris, csr.signature_algorithm.algorithm.to_id_string())
    }

    #[test]
    fn a_p256_csr_asks_for_exactly_the_spiffe_id() {
        let id = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
        let key = generate(KeyType::EcdsaP256).unwrap();
        let (uris, algorithm) = read_csr(&csr_pem(id, &key).unwrap());
        assert_eq!(uris, [id]);
        assert_eq!(algorithm, "1.2.840.10045.4.3.2", "ecdsa-with-SHA256");
    }

    #[test]
    fn an_rsa_csr_is_signed_with_rsa() {
        let id = "spiffe://cluster.local/ns/default/sa/default";
        let key = generate(KeyType::Rsa(RsaKeySize::Bits2048)).unwrap();
        let (uris, algorithm) = read_csr(&csr_pem(id, &key).unwrap());
        assert_eq!(uris, [id]);
        assert_eq!(
            algorithm, "1.2.840.113549.1.1.11",
            "sha256WithRSAEncryption"
        );
    }
}
