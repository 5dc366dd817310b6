//! Key generation that `ring` does not offer: RSA keys for a self-signed root
//! chosen with `--ca-key-type rsa`. Keys leave this module as PKCS#8 PEM, the
//! form rcgen loads and the CA directory stores as `ca-key.pem`.

use std::fmt;
use std::str::FromStr;

use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;

/// The kind of key a self-signed root is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaKeyType {
    /// ECDSA P-256: small certificates and the cheapest signatures.
    Ecdsa,
    /// RSA of `--ca-rsa-key-size` bits, for peers that only trust RSA roots.
    Rsa,
}

/// RSA modulus sizes allowed for a CA key: the sizes citadel signs CSRs for.
/// Smaller keys are weak; larger ones are unusual and slow to sign with.
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

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key size {0:?} is not allowed: use 2048, 3072 or 4096")]
    UnsupportedRsaKeySize(String),
    #[error("generating an RSA key: {0}")]
    RsaGeneration(rsa::Error),
    #[error("encoding the RSA key as PKCS#8: {0}")]
    Pkcs8(rsa::pkcs8::Error),
}

/// A fresh RSA private key of `size`, PKCS#8 PEM with Unix line endings.
///
/// The PEM is returned as a plain `String` because that is how the CA
/// directory's files and rcgen take it; the key is written to disk next.
pub fn generate_rsa_pkcs8_pem(size: RsaKeySize) -> Result<String, KeyError> {
    let key = RsaPrivateKey::new(&mut OsRng, size.bits()).map_err(KeyError::RsaGeneration)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(KeyError::Pkcs8)?;
    Ok(pem.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;

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
}
