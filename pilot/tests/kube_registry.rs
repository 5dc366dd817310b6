//! The Kubernetes service registry, fed built objects and synthetic watch
//! events (no API server): what Services, EndpointSlices, Pods, Namespaces
//! and Nodes become, how relists, readiness and discovery selectors behave,
//! how the registry merges with ServiceEntries, and which pushes its
//! changes cause.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use pilot::model::service::Resolution;
use pilot::model::{ConfigSet, Endpoint, MeshSettings, MeshSnapshot, Protocol, Service};
use pilot::registry::ServiceRegistry;
use pilot::registry::kubernetes::watch::merge;
use pilot::registry::kubernetes::{
    DiscoverySelectors, Kind, KubeIndex, KubeSettings, KubeSnapshot,
};
use pilot::xds::{PushContext, PushTrigger};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test object is valid")
}

fn service(namespace: &str, name: &str, spec: Value) -> KubeService {
    object(json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
}

fn reviews_service() -> KubeService {
    object(json!({
        "metadata": {
            "name": "reviews", "namespace": "bookinfo",
            "annotations": {"networking.istio.io/exportTo": "bookinfo, istio-system"}
        },
        "spec": {
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [
                {"name": "http", "port": 9080, "targetPort": "http-web"},
                {"name": "grpc-api", "port": 9090, "targetPort": 9091},
                {"name": "metrics", "port": 15090, "appProtocol": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        }
    }))
}

/// One endpoint of a slice: address, pod name (targetRef), readiness.
fn slice_endpoint(
    address: &str,
    pod: Option<&str>,
    ready: Option<bool>,
    terminating: bool,
) -> Value {
    let mut endpoint = json!({
        "addresses": [address],
        "conditions": {"terminating": terminating},
    });
    if let Some(ready) = ready {
        endpoint["conditions"]["ready"] = json!(ready);
    }
    if let Some(pod) = pod {
        endpoint["targetRef"] = json!({"kind": "Pod", "name": pod, "namespace": "bookinfo"});
    }
    endpoint
}

fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: Value,
    endpoints: Vec<Value>,
) -> EndpointSlice {
    object(json!({
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
}

fn reviews_ports() -> Value {
    json!([
        {"name": "http", "port": 8080},
        {"name": "grpc-api", "port": 9091},
        {"name": "metrics", "port": 15090},
    ])
}

fn pod(namespace: &str, name: &str, node: &str, labels: Value) -> Pod {
    object(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"serviceAccountName": "bookinfo-reviews", "nodeName": node, "containers": []},
    }))
}

fn node(name: &str, region: &str, zone: &str, subzone: Option<&str>) -> Node {
    let mut labels = json!({
        "topology.kubernetes.io/region": region,
        "topology.kubernetes.io/zone": zone,
        "kubernetes.io/hostname": name,
    });
    if let Some(subzone) = subzone {
        labels["topology.istio.io/subzone"] = json!(subzone);
    }
    object(json!({"metadata": {"name": name, "labels": labels}}))
}

fn namespace(name: &str, labels: Value) -> Namespace {
    object(json!({"metadata": {"name": name, "labels": labels}}))
}

/// Lists every kind once (empty unless given), so the index is synced.
fn list_all(index: &mut KubeIndex) {
    index.apply_service(Event::InitDone);
    index.apply_endpoint_slice(Event::InitDone);
    index.apply_pod(Event::InitDone);
    index.apply_namespace(Event::InitDone);
    index.apply_node(Event::InitDone);
}

/// The bookinfo reviews service with one ready pod on a node in us-east1.
fn reviews_index() -> KubeIndex {
    let mut index = KubeIndex::new(KubeSettings::default());
    list_all(&mut index);
    index.apply_namespace(Event::Apply(namespace("bookinfo", json!({}))));
    index.apply_node(Event::Apply(node(
        "node-a",
        "us-east1",
        "us-east1-b",
        Some("rack7"),
    )));
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "reviews-v1-abc",
        "node-a",
        json!({"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio",
               "topology.istio.io/network": "net-1"}),
    )));
    index.apply_service(Event::Apply(reviews_service()));
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        reviews_ports(),
        vec![slice_endpoint(
            "10.1.0.5",
            Some("reviews-v1-abc"),
            Some(true),
            false,
        )],
    )));
    index
}

