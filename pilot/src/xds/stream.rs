//! The life of one ADS stream, common to both xDS protocols: read requests
//! and follow push contexts until the proxy leaves or the server stops. Each
//! protocol ([`super::sotw`], [`super::delta`]) supplies how a request is
//! answered and how one resource type is pushed.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::Status;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;

use super::connection::{Connection, current};
use super::push_context::PushContext;
use super::resource_type::ResourceType;

/// Where a stream's responses go; an error means the proxy stopped reading.
pub type Outbox<R> = mpsc::Sender<Result<R, Status>>;

/// One flavour of ADS: its messages and how it answers and pushes.
pub trait XdsProtocol: Send + Sync + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    /// `sotw` or `delta`, for logs and `/debug/syncz`.
    const NAME: &'static str;

    fn node(request: &Self::Request) -> Option<&Node>;

    /// Records what a request says (ACK, NACK, subscription) and answers it.
    fn handle_request(
        connection: &mut Connection,
        request: Self::Request,
        contexts: &watch::Receiver<Arc<PushContext>>,
        outbox: &Outbox<Self::Response>,
    ) -> impl Future<Output = Result<(), ()>> + Send;

    /// Sends the proxy its current resources of one type, if they changed
    /// (or `must_answer`), unless a response is still awaiting its answer.
    fn push_type(
        connection: &mut Connection,
        resource_type: ResourceType,
        context: &PushContext,
        must_answer: bool,
        outbox: &Outbox<Self::Response>,
    ) -> impl Future<Output = Result<(), ()>> + Send;
}

/// Serves one stream until the proxy goes away or the server shuts down.
pub async fn serve<P, S>(
    mut connection: Connection,
    first: P::Request,
    mut requests: S,
    mut contexts: watch::Receiver<Arc<PushContext>>,
    outbox: Outbox<P::Response>,
) where
    P: XdsProtocol,
    S: Stream<Item = Result<P::Request, Status>> + Unpin,
{
    let shutdown = connection.shared.shutdown.clone();
    contexts.mark_unchanged();
    if P::handle_request(&mut connection, first, &contexts, &outbox)
        .await
        .is_err()
    {
        return;
    }
    loop {
        let outcome = tokio::select! {
            request = requests.next() => match request {
                Some(Ok(request)) => P::handle_request(&mut connection, request, &contexts, &outbox).await,
                Some(Err(status)) => {
                    tracing::debug!(proxy = %connection.proxy.id, %status, "stream ended with an error");
                    return;
                }
                None => return,
            },
            changed = contexts.changed() => match changed {
                Ok(()) => push_context::<P>(&mut connection, &current(&contexts), &outbox).await,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        if outcome.is_err() {
            return; // the proxy stopped reading
        }
    }
}

/// Pushes what a new push context changed for this proxy, in Envoy's order.
async fn push_context<P: XdsProtocol>(
    connection: &mut Connection,
    context: &PushContext,
    outbox: &Outbox<P::Response>,
) -> Result<(), ()> {
    for resource_type in connection.types_affected_by(context) {
        P::push_type(connection, resource_type, context, false, outbox).await?;
    }
    Ok(())
}
