//! `Telemetry` (`telemetry.istio.io`): per-mesh, per-namespace or per-workload
//! settings for tracing, metrics and access logs.

// The module shares its parent's name because the file layout follows Istio's kinds.
#![allow(clippy::module_inception)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, PolicyTargetReference, WorkloadSelector};

/// Spec of a `Telemetry`: tracing, metrics and access-log overrides for the selected workloads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Telemetry {
    /// Workloads the settings apply to; at most one of `selector`, `target_ref`
    /// and `target_refs` may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Single attachment target; undocumented upstream, superseded by `target_refs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources (Gateway, GatewayClass, Service, ServiceEntry) the settings attach to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
}

/// Tracing settings: provider, sampling rate and extra span tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Restricts the settings to a traffic direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<TracingSelector>,
    /// Span reporting providers; unset uses the mesh default (one provider at most today).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Percentage (0–100, default 0) of requests without a prior sampling decision to trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    /// `true` stops span reporting; propagation and sampling are unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    /// Extra span tags by tag name; when set, replaces the parent's tags entirely.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Whether Envoy samples based on the request ID (default true); hidden upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    /// Whether spans carry Istio's own tags (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    /// `true` strips trace context headers from forwarded requests; span reporting is unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
}

/// Traffic selection for tracing (`Tracing.TracingSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// Where a custom span tag's value comes from (`Tracing.CustomTag`); set exactly one field
/// (protobuf oneof `type`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomTag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<Literal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<RequestHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formatter: Option<Formatter>,
}

/// A fixed tag value (`Tracing.Literal`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Literal {
    pub value: String,
}

/// A tag value read from the proxy's environment (`Tracing.Environment`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Environment {
    /// Environment variable name.
    pub name: String,
    /// Used when the variable is not set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// A tag value read from a request header (`Tracing.RequestHeader`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestHeader {
    /// Header name.
    pub name: String,
    /// Used when the header is absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_value: String,
}

/// A tag value built with an access-log format string such as `%REQUESTED_SERVER_NAME%`
/// (`Tracing.Formatter`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Formatter {
    pub value: String,
}

/// Refers to a telemetry provider declared in MeshConfig's `extensionProviders`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProviderRef {
    pub name: String,
}

/// Metrics settings: providers and per-metric overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metrics {
    /// Unset uses the mesh's default metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// Applied in order, after the overrides inherited from mesh and namespace level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<MetricsOverrides>,
    /// Time between metric reports (TCP only for now; default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<Duration>,
}

/// Traffic direction relative to the workload (`telemetry.v1alpha1.WorkloadMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadMode {
    /// Inbound and outbound traffic.
    #[default]
    #[serde(rename = "CLIENT_AND_SERVER")]
    ClientAndServer,
    /// Outbound traffic: the workload is the source.
    #[serde(rename = "CLIENT")]
    Client,
    /// Inbound traffic: the workload is the destination.
    #[serde(rename = "SERVER")]
    Server,
}

/// Chooses the metrics an override applies to; `metric` and `custom_metric` are a
/// protobuf oneof (`metric_match`), so set at most one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    /// One of Istio's standard metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<IstioMetric>,
    /// Any other metric name, not validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// Istio's standard metrics (`MetricSelector.IstioMetric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum IstioMetric {
    /// Every standard metric.
    #[default]
    #[serde(rename = "ALL_METRICS")]
    AllMetrics,
    /// `istio_requests_total`.
    #[serde(rename = "REQUEST_COUNT")]
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    #[serde(rename = "REQUEST_DURATION")]
    RequestDuration,
    /// `istio_request_bytes`.
    #[serde(rename = "REQUEST_SIZE")]
    RequestSize,
    /// `istio_response_bytes`.
    #[serde(rename = "RESPONSE_SIZE")]
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    #[serde(rename = "TCP_OPENED_CONNECTIONS")]
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    #[serde(rename = "TCP_CLOSED_CONNECTIONS")]
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    #[serde(rename = "TCP_SENT_BYTES")]
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    #[serde(rename = "TCP_RECEIVED_BYTES")]
    TcpReceivedBytes,
    /// `istio_request_messages_total`.
    #[serde(rename = "GRPC_REQUEST_MESSAGES")]
    GrpcRequestMessages,
    /// `istio_response_messages_total`.
    #[serde(rename = "GRPC_RESPONSE_MESSAGES")]
    GrpcResponseMessages,
}

/// Changes how the selected metrics are generated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsOverrides {
    /// Unset selects every metric in both directions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<MetricSelector>,
    /// `true` turns the metrics off; `false` turns them back on below a parent that disabled them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Changes to metric labels, keyed by label name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Adds, changes or drops one metric label (`MetricsOverrides.TagOverride`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagOverride {
    /// Defaults to `UPSERT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<TagOverrideOperation>,
    /// CEL expression for the label value, e.g. `request.host`; required for `UPSERT`,
    /// not allowed for `REMOVE`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// What a tag override does (`MetricsOverrides.TagOverride.Operation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TagOverrideOperation {
    /// Add the label or replace its value.
    #[default]
    #[serde(rename = "UPSERT")]
    Upsert,
    /// Leave the label out.
    #[serde(rename = "REMOVE")]
    Remove,
}

/// Access-log settings: providers, on/off and a filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogging {
    /// Restricts the settings to a traffic direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<LogSelector>,
    /// Unset uses the mesh's default access-log providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// `true` turns access logs off for the listed providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Logs only the requests and connections the filter accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

/// Traffic selection for access logs (`AccessLogging.LogSelector`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
}

/// Access-log filter (`AccessLogging.Filter`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Filter {
    /// CEL expression, e.g. `response.code >= 400`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expression: String,
}
