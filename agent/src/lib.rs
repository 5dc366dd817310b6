//! Trireme agent: what runs beside each workload (Istio's pilot-agent).
//!
//! - [`init`]: `agent init`, the iptables rules that capture the pod's
//!   traffic into its proxy (Istio's init container);
//! - [`proxy`]: `agent proxy`, Envoy's bootstrap, supervision, the xDS proxy
//!   to pilot and the status port;
//! - [`sds`]: Envoy's secret discovery service over a Unix socket, serving
//!   the workload certificate and trust bundle that a
//!   [`workload_identity::CertificateManager`] keeps fresh;
//! - [`wait`]: `agent wait`, until the proxy is ready (holding the app).

pub mod init;
pub mod proxy;
pub mod sds;
pub mod wait;
