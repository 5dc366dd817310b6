//! The thin layer between the API server and [`KubeIndex`]: one
//! kube-runtime watcher per kind (retrying with its default backoff) feeds
//! a shared index; a publisher turns each settled change into a
//! [`KubeSnapshot`] once every kind has been listed; [`merge`] puts the
//! latest snapshot into each config update sent down the push pipeline.
//! Not tested against an API server (none runs here): the logic it drives
//! is [`KubeIndex`]'s, and [`merge`] is tested on its own.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Kind, KubeIndex, KubeSettings, KubeSnapshot};
use crate::model::ConfigSet;

/// The latest snapshot of the registry; `None` until every kind is listed.
pub type Snapshots = watch::Receiver<Option<Arc<KubeSnapshot>>>;

/// The running registry: its snapshots and its health.
pub struct Registry {
    pub snapshots: Snapshots,
    pub health: watch::Receiver<RegistryHealth>,
}

/// Whether the registry has synced, and which watches are failing now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryHealth {
    pub synced: bool,
    pub services: usize,
    /// The last error of each kind whose watch is failing (cleared by its
    /// next event).
    pub failing: BTreeMap<Kind, String>,
}

impl RegistryHealth {
    /// Ready once synced, and still ready (degraded) while watches fail:
    /// the last state is better than none, as with the bus.
    pub fn describe(&self) -> (bool, String) {
        let failing = self
            .failing
            .iter()
            .map(|(kind, error)| format!("{kind:?}: {error}"))
            .collect::<Vec<_>>()
            .join("; ");
        match (self.synced, failing.is_empty()) {
            (true, true) => (true, format!("synced ({} services)", self.services)),
            (true, false) => (
                true,
                format!("degraded: watches failing ({failing}), serving the last state"),
            ),
            (false, true) => (false, WAITING.to_string()),
            (false, false) => (false, format!("{WAITING}; failing: {failing}")),
        }
    }
}

/// Health detail until every kind is listed.
pub const WAITING: &str =
    "waiting for the first list of Services, EndpointSlices, Pods, Namespaces and Nodes";

/// A kind the registry watches.
pub trait Watched:
    kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    const KIND: Kind;
    /// Whether its objects live in namespaces (and so are filtered by
    /// discovery selectors, and listed again when a namespace joins).
    const NAMESPACED: bool;
    fn apply(index: &mut KubeIndex, event: Event<Self>) -> bool;
}

impl Watched for Service {
    const KIND: Kind = Kind::Service;
    const NAMESPACED: bool = true;
    fn apply(index: &mut KubeIndex, event: Event<Self>) -> bool {
        index.apply_service(event)
    }
}

impl Watched for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    const NAMESPACED: bool = true;
    fn apply(index: &mut KubeIndex, event: Event<Self>) -> bool {
        index.apply_endpoint_slice(event)
    }
}

impl Watched for Pod {
    const KIND: Kind = Kind::Pod;
    const NAMESPACED: bool = true;
    fn apply(index: &mut KubeIndex, event: Event<Self>) -> bool {
        index.apply_pod(event)
    }
}

impl Watched for Namespace {
    const KIND: Kind = Kind::Namespace;
    const NAMESPACED: bool = false;
    fn apply(index: &mut KubeIndex, event: Event<Self>) -> bool {
        index.apply_namespace(event)
    }
}

impl Watched for Node {
    const KIND: Kind = Kind::Node;
    const NAMESPACED: bool = false;
    fn apply(index: &mut KubeIndex, event: Event<Self>) -> bool {
        index.apply_node(event)
    }
}

struct Shared {
    index: Mutex<KubeIndex>,
    changed: Notify,
    /// Bumped when a namespace joins the selection: namespaced kinds
    /// restart their watch (a fresh list) to pick up its objects.
    relists: watch::Sender<u64>,
    health: watch::Sender<RegistryHealth>,
}

impl Shared {
    /// Records whether a kind's watch is failing; true if that changed.
    fn set_failing(&self, kind: Kind, error: Option<String>) {
        self.health.send_if_modified(|health| match error {
            Some(error) => health.failing.insert(kind, error.clone()) != Some(error),
            None => health.failing.remove(&kind).is_some(),
        });
    }
}

