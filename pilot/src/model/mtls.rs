//! Whether a client should speak Istio mutual TLS to a destination its
//! DestinationRule says nothing about (Istio's auto mTLS): what the client
//! may assume about the mode the destination's workloads accept.

use super::peer_authentication::MtlsMode;
use super::service::Resolution;
use super::{MeshSnapshot, Service};

/// The label Istio puts on workloads that run its proxy and so accept mTLS
/// (`istio`); anything else, or no label, means plaintext.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// The key under which that label travels in endpoint metadata.
pub const TLS_MODE_KEY: &str = "tlsMode";
/// The label's value for workloads with Istio's proxy.
pub const TLS_MODE_ISTIO: &str = "istio";

/// Whether clients offer Istio mTLS to a destination in `mode` (to the
/// endpoints that carry the mesh's `security.istio.io/tlsMode: istio` label,
/// plaintext to the rest); `None` is a destination nothing is known about.
pub fn auto_mtls(mode: Option<MtlsMode>) -> bool {
    matches!(mode, Some(MtlsMode::Permissive | MtlsMode::Strict))
}

/// Istio's best-effort inference: nothing is known about services outside
/// the mesh; passthrough services are reached as addressed, without mTLS;
/// in-mesh services accept what their workloads' PeerAuthentication allows.
pub fn service_mtls_mode(
    snapshot: &MeshSnapshot,
    service: &Service,
    port: u32,
) -> Option<MtlsMode> {
    if service.mesh_external {
        return None;
    }
    if service.resolution == Resolution::Passthrough {
        return Some(MtlsMode::Disable);
    }
    Some(workload_mtls_mode(snapshot, &service.namespace, port))
}

/// The mode PeerAuthentication gives workloads of `namespace` on `port`: the
/// namespace's policy, else the mesh's, else PERMISSIVE (Istio's default).
/// Clusters are per service, not per workload, so selector policies are not
/// consulted here, as in Istio's auto mTLS.
fn workload_mtls_mode(snapshot: &MeshSnapshot, namespace: &str, port: u32) -> MtlsMode {
    snapshot
        .workload_mtls(namespace, &Default::default())
        .port(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::service::{Resolution, Service};

    fn service(mesh_external: bool, resolution: Resolution) -> Service {
        Service {
            hostname: "a.ns.svc.cluster.local".into(),
            namespace: "ns".into(),
            ports: Vec::new(),
            resolution,
            mesh_external,
            addresses: Vec::new(),
            export_to: Vec::new(),
            subject_alt_names: Vec::new(),
        }
    }

    #[test]
    fn only_in_mesh_services_reached_through_the_registry_get_auto_mtls() {
        let snapshot = MeshSnapshot::default();
        let mode = |s: &Service| service_mtls_mode(&snapshot, s, 80);
        assert!(auto_mtls(mode(&service(false, Resolution::Static))));
        assert!(auto_mtls(mode(&service(false, Resolution::Dns))));
        assert_eq!(mode(&service(true, Resolution::Static)), None);
        assert_eq!(
            mode(&service(false, Resolution::Passthrough)),
            Some(MtlsMode::Disable)
        );
    }
}
