//! Config from the bus: galley's bucket of accepted resources
//! ([`mesh_config::store::CONFIG_BUCKET`]), read whole first and then change
//! by change, in revision order. Every replica reading the same bucket sees
//! the same state at the same revision, so they serve the same config.
//!
//! The watch survives NATS outages on its own (it resumes where it
//! stopped); meanwhile pilot keeps serving the last state it had.

use std::collections::BTreeMap;

use event_bus::{BucketConfig, Bus, KvBucket, StateEvent, StateWatch};
use futures::StreamExt;
use mesh_config::AnyResource;
use mesh_config::store::CONFIG_BUCKET;
use tokio::sync::mpsc;

use crate::model::ConfigSet;

/// The resources of the bucket as of one revision.
#[derive(Debug, Default)]
pub struct BusState {
    resources: BTreeMap<String, AnyResource>,
    revision: u64,
    synced: bool,
}

impl BusState {
    /// Applies one bucket event; true when the config it describes changed
    /// and is complete (after the initial load).
    pub fn apply(&mut self, event: StateEvent<serde_json::Value>) -> bool {
        match event {
            StateEvent::Put {
                key,
                value,
                revision,
            } => {
                self.revision = revision;
                match parse_entry(&key, &value) {
                    Ok(resource) => {
                        self.resources.insert(key, resource);
                    }
                    Err(error) => {
                        // galley validated it; a newer galley may know
                        // fields this pilot does not. Keep the last value.
                        tracing::warn!(%key, %error, "skipping a config entry this pilot cannot read");
                        return false;
                    }
                }
            }
            StateEvent::Delete { key, revision } => {
                self.revision = revision;
                if self.resources.remove(&key).is_none() {
                    return false;
                }
            }
            StateEvent::Synced { revision } => {
                self.revision = self.revision.max(revision);
                self.synced = true;
                return true;
            }
        }
        self.synced
    }

    /// The bucket revision the state is at: the config version.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn config(&self) -> ConfigSet {
        ConfigSet {
            revision: Some(self.revision),
            ..ConfigSet::from_resources(self.resources.values().cloned())
        }
    }
}

/// One bucket value read as the Istio resource it holds, strictly.
fn parse_entry(key: &str, value: &serde_json::Value) -> Result<AnyResource, String> {
    let mut parsed = mesh_config::parse_documents(&format!("bus:{key}"), &value.to_string());
    match (parsed.pop(), parsed.is_empty()) {
        (Some(Ok(parsed)), true) => Ok(parsed.resource),
        (Some(Err(error)), true) => Err(error.to_string()),
        _ => Err("the value is not one resource".to_string()),
    }
}

/// Opens the config bucket (galley may not have made it yet).
pub async fn open_bucket(bus: &Bus) -> Result<KvBucket<serde_json::Value>, event_bus::KvError> {
    bus.kv_bucket(BucketConfig::new(CONFIG_BUCKET)).await
}

/// Sends a [`ConfigSet`] on every change of the bucket, once its initial
/// state has loaded; returns when `updates` closes or the bus does.
pub async fn follow(mut watch: StateWatch<serde_json::Value>, updates: mpsc::Sender<ConfigSet>) {
    let mut state = BusState::default();
    while let Some(event) = watch.next().await {
        let event = match event {
            Ok(event) => event,
            Err(invalid) => {
                tracing::warn!(error = %invalid, "skipping a config entry that is not JSON");
                continue;
            }
        };
        if !state.apply(event) {
            continue;
        }
        let config = state.config();
        tracing::info!(
            revision = state.revision(),
            resources = state.resources.len(),
            "config from the bus"
        );
        if updates.send(config).await.is_err() {
            return;
        }
    }
    tracing::warn!("the config watch ended: the bus connection closed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put(key: &str, value: serde_json::Value, revision: u64) -> StateEvent<serde_json::Value> {
        StateEvent::Put {
            key: key.into(),
            value,
            revision,
        }
    }

    fn virtual_service(name: &str) -> serde_json::Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"hosts": ["catalog"], "http": [{"route": [{"destination": {"host": "catalog"}}]}]}
        })
    }

    #[test]
    fn nothing_is_served_before_the_initial_state_is_complete() {
        let mut state = BusState::default();
        assert!(!state.apply(put("VirtualService/shop/a", virtual_service("a"), 1)));
        assert!(!state.apply(put("VirtualService/shop/b", virtual_service("b"), 2)));
        assert!(state.apply(StateEvent::Synced { revision: 2 }));
        assert_eq!(state.config().virtual_services.len(), 2);
        assert_eq!(state.config().revision, Some(2));

        assert!(state.apply(StateEvent::Delete {
            key: "VirtualService/shop/a".into(),
            revision: 3
        }));
        assert_eq!(state.config().virtual_services.len(), 1);
        assert_eq!(state.revision(), 3);
    }

    #[test]
    fn an_unreadable_entry_keeps_the_last_good_value() {
        let mut state = BusState::default();
        state.apply(put("VirtualService/shop/a", virtual_service("a"), 1));
        state.apply(StateEvent::Synced { revision: 1 });
        let mut broken = virtual_service("a");
        broken["spec"]["notAField"] = json!(true);
        assert!(!state.apply(put("VirtualService/shop/a", broken, 2)));
        assert_eq!(state.config().virtual_services.len(), 1);
        // Deleting an unknown key changes nothing.
        assert!(!state.apply(StateEvent::Delete {
            key: "VirtualService/shop/zzz".into(),
            revision: 3
        }));
    }
}
