//! Partial views of Envoy's messages, wire-compatible with the full ones
//! (same field numbers), declaring only the fields the tools read. Decoding
//! one skips everything else without allocating, and `bytes` fields slice the
//! received buffer instead of copying it, so tens of thousands of simulated
//! proxies cost little CPU beside the server they measure. String fields are
//! declared as `bytes` where a copy is not wanted (same wire type).

use bytes::Bytes;

/// `envoy.service.discovery.v3.DiscoveryResponse`, resource bodies not decoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwResponse {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<AnyBody>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResponse {
    #[prost(string, tag = "1")]
    pub system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    pub resources: Vec<DeltaResource>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub removed_resources: Vec<String>,
}

/// `envoy.service.discovery.v3.Resource` (delta).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeltaResource {
    #[prost(message, optional, tag = "2")]
    pub resource: Option<AnyBody>,
    #[prost(bytes = "bytes", tag = "3")]
    pub name: Bytes,
}

/// `google.protobuf.Any`, the body left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyBody {
    #[prost(bytes = "bytes", tag = "1")]
    pub type_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.config.cluster.v3.Cluster`: its name and how its endpoints are found.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterView {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    /// The `type` member of the `cluster_discovery_type` oneof (absent: STATIC,
    /// or a custom cluster type).
    #[prost(int32, optional, tag = "2")]
    pub discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    pub eds_cluster_config: Option<EdsClusterConfigView>,
}

/// `Cluster.DiscoveryType.EDS`.
pub const DISCOVERY_TYPE_EDS: i32 = 3;

/// `envoy.config.cluster.v3.Cluster.EdsClusterConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EdsClusterConfigView {
    #[prost(bytes = "bytes", tag = "2")]
    pub service_name: Bytes,
}

/// `envoy.config.listener.v3.Listener`: down to its network filters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListenerView {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(message, repeated, tag = "3")]
    pub filter_chains: Vec<FilterChainView>,
    #[prost(message, optional, tag = "25")]
    pub default_filter_chain: Option<FilterChainView>,
}

/// `envoy.config.listener.v3.FilterChain`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilterChainView {
    #[prost(message, repeated, tag = "3")]
    pub filters: Vec<FilterView>,
}

/// `envoy.config.listener.v3.Filter`: the `typed_config` member of its oneof.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilterView {
    #[prost(message, optional, tag = "4")]
    pub typed_config: Option<AnyBody>,
}

/// Type URL of the HTTP connection manager, the filter that names routes.
pub const HTTP_CONNECTION_MANAGER: &[u8] =
    b"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// `envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpConnectionManagerView {
    /// The `rds` member of the `route_specifier` oneof.
    #[prost(message, optional, tag = "3")]
    pub rds: Option<RdsView>,
}

/// `envoy.extensions.filters.network.http_connection_manager.v3.Rds`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RdsView {
    #[prost(bytes = "bytes", tag = "2")]
    pub route_config_name: Bytes,
}

/// `envoy.service.discovery.v3.DiscoveryRequest` as the floor server reads
/// it: the node (large metadata) is skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SotwRequestView {
    #[prost(string, tag = "1")]
    pub version_info: String,
    #[prost(string, repeated, tag = "3")]
    pub resource_names: Vec<String>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    /// Present on a NACK; its content does not matter here.
    #[prost(bytes = "bytes", optional, tag = "6")]
    pub error_detail: Option<Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use trireme_proto::envoy::pb::envoy::config::cluster::v3::{Cluster, cluster};

    #[test]
    fn a_cluster_view_reads_the_fields_of_a_full_cluster() {
        let full = Cluster {
            name: "outbound|80||a.ns.svc.cluster.local".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig {
                service_name: "svc-a".into(),
                ..Default::default()
            }),
            connect_timeout: Some(Default::default()),
            ..Default::default()
        };
        let view = ClusterView::decode(Bytes::from(full.encode_to_vec())).unwrap();
        assert_eq!(&view.name[..], b"outbound|80||a.ns.svc.cluster.local");
        assert_eq!(view.discovery_type, Some(DISCOVERY_TYPE_EDS));
        assert_eq!(&view.eds_cluster_config.unwrap().service_name[..], b"svc-a");
    }
}
