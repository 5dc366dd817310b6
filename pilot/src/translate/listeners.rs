//! Gateway listeners: one Envoy listener per port the proxy's Gateways open,
//! with a filter chain per kind of server on it (plain HTTP, TLS-terminated
//! HTTPS, TLS passthrough by SNI, raw TCP).

use std::collections::BTreeMap;

use mesh_config::Resource;
use mesh_config::networking::gateway::{Server, ServerTlsSettings, TlsMode};
use mesh_config::networking::virtual_service::RouteDestination;
use mesh_config::networking::{Gateway, VirtualService};
use trireme_proto::envoy::pb::envoy::config::core::v3::Address;
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, SocketAddress, TransportSocket,
    address, config_source::ConfigSourceSpecifier, data_source::Specifier,
    socket_address::PortSpecifier, transport_socket,
};
use trireme_proto::envoy::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::http::{cors, fault, router};
use trireme_proto::envoy::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use trireme_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier, tcp_proxy::WeightedCluster,
    tcp_proxy::weighted_cluster::ClusterWeight,
};
use trireme_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate, common_tls_context::ValidationContextType,
};
use trireme_proto::envoy::pb::google::protobuf::BoolValue;
use trireme_proto::envoy::util::pack_any;

use super::names;
use crate::model::snapshot::namespace_of;
use crate::model::{MeshSnapshot, Protocol, Proxy};

/// The filters every gateway HTTP connection manager runs, in order. Routes
/// configure fault and CORS per route under these names.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// Network filters pilot configures.
pub const HTTP_CONNECTION_MANAGER_FILTER: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";

/// A Gateway server together with the Gateway it belongs to.
struct BoundServer<'a> {
    gateway: &'a Resource<Gateway>,
    server: &'a Server,
}

/// The listeners of a gateway proxy, one per port, sorted by port.
pub fn gateway_listeners(snapshot: &MeshSnapshot, proxy: &Proxy) -> Vec<Listener> {
    let mut by_port: BTreeMap<u32, Vec<BoundServer<'_>>> = BTreeMap::new();
    for gateway in snapshot.gateways_for(proxy) {
        for server in &gateway.spec.servers {
            by_port
                .entry(server.port.number)
                .or_default()
                .push(BoundServer { gateway, server });
        }
    }
    by_port
        .into_iter()
        .filter_map(|(port, servers)| gateway_listener(snapshot, port, &servers))
        .collect()
}

fn gateway_listener(
    snapshot: &MeshSnapshot,
    port: u32,
    servers: &[BoundServer<'_>],
) -> Option<Listener> {
    let mut chains = Vec::new();
    let mut plain_http_added = false;
    for bound in servers {
        let protocol = Protocol::of_port(&bound.server.port.protocol, &bound.server.port.name);
        let tls_mode = bound.server.tls.as_ref().and_then(|tls| tls.mode);
        let redirect_only = bound.server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true);
        match (protocol, tls_mode) {
            (Protocol::Http | Protocol::Http2 | Protocol::Grpc, _) if !plain_http_added => {
                // All plain-HTTP servers on a port share one chain and route table.
                chains.push(http_filter_chain(
                    port,
                    names::gateway_http_route_name(port),
                    None,
                    None,
                ));
                plain_http_added = true;
            }
            (Protocol::Http | Protocol::Http2 | Protocol::Grpc, _) => {}
            (Protocol::Https, _)
                if redirect_only && bound.server.tls.as_ref().is_some_and(|t| t.mode.is_none()) =>
            {
                if !plain_http_added {
                    chains.push(http_filter_chain(
                        port,
                        names::gateway_http_route_name(port),
                        None,
                        None,
                    ));
                    plain_http_added = true;
                }
            }
            (Protocol::Https | Protocol::Tls, Some(TlsMode::Passthrough)) => {
                chains.extend(passthrough_chains(snapshot, port, bound));
            }
            (Protocol::Https, _) => {
                // An HTTPS server without TLS settings is invalid (galley
                // refuses it); skip it rather than drop the whole port.
                let Some(tls) = bound.server.tls.as_ref() else {
                    tracing::warn!(gateway = %bound.gateway.metadata.name, port, "HTTPS server without tls settings ignored");
                    continue;
                };
                let route_name = names::gateway_https_route_name(
                    port,
                    &bound.server.port.name,
                    &bound.gateway.metadata.name,
                    namespace_of(bound.gateway),
                );
                chains.push(http_filter_chain(
                    port,
                    route_name,
                    Some(server_name_match(&bound.server.hosts)),
                    Some(downstream_tls(tls)),
                ));
            }
            (Protocol::Tcp | Protocol::Tls, _) => {
                chains.extend(tcp_chain(snapshot, port, bound));
            }
            (Protocol::Unsupported, _) => {}
        }
    }
    if chains.is_empty() {
        return None;
    }
    let needs_tls_inspector = chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.server_names.is_empty() || !m.transport_protocol.is_empty())
    });
    Some(Listener {
        name: names::gateway_listener_name(port),
        address: Some(socket_address("0.0.0.0", port)),
        filter_chains: chains,
        listener_filters: if needs_tls_inspector {
            vec![ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                    TlsInspector::default(),
                ))),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        traffic_direction: 2, // OUTBOUND: gateways send traffic out to the mesh.
        ..Default::default()
    })
}

