//! Which names a resource makes a proxy subscribe to, read as Envoy reads
//! them: an EDS cluster's endpoints by its `eds_cluster_config.service_name`
//! (or the cluster's name when that is empty), a listener's routes by each
//! HTTP connection manager's `rds.route_config_name`.

use bytes::Bytes;
use prost::Message;

use crate::wire::{
    ClusterView, DISCOVERY_TYPE_EDS, FilterChainView, HTTP_CONNECTION_MANAGER,
    HttpConnectionManagerView, ListenerView,
};

/// A resource's name and the names it depends on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edges {
    pub resource: Bytes,
    pub depends_on: Vec<Bytes>,
}

/// A cluster's name and, for an EDS cluster, the name its endpoints go by.
pub fn cluster_edges(body: Bytes) -> Result<Edges, prost::DecodeError> {
    let cluster = ClusterView::decode(body)?;
    let mut depends_on = Vec::new();
    if cluster.discovery_type == Some(DISCOVERY_TYPE_EDS) {
        let service_name = cluster
            .eds_cluster_config
            .map(|config| config.service_name)
            .filter(|name| !name.is_empty());
        depends_on.push(service_name.unwrap_or_else(|| cluster.name.clone()));
    }
    Ok(Edges {
        resource: cluster.name,
        depends_on,
    })
}

/// A listener's name and the route configs its HTTP filter chains load.
pub fn listener_edges(body: Bytes) -> Result<Edges, prost::DecodeError> {
    let listener = ListenerView::decode(body)?;
    let mut depends_on = Vec::new();
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref());
    for chain in chains {
        route_names(chain, &mut depends_on)?;
    }
    Ok(Edges {
        resource: listener.name,
        depends_on,
    })
}

fn route_names(chain: &FilterChainView, names: &mut Vec<Bytes>) -> Result<(), prost::DecodeError> {
    for filter in &chain.filters {
        let Some(config) = &filter.typed_config else {
            continue;
        };
        if config.type_url != HTTP_CONNECTION_MANAGER {
            continue;
        }
        let manager = HttpConnectionManagerView::decode(config.value.clone())?;
        if let Some(rds) = manager.rds.filter(|rds| !rds.route_config_name.is_empty()) {
            names.push(rds.route_config_name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_proto::envoy::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use trireme_proto::envoy::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
    use trireme_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, Rds, http_connection_manager,
    };
    use trireme_proto::envoy::pb::google::protobuf::Any;

    fn cluster(name: &str, kind: cluster::DiscoveryType, service_name: &str) -> Bytes {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(kind as i32)),
            eds_cluster_config: (!service_name.is_empty()).then(|| cluster::EdsClusterConfig {
                service_name: service_name.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn eds_clusters_depend_on_their_service_name_or_own_name() {
        let named = cluster_edges(cluster("c1", cluster::DiscoveryType::Eds, "svc")).unwrap();
        assert_eq!(named.depends_on, [Bytes::from("svc")]);
        let unnamed = cluster_edges(cluster("c2", cluster::DiscoveryType::Eds, "")).unwrap();
        assert_eq!(unnamed.depends_on, [Bytes::from("c2")]);
        let strict = cluster_edges(cluster("c3", cluster::DiscoveryType::StrictDns, "")).unwrap();
        assert!(strict.depends_on.is_empty());
        assert_eq!(strict.resource, Bytes::from("c3"));
    }

    #[test]
    fn listeners_depend_on_the_routes_of_their_http_connection_managers() {
        let manager = |route: &str| Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: String::from_utf8(HTTP_CONNECTION_MANAGER.to_vec()).unwrap(),
                value: HttpConnectionManager {
                    route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                        route_config_name: route.into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }
                .encode_to_vec(),
            })),
        };
        let tcp = Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                        .into(),
                value: vec![0x0a, 0x01, b'x'],
            })),
        };
        let listener = Listener {
            name: "0.0.0.0_9080".into(),
            filter_chains: vec![FilterChain {
                filters: vec![tcp, manager("9080")],
                ..Default::default()
            }],
            default_filter_chain: Some(FilterChain {
                filters: vec![manager("fallback")],
                ..Default::default()
            }),
            ..Default::default()
        };
        let edges = listener_edges(listener.encode_to_vec().into()).unwrap();
        assert_eq!(edges.resource, Bytes::from("0.0.0.0_9080"));
        assert_eq!(
            edges.depends_on,
            [Bytes::from("9080"), Bytes::from("fallback")]
        );
    }
}
