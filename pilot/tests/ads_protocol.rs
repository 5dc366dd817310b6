//! The ADS protocol as Envoy speaks it, against pilot's server in-process:
//! responses, ACK/NACK bookkeeping, merged pushes, EDS-only updates, delta
//! removals and clear errors for a malformed node.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pilot::xds::connection::StreamShared;
use pilot::xds::sync_status::SyncStatus;
use pilot::xds::{AdsServer, PushContext, ResourceType, XdsMetrics};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use trireme_proto::envoy::pb::google::rpc::Status as RpcStatus;

const GATEWAY_NODE: &str = "router~10.1.0.1~gw-1.istio-system~istio-system.svc.cluster.local";
const SIDECAR_NODE: &str = "sidecar~10.1.0.5~client-1.client~client.svc.cluster.local";

fn mesh(extra_endpoint: bool, with_ratings: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-1, namespace: default}
spec: {address: 10.0.0.1, labels: {app: reviews}}
",
    );
    if extra_endpoint {
        yaml.push_str("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: reviews-2, namespace: default}\nspec: {address: 10.0.0.2, labels: {app: reviews}}\n");
    }
    if with_ratings {
        yaml.push_str("---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ratings, namespace: default}\nspec:\n  hosts: [ratings.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9080, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.1.1}]\n");
    }
    yaml
}

