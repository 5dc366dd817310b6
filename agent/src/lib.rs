//! Trireme agent: runs beside each workload (Istio's pilot-agent). The
//! `proxy` module is `agent proxy`: Envoy's bootstrap, supervision, the xDS
//! proxy to pilot and the status port.

pub mod proxy;
