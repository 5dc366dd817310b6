//! `WorkloadGroup` (`istio.networking.v1alpha3.WorkloadGroup`): a template from which
//! `WorkloadEntry` resources are created for VMs that join the mesh, plus their
//! readiness probe.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::workload_entry::WorkloadEntry;

/// Spec of a `WorkloadGroup`: shared metadata, entry template and health check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    /// Labels and annotations copied onto every generated `WorkloadEntry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupObjectMeta>,
    /// Base for each generated `WorkloadEntry`; `address` and `labels` should
    /// be left empty here.
    pub template: WorkloadEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// Metadata given to the generated entries (`WorkloadGroup.ObjectMeta`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroupObjectMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Health check run against the workload, in the style of a Kubernetes readiness
/// probe (`ReadinessProbe`). `httpGet`, `tcpSocket`, `exec` and `grpc` are
/// alternatives (protobuf oneof `health_check_method`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadinessProbe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Consecutive successes needed to become ready again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Consecutive failures needed to become unready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

/// Probe by HTTP GET; healthy on a successful status (`HTTPHealthCheckConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHealthCheckConfig {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    pub port: u32,
    /// Host to connect to; defaults to the workload's IP.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// `HTTP` (the default) or `HTTPS`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    /// Request headers; a name may repeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// Probe by gRPC health-checking protocol (`GrpcHealthCheckConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheckConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Fully qualified gRPC service name to ask about.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
}

/// One header of an HTTP probe request (`HTTPHeader`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Probe by opening a TCP connection (`TCPHealthCheckConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpHealthCheckConfig {
    /// Host to connect to; defaults to localhost.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub port: u32,
}

/// Probe by running a command; exit status 0 means healthy (`ExecHealthCheckConfig`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecHealthCheckConfig {
    pub command: Vec<String>,
}