struct Harness {
    publisher: watch::Sender<Arc<PushContext>>,
    sync_status: SyncStatus,
    metrics: XdsMetrics,
    client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(yaml: &str) -> Harness {
        let (publisher, contexts) = watch::channel(Arc::new(PushContext::empty()));
        let harness_publisher = publisher.clone();
        publish(&publisher, yaml);
        let sync_status = SyncStatus::default();
        let metrics = XdsMetrics::unregistered();
        let shutdown = CancellationToken::new();
        let shared = StreamShared {
            metrics: metrics.clone(),
            sync_status: sync_status.clone(),
            shutdown: shutdown.clone(),
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let service = AdsServer::new(contexts, shared);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_shutdown(addr, stop.cancelled())
                .await
                .unwrap();
        });
        let client = tokio::time::timeout(Duration::from_secs(10), connect(addr))
            .await
            .expect("connected within 10 s");
        Harness {
            publisher: harness_publisher,
            sync_status,
            metrics,
            client,
            shutdown,
        }
    }

    fn publish(&self, yaml: &str) {
        publish(&self.publisher, yaml);
    }

    /// Opens a stream with `first` already queued: tonic's client waits for
    /// response headers, and a server may wait for the first request.
    async fn sotw(
        &mut self,
        first: DiscoveryRequest,
    ) -> (
        mpsc::Sender<DiscoveryRequest>,
        tonic::Streaming<DiscoveryResponse>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let requests =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let responses = self
            .client
            .stream_aggregated_resources(requests)
            .await
            .unwrap()
            .into_inner();
        (tx, responses)
    }

    async fn delta(
        &mut self,
        first: DeltaDiscoveryRequest,
    ) -> (
        mpsc::Sender<DeltaDiscoveryRequest>,
        tonic::Streaming<DeltaDiscoveryResponse>,
    ) {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let requests =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        let responses = self
            .client
            .delta_aggregated_resources(requests)
            .await
            .unwrap()
            .into_inner();
        (tx, responses)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn publish(publisher: &watch::Sender<Arc<PushContext>>, yaml: &str) {
    let snapshot = support::snapshot_from_yaml(yaml);
    let previous = publisher.borrow().clone();
    publisher.send_replace(Arc::new(PushContext::next(
        &previous,
        snapshot,
        Instant::now(),
    )));
}

async fn connect(
    addr: std::net::SocketAddr,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let endpoint = format!("http://{addr}");
    for _ in 0..100 {
        if let Ok(client) = AggregatedDiscoveryServiceClient::connect(endpoint.clone()).await {
            return client;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("pilot's ADS server did not start on {addr}");
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        ..Default::default()
    })
}

/// A sidecar's node as Istio's agent sends it: labels, namespace and
/// interception mode in the metadata.
fn sidecar_node(interception_mode: &str) -> Option<Node> {
    use trireme_proto::envoy::pb::google::protobuf::{Struct, Value, value::Kind};
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let labels = Struct {
        fields: [("app".to_string(), string("client"))].into(),
    };
    let metadata = Struct {
        fields: [
            (
                "LABELS".to_string(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
            ("NAMESPACE".to_string(), string("client")),
            ("INTERCEPTION_MODE".to_string(), string(interception_mode)),
        ]
        .into(),
    };
    Some(Node {
        id: SIDECAR_NODE.into(),
        metadata: Some(metadata),
        ..Default::default()
    })
}

fn sidecar_request(
    node: Option<Node>,
    resource_type: ResourceType,
    names: &[&str],
) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: resource_type.type_url().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn request(
    resource_type: ResourceType,
    names: &[&str],
    ack_of: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(GATEWAY_NODE),
        type_url: resource_type.type_url().into(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: ack_of.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: ack_of.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

async fn next<T>(responses: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("a response within 5 s")
        .expect("stream open")
        .expect("no error")
}

async fn nothing_more<T: std::fmt::Debug>(responses: &mut tonic::Streaming<T>) {
    if let Ok(Some(extra)) =
        tokio::time::timeout(Duration::from_millis(300), responses.next()).await
    {
        panic!("unexpected response: {extra:?}");
    }
}

fn cluster_names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
    response
        .resources
        .iter()
        .map(|any| Cluster::decode(any.value.as_slice()).unwrap().name)
        .collect()
}

fn assignment_names(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| {
            <ClusterLoadAssignment as prost::Message>::decode(&any.value[..])
                .unwrap()
                .cluster_name
        })
        .collect()
}

fn listener_names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    use trireme_proto::envoy::pb::envoy::config::listener::v3::Listener;
    response
        .resources
        .iter()
        .map(|any| Listener::decode(any.value.as_slice()).unwrap().name)
        .collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn clusters_are_served_and_acks_recorded() {
    let mut harness = Harness::start(&mesh(false, false)).await;
    let (requests, mut responses) = harness
        .sotw(request(ResourceType::Cluster, &[], None))
        .await;
    let response = next(&mut responses).await;
    assert_eq!(response.type_url, ResourceType::Cluster.type_url());
    assert!(!response.version_info.is_empty());
    assert!(
        cluster_names(&response)
            .contains(&"outbound|9080||reviews.default.svc.cluster.local".to_string())
    );

    requests
        .send(request(ResourceType::Cluster, &[], Some(&response)))
        .await
        .unwrap();
    let sync = harness.sync_status.clone();
    let version = response.version_info.clone();
    eventually("the ACK to be recorded", || {
        sync.snapshot()
            .first()
            .and_then(|p| {
                p.types
                    .get(ResourceType::Cluster.type_url())
                    .map(|t| t.acked_version == version)
            })
            .unwrap_or(false)
    })
    .await;
    assert_eq!(harness.metrics.pushes_of(ResourceType::Cluster), 1);
}

#[tokio::test]
async fn a_nack_is_recorded_with_envoys_words_and_nothing_is_resent() {
    let mut harness = Harness::start(&mesh(false, false)).await;
    let (requests, mut responses) = harness
        .sotw(request(ResourceType::Cluster, &[], None))
        .await;
    let response = next(&mut responses).await;
    let mut nack = request(ResourceType::Cluster, &[], None);
    nack.response_nonce = response.nonce.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "Proto constraint validation failed".into(),
        details: vec![],
    });
    requests.send(nack).await.unwrap();
    nothing_more(&mut responses).await;
    let status = harness.sync_status.snapshot();
    let cds = &status[0].types[ResourceType::Cluster.type_url()];
    assert_eq!(
        cds.last_nack.as_ref().unwrap().error,
        "Proto constraint validation failed"
    );
    assert_eq!(
        cds.acked_version, "",
        "the rejected version is not taken as accepted"
    );
    assert_eq!(harness.metrics.rejects_of(ResourceType::Cluster), 1);

    // A later change is pushed as usual.
    harness.publish(&mesh(false, true));
    let update = next(&mut responses).await;
    assert!(cluster_names(&update).iter().any(|n| n.contains("ratings")));
}

#[tokio::test]
async fn pushes_to_a_proxy_that_has_not_acked_are_merged() {
    let mut harness = Harness::start(&mesh(false, false)).await;
    let (requests, mut responses) = harness
        .sotw(request(ResourceType::Cluster, &[], None))
        .await;
    let first = next(&mut responses).await;
    // Three changes while the first response is unanswered: nothing is sent...
    harness.publish(&mesh(false, true));
    harness.publish(&mesh(false, false));
    harness.publish(&mesh(false, true));
    nothing_more(&mut responses).await;
    // ... until the ACK, then exactly one response with the newest state.
    requests
        .send(request(ResourceType::Cluster, &[], Some(&first)))
        .await
        .unwrap();
    let merged = next(&mut responses).await;
    assert!(cluster_names(&merged).iter().any(|n| n.contains("ratings")));
    nothing_more(&mut responses).await;
}

#[tokio::test]
async fn an_endpoint_change_sends_only_eds() {
    let mut harness = Harness::start(&mesh(false, false)).await;
    let (requests, mut responses) = harness
        .sotw(request(ResourceType::Cluster, &[], None))
        .await;
    let clusters = next(&mut responses).await;
    requests
        .send(request(ResourceType::Cluster, &[], Some(&clusters)))
        .await
        .unwrap();
    let cluster = "outbound|9080||reviews.default.svc.cluster.local";
    // A cluster whose endpoints the change leaves alone.
    let unchanged = "outbound|9080||other.default.svc.cluster.local";
    requests
        .send(request(ResourceType::Endpoint, &[cluster, unchanged], None))
        .await
        .unwrap();
    let endpoints = next(&mut responses).await;
    assert_eq!(endpoints.type_url, ResourceType::Endpoint.type_url());
    assert_eq!(assignment_names(&endpoints), [unchanged, cluster]);
    requests
        .send(request(
            ResourceType::Endpoint,
            &[cluster, unchanged],
            Some(&endpoints),
        ))
        .await
        .unwrap();
    requests
        .send(request(ResourceType::Listener, &[], None))
        .await
        .unwrap();
    let listeners = next(&mut responses).await;
    requests
        .send(request(ResourceType::Listener, &[], Some(&listeners)))
        .await
        .unwrap();
    nothing_more(&mut responses).await;

    let pushes_before: Vec<i64> = ResourceType::PUSH_ORDER
        .iter()
        .map(|t| harness.metrics.pushes_of(*t))
        .collect();
    harness.publish(&mesh(true, false));
    let update = next(&mut responses).await;
    assert_eq!(
        update.type_url,
        ResourceType::Endpoint.type_url(),
        "only EDS is pushed"
    );
    assert_eq!(
        assignment_names(&update),
        [cluster],
        "only the changed assignment is sent; Envoy keeps the others"
    );
    nothing_more(&mut responses).await;
    let pushes_after: Vec<i64> = ResourceType::PUSH_ORDER
        .iter()
        .map(|t| harness.metrics.pushes_of(*t))
        .collect();
    assert_eq!(pushes_after[0], pushes_before[0], "no CDS push");
    assert_eq!(pushes_after[1], pushes_before[1] + 1, "one EDS push");
    assert_eq!(pushes_after[2], pushes_before[2], "no LDS push");
}

#[tokio::test]
async fn delta_sends_changes_and_removals_only() {
    let mut harness = Harness::start(&mesh(false, true)).await;
    let (requests, mut responses) = harness
        .delta(DeltaDiscoveryRequest {
            node: node(GATEWAY_NODE),
            type_url: ResourceType::Cluster.type_url().into(),
            ..Default::default()
        })
        .await;
    let initial = next(&mut responses).await;
    let names: Vec<&str> = initial.resources.iter().map(|r| r.name.as_str()).collect();
    assert!(
        names.contains(&"outbound|9080||ratings.default.svc.cluster.local"),
        "{names:?}"
    );
    requests
        .send(DeltaDiscoveryRequest {
            type_url: ResourceType::Cluster.type_url().into(),
            response_nonce: initial.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    harness.publish(&mesh(false, false));
    let update = next(&mut responses).await;
    assert!(
        update.resources.is_empty(),
        "unchanged clusters are not resent: {:?}",
        update.resources.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    assert_eq!(
        update.removed_resources,
        vec!["outbound|9080||ratings.default.svc.cluster.local".to_string()]
    );
}

#[tokio::test]
async fn a_malformed_node_id_is_refused_clearly() {
    let mut harness = Harness::start(&mesh(false, false)).await;
    let first = DiscoveryRequest {
        node: node("not-an-istio-node"),
        type_url: ResourceType::Cluster.type_url().into(),
        ..Default::default()
    };
    let requests = futures::stream::iter(vec![first]).chain(futures::stream::pending());
    // The status comes as the call's error or as the stream's first item.
    let status = match harness.client.stream_aggregated_resources(requests).await {
        Err(status) => status,
        Ok(response) => next_status(response.into_inner()).await,
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("<type>~<ip>"),
        "{}",
        status.message()
    );
}

const SERVER_SIDECAR_NODE: &str = "sidecar~10.1.0.7~server-v1-1.server~server.svc.cluster.local";

/// A ServiceEntry for `server` (HTTP on 8080 behind port 80), with the
/// sidecar's own WorkloadEntry at 10.1.0.7 when `registered`.
fn server_mesh(registered: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: server}
spec:
  hosts: [server.server.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-v1-2, namespace: server}
spec: {address: 10.1.0.8, labels: {app: server, version: v1}}
",
    );
    if registered {
        yaml.push_str("---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: server-v1-1, namespace: server}\nspec: {address: 10.1.0.7, labels: {app: server, version: v1}}\n");
    }
    yaml
}

/// The sidecar's node as Istio's agent sends it: labels and namespace in metadata.
fn server_sidecar_node() -> Option<Node> {
    use trireme_proto::envoy::pb::google::protobuf::{Struct, Value, value::Kind};
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.into())),
    };
    let labels = Struct {
        fields: [
            ("app".to_string(), string("server")),
            ("version".to_string(), string("v1")),
        ]
        .into(),
    };
    Some(Node {
        id: SERVER_SIDECAR_NODE.into(),
        metadata: Some(Struct {
            fields: [
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
                ("NAMESPACE".to_string(), string("server")),
            ]
            .into(),
        }),
        ..Default::default()
    })
}

