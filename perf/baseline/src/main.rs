//! xds-baseline: a third-party xDS server, rust-control-plane, serving the
//! responses `xds-load --dump-dir` captured from pilot, so the same load
//! tool can measure it beside pilot and xds-floor. Same CLI as xds-floor:
//!
//! `xds-baseline --dump-dir target/bench/dump --xds-addr 127.0.0.1:15020 --http-addr 127.0.0.1:15021`
//!
//! HTTP: `POST /push[?types=cds,eds,lds,rds]` sets a snapshot with a new
//! version of those types (default: all), same resources, and answers
//! `{generation, pushed_at_ns, streams}`; `GET /stats` answers
//! `{streams, generation}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use data_plane_api::envoy::config::cluster::v3::Cluster;
use data_plane_api::envoy::config::endpoint::v3::ClusterLoadAssignment;
use data_plane_api::envoy::config::listener::v3::Listener;
use data_plane_api::envoy::config::route::v3::RouteConfiguration;
use data_plane_api::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use data_plane_api::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::StreamExt;
use prost::Message;
use rust_control_plane::cache::Cache;
use rust_control_plane::service::common::{Service, StreamResponse};
use rust_control_plane::snapshot::type_url::{ANY_TYPE, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use rust_control_plane::snapshot::{Resource, Resources, Snapshot};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tonic::codec::{Codec, ProstCodec};
use tonic::{Request, Status, Streaming};

/// The node id every stream is served as. rust-control-plane keys its
/// snapshots by `node.id` alone (it has no node hasher like
/// go-control-plane's), so for all proxies to share one snapshot their
/// requests reach it with one id.
const NODE_GROUP: &str = "xds-baseline";

/// The dumped types: file stem (as xds-load writes it) and type URL.
const TYPES: [(&str, &str); 4] = [
    ("cds", CLUSTER),
    ("eds", ENDPOINT),
    ("lds", LISTENER),
    ("rds", ROUTE),
];

type Items = HashMap<String, Resource>;

#[derive(Debug, Parser)]
#[command(about = "Baseline xDS server: rust-control-plane serving xds-load's dump")]
struct Args {
    /// Directory with cds.pb, lds.pb (and eds.pb, rds.pb) from xds-load --dump-dir.
    #[arg(long)]
    dump_dir: PathBuf,

    /// Plain-text gRPC address for ADS.
    #[arg(long, default_value = "127.0.0.1:15020")]
    xds_addr: SocketAddr,

    /// Address of POST /push and GET /stats.
    #[arg(long, default_value = "127.0.0.1:15021")]
    http_addr: SocketAddr,

    /// Log filter (`tracing` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

struct Baseline {
    resources: [Option<Items>; 4],
    /// The push generation and, per type, the generation that last changed
    /// it: that type's snapshot version.
    versions: Mutex<(u64, [u64; 4])>,
    /// Snapshots for the setter task, in push order.
    snapshots: mpsc::UnboundedSender<Snapshot>,
    streams: Arc<AtomicU64>,
}

#[derive(Debug, Serialize)]
struct Pushed {
    generation: u64,
    /// When the push was triggered (unix ns): the start of "push to last ACK".
    pushed_at_ns: u64,
    streams: u64,
}

#[derive(Debug, Serialize)]
struct Stats {
    streams: u64,
    generation: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    raise_nofile_limit()?;

    // ads = false: its ADS consistency check is inverted (it holds back an
    // EDS/RDS answer exactly when the request names every resource, which
    // is what xds-load and Envoy do), so it would never answer EDS.
    let cache = Arc::new(Cache::new(false));
    let (snapshots, mut to_set) = mpsc::unbounded_channel::<Snapshot>();
    // set_snapshot encodes and queues the new responses for every watching
    // stream before it returns, so /push hands it over and answers at once,
    // as xds-floor does.
    tokio::spawn({
        let cache = Arc::clone(&cache);
        async move {
            while let Some(snapshot) = to_set.recv().await {
                cache.set_snapshot(NODE_GROUP, snapshot).await;
            }
        }
    });
    let state = Arc::new(Baseline {
        resources: load_dump(&args.dump_dir)?,
        versions: Mutex::new((1, [1; 4])),
        snapshots,
        streams: Arc::default(),
    });
    state.snapshots.send(state.snapshot(&[1; 4]))?;

    let http = tokio::net::TcpListener::bind(args.http_addr).await?;
    let router = axum::Router::new()
        .route("/push", post(push))
        .route("/stats", get(stats))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(http, router).await {
            tracing::error!(%error, "HTTP API stopped");
        }
    });

    tracing::info!(xds = %args.xds_addr, http = %args.http_addr, "baseline serving");
    let ads = GroupedAds {
        inner: Service::new(cache),
        streams: Arc::clone(&state.streams),
    };
    // As pilot's and xds-floor's servers are configured, so the comparison holds.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(AggregatedDiscoveryServiceServer::new(ads))
        .serve_with_shutdown(args.xds_addr, shutdown())
        .await?;
    Ok(())
}

