//! A local copy of a bucket, kept current from its [`StateWatch`].

use std::collections::BTreeMap;

use futures::StreamExt;
use tracing::warn;

use crate::{
    error_chain::ErrorChain,
    kv::state_watch::{StateEvent, StateWatch},
};

/// The watch ended before the initial state was complete (the bus connection
/// was closed).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the bucket watch ended before the initial state was loaded")]
pub struct WatchEnded;

/// Every key's current value, as of [`StateMirror::revision`].
///
/// Feed it the events of a [`StateWatch`] with [`StateMirror::apply`], or let
/// [`StateMirror::sync`] load the initial state. Keys are ordered, so listing
/// the mirror (for debug endpoints or the CLI) is stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateMirror<T> {
    entries: BTreeMap<String, T>,
    revision: u64,
    synced: bool,
}

impl<T> Default for StateMirror<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            revision: 0,
            synced: false,
        }
    }
}

impl<T> StateMirror<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event; returns whether the entries changed (so a caller can
    /// skip recomputing anything on a no-op).
    pub fn apply(&mut self, event: StateEvent<T>) -> bool {
        match event {
            StateEvent::Put {
                key,
                value,
                revision,
            } => {
                self.advance(revision);
                self.entries.insert(key, value);
                true
            }
            StateEvent::Delete { key, revision } => {
                self.advance(revision);
                self.entries.remove(&key).is_some()
            }
            StateEvent::Synced { revision } => {
                self.advance(revision);
                self.synced = true;
                false
            }
        }
    }

    /// Applies events from `watch` until the initial state is complete.
    ///
    /// Values that do not decode are logged and skipped: the mirror keeps the
    /// last good value of such a key, if it had one.
    pub async fn sync(&mut self, watch: &mut StateWatch<T>) -> Result<(), WatchEnded> {
        while !self.synced {
            match watch.next().await {
                Some(Ok(event)) => {
                    self.apply(event);
                }
                Some(Err(invalid)) => {
                    warn!(error = %ErrorChain(&invalid), "skipping an invalid bucket value")
                }
                None => return Err(WatchEnded),
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.entries.get(key)
    }

    pub fn entries(&self) -> &BTreeMap<String, T> {
        &self.entries
    }

    pub fn into_entries(self) -> BTreeMap<String, T> {
        self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The revision of the latest event applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether the initial state has been applied in full.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    fn advance(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: i32, revision: u64) -> StateEvent<i32> {
        StateEvent::Put {
            key: key.into(),
            value,
            revision,
        }
    }

    #[test]
    fn follows_puts_deletes_and_sync() {
        let mut mirror = StateMirror::new();
        assert!(mirror.apply(put("a", 1, 1)));
        assert!(mirror.apply(put("b", 2, 2)));
        assert!(!mirror.is_synced());
        assert!(!mirror.apply(StateEvent::Synced { revision: 2 }));
        assert!(mirror.is_synced());
        assert!(mirror.apply(put("a", 3, 3)));
        assert!(mirror.apply(StateEvent::Delete {
            key: "b".into(),
            revision: 4
        }));
        assert_eq!(mirror.entries(), &BTreeMap::from([("a".to_owned(), 3)]));
        assert_eq!(mirror.revision(), 4);
    }

    #[test]
    fn deleting_an_absent_key_is_not_a_change() {
        let mut mirror = StateMirror::<i32>::new();
        assert!(!mirror.apply(StateEvent::Delete {
            key: "x".into(),
            revision: 7
        }));
        assert_eq!(mirror.revision(), 7);
        assert!(mirror.is_empty());
    }
}
