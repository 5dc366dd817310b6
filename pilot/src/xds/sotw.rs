//! State-of-the-world ADS (`StreamAggregatedResources`): every response
//! carries the complete set of the type the proxy subscribed to.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::connection::{Connection, PushPlan, Reply, TypeState, current};
use super::generator::{EncodedResource, Generated, Subscription};
use super::push_context::PushContext;
use super::resource_type::ResourceType;
use super::stream::XdsProtocol;
use super::wire::WireMessage;

type Outbox = super::stream::Outbox<WireMessage>;

// Field numbers of envoy.service.discovery.v3.DiscoveryResponse.
const VERSION_INFO: u32 = 1;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;

/// The state-of-the-world protocol.
pub struct Sotw;

impl XdsProtocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = WireMessage;
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
        let (subscription_changed, first_of_type) = match connection.types.get(&resource_type) {
            Some(state) => (
                !state.subscription.is_exactly(&request.resource_names),
                false,
            ),
            None => (false, true),
        };
        if subscription_changed || first_of_type {
            let subscription = Subscription::requested(resource_type, request.resource_names);
            match connection.types.get_mut(&resource_type) {
                Some(state) => state.subscription = subscription,
                None => {
                    connection
                        .types
                        .insert(resource_type, TypeState::new(subscription));
                }
            }
        }
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
        let version = resources.version();
        let state = connection
            .types
            .get_mut(&resource_type)
            .expect("present above");
        if !must_answer && version == state.sent_version {
            state.dirty = false;
            return Ok(());
        }
        let resources = if resource_type == ResourceType::Endpoint {
            endpoints_to_send(state, resources, must_answer)
        } else {
            resources
        };
        let nonce = connection.next_nonce();
        let response = encode_response(&resources, &version, resource_type, &nonce);
        outbox.send(Ok(response)).await.map_err(|_| ())?;
        connection.record_sent(resource_type, &nonce, &version, context, started);
        if resource_type == ResourceType::Cluster {
            connection.clusters_sent(resources.resources().iter().map(|r| r.name.as_str()));
        }
        Ok(())
    }
}

/// Which endpoint assignments a push carries. Only clusters and listeners
/// must be sent complete in the state-of-the-world protocol; Envoy keeps
/// the assignments a response leaves out. So an endpoint push carries only
/// those that changed since the proxy last heard, and an owed answer (first
/// request, new subscription, clusters re-sent) carries all.
fn endpoints_to_send(state: &mut TypeState, current: Generated, must_answer: bool) -> Generated {
    let current = current.resources().to_vec();
    let changed = if must_answer {
        current.clone()
    } else {
        changed_since(&state.sent_endpoints, &current)
    };
    state.sent_endpoints = current;
    Generated::Named(changed)
}

/// The resources of `current` not in `sent` with the same version; both are
/// in name order (a subscription's order).
fn changed_since(
    sent: &[Arc<EncodedResource>],
    current: &[Arc<EncodedResource>],
) -> Vec<Arc<EncodedResource>> {
    let mut sent = sent.iter().peekable();
    current
        .iter()
        .filter(|resource| {
            while sent.next_if(|s| s.name < resource.name).is_some() {}
            let same = sent
                .next_if(|s| s.name == resource.name)
                .is_some_and(|s| Arc::ptr_eq(s, resource) || s.version == resource.version);
            !same
        })
        .cloned()
        .collect()
}

/// A `DiscoveryResponse`: the shared resource entries, then this response's
/// own version, type and nonce.
fn encode_response(
    resources: &Generated,
    version: &str,
    resource_type: ResourceType,
    nonce: &str,
) -> WireMessage {
    let mut response = WireMessage::new();
    resources.write_entries(&mut response);
    response.push_string(VERSION_INFO, version);
    response.push_string(TYPE_URL, resource_type.type_url());
    response.push_string(NONCE, nonce);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    fn assignment(name: &str, endpoints: usize) -> Arc<EncodedResource> {
        let lb = trireme_proto::envoy::pb::envoy::config::endpoint::v3::LocalityLbEndpoints {
            lb_endpoints: vec![Default::default(); endpoints],
            ..Default::default()
        };
        Arc::new(EncodedResource::new(
            name.to_string(),
            &ClusterLoadAssignment {
                cluster_name: name.to_string(),
                endpoints: vec![lb],
                ..Default::default()
            },
        ))
    }

    fn names(resources: &[Arc<EncodedResource>]) -> Vec<&str> {
        resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn only_new_and_changed_assignments_are_sent() {
        let sent = [assignment("a", 1), assignment("c", 1), assignment("d", 1)];
        let current = [
            assignment("a", 1), // same content, another encoding of it
            assignment("b", 1), // newly subscribed
            assignment("c", 2), // changed
            sent[2].clone(),    // the very same
        ];
        assert_eq!(names(&changed_since(&sent, &current)), ["b", "c"]);
        assert_eq!(names(&changed_since(&[], &current)), ["a", "b", "c", "d"]);
    }

    #[test]
    fn an_owed_answer_carries_every_assignment() {
        let mut state = TypeState::new(Subscription::Names(Default::default()));
        let all = vec![assignment("a", 1), assignment("b", 1)];
        let first = endpoints_to_send(&mut state, Generated::Named(all.clone()), true);
        assert_eq!(names(first.resources()), ["a", "b"]);
        let unchanged = endpoints_to_send(&mut state, Generated::Named(all.clone()), false);
        assert!(unchanged.resources().is_empty());
        let again = endpoints_to_send(&mut state, Generated::Named(all), true);
        assert_eq!(names(again.resources()), ["a", "b"]);
    }
}
