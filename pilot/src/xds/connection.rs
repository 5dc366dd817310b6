//! Per-stream state shared by the state-of-the-world and delta protocols: the
//! proxy, what it subscribed to, what was sent and whether it was
//! acknowledged. A type with a response in flight is not pushed again; the
//! change is remembered and the newest state goes out once the proxy answers,
//! so pushes to a slow proxy merge instead of queueing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::generator::{EncodedResource, Generated, Subscription, generate_for_view, view_key};
use super::metrics::XdsMetrics;
use super::push_context::{PushContext, PushTrigger};
use super::resource_type::ResourceType;
use super::sync_status::{Nack, ProxySyncHandle, SyncStatus, now_millis};
use crate::model::Proxy;
use crate::translate::names::parse_cluster_name;

/// Everything the streams share: metrics, sync status, and the server's
/// shutdown signal.
#[derive(Debug, Clone)]
pub struct StreamShared {
    pub metrics: XdsMetrics,
    pub sync_status: SyncStatus,
    pub shutdown: CancellationToken,
}

/// State of one resource type on one stream.
#[derive(Debug)]
pub struct TypeState {
    pub subscription: Subscription,
    /// Name → version of every resource the proxy was last sent (delta), or
    /// the set last sent (state of the world).
    pub sent: BTreeMap<String, String>,
    /// State of the world, endpoints: the assignments last sent, in name
    /// order, so a push can leave out those that did not change.
    pub sent_endpoints: Vec<Arc<EncodedResource>>,
    pub sent_version: String,
    /// Nonce of the latest response sent.
    pub last_nonce: String,
    /// Nonce of the response awaiting ACK/NACK.
    pub pending_nonce: Option<String>,
    /// When the change behind the pending response first happened.
    pub pending_changed_at: Option<Instant>,
    /// A push was held back while a response was pending.
    pub dirty: bool,
    /// The next push must go out even if nothing changed (EDS after a CDS
    /// update: Envoy keeps an updated cluster warming until it hears its
    /// endpoints again).
    pub force_resend: bool,
}

impl TypeState {
    pub fn new(subscription: Subscription) -> TypeState {
        TypeState {
            subscription,
            sent: BTreeMap::new(),
            sent_endpoints: Vec::new(),
            sent_version: String::new(),
            last_nonce: String::new(),
            pending_nonce: None,
            pending_changed_at: None,
            dirty: false,
            force_resend: false,
        }
    }
}

/// The resources a push would send, and whether it must go out even if
/// nothing changed.
pub struct PushPlan {
    pub must_answer: bool,
    pub resources: Generated,
}

/// What a proxy said about a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// No response was acknowledged (the first request of a type).
    Initial,
    Ack,
    Nack(String),
    /// Refers to the latest response, already answered: a change of
    /// subscription, not an acknowledgement.
    Update,
    /// Answers a response that is no longer the latest; ignored.
    Stale,
}

/// One proxy's stream.
pub struct Connection {
    pub proxy: Proxy,
    pub types: HashMap<ResourceType, TypeState>,
    pub shared: StreamShared,
    /// The proxy's view key at the last push context it followed.
    followed_view: Option<String>,
    /// The view key under one push context (by version), worked out once.
    view: Option<(u64, String)>,
    nonce_counter: u64,
    /// This stream's entry in the shared sync status.
    sync: ProxySyncHandle,
}

impl Connection {
    pub fn open(proxy: Proxy, shared: StreamShared, protocol: &'static str) -> Connection {
        let sync = shared.sync_status.connect(&proxy, protocol);
        shared.metrics.connected.inc();
        tracing::info!(proxy = %proxy.id, protocol, "proxy connected");
        Connection {
            proxy,
            types: HashMap::new(),
            shared,
            followed_view: None,
            view: None,
            nonce_counter: 0,
            sync,
        }
    }

    pub fn next_nonce(&mut self) -> String {
        self.nonce_counter += 1;
        format!("{:x}", self.nonce_counter)
    }