fn endpoints<'a>(snapshot: &'a KubeSnapshot, host: &str) -> &'a [Endpoint] {
    snapshot
        .endpoints
        .get(host)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn addresses(snapshot: &KubeSnapshot, host: &str) -> Vec<String> {
    endpoints(snapshot, host)
        .iter()
        .map(|e| e.address.clone())
        .collect()
}

#[test]
fn a_service_becomes_a_mesh_service_with_istio_port_protocols() {
    let snapshot = reviews_index().snapshot();
    let [reviews] = snapshot.services.as_slice() else {
        panic!("one service: {:?}", snapshot.services);
    };
    assert_eq!(reviews.hostname, REVIEWS);
    assert_eq!(reviews.namespace, "bookinfo");
    assert_eq!(reviews.resolution, Resolution::Static);
    assert!(!reviews.mesh_external);
    assert_eq!(reviews.addresses, ["10.96.0.10"]);
    assert_eq!(reviews.export_to, ["bookinfo", "istio-system"]);
    let ports: Vec<(&str, u32, Protocol, Option<u32>)> = reviews
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.number, p.protocol, p.target_port))
        .collect();
    assert_eq!(
        ports,
        [
            // A named targetPort is resolved per pod, from the slice.
            ("http", 9080, Protocol::Http, None),
            ("grpc-api", 9090, Protocol::Grpc, Some(9091)),
            // appProtocol before the name.
            ("metrics", 15090, Protocol::Http, None),
            // The UDP port is not proxied.
        ]
    );
}

#[test]
fn an_endpoint_carries_its_pod_labels_account_locality_and_network() {
    let snapshot = reviews_index().snapshot();
    let [endpoint] = endpoints(&snapshot, REVIEWS) else {
        panic!("one endpoint: {:?}", snapshot.endpoints);
    };
    assert_eq!(endpoint.address, "10.1.0.5");
    assert_eq!(endpoint.labels["app"], "reviews");
    assert_eq!(endpoint.labels["version"], "v1");
    // The label auto mTLS reads, as on a WorkloadEntry.
    assert_eq!(endpoint.labels["security.istio.io/tlsMode"], "istio");
    // The bare account name, as WorkloadEntries give it: clusters make the
    // SPIFFE id with the trust domain and namespace.
    assert_eq!(endpoint.service_account, "bookinfo-reviews");
    assert_eq!(endpoint.locality, "us-east1/us-east1-b/rack7");
    assert_eq!(endpoint.network, "net-1");
    assert_eq!(endpoint.weight, 1);
}

#[test]
fn endpoint_ports_come_from_the_slice_by_service_port_name() {
    let snapshot = reviews_index().snapshot();
    let reviews = &snapshot.services[0];
    let endpoint = &endpoints(&snapshot, REVIEWS)[0];
    let port = |name: &str| reviews.ports.iter().find(|p| p.name == name).unwrap();
    assert_eq!(reviews.endpoint_port(port("http"), endpoint), 8080);
    assert_eq!(reviews.endpoint_port(port("grpc-api"), endpoint), 9091);
    assert_eq!(reviews.endpoint_port(port("metrics"), endpoint), 15090);
}

