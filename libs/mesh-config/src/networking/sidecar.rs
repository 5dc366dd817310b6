//! `Sidecar` (`istio.networking.v1alpha3.Sidecar`) and the messages it uses.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::networking::destination_rule::ConnectionPoolSettings;
use crate::networking::gateway::ServerTlsSettings;
use crate::networking::virtual_service::Destination;

/// Tunes the inbound and outbound listeners of the sidecar proxies of some workloads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sidecar {
    /// Workloads this applies to; absent = the namespace-wide default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Connection pool for all inbound ports unless a listener overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// An inbound listener of the sidecar, forwarding to the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    pub port: SidecarPort,
    /// IP to bind to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where the traffic goes, e.g. `127.0.0.1:8080` or `unix:///path`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// Terminates TLS on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener of the sidecar and the services it can reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// Absent = ports inferred from the imported hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// IP or Unix domain socket (`unix://...`) to bind to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Services imported, as `namespace/dnsName`; namespace may be `*`, `.` or `~`.
    pub hosts: Vec<String>,
}

/// Selects workloads by label (networking's own selector, field `labels`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What the sidecar does with traffic to destinations not in the registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Proxy that unknown traffic is sent to (with `ALLOW_ANY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// Handling of unknown outbound traffic (`OutboundTrafficPolicy.Mode`). No `Default`:
/// the proto's zero value is `REGISTRY_ONLY`, but Istio behaves as `ALLOW_ANY` when the
/// whole policy is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Drop it.
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    /// Let it through.
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}

/// How traffic reaches a listener bound to an IP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CaptureMode {
    /// Whatever the environment defines.
    #[default]
    #[serde(rename = "DEFAULT")]
    Default,
    /// Redirected by iptables.
    #[serde(rename = "IPTABLES")]
    Iptables,
    /// Not captured; the application addresses the listener directly.
    #[serde(rename = "NONE")]
    None,
}

/// A port of a sidecar listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP or TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}
