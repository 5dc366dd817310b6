//! `RequestAuthentication` (`security.istio.io`): which JWTs a workload accepts
//! and where it finds them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Duration, PolicyTargetReference, WorkloadSelector};

/// Spec of a `RequestAuthentication`: the accepted JWT issuers and how to check them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthentication {
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// How to validate tokens from one issuer (`JWTRule`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Expected `iss` claim.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issuer: String,
    /// Accepted `aud` values; empty accepts the service's own name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the key set; exclusive with `jwks`. The CRD also accepts `jwks_uri`.
    #[serde(default, alias = "jwks_uri", skip_serializing_if = "String::is_empty")]
    pub jwks_uri: String,
    /// Inline JSON Web Key Set; exclusive with `jwks_uri`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jwks: String,
    /// Headers to read the token from; with no location set, `Authorization: Bearer`
    /// and the `access_token` query parameter are tried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Header that receives the verified payload, base64-encoded JSON.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_payload_to_header: String,
    /// Cookies to read the token from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Keep the token on the request sent upstream (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Copy individual claims to request headers (experimental upstream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long to wait for a remote key set fetch (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra claims to split on whitespace for matching, besides `scope` and `permission`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
}

/// A header that carries the token (`JWTHeader`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    pub name: String,
    /// Stripped before decoding, e.g. `"Bearer "`; a header without it is invalid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// Copies one claim of a verified token into a request header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header to set (overwritten if present).
    pub header: String,
    /// Claim to copy; nested claims use dots, e.g. `nested.key.group`.
    pub claim: String,
}
