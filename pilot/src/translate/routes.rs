//! Route configurations (RDS) of gateways: which VirtualServices a gateway
//! server exposes, for which hosts, merged into Envoy virtual hosts the way
//! Istio merges them.
//!
//! - `http.<port>`: every plain-HTTP server on that port, across all the
//!   Gateways that select the proxy;
//! - `https.<port>.<port name>.<gateway>.<namespace>`: one HTTPS server that
//!   terminates TLS.

use std::collections::{BTreeMap, BTreeSet};

use mesh_config::Resource;
use mesh_config::networking::gateway::{Server, TlsMode};
use mesh_config::networking::{Gateway, VirtualService};
use trireme_proto::envoy::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, VirtualHost, virtual_host::TlsRequirementType,
};
use trireme_proto::envoy::pb::google::protobuf::{BoolValue, UInt32Value};

use super::http_route::{self, RouteContext, RouteScope};
use super::names;
use crate::model::scope::virtual_service_visible;
use crate::model::snapshot::namespace_of;
use crate::model::{MeshSnapshot, Protocol, Proxy};

/// Istio lets direct responses carry up to 1 MiB (Envoy's default is 4 KiB).
pub(crate) const MAX_DIRECT_RESPONSE_BODY_BYTES: u32 = 1024 * 1024;

/// A Gateway server together with the Gateway it belongs to.
#[derive(Clone, Copy)]
struct BoundServer<'a> {
    gateway: &'a Resource<Gateway>,
    server: &'a Server,
}

impl BoundServer<'_> {
    fn namespace(&self) -> &str {
        namespace_of(self.gateway)
    }

    fn https_redirect(&self) -> bool {
        self.server.tls.as_ref().and_then(|tls| tls.https_redirect) == Some(true)
    }
}

/// The route configuration `route_name` of a gateway proxy; `None` when no
/// server of the proxy's Gateways uses that name.
pub fn gateway_route_configuration(
    snapshot: &MeshSnapshot,
    proxy: &Proxy,
    route_name: &str,
) -> Option<RouteConfiguration> {
    let servers: Vec<BoundServer<'_>> = snapshot
        .gateways_for(proxy)
        .into_iter()
        .flat_map(|gateway| {
            gateway
                .spec
                .servers
                .iter()
                .map(move |server| BoundServer { gateway, server })
        })
        .filter(|bound| route_name_of(bound).as_deref() == Some(route_name))
        .collect();
    let port = servers.first()?.server.port.number;
    let mut hosts = VirtualHostSet::default();
    for bound in &servers {
        hosts.add_server(snapshot, proxy, bound);
    }
    Some(RouteConfiguration {
        name: route_name.to_string(),
        virtual_hosts: hosts.into_virtual_hosts(port),
        // Routes may name clusters the proxy has not received yet; Envoy must
        // not refuse the whole table for that.
        validate_clusters: Some(BoolValue { value: false }),
        // Clients send `Host: name:port` with any port the load balancer
        // exposes; hosts match on the name alone.
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: Some(UInt32Value {
            value: MAX_DIRECT_RESPONSE_BODY_BYTES,
        }),
        ..Default::default()
    })
}

/// The route configuration a server's listener asks for, if it serves HTTP.
/// Agrees with the gateway listeners: HTTP-family servers share `http.<port>`
/// (so does an HTTPS server that only redirects to TLS), and an HTTPS server
/// that does not pass TLS through gets its own table.
fn route_name_of(bound: &BoundServer<'_>) -> Option<String> {
    let port = &bound.server.port;
    let tls_mode = bound.server.tls.as_ref().and_then(|tls| tls.mode);
    match Protocol::of_port(&port.protocol, &port.name) {
        Protocol::Http | Protocol::Http2 | Protocol::Grpc => {
            Some(names::gateway_http_route_name(port.number))
        }
        Protocol::Https if bound.https_redirect() && tls_mode.is_none() => {
            Some(names::gateway_http_route_name(port.number))
        }
        Protocol::Https
            if matches!(
                tls_mode,
                Some(TlsMode::Passthrough | TlsMode::AutoPassthrough)
            ) =>
        {
            None
        }
        Protocol::Https => Some(names::gateway_https_route_name(
            port.number,
            &port.name,
            &bound.gateway.metadata.name,
            bound.namespace(),
        )),
        _ => None,
    }
}

/// One virtual host in the making: the routes of every VirtualService bound
/// to the host, and whether plain-text requests are redirected to TLS.
#[derive(Default)]
struct HostRoutes {
    routes: Vec<Route>,
    /// VirtualServices (`namespace/name`) already added, so that two servers
    /// exposing the same host do not repeat their routes.
    virtual_services: BTreeSet<String>,
    require_tls: bool,
}

/// Virtual hosts by (lower-case) host name.
#[derive(Default)]
struct VirtualHostSet {
    hosts: BTreeMap<String, HostRoutes>,
}

