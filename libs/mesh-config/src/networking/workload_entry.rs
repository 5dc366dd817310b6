//! `WorkloadEntry` (`istio.networking.v1alpha3.WorkloadEntry`): a workload that is not a
//! Kubernetes pod (a VM, a bare-metal host), or an inline endpoint of a `ServiceEntry`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a `WorkloadEntry`: one network endpoint and its properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP address, fully qualified DNS name (with DNS resolution) or
    /// `unix:///path` socket, without a port. May be empty only if `network` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Service port name to the port this endpoint listens on for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// L3 network the endpoint lives in; endpoints of other networks are reached
    /// through a gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// Failure domain as `region/zone/subzone...`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Relative load-balancing weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account of the workload, in the resource's namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}
