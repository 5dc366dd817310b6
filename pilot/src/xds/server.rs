//! The ADS gRPC service: accepts a stream, identifies the proxy from its first
//! request, and runs the stream with the state-of-the-world or delta protocol.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::authorization::{PeerIdentity, authorize, peer_identity};
use super::connection::{Connection, StreamShared};
use super::delta::Delta;
use super::push_context::PushContext;
use super::sotw::Sotw;
use super::stream::{self, XdsProtocol};
use crate::model::Proxy;

/// Responses queued per stream before the stream loop waits for the proxy to
/// read; small, because pushes merge while a response is in flight anyway.
const OUTBOX_CAPACITY: usize = 8;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// pilot's ADS service.
#[derive(Clone)]
pub struct AdsServer {
    contexts: watch::Receiver<Arc<PushContext>>,
    shared: StreamShared,
}

impl AdsServer {
    pub fn new(contexts: watch::Receiver<Arc<PushContext>>, shared: StreamShared) -> AdsServer {
        AdsServer { contexts, shared }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX)
    }

    /// Returns the response stream at once and reads the first request in the
    /// stream's task: a client may wait for response headers before it sends
    /// anything. A proxy that cannot be identified gets the error as the
    /// stream's status.
    fn open_stream<P: XdsProtocol>(
        &self,
        request: Request<Streaming<P::Request>>,
    ) -> Response<ResponseStream<P::Response>> {
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let (contexts, shared) = (self.contexts.clone(), self.shared.clone());
        let peer = peer_of(&request);
        let mut requests = request.into_inner();
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
        Response::new(outbox_stream(receiver))
    }
}

/// The identity a stream's client certificate proves: `None` on the
/// plain-text port, an error when the certificate names no workload.
fn peer_of<T>(request: &Request<T>) -> Option<Result<PeerIdentity, String>> {
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

fn outbox_stream<T: Send + 'static>(
    receiver: mpsc::Receiver<Result<T, Status>>,
) -> ResponseStream<T> {
    Box::pin(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(self.open_stream::<Sotw>(request))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(self.open_stream::<Delta>(request))
    }
}
