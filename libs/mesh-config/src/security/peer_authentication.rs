//! `PeerAuthentication` (`security.istio.io`): which mutual TLS mode a workload's
//! inbound traffic must use, for the whole workload or per port.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;

/// Spec of a `PeerAuthentication`: the mTLS requirement for inbound traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Workloads the policy applies to; unset means every workload in the namespace
    /// (or the whole mesh when the policy lives in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mode for all ports that have no entry in `port_level_mtls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides keyed by the workload's (not the Service's) port number,
    /// 1-65535; only honoured together with a `selector`. Keys are kept as strings
    /// because YAML may write them quoted (`"8080":`) or bare (`8080:`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// Mutual TLS setting (`PeerAuthentication.MutualTLS`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// Unset (or `UNSET`) inherits the mode of the parent policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MutualTlsMode>,
}

/// How strictly inbound connections must use mTLS (`PeerAuthentication.MutualTLS.Mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MutualTlsMode {
    /// Inherit from the parent policy; PERMISSIVE when nothing sets it.
    #[default]
    #[serde(rename = "UNSET")]
    Unset,
    /// Connections are not tunnelled through mTLS.
    #[serde(rename = "DISABLE")]
    Disable,
    /// Accept both mTLS and plain-text connections.
    #[serde(rename = "PERMISSIVE")]
    Permissive,
    /// Accept mTLS connections only.
    #[serde(rename = "STRICT")]
    Strict,
}
