//! Trireme galley: config intake and validation for the mesh.
//!
//! - [`webhook`]: the validating admission webhook for every Istio kind.

pub mod webhook;
