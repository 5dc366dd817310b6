//! What one proxy may see, decided the way Istio decides it: `exportTo` on
//! ServiceEntries, VirtualServices and DestinationRules, and the `Sidecar`
//! resource that applies to the proxy (its egress hosts and
//! `outboundTrafficPolicy`).
//!
//! A [`ProxyScope`] depends only on the snapshot and on what selects the
//! Sidecar (the proxy's type, namespace and labels), so pilot computes it once
//! per push and proxy view and shares it between the view's clusters,
//! listeners and routes.
//!
//! - `exportTo`: `*` every namespace (also when the list is empty), `.` the
//!   resource's own namespace, `~` no namespace, else the namespace named. A
//!   DestinationRule is always visible in its own namespace.
//! - Sidecar selection: in the proxy's namespace, a Sidecar whose
//!   `workloadSelector` matches the proxy's labels beats the one without a
//!   selector; without either, the root namespace's Sidecar without a
//!   selector is the mesh default. Gateways have none.
//! - Egress hosts `<namespace>/<dnsName>`: namespace `*` any, `.` the proxy's,
//!   `~` none, else the one named; dnsName `*`, `*.<suffix>` or a name. A
//!   VirtualService is imported when its namespace and one of its hosts
//!   match, and the visible services its routes send to come with it.

use std::collections::{BTreeMap, BTreeSet};

use mesh_config::Resource;
use mesh_config::networking::sidecar::{CaptureMode, IstioEgressListener, Mode as OutboundMode};
use mesh_config::networking::virtual_service::Destination;
use mesh_config::networking::{DestinationRule, Sidecar, VirtualService};

use super::proxy::InterceptionMode;
use super::snapshot::{MESH_GATEWAY, namespace_of};
use super::{MeshSnapshot, Protocol, Proxy, ProxyType, Service};

/// Everything one proxy view may reach, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyScope {
    /// Position of the applying Sidecar in `config.sidecars`.
    sidecar: Option<usize>,
    outbound_policy: OutboundPolicy,
    egress: Vec<EgressScope>,
    /// Host names of every service of every egress listener, sorted.
    services: Vec<String>,
}

/// What happens to traffic for destinations outside the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundPolicy {
    pub mode: OutboundMode,
    /// With ALLOW_ANY, unknown traffic goes to this destination (host fully
    /// qualified) instead of where it was addressed.
    pub egress_proxy: Option<Destination>,
}

/// One egress listener of the Sidecar (or the implicit `*/*` one) with the
/// services and VirtualServices it imports.
#[derive(Debug, Clone, PartialEq)]
pub struct EgressScope {
    /// `None` for the catch-all listener: one listener per service port.
    pub port: Option<EgressPort>,
    /// Address to bind when the listener is not captured (`bind`).
    pub bind: Option<String>,
    pub capture_mode: CaptureMode,
    /// Host names, sorted.
    services: Vec<String>,
    /// Positions in `config.virtual_services`, in config order.
    virtual_services: Vec<usize>,
}

/// The port of an egress listener that names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPort {
    pub number: u32,
    pub protocol: Protocol,
    pub name: String,
}

impl ProxyScope {
    pub fn new(snapshot: &MeshSnapshot, proxy: &Proxy) -> ProxyScope {
        let sidecar = match proxy.proxy_type {
            ProxyType::Sidecar => select_sidecar(snapshot, proxy),
            ProxyType::Router => None,
        };
        let spec = sidecar.map(|i| &snapshot.config.sidecars[i].spec);
        let visible = Visible::new(snapshot, &proxy.namespace);
        let egress: Vec<EgressScope> = match spec.map(|s| s.egress.as_slice()) {
            Some(listeners) if !listeners.is_empty() => listeners
                .iter()
                .map(|listener| EgressScope::new(snapshot, &visible, &proxy.namespace, listener))
                .collect(),
            _ => vec![EgressScope::everything(&visible)],
        };
        let services: BTreeSet<&str> = egress
            .iter()
            .flat_map(|e| e.services.iter().map(String::as_str))
            .collect();
        ProxyScope {
            sidecar,
            outbound_policy: outbound_policy(snapshot, spec, &proxy.namespace),
            services: services.into_iter().map(str::to_string).collect(),
            egress,
        }
    }

