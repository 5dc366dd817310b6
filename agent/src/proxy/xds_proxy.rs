//! The xDS proxy: Envoy talks ADS to the agent over a Unix socket, and the
//! agent carries each stream to pilot. When pilot goes away the Envoy stream
//! stays open: the agent reconnects with backoff and replays what Envoy has
//! subscribed to (and, for delta xDS, the versions it holds), so Envoy sees a
//! pilot restart only as a pause.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};

/// Opens channels to pilot: plain text or TLS with the workload certificate.
pub trait Upstream: Send + Sync + 'static {
    fn connect(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Channel>> + Send + '_>>;
    /// Where pilot is, for logs.
    fn describe(&self) -> String;
}

/// Reconnect backoff towards pilot: 100 ms doubling to 5 s.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Messages buffered per direction of a stream.
const QUEUE: usize = 16;

/// The ADS service Envoy connects to.
#[derive(Clone)]
pub struct XdsProxy {
    upstream: Arc<dyn Upstream>,
}

impl XdsProxy {
    pub fn new(upstream: Arc<dyn Upstream>) -> Self {
        Self { upstream }
    }

    /// Serves Envoy on `listener` (see [`bind_unix`]) until `shutdown`.
    pub async fn serve(
        self,
        listener: UnixListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tracing::info!(pilot = %self.upstream.describe(), "xDS proxy serving Envoy");
        tonic::transport::Server::builder()
            .add_service(
                AggregatedDiscoveryServiceServer::new(self)
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }
}

/// Binds a Unix socket, replacing a stale one a previous run left behind.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|error| anyhow::anyhow!("creating {}: {error}", parent.display()))?;
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("removing the stale socket {}: {error}", path.display())
        }
        _ => {}
    }
    UnixListener::bind(path).map_err(|error| anyhow::anyhow!("binding {}: {error}", path.display()))
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;
/// Opening an upstream stream: pilot's response stream, or why not.
type OpenStream<T> = Pin<Box<dyn Future<Output = Result<Streaming<T>, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsProxy {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.relay::<Sotw>(request.into_inner()))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.relay::<Delta>(request.into_inner()))
    }
}

impl XdsProxy {
    fn relay<P: Protocol>(
        &self,
        downstream: Streaming<P::Request>,
    ) -> Response<ResponseStream<P::Response>> {
        let (to_envoy, from_pilot) = mpsc::channel(QUEUE);
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            let outcome = relay_stream::<P>(upstream, downstream, to_envoy.clone()).await;
            if let Err(status) = outcome {
                let _ = to_envoy.send(Err(status)).await;
            }
        });
        Response::new(Box::pin(ReceiverStream::new(from_pilot)))
    }
}

/// What differs between the two ADS flavours: how to open the upstream
/// stream, and what to remember so a new stream can take over.
trait Protocol: Send + 'static {
    type Request: Clone + Send + 'static;
    type Response: Send + 'static;
    type State: Default + Send;
    const NAME: &'static str;

    fn open(
        client: AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<Self::Request>,
    ) -> OpenStream<Self::Response>;
    fn record_request(state: &mut Self::State, request: &Self::Request);
    fn record_response(state: &mut Self::State, response: &Self::Response);
    /// The requests that resume Envoy's subscriptions on a new stream.
    fn resume(state: &Self::State) -> Vec<Self::Request>;
}

