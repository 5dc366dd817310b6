//! This machine's floor for a full push: an ADS server (state of the world)
//! that answers every request of a type with the same pre-encoded
//! `DiscoveryResponse` — the bytes `xds-load --dump-dir` captured from
//! pilot — so nothing is generated or encoded per stream. Only a version and
//! nonce are appended (protobuf keeps the last value of a singular field).
//! A push re-sends every subscribed type to every stream with a new version.
//!
//! Same resources, same clients, no translation: what is left is tonic,
//! HTTP/2 and the kernel, the lower bound for pilot's full push.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::Bytes;
use futures::Stream;
use prost::Message;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};
use trireme_proto::envoy::pb::envoy::service::discovery::v3::DiscoveryResponse;

use crate::codec::{PassThroughCodec, PreEncoded};
use crate::resource_type::XdsType;
use crate::sys::unix_nanos;
use crate::wire::SotwRequestView;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// Responses queued per stream before its task waits for the client.
const OUTBOX_CAPACITY: usize = 4;

/// The pre-encoded response of each type.
#[derive(Debug, Clone, Default)]
pub struct FloorResources {
    responses: [Option<Bytes>; 4],
}

impl FloorResources {
    /// Reads `<dir>/<type>.pb` for each type present; CDS and LDS must be.
    pub fn load(dir: &Path) -> anyhow::Result<FloorResources> {
        let mut resources = FloorResources::default();
        for xds_type in XdsType::ALL {
            let path = dir.join(format!("{xds_type}.pb"));
            match std::fs::read(&path) {
                Ok(bytes) => {
                    DiscoveryResponse::decode(&bytes[..]).with_context(|| {
                        format!("{} is not a DiscoveryResponse", path.display())
                    })?;
                    resources.responses[xds_type.index()] = Some(Bytes::from(bytes));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
        for required in [XdsType::Cds, XdsType::Lds] {
            anyhow::ensure!(
                resources.get(required).is_some(),
                "{} has no {required}.pb (run xds-load with --dump-dir first)",
                dir.display()
            );
        }
        Ok(resources)
    }

    pub fn get(&self, xds_type: XdsType) -> Option<&Bytes> {
        self.responses[xds_type.index()].as_ref()
    }

    pub fn set(&mut self, xds_type: XdsType, response: Bytes) {
        self.responses[xds_type.index()] = Some(response);
    }

    /// The response of `xds_type` at push `generation` with `nonce`.
    pub fn response(&self, xds_type: XdsType, generation: u64, nonce: u64) -> Option<PreEncoded> {
        let body = self.get(xds_type)?.clone();
        // The only per-response encoding: two short strings.
        let suffix = DiscoveryResponse {
            version_info: format!("floor-{generation}"),
            nonce: nonce.to_string(),
            ..Default::default()
        };
        Some(PreEncoded {
            body,
            suffix: suffix.encode_to_vec().into(),
        })
    }
}

/// The floor server's shared state.
pub struct FloorState {
    resources: FloorResources,
    /// The push generation and the types it re-sends (bits of [`XdsType::bit`]).
    generation: watch::Sender<(u64, u8)>,
    streams: AtomicU64,
    responses: AtomicU64,
    bytes: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
}

/// `GET /stats` of the floor.
#[derive(Debug, Serialize)]
pub struct FloorStats {
    pub streams: u64,
    pub generation: u64,
    pub responses: u64,
    pub bytes: u64,
    pub acks: u64,
    pub nacks: u64,
}

/// `POST /push`.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub generation: u64,
    /// When the push was triggered (unix ns): the start of "push to last ACK".
    pub pushed_at_ns: u64,
    pub streams: u64,
}

impl FloorState {
    pub fn new(resources: FloorResources) -> Arc<FloorState> {
        Arc::new(FloorState {
            resources,
            generation: watch::Sender::new((1, 0)),
            streams: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            nacks: AtomicU64::new(0),
        })
    }

    /// Re-sends `types` (every type when empty) to every stream that
    /// subscribed to them, with a new version.
    pub fn push(&self, types: &[XdsType]) -> Pushed {
        let pushed_at_ns = unix_nanos();
        let mask = if types.is_empty() {
            u8::MAX
        } else {
            types.iter().fold(0, |mask, t| mask | t.bit())
        };
        self.generation
            .send_modify(|(generation, types)| (*generation, *types) = (*generation + 1, mask));
        Pushed {
            generation: self.generation.borrow().0,
            pushed_at_ns,
            streams: self.streams.load(Relaxed),
        }
    }

    pub fn stats(&self) -> FloorStats {
        FloorStats {
            streams: self.streams.load(Relaxed),
            generation: self.generation.borrow().0,
            responses: self.responses.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            acks: self.acks.load(Relaxed),
            nacks: self.nacks.load(Relaxed),
        }
    }
}

/// The ADS service, as a tower service tonic's server can route to.
#[derive(Clone)]
pub struct FloorAds(pub Arc<FloorState>);

impl NamedService for FloorAds {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;
type Outbox = mpsc::Sender<Result<PreEncoded, Status>>;

impl tower::Service<http::Request<Body>> for FloorAds {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            if request.uri().path() != SOTW_PATH {
                return Ok(
                    Status::unimplemented("the floor serves state-of-the-world ADS only")
                        .into_http(),
                );
            }
            let open = tower::service_fn(move |request: Request<Streaming<SotwRequestView>>| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Status>(Response::new(open_stream(state, request.into_inner()))) }
            });
            let mut grpc = tonic::server::Grpc::new(PassThroughCodec::<SotwRequestView>::default())
                .max_decoding_message_size(16 * 1024 * 1024)
                .max_encoding_message_size(usize::MAX);
            Ok(grpc.streaming(open, request).await)
        })
    }
}