impl VirtualHostSet {
    fn add_server(&mut self, snapshot: &MeshSnapshot, proxy: &Proxy, bound: &BoundServer<'_>) {
        let gateway_name = bound.gateway.metadata.name.as_str();
        let virtual_services = snapshot
            .virtual_services_for_gateway(bound.namespace(), gateway_name)
            .into_iter()
            .filter(|vs| virtual_service_visible(vs, &proxy.namespace));
        for vs in virtual_services {
            let hosts = exposed_hosts(snapshot, bound, vs);
            if hosts.is_empty() {
                continue;
            }
            let ctx = RouteContext {
                snapshot,
                virtual_service: vs,
                scope: RouteScope::Gateway {
                    namespace: bound.namespace(),
                    name: gateway_name,
                },
                proxy,
                listener_port: bound.server.port.number,
                tls: bound.server.tls.is_some(),
            };
            let routes = http_route::virtual_service_routes(&ctx);
            if routes.is_empty() {
                // Like Istio: a VirtualService with nothing for this port adds no host.
                continue;
            }
            let key = format!("{}/{}", namespace_of(vs), vs.metadata.name);
            for host in hosts {
                let entry = self.hosts.entry(host).or_default();
                if entry.virtual_services.insert(key.clone()) {
                    entry.routes.extend(routes.iter().cloned());
                }
                entry.require_tls |= bound.https_redirect();
            }
        }
        if bound.https_redirect() {
            // Every host of a redirecting server answers, with or without routes.
            for host in &bound.server.hosts {
                let (_, name) = split_server_host(host);
                self.hosts
                    .entry(name.to_ascii_lowercase())
                    .or_default()
                    .require_tls = true;
            }
        }
    }

    fn into_virtual_hosts(self, port: u32) -> Vec<VirtualHost> {
        if self.hosts.is_empty() {
            // Envoy needs a table to finish the listener; with no host it
            // answers 404, as Istio's "blackhole" host does.
            return vec![VirtualHost {
                name: format!("blackhole:{port}"),
                domains: vec!["*".into()],
                ..Default::default()
            }];
        }
        let mut virtual_hosts: Vec<VirtualHost> = self
            .hosts
            .into_iter()
            .map(|(host, entry)| virtual_host(&host, port, entry))
            .collect();
        virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
        virtual_hosts
    }
}

fn virtual_host(host: &str, port: u32, entry: HostRoutes) -> VirtualHost {
    VirtualHost {
        name: format!("{host}:{port}"),
        domains: domains(host, port),
        routes: catch_alls_last(entry.routes),
        require_tls: if entry.require_tls {
            TlsRequirementType::All
        } else {
            TlsRequirementType::None
        } as i32,
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn domains(host: &str, port: u32) -> Vec<String> {
    if host == "*" {
        vec!["*".into()]
    } else {
        vec![host.to_string(), format!("{host}:{port}")]
    }
}

/// When several VirtualServices share a host, one's catch-all must not hide
/// another's specific routes: catch-alls go last, the rest keep their order.
fn catch_alls_last(routes: Vec<Route>) -> Vec<Route> {
    let (catch_alls, specific): (Vec<Route>, Vec<Route>) =
        routes.into_iter().partition(http_route::is_catch_all);
    specific.into_iter().chain(catch_alls).collect()
}

/// The hosts a server exposes for a VirtualService: the intersection of the
/// server's hosts (those open to the VirtualService's namespace) with the
/// VirtualService's, each time the more specific of the two names.
fn exposed_hosts(
    snapshot: &MeshSnapshot,
    bound: &BoundServer<'_>,
    vs: &Resource<VirtualService>,
) -> Vec<String> {
    let vs_namespace = namespace_of(vs);
    let vs_hosts: Vec<String> = vs
        .spec
        .hosts
        .iter()
        .map(|h| snapshot.qualify_host(h, vs_namespace))
        .collect();
    let mut exposed = Vec::new();
    for server_host in &bound.server.hosts {
        let (namespace, server_host) = split_server_host(server_host);
        let open_to_vs = match namespace {
            None | Some("*") => true,
            Some(".") => vs_namespace == bound.namespace(),
            Some(namespace) => vs_namespace == namespace,
        };
        if !open_to_vs {
            continue;
        }
        for vs_host in &vs_hosts {
            let host = if is_subset_of(vs_host, server_host) {
                vs_host.as_str()
            } else if is_subset_of(server_host, vs_host) {
                server_host
            } else {
                continue;
            };
            let host = host.to_ascii_lowercase();
            if !exposed.contains(&host) {
                exposed.push(host);
            }
        }
    }
    exposed
}

/// `namespace/host` → (namespace, host); a plain host has no namespace.
fn split_server_host(host: &str) -> (Option<&str>, &str) {
    match host.split_once('/') {
        Some((namespace, name)) => (Some(namespace), name),
        None => (None, host),
    }
}

/// Whether every name `host` stands for is also named by `pattern`
/// (`*.a.com` ⊂ `*.com` ⊂ `*`; `b.a.com` ⊂ `*.a.com`).
fn is_subset_of(host: &str, pattern: &str) -> bool {
    match (host.strip_prefix('*'), pattern.strip_prefix('*')) {
        (Some(host_suffix), Some(pattern_suffix)) => {
            ends_with_ignore_case(host_suffix, pattern_suffix)
        }
        (Some(_), None) => false,
        (None, Some(pattern_suffix)) => ends_with_ignore_case(host, pattern_suffix),
        (None, None) => host.eq_ignore_ascii_case(pattern),
    }
}

/// Host names compare without case; this runs for every server host ×
/// VirtualService host, so it does not allocate.
fn ends_with_ignore_case(name: &str, suffix: &str) -> bool {
    name.len() >= suffix.len()
        && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_subsets_follow_istio() {
        assert!(is_subset_of("a.example.com", "*.example.com"));
        assert!(is_subset_of("*.a.example.com", "*.example.com"));
        assert!(is_subset_of("*.example.com", "*"));
        assert!(!is_subset_of("example.com", "*.example.com"));
        assert!(!is_subset_of("*.example.com", "a.example.com"));
        assert!(is_subset_of("A.example.com", "a.EXAMPLE.com"));
    }

    #[test]
    fn server_hosts_split_off_their_namespace() {
        assert_eq!(split_server_host("ns/a.com"), (Some("ns"), "a.com"));
        assert_eq!(split_server_host("a.com"), (None, "a.com"));
    }
}