#[test]
fn updates_and_deletes_follow_the_objects() {
    let mut index = reviews_index();
    let mut updated = reviews_service();
    updated
        .spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .truncate(1);
    assert!(index.apply_service(Event::Apply(updated.clone())));
    assert_eq!(index.snapshot().services[0].ports.len(), 1);
    assert!(
        !index.apply_service(Event::Apply(updated.clone())),
        "the same object again changes nothing"
    );

    // The pod moves to a node in another zone.
    index.apply_node(Event::Apply(node("node-b", "us-west1", "us-west1-a", None)));
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "reviews-v1-abc",
        "node-b",
        json!({"app": "reviews", "version": "v2"}),
    )));
    let snapshot = index.snapshot();
    let endpoint = &endpoints(&snapshot, REVIEWS)[0];
    assert_eq!(endpoint.locality, "us-west1/us-west1-a");
    assert_eq!(endpoint.labels["version"], "v2");
    assert!(!endpoint.labels.contains_key("security.istio.io/tlsMode"));

    assert!(index.apply_endpoint_slice(Event::Delete(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        json!([]),
        vec![],
    ))));
    assert!(index.snapshot().endpoints.is_empty());
    assert!(index.apply_service(Event::Delete(updated)));
    assert!(index.snapshot().services.is_empty());
}

#[test]
fn a_relist_replaces_the_kind_and_removes_what_it_lacks() {
    let mut index = reviews_index();
    index.apply_service(Event::Apply(service(
        "bookinfo",
        "ratings",
        json!({"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 9080}]}),
    )));
    assert_eq!(index.snapshot().services.len(), 2);

    // The watch restarts: until the list completes the old state stays.
    assert!(!index.apply_service(Event::Init));
    assert!(!index.apply_service(Event::InitApply(service(
        "bookinfo",
        "ratings",
        json!({"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 9080}]}),
    ))));
    assert_eq!(index.snapshot().services.len(), 2, "relist not done yet");
    assert!(index.apply_service(Event::InitDone));
    let hosts: Vec<String> = index
        .snapshot()
        .services
        .iter()
        .map(|s| s.hostname.clone())
        .collect();
    assert_eq!(hosts, ["ratings.bookinfo.svc.cluster.local"]);

    // A relist of slices that finds the same slice changes nothing.
    index.apply_endpoint_slice(Event::Init);
    index.apply_endpoint_slice(Event::InitApply(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        reviews_ports(),
        vec![slice_endpoint(
            "10.1.0.5",
            Some("reviews-v1-abc"),
            Some(true),
            false,
        )],
    )));
    assert!(!index.apply_endpoint_slice(Event::InitDone));
}

#[test]
fn not_ready_and_terminating_endpoints_are_left_out_unless_published() {
    let mut index = reviews_index();
    for name in ["p1", "p2", "p3", "p4"] {
        index.apply_pod(Event::Apply(pod(
            "bookinfo",
            name,
            "node-a",
            json!({"app": "reviews"}),
        )));
    }
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        reviews_ports(),
        vec![
            slice_endpoint("10.1.0.1", Some("p1"), Some(true), false),
            slice_endpoint("10.1.0.2", Some("p2"), Some(false), false),
            slice_endpoint("10.1.0.3", Some("p3"), Some(false), true),
            // Unknown readiness counts as ready.
            slice_endpoint("10.1.0.4", Some("p4"), None, false),
        ],
    )));
    assert_eq!(
        addresses(&index.snapshot(), REVIEWS),
        ["10.1.0.1", "10.1.0.4"]
    );

    let mut published = reviews_service();
    published.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    index.apply_service(Event::Apply(published));
    assert_eq!(
        addresses(&index.snapshot(), REVIEWS),
        ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]
    );
}

#[test]
fn an_endpoint_waits_for_its_pod() {
    let mut index = reviews_index();
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        reviews_ports(),
        vec![
            slice_endpoint("10.1.0.5", Some("reviews-v1-abc"), Some(true), false),
            slice_endpoint("10.1.0.6", Some("reviews-v1-new"), Some(true), false),
            // No targetRef (a hand-made slice): kept, without labels.
            slice_endpoint("192.168.0.9", None, Some(true), false),
        ],
    )));
    assert_eq!(
        addresses(&index.snapshot(), REVIEWS),
        ["10.1.0.5", "192.168.0.9"],
        "no endpoint without its pod's labels (and mTLS mode)"
    );
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "reviews-v1-new",
        "node-a",
        json!({"app": "reviews"}),
    )));
    assert_eq!(
        addresses(&index.snapshot(), REVIEWS),
        ["10.1.0.5", "10.1.0.6", "192.168.0.9"]
    );
}

