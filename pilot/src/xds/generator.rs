//! Generating a proxy's resources from a push context, encoded once per
//! distinct proxy view and shared (by `Arc`) among every proxy with that view.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use prost::{Message, Name};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use trireme_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use trireme_proto::envoy::pb::envoy::config::listener::v3::Listener;
use trireme_proto::envoy::pb::envoy::config::route::v3::RouteConfiguration;
use trireme_proto::envoy::pb::google::protobuf::Any;

use super::push_context::PushContext;
use super::resource_type::ResourceType;
use super::wire::{WireMessage, length_delimited_field};
use crate::model::{MeshSnapshot, Proxy, ProxyScope, ProxyType};
use crate::translate;

/// A generated resource, encoded once, in the form it takes in a response.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedResource {
    pub name: String,
    /// Content hash: equal bytes give equal versions, across pilot replicas too.
    pub version: String,
    /// Hash of name and content, folded into the version of a set.
    identity: u64,
    /// The resource wrapped in an `Any`, as a length-delimited field 2: how
    /// it appears both in a state-of-the-world response's `resources` and in
    /// a delta `Resource`'s `resource` (both are field 2).
    entry: Bytes,
    /// Where the resource's own message starts inside `entry` (an `Any`'s
    /// value is its last field).
    message_at: usize,
}

impl EncodedResource {
    pub fn new<M: Message + Name>(name: String, message: &M) -> EncodedResource {
        let any = Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        };
        let content_hash = fnv1a(&any.value);
        let entry = length_delimited_field(2, any.encoded_len(), |buf| {
            any.encode(buf)
                .expect("the buffer was sized for the message")
        });
        EncodedResource {
            identity: fnv1a_extend(fnv1a(name.as_bytes()), &content_hash.to_le_bytes()),
            version: format!("{content_hash:016x}"),
            name,
            message_at: entry.len() - any.value.len(),
            entry,
        }
    }

    /// The resource's own message (the `Any`'s value).
    pub fn message(&self) -> &[u8] {
        &self.entry[self.message_at..]
    }

    /// The `Any`-wrapped resource as field 2 of a response or delta `Resource`.
    pub fn entry(&self) -> &Bytes {
        &self.entry
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bit: a stable, dependency-free content hash for versions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

/// Continues an FNV-1a hash over more bytes.
fn fnv1a_extend(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One version string for a set of resources (SotW `version_info`): changes
/// when any name or content does, the same on every replica.
pub fn combined_version<'r>(
    resources: impl IntoIterator<Item = &'r Arc<EncodedResource>>,
) -> String {
    let hash = resources.into_iter().fold(FNV_OFFSET, |hash, resource| {
        fnv1a_extend(hash, &resource.identity.to_le_bytes())
    });
    format!("{hash:016x}")
}

/// The resources of one type for one proxy view, with what every SotW
/// response of them repeats: their combined version and their entries back
/// to back (each resource's entry is a slice of those bytes, not a copy).
#[derive(Debug)]
pub struct ResourceSet {
    pub resources: Vec<Arc<EncodedResource>>,
    pub version: String,
    entries: Bytes,
}

impl ResourceSet {
    pub fn new(resources: Vec<EncodedResource>) -> ResourceSet {
        let mut joined = BytesMut::with_capacity(resources.iter().map(|r| r.entry.len()).sum());
        for resource in &resources {
            joined.extend_from_slice(&resource.entry);
        }
        let entries = joined.freeze();
        let mut at = 0;
        let resources: Vec<Arc<EncodedResource>> = resources
            .into_iter()
            .map(|resource| {
                let len = resource.entry.len();
                at += len;
                Arc::new(EncodedResource {
                    entry: entries.slice(at - len..at),
                    ..resource
                })
            })
            .collect();
        ResourceSet {
            version: combined_version(&resources),
            resources,
            entries,
        }
    }
}

/// What a push of one type sends a proxy.
#[derive(Debug, Clone)]
pub enum Generated {
    /// A whole view's set (clusters, listeners), shared with every proxy of the view.
    View(Arc<ResourceSet>),
    /// Resources by name (routes, endpoints), each shared across proxies.
    Named(Vec<Arc<EncodedResource>>),
}

impl Generated {
    pub fn resources(&self) -> &[Arc<EncodedResource>] {
        match self {
            Generated::View(set) => &set.resources,
            Generated::Named(resources) => resources,
        }
    }

    /// The SotW `version_info` of these resources.
    pub fn version(&self) -> String {
        match self {
            Generated::View(set) => set.version.clone(),
            Generated::Named(resources) => combined_version(resources),
        }
    }

    /// Appends the resources as a SotW response's `resources` field.
    pub fn write_entries(&self, message: &mut WireMessage) {
        match self {
            Generated::View(set) => message.push_encoded(&set.entries),
            Generated::Named(resources) => {
                for resource in resources {
                    message.push_encoded(&resource.entry);
                }
            }
        }
    }
}

/// Which resources of a type a proxy asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Everything of the type (CDS, LDS).
    Wildcard,
    /// Shared with the proxy's sync status (`/debug/syncz`) rather than
    /// copied: thousands of proxies each name hundreds of resources.
    Names(Arc<BTreeSet<String>>),
}

