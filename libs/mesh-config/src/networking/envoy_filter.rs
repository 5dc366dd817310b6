//! `EnvoyFilter` (`istio.networking.v1alpha3.EnvoyFilter`) and the messages it uses.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::PolicyTargetReference;
use crate::networking::sidecar::WorkloadSelector;

/// Low-level patches applied to the Envoy configuration Istio generates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilter {
    /// Workloads to patch (networking `WorkloadSelector`, field `labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Resources to patch instead of a workload selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    /// Order among EnvoyFilters in the same context; lower applies first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// Kind of Envoy object a patch applies to (`EnvoyFilter.ApplyTo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApplyTo {
    #[default]
    #[serde(rename = "INVALID")]
    Invalid,
    #[serde(rename = "LISTENER")]
    Listener,
    #[serde(rename = "FILTER_CHAIN")]
    FilterChain,
    #[serde(rename = "NETWORK_FILTER")]
    NetworkFilter,
    #[serde(rename = "HTTP_FILTER")]
    HttpFilter,
    #[serde(rename = "ROUTE_CONFIGURATION")]
    RouteConfiguration,
    #[serde(rename = "VIRTUAL_HOST")]
    VirtualHost,
    #[serde(rename = "HTTP_ROUTE")]
    HttpRoute,
    #[serde(rename = "CLUSTER")]
    Cluster,
    #[serde(rename = "EXTENSION_CONFIG")]
    ExtensionConfig,
    /// Deprecated upstream.
    #[serde(rename = "BOOTSTRAP")]
    Bootstrap,
    #[serde(rename = "LISTENER_FILTER")]
    ListenerFilter,
}

/// Which kind of generated configuration a patch targets (`EnvoyFilter.PatchContext`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PatchContext {
    #[default]
    #[serde(rename = "ANY")]
    Any,
    #[serde(rename = "SIDECAR_INBOUND")]
    SidecarInbound,
    #[serde(rename = "SIDECAR_OUTBOUND")]
    SidecarOutbound,
    #[serde(rename = "GATEWAY")]
    Gateway,
    #[serde(rename = "WAYPOINT")]
    Waypoint,
}

/// Conditions on the proxy itself (`EnvoyFilter.ProxyMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyMatch {
    /// Regex on the proxy's Istio version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_version: String,
    /// Node metadata values that must all match exactly.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// Selects an Envoy cluster (`EnvoyFilter.ClusterMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// Service FQDN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// Exact Envoy cluster name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Selects an Envoy route configuration (`EnvoyFilter.RouteConfigurationMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfigurationMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// Gateway server port name (gateways only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
    /// `namespace/name` of the Gateway (gateways only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VirtualHostMatch>,
    /// Exact route configuration name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Selects a route in a virtual host (`RouteConfigurationMatch.RouteMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
}

/// Kind of route action to match (`RouteConfigurationMatch.RouteMatch.Action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    #[default]
    #[serde(rename = "ANY")]
    Any,
    #[serde(rename = "ROUTE")]
    Route,
    #[serde(rename = "REDIRECT")]
    Redirect,
    #[serde(rename = "DIRECT_RESPONSE")]
    DirectResponse,
}

/// Selects a virtual host (`RouteConfigurationMatch.VirtualHostMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMatch {
    /// Virtual host name, e.g. `host:port`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// One of the virtual host's domains.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMatch>,
}

/// Selects an Envoy listener (`EnvoyFilter.ListenerMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub port_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_chain: Option<FilterChainMatch>,
    /// Name of a listener filter, e.g. `envoy.filters.listener.tls_inspector`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub listener_filter: String,
    /// Exact listener name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Selects a filter chain of a listener (`ListenerMatch.FilterChainMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChainMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sni: String,
    /// `tls` or `raw_buffer`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transport_protocol: String,
    /// Comma-separated ALPN values.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub application_protocols: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u32>,
}

/// Selects a network filter in a chain (`ListenerMatch.FilterMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// HTTP filter inside the HTTP connection manager.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_filter: Option<SubFilterMatch>,
}

/// Selects a filter nested in a network filter (`ListenerMatch.SubFilterMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubFilterMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Selects waypoint proxy configuration (`EnvoyFilter.WaypointMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<WaypointRouteMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<WaypointFilterMatch>,
}

/// Selects a waypoint route (`WaypointMatch.RouteMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointRouteMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Selects a waypoint filter (`WaypointMatch.FilterMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointFilterMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_filter: Option<WaypointSubFilterMatch>,
}

/// Selects a filter nested in a waypoint filter (`WaypointMatch.FilterMatch.SubFilterMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointSubFilterMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// What to change and how (`EnvoyFilter.Patch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Envoy configuration fragment (a JSON object), interpreted per `applyTo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Where an added HTTP filter goes in the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_class: Option<FilterClass>,
}

/// Patch operation (`EnvoyFilter.Patch.Operation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Operation {
    #[default]
    #[serde(rename = "INVALID")]
    Invalid,
    #[serde(rename = "MERGE")]
    Merge,
    #[serde(rename = "ADD")]
    Add,
    #[serde(rename = "REMOVE")]
    Remove,
    #[serde(rename = "INSERT_BEFORE")]
    InsertBefore,
    #[serde(rename = "INSERT_AFTER")]
    InsertAfter,
    #[serde(rename = "INSERT_FIRST")]
    InsertFirst,
    #[serde(rename = "REPLACE")]
    Replace,
    /// Merge, but replace lists instead of appending to them.
    #[serde(rename = "MERGE_AND_REPLACE_LIST")]
    MergeAndReplaceList,
}

/// Filter position class for inserted filters (`EnvoyFilter.Patch.FilterClass`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FilterClass {
    #[default]
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    /// After Istio's authentication filters.
    #[serde(rename = "AUTHN")]
    Authn,
    /// After Istio's authorization filters.
    #[serde(rename = "AUTHZ")]
    Authz,
    /// Before Istio's stats filters.
    #[serde(rename = "STATS")]
    Stats,
}

/// Which generated object a patch applies to (`EnvoyFilter.EnvoyConfigObjectMatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<PatchContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyMatch>,
    /// One of `listener` / `routeConfiguration` / `cluster` / `waypoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_configuration: Option<RouteConfigurationMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterMatch>,
    /// Only with the `WAYPOINT` context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointMatch>,
}

/// One patch: target kind, match and change (`EnvoyFilter.EnvoyConfigObjectPatch`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<ApplyTo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<EnvoyConfigObjectMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
}
