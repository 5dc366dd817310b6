//! Benchmark instruments for Trireme (issue 8): simulated Envoy proxies
//! (`xds-load`), this machine's floor xDS server (`xds-floor`), and the
//! pieces they share.

pub mod ads_client;
pub mod codec;
pub mod dependents;
pub mod floor;
pub mod grpc_stream;
pub mod load_api;
pub mod load_stats;
pub mod mesh_gen;
pub mod node;
pub mod report;
pub mod resource_names;
pub mod resource_type;
pub mod source_ip;
pub mod sys;
pub mod wire;
