//! Istio's configuration model for Trireme.
//!
//! Every Istio kind that Trireme understands is a typed Rust struct named after
//! Istio's protobuf message (`networking::VirtualService`, ...), wrapped in a
//! Kubernetes envelope ([`Resource`]). Documents are read with
//! [`parse_documents`], which reports an unknown field or a wrong type with the
//! file, the document index, the field path and the line. [`validation`] then
//! applies Istio's semantic rules (istiod's webhook and the CRDs' CEL rules) to
//! a parsed resource. [`crd`] renders the CustomResourceDefinitions from the
//! same types.

pub mod common;
pub mod crd;
mod from_json;
pub mod kinds;
pub mod networking;
mod parse;
pub mod resource;
pub mod security;
pub mod store;
pub mod telemetry;
pub mod validation;

pub use from_json::{FromJsonError, resource_from_json};
pub use kinds::{AnyResource, Kind, KindInfo};
pub use parse::{
    DocumentLocation, MAX_DOCUMENT_ALIASES, MAX_DOCUMENT_BYTES, ParseError, ParsedResource,
    parse_all, parse_documents,
};
pub use resource::{ObjectMeta, Resource};
