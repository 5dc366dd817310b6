//! Inbound filter chains: per port (and for ports nobody declared), the
//! chains its mTLS mode calls for, each ending in an HTTP connection manager
//! (HTTP ports) or a TCP proxy to the port's inbound cluster.
//!
//! - STRICT: one chain for TLS, terminated with the mesh certificate and a
//!   required client certificate; plaintext matches nothing and is closed.
//! - PERMISSIVE: mesh mTLS (TLS offering an Istio ALPN value, as Istio's and
//!   Trireme's clients do) is terminated; other TLS is the application's own
//!   and passes through untouched; plaintext is served as is.
//! - DISABLE: one chain that does not look at the transport, so the TLS
//!   inspector can stay off for the port and server-first protocols (MySQL)
//!   work.

use trireme_proto::envoy::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, filter,
};
use trireme_proto::envoy::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match::PathSpecifier,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::http::router::v3::Router;
use trireme_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
    http_connection_manager::{
        ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails, UpgradeConfig,
    },
    http_filter,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use trireme_proto::envoy::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};
use trireme_proto::envoy::util::pack_any;

use super::tls::mesh_mtls_socket;
use crate::model::MtlsMode;

/// ALPN values by which Istio-style clients announce mesh mTLS: the first two
/// from Trireme's and Istio's TCP clients, the others from Istio's HTTP ones.
const MESH_MTLS_ALPN: [&str; 5] = [
    "istio-peer-exchange",
    "istio",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

const TLS: &str = "tls";
const RAW_BUFFER: &str = "raw_buffer";
const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
const ROUTER: &str = "envoy.filters.http.router";

/// Where a chain's traffic goes, and how it is handled on the way.
#[derive(Debug, Clone)]
pub(super) struct ChainTarget {
    /// Names the chains, e.g. `inbound_9080`.
    pub name: String,
    /// The port to match, when the listener serves several.
    pub match_port: Option<u32>,
    pub cluster: String,
    /// HTTP ports get an HTTP connection manager for this port.
    pub http_port: Option<u32>,
}

/// The chains `mode` calls for, towards `target`.
pub(super) fn chains_for(mode: MtlsMode, target: &ChainTarget) -> Vec<FilterChain> {
    match mode {
        MtlsMode::Strict => vec![mtls_chain(target, &[])],
        MtlsMode::Permissive => vec![
            mtls_chain(target, &MESH_MTLS_ALPN),
            chain(
                format!("{}_app-tls", target.name),
                matching(target, TLS, &[]),
                tcp_proxy(&target.cluster),
            ),
            chain(
                format!("{}_plaintext", target.name),
                matching(target, RAW_BUFFER, &[]),
                handler(target),
            ),
        ],
        MtlsMode::Disable => vec![chain(
            target.name.clone(),
            matching(target, "", &[]),
            handler(target),
        )],
    }
}

/// Traffic sent straight to the inbound port would loop back into Envoy:
/// Istio's `virtualInbound-blackhole` chain drops it.
pub(super) fn blackhole_chain(port: u32, cluster: &str) -> FilterChain {
    chain(
        "virtualInbound-blackhole".into(),
        FilterChainMatch {
            destination_port: Some(UInt32Value { value: port }),
            ..Default::default()
        },
        tcp_proxy(cluster),
    )
}

/// Whether a chain needs the TLS inspector to be told apart from others.
pub(super) fn inspects_tls(chain: &FilterChain) -> bool {
    chain
        .filter_chain_match
        .as_ref()
        .is_some_and(|m| !m.transport_protocol.is_empty() || !m.application_protocols.is_empty())
}

fn mtls_chain(target: &ChainTarget, alpn: &[&str]) -> FilterChain {
    let mut chain = chain(
        format!("{}_mtls", target.name),
        matching(target, TLS, alpn),
        handler(target),
    );
    chain.transport_socket = Some(mesh_mtls_socket(target.http_port.is_some()));
    chain
}

fn matching(target: &ChainTarget, transport: &str, alpn: &[&str]) -> FilterChainMatch {
    FilterChainMatch {
        destination_port: target.match_port.map(|value| UInt32Value { value }),
        transport_protocol: transport.to_string(),
        application_protocols: alpn.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

fn chain(name: String, chain_match: FilterChainMatch, filter: Filter) -> FilterChain {
    FilterChain {
        name,
        filter_chain_match: Some(chain_match),
        filters: vec![filter],
        ..Default::default()
    }
}

fn handler(target: &ChainTarget) -> Filter {
    match target.http_port {
        Some(port) => http_connection_manager(port, &target.cluster),
        None => tcp_proxy(&target.cluster),
    }
}

fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

fn tcp_proxy(cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    network_filter(TCP_PROXY, pack_any(proxy))
}

/// HTTP to the workload. The caller's verified identity reaches the app in
/// `x-forwarded-client-cert` (subject, URI SAN = SPIFFE id, DNS SANs). On a
/// connection without a client certificate Envoy removes the header instead,
/// so a plaintext caller cannot make one up.
fn http_connection_manager(port: u32, cluster: &str) -> Filter {
    let manager = HttpConnectionManager {
        stat_prefix: format!("inbound_0.0.0.0_{port}"),
        route_specifier: Some(RouteSpecifier::RouteConfig(route_to(port, cluster))),
        http_filters: vec![HttpFilter {
            name: ROUTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        forward_client_cert_details: ForwardClientCertDetails::AppendForward as i32,
        set_current_client_cert_details: Some(SetCurrentClientCertDetails {
            subject: Some(BoolValue { value: true }),
            uri: true,
            dns: true,
            ..Default::default()
        }),
        // Istio's default path normalization (BASE): RFC 3986 dot segments.
        normalize_path: Some(BoolValue { value: true }),
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    network_filter(HTTP_CONNECTION_MANAGER, pack_any(manager))
}

/// Every request to the workload's port. No route timeout: the caller's
/// sidecar enforces the VirtualService's, and Envoy's 15 s default would cut
/// long requests; gRPC deadlines from `grpc-timeout` still apply.
fn route_to(port: u32, cluster: &str) -> RouteConfiguration {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
        timeout: Some(Duration::default()),
        max_stream_duration: Some(route_action::MaxStreamDuration {
            grpc_timeout_header_max: Some(Duration::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(action)),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}
