//! Trireme's event bus client: how control-plane services share state and
//! signals over NATS.
//!
//! - [`Bus`]: one connection per service, reconnecting with backoff, with its
//!   [`ConnectionState`] observable for health checks and metrics.
//! - [`KvBucket`]: state on the bus, in JetStream key-value buckets with JSON
//!   values. [`KvBucket::watch_state`] reads a bucket as its whole current
//!   state, then [`StateEvent::Synced`], then every change in order, and keeps
//!   doing so across reconnects and server restarts; [`StateMirror`] keeps a
//!   local copy from it.
//! - [`Topic`]: typed fan-out notifications on plain subjects, without
//!   persistence.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use event_bus::{BucketConfig, Bus, StateMirror};
//!
//! let bus = Bus::connect("nats://127.0.0.1:4222", "pilot-0").await?;
//! let bucket = bus.kv_bucket::<String>(BucketConfig::new("config")).await?;
//! let mut watch = bucket.watch_state();
//! let mut mirror = StateMirror::new();
//! mirror.sync(&mut watch).await?;
//! // ... serve from `mirror`, then keep applying events from `watch`.
//! # Ok(())
//! # }
//! ```

mod backoff;
mod connection;
mod error_chain;
mod kv;
mod topic;

pub use backoff::BackoffPolicy;
pub use connection::{Bus, BusOptions, ConnectError, ConnectionClosed, ConnectionState};
pub use kv::{
    BucketConfig, BucketStatus, InvalidEntry, KvBucket, KvError, StateEvent, StateMirror,
    StateWatch, WatchEnded,
};
pub use topic::{InvalidMessage, Topic, TopicError, TopicSubscription};

/// The client library, for what this crate does not wrap (see [`Bus::client`]).
pub use async_nats;

/// A boxed error from the NATS client, kept as the source of our errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
