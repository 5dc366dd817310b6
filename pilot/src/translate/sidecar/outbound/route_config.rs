//! Route configurations of a sidecar's outbound HTTP listeners (RDS
//! `<port>` or `<bind>:<port>`): one virtual host per service on that port
//! and per host of an imported VirtualService, then the catch-all for every
//! other host.
//!
//! As in Istio: a VirtualService's routes serve each of its hosts, the first
//! VirtualService (in config order) claiming a host keeps it; its hosts
//! that are not services appear on the ports of its service hosts, or on
//! port 80 when it has none; a service no VirtualService claims gets the
//! `default` route to its own cluster.

use std::collections::{BTreeMap, HashSet};

use trireme_proto::envoy::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};
use trireme_proto::envoy::pb::google::protobuf::{BoolValue, UInt32Value};

use super::domains::domains;
use super::unknown_traffic::UnknownTraffic;
use crate::model::scope::EgressScope;
use crate::model::snapshot::namespace_of;
use crate::model::{MeshSnapshot, Proxy, ProxyScope, Service};
use crate::translate::http_route::{self, RouteContext, RouteScope};
use crate::translate::names::{Direction, cluster_name, parse_sidecar_outbound_route_name};
use crate::translate::routes::MAX_DIRECT_RESPONSE_BODY_BYTES;
use crate::translate::traffic_policy::hash_policy_for;

/// Where a VirtualService's hosts that are not services are served when none
/// of its hosts is a service that tells the port.
const DEFAULT_HTTP_PORT: u32 = 80;

pub(super) fn route_configuration(
    snapshot: &MeshSnapshot,
    proxy: &Proxy,
    scope: &ProxyScope,
    route_name: &str,
) -> Option<RouteConfiguration> {
    let (bind, port) = parse_sidecar_outbound_route_name(route_name)?;
    let egress = egress_listener(scope, bind, port)?;
    let unknown = UnknownTraffic::new(snapshot, scope);
    let unknown = if egress.captured(proxy) {
        unknown
    } else {
        unknown.for_bound_listener()
    };
    let hosts = HostTable::build(snapshot, proxy, egress, port);
    Some(RouteConfiguration {
        name: route_name.to_string(),
        virtual_hosts: hosts.into_virtual_hosts(snapshot, proxy, port, unknown.virtual_host()),
        // Routes may name clusters the proxy has not received yet; Envoy must
        // not refuse the whole table for that.
        validate_clusters: Some(BoolValue { value: false }),
        max_direct_response_body_size_bytes: Some(UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY_BYTES,
        }),
        ..Default::default()
    })
}

/// The egress listener whose listener asks for this route: the one that
/// declares the port, else the catch-all, with the same bind address.
fn egress_listener<'a>(
    scope: &'a ProxyScope,
    bind: Option<&str>,
    port: u32,
) -> Option<&'a EgressScope> {
    let listeners = scope.egress_listeners();
    let same_bind = |egress: &&EgressScope| egress.bind.as_deref() == bind;
    listeners
        .iter()
        .filter(same_bind)
        .find(|egress| egress.port.as_ref().is_some_and(|p| p.number == port))
        .or_else(|| {
            listeners
                .iter()
                .filter(same_bind)
                .find(|egress| egress.port.is_none())
        })
}

/// Whether `service` is served over HTTP on `port` by this egress listener
/// (whose declared protocol, if any, overrides the service's).
fn serves_http(egress: &EgressScope, service: &Service, port: u32) -> bool {
    match &egress.port {
        Some(declared) => {
            declared.number == port && declared.protocol.is_http() && service.port(port).is_some()
        }
        None => service.port(port).is_some_and(|p| p.protocol.is_http()),
    }
}

/// One virtual host in the making.
struct HostEntry<'a> {
    service: Option<&'a Service>,
    routes: Vec<Route>,
}

