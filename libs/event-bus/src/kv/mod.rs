//! State on the bus: JetStream key-value buckets with typed values, and the
//! "whole state, then every change" reader built on them.

mod bucket;
mod codec;
mod mirror;
mod state_watch;

pub use bucket::{BucketConfig, BucketStatus, KvBucket, KvError};
pub use codec::InvalidEntry;
pub use mirror::{StateMirror, WatchEnded};
pub use state_watch::{StateEvent, StateWatch};
