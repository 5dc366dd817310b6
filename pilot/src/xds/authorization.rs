//! Who may ask for whose config, on the mutual-TLS port: a proxy gets the
//! config of the namespace its certificate proves, not of any namespace its
//! node id claims. (Config leaks secrets' names, routes and peers; a
//! workload in `a` must not read `b`'s by writing `b` in its node id.)
//!
//! The plain-text port proves nothing and checks nothing: it is for tests
//! and trusted networks.

use tonic::Status;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::model::Proxy;

/// The identity a client certificate proves (its SPIFFE URI SAN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub spiffe_id: String,
    pub namespace: String,
    pub service_account: String,
}

/// Reads the identity from the DER leaf certificate the TLS handshake
/// already verified against the mesh's roots.
pub fn peer_identity(leaf_der: &[u8]) -> Result<PeerIdentity, String> {
    let (_, cert) =
        X509Certificate::from_der(leaf_der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subject alternative names: {e}"))?
        .ok_or("the certificate has no subject alternative name")?;
    san.value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => parse_spiffe(uri),
            _ => None,
        })
        .ok_or_else(|| "the certificate carries no spiffe://<td>/ns/<ns>/sa/<sa> URI".into())
}

fn parse_spiffe(uri: &str) -> Option<PeerIdentity> {
    let path = uri.strip_prefix("spiffe://")?.split_once('/')?.1;
    match path.split('/').collect::<Vec<_>>()[..] {
        ["ns", namespace, "sa", service_account] => Some(PeerIdentity {
            spiffe_id: uri.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        }),
        _ => None,
    }
}

/// Allows `proxy`'s stream when its certificate's namespace is the one its
/// node claims, as Istio does.
pub fn authorize(peer: &PeerIdentity, proxy: &Proxy) -> Result<(), Status> {
    if peer.namespace == proxy.namespace {
        return Ok(());
    }
    tracing::warn!(
        proxy = %proxy.id,
        identity = %peer.spiffe_id,
        "refused xDS: the certificate's namespace is not the node's"
    );
    Err(Status::permission_denied(format!(
        "authorization failed: identity {} may not receive config for namespace {:?} (node {})",
        peer.spiffe_id, proxy.namespace, proxy.id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
    use workload_identity::testing::TestCa;

    #[test]
    fn the_certificates_namespace_must_be_the_nodes() {
        let ca = TestCa::new();
        let identity = ca.issue(
            "spiffe://cluster.local/ns/shop/sa/catalog",
            std::time::Duration::from_secs(3600),
        );
        let leaf = pem::parse(&identity.chain()[0]).unwrap();
        let peer = peer_identity(leaf.contents()).unwrap();
        assert_eq!(
            (peer.namespace.as_str(), peer.service_account.as_str()),
            ("shop", "catalog")
        );

        let node = Node {
            id: "sidecar~10.0.0.1~catalog-1.shop~shop.svc.cluster.local".into(),
            ..Node::default()
        };
        let mut proxy = Proxy::from_node(Some(&node)).expect("a sidecar node id");
        assert!(authorize(&peer, &proxy).is_ok());
        proxy.namespace = "payments".into();
        let refused = authorize(&peer, &proxy).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("payments"),
            "{}",
            refused.message()
        );
    }

    #[test]
    fn only_workload_spiffe_ids_count() {
        assert!(parse_spiffe("spiffe://cluster.local/ns/a/sa/b").is_some());
        assert!(parse_spiffe("spiffe://cluster.local/ns/a").is_none());
        assert!(parse_spiffe("spiffe://cluster.local/ns/a/sa/b/extra").is_none());
    }
}
