//! Istio's configuration model for Trireme.
//!
//! Every Istio kind that Trireme understands is a typed Rust struct named after
//! Istio's protobuf message (`networking::VirtualService`, ...). Documents are read
//! with [`parse`], which reports an unknown field or a wrong type with the file,
//! the document index, the field path and the line.

pub mod common;
pub mod networking;
pub mod security;
pub mod telemetry;
