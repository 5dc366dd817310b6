//! A throwaway CA issuing webhook serving certificates with chosen serials,
//! as cert-manager or istiod would for `galley.istio-system.svc`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};

/// The name the webhook certificates carry.
pub const WEBHOOK_HOST: &str = "galley.istio-system.svc";

pub struct WebhookCa {
    pub root_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving certificate (leaf then root) and its key, in PEM.
pub struct ServingPair {
    pub chain_pem: String,
    pub key_pem: String,
}

impl WebhookCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "galley test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).expect("self-signed CA");
        Self {
            root_pem: root.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for [`WEBHOOK_HOST`] with `serial`.
    pub fn issue(&self, serial: u8) -> ServingPair {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec![WEBHOOK_HOST.to_string()]).expect("leaf params");
        params.serial_number = Some(SerialNumber::from_slice(&[serial]));
        let leaf = params.signed_by(&key, &self.issuer).expect("signing");
        ServingPair {
            chain_pem: format!("{}{}", leaf.pem(), self.root_pem),
            key_pem: key.serialize_pem(),
        }
    }
}

impl ServingPair {
    /// Writes the pair where the webhook reads it; the key first, so a
    /// reader never sees a new certificate with the old key for long.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(key, &self.key_pem).unwrap();
        std::fs::write(cert, &self.chain_pem).unwrap();
    }
}

/// `cert-chain.pem` and `key.pem` in `dir`.
pub fn cert_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert-chain.pem"), dir.join("key.pem"))
}