/// Virtual hosts by (lower-case) host name.
struct HostTable<'a> {
    hosts: BTreeMap<String, HostEntry<'a>>,
}

impl<'a> HostTable<'a> {
    fn build(
        snapshot: &'a MeshSnapshot,
        proxy: &Proxy,
        egress: &'a EgressScope,
        port: u32,
    ) -> HostTable<'a> {
        let services: BTreeMap<&str, &Service> = egress
            .services(snapshot)
            .map(|s| (s.hostname.as_str(), s))
            .collect();
        let mut table = HostTable {
            hosts: BTreeMap::new(),
        };
        for vs in egress.virtual_services(snapshot) {
            let ctx = RouteContext {
                snapshot,
                virtual_service: vs,
                scope: RouteScope::Mesh,
                proxy,
                listener_port: port,
                tls: false,
            };
            let routes = http_route::virtual_service_routes(&ctx);
            if routes.is_empty() {
                continue;
            }
            let hosts: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .map(|h| {
                    snapshot
                        .qualify_host(h, namespace_of(vs))
                        .to_ascii_lowercase()
                })
                .collect();
            table.add_virtual_service(&services, egress, port, &hosts, &routes);
        }
        for service in services.values() {
            if serves_http(egress, service, port) && !table.hosts.contains_key(&service.hostname) {
                let cluster = cluster_name(Direction::Outbound, port, "", &service.hostname);
                let hash = hash_policy_for(snapshot, &proxy.namespace, &service.hostname, port, "");
                table.hosts.insert(
                    service.hostname.clone(),
                    HostEntry {
                        service: Some(service),
                        routes: vec![http_route::default_route(cluster, hash)],
                    },
                );
            }
        }
        table
    }

    fn add_virtual_service(
        &mut self,
        services: &BTreeMap<&str, &'a Service>,
        egress: &EgressScope,
        port: u32,
        hosts: &[String],
        routes: &[Route],
    ) {
        let service_hosts: Vec<(&String, &'a Service)> = hosts
            .iter()
            .filter_map(|h| services.get(h.as_str()).map(|s| (h, *s)))
            .collect();
        let on_port = if service_hosts.is_empty() {
            port == DEFAULT_HTTP_PORT
        } else {
            service_hosts
                .iter()
                .any(|(_, s)| serves_http(egress, s, port))
        };
        if !on_port {
            return;
        }
        for host in hosts {
            let service = services.get(host.as_str()).copied();
            if service.is_some_and(|s| !serves_http(egress, s, port)) {
                continue;
            }
            self.hosts.entry(host.clone()).or_insert_with(|| HostEntry {
                service,
                routes: routes.to_vec(),
            });
        }
    }

    /// The virtual hosts by name, then the catch-all. Envoy refuses a domain
    /// used twice, so a domain an earlier host took (two services sharing a
    /// VIP, a VirtualService host `*`) is left out of later ones.
    fn into_virtual_hosts(
        self,
        snapshot: &MeshSnapshot,
        proxy: &Proxy,
        port: u32,
        catch_all: VirtualHost,
    ) -> Vec<VirtualHost> {
        let mut taken: HashSet<String> = HashSet::new();
        let mut virtual_hosts = Vec::with_capacity(self.hosts.len() + 1);
        for (host, entry) in self.hosts {
            let domains: Vec<String> = domains(
                &host,
                port,
                entry.service,
                &proxy.namespace,
                &snapshot.settings.domain_suffix,
            )
            .into_iter()
            .filter(|d| taken.insert(d.clone()))
            .collect();
            if domains.is_empty() {
                continue;
            }
            virtual_hosts.push(VirtualHost {
                name: format!("{host}:{port}"),
                domains,
                routes: entry.routes,
                include_request_attempt_count: true,
                ..Default::default()
            });
        }
        if catch_all.domains.iter().all(|d| !taken.contains(d)) {
            virtual_hosts.push(catch_all);
        }
        virtual_hosts
    }
}