    /// The Sidecar resource that applies, if any (its ingress listeners are
    /// the inbound side's business).
    pub fn sidecar<'a>(&self, snapshot: &'a MeshSnapshot) -> Option<&'a Resource<Sidecar>> {
        self.sidecar.map(|i| &snapshot.config.sidecars[i])
    }

    pub fn outbound_policy(&self) -> &OutboundPolicy {
        &self.outbound_policy
    }

    pub fn egress_listeners(&self) -> &[EgressScope] {
        &self.egress
    }

    /// Every service the proxy may reach, by host name.
    pub fn services<'a>(&'a self, snapshot: &'a MeshSnapshot) -> impl Iterator<Item = &'a Service> {
        resolve(snapshot, &self.services)
    }
}

impl EgressScope {
    /// The implicit egress listener `*/*`: every visible service and
    /// VirtualService.
    fn everything(visible: &Visible<'_>) -> EgressScope {
        EgressScope {
            port: None,
            bind: None,
            capture_mode: CaptureMode::Default,
            services: visible.services.keys().map(|h| h.to_string()).collect(),
            virtual_services: visible.virtual_services.iter().map(|(i, _)| *i).collect(),
        }
    }

    fn new(
        snapshot: &MeshSnapshot,
        visible: &Visible<'_>,
        proxy_namespace: &str,
        listener: &IstioEgressListener,
    ) -> EgressScope {
        let hosts: Vec<EgressHost> = listener
            .hosts
            .iter()
            .filter_map(|host| {
                let parsed = EgressHost::parse(host, proxy_namespace);
                if parsed.is_none() {
                    tracing::warn!(
                        host,
                        "Sidecar egress host is not <namespace>/<dnsName>; ignored"
                    );
                }
                parsed
            })
            .collect();
        let mut services: BTreeSet<&str> = visible
            .services
            .values()
            .filter(|s| hosts.iter().any(|h| h.matches(&s.namespace, &s.hostname)))
            .map(|s| s.hostname.as_str())
            .collect();
        let virtual_services: Vec<(usize, &Resource<VirtualService>)> = visible
            .virtual_services
            .iter()
            .filter(|(_, vs)| imports_virtual_service(snapshot, &hosts, vs))
            .copied()
            .collect();
        // Routes must find the clusters they send to, even for services the
        // hosts do not name (Istio infers them the same way).
        for (_, vs) in &virtual_services {
            for host in destination_hosts(&vs.spec) {
                let qualified = snapshot.qualify_host(host, namespace_of(vs));
                if let Some((hostname, _)) = visible.services.get_key_value(qualified.as_str()) {
                    services.insert(hostname);
                }
            }
        }
        EgressScope {
            port: listener.port.as_ref().and_then(|port| {
                Some(EgressPort {
                    number: port.number.filter(|n| *n > 0)?,
                    protocol: Protocol::of_port(&port.protocol, &port.name),
                    name: port.name.clone(),
                })
            }),
            bind: Some(listener.bind.clone()).filter(|b| !b.is_empty()),
            capture_mode: listener.capture_mode.unwrap_or_default(),
            services: services.into_iter().map(str::to_string).collect(),
            virtual_services: virtual_services.into_iter().map(|(i, _)| i).collect(),
        }
    }

    /// The imported services, by host name.
    pub fn services<'a>(&'a self, snapshot: &'a MeshSnapshot) -> impl Iterator<Item = &'a Service> {
        resolve(snapshot, &self.services)
    }

    /// The imported VirtualServices bound to the mesh, in config order.
    pub fn virtual_services<'a>(
        &'a self,
        snapshot: &'a MeshSnapshot,
    ) -> impl Iterator<Item = &'a Resource<VirtualService>> {
        self.virtual_services
            .iter()
            .map(|&i| &snapshot.config.virtual_services[i])
    }

    /// Whether traffic reaches this listener by capture (iptables sends it
    /// on from the virtual listener) rather than by the application
    /// connecting to a port the listener binds.
    pub fn captured(&self, proxy: &Proxy) -> bool {
        match self.capture_mode {
            CaptureMode::None => false,
            CaptureMode::Iptables => true,
            CaptureMode::Default => proxy.interception() != InterceptionMode::None,
        }
    }
}

