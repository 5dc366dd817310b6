//! Incremental ADS (`DeltaAggregatedResources`): each response carries only
//! the resources that changed since the proxy last heard, plus the names of
//! those removed.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::connection::{Connection, PushPlan, Reply, TypeState, current};
use super::generator::Subscription;
use super::push_context::PushContext;
use super::resource_type::ResourceType;
use super::stream::XdsProtocol;

type Outbox = super::stream::Outbox<DeltaDiscoveryResponse>;

/// The incremental protocol.
pub struct Delta;

impl XdsProtocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn node(request: &DeltaDiscoveryRequest) -> Option<&Node> {
        request.node.as_ref()
    }

    async fn handle_request(
        connection: &mut Connection,
        request: DeltaDiscoveryRequest,
        contexts: &watch::Receiver<Arc<PushContext>>,
        outbox: &Outbox,
    ) -> Result<(), ()> {
        let Some(resource_type) = ResourceType::from_type_url(&request.type_url) else {
            tracing::debug!(proxy = %connection.proxy.id, type_url = %request.type_url, "ignoring a delta request for a type pilot does not serve");
            return Ok(());
        };
        let error = request.error_detail.as_ref().map(|e| e.message.clone());
        let reply = connection.record_reply(resource_type, &request.response_nonce, "", error);
        let first_of_type = !connection.types.contains_key(&resource_type);
        let state = connection.types.entry(resource_type).or_insert_with(|| {
            let subscription = if resource_type.is_wildcard() {
                Subscription::Wildcard
            } else {
                Subscription::Names(Default::default())
            };
            let mut state = TypeState::new(subscription);
            // A reconnecting proxy says what it already has; do not send it again.
            state.sent = request
                .initial_resource_versions
                .clone()
                .into_iter()
                .collect();
            state
        });
        let subscription_changed = apply_subscription_change(state, &request);
        let dirty = state.dirty;
        if subscription_changed || first_of_type {
            connection.record_subscription(resource_type);
        }
        if reply == Reply::Stale && !subscription_changed {
            return Ok(());
        }
        let must_answer = first_of_type;
        if must_answer || subscription_changed || dirty {
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

    /// Sends what changed for one type since the proxy last heard.
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
        let state = connection
            .types
            .get_mut(&resource_type)
            .expect("present above");
        let changed: Vec<_> = resources
            .iter()
            .filter(|r| state.sent.get(&r.name) != Some(&r.version))
            .collect();
        let removed: Vec<String> = state
            .sent
            .keys()
            .filter(|name| !resources.iter().any(|r| &r.name == *name))
            .cloned()
            .collect();
        if changed.is_empty() && removed.is_empty() && !must_answer {
            state.dirty = false;
            return Ok(());
        }
        for resource in &changed {
            state
                .sent
                .insert(resource.name.clone(), resource.version.clone());
        }
        for name in &removed {
            state.sent.remove(name);
        }
        let changed_names: Vec<String> = changed.iter().map(|r| r.name.clone()).collect();
        let version = context.system_version();
        let nonce = connection.next_nonce();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: changed
                .iter()
                .map(|r| Resource {
                    name: r.name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: resource_type.type_url().to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..Default::default()
        };
        outbox.send(Ok(response)).await.map_err(|_| ())?;
        connection.record_sent(resource_type, &nonce, &version, context, started);
        if resource_type == ResourceType::Cluster {
            let sent: Vec<String> = changed_names;
            connection.clusters_sent(sent.iter().map(String::as_str));
        }
        Ok(())
    }
}

/// Applies `resource_names_subscribe`/`_unsubscribe`; returns whether the set changed.
fn apply_subscription_change(state: &mut TypeState, request: &DeltaDiscoveryRequest) -> bool {
    let Subscription::Names(names) = &mut state.subscription else {
        return false; // wildcard types get everything
    };
    let mut changed = false;
    for name in &request.resource_names_subscribe {
        changed |= names.insert(name.clone());
    }
    for name in &request.resource_names_unsubscribe {
        changed |= names.remove(name);
        state.sent.remove(name);
    }
    changed
}
