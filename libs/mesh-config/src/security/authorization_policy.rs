//! `AuthorizationPolicy` (`security.istio.io`): allow, deny, audit or delegate
//! requests that match a set of rules.
//!
//! String matchers in rules accept an exact value, a prefix (`abc*`), a suffix
//! (`*abc`) or presence (`*`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};

/// Spec of an `AuthorizationPolicy`: rules plus the action taken when one matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Workloads the policy applies to; at most one of `selector`, `target_ref`
    /// and `target_refs` may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Single attachment target; undocumented upstream, superseded by `target_refs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Resources (Gateway, GatewayClass, Service, ServiceEntry) the policy attaches to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// A request matches the policy when any rule matches; no rules never match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Defaults to `ALLOW`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// The extension that decides a `CUSTOM` action (oneof `action_detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
}

/// What to do with a matching request (`AuthorizationPolicy.Action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Let the request through only if some ALLOW policy matches it.
    #[default]
    #[serde(rename = "ALLOW")]
    Allow,
    /// Reject the request if it matches.
    #[serde(rename = "DENY")]
    Deny,
    /// Mark the request for auditing if it matches; does not affect the decision.
    #[serde(rename = "AUDIT")]
    Audit,
    /// Hand the decision to the extension named in `provider`.
    #[serde(rename = "CUSTOM")]
    Custom,
}

/// Names an authorization extension declared in MeshConfig (`AuthorizationPolicy.ExtensionProvider`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// Matches when one source, one operation and every condition match; an empty rule always matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Unset means any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// Unset means any operation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// All conditions must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// One entry of `Rule.from` (`Rule.From`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// One entry of `Rule.to` (`Rule.To`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// Who sent the request; all set fields must match (the `not_*` lists exclude).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities from mTLS, e.g. `cluster.local/ns/default/sa/productpage`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// JWT identities, written `<iss>/<sub>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces of the peer workload (from its mTLS identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Peer service accounts as `<namespace>/<name>` (or `<name>` for the policy's own
    /// namespace); no wildcards, and exclusive with principals and namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// Source addresses of the connection (IPs or CIDRs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// Original client addresses (e.g. from `X-Forwarded-For`), IPs or CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

/// What the request does; all set fields must match (the `not_*` lists exclude).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Host (`:authority`) of the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports, written as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (for gRPC always `POST`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// Request paths, or `/package.service/method` for gRPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An extra check on a request attribute, such as `request.headers[x-id]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Name of the attribute to test.
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}
