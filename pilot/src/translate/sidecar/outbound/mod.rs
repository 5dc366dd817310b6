//! The outbound side of a sidecar, shaped as Istio shapes it so that tools
//! and habits carry over:
//!
//! - `virtualOutbound` on 0.0.0.0:15001 receives every captured connection
//!   and hands it to the listener of its original destination; what no
//!   listener takes goes to `PassthroughCluster` (ALLOW_ANY) or
//!   `BlackHoleCluster` (REGISTRY_ONLY);
//! - `0.0.0.0_<port>` per port with HTTP services: an HTTP connection
//!   manager asking RDS for route configuration `<port>` (one virtual host per
//!   service and VirtualService host, then `allow_any` or `block_all`), TLS
//!   services told apart by SNI, and unknown traffic passed on or blocked;
//! - `<VIP>_<port>` per address of a TCP service, forwarding to its cluster
//!   (or as its VirtualService's `tcp` routes say); TCP services without an
//!   address share `0.0.0.0_<port>`;
//! - with interception mode NONE there is no virtual listener: each port
//!   listener binds 127.0.0.1 (or the egress listener's `bind`) for real.
//!
//! What the proxy sees comes from its [`ProxyScope`]: the Sidecar's egress
//! listeners, `exportTo` and `outboundTrafficPolicy`.

mod domains;
mod l4_routes;
mod plan;
mod port_listener;
mod route_config;
mod unknown_traffic;
mod virtual_listener;

use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use trireme_proto::envoy::pb::envoy::config::listener::v3::Listener;
use trireme_proto::envoy::pb::envoy::config::route::v3::RouteConfiguration;

use crate::model::{InterceptionMode, MeshSnapshot, Proxy, ProxyScope};
use crate::translate::clusters::scoped_outbound_clusters;

pub use virtual_listener::{VIRTUAL_OUTBOUND_LISTENER, VIRTUAL_OUTBOUND_PORT};

/// The outbound listeners: `virtualOutbound` (unless the proxy intercepts
/// nothing), then the port listeners by port and address.
pub fn listeners(snapshot: &MeshSnapshot, proxy: &Proxy, scope: &ProxyScope) -> Vec<Listener> {
    let unknown = unknown_traffic::UnknownTraffic::new(snapshot, scope);
    let mut listeners = Vec::new();
    if proxy.interception() != InterceptionMode::None {
        listeners.push(virtual_listener::virtual_outbound(proxy, &unknown));
    }
    listeners.extend(
        plan::port_listeners(snapshot, proxy, scope)
            .iter()
            .map(|planned| port_listener::listener(proxy, planned, &unknown)),
    );
    listeners
}

/// The route configuration an outbound HTTP listener asks for: `<port>`, or
/// `<bind>:<port>` for an egress listener with its own bind address. `None`
/// for names no outbound listener uses.
pub fn route_configuration(
    snapshot: &MeshSnapshot,
    proxy: &Proxy,
    scope: &ProxyScope,
    route_name: &str,
) -> Option<RouteConfiguration> {
    route_config::route_configuration(snapshot, proxy, scope, route_name)
}

/// The outbound clusters: every service port (and subset) in scope, then
/// `BlackHoleCluster` and `PassthroughCluster`.
pub fn clusters(snapshot: &MeshSnapshot, proxy: &Proxy, scope: &ProxyScope) -> Vec<Cluster> {
    scoped_outbound_clusters(snapshot, proxy, scope)
}
