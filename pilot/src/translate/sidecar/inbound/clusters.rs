//! Inbound clusters: how the sidecar reaches its own workload.
//!
//! Captured traffic goes on to the address the peer dialled (ORIGINAL_DST,
//! so the app sees its pod IP as destination), sent from 127.0.0.6: the
//! capture rules let traffic from that address through on `lo` instead of
//! capturing it again (Istio since 1.10). A fixed `defaultEndpoint` is a
//! STATIC cluster. Ports no one declared go through
//! `InboundPassthroughCluster`, built the same way.

use mesh_config::networking::destination_rule::ConnectionPoolSettings;
use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use trireme_proto::envoy::pb::envoy::config::cluster::v3::cluster::DiscoveryType;
use trireme_proto::envoy::pb::envoy::config::core::v3::{
    Address, BindConfig, Pipe, SocketAddress, address, socket_address::PortSpecifier,
};
use trireme_proto::envoy::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};

use super::plan::{InboundPlan, InboundPort, Upstream};
use super::socket_address;
use crate::model::Protocol;
use crate::translate::names::{Direction, cluster_name};
use crate::translate::traffic_policy::{
    EffectivePolicy, PolicyTarget, UpstreamCluster, apply_traffic_policy,
};

/// Where captured traffic to undeclared ports goes (Istio's name).
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// `inbound|<port>||`: inbound clusters name only the workload port.
pub(super) fn inbound_cluster_name(port: u32) -> String {
    cluster_name(Direction::Inbound, port, "", "")
}

/// The cluster a port's chains send to.
pub(super) fn target_cluster(port: &InboundPort) -> String {
    match port.upstream {
        Upstream::Passthrough => INBOUND_PASSTHROUGH_CLUSTER.to_string(),
        _ => inbound_cluster_name(port.port),
    }
}

/// The plan's clusters, by port, then the passthrough cluster when traffic is captured.
pub(super) fn clusters(plan: &InboundPlan) -> Vec<Cluster> {
    let mut clusters: Vec<Cluster> = plan
        .ports
        .iter()
        .filter_map(|port| port_cluster(plan, port))
        .collect();
    if let Some(capture) = plan.capture {
        clusters.push(original_destination(
            INBOUND_PASSTHROUGH_CLUSTER.to_string(),
            capture.ipv6,
            None,
            Protocol::Tcp,
        ));
    }
    clusters
}

fn port_cluster(plan: &InboundPlan, port: &InboundPort) -> Option<Cluster> {
    let name = inbound_cluster_name(port.port);
    let pool = port.connection_pool.as_ref();
    match &port.upstream {
        Upstream::Passthrough => None,
        Upstream::OriginalDestination => Some(original_destination(
            name,
            plan.capture.is_some_and(|c| c.ipv6),
            pool,
            port.protocol,
        )),
        Upstream::Socket { address, port: to } => Some(static_cluster(
            name,
            socket_address(address, *to),
            pool,
            port.protocol,
        )),
        Upstream::Pipe(path) => Some(static_cluster(
            name,
            Address {
                address: Some(address::Address::Pipe(Pipe {
                    path: path.clone(),
                    mode: 0,
                })),
            },
            pool,
            port.protocol,
        )),
    }
}

fn original_destination(
    name: String,
    ipv6: bool,
    pool: Option<&ConnectionPoolSettings>,
    protocol: Protocol,
) -> Cluster {
    let mut cluster = Cluster {
        name,
        upstream_bind_config: Some(BindConfig {
            source_address: Some(inbound_source(ipv6)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut upstream = UpstreamCluster::new(&mut cluster);
    upstream.set_discovery_type(DiscoveryType::OriginalDst);
    finish(upstream, pool, protocol);
    cluster
}

/// 127.0.0.6 (`::6` for IPv6 pods): the source the capture rules exempt.
fn inbound_source(ipv6: bool) -> SocketAddress {
    let ip = if ipv6 { "::6" } else { "127.0.0.6" };
    SocketAddress {
        address: ip.to_string(),
        port_specifier: Some(PortSpecifier::PortValue(0)),
        ..Default::default()
    }
}

fn static_cluster(
    name: String,
    to: Address,
    pool: Option<&ConnectionPoolSettings>,
    protocol: Protocol,
) -> Cluster {
    let mut cluster = Cluster {
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(to),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        name,
        ..Default::default()
    };
    let mut upstream = UpstreamCluster::new(&mut cluster);
    upstream.set_discovery_type(DiscoveryType::Static);
    finish(upstream, pool, protocol);
    cluster
}

/// Upstream protocol from the port, then the Sidecar's inbound connection
/// pool (circuit breakers lifted to the maximum unless it sets them, as Istio
/// does; Envoy's defaults would cap a busy workload at 1024 requests).
fn finish(
    mut cluster: UpstreamCluster<'_>,
    pool: Option<&ConnectionPoolSettings>,
    protocol: Protocol,
) {
    // HTTP/1.1 is Envoy's default; other ports are proxied as bytes.
    if matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        cluster.set_http2();
    }
    let policy = EffectivePolicy {
        connection_pool: pool,
        ..Default::default()
    };
    let target = PolicyTarget {
        istio_mtls_sni: "",
        service_accounts: &[],
    };
    apply_traffic_policy(&mut cluster, &policy, &target);
    cluster.finish();
}
