//! State-of-the-world ADS (`StreamAggregatedResources`): every response
//! carries the complete set of the type the proxy subscribed to.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};

use super::connection::{Connection, PushPlan, Reply, TypeState, current};
use super::generator::{Subscription, combined_version};
use super::push_context::PushContext;
use super::resource_type::ResourceType;
use super::stream::XdsProtocol;

type Outbox = super::stream::Outbox<DiscoveryResponse>;

/// The state-of-the-world protocol.
pub struct Sotw;

impl XdsProtocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn node(request: &DiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    async fn handle_request(
        connection: &mut Connection,
        request: DiscoveryRequest,
        contexts: &watch::Receiver<Arc<PushContext>>,
        outbox: &Outbox,
    ) -> Result<(), ()> {
        let Some(resource_type) = ResourceType::from_type_url(&request.type_url) else {
            tracing::debug!(proxy = %connection.proxy.id, type_url = %request.type_url, "ignoring a request for a type pilot does not serve");
            return Ok(());
        };
        let error = request.error_detail.as_ref().map(|e| e.message.clone());
        let reply = connection.record_reply(
            resource_type,
            &request.response_nonce,
            &request.version_info,
            error,
        );
        if reply == Reply::Stale {
            return Ok(());
        }
        let subscription = if resource_type.is_wildcard() {
            Subscription::Wildcard
        } else {
            Subscription::Names(
                request
                    .resource_names
                    .iter()
                    .cloned()
                    .collect::<BTreeSet<_>>(),
            )
        };
        let state = connection
            .types
            .entry(resource_type)
            .or_insert_with(|| TypeState::new(subscription.clone()));
        let subscription_changed = state.subscription != subscription;
        state.subscription = subscription;
        if subscription_changed || reply == Reply::Initial {
            connection.record_subscription(resource_type);
        }
        let state = connection
            .types
            .get_mut(&resource_type)
            .expect("inserted above");
        let must_answer = reply == Reply::Initial || subscription_changed;
        if must_answer || state.dirty {
            Self::push_type(
                connection,
                resource_type,
                &current(contexts),
                must_answer,
                outbox,
            )
            .await?;
        }
        Ok(())
    }

    /// Sends the proxy's current resources of one type, unless a response is
    /// awaiting its answer (then the push is merged into the next) or nothing
    /// changed and no answer is owed.
    async fn push_type(
        connection: &mut Connection,
        resource_type: ResourceType,
        context: &PushContext,
        must_answer: bool,
        outbox: &Outbox,
    ) -> Result<(), ()> {
        let started = Instant::now();
        let Some(PushPlan {
            must_answer,
            resources,
        }) = connection.plan_push(resource_type, context, must_answer)
        else {
            return Ok(());
        };
        let version = combined_version(&resources);
        let state = connection
            .types
            .get_mut(&resource_type)
            .expect("present above");
        if !must_answer && version == state.sent_version {
            state.dirty = false;
            return Ok(());
        }
        let nonce = connection.next_nonce();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            type_url: resource_type.type_url().to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        outbox.send(Ok(response)).await.map_err(|_| ())?;
        connection.record_sent(resource_type, &nonce, &version, context, started);
        if resource_type == ResourceType::Cluster {
            connection.clusters_sent(resources.iter().map(|r| r.name.as_str()));
        }
        Ok(())
    }
}
