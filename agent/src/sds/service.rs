//! The `SecretDiscoveryService` gRPC service: each stream gets its own task
//! running the matching state machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use trireme_proto::envoy::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use workload_identity::IdentityReceiver;

use super::delta::DeltaStream;
use super::resources::{SECRET_TYPE_URL, SecretSnapshot};
use super::sotw::SotwStream;
use super::stream::{StreamProtocol, check_type_url, drive};

/// Responses buffered per stream: SDS sends one at a time and waits for the
/// ACK, so a couple is plenty.
const STREAM_BUFFER: usize = 4;

/// Serves the identities published on a watch channel.
#[derive(Clone)]
pub struct SecretDiscovery {
    identities: IdentityReceiver,
    shutdown: CancellationToken,
    streams: Arc<AtomicU64>,
}

impl SecretDiscovery {
    /// Streams end when `shutdown` is cancelled.
    pub fn new(identities: IdentityReceiver, shutdown: CancellationToken) -> Self {
        Self {
            identities,
            shutdown,
            streams: Arc::default(),
        }
    }

    pub fn into_server(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self)
    }

    fn open<P: StreamProtocol>(
        &self,
        protocol: P,
        requests: Streaming<P::Request>,
        flavour: &'static str,
    ) -> ReceiverStream<Result<P::Response, Status>> {
        let (responses, receiver) = mpsc::channel(STREAM_BUFFER);
        let id = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let span = tracing::info_span!("sds_stream", id, flavour);
        tokio::spawn(
            drive(
                protocol,
                requests,
                self.identities.clone(),
                responses,
                self.shutdown.clone(),
            )
            .instrument(span),
        );
        ReceiverStream::new(receiver)
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SecretDiscovery {
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaSecretsStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let stream = self.open(SotwStream::default(), request.into_inner(), "sotw");
        Ok(Response::new(stream))
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        let stream = self.open(DeltaStream::default(), request.into_inner(), "delta");
        Ok(Response::new(stream))
    }

    /// One-shot fetch of the named secrets as they are now.
    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let request = request.into_inner();
        check_type_url(&request.type_url)?;
        let identity = self.identities.borrow().clone();
        let snapshot = identity
            .as_deref()
            .map(SecretSnapshot::from_identity)
            .ok_or_else(|| Status::unavailable("no workload certificate yet"))?;
        let resources = request
            .resource_names
            .iter()
            .filter_map(|name| snapshot.get(name))
            .map(|secret| secret.packed.clone())
            .collect();
        Ok(Response::new(DiscoveryResponse {
            version_info: snapshot.version,
            resources,
            type_url: SECRET_TYPE_URL.to_owned(),
            ..Default::default()
        }))
    }
}