/// Starts the watchers and the publisher; they stop on `shutdown`.
pub fn start(client: Client, settings: KubeSettings, shutdown: CancellationToken) -> Registry {
    let shared = Arc::new(Shared {
        index: Mutex::new(KubeIndex::new(settings)),
        changed: Notify::new(),
        relists: watch::Sender::new(0),
        health: watch::Sender::new(RegistryHealth::default()),
    });
    let health = shared.health.subscribe();
    let (sender, snapshots) = watch::channel(None);
    tokio::spawn(follow::<Namespace>(
        client.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(follow::<Node>(
        client.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(follow::<Service>(
        client.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(follow::<EndpointSlice>(
        client.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(follow::<Pod>(client, shared.clone(), shutdown.clone()));
    tokio::spawn(publish(shared, sender, shutdown));
    Registry { snapshots, health }
}

/// Follows one kind across all namespaces until shutdown.
async fn follow<K: Watched>(client: Client, shared: Arc<Shared>, shutdown: CancellationToken) {
    let api: Api<K> = Api::all(client);
    let mut relists = shared.relists.subscribe();
    loop {
        let stream = watcher(api.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(event)) => {
                        shared.set_failing(K::KIND, None);
                        let (changed, relist) = {
                            let mut index = shared.index.lock().unwrap_or_else(|e| e.into_inner());
                            let changed = K::apply(&mut index, event);
                            (changed, index.take_relist_request())
                        };
                        if relist {
                            shared.relists.send_modify(|generation| *generation += 1);
                        }
                        if changed {
                            shared.changed.notify_one();
                        }
                    }
                    Some(Err(error)) => {
                        shared.set_failing(K::KIND, Some(error.to_string()));
                        tracing::warn!(kind = ?K::KIND, %error, "Kubernetes watch failed; retrying with backoff, serving the last state");
                    }
                    None => return,
                },
                Ok(()) = relists.changed(), if K::NAMESPACED => {
                    tracing::info!(kind = ?K::KIND, "a namespace joined the discovery selectors; listing again");
                    break;
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

/// Publishes a snapshot after changes, once every kind is listed; bursts
/// of events make one snapshot.
async fn publish(
    shared: Arc<Shared>,
    sender: watch::Sender<Option<Arc<KubeSnapshot>>>,
    shutdown: CancellationToken,
) {
    let mut announced = false;
    loop {
        tokio::select! {
            _ = shared.changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        let snapshot = {
            let index = shared.index.lock().unwrap_or_else(|e| e.into_inner());
            if !index.is_synced() {
                continue;
            }
            index.snapshot()
        };
        if !announced {
            announced = true;
            tracing::info!(
                services = snapshot.services.len(),
                "Kubernetes registry synced"
            );
        }
        let services = snapshot.services.len();
        shared.health.send_if_modified(|health| {
            let before = (health.synced, health.services);
            (health.synced, health.services) = (true, services);
            before != (true, services)
        });
        if sender.borrow().as_deref() != Some(&snapshot) {
            sender.send_replace(Some(Arc::new(snapshot)));
        }
    }
}

/// Sends each Istio config update from `configs`, and again each new
/// registry snapshot, as one [`ConfigSet`] carrying both; nothing until
/// both a config and a synced snapshot have arrived. Ends when `configs`
/// or `updates` closes; if the registry stops, its last snapshot stays.
pub async fn merge(
    mut configs: mpsc::Receiver<ConfigSet>,
    mut snapshots: Snapshots,
    updates: mpsc::Sender<ConfigSet>,
) {
    let mut config: Option<ConfigSet> = None;
    let mut registry_open = true;
    loop {
        tokio::select! {
            next = configs.recv() => match next {
                Some(next) => config = Some(next),
                None => return,
            },
            changed = snapshots.changed(), if registry_open => {
                if changed.is_err() {
                    registry_open = false;
                    continue;
                }
            }
        }
        let Some(config) = &config else { continue };
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let merged = ConfigSet {
            kubernetes: snapshot,
            ..config.clone()
        };
        if updates.send(merged).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_ready_once_synced_and_stays_ready_while_degraded() {
        let mut health = RegistryHealth::default();
        assert_eq!(health.describe(), (false, WAITING.to_string()));
        health.failing.insert(Kind::Pod, "forbidden".into());
        let (ready, detail) = health.describe();
        assert!(!ready);
        assert!(detail.ends_with("failing: Pod: forbidden"), "{detail}");
        health.synced = true;
        health.services = 3;
        let (ready, detail) = health.describe();
        assert!(ready);
        assert!(
            detail.starts_with("degraded: watches failing (Pod: forbidden)"),
            "{detail}"
        );
        health.failing.clear();
        assert_eq!(health.describe(), (true, "synced (3 services)".to_string()));
    }
}