/// Starts a stream's task and returns its responses.
fn open_stream(
    state: Arc<FloorState>,
    requests: Streaming<SotwRequestView>,
) -> impl Stream<Item = Result<PreEncoded, Status>> + Send + 'static {
    let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
    tokio::spawn(serve_stream(state, requests, outbox));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

/// What a stream remembers per type.
#[derive(Default, Clone, Copy)]
struct TypeState {
    subscribed: bool,
    last_nonce: u64,
    names_hash: u64,
}

async fn serve_stream(
    state: Arc<FloorState>,
    mut requests: Streaming<SotwRequestView>,
    outbox: Outbox,
) {
    state.streams.fetch_add(1, Relaxed);
    let mut generations = state.generation.subscribe();
    let mut types = [TypeState::default(); 4];
    let mut nonce = 0u64;
    loop {
        let sent = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => answer(&state, &mut types, &mut nonce, request, &outbox).await,
                _ => break,
            },
            changed = generations.changed() => match changed {
                Ok(()) => push_all(&state, &mut types, &mut nonce, &outbox).await,
                Err(_) => break,
            },
        };
        if sent.is_err() {
            break; // the client went away
        }
    }
    state.streams.fetch_sub(1, Relaxed);
}

/// Answers a first request or a subscription change; books ACKs and NACKs.
async fn answer(
    state: &FloorState,
    types: &mut [TypeState; 4],
    nonce: &mut u64,
    request: SotwRequestView,
    outbox: &Outbox,
) -> Result<(), ()> {
    let Some(xds_type) = XdsType::from_type_url(&request.type_url) else {
        return Ok(());
    };
    let names_hash = {
        let mut hasher = DefaultHasher::new();
        request.resource_names.hash(&mut hasher);
        hasher.finish()
    };
    let type_state = &mut types[xds_type.index()];
    let first = !type_state.subscribed || request.response_nonce.is_empty();
    let is_reply = request.response_nonce == type_state.last_nonce.to_string();
    if is_reply {
        let counter = if request.error_detail.is_some() {
            &state.nacks
        } else {
            &state.acks
        };
        counter.fetch_add(1, Relaxed);
    }
    let resubscribed = is_reply && names_hash != type_state.names_hash;
    type_state.subscribed = true;
    type_state.names_hash = names_hash;
    if first || resubscribed {
        let generation = state.generation.borrow().0;
        send(state, type_state, xds_type, generation, nonce, outbox).await?;
    }
    Ok(())
}

async fn push_all(
    state: &FloorState,
    types: &mut [TypeState; 4],
    nonce: &mut u64,
    outbox: &Outbox,
) -> Result<(), ()> {
    let (generation, pushed) = *state.generation.borrow();
    for xds_type in XdsType::ALL {
        let type_state = &mut types[xds_type.index()];
        if type_state.subscribed && pushed & xds_type.bit() != 0 {
            send(state, type_state, xds_type, generation, nonce, outbox).await?;
        }
    }
    Ok(())
}

async fn send(
    state: &FloorState,
    type_state: &mut TypeState,
    xds_type: XdsType,
    generation: u64,
    nonce: &mut u64,
    outbox: &Outbox,
) -> Result<(), ()> {
    *nonce += 1;
    let Some(response) = state.resources.response(xds_type, generation, *nonce) else {
        return Ok(()); // nothing of this type was dumped
    };
    type_state.last_nonce = *nonce;
    state.responses.fetch_add(1, Relaxed);
    state.bytes.fetch_add(response.len() as u64, Relaxed);
    outbox.send(Ok(response)).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_the_dumped_one_with_a_new_version_and_nonce() {
        let dumped = DiscoveryResponse {
            version_info: "pilot-version".into(),
            nonce: "1".into(),
            type_url: XdsType::Cds.type_url().into(),
            resources: vec![Default::default(); 3],
            ..Default::default()
        };
        let mut resources = FloorResources::default();
        resources.set(XdsType::Cds, dumped.encode_to_vec().into());
        let response = resources.response(XdsType::Cds, 7, 42).unwrap();
        let mut wire = response.body.to_vec();
        wire.extend_from_slice(&response.suffix);
        let decoded = DiscoveryResponse::decode(&wire[..]).unwrap();
        assert_eq!(decoded.version_info, "floor-7");
        assert_eq!(decoded.nonce, "42");
        assert_eq!(decoded.type_url, XdsType::Cds.type_url());
        assert_eq!(decoded.resources.len(), 3);
        assert!(resources.response(XdsType::Eds, 7, 43).is_none());
    }
}
