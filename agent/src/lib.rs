//! Trireme agent: what runs beside each workload (Istio's pilot-agent).
//!
//! - [`sds`]: Envoy's secret discovery service over a Unix socket, serving
//!   the workload certificate and trust bundle that a
//!   [`workload_identity::CertificateManager`] keeps fresh.

pub mod sds;
