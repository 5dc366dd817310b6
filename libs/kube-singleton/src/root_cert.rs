//! The trust bundle ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in
//! every namespace, as Istio's namespace controller writes it: created where
//! missing, updated when the bundle differs, left alone when equal; new
//! namespaces get it as they appear.
//!
//! The namespace set is followed by every replica (so a new leader knows it at
//! once); only the leader writes. Namespaces come in as [`NamespaceEvent`]s,
//! from [`watch_namespaces`] in a cluster or from a test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::watch;

use crate::Error;
use crate::lease::LeaderHandle;

pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
pub const ROOT_CERT_KEY: &str = "root-cert.pem";
/// Label Istio puts on the ConfigMap.
pub const ISTIO_CONFIG_LABEL: &str = "istio.io/config";

/// Namespaces that never get the ConfigMap (Istio's ignored namespaces).
pub const IGNORED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// A change in the set of namespaces.
#[derive(Debug, Clone, PartialEq)]
pub enum NamespaceEvent {
    /// A namespace was added or changed.
    Applied(Box<Namespace>),
    /// A namespace was deleted.
    Deleted(String),
    /// The complete current set (after a (re)list).
    Relisted(Vec<Namespace>),
}

/// Turns kube-runtime watcher events into [`NamespaceEvent`]s, buffering a
/// relist until it is complete.
#[derive(Debug, Default)]
pub struct NamespaceEventBuffer {
    relist: Option<Vec<Namespace>>,
}

impl NamespaceEventBuffer {
    pub fn push(&mut self, event: watcher::Event<Namespace>) -> Option<NamespaceEvent> {
        match event {
            watcher::Event::Init => {
                self.relist = Some(Vec::new());
                None
            }
            watcher::Event::InitApply(ns) => {
                self.relist.get_or_insert_with(Vec::new).push(ns);
                None
            }
            watcher::Event::InitDone => Some(NamespaceEvent::Relisted(
                self.relist.take().unwrap_or_default(),
            )),
            watcher::Event::Apply(ns) => Some(NamespaceEvent::Applied(Box::new(ns))),
            watcher::Event::Delete(ns) => Some(NamespaceEvent::Deleted(
                ns.metadata.name.unwrap_or_default(),
            )),
        }
    }
}

/// List+watch of all namespaces with kube-runtime's default backoff.
pub fn watch_namespaces(client: kube::Client) -> impl Stream<Item = NamespaceEvent> + Send {
    let mut buffer = NamespaceEventBuffer::default();
    watcher(Api::<Namespace>::all(client), watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let out = match event {
                Ok(event) => buffer.push(event),
                Err(e) => {
                    tracing::warn!(error = %e, "namespace watch failed; retrying");
                    None
                }
            };
            futures::future::ready(out)
        })
}

