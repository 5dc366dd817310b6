//! The webhook's decision, as a plain synchronous function from the request
//! body to the answer: decode the `AdmissionReview`, read its object strictly
//! as the Istio kind it claims to be, validate it. The HTTP handler, the
//! tests and the fuzz target all call [`review`].

use mesh_config::AnyResource;
use mesh_config::validation::{self, Finding};

use super::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReviewResponse, Operation, decode_review,
};

pub use admission_webhook::admission::{MAX_BODY_BYTES, MalformedBody};

/// How a well-formed request was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A known Istio kind that validated (possibly with warnings).
    Passed,
    /// The object does not fit its kind's types (unknown field, wrong type).
    DecodeError,
    /// The object parsed but breaks Istio's rules.
    Invalid,
    /// Not a kind Trireme knows: allowed unchecked.
    UnknownKind,
    /// DELETE or CONNECT: allowed unchecked.
    UnsupportedOperation,
}

impl Outcome {
    /// The `reason` label of `galley_validation_failed`, or `None` when the
    /// request counts as passed. Istio's reason names where it has one.
    pub fn failure_reason(&self) -> Option<&'static str> {
        match self {
            Outcome::Passed => None,
            Outcome::DecodeError => Some("decode_error"),
            Outcome::Invalid => Some("invalid_resource"),
            Outcome::UnknownKind => Some("unknown_type"),
            Outcome::UnsupportedOperation => Some("unsupported_operation"),
        }
    }
}

/// A decided request: the answer to send, and what led to it.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub answer: AdmissionReviewResponse,
    pub request: AdmissionRequest,
    pub outcome: Outcome,
    /// The typed object, when it parsed.
    pub resource: Option<AnyResource>,
}

/// Decodes `body` and decides it. `Err` only when the body is not an
/// `AdmissionReview` at all; every verdict on an object is an `Ok` answer.
pub fn review(body: &[u8]) -> Result<Reviewed, MalformedBody> {
    let (api_version, request) = decode_review(body)?;
    let (response, outcome, resource) = decide(&request);
    Ok(Reviewed {
        answer: response.into_review(&api_version),
        request,
        outcome,
        resource,
    })
}

fn decide(request: &AdmissionRequest) -> (AdmissionResponse, Outcome, Option<AnyResource>) {
    let uid = &request.uid;
    match request.operation {
        Operation::Create | Operation::Update => {}
        Operation::Delete | Operation::Connect => {
            return (
                AdmissionResponse::allow(uid, vec![]),
                Outcome::UnsupportedOperation,
                None,
            );
        }
    }
    let Some(object) = &request.object else {
        return (
            AdmissionResponse::deny(uid, "request.object: missing".into(), vec![]),
            Outcome::DecodeError,
            None,
        );
    };
    let resource = match mesh_config::resource_from_json(object) {
        Ok(resource) => resource,
        Err(error) if error.is_unknown_kind() => {
            return (
                AdmissionResponse::allow(uid, vec![]),
                Outcome::UnknownKind,
                None,
            );
        }
        Err(error) => {
            return (
                AdmissionResponse::deny(uid, error.to_string(), vec![]),
                Outcome::DecodeError,
                None,
            );
        }
    };
    let report = validation::validate(&resource);
    let warnings = render(&report.warnings);
    if report.is_valid() {
        (
            AdmissionResponse::allow(uid, warnings),
            Outcome::Passed,
            Some(resource),
        )
    } else {
        let message = render(&report.errors).join("; ");
        (
            AdmissionResponse::deny(uid, message, warnings),
            Outcome::Invalid,
            Some(resource),
        )
    }
}

/// Each finding as `PATH: MESSAGE`.
fn render(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(Finding::to_string).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(operation: &str, object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "uid-1",
                "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
                "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
                "operation": operation,
                "object": object
            }
        }))
        .unwrap()
    }

    fn virtual_service(weights: &[i64]) -> serde_json::Value {
        let route: Vec<_> = weights
            .iter()
            .map(|w| json!({"destination": {"host": "reviews"}, "weight": w}))
            .collect();
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": route}]}
        })
    }

    #[test]
    fn every_error_is_listed_with_its_path() {
        let reviewed = review(&body("CREATE", virtual_service(&[-1, -2]))).unwrap();
        assert_eq!(reviewed.outcome, Outcome::Invalid);
        let response = reviewed.answer.response;
        assert!(!response.allowed);
        let status = response.status.unwrap();
        assert_eq!(status.code, 400);
        assert_eq!(
            status.message,
            "spec.http[0].route[0].weight: weight -1 is negative; spec.http[0].route[1].weight: weight -2 is negative"
        );
    }

    #[test]
    fn a_decode_error_names_the_field() {
        let mut object = virtual_service(&[100]);
        object["spec"]["htp"] = json!([]);
        let reviewed = review(&body("UPDATE", object)).unwrap();
        assert_eq!(reviewed.outcome, Outcome::DecodeError);
        let message = reviewed.answer.response.status.unwrap().message;
        assert!(message.starts_with("spec.htp: unknown field"), "{message}");
    }

    #[test]
    fn refuses_bodies_that_are_not_reviews() {
        assert!(matches!(review(b"{"), Err(MalformedBody::Json(_))));
        assert!(matches!(
            review(br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview"}"#),
            Err(MalformedBody::Version(_))
        ));
        assert_eq!(
            review(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
                .unwrap_err(),
            MalformedBody::NoRequest
        );
        assert_eq!(
            review(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err(),
            MalformedBody::TooLarge
        );
    }
}