#[test]
fn a_service_gathers_endpoints_from_all_its_slices() {
    let mut index = reviews_index();
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "reviews-v2-def",
        "node-a",
        json!({"version": "v2"}),
    )));
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "reviews-fghij",
        "reviews",
        json!([{"name": "http", "port": 8081}]),
        vec![
            slice_endpoint("10.1.0.7", Some("reviews-v2-def"), Some(true), false),
            // Also in the first slice while the controller moves it.
            slice_endpoint("10.1.0.5", Some("reviews-v1-abc"), Some(true), false),
        ],
    )));
    // Another service's slice in the same namespace.
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "ratings-zzzzz",
        "ratings",
        json!([{"name": "http", "port": 9080}]),
        vec![slice_endpoint("10.1.0.99", None, Some(true), false)],
    )));
    let snapshot = index.snapshot();
    assert_eq!(addresses(&snapshot, REVIEWS), ["10.1.0.5", "10.1.0.7"]);
    let reviews = &snapshot.services[0];
    let http = reviews.port(9080).unwrap();
    let ports: Vec<u32> = endpoints(&snapshot, REVIEWS)
        .iter()
        .map(|e| reviews.endpoint_port(http, e))
        .collect();
    assert_eq!(ports, [8080, 8081], "each slice's own port numbers");
    assert!(
        !snapshot
            .endpoints
            .contains_key("ratings.bookinfo.svc.cluster.local"),
        "a slice without its service makes no endpoints"
    );
}

#[test]
fn a_headless_service_is_passthrough_with_an_endpoint_per_pod() {
    let mut index = reviews_index();
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "db-0",
        "node-a",
        json!({"app": "db"}),
    )));
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "db-1",
        "node-a",
        json!({"app": "db"}),
    )));
    index.apply_service(Event::Apply(service(
        "bookinfo",
        "db",
        json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"name": "tcp-db", "port": 5432}]}),
    )));
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "db-xyz",
        "db",
        json!([{"name": "tcp-db", "port": 5432}]),
        vec![
            slice_endpoint("10.1.1.1", Some("db-0"), Some(true), false),
            slice_endpoint("10.1.1.2", Some("db-1"), Some(true), false),
        ],
    )));
    let snapshot = index.snapshot();
    let db = snapshot
        .services
        .iter()
        .find(|s| s.hostname == "db.bookinfo.svc.cluster.local")
        .unwrap();
    assert_eq!(db.resolution, Resolution::Passthrough);
    assert!(db.addresses.is_empty());
    assert_eq!(db.ports[0].protocol, Protocol::Tcp);
    assert_eq!(
        addresses(&snapshot, "db.bookinfo.svc.cluster.local"),
        ["10.1.1.1", "10.1.1.2"]
    );
}

#[test]
fn an_external_name_service_resolves_its_name_by_dns() {
    let mut index = reviews_index();
    index.apply_service(Event::Apply(service(
        "bookinfo",
        "payments",
        json!({"type": "ExternalName", "externalName": "payments.example.com",
               "ports": [{"name": "https", "port": 443}]}),
    )));
    let snapshot = index.snapshot();
    let host = "payments.bookinfo.svc.cluster.local";
    let payments = snapshot
        .services
        .iter()
        .find(|s| s.hostname == host)
        .unwrap();
    assert_eq!(payments.resolution, Resolution::Dns);
    assert!(payments.mesh_external);
    assert_eq!(payments.ports[0].protocol, Protocol::Https);
    assert_eq!(addresses(&snapshot, host), ["payments.example.com"]);
}