    /// Classifies a request's `response_nonce`/`error_detail` and records an
    /// ACK or NACK. `version` is what the proxy says it runs.
    pub fn record_reply(
        &mut self,
        resource_type: ResourceType,
        nonce: &str,
        version: &str,
        error: Option<String>,
    ) -> Reply {
        if nonce.is_empty() {
            return Reply::Initial;
        }
        let Some(state) = self.types.get_mut(&resource_type) else {
            return Reply::Stale;
        };
        if state.last_nonce != nonce {
            return Reply::Stale;
        }
        if state.pending_nonce.as_deref() != Some(nonce) {
            return Reply::Update;
        }
        state.pending_nonce = None;
        let changed_at = state.pending_changed_at.take();
        // Delta requests carry no version; the ACK is for what was sent.
        let version = if version.is_empty() {
            state.sent_version.clone()
        } else {
            version.to_string()
        };
        let type_url = resource_type.type_url();
        match error {
            Some(error) => {
                tracing::warn!(proxy = %self.proxy.id, r#type = resource_type.short_name(), %error, "proxy rejected config (NACK); it keeps its last accepted config");
                self.shared.metrics.record_reject(resource_type);
                let nack = Nack {
                    version: state.sent_version.clone(),
                    nonce: nonce.to_string(),
                    error: error.clone(),
                    at: now_millis(),
                };
                self.sync.update(type_url, |s| s.last_nack = Some(nack));
                Reply::Nack(error)
            }
            None => {
                if let Some(changed_at) = changed_at {
                    self.shared
                        .metrics
                        .convergence_time
                        .observe(changed_at.elapsed().as_secs_f64());
                }
                self.sync.update(type_url, |s| {
                    s.acked_version = version;
                    s.acked_at = Some(now_millis());
                });
                Reply::Ack
            }
        }
    }

    /// What to push for a type: `None` when the proxy did not subscribe to it,
    /// or when a response is still unanswered (the push is then remembered
    /// and merged into the next one).
    pub fn plan_push(
        &mut self,
        resource_type: ResourceType,
        context: &PushContext,
        must_answer: bool,
    ) -> Option<PushPlan> {
        let state = self.types.get_mut(&resource_type)?;
        if state.pending_nonce.is_some() {
            state.dirty = true;
            return None;
        }
        let view = view_under(&mut self.view, &self.proxy, context);
        Some(PushPlan {
            must_answer: must_answer || state.force_resend,
            resources: generate_for_view(
                context,
                &self.proxy,
                view,
                resource_type,
                &state.subscription,
            ),
        })
    }

    /// After clusters were (re)sent, their endpoints must be sent again too.
    pub fn clusters_sent<'n>(&mut self, names: impl Iterator<Item = &'n str>) {
        if let Some(eds) = self.types.get_mut(&ResourceType::Endpoint) {
            for name in names {
                eds.sent.remove(name);
            }
            eds.force_resend = true;
        }
    }

    /// Notes what a proxy subscribes to, for debug pages.
    pub fn record_subscription(&self, resource_type: ResourceType) {
        let names = match self.types.get(&resource_type).map(|s| &s.subscription) {
            Some(Subscription::Names(names)) => names.clone(),
            _ => Default::default(),
        };
        self.sync
            .update(resource_type.type_url(), |s| s.subscribed = names);
    }

    /// Notes a response sent for `resource_type`.
    pub fn record_sent(
        &mut self,
        resource_type: ResourceType,
        nonce: &str,
        version: &str,
        context: &PushContext,
        started: Instant,
    ) {
        if let Some(state) = self.types.get_mut(&resource_type) {
            state.pending_nonce = Some(nonce.to_string());
            state.last_nonce = nonce.to_string();
            state.pending_changed_at = Some(context.changed_at);
            state.sent_version = version.to_string();
            state.dirty = false;
            state.force_resend = false;
        }
        self.shared
            .metrics
            .record_push(resource_type, started.elapsed().as_secs_f64());
        let (nonce, version) = (nonce.to_string(), version.to_string());
        self.sync.update(resource_type.type_url(), |s| {
            s.sent_nonce = nonce;
            s.sent_version = version;
            s.sent_at = Some(now_millis());
        });
    }

    /// Which subscribed types a new push context may change for this proxy:
    /// every type on a config change, only EDS of affected clusters on an
    /// endpoint change -- unless the endpoint change changed the proxy's own
    /// view (a WorkloadEntry with a sidecar's IP came or went, so its inbound
    /// ports did), which regenerates every type for it.
    pub fn types_affected_by(&mut self, context: &PushContext) -> Vec<ResourceType> {
        let view = view_under(&mut self.view, &self.proxy, context).to_string();
        let view_changed = self.followed_view.as_ref() != Some(&view);
        self.followed_view = Some(view);
        ResourceType::PUSH_ORDER
            .into_iter()
            .filter(|t| self.types.contains_key(t))
            .filter(|t| match &context.trigger {
                PushTrigger::Initial | PushTrigger::Config => true,
                PushTrigger::Endpoints(_) if view_changed => true,
                PushTrigger::Endpoints(hosts) => {
                    *t == ResourceType::Endpoint && self.watches_any_host(hosts)
                }
            })
            .collect()
    }

    fn watches_any_host(&self, hosts: &std::collections::BTreeSet<String>) -> bool {
        let Some(state) = self.types.get(&ResourceType::Endpoint) else {
            return false;
        };
        match &state.subscription {
            Subscription::Wildcard => true,
            Subscription::Names(names) => names
                .iter()
                .any(|name| parse_cluster_name(name).is_some_and(|key| hosts.contains(key.host))),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.metrics.connected.dec();
        tracing::info!(proxy = %self.proxy.id, "proxy disconnected");
    }
}

/// The proxy's view key under `context`, from `cache` when it was worked out
/// for this push context already: a sidecar's key depends on the snapshot,
/// and every resource type of a push asks for it.
fn view_under<'a>(
    cache: &'a mut Option<(u64, String)>,
    proxy: &Proxy,
    context: &PushContext,
) -> &'a str {
    let fresh = cache
        .as_ref()
        .is_some_and(|(version, _)| *version == context.version);
    if !fresh {
        *cache = Some((context.version, view_key(&context.snapshot, proxy)));
    }
    cache
        .as_ref()
        .map(|(_, key)| key.as_str())
        .unwrap_or_default()
}

/// The newest push context, for code that holds a watch receiver.
pub fn current(contexts: &tokio::sync::watch::Receiver<Arc<PushContext>>) -> Arc<PushContext> {
    contexts.borrow().clone()
}
