//! One simulated Envoy: a single ADS stream on its own HTTP/2 connection,
//! behaving like Envoy's gRPC mux. It subscribes to CDS and LDS (wildcard),
//! then to EDS for the EDS clusters CDS names and to RDS for the route
//! configs LDS names, following changes; it ACKs every response (or NACKs
//! the type given by `--nack-type`), state of the world or delta.
//!
//! Per proxy it keeps no resources: only the names it subscribes to (shared
//! among proxies, see [`crate::dependents`]), the last version and nonce of
//! each type, and a few published counters ([`crate::load_stats`]).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use trireme_proto::envoy::pb::google::rpc::Status as RpcStatus;

use crate::dependents::{Dependents, Interners, SubscriptionChange};
use crate::grpc_stream::{self, frame_message};
use crate::load_stats::LoadStats;
use crate::node::{NodeTemplate, ProxyIdentity};
use crate::resource_names::{Edges, cluster_edges, listener_edges};
use crate::resource_type::XdsType;
use crate::source_ip::{SourceIps, connect_from};
use crate::sys::unix_nanos;
use crate::wire::{DeltaResponse, SotwResponse};

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Requests queued per stream: a response causes at most an ACK and one
/// subscription change.
const REQUEST_QUEUE: usize = 8;

/// How every simulated proxy behaves.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub pilot: SocketAddr,
    pub delta: bool,
    /// Answer every response of this type with a NACK.
    pub nack_type: Option<XdsType>,
    pub source_ips: Option<SourceIps>,
    pub node_template: NodeTemplate,
    pub namespaces: usize,
    pub first_pod_ip: Ipv4Addr,
    /// Proxy 0 writes the first response of each type here (state of the world).
    pub dump_dir: Option<PathBuf>,
    pub backoff: Backoff,
    /// HTTP/2 stream and connection flow-control windows.
    pub window_bytes: u32,
    pub connect_timeout: Duration,
}

/// Envoy's retry schedule for its xDS stream: full jitter over an
/// exponentially growing ceiling (Envoy: 500 ms, at most 30 s).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1 << attempt.min(16))
            .min(self.max)
            .max(Duration::from_millis(1));
        ceiling.mul_f64(fastrand::f64())
    }
}

/// What all proxies share.
pub struct LoadContext {
    pub config: LoadConfig,
    pub stats: Arc<LoadStats>,
    interners: Interners,
    /// Types proxy 0 has dumped already (bits of [`XdsType::bit`]).
    dumped: AtomicU8,
}

impl LoadContext {
    pub fn new(config: LoadConfig, proxies: usize, log_capacity: usize) -> LoadContext {
        LoadContext {
            config,
            stats: Arc::new(LoadStats::new(proxies, log_capacity)),
            interners: Interners::default(),
            dumped: AtomicU8::new(0),
        }
    }
}

