//! Trireme agent: runs beside each workload (Istio's pilot-agent). `init`
//! is `agent init` (the traffic-capture rules); `proxy` is `agent proxy`: Envoy's bootstrap, supervision, the xDS
//! proxy to pilot and the status port.

pub mod init;
pub mod proxy;
