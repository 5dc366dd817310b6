//! Proto3 JSON for Envoy's API, for debug pages (`/debug/config_dump`) and
//! golden tests: the same rendering Envoy's own config dump uses.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static ENVOY_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(ENVOY_DESCRIPTORS).expect("envoy-types ships a valid descriptor set")
});

/// Why a message could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("unknown message type {0}")]
    UnknownType(String),
    #[error("decoding {type_name}: {source}")]
    Decode {
        type_name: String,
        source: prost::DecodeError,
    },
    #[error("rendering {type_name} as JSON: {source}")]
    Render {
        type_name: String,
        source: serde_json::Error,
    },
}

/// Renders an encoded message of `type_name` (e.g.
/// `envoy.config.cluster.v3.Cluster`, or a type URL) as proto3 JSON, with
/// `Any` fields expanded.
pub fn to_json(type_name: &str, encoded: &[u8]) -> Result<serde_json::Value, JsonError> {
    let type_name = type_name.rsplit('/').next().unwrap_or(type_name);
    let descriptor = POOL
        .get_message_by_name(type_name)
        .ok_or_else(|| JsonError::UnknownType(type_name.to_string()))?;
    let message =
        DynamicMessage::decode(descriptor, encoded).map_err(|source| JsonError::Decode {
            type_name: type_name.to_string(),
            source,
        })?;
    let options = SerializeOptions::new().skip_default_fields(true);
    message
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| JsonError::Render {
            type_name: type_name.to_string(),
            source,
        })
}

/// Renders a prost message of Envoy's API as proto3 JSON.
pub fn message_to_json<M: prost::Message + prost::Name>(
    message: &M,
) -> Result<serde_json::Value, JsonError> {
    to_json(&M::full_name(), &message.encode_to_vec())
}
