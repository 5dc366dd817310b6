//! JSON encoding of bucket values.
//!
//! JSON because every value on the bus is a serde model shared by services
//! that may run at different versions: unknown fields are ignored, and a value
//! that does not fit is reported with the key and revision that carry it.

use serde::{Serialize, de::DeserializeOwned};

/// A stored value that does not decode into the bucket's value type, e.g.
/// written by a newer or older version of another service.
#[derive(Debug, thiserror::Error)]
#[error(
    "value of key {key:?} at revision {revision} in bucket {bucket:?} is not a valid {value_type}"
)]
pub struct InvalidEntry {
    pub bucket: String,
    pub key: String,
    pub revision: u64,
    /// The Rust type the value was decoded into.
    pub value_type: &'static str,
    #[source]
    pub source: serde_json::Error,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

pub(crate) fn decode<T: DeserializeOwned>(
    bucket: &str,
    key: &str,
    revision: u64,
    payload: &[u8],
) -> Result<T, InvalidEntry> {
    serde_json::from_slice(payload).map_err(|source| InvalidEntry {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        revision,
        value_type: std::any::type_name::<T>(),
        source,
    })
}