/// Runs proxy `index` for ever: connect, follow the stream, reconnect with
/// backoff when it ends.
pub async fn run_proxy(context: Arc<LoadContext>, index: usize) {
    let identity = ProxyIdentity::new(
        index,
        context.config.namespaces,
        context.config.first_pod_ip,
    );
    let mut attempt = 0;
    loop {
        match run_stream(&context, index, &identity).await {
            Ok(StreamEnd { heard_back: true }) => attempt = 0,
            Ok(StreamEnd { heard_back: false }) => {}
            Err(error) => {
                context.stats.connect_failed();
                tracing::debug!(
                    proxy = index,
                    error = format!("{error:#}"),
                    "could not open the stream"
                );
            }
        }
        tokio::time::sleep(context.config.backoff.delay(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

struct StreamEnd {
    /// The server sent at least one response (the backoff starts over).
    heard_back: bool,
}

async fn connect(config: &LoadConfig, index: usize) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{}", config.pilot))?
        .initial_stream_window_size(config.window_bytes)
        .initial_connection_window_size(config.window_bytes)
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    let source = config
        .source_ips
        .as_ref()
        .and_then(|ips| ips.for_index(index));
    let server = config.pilot;
    let connector = tower::service_fn(move |_| connect_from(source, server));
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// One connection and its stream, until the stream ends. Errors are
/// failures to connect or open the stream.
async fn run_stream(
    context: &LoadContext,
    index: usize,
    identity: &ProxyIdentity,
) -> anyhow::Result<StreamEnd> {
    let channel = connect(&context.config, index).await?;
    let protocol = if context.config.delta {
        Protocol::Delta
    } else {
        Protocol::Sotw
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(REQUEST_QUEUE);
    let requests = Requests { sender };
    // Queued before the call: the server may wait for the first request
    // before it sends response headers.
    let node = context.config.node_template.render(identity);
    protocol.initial_requests(&requests, node).await?;
    let requests_stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| (bytes, receiver))
    });
    let mut responses = grpc_stream::open(channel, protocol.path(), requests_stream).await?;
    let _open = OpenStream::new(&context.stats, index);
    let mut stream = StreamContext {
        context,
        index,
        proxy: ProxyState::default(),
        requests,
    };
    let mut heard_back = false;
    loop {
        let message = match responses.next().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                log_stream_end(index, &status);
                break;
            }
        };
        heard_back = true;
        if let Err(error) = protocol.handle(&mut stream, message).await {
            tracing::warn!(proxy = index, %error, "dropping the stream");
            break;
        }
    }
    Ok(StreamEnd { heard_back })
}

fn log_stream_end(index: usize, status: &Status) {
    tracing::debug!(proxy = index, code = ?status.code(), message = status.message(), "stream ended");
}

/// Publishes a stream as open for as long as it lives.
struct OpenStream<'a> {
    stats: &'a LoadStats,
    index: usize,
}

impl<'a> OpenStream<'a> {
    fn new(stats: &'a LoadStats, index: usize) -> OpenStream<'a> {
        stats.stream_opened(index, unix_nanos());
        OpenStream { stats, index }
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.stats.stream_closed(self.index);
    }
}

struct Requests {
    sender: mpsc::Sender<Bytes>,
}

impl Requests {
    async fn send<M: Message>(&self, request: &M) -> anyhow::Result<()> {
        self.sender
            .send(frame_message(request))
            .await
            .map_err(|_| anyhow::anyhow!("the request stream closed"))
    }
}

/// What one stream remembers.
#[derive(Default)]
struct ProxyState {
    /// EDS names from CDS, route config names from LDS.
    eds: Dependents,
    rds: Dependents,
    /// Version and nonce of the latest response of each type, which a
    /// state-of-the-world subscription change must carry.
    last_version: [String; 4],
    last_nonce: [String; 4],
    /// Types ACKed (or NACKed as asked) on this stream.
    settled: u8,
}

impl ProxyState {
    fn dependents(&mut self, xds_type: XdsType) -> Option<&mut Dependents> {
        match xds_type {
            XdsType::Cds => Some(&mut self.eds),
            XdsType::Lds => Some(&mut self.rds),
            _ => None,
        }
    }

    /// The names a request of `xds_type` carries: none for the wildcard types.
    fn names(&self, xds_type: XdsType) -> Vec<String> {
        let names = match xds_type {
            XdsType::Eds => self.eds.names(),
            XdsType::Rds => self.rds.names(),
            _ => &[],
        };
        names.iter().map(|n| n.to_string()).collect()
    }

    /// Full config: CDS and LDS, and EDS and RDS when anything needs them.
    fn has_full_config(&self) -> bool {
        let settled = |t: XdsType| self.settled & t.bit() != 0;
        settled(XdsType::Cds)
            && settled(XdsType::Lds)
            && (self.eds.names().is_empty() || settled(XdsType::Eds))
            && (self.rds.names().is_empty() || settled(XdsType::Rds))
    }
}

/// The type whose subscription a type's resources drive.
fn dependent_type(xds_type: XdsType) -> XdsType {
    match xds_type {
        XdsType::Cds => XdsType::Eds,
        _ => XdsType::Rds,
    }
}

fn nack_status() -> RpcStatus {
    RpcStatus {
        code: tonic::Code::InvalidArgument as i32,
        message: "rejected by xds-load --nack-type".into(),
        ..Default::default()
    }
}

/// The state of the world or delta: they differ only in their messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Sotw,
    Delta,
}

