//! A typed handle on one JetStream key-value bucket.

use std::{marker::PhantomData, time::Duration};

use async_nats::jetstream::{
    self,
    kv::{CreateErrorKind, Operation, UpdateErrorKind},
    stream::StorageType,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::warn;

use crate::{
    BoxError, Bus,
    error_chain::ErrorChain,
    kv::{
        codec::{self, InvalidEntry},
        state_watch::{self, StateWatch},
    },
};

/// How a bucket is created when it does not exist yet.
///
/// Values always go to file storage: the bus is where a restarted service
/// reads its state back, so a restarted server must not lose it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// Bucket name: letters, digits, `-` and `_`.
    pub name: String,
    pub description: String,
    /// Revisions kept per key (1 to 64). Readers of the current state need
    /// only 1; more helps operators see what changed.
    pub history: i64,
    /// When set, a value expires this long after it was written (e.g. a
    /// per-replica status that must vanish with its replica), and watchers see
    /// the expiry as a delete.
    pub max_age: Option<Duration>,
    /// Copies kept in a NATS cluster.
    pub replicas: usize,
}

impl BucketConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            history: 1,
            max_age: None,
            replicas: 1,
        }
    }

    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub fn with_history(mut self, history: i64) -> Self {
        self.history = history;
        self
    }

    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    fn to_nats(&self) -> jetstream::kv::Config {
        jetstream::kv::Config {
            bucket: self.name.clone(),
            description: self.description.clone(),
            history: self.history,
            max_age: self.max_age.unwrap_or_default(),
            storage: StorageType::File,
            num_replicas: self.replicas,
            // Without limit markers an expired value silently disappears and a
            // watcher never learns it is gone. With them the server writes a
            // delete marker, kept as long as the values themselves so that a
            // watcher resuming after an outage still finds it. (The server
            // refuses marker lifetimes under one second.)
            limit_markers: self
                .max_age
                .map(|max_age| max_age.max(Duration::from_secs(1))),
            ..Default::default()
        }
    }
}

/// What the server reports about a bucket, for health checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketStatus {
    pub bucket: String,
    /// Stored messages, counting kept history and delete markers.
    pub values: u64,
    /// The revision of the latest change.
    pub last_revision: u64,
    pub history: i64,
    pub max_age: Option<Duration>,
}

