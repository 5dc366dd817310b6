//! The webhook's decision as a plain function from request body to answer:
//! decode the `AdmissionReview`, inject the pod, answer with the JSON Patch.
//! The HTTP handler, the tests, the fuzz target and the benchmark all call
//! [`review`].

use admission_webhook::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReviewResponse, MalformedBody, Operation,
    decode_review,
};

use crate::inject::{Injection, Injector, Target};
use crate::patch;

/// How a well-formed request was decided, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod got its sidecar; the answer carries the patch.
    Injected,
    /// Allowed unchanged: the pod is not to be injected, or the request is
    /// not a pod's creation.
    Skipped(String),
    /// Denied: the pod cannot be injected as it asks.
    Failed(String),
}

/// A decided request.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub answer: AdmissionReviewResponse,
    pub request: AdmissionRequest,
    pub outcome: Outcome,
}

/// Decodes `body` and injects its pod. `Err` only when the body is not an
/// `AdmissionReview` at all.
pub fn review(injector: &Injector, body: &[u8]) -> Result<Reviewed, MalformedBody> {
    let (api_version, request) = decode_review(body)?;
    let (response, outcome) = decide(injector, &request);
    Ok(Reviewed {
        answer: response.into_review(&api_version),
        request,
        outcome,
    })
}

fn decide(injector: &Injector, request: &AdmissionRequest) -> (AdmissionResponse, Outcome) {
    let uid = &request.uid;
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if request.operation != Operation::Create || !is_pod || request.sub_resource.is_some() {
        let reason = format!(
            "{:?} of {} {} is not a pod's creation",
            request.operation, request.kind.group, request.kind.kind
        );
        return (
            AdmissionResponse::allow(uid, vec![]),
            Outcome::Skipped(reason),
        );
    }
    let Some(pod) = &request.object else {
        let reason = "request.object: missing".to_string();
        return (
            AdmissionResponse::deny(uid, reason.clone(), vec![]),
            Outcome::Failed(reason),
        );
    };
    let target = Target {
        namespace: Some(request.namespace.clone()).filter(|ns| !ns.is_empty()),
        ..Target::default()
    };
    match injector.inject(pod, &target) {
        Ok(Injection::Injected {
            pod: injected,
            warnings,
            ..
        }) => {
            let patch = patch::create(pod, &injected);
            (
                AdmissionResponse::allow_with_patch(uid, &patch, warnings),
                Outcome::Injected,
            )
        }
        Ok(Injection::Skipped { reason }) => (
            AdmissionResponse::allow(uid, vec![]),
            Outcome::Skipped(reason),
        ),
        Err(error) => {
            let reason = format!("sidecar injection failed: {error}");
            (
                AdmissionResponse::deny(uid, reason.clone(), vec![]),
                Outcome::Failed(reason),
            )
        }
    }
}
