//! `ServiceEntry` (`istio.networking.v1alpha3.ServiceEntry`): adds a service to the
//! mesh's registry — an external API, or workloads outside the platform's own registry.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload_entry::WorkloadEntry;

/// Spec of a `ServiceEntry`: the hosts, ports and endpoints of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Host names (a leading `*.` wildcard is allowed) matched against
    /// Host/authority and SNI, and referenced by routes and destination rules.
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Inline endpoints; alternative to `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Picks pods and `WorkloadEntry`s by label as the endpoints; alternative to
    /// `endpoints`, for `MESH_INTERNAL` services only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Namespaces the service is visible to (`.` = own namespace, `*` = all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// SANs accepted on the certificates of the service's workloads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of the service (`ServicePort`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub number: u32,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `MONGO`, `TCP`, `TLS` and so on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    pub name: String,
    /// Port on the endpoints that receives the traffic, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Whether the service is part of the mesh (`ServiceEntry.Location`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Location {
    /// Outside the mesh, e.g. a third-party API.
    #[default]
    #[serde(rename = "MESH_EXTERNAL")]
    MeshExternal,
    /// Inside the mesh, e.g. VMs joined to it.
    #[serde(rename = "MESH_INTERNAL")]
    MeshInternal,
}

/// How the proxy finds the endpoint addresses (`ServiceEntry.Resolution`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Resolution {
    /// Forward to the destination address the connection already has.
    #[default]
    #[serde(rename = "NONE")]
    None,
    /// Use the addresses listed in `endpoints`.
    #[serde(rename = "STATIC")]
    Static,
    /// Resolve the endpoint (or host) names with DNS, using all returned addresses.
    #[serde(rename = "DNS")]
    Dns,
    /// Resolve with DNS but connect to the first returned address only.
    #[serde(rename = "DNS_ROUND_ROBIN")]
    DnsRoundRobin,
    /// Resolve the name from the request's Host header or SNI at request time
    /// (wildcard hosts only).
    #[serde(rename = "DYNAMIC_DNS")]
    DynamicDns,
}

/// Label selector of a `ServiceEntry` (`istio.networking.v1alpha3.WorkloadSelector`,
/// whose field is `labels`, unlike `istio.type.v1beta1.WorkloadSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