/// A failed key-value operation. Every variant names the bucket (and key).
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("cannot create or open bucket {bucket:?}")]
    Open {
        bucket: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot encode the value for key {key:?} in bucket {bucket:?}")]
    Encode {
        bucket: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    InvalidEntry(#[from] InvalidEntry),
    #[error("cannot write key {key:?} in bucket {bucket:?}")]
    Write {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot read key {key:?} in bucket {bucket:?}")]
    Read {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("cannot delete key {key:?} in bucket {bucket:?}")]
    Delete {
        bucket: String,
        key: String,
        #[source]
        source: BoxError,
    },
    /// A compare-and-set lost: someone else changed the key first.
    #[error("key {key:?} in bucket {bucket:?} is no longer at revision {expected}")]
    RevisionMismatch {
        bucket: String,
        key: String,
        expected: u64,
    },
    #[error("key {key:?} already exists in bucket {bucket:?}")]
    AlreadyExists { bucket: String, key: String },
    #[error("cannot read the status of bucket {bucket:?}")]
    Status {
        bucket: String,
        #[source]
        source: BoxError,
    },
}

/// A key-value bucket whose values are JSON-encoded `T`s.
///
/// Revisions are the bucket's stream sequence numbers: they increase with
/// every change to any key, so they order changes across the whole bucket.
pub struct KvBucket<T> {
    bus: Bus,
    store: jetstream::kv::Store,
    // `fn() -> T`: the handle neither owns nor shares a `T`, so it is Send and
    // Sync whatever `T` is.
    value_type: PhantomData<fn() -> T>,
}

impl<T> Clone for KvBucket<T> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            store: self.store.clone(),
            value_type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for KvBucket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvBucket")
            .field("name", &self.store.name)
            .field("value_type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> KvBucket<T>
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    /// Creates the bucket if it does not exist, or opens it as it is.
    ///
    /// Waits until the bus is connected (wrap it in a timeout if that matters).
    /// Several services and replicas open the same buckets; when the existing
    /// bucket's configuration differs from `config` (another version, or an
    /// operator changed it), it is used unchanged and a warning logged, rather
    /// than services overwriting each other's settings.
    pub async fn open(bus: &Bus, config: BucketConfig) -> Result<Self, KvError> {
        let open_error = |source: BoxError| KvError::Open {
            bucket: config.name.clone(),
            source,
        };
        bus.wait_until_connected()
            .await
            .map_err(|closed| open_error(closed.into()))?;

        let jetstream = bus.jetstream();
        // Creating is idempotent for an identical configuration, so the common
        // case costs one request.
        let store = match jetstream.create_key_value(config.to_nats()).await {
            Ok(store) => store,
            Err(create_error) => match jetstream.get_key_value(&config.name).await {
                Ok(store) => {
                    warn!(
                        bucket = %config.name,
                        error = %ErrorChain(&create_error),
                        "bucket exists with a different configuration; using it as it is"
                    );
                    store
                }
                Err(_) => return Err(open_error(create_error.into())),
            },
        };
        Ok(Self {
            bus: bus.clone(),
            store,
            value_type: PhantomData,
        })
    }

    pub fn name(&self) -> &str {
        &self.store.name
    }

    /// Writes `value` under `key` and returns the new revision.
    pub async fn put(&self, key: &str, value: &T) -> Result<u64, KvError> {
        let payload = self.encode(key, value)?;
        self.store
            .put(key, payload.into())
            .await
            .map_err(|source| self.write_error(key, source.into()))
    }

    /// Writes `value` only if `key` has no value (it may have been deleted).
    pub async fn create(&self, key: &str, value: &T) -> Result<u64, KvError> {
        let payload = self.encode(key, value)?;
        self.store
            .create(key, payload.into())
            .await
            .map_err(|source| match source.kind() {
                CreateErrorKind::AlreadyExists => KvError::AlreadyExists {
                    bucket: self.store.name.clone(),
                    key: key.to_owned(),
                },
                _ => self.write_error(key, source.into()),
            })
    }

    /// Compare-and-set: writes `value` only if the key's latest revision is
    /// still `expected_revision`, and returns the new revision.
    pub async fn update(
        &self,
        key: &str,
        value: &T,
        expected_revision: u64,
    ) -> Result<u64, KvError> {
        let payload = self.encode(key, value)?;
        self.store
            .update(key, payload.into(), expected_revision)
            .await
            .map_err(|source| match source.kind() {
                UpdateErrorKind::WrongLastRevision => KvError::RevisionMismatch {
                    bucket: self.store.name.clone(),
                    key: key.to_owned(),
                    expected: expected_revision,
                },
                _ => self.write_error(key, source.into()),
            })
    }

    /// The current value of `key` and its revision; `None` if the key never
    /// existed or was deleted.
    pub async fn get(&self, key: &str) -> Result<Option<(T, u64)>, KvError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|source| KvError::Read {
                bucket: self.store.name.clone(),
                key: key.to_owned(),
                source: source.into(),
            })?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let value = codec::decode(&self.store.name, key, entry.revision, &entry.value)?;
                Ok(Some((value, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Deletes `key`. Watchers see a [`StateEvent::Delete`](crate::StateEvent).
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store
            .delete(key)
            .await
            .map_err(|source| KvError::Delete {
                bucket: self.store.name.clone(),
                key: key.to_owned(),
                source: source.into(),
            })
    }

    /// Fresh figures from the server.
    pub async fn status(&self) -> Result<BucketStatus, KvError> {
        let info = self
            .store
            .stream
            .get_info()
            .await
            .map_err(|source| KvError::Status {
                bucket: self.store.name.clone(),
                source: source.into(),
            })?;
        Ok(BucketStatus {
            bucket: self.store.name.clone(),
            values: info.state.messages,
            last_revision: info.state.last_sequence,
            history: info.config.max_messages_per_subject,
            max_age: Some(info.config.max_age).filter(|age| !age.is_zero()),
        })
    }

    /// The bucket's whole current state, then every change as it happens.
    /// See [`StateWatch`].
    pub fn watch_state(&self) -> StateWatch<T> {
        state_watch::watch_state(self.bus.clone(), self.store.clone())
    }

    fn encode(&self, key: &str, value: &T) -> Result<Vec<u8>, KvError> {
        codec::encode(value).map_err(|source| KvError::Encode {
            bucket: self.store.name.clone(),
            key: key.to_owned(),
            source,
        })
    }

    fn write_error(&self, key: &str, source: BoxError) -> KvError {
        KvError::Write {
            bucket: self.store.name.clone(),
            key: key.to_owned(),
            source,
        }
    }
}