impl Subscription {
    /// What a state-of-the-world request for `resource_type` naming `names`
    /// subscribes to.
    pub fn requested(resource_type: ResourceType, names: Vec<String>) -> Subscription {
        if resource_type.is_wildcard() {
            Subscription::Wildcard
        } else {
            Subscription::Names(Arc::new(names.into_iter().collect()))
        }
    }

    /// Whether a state-of-the-world request naming `names` asks for exactly
    /// this. Every ACK repeats the whole list, so this is checked without
    /// copying it.
    pub fn is_exactly(&self, names: &[String]) -> bool {
        let Subscription::Names(subscribed) = self else {
            return true; // wildcard types ignore the names
        };
        if names.len() != subscribed.len() || !names.iter().all(|n| subscribed.contains(n)) {
            return false;
        }
        // Equal counts and all known: the same set unless a name repeats.
        names.is_sorted_by(|a, b| a < b)
            || names
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>()
                .len()
                == names.len()
    }
}

/// What a proxy's generated config depends on besides the push context. Proxies
/// with equal views get the very same resources: the type; the namespace and
/// labels (which select Gateways and the Sidecar, short host names and
/// `sourceLabels`); for sidecars the interception mode and the inbound port
/// plan of its own workload; and whether the proxy is IPv6-only (wildcard
/// addresses, DNS lookups).
pub fn view_key(snapshot: &MeshSnapshot, proxy: &Proxy) -> String {
    let labels: Vec<String> = proxy
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let mut key = format!(
        "{}|{}|{}",
        proxy.proxy_type.as_str(),
        proxy.namespace,
        labels.join(",")
    );
    if proxy.proxy_type == ProxyType::Sidecar {
        key.push('|');
        key.push_str(proxy.interception().as_str());
        // The inbound side also depends on the proxy's own workload
        // (ports, modes, addresses), which the snapshot tells.
        key.push('|');
        key.push_str(&translate::sidecar::inbound::view_key(snapshot, proxy));
    }
    if proxy.ipv6_only() {
        key.push_str("|ipv6");
    }
    key
}

/// The resources of `resource_type` this proxy should have, for its subscription.
pub fn generate(
    context: &PushContext,
    proxy: &Proxy,
    resource_type: ResourceType,
    subscription: &Subscription,
) -> Generated {
    let view = view_key(&context.snapshot, proxy);
    generate_for_view(context, proxy, &view, resource_type, subscription)
}