#[test]
fn the_index_is_synced_only_after_every_kind_is_listed() {
    let mut index = KubeIndex::new(KubeSettings::default());
    // Events before a list completes are kept but do not make it synced.
    index.apply_service(Event::Apply(reviews_service()));
    for kind in Kind::ALL {
        assert!(!index.is_synced(), "synced before {kind:?} was listed");
        match kind {
            Kind::Service => {
                index.apply_service(Event::Init);
                index.apply_service(Event::InitApply(reviews_service()));
                assert!(!index.kind_synced(Kind::Service));
                assert!(index.apply_service(Event::InitDone));
            }
            Kind::EndpointSlice => {
                index.apply_endpoint_slice(Event::Init);
                index.apply_endpoint_slice(Event::InitDone);
            }
            Kind::Pod => {
                index.apply_pod(Event::Init);
                index.apply_pod(Event::InitDone);
            }
            Kind::Namespace => {
                index.apply_namespace(Event::Init);
                index.apply_namespace(Event::InitDone);
            }
            Kind::Node => {
                index.apply_node(Event::Init);
                index.apply_node(Event::InitDone);
            }
        }
        assert!(index.kind_synced(kind));
    }
    assert!(index.is_synced());
    // A later relist does not make it unsynced.
    index.apply_pod(Event::Init);
    assert!(index.is_synced());
}

fn selected_settings() -> KubeSettings {
    KubeSettings {
        discovery_selectors: DiscoverySelectors::parse(
            r#"[{"matchLabels": {"istio-discovery": "enabled"}}]"#,
        )
        .unwrap(),
        ..KubeSettings::default()
    }
}

#[test]
fn discovery_selectors_keep_only_selected_namespaces() {
    let mut index = KubeIndex::new(selected_settings());
    index.apply_namespace(Event::Init);
    index.apply_namespace(Event::InitApply(namespace(
        "bookinfo",
        json!({"istio-discovery": "enabled"}),
    )));
    index.apply_namespace(Event::InitApply(namespace("batch", json!({}))));
    index.apply_namespace(Event::InitDone);
    index.apply_service(Event::InitDone);
    index.apply_endpoint_slice(Event::InitDone);
    index.apply_pod(Event::InitDone);
    index.apply_node(Event::InitDone);
    assert!(index.is_synced());
    for (ns, name) in [("bookinfo", "reviews"), ("batch", "jobs")] {
        index.apply_service(Event::Apply(service(
            ns,
            name,
            json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
        )));
        index.apply_pod(Event::Apply(pod(
            ns,
            &format!("{name}-0"),
            "node-a",
            json!({}),
        )));
        index.apply_endpoint_slice(Event::Apply(slice(
            ns,
            &format!("{name}-slice"),
            name,
            json!([{"name": "http", "port": 8080}]),
            vec![slice_endpoint("10.1.2.3", None, Some(true), false)],
        )));
    }
    // A namespace not seen yet (its event may be late): kept, not produced.
    index.apply_service(Event::Apply(service(
        "brand-new",
        "web",
        json!({"clusterIP": "10.96.0.30", "ports": [{"name": "http", "port": 80}]}),
    )));
    let hosts = |index: &KubeIndex| -> Vec<String> {
        index
            .snapshot()
            .services
            .iter()
            .map(|s| s.hostname.clone())
            .collect()
    };
    assert_eq!(hosts(&index), ["reviews.bookinfo.svc.cluster.local"]);
    assert_eq!(
        index.namespaces_with_objects(),
        ["bookinfo".to_string(), "brand-new".to_string()].into(),
        "nothing kept from the unselected namespace"
    );
    assert!(
        index
            .snapshot()
            .endpoints
            .contains_key("reviews.bookinfo.svc.cluster.local")
    );

    // The late namespace arrives, selected.
    index.apply_namespace(Event::Apply(namespace(
        "brand-new",
        json!({"istio-discovery": "enabled"}),
    )));
    assert!(!index.take_relist_request(), "nothing of it was dropped");
    assert_eq!(
        hosts(&index),
        [
            "reviews.bookinfo.svc.cluster.local",
            "web.brand-new.svc.cluster.local"
        ]
    );

    // bookinfo is relabelled out: its services and endpoints go.
    assert!(index.apply_namespace(Event::Apply(namespace(
        "bookinfo",
        json!({"istio-discovery": "disabled"})
    ))));
    assert_eq!(hosts(&index), ["web.brand-new.svc.cluster.local"]);
    assert!(!index.namespaces_with_objects().contains("bookinfo"));

    // ... and back in: its objects were dropped, so the namespaced kinds
    // must be listed again.
    index.apply_namespace(Event::Apply(namespace(
        "bookinfo",
        json!({"istio-discovery": "enabled"}),
    )));
    assert!(index.take_relist_request());
    assert!(!index.take_relist_request(), "asked once");
    index.apply_service(Event::Init);
    index.apply_service(Event::InitApply(service(
        "bookinfo",
        "reviews",
        json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
    )));
    index.apply_service(Event::InitApply(service(
        "batch",
        "jobs",
        json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
    )));
    index.apply_service(Event::InitDone);
    assert_eq!(
        hosts(&index),
        ["reviews.bookinfo.svc.cluster.local"],
        "web was not in the relist"
    );
}

