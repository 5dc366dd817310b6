//! The TLS client certificate, when it is a valid workload certificate from
//! this CA: how a workload renews before its certificate expires.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AuthError, Authenticator, Credentials};
use crate::identity::SpiffeId;
use crate::reload::SharedAuthority;

const KIND: &str = "client certificate";

pub struct ClientCertAuthenticator {
    roots: Roots,
}

/// The certificates trusted to sign workload certificates.
enum Roots {
    Fixed(Vec<Vec<u8>>),
    /// The current authority's trust bundle, which a root rotation or a
    /// plug-in CA reload changes.
    Following(SharedAuthority),
}

impl ClientCertAuthenticator {
    /// `roots_pem` holds one or more PEM certificates (the trust bundle).
    pub fn from_roots_pem(roots_pem: &str) -> Result<Self, String> {
        let roots: Vec<Vec<u8>> = pem::parse_many(roots_pem)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|block| block.tag() == "CERTIFICATE")
            .map(|block| block.into_contents())
            .collect();
        if roots.is_empty() {
            return Err("no root certificate".into());
        }
        Ok(Self {
            roots: Roots::Fixed(roots),
        })
    }

    /// Trusts whatever the authority in use trusts, as it changes.
    pub fn following(authority: SharedAuthority) -> Self {
        Self {
            roots: Roots::Following(authority),
        }
    }

    fn verify(&self, chain: &[Vec<u8>]) -> Result<SpiffeId, String> {
        let parsed = chain
            .iter()
            .map(|der| {
                X509Certificate::from_der(der)
                    .map(|(_, cert)| cert)
                    .map_err(|e| format!("unreadable certificate: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = &parsed[0];
        if leaf.is_ca() {
            return Err("leaf certificate is a CA".into());
        }
        // Walk up the presented chain until a certificate is signed by a root.
        for (index, cert) in parsed.iter().enumerate() {
            if !cert.validity().is_valid() {
                return Err(format!("certificate {index} is expired or not yet valid"));
            }
            if index > 0 {
                let child = &parsed[index - 1];
                if child.verify_signature(Some(cert.public_key())).is_err() {
                    return Err(format!(
                        "certificate {} is not signed by the next",
                        index - 1
                    ));
                }
                if !cert.is_ca() {
                    return Err(format!("certificate {index} is not a CA"));
                }
            }
            if self.signed_by_root(cert) {
                return leaf_identity(leaf);
            }
        }
        Err("certificate does not chain to this CA's root".into())
    }

    fn signed_by_root(&self, cert: &X509Certificate<'_>) -> bool {
        match &self.roots {
            Roots::Fixed(roots) => signed_by_any(cert, roots),
            Roots::Following(authority) => {
                signed_by_any(cert, authority.borrow().trust_bundle_der())
            }
        }
    }
}

fn signed_by_any(cert: &X509Certificate<'_>, roots: &[Vec<u8>]) -> bool {
    roots.iter().any(|root_der| {
        X509Certificate::from_der(root_der).is_ok_and(|(_, root)| {
            root.validity().is_valid()
                && cert.issuer() == root.subject()
                && cert.verify_signature(Some(root.public_key())).is_ok()
        })
    })
}

fn leaf_identity(leaf: &X509Certificate<'_>) -> Result<SpiffeId, String> {
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| format!("bad SAN extension: {e}"))?
        .ok_or("certificate has no SAN")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] => uri.parse().map_err(|e| format!("SAN {uri:?}: {e}")),
        _ => Err(format!(
            "certificate has {} URI SANs, expected one",
            uris.len()
        )),
    }
}

#[tonic::async_trait]
impl Authenticator for ClientCertAuthenticator {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<SpiffeId, AuthError> {
        if credentials.peer_certs.is_empty() {
            return Err(AuthError::NoCredential(KIND));
        }
        self.verify(credentials.peer_certs)
            .map_err(|reason| AuthError::Rejected { kind: KIND, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::{Authority, RootKey, SigningPolicy};
    use crate::csr::VerifiedCsr;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    fn authority(dir: &std::path::Path) -> Authority {
        Authority::load_or_create(
            dir,
            "Test",
            RootKey::GenerateEcdsaP256,
            SigningPolicy::default(),
        )
        .unwrap()
    }

    fn issued_chain(authority: &Authority) -> Vec<Vec<u8>> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let csr = VerifiedCsr::from_pem(csr.as_bytes()).unwrap();
        authority
            .sign(&csr, &ID.parse().unwrap(), None)
            .unwrap()
            .iter()
            .map(|pem| pem::parse(pem).unwrap().into_contents())
            .collect()
    }

    #[test]
    fn accepts_own_leaf_and_refuses_foreign_or_ca_certificates() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let ours = authority(ours.path());
        let theirs = authority(theirs.path());
        let authenticator = ClientCertAuthenticator::from_roots_pem(ours.root_cert_pem()).unwrap();

        let own = issued_chain(&ours);
        assert_eq!(authenticator.verify(&own).unwrap().to_uri(), ID);
        // The leaf alone (no chain presented) still chains to our root.
        assert!(authenticator.verify(&own[..1]).is_ok());

        let foreign = issued_chain(&theirs);
        let error = authenticator.verify(&foreign).unwrap_err();
        assert!(error.contains("does not chain"), "{error}");

        // Presenting the root itself is not a workload identity.
        let root = pem::parse(ours.root_cert_pem()).unwrap().into_contents();
        assert!(authenticator.verify(&[root]).is_err());
        assert!(authenticator.verify(&[b"garbage".to_vec()]).is_err());
    }
}