/// [`generate`] for a proxy whose [`view_key`] under `context` is known: a
/// stream works it out once per push context, not once per resource type.
pub fn generate_for_view(
    context: &PushContext,
    proxy: &Proxy,
    view: &str,
    resource_type: ResourceType,
    subscription: &Subscription,
) -> Generated {
    match (resource_type, subscription) {
        (ResourceType::Cluster | ResourceType::Listener, _) => Generated::View(cached_view(
            context,
            view,
            resource_type,
            "",
            || match resource_type {
                ResourceType::Cluster => {
                    encode_all(clusters_for(context, proxy), |c| c.name.clone())
                }
                _ => encode_all(listeners_for(context, proxy), |l| l.name.clone()),
            },
        )),
        (ResourceType::Route, Subscription::Names(names)) => {
            Generated::Named(
                names
                    .iter()
                    .flat_map(|name| {
                        cached_view(context, view, ResourceType::Route, name, || {
                            let routes = route_configuration_for(context, proxy, name)
                                .unwrap_or_else(|| RouteConfiguration {
                                    name: name.clone(),
                                    ..Default::default()
                                });
                            vec![EncodedResource::new(name.clone(), &routes)]
                        })
                        .resources
                        .clone()
                    })
                    .collect(),
            )
        }
        (ResourceType::Endpoint, Subscription::Names(names)) => Generated::Named(
            names
                .iter()
                .map(|name| endpoint_resource(context, name))
                .collect(),
        ),
        // Routes and endpoints are only ever sent by name.
        (ResourceType::Route | ResourceType::Endpoint, Subscription::Wildcard) => {
            Generated::Named(Vec::new())
        }
    }
}

fn clusters_for(context: &PushContext, proxy: &Proxy) -> Vec<Cluster> {
    let scope = scope_for(context, proxy);
    let snapshot = &context.snapshot;
    match proxy.proxy_type {
        ProxyType::Router => translate::clusters::scoped_outbound_clusters(snapshot, proxy, &scope),
        ProxyType::Sidecar => {
            let mut clusters = translate::sidecar::outbound::clusters(snapshot, proxy, &scope);
            clusters.extend(translate::sidecar::inbound::inbound_clusters(
                snapshot, proxy,
            ));
            clusters
        }
    }
}

fn listeners_for(context: &PushContext, proxy: &Proxy) -> Vec<Listener> {
    let snapshot = &context.snapshot;
    match proxy.proxy_type {
        ProxyType::Router => translate::listeners::gateway_listeners(snapshot, proxy),
        ProxyType::Sidecar => {
            let scope = scope_for(context, proxy);
            let mut listeners = translate::sidecar::outbound::listeners(snapshot, proxy, &scope);
            listeners.extend(translate::sidecar::inbound::inbound_listeners(
                snapshot, proxy,
            ));
            listeners
        }
    }
}

fn route_configuration_for(
    context: &PushContext,
    proxy: &Proxy,
    name: &str,
) -> Option<RouteConfiguration> {
    let snapshot = &context.snapshot;
    match proxy.proxy_type {
        ProxyType::Router => translate::routes::gateway_route_configuration(snapshot, proxy, name),
        ProxyType::Sidecar => {
            let scope = scope_for(context, proxy);
            translate::sidecar::outbound::route_configuration(snapshot, proxy, &scope, name)
        }
    }
}

/// The proxy's scope, computed once per config version and view.
fn scope_for(context: &PushContext, proxy: &Proxy) -> Arc<ProxyScope> {
    let key = view_key(&context.snapshot, proxy);
    if let Some(hit) = lock(&context.scope_cache).get(&key) {
        return hit.clone();
    }
    let scope = Arc::new(ProxyScope::new(&context.snapshot, proxy));
    lock(&context.scope_cache)
        .entry(key)
        .or_insert(scope)
        .clone()
}

fn encode_all<M: Message + Name>(
    messages: Vec<M>,
    name_of: impl Fn(&M) -> String,
) -> Vec<EncodedResource> {
    messages
        .iter()
        .map(|m| EncodedResource::new(name_of(m), m))
        .collect()
}

fn cached_view(
    context: &PushContext,
    view: &str,
    resource_type: ResourceType,
    name: &str,
    build: impl FnOnce() -> Vec<EncodedResource>,
) -> Arc<ResourceSet> {
    let key = (resource_type, view.to_string(), name.to_string());
    if let Some(hit) = lock(&context.view_cache).get(&key) {
        return hit.clone();
    }
    // Built outside the lock so other views are not held up; two proxies of a
    // new view may both build it once, which is harmless.
    let built = Arc::new(ResourceSet::new(build()));
    lock(&context.view_cache)
        .entry(key)
        .or_insert(built)
        .clone()
}