fn service_entry_config(yaml: &str) -> ConfigSet {
    let resources = mesh_config::parse_all("test.yaml", yaml).expect("test config parses");
    ConfigSet::from_resources(resources.into_iter().map(|r| r.resource))
}

fn with_kubernetes(config: &ConfigSet, index: &KubeIndex) -> ConfigSet {
    ConfigSet {
        kubernetes: Arc::new(index.snapshot()),
        ..config.clone()
    }
}

#[test]
fn a_kubernetes_host_wins_over_a_service_entry_of_the_same_host() {
    let config = service_entry_config(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-se, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: DNS
  ports: [{number: 80, name: tcp, protocol: TCP}]
  endpoints: [{address: reviews.example.com}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: bookinfo}
spec:
  hosts: [api.example.com]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
",
    );
    let index = reviews_index();
    assert_eq!(index.name(), "Kubernetes");
    let snapshot =
        MeshSnapshot::from_config(with_kubernetes(&config, &index), MeshSettings::default());
    let reviews = snapshot.service(REVIEWS).unwrap();
    assert_eq!(
        reviews.resolution,
        Resolution::Static,
        "the Service's, not the entry's DNS"
    );
    assert_eq!(reviews.port(9080).map(|p| p.protocol), Some(Protocol::Http));
    let addresses: Vec<&str> = snapshot
        .endpoints(REVIEWS)
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["10.1.0.5"]);
    assert!(
        snapshot.service("api.example.com").is_some(),
        "other entries stay"
    );

    // Without Kubernetes the entry defines the host.
    let snapshot = MeshSnapshot::from_config(config, MeshSettings::default());
    assert_eq!(
        snapshot.service(REVIEWS).unwrap().resolution,
        Resolution::Dns
    );
}

/// The push that follows `old` when the config becomes `new`.
fn trigger(old: &ConfigSet, new: &ConfigSet) -> PushTrigger {
    let settings = MeshSettings::default();
    let first = PushContext::next(
        &PushContext::empty(),
        MeshSnapshot::from_config(old.clone(), settings.clone()),
        Instant::now(),
    );
    assert_eq!(first.trigger, PushTrigger::Initial);
    PushContext::next(
        &first,
        MeshSnapshot::from_config(new.clone(), settings),
        Instant::now(),
    )
    .trigger
}

