//! The Kubernetes objects pilot follows, kept as the few fields it reads,
//! and the services and endpoints they make. Fed watch events by
//! [`super::watch`] (or by tests); never talks to the API server.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Namespace as KubeNamespace, Node as KubeNode, Pod as KubePod, Service as KubeService,
    ServicePort as KubeServicePort,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::watcher::Event;

use super::{KubeSettings, KubeSnapshot};
use crate::model::service::Resolution;
use crate::model::{Endpoint, Protocol, Service, ServicePort};

/// Label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation on a Service listing the namespaces it is exported to.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Pod label overriding the node's locality (`region.zone.subzone`).
pub const LOCALITY_LABEL: &str = "istio-locality";

/// Namespace and name (namespace empty for cluster-scoped objects).
type Key = (String, String);

/// The kinds the index follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
    Namespace,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::Node,
    ];
}

/// The objects of one kind, and the relist in progress (kept apart until
/// it is complete, then swapped in whole).
#[derive(Debug)]
struct KindStore<V> {
    objects: BTreeMap<Key, V>,
    relist: Option<BTreeMap<Key, V>>,
    synced: bool,
}

impl<V> Default for KindStore<V> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

impl<V: PartialEq> KindStore<V> {
    /// Applies one watch event; `admit` gives an object's key and the
    /// value kept for it (`None`: not kept, as if deleted). True when the
    /// kept objects changed, or on the kind's first completed list.
    fn apply<K>(&mut self, event: Event<K>, admit: impl Fn(&K) -> (Key, Option<V>)) -> bool {
        match event {
            Event::Apply(object) => match admit(&object) {
                (key, Some(value)) => {
                    if self.objects.get(&key) == Some(&value) {
                        return false;
                    }
                    self.objects.insert(key, value);
                    true
                }
                (key, None) => self.objects.remove(&key).is_some(),
            },
            Event::Delete(object) => {
                let (key, _) = admit(&object);
                self.objects.remove(&key).is_some()
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                if let (key, Some(value)) = admit(&object) {
                    self.relist.get_or_insert_default().insert(key, value);
                }
                false
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let first = !self.synced;
                self.synced = true;
                let changed = listed != self.objects;
                self.objects = listed;
                changed || first
            }
        }
    }

    /// Drops every object (listed or being relisted) in `namespace`.
    fn purge_namespace(&mut self, namespace: &str) -> bool {
        let before = self.objects.len();
        self.objects.retain(|(ns, _), _| ns != namespace);
        if let Some(relist) = &mut self.relist {
            relist.retain(|(ns, _), _| ns != namespace);
        }
        self.objects.len() != before
    }
}

/// What pilot keeps of a Service: the model service it makes.
#[derive(Debug, Clone, PartialEq)]
struct ServiceInfo {
    service: Service,
    publish_not_ready: bool,
    /// `spec.externalName` of an ExternalName service.
    external_name: Option<String>,
}

/// What pilot keeps of an EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
struct SliceInfo {
    service: String,
    /// Port numbers by port name (`""` for a service's only, unnamed port).
    ports: BTreeMap<String, u32>,
    endpoints: Vec<SliceEndpoint>,
}

#[derive(Debug, Clone, PartialEq)]
struct SliceEndpoint {
    address: String,
    ready: bool,
    terminating: bool,
    node_name: Option<String>,
    /// The Pod behind the address, if the slice names one.
    pod: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct PodInfo {
    labels: BTreeMap<String, String>,
    service_account: String,
    node_name: String,
}

#[derive(Debug, Clone, PartialEq)]
struct NamespaceInfo {
    labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
struct NodeInfo {
    /// `region/zone/subzone` from the node's topology labels.
    locality: String,
}

/// The Kubernetes objects pilot follows, by kind, limited to the namespaces
/// `discoverySelectors` select. Implements [`super::super::ServiceRegistry`]
/// (through [`KubeIndex::snapshot`]).
#[derive(Debug, Default)]
pub struct KubeIndex {
    settings: KubeSettings,
    services: KindStore<ServiceInfo>,
    slices: KindStore<SliceInfo>,
    pods: KindStore<PodInfo>,
    namespaces: KindStore<NamespaceInfo>,
    nodes: KindStore<NodeInfo>,
    relist_requested: bool,
}

/// Whether an object in a namespace is kept: every one without selectors;
/// with them, all but those in namespaces known not to be selected (a
/// namespace not seen yet may be a new one whose watch event is late).
fn admits(settings: &KubeSettings, namespaces: &KindStore<NamespaceInfo>, namespace: &str) -> bool {
    settings.discovery_selectors.is_empty()
        || namespaces
            .objects
            .get(&(String::new(), namespace.to_string()))
            .is_none_or(|ns| settings.discovery_selectors.matches(&ns.labels))
}

impl KubeIndex {
    pub fn new(settings: KubeSettings) -> KubeIndex {
        KubeIndex {
            settings,
            ..KubeIndex::default()
        }
    }

