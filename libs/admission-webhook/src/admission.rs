//! Kubernetes' `AdmissionReview` (`admission.k8s.io/v1` and `v1beta1`, which
//! share one shape): the fields a validating or mutating webhook reads and
//! writes. The request is read leniently (fields we do not use are ignored,
//! as newer API servers add some); the response carries only what the API
//! server reads.

use serde::{Deserialize, Serialize};

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
const KIND: &str = "AdmissionReview";
/// The `patchType` of a JSON Patch response.
pub const PATCH_TYPE_JSON_PATCH: &str = "JSONPatch";

/// The `AdmissionReview` the API server sends.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewRequest {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

/// The `AdmissionReview` the webhook answers with.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

/// What is being admitted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    /// The kind of `object`, e.g. `networking.istio.io/v1 VirtualService`.
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub operation: Operation,
    /// The new object (CREATE, UPDATE); absent for DELETE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
    /// The object before the change (UPDATE, DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<serde_json::Value>,
    /// A dry run: nothing about it may be recorded or published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

impl AdmissionRequest {
    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

/// The verdict on one request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid, echoed.
    pub uid: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Shown to the user (kubectl prints them) whether or not allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// A mutating webhook's change: an RFC 6902 JSON Patch, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch`, the only type Kubernetes accepts, whenever `patch` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
}

/// The part of Kubernetes' `metav1.Status` a denial carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
    pub reason: String,
}

impl AdmissionResponse {
    pub fn allow(uid: &str, warnings: Vec<String>) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: true,
            status: None,
            warnings,
            patch: None,
            patch_type: None,
        }
    }

    /// An allowed request changed by `patch`, the JSON text of an RFC 6902
    /// patch (sent base64-encoded, as the API server expects).
    pub fn allow_with_patch(uid: &str, patch_json: &[u8], warnings: Vec<String>) -> Self {
        use base64::Engine as _;
        Self {
            patch: Some(base64::engine::general_purpose::STANDARD.encode(patch_json)),
            patch_type: Some(PATCH_TYPE_JSON_PATCH.to_string()),
            ..Self::allow(uid, warnings)
        }
    }

    /// The decoded JSON Patch text, when the response carries one.
    pub fn patch_json(&self) -> Option<Result<Vec<u8>, base64::DecodeError>> {
        use base64::Engine as _;
        self.patch
            .as_deref()
            .map(|patch| base64::engine::general_purpose::STANDARD.decode(patch))
    }

    /// A denial with HTTP-style code 400 (`BadRequest`): the object is at
    /// fault, not the webhook.
    pub fn deny(uid: &str, message: String, warnings: Vec<String>) -> Self {
        Self {
            uid: uid.to_string(),
            allowed: false,
            status: Some(Status {
                code: 400,
                message,
                reason: "BadRequest".to_string(),
            }),
            warnings,
            patch: None,
            patch_type: None,
        }
    }

    /// Wraps the response in an `AdmissionReview` of `api_version` (the
    /// request's: a v1beta1 request gets a v1beta1 answer).
    pub fn into_review(self, api_version: &str) -> AdmissionReviewResponse {
        AdmissionReviewResponse {
            api_version: api_version.to_string(),
            kind: KIND.to_string(),
            response: self,
        }
    }
}

/// The largest body read. Kubernetes refuses objects over about 3 MiB, and an
/// UPDATE carries two of them.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// A body that is not an `AdmissionReview` we can answer; webhooks answer
/// HTTP 400 with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedBody {
    #[error("request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("request body is not a valid AdmissionReview: {0}")]
    Json(String),
    #[error(
        "unsupported AdmissionReview apiVersion {0:?}; expected admission.k8s.io/v1 or v1beta1"
    )]
    Version(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
}

/// Reads `body` as an `AdmissionReview` this code answers: its apiVersion
/// (the answer's too) and its request.
pub fn decode_review(body: &[u8]) -> Result<(String, AdmissionRequest), MalformedBody> {
    if body.len() > MAX_BODY_BYTES {
        return Err(MalformedBody::TooLarge);
    }
    let envelope: AdmissionReviewRequest =
        serde_json::from_slice(body).map_err(|error| MalformedBody::Json(error.to_string()))?;
    if !is_supported_version(&envelope.api_version) {
        return Err(MalformedBody::Version(envelope.api_version));
    }
    if !is_admission_review(&envelope.kind) {
        return Err(MalformedBody::Kind(envelope.kind));
    }
    let request = envelope.request.ok_or(MalformedBody::NoRequest)?;
    Ok((envelope.api_version, request))
}

/// Whether `api_version` is an `AdmissionReview` version we answer.
pub fn is_supported_version(api_version: &str) -> bool {
    api_version == API_VERSION_V1 || api_version == API_VERSION_V1BETA1
}

/// Whether `kind` names an `AdmissionReview`.
pub fn is_admission_review(kind: &str) -> bool {
    kind == KIND
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_a_request_and_ignores_fields_it_does_not_use() {
        let review: AdmissionReviewRequest = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
                "requestKind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "name": "reviews",
                "namespace": "default",
                "operation": "UPDATE",
                "userInfo": {"username": "admin"},
                "object": {"kind": "VirtualService"},
                "oldObject": {"kind": "VirtualService"},
                "dryRun": true,
                "options": {"kind": "UpdateOptions"}
            }
        }))
        .unwrap();
        let request = review.request.unwrap();
        assert_eq!(request.operation, Operation::Update);
        assert!(request.is_dry_run());
        assert_eq!(request.resource.resource, "virtualservices");
    }

    #[test]
    fn writes_a_denial_as_the_api_server_reads_it() {
        let review = AdmissionResponse::deny("u-1", "spec: bad".into(), vec!["w".into()])
            .into_review(API_VERSION_V1BETA1);
        assert_eq!(
            serde_json::to_value(&review).unwrap(),
            json!({
                "apiVersion": "admission.k8s.io/v1beta1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": "u-1",
                    "allowed": false,
                    "status": {"code": 400, "message": "spec: bad", "reason": "BadRequest"},
                    "warnings": ["w"]
                }
            })
        );
        let allowed = serde_json::to_value(AdmissionResponse::allow("u-2", vec![])).unwrap();
        assert_eq!(allowed, json!({"uid": "u-2", "allowed": true}));
    }

    #[test]
    fn a_patch_travels_base64_encoded_with_its_type() {
        let patch = br#"[{"op":"add","path":"/metadata/labels","value":{}}]"#;
        let response = AdmissionResponse::allow_with_patch("u-3", patch, vec![]);
        let wire = serde_json::to_value(&response).unwrap();
        assert_eq!(wire["patchType"], "JSONPatch");
        assert_eq!(
            wire["patch"],
            "W3sib3AiOiJhZGQiLCJwYXRoIjoiL21ldGFkYXRhL2xhYmVscyIsInZhbHVlIjp7fX1d"
        );
        assert_eq!(response.patch_json().unwrap().unwrap(), patch);
    }
}