impl Baseline {
    /// The dumped resources, each type at `versions`.
    fn snapshot(&self, versions: &[u64; 4]) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for ((items, (_, type_url)), version) in self.resources.iter().zip(TYPES).zip(versions) {
            if let Some(items) = items {
                let resources = Resources {
                    version: format!("baseline-{version}"),
                    items: items.clone(),
                };
                snapshot.insert(type_url.to_owned(), resources);
            }
        }
        snapshot
    }
}

/// Reads `<dir>/<type>.pb` for each type present (CDS and LDS must be) and
/// decodes its resources into rust-control-plane's typed resources.
fn load_dump(dir: &Path) -> anyhow::Result<[Option<Items>; 4]> {
    let mut loaded: [Option<Items>; 4] = Default::default();
    for (slot, (name, type_url)) in loaded.iter_mut().zip(TYPES) {
        let path = dir.join(format!("{name}.pb"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let response = DiscoveryResponse::decode(&bytes[..])
            .with_context(|| format!("{} is not a DiscoveryResponse", path.display()))?;
        let mut items = Items::new();
        let (mut dumped_bytes, mut served_bytes) = (0, 0);
        for any in &response.resources {
            let (resource_name, resource) = decode_resource(type_url, &any.value)
                .with_context(|| format!("a resource in {}", path.display()))?;
            dumped_bytes += any.value.len();
            served_bytes += resource.into_any().value.len();
            items.insert(resource_name, resource);
        }
        tracing::info!(
            r#type = name,
            resources = items.len(),
            dumped_bytes,
            served_bytes,
            "loaded"
        );
        // The typed resources drop fields the crate's (older) Envoy API does
        // not know: the bytes it serves are then fewer than pilot's.
        if served_bytes != dumped_bytes {
            tracing::warn!(
                r#type = name,
                dumped_bytes,
                served_bytes,
                "re-encoding changed the size"
            );
        }
        *slot = Some(items);
    }
    for (slot, (name, _)) in loaded.iter().zip(TYPES) {
        anyhow::ensure!(
            slot.is_some() || !matches!(name, "cds" | "lds"),
            "{} has no {name}.pb (run xds-load with --dump-dir first)",
            dir.display()
        );
    }
    Ok(loaded)
}

fn decode_resource(type_url: &str, value: &[u8]) -> anyhow::Result<(String, Resource)> {
    Ok(match type_url {
        CLUSTER => {
            let cluster = Cluster::decode(value)?;
            (cluster.name.clone(), Resource::Cluster(cluster))
        }
        ENDPOINT => {
            let assignment = ClusterLoadAssignment::decode(value)?;
            (
                assignment.cluster_name.clone(),
                Resource::Endpoint(assignment),
            )
        }
        LISTENER => {
            let listener = Listener::decode(value)?;
            (listener.name.clone(), Resource::Listener(listener))
        }
        ROUTE => {
            let route = RouteConfiguration::decode(value)?;
            (route.name.clone(), Resource::Route(route))
        }
        other => anyhow::bail!("unexpected type {other}"),
    })
}

/// rust-control-plane's ADS service, with every request's node id set to
/// [`NODE_GROUP`] on the way in.
struct GroupedAds {
    inner: Service,
    streams: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for GroupedAds {
    type StreamAggregatedResourcesStream = StreamResponse<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, Status> {
        let open = OpenStream::new(&self.streams);
        let frames = request.into_inner().map(move |request| {
            let _counted = &open; // dropped with the stream
            // Boxed: a bare Status makes a large Err (clippy::result_large_err).
            let mut request = request.map_err(Box::new)?;
            if let Some(node) = request.node.as_mut() {
                node.id = NODE_GROUP.to_owned();
            }
            Ok::<_, Box<Status>>(grpc_frame(&request))
        });
        // The crate's stream handler takes a tonic `Streaming`, which is
        // made from a body of gRPC frames: so the rewritten requests are
        // framed again and decoded once more.
        let decoder = ProstCodec::<DiscoveryResponse, DiscoveryRequest>::default().decoder();
        let requests = Streaming::new_request(decoder, hyper::Body::wrap_stream(frames), None);
        self.inner.stream(Request::new(requests), ANY_TYPE)
    }

    type DeltaAggregatedResourcesStream = StreamResponse<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, Status> {
        // The crate's own delta handler is `unimplemented!()`: a panic.
        Err(Status::unimplemented(
            "rust-control-plane 0.1.2 has no delta xDS",
        ))
    }
}

/// An uncompressed gRPC length-prefixed message.
fn grpc_frame(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Counts a stream as open while it lives.
struct OpenStream(Arc<AtomicU64>);

impl OpenStream {
    fn new(streams: &Arc<AtomicU64>) -> OpenStream {
        streams.fetch_add(1, Relaxed);
        OpenStream(Arc::clone(streams))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Deserialize)]
struct PushQuery {
    /// Comma-separated types to re-send; all when absent.
    types: Option<String>,
}

async fn push(State(state): State<Arc<Baseline>>, Query(query): Query<PushQuery>) -> Response {
    let mut mask = [false; 4];
    for name in query
        .types
        .iter()
        .flat_map(|types| types.split(','))
        .map(str::trim)
    {
        match TYPES.iter().position(|(short, _)| *short == name) {
            Some(index) => mask[index] = true,
            None if name.is_empty() => {}
            None => {
                return (StatusCode::BAD_REQUEST, format!("unknown type {name}")).into_response();
            }
        }
    }
    if !mask.contains(&true) {
        mask = [true; 4];
    }
    let pushed_at_ns = unix_nanos();
    let generation = {
        let mut versions = state.versions.lock().unwrap_or_else(|e| e.into_inner());
        versions.0 += 1;
        let (generation, per_type) = &mut *versions;
        for (version, pushed) in per_type.iter_mut().zip(mask) {
            if pushed {
                *version = *generation;
            }
        }
        // Sent under the lock, so snapshots reach the cache in push order.
        let _ = state.snapshots.send(state.snapshot(per_type));
        *generation
    };
    let pushed = Pushed {
        generation,
        pushed_at_ns,
        streams: state.streams.load(Relaxed),
    };
    tracing::info!(generation, streams = pushed.streams, "push");
    Json(pushed).into_response()
}

async fn stats(State(state): State<Arc<Baseline>>) -> Json<Stats> {
    let generation = state.versions.lock().unwrap_or_else(|e| e.into_inner()).0;
    Json(Stats {
        streams: state.streams.load(Relaxed),
        generation,
    })
}

/// Thousands of streams need as many sockets.
fn raise_nofile_limit() -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

/// Nanoseconds since the Unix epoch: the clock xds-load reads too.
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
