//! A workload identity as Envoy's `Secret` resources, under Istio's names:
//! `default` (certificate chain and key) and `ROOTCA` (trust bundle).

use std::collections::BTreeMap;
use std::fmt;

use trireme_proto::envoy::pb::envoy::config::core::v3::{DataSource, data_source};
use trireme_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use trireme_proto::envoy::pb::google::protobuf::Any;
use trireme_proto::envoy::util::pack_any;
use workload_identity::WorkloadIdentity;

/// `type_url` of every SDS request and response.
pub const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The workload's certificate and key (Istio's `WorkloadKeyCertResourceName`).
pub const WORKLOAD_CERTIFICATE: &str = "default";

/// The roots to validate peers with (Istio's `RootCertReqResourceName`).
pub const ROOT_CA: &str = "ROOTCA";

/// One secret, encoded once.
#[derive(Clone, PartialEq)]
pub struct SecretResource {
    /// Changes exactly when the content does.
    pub version: String,
    /// The packed `Secret`. It holds the private key: never log it.
    pub packed: Any,
}

impl fmt::Debug for SecretResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretResource")
            .field("version", &self.version)
            .field("bytes", &self.packed.value.len())
            .finish_non_exhaustive()
    }
}

/// Every secret of one identity.
#[derive(Clone, PartialEq, Debug)]
pub struct SecretSnapshot {
    /// The leaf's serial: every issuance has its own, and the trust bundle
    /// only changes with an issuance, so it versions the whole snapshot.
    pub version: String,
    resources: BTreeMap<&'static str, SecretResource>,
}

impl SecretSnapshot {
    pub fn from_identity(identity: &WorkloadIdentity) -> Self {
        let certificate = SecretResource {
            version: identity.serial().to_owned(),
            packed: pack_any(workload_certificate(identity)),
        };
        let bundle = identity.trust_bundle_pem();
        let roots = SecretResource {
            // Content-addressed, so a renewal that keeps the roots is not
            // pushed again to a delta client.
            version: digest_hex(bundle.as_bytes()),
            packed: pack_any(root_ca(bundle)),
        };
        Self {
            version: identity.serial().to_owned(),
            resources: BTreeMap::from([(WORKLOAD_CERTIFICATE, certificate), (ROOT_CA, roots)]),
        }
    }

    /// The secret called `name`, if we serve one by that name.
    pub fn get(&self, name: &str) -> Option<&SecretResource> {
        self.resources.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.resources.keys().copied()
    }
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

/// Chain and key inline, as Istio's agent sends them: Envoy never reads a
/// key file, so nothing of the key touches the disk.
fn workload_certificate(identity: &WorkloadIdentity) -> Secret {
    Secret {
        name: WORKLOAD_CERTIFICATE.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(identity.chain_pem().into_bytes()),
            private_key: inline(identity.private_key().pem().as_bytes().to_vec()),
            ..Default::default()
        })),
    }
}

fn root_ca(bundle_pem: String) -> Secret {
    Secret {
        name: ROOT_CA.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(bundle_pem.into_bytes()),
                ..Default::default()
            },
        )),
    }
}

/// First 16 hex digits of SHA-256: plenty to tell bundles apart.
fn digest_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref()[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message;
    use workload_identity::testing::TestCa;

    use super::*;

    const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

    fn decode(resource: &SecretResource) -> Secret {
        assert_eq!(resource.packed.type_url, SECRET_TYPE_URL);
        Secret::decode(resource.packed.value.as_slice()).unwrap()
    }

    fn inline_text(source: &Option<DataSource>) -> String {
        match source.as_ref().and_then(|source| source.specifier.as_ref()) {
            Some(data_source::Specifier::InlineBytes(bytes)) => {
                String::from_utf8(bytes.clone()).unwrap()
            }
            other => panic!("not inline bytes: {other:?}"),
        }
    }

    #[test]
    fn default_holds_the_chain_and_key_inline() {
        let identity = TestCa::new().issue(ID, Duration::from_secs(3600));
        let snapshot = SecretSnapshot::from_identity(&identity);
        let secret = decode(snapshot.get(WORKLOAD_CERTIFICATE).unwrap());
        assert_eq!(secret.name, "default");
        let Some(secret::Type::TlsCertificate(tls)) = secret.r#type else {
            panic!("not a TLS certificate");
        };
        assert_eq!(inline_text(&tls.certificate_chain), identity.chain_pem());
        assert_eq!(inline_text(&tls.private_key), identity.private_key().pem());
        assert_eq!(snapshot.version, identity.serial());
    }

    #[test]
    fn rootca_holds_the_trust_bundle() {
        let ca = TestCa::new();
        let identity = ca.issue(ID, Duration::from_secs(3600));
        let snapshot = SecretSnapshot::from_identity(&identity);
        let secret = decode(snapshot.get(ROOT_CA).unwrap());
        assert_eq!(secret.name, "ROOTCA");
        let Some(secret::Type::ValidationContext(validation)) = secret.r#type else {
            panic!("not a validation context");
        };
        assert_eq!(inline_text(&validation.trusted_ca), ca.root_pem());
        assert_eq!(snapshot.names().collect::<Vec<_>>(), ["ROOTCA", "default"]);
        assert!(snapshot.get("kubernetes://other").is_none());
    }

    #[test]
    fn rootca_keeps_its_version_across_renewals_and_default_does_not() {
        let ca = TestCa::new();
        let first = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        let second = SecretSnapshot::from_identity(&ca.issue(ID, Duration::from_secs(3600)));
        assert_eq!(
            first.get(ROOT_CA).unwrap().version,
            second.get(ROOT_CA).unwrap().version
        );
        assert_ne!(
            first.get(WORKLOAD_CERTIFICATE).unwrap().version,
            second.get(WORKLOAD_CERTIFICATE).unwrap().version
        );
        let other_ca =
            SecretSnapshot::from_identity(&TestCa::new().issue(ID, Duration::from_secs(60)));
        assert_ne!(
            first.get(ROOT_CA).unwrap().version,
            other_ca.get(ROOT_CA).unwrap().version
        );
    }

    #[test]
    fn debug_output_shows_no_key() {
        let identity = TestCa::new().issue(ID, Duration::from_secs(3600));
        let shown = format!("{:?}", SecretSnapshot::from_identity(&identity));
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains(identity.serial()), "{shown}");
    }
}
