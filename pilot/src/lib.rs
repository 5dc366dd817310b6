//! pilot: turns services and Istio configuration into Envoy configuration and
//! serves it over ADS (state-of-the-world and delta xDS).
//!
//! - [`model`]: proxies, services, endpoints and the immutable [`model::MeshSnapshot`];
//! - [`registry`]: where services come from (ServiceEntry/WorkloadEntry today);
//! - [`translate`]: snapshot + proxy → Envoy clusters, endpoints, listeners, routes;
//! - [`xds`]: the ADS server, per-proxy state, the debounced push pipeline;
//! - [`config_source`]: reading and watching a directory of Istio YAML;
//! - [`debug`]: `/debug/*` pages on the HTTP port;
//! - [`tls`]: the mutual-TLS xDS port, served with pilot's own workload certificate.

pub mod config_source;
pub mod debug;
pub mod model;
pub mod registry;
pub mod tls;
pub mod translate;
pub mod xds;
