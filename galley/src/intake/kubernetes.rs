//! Istio resources from the Kubernetes API server: the events of one watch
//! per Istio kind (kube-runtime's watcher: a relist is `Init`, `InitApply`
//! for each object, `InitDone`; then `Apply` and `Delete`), turned into
//! judged documents for [`reconcile`](super::reconcile).
//!
//! An object that does not read as its kind (a field this galley does not
//! know, a wrong type) is judged rejected under its key, so the last valid
//! version stays published; the watch goes on. What the API server adds to
//! an object (`status`, `resourceVersion`, `managedFields`) is dropped
//! before judging, so an object publishes exactly what the same manifest in
//! `--config-dir` would, and galley's own status writes do not republish it.
//!
//! [`KubernetesIntake`] holds one [`KubernetesSource`] per kind and says
//! when every kind has been listed (publishing earlier would delete what a
//! kind not yet listed had published). The watchers themselves are in
//! [`super::kube_watch`].

use std::collections::{BTreeMap, BTreeSet};

use mesh_config::store::{DEFAULT_NAMESPACE, resource_key};
use mesh_config::{Kind, parse_documents};

use super::directory::judge;
use super::reconcile::{Judged, ScannedDocument};
use super::status::StatusTarget;

/// One event of a watch, its objects as the API server sends them (JSON).
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// A relist starts: what follows until `InitDone` is the whole set.
    Init,
    InitApply(serde_json::Value),
    InitDone,
    Apply(serde_json::Value),
    Delete(serde_json::Value),
}

/// One watched object: its judgement, and where its status is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub document: ScannedDocument,
    pub target: StatusTarget,
}

/// The current objects of one watch (one CRD version), judged; the
/// intake publishes the documents of all its watches together.
#[derive(Debug, Default)]
pub struct KubernetesSource {
    objects: BTreeMap<String, Observed>,
    /// Objects of a relist in progress; they replace `objects` when it is
    /// done.
    relisting: Option<BTreeMap<String, Observed>>,
}

impl KubernetesSource {
    /// Applies one event; true when the set of objects is complete and may
    /// have changed (publish then).
    pub fn apply(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            WatchEvent::InitApply(object) => {
                if let Some((key, document)) = read_object(&object) {
                    self.relisting
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key, document);
                }
                false
            }
            WatchEvent::InitDone => {
                self.objects = self.relisting.take().unwrap_or_default();
                true
            }
            WatchEvent::Apply(object) => match read_object(&object) {
                Some((key, document)) => {
                    self.objects.insert(key, document);
                    self.relisting.is_none()
                }
                None => false,
            },
            WatchEvent::Delete(object) => match object_key(&object) {
                Some(key) => self.objects.remove(&key).is_some() && self.relisting.is_none(),
                None => false,
            },
        }
    }

    /// Every current object, judged, for [`super::Publisher::publish`].
    pub fn documents(&self) -> Vec<ScannedDocument> {
        self.objects
            .values()
            .map(|observed| observed.document.clone())
            .collect()
    }

    /// Every current object, by key.
    pub fn objects(&self) -> &BTreeMap<String, Observed> {
        &self.objects
    }

    /// Remembers that the object under `key` now has `status` (written by
    /// galley; the watch will confirm it).
    pub fn set_status(&mut self, key: &str, status: serde_json::Value) {
        if let Some(observed) = self.objects.get_mut(key) {
            observed.target.status = status;
        }
    }
}

/// Every Istio kind's watch, together.
#[derive(Debug)]
pub struct KubernetesIntake {
    sources: BTreeMap<Kind, KubernetesSource>,
    /// Kinds listed at least once.
    listed: BTreeSet<Kind>,
}

impl KubernetesIntake {
    /// An intake of `kinds`, none listed yet.
    pub fn new(kinds: impl IntoIterator<Item = Kind>) -> KubernetesIntake {
        KubernetesIntake {
            sources: kinds
                .into_iter()
                .map(|kind| (kind, KubernetesSource::default()))
                .collect(),
            listed: BTreeSet::new(),
        }
    }

    /// Applies one event of `kind`'s watch; true when the objects may have
    /// changed (publish once [`synced`](Self::synced)).
    pub fn apply(&mut self, kind: Kind, event: WatchEvent) -> bool {
        if matches!(event, WatchEvent::InitDone) {
            self.listed.insert(kind);
        }
        self.sources.entry(kind).or_default().apply(event)
    }

    /// Whether every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.sources.keys().all(|kind| self.listed.contains(kind))
    }

    /// Kinds not listed yet.
    pub fn unlisted(&self) -> Vec<Kind> {
        self.sources
            .keys()
            .filter(|kind| !self.listed.contains(kind))
            .copied()
            .collect()
    }

    /// Every current object of every kind, judged.
    pub fn documents(&self) -> Vec<ScannedDocument> {
        self.sources
            .values()
            .flat_map(KubernetesSource::documents)
            .collect()
    }

    /// Every current object of every kind, with its kind.
    pub fn objects(&self) -> impl Iterator<Item = (Kind, &String, &Observed)> {
        self.sources
            .iter()
            .flat_map(|(kind, source)| source.objects().iter().map(move |(k, o)| (*kind, k, o)))
    }

    /// See [`KubernetesSource::set_status`].
    pub fn set_status(&mut self, kind: Kind, key: &str, status: serde_json::Value) {
        if let Some(source) = self.sources.get_mut(&kind) {
            source.set_status(key, status);
        }
    }
}

