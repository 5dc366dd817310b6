//! One planned port listener as an Envoy listener. Filter chains are told
//! apart only where the port needs it: HTTP by `http_inspector` (plaintext
//! HTTP/1.1 or h2c), TLS services by `tls_inspector` (SNI); a listener with a
//! single HTTP chain and nothing else inspects nothing.

use trireme_proto::envoy::pb::envoy::config::core::v3::{
    CidrRange, ConfigSource, TrafficDirection,
};
use trireme_proto::envoy::pb::envoy::config::listener::v3::{
    FilterChain, FilterChainMatch, Listener, ListenerFilter, listener_filter,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::http::{cors, fault, router};
use trireme_proto::envoy::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use trireme_proto::envoy::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use trireme_proto::envoy::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
    http_connection_manager::UpgradeConfig,
};
use trireme_proto::envoy::pb::google::protobuf::{BoolValue, Duration, UInt32Value};
use trireme_proto::envoy::util::pack_any;

use super::l4_routes::L4Destination;
use super::plan::{ListenAddress, PortListener, RangeChain, SniChain, wildcard_address};
use super::unknown_traffic::UnknownTraffic;
use crate::model::Proxy;
use crate::translate::listeners::{
    CORS_FILTER, FAULT_FILTER, HTTP_CONNECTION_MANAGER_FILTER, ROUTER_FILTER, ads, http_filter,
    network_filter, socket_address, tcp_proxy,
};
use crate::translate::names::sidecar_outbound_listener_name;

const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
/// What `http_inspector` reports for plaintext HTTP/1.x and HTTP/2.
const PLAINTEXT_HTTP_PROTOCOLS: [&str; 2] = ["http/1.1", "h2c"];
/// What Envoy reports for connections no inspector found TLS in.
const RAW_BUFFER: &str = "raw_buffer";
const TLS: &str = "tls";

pub(super) fn listener(proxy: &Proxy, plan: &PortListener, unknown: &UnknownTraffic) -> Listener {
    let (ip, captured) = match &plan.address {
        ListenAddress::Captured(None) => (wildcard_address(proxy), true),
        ListenAddress::Captured(Some(ip)) => (ip.as_str(), true),
        ListenAddress::Bound(ip) => (ip.as_str(), false),
    };
    // Connections to other addresses on this port that no chain claims are
    // unknown traffic; a TCP service without address takes them instead.
    let fallback = (plan.is_wildcard() && plan.tcp.is_none()).then(|| unknown.filter_chain());
    let shared =
        !plan.sni.is_empty() || !plan.ranges.is_empty() || plan.tcp.is_some() || fallback.is_some();
    let mut chains = Vec::new();
    if let Some(route) = &plan.http_route {
        chains.push(http_chain(ip, plan.port, route, shared));
    }
    chains.extend(plan.sni.iter().map(sni_chain));
    chains.extend(plan.ranges.iter().map(range_chain));
    chains.extend(plan.tcp.as_ref().map(|tcp| l4_chain(tcp, None)));
    let listener_filters = inspectors(&chains);
    Listener {
        name: sidecar_outbound_listener_name(ip, plan.port),
        address: Some(socket_address(ip, plan.port)),
        // Envoy waits for the inspectors' first bytes; a server-first
        // protocol sends none, so after the timeout the connection goes on
        // to the chain that needs no inspection rather than being closed.
        continue_on_listener_filters_timeout: !listener_filters.is_empty(),
        listener_filters,
        filter_chains: chains,
        default_filter_chain: fallback,
        traffic_direction: TrafficDirection::Outbound as i32,
        // Captured listeners do not bind: `virtualOutbound` hands them their
        // connections. Bound ones keep Envoy's default.
        bind_to_port: captured.then_some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// The HTTP connection manager for the port's services; when the port
/// carries anything else, only plaintext HTTP reaches it.
fn http_chain(ip: &str, port: u32, route_name: &str, shared: bool) -> FilterChain {
    let manager = HttpConnectionManager {
        stat_prefix: format!("outbound_{ip}_{port}"),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                // Serve with what the proxy has rather than hold the listener
                // back until the routes arrive.
                initial_fetch_timeout: Some(Duration::default()),
                ..ads()
            }),
            route_config_name: route_name.to_string(),
        })),
        http_filters: vec![
            http_filter(FAULT_FILTER, pack_any(fault::v3::HttpFault::default())),
            http_filter(CORS_FILTER, pack_any(cors::v3::Cors::default())),
            http_filter(ROUTER_FILTER, pack_any(router::v3::Router::default())),
        ],
        // Inside the mesh the peer is the workload, not a client to record.
        use_remote_address: Some(BoolValue { value: false }),
        // Long-lived streams (gRPC, watches) are the application's business,
        // and WebSockets work as they do without a proxy.
        stream_idle_timeout: Some(Duration::default()),
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    FilterChain {
        filter_chain_match: shared.then(|| FilterChainMatch {
            transport_protocol: RAW_BUFFER.to_string(),
            application_protocols: PLAINTEXT_HTTP_PROTOCOLS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            ..Default::default()
        }),
        filters: vec![network_filter(
            HTTP_CONNECTION_MANAGER_FILTER,
            pack_any(manager),
        )],
        ..Default::default()
    }
}

fn sni_chain(chain: &SniChain) -> FilterChain {
    // `*` is not a server name Envoy accepts; such a service takes all TLS.
    let server_names = if chain.server_name == "*" {
        Vec::new()
    } else {
        vec![chain.server_name.to_ascii_lowercase()]
    };
    l4_chain(
        &chain.destination,
        Some(FilterChainMatch {
            server_names,
            transport_protocol: TLS.to_string(),
            ..Default::default()
        }),
    )
}

fn range_chain(chain: &RangeChain) -> FilterChain {
    l4_chain(
        &chain.destination,
        Some(FilterChainMatch {
            prefix_ranges: vec![CidrRange {
                address_prefix: chain.network.to_string(),
                prefix_len: Some(UInt32Value {
                    value: chain.prefix_len,
                }),
            }],
            ..Default::default()
        }),
    )
}

fn l4_chain(destination: &L4Destination, chain_match: Option<FilterChainMatch>) -> FilterChain {
    FilterChain {
        filter_chain_match: chain_match,
        filters: vec![tcp_proxy(
            destination.stat_prefix.clone(),
            &destination.clusters,
        )],
        ..Default::default()
    }
}

/// The listener filters the chains' matches need, TLS first (HTTP
/// inspection skips what it found to be TLS).
fn inspectors(chains: &[FilterChain]) -> Vec<ListenerFilter> {
    let matches = || chains.iter().filter_map(|c| c.filter_chain_match.as_ref());
    let mut filters = Vec::new();
    if matches().any(|m| m.transport_protocol == TLS || !m.server_names.is_empty()) {
        filters.push(listener_filter(
            TLS_INSPECTOR,
            pack_any(TlsInspector::default()),
        ));
    }
    if matches().any(|m| !m.application_protocols.is_empty()) {
        filters.push(listener_filter(
            HTTP_INSPECTOR,
            pack_any(HttpInspector::default()),
        ));
    }
    filters
}

fn listener_filter(
    name: &str,
    config: trireme_proto::envoy::pb::google::protobuf::Any,
) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}