impl Protocol {
    fn path(self) -> &'static str {
        match self {
            Protocol::Sotw => SOTW_PATH,
            Protocol::Delta => DELTA_PATH,
        }
    }

    /// CDS and LDS, wildcard; the node goes with the first request only, as
    /// Istio's bootstrap sets `set_node_on_first_message_only`.
    async fn initial_requests(self, requests: &Requests, node: Node) -> anyhow::Result<()> {
        let mut node = Some(node);
        for xds_type in [XdsType::Cds, XdsType::Lds] {
            match self {
                Protocol::Sotw => {
                    let request = DiscoveryRequest {
                        node: node.take(),
                        type_url: xds_type.type_url().into(),
                        ..Default::default()
                    };
                    requests.send(&request).await?
                }
                Protocol::Delta => {
                    let request = DeltaDiscoveryRequest {
                        node: node.take(),
                        type_url: xds_type.type_url().into(),
                        ..Default::default()
                    };
                    requests.send(&request).await?
                }
            }
        }
        Ok(())
    }

    async fn handle(self, stream: &mut StreamContext<'_>, message: Bytes) -> anyhow::Result<()> {
        match self {
            Protocol::Sotw => stream.handle_sotw(message).await,
            Protocol::Delta => stream.handle_delta(message).await,
        }
    }
}

/// One open stream of one proxy.
struct StreamContext<'a> {
    context: &'a LoadContext,
    index: usize,
    proxy: ProxyState,
    requests: Requests,
}

