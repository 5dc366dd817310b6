//! The immutable view every push is generated from: the Istio config pilot
//! holds plus the service registry, shared by all proxies through an `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_config::networking::sidecar::Mode as OutboundMode;
use mesh_config::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use mesh_config::security::PeerAuthentication;
use mesh_config::{AnyResource, Resource};

use super::instances::InstanceIndex;
use super::peer_authentication::PeerAuthenticationIndex;
use super::sidecar_scope::SidecarIndex;
use super::{Endpoint, Proxy, Service, scope};
use crate::registry::kubernetes::KubeSnapshot;

/// Mesh-wide settings (Istio's MeshConfig subset pilot needs so far).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    /// Config here applies to every namespace (Istio's `rootNamespace`).
    pub root_namespace: String,
    /// `cluster.local` unless configured.
    pub domain_suffix: String,
    pub trust_domain: String,
    /// What sidecars do with traffic to destinations outside the registry
    /// unless their Sidecar says otherwise (`outboundTrafficPolicy.mode`).
    pub outbound_traffic_policy: OutboundMode,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            domain_suffix: "cluster.local".into(),
            trust_domain: "cluster.local".into(),
            outbound_traffic_policy: OutboundMode::AllowAny,
        }
    }
}

/// The Istio resources pilot holds, by kind, each with its namespace filled in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigSet {
    pub virtual_services: Vec<Resource<VirtualService>>,
    pub destination_rules: Vec<Resource<DestinationRule>>,
    pub gateways: Vec<Resource<Gateway>>,
    pub service_entries: Vec<Resource<ServiceEntry>>,
    pub workload_entries: Vec<Resource<WorkloadEntry>>,
    pub sidecars: Vec<Resource<Sidecar>>,
    pub peer_authentications: Vec<Resource<PeerAuthentication>>,
    /// Kinds pilot keeps (for `/debug/configz`) but does not translate yet.
    pub other: Vec<AnyResource>,
    /// The bus revision this config is as of, when it came from the bus:
    /// every replica at the same revision serves the same config.
    pub revision: Option<u64>,
    /// The Kubernetes registry's services and endpoints as of this update
    /// (empty without `--kubernetes`); merged before ServiceEntries.
    pub kubernetes: Arc<KubeSnapshot>,
}

pub use mesh_config::store::DEFAULT_NAMESPACE;

impl ConfigSet {
    /// Whether `self` and `other` hold the same config but for WorkloadEntries,
    /// Kubernetes endpoints (EndpointSlices, Pods, Nodes) and the bus
    /// revision: a change that moves endpoints, not routing. The debounce
    /// asks it of every update; a push context asks it to keep its caches.
    pub fn differs_only_in_endpoints(&self, other: &ConfigSet) -> bool {
        self.service_entries == other.service_entries
            && self.virtual_services == other.virtual_services
            && self.destination_rules == other.destination_rules
            && self.gateways == other.gateways
            && self.sidecars == other.sidecars
            && self.peer_authentications == other.peer_authentications
            && self.other == other.other
            && (Arc::ptr_eq(&self.kubernetes, &other.kubernetes)
                || self.kubernetes.same_services(&other.kubernetes))
    }

    /// Sorts resources into kinds; namespaces default to `default`. Order is
    /// made deterministic (by namespace, then name) so output is stable.
    pub fn from_resources(resources: impl IntoIterator<Item = AnyResource>) -> ConfigSet {
        let mut set = ConfigSet::default();
        for resource in resources {
            match resource {
                AnyResource::VirtualService(r) => set.virtual_services.push(with_namespace(*r)),
                AnyResource::DestinationRule(r) => set.destination_rules.push(with_namespace(*r)),
                AnyResource::Gateway(r) => set.gateways.push(with_namespace(*r)),
                AnyResource::ServiceEntry(r) => set.service_entries.push(with_namespace(*r)),
                AnyResource::WorkloadEntry(r) => set.workload_entries.push(with_namespace(*r)),
                AnyResource::Sidecar(r) => set.sidecars.push(with_namespace(*r)),
                AnyResource::PeerAuthentication(r) => {
                    set.peer_authentications.push(with_namespace(*r))
                }
                other => set.other.push(other),
            }
        }
        sort_by_key(&mut set.virtual_services);
        sort_by_key(&mut set.destination_rules);
        sort_by_key(&mut set.gateways);
        sort_by_key(&mut set.service_entries);
        sort_by_key(&mut set.workload_entries);
        sort_by_key(&mut set.sidecars);
        sort_by_key(&mut set.peer_authentications);
        set
    }