pub(crate) fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn http_filter_chain(
    port: u32,
    route_name: String,
    chain_match: Option<FilterChainMatch>,
    tls: Option<DownstreamTlsContext>,
) -> FilterChain {
    let manager = HttpConnectionManager {
        stat_prefix: format!("outbound_0.0.0.0_{port}"),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name,
        })),
        http_filters: vec![
            http_filter(FAULT_FILTER, pack_any(fault::v3::HttpFault::default())),
            http_filter(CORS_FILTER, pack_any(cors::v3::Cors::default())),
            http_filter(ROUTER_FILTER, pack_any(router::v3::Router::default())),
        ],
        // A gateway is the edge: it sets X-Forwarded-For from the peer.
        use_remote_address: Some(BoolValue { value: true }),
        ..Default::default()
    };
    FilterChain {
        filter_chain_match: chain_match,
        filters: vec![network_filter(
            HTTP_CONNECTION_MANAGER_FILTER,
            pack_any(manager),
        )],
        transport_socket: tls.map(|context| TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
        }),
        ..Default::default()
    }
}

pub(crate) fn http_filter(
    name: &str,
    config: trireme_proto::envoy::pb::google::protobuf::Any,
) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

pub(crate) fn network_filter(
    name: &str,
    config: trireme_proto::envoy::pb::google::protobuf::Any,
) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// SNI match for a server's hosts (`ns/host` → `host`); `*` matches any name.
fn server_name_match(hosts: &[String]) -> FilterChainMatch {
    let mut server_names: Vec<String> = hosts
        .iter()
        .map(|h| h.rsplit('/').next().unwrap_or(h).to_string())
        .filter(|h| h != "*")
        .collect();
    server_names.sort();
    server_names.dedup();
    FilterChainMatch {
        server_names,
        ..Default::default()
    }
}

/// TLS termination with the server's certificate: from files, or from SDS
/// (`credentialName`, served by the gateway's agent as Istio's is).
fn downstream_tls(tls: &ServerTlsSettings) -> DownstreamTlsContext {
    let mut common = CommonTlsContext {
        alpn_protocols: vec!["h2".into(), "http/1.1".into()],
        ..Default::default()
    };
    if !tls.credential_name.is_empty() {
        common.tls_certificate_sds_secret_configs =
            vec![sds_secret(&format!("kubernetes://{}", tls.credential_name))];
        if tls.mode == Some(TlsMode::Mutual) {
            common.validation_context_type =
                Some(ValidationContextType::ValidationContextSdsSecretConfig(
                    sds_secret(&format!("kubernetes://{}-cacert", tls.credential_name)),
                ));
        }
    } else {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: Some(file_source(&tls.server_certificate)),
            private_key: Some(file_source(&tls.private_key)),
            ..Default::default()
        }];
        if tls.mode == Some(TlsMode::Mutual) && !tls.ca_certificates.is_empty() {
            common.validation_context_type = Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca: Some(file_source(&tls.ca_certificates)),
                    ..Default::default()
                },
            ));
        }
    }
    DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(BoolValue {
            value: tls.mode == Some(TlsMode::Mutual),
        }),
        ..Default::default()
    }
}

fn file_source(path: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::Filename(path.into())),
        ..Default::default()
    }
}

