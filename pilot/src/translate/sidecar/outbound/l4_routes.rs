//! Where a sidecar sends a TCP or TLS connection to one service: as the
//! first imported VirtualService with an applicable `tcp` (or, for TLS,
//! `tls`) route says, else to the service's own cluster.
//!
//! A match applies when its port is unset or the service port, its
//! `gateways` are unset or name `mesh`, and the proxy has its
//! `sourceLabels` and `sourceNamespace`; TLS matches must also name the
//! service among their `sniHosts`. Subnet conditions are not evaluated.

use std::collections::BTreeMap;

use mesh_config::Resource;
use mesh_config::networking::VirtualService;
use mesh_config::networking::virtual_service::{RouteDestination, TcpRoute, TlsRoute};

use crate::model::scope::{EgressScope, hosts_intersect};
use crate::model::snapshot::{MESH_GATEWAY, namespace_of};
use crate::model::{MeshSnapshot, Proxy, Service};
use crate::translate::listeners::tcp_route_clusters;
use crate::translate::names::{Direction, cluster_name};

/// The clusters a connection goes to, and the stat prefix of its TCP proxy
/// (the service's own cluster name, as in Istio).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct L4Destination {
    pub stat_prefix: String,
    pub clusters: Vec<(String, u32)>,
}

/// The destination of connections to `service` on `port`; `tls` selects
/// `tls` routes instead of `tcp` ones.
pub(super) fn destination(
    snapshot: &MeshSnapshot,
    proxy: &Proxy,
    egress: &EgressScope,
    service: &Service,
    port: u32,
    tls: bool,
) -> L4Destination {
    let own = cluster_name(Direction::Outbound, port, "", &service.hostname);
    let routed = egress
        .virtual_services(snapshot)
        .filter(|vs| names_host(snapshot, vs, &service.hostname))
        .find_map(|vs| {
            let route = if tls {
                tls_route(snapshot, vs, proxy, port, &service.hostname)
            } else {
                tcp_route(vs, proxy, port)
            }?;
            Some(tcp_route_clusters(snapshot, namespace_of(vs), port, route))
        });
    L4Destination {
        clusters: routed.unwrap_or_else(|| vec![(own.clone(), 1)]),
        stat_prefix: own,
    }
}

fn names_host(snapshot: &MeshSnapshot, vs: &Resource<VirtualService>, hostname: &str) -> bool {
    vs.spec
        .hosts
        .iter()
        .any(|host| hosts_intersect(&snapshot.qualify_host(host, namespace_of(vs)), hostname))
}

fn tcp_route<'a>(
    vs: &'a Resource<VirtualService>,
    proxy: &Proxy,
    port: u32,
) -> Option<&'a [RouteDestination]> {
    vs.spec
        .tcp
        .iter()
        .find(|route: &&TcpRoute| {
            route.r#match.is_empty()
                || route.r#match.iter().any(|m| {
                    applies(
                        proxy,
                        port,
                        Condition {
                            port: m.port,
                            gateways: &m.gateways,
                            source_labels: &m.source_labels,
                            source_namespace: &m.source_namespace,
                        },
                    )
                })
        })
        .map(|route| route.route.as_slice())
}

fn tls_route<'a>(
    snapshot: &MeshSnapshot,
    vs: &'a Resource<VirtualService>,
    proxy: &Proxy,
    port: u32,
    hostname: &str,
) -> Option<&'a [RouteDestination]> {
    let namespace = namespace_of(vs);
    vs.spec
        .tls
        .iter()
        .find(|route: &&TlsRoute| {
            route.r#match.iter().any(|m| {
                let condition = Condition {
                    port: m.port,
                    gateways: &m.gateways,
                    source_labels: &m.source_labels,
                    source_namespace: &m.source_namespace,
                };
                applies(proxy, port, condition)
                    && m.sni_hosts.iter().any(|sni| {
                        hosts_intersect(&snapshot.qualify_host(sni, namespace), hostname)
                    })
            })
        })
        .map(|route| route.route.as_slice())
}

/// The conditions `tcp` and `tls` matches share.
struct Condition<'a> {
    port: Option<u32>,
    gateways: &'a [String],
    source_labels: &'a BTreeMap<String, String>,
    source_namespace: &'a str,
}

fn applies(proxy: &Proxy, port: u32, condition: Condition<'_>) -> bool {
    condition.port.is_none_or(|p| p == 0 || p == port)
        && (condition.gateways.is_empty() || condition.gateways.iter().any(|g| g == MESH_GATEWAY))
        && condition
            .source_labels
            .iter()
            .all(|(k, v)| proxy.labels.get(k) == Some(v))
        && (condition.source_namespace.is_empty() || condition.source_namespace == proxy.namespace)
}