    pub fn len(&self) -> usize {
        self.virtual_services.len()
            + self.destination_rules.len()
            + self.gateways.len()
            + self.service_entries.len()
            + self.workload_entries.len()
            + self.sidecars.len()
            + self.peer_authentications.len()
            + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn with_namespace<S>(mut resource: Resource<S>) -> Resource<S> {
    if resource
        .metadata
        .namespace
        .as_deref()
        .is_none_or(str::is_empty)
    {
        resource.metadata.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    resource
}

fn sort_by_key<S>(resources: &mut [Resource<S>]) {
    resources.sort_by(|a, b| {
        (a.metadata.namespace.as_deref(), a.metadata.name.as_str())
            .cmp(&(b.metadata.namespace.as_deref(), b.metadata.name.as_str()))
    });
}

/// Namespace of a resource from a [`ConfigSet`] (always filled in).
pub fn namespace_of<S>(resource: &Resource<S>) -> &str {
    resource.namespace_or(DEFAULT_NAMESPACE)
}

/// Everything a push is generated from. Cheap to share; never mutated.
#[derive(Debug, Clone, Default)]
pub struct MeshSnapshot {
    pub settings: MeshSettings,
    pub config: Arc<ConfigSet>,
    /// Services by host name.
    pub services: BTreeMap<String, Service>,
    /// Endpoints by service host name. The indexes below are built from them
    /// in [`MeshSnapshot::from_config`]; a snapshot is never edited after.
    pub endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    /// Positions in `config.destination_rules` of the rules for each exact
    /// (qualified) host, and of the wildcard rules: lookups happen once per
    /// cluster, so they must not scan every rule.
    destination_rule_index: Arc<DestinationRuleIndex>,
    /// Endpoints by address, to find a proxy's own service instances.
    instance_index: Arc<InstanceIndex>,
    sidecar_index: Arc<SidecarIndex>,
    peer_authentication_index: Arc<PeerAuthenticationIndex>,
}

#[derive(Debug, Clone, Default)]
struct DestinationRuleIndex {
    by_host: std::collections::HashMap<String, Vec<usize>>,
    wildcards: Vec<usize>,
}

impl DestinationRuleIndex {
    fn build(config: &ConfigSet, domain_suffix: &str) -> DestinationRuleIndex {
        let mut index = DestinationRuleIndex::default();
        for (position, rule) in config.destination_rules.iter().enumerate() {
            if rule.spec.host.starts_with('*') {
                index.wildcards.push(position);
            } else {
                let host = qualify(&rule.spec.host, namespace_of(rule), domain_suffix);
                index.by_host.entry(host).or_default().push(position);
            }
        }
        index
    }
}

fn qualify(host: &str, namespace: &str, domain_suffix: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

impl MeshSnapshot {
    pub(crate) fn instance_index(&self) -> &InstanceIndex {
        &self.instance_index
    }

    pub(crate) fn sidecar_index(&self) -> &SidecarIndex {
        &self.sidecar_index
    }

    pub(crate) fn peer_authentication_index(&self) -> &PeerAuthenticationIndex {
        &self.peer_authentication_index
    }

    pub fn service(&self, hostname: &str) -> Option<&Service> {
        self.services.get(hostname)
    }

    pub fn endpoints(&self, hostname: &str) -> &[Endpoint] {
        self.endpoints
            .get(hostname)
            .map(|e| e.as_slice())
            .unwrap_or_default()
    }

    /// Expands a short host name as Istio does: `reviews` written in
    /// namespace `ns` means `reviews.ns.svc.<domain>`.
    pub fn qualify_host(&self, host: &str, namespace: &str) -> String {
        qualify(host, namespace, &self.settings.domain_suffix)
    }

    /// The DestinationRule that applies to `hostname` for a proxy in
    /// `proxy_namespace`: the proxy's namespace first, then the service's,
    /// then the root namespace; an exact host beats a wildcard. Rules not
    /// exported to the proxy's namespace are not seen.
    pub fn destination_rule(
        &self,
        hostname: &str,
        proxy_namespace: &str,
    ) -> Option<&Resource<DestinationRule>> {
        let service_namespace = self.service(hostname).map(|s| s.namespace.as_str());
        let namespaces = [
            Some(proxy_namespace),
            service_namespace,
            Some(self.settings.root_namespace.as_str()),
        ];
        let rules = &self.config.destination_rules;
        let exact = self.destination_rule_index.by_host.get(hostname);
        for namespace in namespaces.into_iter().flatten() {
            let found = exact.into_iter().flatten().map(|&i| &rules[i]).find(|dr| {
                namespace_of(dr) == namespace
                    && scope::destination_rule_visible(dr, proxy_namespace)
            });
            if found.is_some() {
                return found;
            }
            let wildcard = self
                .destination_rule_index
                .wildcards
                .iter()
                .map(|&i| &rules[i])
                .filter(|dr| namespace_of(dr) == namespace)
                .filter(|dr| scope::destination_rule_visible(dr, proxy_namespace))
                .filter(|dr| host_matches(&dr.spec.host, hostname))
                .max_by_key(|dr| dr.spec.host.len());
            if wildcard.is_some() {
                return wildcard;
            }
        }
        None
    }

    /// Gateways whose selector matches the proxy's labels (in any namespace,
    /// as Istio does by default).
    pub fn gateways_for(&self, proxy: &Proxy) -> Vec<&Resource<Gateway>> {
        self.config
            .gateways
            .iter()
            .filter(|gw| {
                !gw.spec.selector.is_empty()
                    && gw
                        .spec
                        .selector
                        .iter()
                        .all(|(k, v)| proxy.labels.get(k) == Some(v))
            })
            .collect()
    }

    /// VirtualServices bound to the gateway `namespace/name`: listed in their
    /// `gateways` as `name` (same namespace) or `namespace/name`.
    pub fn virtual_services_for_gateway(
        &self,
        gateway_namespace: &str,
        gateway_name: &str,
    ) -> Vec<&Resource<VirtualService>> {
        self.config
            .virtual_services
            .iter()
            .filter(|vs| {
                vs.spec.gateways.iter().any(|reference| {
                    gateway_reference_matches(
                        reference,
                        namespace_of(vs),
                        gateway_namespace,
                        gateway_name,
                    )
                })
            })
            .collect()
    }
}

/// Istio's reserved gateway name for the sidecars of the mesh.
pub const MESH_GATEWAY: &str = "mesh";

/// Whether a VirtualService's `gateways` entry names `namespace/name`.
pub fn gateway_reference_matches(
    reference: &str,
    virtual_service_namespace: &str,
    gateway_namespace: &str,
    gateway_name: &str,
) -> bool {
    match reference.split_once('/') {
        Some((ns, name)) => ns == gateway_namespace && name == gateway_name,
        None => virtual_service_namespace == gateway_namespace && reference == gateway_name,
    }
}

/// Istio host matching: `*` matches everything, `*.example.com` matches any
/// name ending in `.example.com`, anything else matches itself exactly.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

impl MeshSnapshot {
    /// A snapshot whose registry is the config's Kubernetes services, then its
    /// ServiceEntries and WorkloadEntries.
    pub fn from_config(config: ConfigSet, settings: MeshSettings) -> MeshSnapshot {
        let (services, endpoints) = crate::registry::from_config(&config, &settings);
        let destination_rule_index = Arc::new(DestinationRuleIndex::build(
            &config,
            &settings.domain_suffix,
        ));
        let endpoints: BTreeMap<String, Arc<Vec<Endpoint>>> = endpoints
            .into_iter()
            .map(|(host, eps)| (host, Arc::new(eps)))
            .collect();
        MeshSnapshot {
            destination_rule_index,
            instance_index: Arc::new(InstanceIndex::build(&endpoints)),
            sidecar_index: Arc::new(SidecarIndex::build(&config.sidecars)),
            peer_authentication_index: Arc::new(PeerAuthenticationIndex::build(
                &config.peer_authentications,
                &settings.root_namespace,
            )),
            settings,
            config: Arc::new(config),
            services,
            endpoints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_matching_follows_istio() {
        assert!(host_matches("*", "anything.example.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches(
            "reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local"
        ));
        assert!(!host_matches("reviews", "ratings"));
    }

    #[test]
    fn gateway_references_resolve_namespaces() {
        assert!(gateway_reference_matches("gw", "ns", "ns", "gw"));
        assert!(!gateway_reference_matches("gw", "other", "ns", "gw"));
        assert!(gateway_reference_matches("ns/gw", "other", "ns", "gw"));
        assert!(!gateway_reference_matches("mesh", "ns", "ns", "gw"));
    }
}
