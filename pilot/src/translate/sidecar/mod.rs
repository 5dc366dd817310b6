//! A workload's sidecar: the listeners, routes and clusters Istio gives it,
//! split by direction. Outbound covers what the workload calls (the virtual
//! listener on 15001, per-port listeners, routes by host and port, the
//! clusters of the services in scope); inbound covers what calls the
//! workload (the virtual listener on 15006, or Sidecar ingress listeners).

pub mod inbound;
pub mod outbound;
