//! Translation from the mesh model to Envoy's API, one module per resource
//! type (gateways use them directly; [`sidecar`] composes them into what a
//! workload's sidecar gets). Every function is pure: the same snapshot and proxy view give the same
//! resources, which is what lets pilot generate once and share the bytes.

pub mod clusters;
pub mod endpoints;
pub mod http_route;
pub mod listeners;
pub mod names;
pub mod routes;
pub mod sidecar;
pub mod traffic_policy;
