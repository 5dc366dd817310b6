//! The ADS gRPC service: accepts a stream, identifies the proxy from its first
//! request, and hands the stream to the state-of-the-world or delta loop.

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

use super::connection::{Connection, StreamShared};
use super::push_context::PushContext;
use super::{delta, sotw};
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
}

/// Waits for a stream's first request, which must identify the proxy.
async fn first_request<T>(
    requests: &mut Streaming<T>,
    node_of: impl Fn(&T) -> Option<&trireme_proto::envoy::pb::envoy::config::core::v3::Node>,
) -> Result<(T, Proxy), Status> {
    let first = requests
        .next()
        .await
        .ok_or_else(|| Status::cancelled("stream closed before its first request"))??;
    let proxy =
        Proxy::from_node(node_of(&first)).map_err(|e| Status::invalid_argument(e.to_string()))?;
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
        let mut requests = request.into_inner();
        let (first, proxy) = first_request(&mut requests, |r| r.node.as_ref()).await?;
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let connection = Connection::open(proxy, self.shared.clone(), "sotw");
        tokio::spawn(sotw::serve(
            connection,
            first,
            requests,
            self.contexts.clone(),
            outbox,
        ));
        Ok(Response::new(outbox_stream(receiver)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let (first, proxy) = first_request(&mut requests, |r| r.node.as_ref()).await?;
        let (outbox, receiver) = mpsc::channel(OUTBOX_CAPACITY);
        let connection = Connection::open(proxy, self.shared.clone(), "delta");
        tokio::spawn(delta::serve(
            connection,
            first,
            requests,
            self.contexts.clone(),
            outbox,
        ));
        Ok(Response::new(outbox_stream(receiver)))
    }
}
