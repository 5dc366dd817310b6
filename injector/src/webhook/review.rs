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

/// Where the API server says the pod runs, from the webhook URL's path
/// (`/inject/cluster/<id>/net/<network>`, as Istio's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    pub cluster_id: Option<String>,
    pub network: Option<String>,
}

impl Site {
    /// Reads `cluster/<id>/net/<network>` (either pair, any order); other
    /// pairs are ignored, as Istio does.
    pub fn from_path(params: &str) -> Self {
        let parts: Vec<&str> = params.split('/').filter(|p| !p.is_empty()).collect();
        let mut site = Site::default();
        for pair in parts.chunks(2) {
            if let [key, value] = pair {
                match *key {
                    "cluster" => site.cluster_id = Some((*value).to_string()),
                    "net" => site.network = Some((*value).to_string()),
                    _ => {}
                }
            }
        }
        site
    }
}

/// Decodes `body` and injects its pod. `Err` only when the body is not an
/// `AdmissionReview` at all.
pub fn review(injector: &Injector, body: &[u8]) -> Result<Reviewed, MalformedBody> {
    review_at(injector, body, &Site::default())
}

/// As [`review`], for a pod at `site`.
pub fn review_at(injector: &Injector, body: &[u8], site: &Site) -> Result<Reviewed, MalformedBody> {
    let (api_version, request) = decode_review(body)?;
    let (response, outcome) = decide(injector, &request, site);
    Ok(Reviewed {
        answer: response.into_review(&api_version),
        request,
        outcome,
    })
}

fn decide(
    injector: &Injector,
    request: &AdmissionRequest,
    site: &Site,
) -> (AdmissionResponse, Outcome) {
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
        cluster_id: site.cluster_id.clone(),
        network: site.network.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_cluster_and_network() {
        assert_eq!(
            Site::from_path("cluster/c2/net/network1"),
            Site {
                cluster_id: Some("c2".into()),
                network: Some("network1".into())
            }
        );
        assert_eq!(
            Site::from_path("net/n/other"),
            Site {
                cluster_id: None,
                network: Some("n".into())
            }
        );
        assert_eq!(Site::from_path(""), Site::default());
    }
}