impl StreamContext<'_> {
    async fn handle_sotw(&mut self, message: Bytes) -> anyhow::Result<()> {
        let received_ns = unix_nanos();
        let response = SotwResponse::decode(message.clone())?;
        let Some(xds_type) = XdsType::from_type_url(&response.type_url) else {
            return Ok(()); // not a type a sidecar follows
        };
        self.context
            .stats
            .record_response(self.index, xds_type, received_ns, message.len());
        self.dump(xds_type, &message).await;
        let nack = self.context.config.nack_type == Some(xds_type);
        let interners = &self.context.interners;
        // A rejected response is not applied, so it changes no subscription.
        let dependents = self.proxy.dependents(xds_type).filter(|_| !nack);
        let changed = dependents.and_then(|dependents| {
            let bodies = response.resources.iter().map(|r| r.value.clone());
            let edges = parse_edges(xds_type, bodies);
            dependents.replace_all(interners, &pairs(&edges))
        });
        let i = xds_type.index();
        if !nack {
            // A NACK carries the last version the proxy accepted.
            self.proxy.last_version[i] = response.version_info;
        }
        self.proxy.last_nonce[i] = response.nonce;
        let reply = DiscoveryRequest {
            version_info: self.proxy.last_version[i].clone(),
            resource_names: self.proxy.names(xds_type),
            type_url: xds_type.type_url().into(),
            response_nonce: self.proxy.last_nonce[i].clone(),
            error_detail: nack.then(nack_status),
            ..Default::default()
        };
        self.requests.send(&reply).await?;
        self.settle(xds_type, !nack);
        if changed.is_some() {
            // The whole new set, with the dependent type's latest version
            // and nonce, as Envoy sends a subscription change.
            let dependent = dependent_type(xds_type);
            let d = dependent.index();
            let request = DiscoveryRequest {
                version_info: self.proxy.last_version[d].clone(),
                resource_names: self.proxy.names(dependent),
                type_url: dependent.type_url().into(),
                response_nonce: self.proxy.last_nonce[d].clone(),
                ..Default::default()
            };
            self.requests.send(&request).await?;
        }
        Ok(())
    }

    async fn handle_delta(&mut self, message: Bytes) -> anyhow::Result<()> {
        let received_ns = unix_nanos();
        let response = DeltaResponse::decode(message.clone())?;
        let Some(xds_type) = XdsType::from_type_url(&response.type_url) else {
            return Ok(());
        };
        self.context
            .stats
            .record_response(self.index, xds_type, received_ns, message.len());
        let nack = self.context.config.nack_type == Some(xds_type);
        let interners = &self.context.interners;
        let dependents = self.proxy.dependents(xds_type).filter(|_| !nack);
        let change = dependents.and_then(|dependents| {
            let bodies = response
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref().map(|any| any.value.clone()));
            let edges = parse_edges(xds_type, bodies);
            // Updated resources lose what they depended on before.
            let dropped: HashSet<&str> = response
                .removed_resources
                .iter()
                .map(String::as_str)
                .chain(response.resources.iter().filter_map(|r| utf8(&r.name)))
                .chain(edges.iter().filter_map(|e| utf8(&e.resource)))
                .collect();
            dependents.update(interners, &dropped, &pairs(&edges))
        });
        let reply = DeltaDiscoveryRequest {
            type_url: xds_type.type_url().into(),
            response_nonce: response.nonce,
            error_detail: nack.then(nack_status),
            ..Default::default()
        };
        self.requests.send(&reply).await?;
        self.settle(xds_type, !nack);
        if let Some(SubscriptionChange {
            subscribe,
            unsubscribe,
        }) = change
        {
            let request = DeltaDiscoveryRequest {
                type_url: dependent_type(xds_type).type_url().into(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            };
            self.requests.send(&request).await?;
        }
        Ok(())
    }

    /// Books an ACK (or a NACK asked for) and notes full config.
    fn settle(&mut self, xds_type: XdsType, ack: bool) {
        let stats = &self.context.stats;
        stats.record_reply(xds_type, ack);
        self.proxy.settled |= xds_type.bit();
        stats.mark_settled(self.index, xds_type);
        if self.proxy.has_full_config() {
            stats.mark_ready(self.index, unix_nanos());
        }
    }

    /// Proxy 0 writes the first response of each type to `--dump-dir`, for
    /// the floor server to serve.
    async fn dump(&self, xds_type: XdsType, message: &Bytes) {
        let Some(dir) = &self.context.config.dump_dir else {
            return;
        };
        if self.index != 0
            || self.context.dumped.fetch_or(xds_type.bit(), Relaxed) & xds_type.bit() != 0
        {
            return;
        }
        let path = dir.join(format!("{xds_type}.pb"));
        match tokio::fs::write(&path, message).await {
            Ok(()) => {
                tracing::info!(path = %path.display(), bytes = message.len(), "dumped the first response")
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not dump a response")
            }
        }
    }
}

fn utf8(bytes: &Bytes) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// What each resource of a CDS or LDS response depends on; resources that
/// do not decode are skipped (and logged).
fn parse_edges(xds_type: XdsType, bodies: impl Iterator<Item = Bytes>) -> Vec<Edges> {
    let parse = match xds_type {
        XdsType::Cds => cluster_edges,
        _ => listener_edges,
    };
    bodies
        .filter_map(|body| match parse(body) {
            Ok(edges) => Some(edges),
            Err(error) => {
                tracing::debug!(%xds_type, %error, "skipping a resource that does not decode");
                None
            }
        })
        .collect()
}

fn pairs(edges: &[Edges]) -> Vec<(&str, &str)> {
    edges
        .iter()
        .filter_map(|edge| Some((utf8(&edge.resource)?, &edge.depends_on)))
        .flat_map(|(resource, names)| {
            names
                .iter()
                .filter_map(move |name| Some((resource, utf8(name)?)))
        })
        .collect()
}
