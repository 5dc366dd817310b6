//! Inbound: what a sidecar accepts on behalf of its own workload.
//!
//! With traffic capture (REDIRECT or TPROXY), iptables sends every inbound
//! connection to `virtualInbound` on 15006, which recovers the original
//! destination and picks a filter chain by destination port: one set per
//! workload port, by its PeerAuthentication mode, sending to
//! `inbound|<port>||`; connections to ports nobody declared pass through to
//! `InboundPassthroughCluster` under the workload's mode.
//!
//! With interception mode NONE there is no capture: each Sidecar `ingress`
//! listener becomes a listener of its own on the proxy's IP (or `bind`) and
//! port, with the same chains, sending to its `defaultEndpoint`. A NONE-mode
//! proxy without ingress listeners gets no inbound listeners: binding the
//! service ports on the proxy's IP would collide with the app itself.
//!
//! Everything here is derived from an [`plan::InboundPlan`], whose rendering
//! is the inbound part of the proxy's view key ([`view_key`]).

mod chains;
mod clusters;
mod plan;
mod tls;

use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    Address, SocketAddress, TrafficDirection, address, socket_address::PortSpecifier,
};
use trireme_proto::envoy::pb::envoy::config::listener::v3::{
    FilterChain, Listener, ListenerFilter, ListenerFilterChainMatchPredicate, listener_filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use trireme_proto::envoy::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use trireme_proto::envoy::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use trireme_proto::envoy::pb::envoy::r#type::v3::Int32Range;
use trireme_proto::envoy::pb::google::protobuf::{Any, BoolValue};
use trireme_proto::envoy::util::pack_any;

use self::chains::{ChainTarget, blackhole_chain, chains_for, inspects_tls};
use self::clusters::target_cluster;
use self::plan::{Capture, InboundPlan, InboundPort, PortListener, Upstream};
use crate::model::{MeshSnapshot, MtlsMode, Proxy};
use crate::translate::names::BLACKHOLE_CLUSTER;

pub use self::clusters::INBOUND_PASSTHROUGH_CLUSTER;

/// The listener captured inbound traffic arrives on, and its port (Istio's).
pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";
pub const VIRTUAL_INBOUND_PORT: u32 = 15006;

const ORIGINAL_DST_FILTER: &str = "envoy.filters.listener.original_dst";
const TLS_INSPECTOR_FILTER: &str = "envoy.filters.listener.tls_inspector";

/// The inbound listeners of a sidecar: `virtualInbound` when traffic is
/// captured, plus one listener per port bound explicitly.
pub fn inbound_listeners(snapshot: &MeshSnapshot, proxy: &Proxy) -> Vec<Listener> {
    let plan = InboundPlan::of(snapshot, proxy);
    log_plan(&plan, proxy);
    let mut listeners: Vec<Listener> = plan
        .capture
        .map(|capture| virtual_inbound(&plan, capture))
        .into_iter()
        .collect();
    listeners.extend(plan.ports.iter().filter_map(|port| match &port.listener {
        PortListener::Bound(address) => Some(bound_listener(port, address)),
        PortListener::Captured => None,
    }));
    listeners
}

/// The inbound clusters of a sidecar: `inbound|<port>||` per port, sorted
/// by port, and `InboundPassthroughCluster` when traffic is captured.
pub fn inbound_clusters(snapshot: &MeshSnapshot, proxy: &Proxy) -> Vec<Cluster> {
    clusters::clusters(&InboundPlan::of(snapshot, proxy))
}

/// Everything the inbound listeners and clusters of `proxy` depend on, as a
/// string: proxies with equal keys get the same inbound resources.
pub fn view_key(snapshot: &MeshSnapshot, proxy: &Proxy) -> String {
    format!("{:?}", InboundPlan::of(snapshot, proxy))
}

/// Generation runs once per view, so this says things once per view too.
fn log_plan(plan: &InboundPlan, proxy: &Proxy) {
    for (port, reason) in &plan.ignored {
        tracing::warn!(proxy = %proxy.id, port, reason, "inbound port not served");
    }
    if plan.capture.is_none() && plan.ports.is_empty() {
        tracing::debug!(
            proxy = %proxy.id,
            "interception mode NONE: no inbound listeners; list the workload's ports as ingress \
             listeners (with a defaultEndpoint) of a Sidecar that applies to it"
        );
    }
}

fn virtual_inbound(plan: &InboundPlan, capture: Capture) -> Listener {
    let mut chains = vec![blackhole_chain(VIRTUAL_INBOUND_PORT, BLACKHOLE_CLUSTER)];
    for port in plan
        .ports
        .iter()
        .filter(|p| p.listener == PortListener::Captured)
    {
        chains.extend(chains_for(port.mtls, &port_target(port, true)));
    }
    chains.extend(chains_for(plan.workload_mode, &passthrough_target()));
    let plaintext_ports: Vec<u32> = plan
        .ports
        .iter()
        .filter(|p| p.listener == PortListener::Captured && p.mtls == MtlsMode::Disable)
        .map(|p| p.port)
        .collect();
    let mut listener_filters = vec![listener_filter(
        ORIGINAL_DST_FILTER,
        pack_any(OriginalDst::default()),
        None,
    )];
    listener_filters.extend(tls_inspector(&chains, &plaintext_ports));
    let any_address = if capture.ipv6 { "::" } else { "0.0.0.0" };
    Listener {
        name: VIRTUAL_INBOUND_LISTENER.to_string(),
        address: Some(socket_address(any_address, VIRTUAL_INBOUND_PORT)),
        filter_chains: chains,
        // The original_dst listener filter restores the destination for
        // chain matching and the original-destination clusters. No hand-off
        // by original destination: it would give a connection for, say,
        // :9080 to the outbound listener `0.0.0.0_9080` whenever the pod
        // also calls a service on its own app port, and that listener sends
        // it back to this pod: a loop.
        listener_filters,
        transparent: capture.transparent.then_some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

/// A listener of its own for one port, named `<address>_<port>` as Istio does.
fn bound_listener(port: &InboundPort, address: &str) -> Listener {
    let chains = chains_for(port.mtls, &port_target(port, false));
    Listener {
        name: format!("{address}_{}", port.port),
        address: Some(socket_address(address, port.port)),
        listener_filters: tls_inspector(&chains, &[]).into_iter().collect(),
        filter_chains: chains,
        bind_to_port: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

fn port_target(port: &InboundPort, match_port: bool) -> ChainTarget {
    let http = port.protocol.is_http() && port.upstream != Upstream::Passthrough;
    ChainTarget {
        name: format!("inbound_{}", port.port),
        match_port: match_port.then_some(port.port),
        cluster: target_cluster(port),
        http_port: http.then_some(port.port),
    }
}

fn passthrough_target() -> ChainTarget {
    ChainTarget {
        name: "virtualInbound-catchall".into(),
        match_port: None,
        cluster: INBOUND_PASSTHROUGH_CLUSTER.into(),
        http_port: None,
    }
}

/// The TLS inspector, when any chain matches on what it finds. It waits for
/// the client's first bytes, so it is switched off for plaintext-only ports,
/// where a server-first protocol would otherwise never start.
fn tls_inspector(chains: &[FilterChain], plaintext_ports: &[u32]) -> Option<ListenerFilter> {
    if !chains.iter().any(inspects_tls) {
        return None;
    }
    let port_rule = |port: &u32| ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range {
            start: *port as i32,
            end: *port as i32 + 1,
        })),
    };
    // Envoy wants at least two rules in an OR.
    let disabled = match plaintext_ports {
        [] => None,
        [port] => Some(port_rule(port)),
        ports => Some(ListenerFilterChainMatchPredicate {
            rule: Some(Rule::OrMatch(MatchSet {
                rules: ports.iter().map(port_rule).collect(),
            })),
        }),
    };
    Some(listener_filter(
        TLS_INSPECTOR_FILTER,
        pack_any(TlsInspector::default()),
        disabled,
    ))
}

fn listener_filter(
    name: &str,
    config: Any,
    disabled: Option<ListenerFilterChainMatchPredicate>,
) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        filter_disabled: disabled,
    }
}

fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}