/// Endpoints do not depend on the proxy: one encoding per cluster per push.
fn endpoint_resource(context: &PushContext, cluster_name: &str) -> Arc<EncodedResource> {
    if let Some(hit) = lock(&context.endpoint_cache).get(cluster_name) {
        return hit.clone();
    }
    let assignment = translate::endpoints::load_assignment(&context.snapshot, cluster_name)
        .unwrap_or_else(|| ClusterLoadAssignment {
            // Unknown clusters get an empty answer so Envoy does not wait for one.
            cluster_name: cluster_name.to_string(),
            ..Default::default()
        });
    let encoded = Arc::new(EncodedResource::new(cluster_name.to_string(), &assignment));
    lock(&context.endpoint_cache)
        .entry(cluster_name.to_string())
        .or_insert(encoded)
        .clone()
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_name_list_is_the_same_subscription_in_any_order() {
        let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let subscribed = Subscription::requested(ResourceType::Endpoint, names(&["a", "b"]));
        assert!(subscribed.is_exactly(&names(&["a", "b"])));
        assert!(subscribed.is_exactly(&names(&["b", "a"])));
        assert!(!subscribed.is_exactly(&names(&["a"])));
        assert!(!subscribed.is_exactly(&names(&["a", "c"])));
        assert!(!subscribed.is_exactly(&names(&["b", "a", "c"])));
        assert!(
            !subscribed.is_exactly(&names(&["b", "b"])),
            "a repeated name hides the one dropped"
        );
        let wildcard = Subscription::requested(ResourceType::Cluster, names(&["x"]));
        assert!(wildcard.is_exactly(&names(&["y"])));
    }

    #[test]
    fn versions_follow_content() {
        let a = EncodedResource::new(
            "a".into(),
            &RouteConfiguration {
                name: "a".into(),
                ..Default::default()
            },
        );
        let b = EncodedResource::new(
            "a".into(),
            &RouteConfiguration {
                name: "a".into(),
                ..Default::default()
            },
        );
        let c = EncodedResource::new(
            "c".into(),
            &RouteConfiguration {
                name: "c".into(),
                ..Default::default()
            },
        );
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }

    fn proxy(proxy_type: ProxyType, interception_mode: &str, ip: &str) -> Proxy {
        Proxy {
            id: String::new(),
            proxy_type,
            ip_addresses: vec![ip.into()],
            pod_id: "app-1.ns".into(),
            namespace: "ns".into(),
            dns_domain: "ns.svc.cluster.local".into(),
            labels: [("app".to_string(), "app".to_string())].into(),
            cluster_id: String::new(),
            service_account: String::new(),
            workload_name: String::new(),
            interception_mode: interception_mode.into(),
            istio_version: String::new(),
            mesh_id: String::new(),
        }
    }

    #[test]
    fn views_split_on_what_the_output_depends_on() {
        let snapshot = crate::model::MeshSnapshot::from_config(
            crate::model::ConfigSet::default(),
            crate::model::MeshSettings::default(),
        );
        let key = |t, mode, ip| view_key(&snapshot, &proxy(t, mode, ip));
        assert_ne!(
            key(ProxyType::Sidecar, "REDIRECT", "10.0.0.1"),
            key(ProxyType::Sidecar, "NONE", "10.0.0.1"),
            "captured and bound listeners differ"
        );
        assert_eq!(
            key(ProxyType::Sidecar, "", "10.0.0.1"),
            key(ProxyType::Sidecar, "REDIRECT", "10.0.0.2"),
            "REDIRECT is the default; the IP itself does not matter"
        );
        assert_ne!(
            key(ProxyType::Sidecar, "REDIRECT", "10.0.0.1"),
            key(ProxyType::Sidecar, "REDIRECT", "fd00::1"),
            "IPv6-only proxies listen and resolve differently"
        );
        assert_eq!(
            key(ProxyType::Router, "NONE", "10.0.0.1"),
            key(ProxyType::Router, "REDIRECT", "10.0.0.1"),
            "gateways do not depend on interception"
        );
    }
}