fn resolve<'a>(
    snapshot: &'a MeshSnapshot,
    hostnames: &'a [String],
) -> impl Iterator<Item = &'a Service> {
    hostnames.iter().filter_map(|h| snapshot.service(h))
}

/// The services and mesh VirtualServices exported to one namespace.
struct Visible<'a> {
    services: BTreeMap<&'a str, &'a Service>,
    virtual_services: Vec<(usize, &'a Resource<VirtualService>)>,
}

impl<'a> Visible<'a> {
    fn new(snapshot: &'a MeshSnapshot, namespace: &str) -> Visible<'a> {
        Visible {
            services: snapshot
                .services
                .values()
                .filter(|s| service_visible(s, namespace))
                .map(|s| (s.hostname.as_str(), s))
                .collect(),
            virtual_services: snapshot
                .config
                .virtual_services
                .iter()
                .enumerate()
                .filter(|(_, vs)| virtual_service_visible(vs, namespace) && binds_to_mesh(vs))
                .collect(),
        }
    }
}

/// The Sidecar for `proxy`, by Istio's precedence.
fn select_sidecar(snapshot: &MeshSnapshot, proxy: &Proxy) -> Option<usize> {
    let sidecars = &snapshot.config.sidecars;
    let in_namespace = |namespace: &str| {
        let namespace = namespace.to_string();
        sidecars
            .iter()
            .enumerate()
            .filter(move |(_, s)| namespace_of(s) == namespace)
    };
    fn selector(sidecar: &Resource<Sidecar>) -> Option<&BTreeMap<String, String>> {
        sidecar
            .spec
            .workload_selector
            .as_ref()
            .map(|w| &w.labels)
            .filter(|labels| !labels.is_empty())
    }
    let selects_proxy = |sidecar: &Resource<Sidecar>| {
        selector(sidecar)
            .is_some_and(|labels| labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)))
    };
    in_namespace(&proxy.namespace)
        .find(|(_, s)| selects_proxy(s))
        .or_else(|| in_namespace(&proxy.namespace).find(|(_, s)| selector(s).is_none()))
        .or_else(|| {
            in_namespace(&snapshot.settings.root_namespace).find(|(_, s)| selector(s).is_none())
        })
        .map(|(i, _)| i)
}

/// The Sidecar's policy when it has one (an empty one is REGISTRY_ONLY, the
/// proto's zero value, as in Istio), else the mesh's.
fn outbound_policy(
    snapshot: &MeshSnapshot,
    sidecar: Option<&Sidecar>,
    proxy_namespace: &str,
) -> OutboundPolicy {
    let Some(policy) = sidecar.and_then(|s| s.outbound_traffic_policy.as_ref()) else {
        return OutboundPolicy {
            mode: snapshot.settings.outbound_traffic_policy,
            egress_proxy: None,
        };
    };
    let mode = policy.mode.unwrap_or(OutboundMode::RegistryOnly);
    let egress_proxy = policy
        .egress_proxy
        .as_ref()
        .filter(|_| mode == OutboundMode::AllowAny)
        .map(|destination| Destination {
            host: snapshot.qualify_host(&destination.host, proxy_namespace),
            ..destination.clone()
        });
    OutboundPolicy { mode, egress_proxy }
}

fn imports_virtual_service(
    snapshot: &MeshSnapshot,
    hosts: &[EgressHost],
    vs: &Resource<VirtualService>,
) -> bool {
    let namespace = namespace_of(vs);
    hosts
        .iter()
        .filter(|h| h.matches_namespace(namespace))
        .any(|h| {
            vs.spec.hosts.iter().any(|vs_host| {
                hosts_intersect(&h.dns_name, &snapshot.qualify_host(vs_host, namespace))
            })
        })
}