fn server_sidecar_request(
    resource_type: ResourceType,
    ack_of: Option<&DiscoveryResponse>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: server_sidecar_node(),
        ..request(resource_type, &[], ack_of)
    }
}

/// The destination ports `virtualInbound` has chains for (15006 is its blackhole).
fn inbound_ports(response: &DiscoveryResponse) -> Vec<u32> {
    use prost::Message;
    use trireme_proto::envoy::pb::envoy::config::listener::v3::Listener;
    let listener = response
        .resources
        .iter()
        .map(|any| Listener::decode(any.value.as_slice()).unwrap())
        .find(|l| l.name == "virtualInbound")
        .expect("a virtualInbound listener");
    let mut ports: Vec<u32> = listener
        .filter_chains
        .iter()
        .filter_map(|c| c.filter_chain_match.as_ref()?.destination_port.as_ref())
        .map(|p| p.value)
        .filter(|p| *p != 15006)
        .collect();
    ports.dedup();
    ports
}

#[tokio::test]
async fn a_sidecar_gets_virtual_inbound_with_a_chain_per_workload_port() {
    let mut harness = Harness::start(&server_mesh(true)).await;
    let (requests, mut responses) = harness
        .sotw(server_sidecar_request(ResourceType::Cluster, None))
        .await;
    let clusters = next(&mut responses).await;
    assert!(cluster_names(&clusters).contains(&"inbound|8080||".to_string()));
    requests
        .send(server_sidecar_request(
            ResourceType::Cluster,
            Some(&clusters),
        ))
        .await
        .unwrap();
    requests
        .send(server_sidecar_request(ResourceType::Listener, None))
        .await
        .unwrap();
    let listeners = next(&mut responses).await;
    assert_eq!(listeners.type_url, ResourceType::Listener.type_url());
    assert_eq!(inbound_ports(&listeners), [8080]);
}

