//! `ProxyConfig` (`istio.networking.v1beta1.ProxyConfig`): per-workload proxy
//! settings as a CRD. Not to be confused with the mesh-wide `ProxyConfig` of MeshConfig.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;

/// Spec of a `ProxyConfig`: overrides for the proxies of the selected workloads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Workloads affected; without it, every workload in the resource's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Proxy worker threads; unset derives it from CPU limits, 0 uses every core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    /// Extra environment variables for the proxy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ProxyImage>,
}

/// Which flavour of the proxy image to run (`ProxyImage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyImage {
    /// Image variant such as `default`, `debug` or `distroless`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub image_type: String,
}