/// A secret fetched over SDS from the agent's `sds-grpc` cluster (Istio's name).
fn sds_secret(name: &str) -> SdsSecretConfig {
    use trireme_proto::envoy::pb::envoy::config::core::v3::{
        ApiConfigSource, GrpcService, api_config_source::ApiType, grpc_service::EnvoyGrpc,
        grpc_service::TargetSpecifier,
    };
    SdsSecretConfig {
        name: name.into(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: "sds-grpc".into(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// VirtualServices bound to this server's gateway whose hosts the server exposes.
fn bound_virtual_services<'a>(
    snapshot: &'a MeshSnapshot,
    bound: &BoundServer<'_>,
) -> Vec<&'a Resource<VirtualService>> {
    snapshot
        .virtual_services_for_gateway(namespace_of(bound.gateway), &bound.gateway.metadata.name)
        .into_iter()
        .filter(|vs| {
            vs.spec.hosts.iter().any(|vs_host| {
                bound.server.hosts.iter().any(|server_host| {
                    let server_host = server_host.rsplit('/').next().unwrap_or(server_host);
                    crate::model::snapshot::host_matches(server_host, vs_host)
                        || crate::model::snapshot::host_matches(vs_host, server_host)
                })
            })
        })
        .collect()
}

/// TLS passthrough: one chain per SNI set of the bound VirtualServices' tls routes.
fn passthrough_chains(
    snapshot: &MeshSnapshot,
    port: u32,
    bound: &BoundServer<'_>,
) -> Vec<FilterChain> {
    let mut chains = Vec::new();
    for vs in bound_virtual_services(snapshot, bound) {
        for tls_route in &vs.spec.tls {
            let sni_hosts: Vec<String> = tls_route
                .r#match
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .flat_map(|m| m.sni_hosts.iter().cloned())
                .collect();
            if sni_hosts.is_empty() {
                continue;
            }
            let mut chain_match = server_name_match(&sni_hosts);
            chain_match.transport_protocol = "tls".into();
            chains.push(FilterChain {
                filter_chain_match: Some(chain_match),
                filters: vec![tcp_proxy_filter(
                    snapshot,
                    namespace_of(vs),
                    port,
                    &tls_route.route,
                )],
                ..Default::default()
            });
        }
    }
    chains
}

/// Raw TCP: the first bound tcp route for this port forwards everything.
fn tcp_chain(snapshot: &MeshSnapshot, port: u32, bound: &BoundServer<'_>) -> Option<FilterChain> {
    bound_virtual_services(snapshot, bound)
        .into_iter()
        .find_map(|vs| {
            let route = vs.spec.tcp.iter().find(|r| {
                r.r#match.is_empty() || r.r#match.iter().any(|m| m.port.is_none_or(|p| p == port))
            })?;
            Some(FilterChain {
                filters: vec![tcp_proxy_filter(
                    snapshot,
                    namespace_of(vs),
                    port,
                    &route.route,
                )],
                ..Default::default()
            })
        })
}

fn tcp_proxy_filter(
    snapshot: &MeshSnapshot,
    namespace: &str,
    port: u32,
    route: &[RouteDestination],
) -> Filter {
    let clusters = tcp_route_clusters(snapshot, namespace, port, route);
    tcp_proxy(format!("outbound_0.0.0.0_{port}"), &clusters)
}

/// The clusters of a TCP or TLS route with their weights (100 each when
/// unweighted). Of several destinations, those weighted 0 get no traffic and
/// are left out: Envoy refuses a weight of 0.
pub(crate) fn tcp_route_clusters(
    snapshot: &MeshSnapshot,
    namespace: &str,
    port: u32,
    route: &[RouteDestination],
) -> Vec<(String, u32)> {
    let clusters = route.iter().map(|d| {
        let weight = d.weight.map(|w| w.max(0) as u32).unwrap_or(100);
        (
            names::destination_cluster(snapshot, namespace, &d.destination, port),
            weight,
        )
    });
    if route.len() > 1 {
        clusters.filter(|(_, weight)| *weight > 0).collect()
    } else {
        clusters.collect()
    }
}

/// A TCP proxy to one cluster, or split by weight between several; with none
/// the connection goes to the blackhole.
pub(crate) fn tcp_proxy(stat_prefix: String, clusters: &[(String, u32)]) -> Filter {
    let specifier = match clusters {
        [(cluster, _)] => ClusterSpecifier::Cluster(cluster.clone()),
        [] => ClusterSpecifier::Cluster(names::BLACKHOLE_CLUSTER.into()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix,
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    network_filter(TCP_PROXY_FILTER, pack_any(proxy))
}