/// What the API server adds to an object that is not part of its config:
/// removed before judging and publishing.
const SERVER_FIELDS: &[&str] = &["resourceVersion", "managedFields", "selfLink"];

/// The object as its manifest would be: without `status` and the
/// server's bookkeeping in `metadata` (it keeps `uid`, `generation` and
/// `creationTimestamp`, which pilot orders conflicting resources by).
pub fn without_server_fields(object: &serde_json::Value) -> serde_json::Value {
    let mut object = object.clone();
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
    }
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for field in SERVER_FIELDS {
            metadata.remove(*field);
        }
    }
    object
}

/// The object's key and what is known of it; `None` (logged) when the
/// object does not even say which resource it is.
fn read_object(object: &serde_json::Value) -> Option<(String, Observed)> {
    let (key, document) = judge_object(&without_server_fields(object))?;
    let target = StatusTarget::of(object)?;
    Some((key, Observed { document, target }))
}

/// The object's key and its judgement.
fn judge_object(object: &serde_json::Value) -> Option<(String, ScannedDocument)> {
    let Some(key) = object_key(object) else {
        tracing::warn!(object = %truncated(object), "skipping a watched object without kind, name or a known apiVersion");
        return None;
    };
    let judged = match parse_documents(&format!("k8s:{key}"), &object.to_string()).pop() {
        Some(Ok(parsed)) => judge(&parsed.resource),
        Some(Err(error)) => {
            tracing::warn!(%key, %error, "a watched object does not read as its kind; its last valid version stays");
            Judged::Rejected {
                key: key.clone(),
                errors: vec![error.to_string()],
                warnings: Vec::new(),
            }
        }
        None => return None,
    };
    let document = ScannedDocument::from_kubernetes(&key, judged);
    Some((key, document))
}

/// `<Kind>/<namespace>/<name>` from the object's own fields.
fn object_key(object: &serde_json::Value) -> Option<String> {
    let api_version = object["apiVersion"].as_str()?;
    let kind = Kind::resolve(api_version, object["kind"].as_str()?).ok()?;
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().filter(|name| !name.is_empty())?;
    let namespace = metadata["namespace"]
        .as_str()
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    Some(resource_key(kind, namespace, name))
}

fn truncated(object: &serde_json::Value) -> String {
    let mut text = object.to_string();
    text.truncate(200);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn virtual_service(name: &str, weight: i64) -> serde_json::Value {
        json!({
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": "7", "uid": "u-1"},
            "spec": {"hosts": ["catalog"], "http": [{"route": [
                {"destination": {"host": "catalog"}, "weight": weight}
            ]}]}
        })
    }

    fn verdicts(source: &KubernetesSource) -> Vec<(String, bool)> {
        source
            .documents()
            .iter()
            .map(|document| match &document.judged {
                Judged::Accepted { key, .. } => (key.clone(), true),
                Judged::Rejected { key, .. } => (key.clone(), false),
                Judged::Unreadable { .. } => ("?".into(), false),
            })
            .collect()
    }

    #[test]
    fn a_relist_replaces_the_objects_once_done() {
        let mut source = KubernetesSource::default();
        assert!(!source.apply(WatchEvent::Init));
        assert!(!source.apply(WatchEvent::InitApply(virtual_service("a", 100))));
        assert!(source.apply(WatchEvent::InitDone));
        assert_eq!(verdicts(&source), [("VirtualService/shop/a".into(), true)]);

        // A relist without `a` (deleted while the watch was down) drops it.
        source.apply(WatchEvent::Init);
        source.apply(WatchEvent::InitApply(virtual_service("b", 100)));
        assert_eq!(
            verdicts(&source).len(),
            1,
            "unchanged until the relist is done"
        );
        assert!(source.apply(WatchEvent::InitDone));
        assert_eq!(verdicts(&source), [("VirtualService/shop/b".into(), true)]);
    }

    #[test]
    fn applies_and_deletes_follow_the_relist() {
        let mut source = KubernetesSource::default();
        source.apply(WatchEvent::Init);
        source.apply(WatchEvent::InitDone);
        assert!(source.apply(WatchEvent::Apply(virtual_service("a", 100))));
        assert!(source.apply(WatchEvent::Delete(virtual_service("a", 100))));
        assert!(source.documents().is_empty());
        assert!(!source.apply(WatchEvent::Delete(virtual_service("zzz", 1))));
    }

    #[test]
    fn an_object_that_does_not_read_is_rejected_under_its_key_and_the_watch_goes_on() {
        let mut source = KubernetesSource::default();
        let mut unknown_field = virtual_service("a", 100);
        unknown_field["spec"]["notAField"] = json!(1);
        assert!(source.apply(WatchEvent::Apply(unknown_field)));
        assert_eq!(verdicts(&source), [("VirtualService/shop/a".into(), false)]);

        // Nothing to key it by: skipped.
        assert!(!source.apply(WatchEvent::Apply(json!({"kind": "VirtualService"}))));
        assert!(source.apply(WatchEvent::Apply(virtual_service("b", -1))));
        assert_eq!(
            verdicts(&source),
            [
                ("VirtualService/shop/a".into(), false),
                ("VirtualService/shop/b".into(), false)
            ]
        );
    }
}
