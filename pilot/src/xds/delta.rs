//! Incremental ADS (`DeltaAggregatedResources`): each response carries only
//! the resources that changed since the proxy last heard, plus the names of
//! those removed.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::connection::{Connection, PushPlan, Reply, TypeState, current};
use super::generator::{EncodedResource, Subscription};
use super::push_context::PushContext;
use super::resource_type::ResourceType;
use super::stream::XdsProtocol;
use super::wire::{WireMessage, string_field_len};

type Outbox = super::stream::Outbox<WireMessage>;

// Field numbers of envoy.service.discovery.v3.DeltaDiscoveryResponse.
const SYSTEM_VERSION_INFO: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const REMOVED_RESOURCES: u32 = 6;
// ... and of envoy.service.discovery.v3.Resource (its `resource` is field 2,
// as in EncodedResource::entry).
const RESOURCE_VERSION: u32 = 1;
const RESOURCE_NAME: u32 = 3;

/// The incremental protocol.
pub struct Delta;

impl XdsProtocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = WireMessage;
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
        let changed: Vec<&Arc<EncodedResource>> = resources
            .resources()
            .iter()
            .filter(|r| state.sent.get(&r.name) != Some(&r.version))
            .collect();
        let removed: Vec<String> = state
            .sent
            .keys()
            .filter(|name| !resources.resources().iter().any(|r| &r.name == *name))
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
        let response = encode_response(&changed, &removed, &version, resource_type, &nonce);
        outbox.send(Ok(response)).await.map_err(|_| ())?;
        connection.record_sent(resource_type, &nonce, &version, context, started);
        if resource_type == ResourceType::Cluster {
            let sent: Vec<String> = changed_names;
            connection.clusters_sent(sent.iter().map(String::as_str));
        }
        Ok(())
    }
}

/// A `DeltaDiscoveryResponse`: each changed resource as a `Resource` of its
/// name and version around its shared entry, then the removed names and this
/// response's own version, type and nonce.
fn encode_response(
    changed: &[&Arc<EncodedResource>],
    removed: &[String],
    version: &str,
    resource_type: ResourceType,
    nonce: &str,
) -> WireMessage {
    let mut response = WireMessage::new();
    for resource in changed {
        let len = string_field_len(RESOURCE_VERSION, &resource.version)
            + string_field_len(RESOURCE_NAME, &resource.name)
            + resource.entry().len();
        response.push_len_prefix(RESOURCES, len);
        response.push_string(RESOURCE_VERSION, &resource.version);
        response.push_string(RESOURCE_NAME, &resource.name);
        response.push_encoded(resource.entry());
    }
    for name in removed {
        response.push_string(REMOVED_RESOURCES, name);
    }
    response.push_string(SYSTEM_VERSION_INFO, version);
    response.push_string(TYPE_URL, resource_type.type_url());
    response.push_string(NONCE, nonce);
    response
}

/// Applies `resource_names_subscribe`/`_unsubscribe`; returns whether the set changed.
fn apply_subscription_change(state: &mut TypeState, request: &DeltaDiscoveryRequest) -> bool {
    let Subscription::Names(subscribed) = &mut state.subscription else {
        return false; // wildcard types get everything
    };
    let names = Arc::make_mut(subscribed);
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