#[test]
fn an_endpoint_slice_change_pushes_endpoints_only_and_a_port_change_pushes_config() {
    let config = ConfigSet::default();
    let mut index = reviews_index();
    let before = with_kubernetes(&config, &index);

    // A pod becomes ready in the slice: only EDS for the host.
    index.apply_pod(Event::Apply(pod(
        "bookinfo",
        "reviews-v2",
        "node-a",
        json!({"app": "reviews"}),
    )));
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        reviews_ports(),
        vec![
            slice_endpoint("10.1.0.5", Some("reviews-v1-abc"), Some(true), false),
            slice_endpoint("10.1.0.6", Some("reviews-v2"), Some(true), false),
        ],
    )));
    let endpoints_moved = with_kubernetes(&config, &index);
    assert!(endpoints_moved.differs_only_in_endpoints(&before));
    assert_eq!(
        trigger(&before, &endpoints_moved),
        PushTrigger::Endpoints([REVIEWS.to_string()].into())
    );

    // The same pod turns not ready: endpoints again.
    index.apply_endpoint_slice(Event::Apply(slice(
        "bookinfo",
        "reviews-abcde",
        "reviews",
        reviews_ports(),
        vec![
            slice_endpoint("10.1.0.5", Some("reviews-v1-abc"), Some(true), false),
            slice_endpoint("10.1.0.6", Some("reviews-v2"), Some(false), false),
        ],
    )));
    let not_ready = with_kubernetes(&config, &index);
    assert!(not_ready.differs_only_in_endpoints(&endpoints_moved));
    assert!(matches!(
        trigger(&endpoints_moved, &not_ready),
        PushTrigger::Endpoints(_)
    ));

    // A Service port change: a full push.
    let mut changed = reviews_service();
    changed.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 9081;
    index.apply_service(Event::Apply(changed));
    let ports_changed = with_kubernetes(&config, &index);
    assert!(!ports_changed.differs_only_in_endpoints(&not_ready));
    assert_eq!(trigger(&not_ready, &ports_changed), PushTrigger::Config);
}

#[tokio::test]
async fn merge_waits_for_both_sources_then_sends_each_change() {
    let (config_tx, configs) = mpsc::channel(4);
    let (snapshot_tx, snapshots) = watch::channel(None::<Arc<KubeSnapshot>>);
    let (updates_tx, mut updates) = mpsc::channel(4);
    tokio::spawn(merge(configs, snapshots, updates_tx));
    let no_update = |updates: &mut mpsc::Receiver<ConfigSet>| updates.try_recv().is_err();

    let config = service_entry_config(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: bookinfo}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
",
    );
    config_tx.send(config.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(no_update(&mut updates), "the registry has not synced yet");

    let snapshot = Arc::new(reviews_index().snapshot());
    snapshot_tx.send_replace(Some(snapshot.clone()));
    let merged = updates.recv().await.unwrap();
    assert_eq!(merged.service_entries, config.service_entries);
    assert!(Arc::ptr_eq(&merged.kubernetes, &snapshot));

    // A new config keeps the registry's snapshot.
    config_tx.send(ConfigSet::default()).await.unwrap();
    let merged = updates.recv().await.unwrap();
    assert!(merged.service_entries.is_empty());
    assert!(Arc::ptr_eq(&merged.kubernetes, &snapshot));

    // A new snapshot keeps the config; the registry stopping keeps the last.
    let empty = Arc::new(KubeSnapshot::default());
    snapshot_tx.send_replace(Some(empty.clone()));
    let merged = updates.recv().await.unwrap();
    assert!(Arc::ptr_eq(&merged.kubernetes, &empty));
    drop(snapshot_tx);
    config_tx.send(config).await.unwrap();
    let merged = updates.recv().await.unwrap();
    assert!(Arc::ptr_eq(&merged.kubernetes, &empty));
    assert_eq!(merged.service_entries.len(), 1);
}

#[test]
fn services_are_listed_through_the_registry_interface() {
    let index = reviews_index();
    let snapshot = index.snapshot();
    let services: Vec<Service> = ServiceRegistry::services(&snapshot);
    assert_eq!(services, ServiceRegistry::services(&index));
    let endpoints: BTreeMap<String, Vec<Endpoint>> = ServiceRegistry::endpoints(&snapshot);
    assert_eq!(endpoints[REVIEWS].len(), 1);
}
