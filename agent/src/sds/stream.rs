//! Drives one SDS stream, either flavour: reads Envoy's requests, watches
//! the identity, and sends what the stream's state machine decides, until
//! Envoy hangs up or the server shuts down.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use workload_identity::{IdentityReceiver, WorkloadIdentity};

use super::resources::{SECRET_TYPE_URL, SecretSnapshot};

/// A stream flavour's state machine (state of the world or delta).
pub trait StreamProtocol: Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;

    fn node_id(request: &Self::Request) -> Option<&str>;

    fn on_request(
        &mut self,
        request: &Self::Request,
        snapshot: Option<&SecretSnapshot>,
    ) -> Result<Option<Self::Response>, Status>;

    fn on_snapshot(&mut self, snapshot: &SecretSnapshot) -> Option<Self::Response>;
}

/// SDS serves one resource type only.
pub fn check_type_url(type_url: &str) -> Result<(), Status> {
    if type_url == SECRET_TYPE_URL {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "this server serves {SECRET_TYPE_URL} only, not {type_url:?}"
        )))
    }
}

/// Secret names asked for that we do not serve, each logged once per stream.
#[derive(Debug, Default)]
pub struct UnknownNames(BTreeSet<String>);

impl UnknownNames {
    pub fn warn_once(&mut self, name: &str) {
        if self.0.insert(name.to_owned()) {
            tracing::warn!(
                name,
                "Envoy asked for a secret this agent does not serve (only default and ROOTCA)"
            );
        }
    }
}

fn snapshot_of(identity: Option<Arc<WorkloadIdentity>>) -> Option<SecretSnapshot> {
    identity.as_deref().map(SecretSnapshot::from_identity)
}

/// Runs `protocol` over one stream. Responses go to `responses`, the
/// receiving half of which tonic streams to Envoy.
pub async fn drive<P: StreamProtocol>(
    mut protocol: P,
    mut requests: Streaming<P::Request>,
    mut identities: IdentityReceiver,
    responses: mpsc::Sender<Result<P::Response, Status>>,
    shutdown: CancellationToken,
) {
    let mut snapshot = snapshot_of(identities.borrow_and_update().clone());
    let mut watching = true;
    let mut node_logged = false;
    loop {
        let outgoing = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = responses.closed() => break,
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if !node_logged {
                        node_logged = true;
                        tracing::info!(node = P::node_id(&request).unwrap_or(""), "SDS stream opened");
                    }
                    protocol.on_request(&request, snapshot.as_ref())
                }
                Ok(None) => {
                    tracing::info!("Envoy closed the SDS stream");
                    break;
                }
                Err(status) => {
                    tracing::info!(%status, "SDS stream ended");
                    break;
                }
            },
            changed = identities.changed(), if watching => {
                if changed.is_err() {
                    // The manager is gone (shutting down): keep answering
                    // with the last identity.
                    watching = false;
                    Ok(None)
                } else {
                    snapshot = snapshot_of(identities.borrow_and_update().clone());
                    Ok(snapshot.as_ref().and_then(|snapshot| protocol.on_snapshot(snapshot)))
                }
            }
        };
        match outgoing {
            Ok(Some(response)) => {
                if responses.send(Ok(response)).await.is_err() {
                    break;
                }
            }
            Ok(None) => {}
            Err(status) => {
                tracing::warn!(%status, "ending the SDS stream");
                let _ = responses.send(Err(status)).await;
                break;
            }
        }
    }
}
