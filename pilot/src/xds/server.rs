//! The ADS gRPC service: accepts a stream, identifies the proxy from its first
//! request, and runs the stream with the state-of-the-world or delta protocol.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Status, Streaming};

use super::authorization::{PeerIdentity, authorize, peer_identity};
use super::connection::{Connection, StreamShared};
use super::delta::Delta;
use super::grpc::{request_stream, streaming_response, unimplemented};
use super::push_context::PushContext;
use super::sotw::Sotw;
use super::stream::{self, XdsProtocol};
use crate::model::Proxy;

/// Responses queued per stream before the stream loop waits for the proxy to
/// read; small, because pushes merge while a response is in flight anyway.
const OUTBOX_CAPACITY: usize = 8;

const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// pilot's ADS service, mounted on a tonic server with `add_service`.
#[derive(Clone)]
pub struct AdsServer {
    contexts: watch::Receiver<Arc<PushContext>>,
    shared: StreamShared,
}

impl AdsServer {
    pub fn new(contexts: watch::Receiver<Arc<PushContext>>, shared: StreamShared) -> AdsServer {
        AdsServer { contexts, shared }
    }

    /// Returns the response stream at once and reads the first request in the
    /// stream's task: a client may wait for response headers before it sends
    /// anything. A proxy that cannot be identified gets the error as the
    /// stream's status.
    fn open_stream<P: XdsProtocol<Response = super::wire::WireMessage>>(
        &self,
        request: http::Request<Body>,
    ) -> http::Response<Body>
    where
        P::Request: prost::Message + Default,
    {
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let (contexts, shared) = (self.contexts.clone(), self.shared.clone());
        let peer = peer_of(&request);
        let mut requests = request_stream::<P::Request>(request);
        tokio::spawn(async move {
            let opened = first_request::<P>(&mut requests)
                .await
                .and_then(|(first, proxy)| match &peer {
                    Some(Err(reason)) => Err(Status::unauthenticated(reason.clone())),
                    Some(Ok(peer)) => authorize(peer, &proxy).map(|()| (first, proxy)),
                    None => Ok((first, proxy)),
                });
            match opened {
                Ok((first, proxy)) => {
                    let connection = Connection::open(proxy, shared, P::NAME);
                    stream::serve::<P, _>(connection, first, requests, contexts, outbox).await;
                }
                Err(status) => {
                    outbox.send(Err(status)).await.ok();
                }
            }
        });
        streaming_response(receiver)
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<Body>> for AdsServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = match request.uri().path() {
            SOTW_PATH => self.open_stream::<Sotw>(request),
            DELTA_PATH => self.open_stream::<Delta>(request),
            other => unimplemented(other),
        };
        ready(Ok(response))
    }
}

/// The identity a stream's client certificate proves: `None` on the
/// plain-text port, an error when the certificate names no workload.
fn peer_of<T>(request: &http::Request<T>) -> Option<Result<PeerIdentity, String>> {
    let info = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let leaf = info
        .peer_certs()
        .and_then(|chain| chain.first().map(|cert| cert.to_vec()));
    Some(match leaf {
        Some(der) => peer_identity(&der),
        None => Err("no client certificate".to_owned()),
    })
}

/// Waits for a stream's first request, which must identify the proxy.
async fn first_request<P: XdsProtocol>(
    requests: &mut Streaming<P::Request>,
) -> Result<(P::Request, Proxy), Status> {
    let first = requests
        .next()
        .await
        .ok_or_else(|| Status::cancelled("stream closed before its first request"))??;
    let proxy =
        Proxy::from_node(P::node(&first)).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((first, proxy))
}