/// Whether a namespace should hold the ConfigMap: not an ignored one, not
/// being deleted.
pub fn wants_root_cert(ns: &Namespace) -> bool {
    let Some(name) = ns.metadata.name.as_deref() else {
        return false;
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    !IGNORED_NAMESPACES.contains(&name) && !terminating
}

/// The namespaces that should hold the ConfigMap.
#[derive(Debug, Default, Clone)]
pub struct NamespaceSet {
    names: BTreeSet<String>,
}

impl NamespaceSet {
    /// Applies an event; returns the namespaces that newly want the ConfigMap.
    pub fn apply(&mut self, event: NamespaceEvent) -> Vec<String> {
        match event {
            NamespaceEvent::Applied(ns) => {
                let Some(name) = ns.metadata.name.clone() else {
                    return Vec::new();
                };
                if wants_root_cert(&ns) {
                    if self.names.insert(name.clone()) {
                        return vec![name];
                    }
                } else {
                    self.names.remove(&name);
                }
                Vec::new()
            }
            NamespaceEvent::Deleted(name) => {
                self.names.remove(&name);
                Vec::new()
            }
            NamespaceEvent::Relisted(all) => {
                let fresh: BTreeSet<String> = all
                    .iter()
                    .filter(|ns| wants_root_cert(ns))
                    .filter_map(|ns| ns.metadata.name.clone())
                    .collect();
                let added = fresh.difference(&self.names).cloned().collect();
                self.names = fresh;
                added
            }
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }
}

/// What [`ensure_root_cert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigMapAction {
    Created,
    Updated,
    Unchanged,
}

/// The ConfigMap to create in `namespace`.
pub fn root_cert_configmap(namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIGMAP.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                ISTIO_CONFIG_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_string(),
            bundle.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// Makes `istio-ca-root-cert` in `namespace` hold `bundle`: create when
/// missing, merge-patch `data` (conditional on the resourceVersion read) when
/// it differs, nothing when equal. Writes nothing unless `leader` leads.
pub async fn ensure_root_cert(
    client: &kube::Client,
    leader: &LeaderHandle,
    namespace: &str,
    bundle: &str,
) -> Result<ConfigMapAction, Error> {
    let api = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    let current = api.get_opt(ROOT_CERT_CONFIGMAP).await?;
    if let Some(cm) = &current {
        let data = cm.data.as_ref().and_then(|d| d.get(ROOT_CERT_KEY));
        if data.map(String::as_str) == Some(bundle) {
            return Ok(ConfigMapAction::Unchanged);
        }
    }
    if !leader.is_leader() {
        return Err(Error::NotLeader);
    }
    match current {
        None => {
            api.create(
                &PostParams::default(),
                &root_cert_configmap(namespace, bundle),
            )
            .await?;
            Ok(ConfigMapAction::Created)
        }
        Some(cm) => {
            let mut patch = json!({ "data": { ROOT_CERT_KEY: bundle } });
            if let Some(rv) = cm.metadata.resource_version {
                patch["metadata"] = json!({ "resourceVersion": rv });
            }
            api.patch(
                ROOT_CERT_CONFIGMAP,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
            Ok(ConfigMapAction::Updated)
        }
    }
}

/// The ConfigMap singleton.
pub struct RootCertPublisher {
    pub client: kube::Client,
    pub leader: LeaderHandle,
    /// The PEM trust bundle; empty while unknown (nothing is written).
    pub bundle: watch::Receiver<String>,
    /// Retry of failed namespaces.
    pub retry: Duration,
    /// Re-check every namespace this often (repairs edits and deletions).
    pub resync: Duration,
}

impl RootCertPublisher {
    /// Follows `events` (always) and writes (only while leading) until the
    /// event stream ends.
    pub async fn run(mut self, events: impl Stream<Item = NamespaceEvent>) {
        let mut events = std::pin::pin!(events);
        let mut leading = self.leader.subscribe();
        let mut namespaces = NamespaceSet::default();
        let mut pending: BTreeSet<String> = BTreeSet::new();
        let mut resync_at = tokio::time::Instant::now() + self.resync;
        loop {
            let retry_at = if pending.is_empty() {
                resync_at
            } else {
                resync_at.min(tokio::time::Instant::now() + self.retry)
            };
            tokio::select! {
                event = events.next() => match event {
                    Some(event) => pending.extend(namespaces.apply(event)),
                    None => return,
                },
                changed = self.bundle.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending.extend(namespaces.names().cloned());
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending.extend(namespaces.names().cloned());
                }
                () = tokio::time::sleep_until(retry_at) => {
                    if tokio::time::Instant::now() >= resync_at {
                        resync_at = tokio::time::Instant::now() + self.resync;
                        pending.extend(namespaces.names().cloned());
                    }
                }
            }
            let bundle = self.bundle.borrow_and_update().clone();
            if !self.leader.is_leader() || bundle.is_empty() {
                // A new term or bundle re-checks every namespace anyway.
                pending.clear();
                continue;
            }
            pending.retain(|ns| namespaces.contains(ns));
            let mut failed = BTreeSet::new();
            for ns in std::mem::take(&mut pending) {
                match ensure_root_cert(&self.client, &self.leader, &ns, &bundle).await {
                    Ok(action) => tracing::debug!(namespace = %ns, ?action, "istio-ca-root-cert"),
                    Err(e) => {
                        tracing::warn!(namespace = %ns, error = %e, "writing istio-ca-root-cert failed");
                        failed.insert(ns);
                    }
                }
            }
            pending = failed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;

    fn ns(name: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn namespace_set_tracks_adds_deletes_and_relists() {
        let mut set = NamespaceSet::default();
        assert_eq!(
            set.apply(NamespaceEvent::Relisted(vec![
                ns("a"),
                ns("kube-system"),
                ns("b")
            ])),
            vec!["a", "b"]
        );
        assert_eq!(
            set.apply(NamespaceEvent::Applied(Box::new(ns("a")))),
            Vec::<String>::new()
        );
        assert_eq!(
            set.apply(NamespaceEvent::Applied(Box::new(ns("c")))),
            vec!["c"]
        );
        let mut terminating = ns("c");
        terminating.status = Some(NamespaceStatus {
            phase: Some("Terminating".into()),
            ..NamespaceStatus::default()
        });
        assert!(
            set.apply(NamespaceEvent::Applied(Box::new(terminating)))
                .is_empty()
        );
        assert!(!set.contains("c"));
        set.apply(NamespaceEvent::Deleted("b".into()));
        // A relist drops what vanished and reports only what is new.
        assert_eq!(
            set.apply(NamespaceEvent::Relisted(vec![ns("a"), ns("d")])),
            vec!["d"]
        );
        assert_eq!(set.names().collect::<Vec<_>>(), vec!["a", "d"]);
    }

    #[test]
    fn watcher_events_become_namespace_events() {
        let mut buf = NamespaceEventBuffer::default();
        assert_eq!(buf.push(watcher::Event::Init), None);
        assert_eq!(buf.push(watcher::Event::InitApply(ns("a"))), None);
        assert_eq!(buf.push(watcher::Event::InitApply(ns("b"))), None);
        assert_eq!(
            buf.push(watcher::Event::InitDone),
            Some(NamespaceEvent::Relisted(vec![ns("a"), ns("b")]))
        );
        assert_eq!(
            buf.push(watcher::Event::Apply(ns("c"))),
            Some(NamespaceEvent::Applied(Box::new(ns("c"))))
        );
        assert_eq!(
            buf.push(watcher::Event::Delete(ns("c"))),
            Some(NamespaceEvent::Deleted("c".into()))
        );
    }
}