/// Every destination host a VirtualService's routes and mirrors name, as written.
fn destination_hosts(vs: &VirtualService) -> impl Iterator<Item = &str> {
    let http = vs.http.iter().flat_map(|route| {
        route
            .route
            .iter()
            .map(|d| &d.destination)
            .chain(route.mirror.iter())
            .chain(route.mirrors.iter().map(|m| &m.destination))
    });
    let tcp = vs
        .tcp
        .iter()
        .flat_map(|route| route.route.iter().map(|d| &d.destination));
    let tls = vs
        .tls
        .iter()
        .flat_map(|route| route.route.iter().map(|d| &d.destination));
    http.chain(tcp).chain(tls).map(|d| d.host.as_str())
}

/// One `<namespace>/<dnsName>` entry of a Sidecar egress listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    namespace: NamespaceMatch,
    dns_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NamespaceMatch {
    Any,
    Named(String),
    Nothing,
}

impl EgressHost {
    /// Reads `namespace/dnsName`; `.` becomes the proxy's namespace. `None`
    /// without a namespace part (galley refuses those).
    pub fn parse(value: &str, proxy_namespace: &str) -> Option<EgressHost> {
        let (namespace, dns_name) = value.split_once('/')?;
        if namespace.is_empty() || dns_name.is_empty() {
            return None;
        }
        let namespace = match namespace {
            "*" => NamespaceMatch::Any,
            "~" => NamespaceMatch::Nothing,
            "." => NamespaceMatch::Named(proxy_namespace.to_string()),
            named => NamespaceMatch::Named(named.to_string()),
        };
        Some(EgressHost {
            namespace,
            dns_name: dns_name.to_ascii_lowercase(),
        })
    }

    pub fn matches_namespace(&self, namespace: &str) -> bool {
        match &self.namespace {
            NamespaceMatch::Any => true,
            NamespaceMatch::Named(named) => named == namespace,
            NamespaceMatch::Nothing => false,
        }
    }

    /// Whether a service (or VirtualService host) in `namespace` is imported.
    pub fn matches(&self, namespace: &str, host: &str) -> bool {
        self.matches_namespace(namespace) && hosts_intersect(&self.dns_name, host)
    }
}

/// Whether two host names, either possibly a `*` or `*.suffix` wildcard,
/// can name the same host.
pub fn hosts_intersect(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(a_suffix), Some(b_suffix)) => {
            ends_with_ignore_case(a_suffix, b_suffix) || ends_with_ignore_case(b_suffix, a_suffix)
        }
        (Some(suffix), None) => b.len() > suffix.len() && ends_with_ignore_case(b, suffix),
        (None, Some(suffix)) => a.len() > suffix.len() && ends_with_ignore_case(a, suffix),
        (None, None) => a.eq_ignore_ascii_case(b),
    }
}

fn ends_with_ignore_case(name: &str, suffix: &str) -> bool {
    name.len() >= suffix.len()
        && name.as_bytes()[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// Whether a resource in `owner` with `export_to` is visible in `viewer`.
pub fn exported_to(export_to: &[String], owner: &str, viewer: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|target| match target.as_str() {
            "*" => true,
            "." => owner == viewer,
            "~" => false,
            namespace => namespace == viewer,
        })
}

pub fn service_visible(service: &Service, namespace: &str) -> bool {
    exported_to(&service.export_to, &service.namespace, namespace)
}

pub fn virtual_service_visible(vs: &Resource<VirtualService>, namespace: &str) -> bool {
    exported_to(&vs.spec.export_to, namespace_of(vs), namespace)
}

/// A DestinationRule always applies in its own namespace, whatever `exportTo` says.
pub fn destination_rule_visible(rule: &Resource<DestinationRule>, namespace: &str) -> bool {
    let owner = namespace_of(rule);
    owner == namespace || exported_to(&rule.spec.export_to, owner, namespace)
}

/// Whether a VirtualService governs sidecar traffic: it names no gateways,
/// or names `mesh` among them.
pub fn binds_to_mesh(vs: &Resource<VirtualService>) -> bool {
    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY)
}

#[cfg(test)]
mod tests;