    /// True once every kind has been listed completely at least once.
    pub fn is_synced(&self) -> bool {
        Kind::ALL.iter().all(|kind| self.kind_synced(*kind))
    }

    pub fn kind_synced(&self, kind: Kind) -> bool {
        match kind {
            Kind::Service => self.services.synced,
            Kind::EndpointSlice => self.slices.synced,
            Kind::Pod => self.pods.synced,
            Kind::Namespace => self.namespaces.synced,
            Kind::Node => self.nodes.synced,
        }
    }

    /// Whether a namespace that was left out is now selected: the objects
    /// of namespaced kinds dropped for it must be listed again. Reset by
    /// the call.
    pub fn take_relist_request(&mut self) -> bool {
        std::mem::take(&mut self.relist_requested)
    }

    pub fn apply_service(&mut self, event: Event<KubeService>) -> bool {
        let (settings, namespaces) = (&self.settings, &self.namespaces);
        self.services.apply(event, |service| {
            let key = key_of(&service.metadata);
            let kept = admits(settings, namespaces, &key.0)
                .then(|| service_info(service, &key, &settings.domain_suffix));
            (key, kept)
        })
    }

    pub fn apply_endpoint_slice(&mut self, event: Event<EndpointSlice>) -> bool {
        let (settings, namespaces) = (&self.settings, &self.namespaces);
        self.slices.apply(event, |slice| {
            let key = key_of(&slice.metadata);
            let kept = if admits(settings, namespaces, &key.0) {
                slice_info(slice)
            } else {
                None
            };
            (key, kept)
        })
    }

    pub fn apply_pod(&mut self, event: Event<KubePod>) -> bool {
        let (settings, namespaces) = (&self.settings, &self.namespaces);
        self.pods.apply(event, |pod| {
            let key = key_of(&pod.metadata);
            let kept = admits(settings, namespaces, &key.0).then(|| pod_info(pod));
            (key, kept)
        })
    }

    pub fn apply_node(&mut self, event: Event<KubeNode>) -> bool {
        self.nodes.apply(event, |node| {
            let key = (
                String::new(),
                node.metadata.name.clone().unwrap_or_default(),
            );
            let labels = node.metadata.labels.as_ref();
            let label = |name: &str| {
                labels
                    .and_then(|l| l.get(name))
                    .map(String::as_str)
                    .unwrap_or_default()
            };
            let locality = locality(label(REGION_LABEL), label(ZONE_LABEL), label(SUBZONE_LABEL));
            (key, Some(NodeInfo { locality }))
        })
    }

    /// Applies a Namespace event. With discovery selectors, a namespace
    /// that stops being selected loses its objects at once; one that
    /// becomes selected asks for a relist (see [`Self::take_relist_request`]).
    pub fn apply_namespace(&mut self, event: Event<KubeNamespace>) -> bool {
        let before = self.selection();
        let changed = self.namespaces.apply(event, |namespace| {
            let key = (
                String::new(),
                namespace.metadata.name.clone().unwrap_or_default(),
            );
            let labels = namespace.metadata.labels.clone().unwrap_or_default();
            (key, Some(NamespaceInfo { labels }))
        });
        if !changed || self.settings.discovery_selectors.is_empty() {
            return changed;
        }
        let after = self.selection();
        for (namespace, selected) in &after {
            if *selected {
                if before.get(namespace) == Some(&false) {
                    self.relist_requested = true;
                }
            } else {
                self.services.purge_namespace(namespace);
                self.slices.purge_namespace(namespace);
                self.pods.purge_namespace(namespace);
            }
        }
        true
    }

    /// Known namespaces and whether each is selected.
    fn selection(&self) -> BTreeMap<String, bool> {
        self.namespaces
            .objects
            .iter()
            .map(|((_, name), ns)| {
                (
                    name.clone(),
                    self.settings.discovery_selectors.matches(&ns.labels),
                )
            })
            .collect()
    }

    /// Whether services and endpoints of a namespace are produced: with
    /// selectors, only once the namespace is known and selected.
    fn produces(&self, namespace: &str) -> bool {
        self.settings.discovery_selectors.is_empty()
            || self
                .namespaces
                .objects
                .get(&(String::new(), namespace.to_string()))
                .is_some_and(|ns| self.settings.discovery_selectors.matches(&ns.labels))
    }