#[tokio::test]
async fn a_workload_entry_for_a_connected_sidecar_opens_its_port() {
    let mut harness = Harness::start(&server_mesh(false)).await;
    let (requests, mut responses) = harness
        .sotw(server_sidecar_request(ResourceType::Listener, None))
        .await;
    let before = next(&mut responses).await;
    assert!(inbound_ports(&before).is_empty(), "not an instance yet");
    requests
        .send(server_sidecar_request(
            ResourceType::Listener,
            Some(&before),
        ))
        .await
        .unwrap();
    nothing_more(&mut responses).await;

    // Only endpoints changed, yet they made this proxy a service instance.
    harness.publish(&server_mesh(true));
    let after = next(&mut responses).await;
    assert_eq!(after.type_url, ResourceType::Listener.type_url());
    assert_eq!(inbound_ports(&after), [8080]);
}

async fn next_status(mut responses: tonic::Streaming<DiscoveryResponse>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("an answer within 5 s")
        .expect("the stream carries the error")
        .unwrap_err()
}

#[tokio::test]
async fn a_sidecar_gets_its_outbound_listeners_and_routes_by_port() {
    use prost::Message;
    use trireme_proto::envoy::pb::envoy::config::route::v3::RouteConfiguration;

    let mut harness = Harness::start(&mesh(false, true)).await;
    let (requests, mut responses) = harness
        .sotw(sidecar_request(
            sidecar_node("REDIRECT"),
            ResourceType::Listener,
            &[],
        ))
        .await;
    let listeners = next(&mut responses).await;
    // Outbound listeners, then the inbound side's virtualInbound.
    assert_eq!(
        listener_names(&listeners),
        ["virtualOutbound", "0.0.0.0_9080", "virtualInbound"]
    );
    requests
        .send(sidecar_request(None, ResourceType::Route, &["9080"]))
        .await
        .unwrap();
    let routes = next(&mut responses).await;
    assert_eq!(routes.type_url, ResourceType::Route.type_url());
    let config = RouteConfiguration::decode(routes.resources[0].value.as_slice()).unwrap();
    let hosts: Vec<&str> = config
        .virtual_hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(
        hosts,
        [
            "ratings.default.svc.cluster.local:9080",
            "reviews.default.svc.cluster.local:9080",
            "allow_any"
        ]
    );

    // The same workload without traffic capture is another view: its
    // listeners bind localhost and there is no virtual listener.
    let (_requests, mut responses) = harness
        .sotw(sidecar_request(
            sidecar_node("NONE"),
            ResourceType::Listener,
            &[],
        ))
        .await;
    let listeners = next(&mut responses).await;
    assert_eq!(listener_names(&listeners), ["127.0.0.1_9080"]);
}