/// Carries one Envoy stream to pilot across pilot reconnects.
async fn relay_stream<P: Protocol>(
    upstream: Arc<dyn Upstream>,
    mut downstream: Streaming<P::Request>,
    to_envoy: mpsc::Sender<Result<P::Response, Status>>,
) -> Result<(), Status> {
    let mut state = P::State::default();
    let mut retry = FIRST_RETRY;
    loop {
        let (to_pilot, pilot_requests) = mpsc::channel(QUEUE);
        for request in P::resume(&state) {
            let _ = to_pilot.try_send(request);
        }
        let mut from_pilot = match open_upstream::<P>(&*upstream, pilot_requests).await {
            Ok(stream) => stream,
            Err(error) => {
                // `{:#}`: the cause chain, e.g. why pilot's certificate was refused.
                tracing::warn!(pilot = %upstream.describe(), error = %format_args!("{error:#}"), retry_in = ?retry, "pilot not reachable");
                // Keep reading Envoy meanwhile: its requests are the state
                // the next stream resumes from.
                if !wait_reading_envoy::<P>(&mut downstream, &mut state, retry).await {
                    return Ok(());
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        tracing::info!(pilot = %upstream.describe(), protocol = P::NAME, "stream to pilot open");
        retry = FIRST_RETRY;
        loop {
            tokio::select! {
                request = downstream.next() => match request {
                    Some(Ok(request)) => {
                        P::record_request(&mut state, &request);
                        if to_pilot.send(request).await.is_err() {
                            break;
                        }
                    }
                    // Envoy closed the stream: nothing left to carry.
                    Some(Err(_)) | None => return Ok(()),
                },
                response = from_pilot.next() => match response {
                    Some(Ok(response)) => {
                        P::record_response(&mut state, &response);
                        if to_envoy.send(Ok(response)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(status)) => {
                        tracing::warn!(code = ?status.code(), message = status.message(), "stream to pilot failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("pilot closed the stream; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

async fn open_upstream<P: Protocol>(
    upstream: &dyn Upstream,
    requests: mpsc::Receiver<P::Request>,
) -> anyhow::Result<Streaming<P::Response>> {
    let channel = upstream.connect().await?;
    let client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    Ok(P::open(client, ReceiverStream::new(requests)).await?)
}

/// Sleeps `delay` while recording what Envoy asks for; false once Envoy is
/// gone.
async fn wait_reading_envoy<P: Protocol>(
    downstream: &mut Streaming<P::Request>,
    state: &mut P::State,
    delay: Duration,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            request = downstream.next() => match request {
                Some(Ok(request)) => P::record_request(state, &request),
                Some(Err(_)) | None => return false,
            },
        }
    }
}

/// State-of-the-world: the latest request per type is Envoy's whole
/// subscription; resent without its nonce it asks the new stream for
/// everything.
struct Sotw;

#[derive(Default)]
struct SotwState {
    node: Option<Node>,
    /// Latest request per type, in the order types were first asked for
    /// (clusters before endpoints, listeners before routes, as Envoy asks).
    latest: Vec<DiscoveryRequest>,
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    type State = SotwState;
    const NAME: &'static str = "state of the world";

    fn open(
        mut client: AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<DiscoveryRequest>,
    ) -> OpenStream<DiscoveryResponse> {
        Box::pin(async move {
            Ok(client
                .stream_aggregated_resources(requests)
                .await?
                .into_inner())
        })
    }

    fn record_request(state: &mut SotwState, request: &DiscoveryRequest) {
        if state.node.is_none() && request.node.is_some() {
            state.node = request.node.clone();
        }
        match state
            .latest
            .iter_mut()
            .find(|known| known.type_url == request.type_url)
        {
            Some(known) => *known = request.clone(),
            None => state.latest.push(request.clone()),
        }
    }

    fn record_response(_: &mut SotwState, _: &DiscoveryResponse) {}

    fn resume(state: &SotwState) -> Vec<DiscoveryRequest> {
        let mut requests: Vec<DiscoveryRequest> = state
            .latest
            .iter()
            .map(|request| DiscoveryRequest {
                response_nonce: String::new(),
                error_detail: None,
                node: None,
                ..request.clone()
            })
            .collect();
        if let Some(first) = requests.first_mut() {
            first.node = state.node.clone();
        }
        requests
    }
}

/// Delta: Envoy's subscriptions are the sum of its subscribe/unsubscribe
/// requests, and the versions it holds are those pilot sent; a new stream
/// starts from both, so pilot sends only what changed meanwhile.
struct Delta;

#[derive(Default)]
struct DeltaState {
    node: Option<Node>,
    types: Vec<String>,
    subscribed: BTreeMap<String, BTreeSet<String>>,
    versions: BTreeMap<String, BTreeMap<String, String>>,
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    type State = DeltaState;
    const NAME: &'static str = "delta";

    fn open(
        mut client: AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> OpenStream<DeltaDiscoveryResponse> {
        Box::pin(async move {
            Ok(client
                .delta_aggregated_resources(requests)
                .await?
                .into_inner())
        })
    }

    fn record_request(state: &mut DeltaState, request: &DeltaDiscoveryRequest) {
        if state.node.is_none() && request.node.is_some() {
            state.node = request.node.clone();
        }
        if !state.types.contains(&request.type_url) {
            state.types.push(request.type_url.clone());
        }
        let subscribed = state
            .subscribed
            .entry(request.type_url.clone())
            .or_default();
        subscribed.extend(request.resource_names_subscribe.iter().cloned());
        for name in &request.resource_names_unsubscribe {
            subscribed.remove(name);
        }
        // Versions Envoy reports on its own first request count too.
        let versions = state.versions.entry(request.type_url.clone()).or_default();
        for (name, version) in &request.initial_resource_versions {
            versions.insert(name.clone(), version.clone());
        }
    }

    fn record_response(state: &mut DeltaState, response: &DeltaDiscoveryResponse) {
        let versions = state.versions.entry(response.type_url.clone()).or_default();
        for resource in &response.resources {
            versions.insert(resource.name.clone(), resource.version.clone());
        }
        for name in &response.removed_resources {
            versions.remove(name);
        }
    }

    fn resume(state: &DeltaState) -> Vec<DeltaDiscoveryRequest> {
        let mut requests: Vec<DeltaDiscoveryRequest> = state
            .types
            .iter()
            .map(|type_url| DeltaDiscoveryRequest {
                type_url: type_url.clone(),
                resource_names_subscribe: state
                    .subscribed
                    .get(type_url)
                    .map(|names| names.iter().cloned().collect())
                    .unwrap_or_default(),
                initial_resource_versions: state
                    .versions
                    .get(type_url)
                    .map(|versions| {
                        versions
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect();
        if let Some(first) = requests.first_mut() {
            first.node = state.node.clone();
        }
        requests
    }
}

/// pilot over plain text (Istio's `controlPlaneAuthPolicy: NONE`, port 15010).
pub struct PlaintextUpstream {
    pub address: String,
}

impl Upstream for PlaintextUpstream {
    fn connect(&self) -> Pin<Box<dyn Future<Output = anyhow::Result<Channel>> + Send + '_>> {
        Box::pin(async move {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.address))?
                    .connect_timeout(Duration::from_secs(5))
                    .http2_keep_alive_interval(Duration::from_secs(30));
            Ok(endpoint.connect().await?)
        })
    }

    fn describe(&self) -> String {
        format!("{} (plain text)", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sotw_resumes_each_type_without_nonce_and_with_the_node_first() {
        let mut state = SotwState::default();
        let node = Node {
            id: "sidecar~10.0.0.1~a.b~b.svc.cluster.local".into(),
            ..Default::default()
        };
        let cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        let eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
        Sotw::record_request(
            &mut state,
            &DiscoveryRequest {
                node: Some(node.clone()),
                type_url: cds.into(),
                ..Default::default()
            },
        );
        Sotw::record_request(
            &mut state,
            &DiscoveryRequest {
                type_url: eds.into(),
                resource_names: vec!["outbound|80||a".into()],
                ..Default::default()
            },
        );
        Sotw::record_request(
            &mut state,
            &DiscoveryRequest {
                type_url: cds.into(),
                version_info: "v7".into(),
                response_nonce: "n3".into(),
                ..Default::default()
            },
        );
        let resumed = Sotw::resume(&state);
        assert_eq!(resumed.len(), 2);
        assert_eq!(resumed[0].type_url, cds);
        assert_eq!(resumed[0].node.as_ref(), Some(&node));
        assert_eq!(resumed[0].version_info, "v7");
        assert!(resumed[0].response_nonce.is_empty());
        assert_eq!(resumed[1].resource_names, ["outbound|80||a"]);
        assert!(resumed[1].node.is_none());
    }

    #[test]
    fn delta_resumes_subscriptions_and_held_versions() {
        let mut state = DeltaState::default();
        let eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
        Delta::record_request(
            &mut state,
            &DeltaDiscoveryRequest {
                type_url: eds.into(),
                resource_names_subscribe: vec!["a".into(), "b".into()],
                ..Default::default()
            },
        );
        Delta::record_request(
            &mut state,
            &DeltaDiscoveryRequest {
                type_url: eds.into(),
                resource_names_unsubscribe: vec!["b".into()],
                ..Default::default()
            },
        );
        Delta::record_response(
            &mut state,
            &DeltaDiscoveryResponse {
                type_url: eds.into(),
                resources: vec![
                    trireme_proto::envoy::pb::envoy::service::discovery::v3::Resource {
                        name: "a".into(),
                        version: "1".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        );
        let resumed = Delta::resume(&state);
        assert_eq!(resumed.len(), 1);
        assert_eq!(resumed[0].resource_names_subscribe, ["a"]);
        assert_eq!(resumed[0].initial_resource_versions["a"], "1");
    }
}
