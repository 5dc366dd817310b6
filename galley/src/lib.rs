//! Trireme galley: the one door Istio config comes through. It judges every
//! resource with Istio's validation rules and publishes the valid ones to
//! the bus, where every pilot replica reads the same state.
//!
//! - [`intake`]: config from a directory (and Kubernetes) to the bus.
//! - [`webhook`]: the validating admission webhook for every Istio kind.

pub mod intake;
pub mod webhook;
