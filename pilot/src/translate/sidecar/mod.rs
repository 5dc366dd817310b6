//! Sidecar proxies: what a workload's own proxy listens for and where it sends
//! traffic.

pub mod inbound;