    /// Namespaces with objects kept (for tests and debugging).
    pub fn namespaces_with_objects(&self) -> BTreeSet<String> {
        self.services
            .objects
            .keys()
            .chain(self.slices.objects.keys())
            .chain(self.pods.objects.keys())
            .map(|(ns, _)| ns.clone())
            .collect()
    }

    /// The services and endpoints the objects make now.
    pub fn snapshot(&self) -> KubeSnapshot {
        let mut slices_by_service: BTreeMap<(&str, &str), Vec<&SliceInfo>> = BTreeMap::new();
        for ((namespace, _), slice) in &self.slices.objects {
            slices_by_service
                .entry((namespace.as_str(), slice.service.as_str()))
                .or_default()
                .push(slice);
        }
        let mut services = Vec::new();
        let mut endpoints = BTreeMap::new();
        for ((namespace, name), info) in &self.services.objects {
            if !self.produces(namespace) {
                continue;
            }
            let slices = slices_by_service
                .get(&(namespace.as_str(), name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let service_endpoints = self.service_endpoints(namespace, info, slices);
            if !service_endpoints.is_empty() {
                endpoints.insert(info.service.hostname.clone(), service_endpoints);
            }
            services.push(info.service.clone());
        }
        services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        KubeSnapshot {
            services,
            endpoints,
        }
    }

    /// A service's endpoints from its slices, by address (an address in two
    /// slices, as while the controller moves it, counts once).
    fn service_endpoints(
        &self,
        namespace: &str,
        info: &ServiceInfo,
        slices: &[&SliceInfo],
    ) -> Vec<Endpoint> {
        if let Some(external_name) = &info.external_name {
            return vec![Endpoint {
                address: external_name.clone(),
                ports: BTreeMap::new(),
                labels: BTreeMap::new(),
                weight: 1,
                locality: String::new(),
                service_account: String::new(),
                network: String::new(),
            }];
        }
        let mut by_address: BTreeMap<&str, Endpoint> = BTreeMap::new();
        for slice in slices {
            for endpoint in &slice.endpoints {
                let serving = endpoint.ready && !endpoint.terminating;
                if !(serving || info.publish_not_ready)
                    || by_address.contains_key(endpoint.address.as_str())
                {
                    continue;
                }
                let pod = match &endpoint.pod {
                    Some(pod) => match self.pods.objects.get(&(namespace.to_string(), pod.clone()))
                    {
                        Some(pod) => Some(pod),
                        // As Istio: wait for the Pod rather than send an
                        // endpoint without its labels (and mTLS mode).
                        None => continue,
                    },
                    None => None,
                };
                by_address.insert(
                    endpoint.address.as_str(),
                    self.endpoint(endpoint, slice, pod),
                );
            }
        }
        by_address.into_values().collect()
    }

    fn endpoint(
        &self,
        endpoint: &SliceEndpoint,
        slice: &SliceInfo,
        pod: Option<&PodInfo>,
    ) -> Endpoint {
        let labels = pod.map(|p| p.labels.clone()).unwrap_or_default();
        let node = endpoint
            .node_name
            .as_deref()
            .or(pod.map(|p| p.node_name.as_str()))
            .and_then(|name| self.nodes.objects.get(&(String::new(), name.to_string())));
        let locality = match labels.get(LOCALITY_LABEL) {
            Some(label) => label.replace('.', "/"),
            None => node.map(|n| n.locality.clone()).unwrap_or_default(),
        };
        Endpoint {
            address: endpoint.address.clone(),
            ports: slice.ports.clone(),
            weight: 1,
            locality,
            service_account: pod.map(|p| p.service_account.clone()).unwrap_or_default(),
            network: labels.get(NETWORK_LABEL).cloned().unwrap_or_default(),
            labels,
        }
    }
}

fn key_of(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        metadata.namespace.clone().unwrap_or_default(),
        metadata.name.clone().unwrap_or_default(),
    )
}

/// `region/zone/subzone`, trimmed of empty trailing parts.
fn locality(region: &str, zone: &str, subzone: &str) -> String {
    let mut locality = [region, zone, subzone].join("/");
    while locality.ends_with('/') {
        locality.pop();
    }
    locality
}

fn service_info(
    service: &KubeService,
    (namespace, name): &Key,
    domain_suffix: &str,
) -> ServiceInfo {
    let spec = service.spec.clone().unwrap_or_default();
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let external_name = (service_type == "ExternalName")
        .then(|| spec.external_name.clone())
        .flatten()
        .filter(|n| !n.is_empty());
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let addresses: Vec<String> = if headless || external_name.is_some() {
        Vec::new()
    } else {
        match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.clone(),
            _ => spec.cluster_ip.iter().cloned().collect(),
        }
        .into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
    };
    let resolution = if external_name.is_some() {
        Resolution::Dns
    } else if headless {
        Resolution::Passthrough
    } else {
        Resolution::Static
    };
    let export_to = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|value| {
            value
                .split(',')
                .map(str::trim)
                .filter(|ns| !ns.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    ServiceInfo {
        service: Service {
            hostname: format!("{name}.{namespace}.svc.{domain_suffix}"),
            namespace: namespace.clone(),
            ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(service_port)
                .collect(),
            resolution,
            mesh_external: external_name.is_some(),
            addresses,
            export_to,
            subject_alt_names: Vec::new(),
        },
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        external_name,
    }
}

/// A Service port as the mesh sees it; UDP and SCTP ports are left out (the
/// mesh does not proxy them).
fn service_port(port: &KubeServicePort) -> Option<ServicePort> {
    if !matches!(port.protocol.as_deref(), None | Some("TCP")) {
        return None;
    }
    let name = port.name.clone().unwrap_or_default();
    Some(ServicePort {
        protocol: kubernetes_protocol(port.app_protocol.as_deref(), &name),
        number: u32::try_from(port.port).ok()?,
        target_port: match &port.target_port {
            Some(IntOrString::Int(number)) => u32::try_from(*number).ok().filter(|n| *n > 0),
            // A named target port is resolved per pod, in the EndpointSlices.
            _ => None,
        },
        name,
    })
}

/// Istio's protocol of a Kubernetes service port: `appProtocol` when it
/// names a known protocol (including Kubernetes' `kubernetes.io/h2c`, `ws`
/// and `wss`), else the port name's prefix (`http-web`, `grpc`, ...).
pub fn kubernetes_protocol(app_protocol: Option<&str>, name: &str) -> Protocol {
    let from_app = match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("kubernetes.io/h2c") => Protocol::Http2,
        Some("kubernetes.io/ws" | "kubernetes.io/wss") => Protocol::Http,
        Some(other) => Protocol::parse(other),
        None => Protocol::Unsupported,
    };
    match from_app {
        Protocol::Unsupported => Protocol::of_port("", name),
        known => known,
    }
}

fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    // FQDN slices are left out, as in Istio.
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return None;
    }
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| matches!(p.protocol.as_deref(), None | Some("TCP")))
        .filter_map(|p| {
            let number = u32::try_from(p.port?).ok()?;
            Some((p.name.clone().unwrap_or_default(), number))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .flatten()
        .filter_map(|endpoint| {
            let address = endpoint.addresses.first()?.clone();
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| r.name.clone());
            Some(SliceEndpoint {
                address,
                // An unknown readiness counts as ready (the API's advice).
                ready: conditions.ready.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
                node_name: endpoint.node_name.clone(),
                pod,
            })
        })
        .collect();
    Some(SliceInfo {
        service,
        ports,
        endpoints,
    })
}

fn pod_info(pod: &KubePod) -> PodInfo {
    let spec = pod.spec.as_ref();
    PodInfo {
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        service_account: spec
            .and_then(|s| {
                s.service_account_name
                    .clone()
                    .or_else(|| s.service_account.clone())
            })
            .unwrap_or_else(|| "default".to_string()),
        node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_comes_before_the_port_name() {
        assert_eq!(kubernetes_protocol(Some("HTTP"), "tcp-x"), Protocol::Http);
        assert_eq!(
            kubernetes_protocol(Some("kubernetes.io/h2c"), "x"),
            Protocol::Http2
        );
        assert_eq!(kubernetes_protocol(Some("grpc"), ""), Protocol::Grpc);
        assert_eq!(
            kubernetes_protocol(Some("example.com/custom"), "http-web"),
            Protocol::Http
        );
        assert_eq!(kubernetes_protocol(None, "grpc-api"), Protocol::Grpc);
        assert_eq!(kubernetes_protocol(None, "https"), Protocol::Https);
        assert_eq!(kubernetes_protocol(None, "tcp-db"), Protocol::Tcp);
        assert_eq!(kubernetes_protocol(None, "web"), Protocol::Tcp);
    }

    #[test]
    fn locality_drops_missing_trailing_parts() {
        assert_eq!(locality("r", "z", "s"), "r/z/s");
        assert_eq!(locality("r", "z", ""), "r/z");
        assert_eq!(locality("", "", ""), "");
    }
}
