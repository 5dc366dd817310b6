//! The validating webhook's routes, in process, against captured
//! AdmissionReview requests under `tests/fixtures/admission/`.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use galley::webhook::handler::router;
use galley::webhook::{AdmissionObserver, Verdict, WebhookMetrics};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower::ServiceExt;

/// Remembers `(uid, allowed)` of every verdict it is told about.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, bool)>>);

impl AdmissionObserver for Recorder {
    fn observe(&self, verdict: &Verdict<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((verdict.request.uid.clone(), verdict.allowed));
    }
}

struct Webhook {
    router: axum::Router,
    registry: Registry,
    recorder: Arc<Recorder>,
}

impl Webhook {
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = WebhookMetrics::new(&mut registry);
        let recorder = Arc::new(Recorder::default());
        Self {
            router: router(metrics, recorder.clone()),
            registry,
            recorder,
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (StatusCode, String) {
        let response = self
            .router
            .clone()
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Posts a fixture to `/validate` and returns the AdmissionReview answer.
    async fn review(&self, fixture: &str) -> Value {
        let (status, body) = self.post("/validate", read_fixture(fixture)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }

    fn observed(&self) -> Vec<(String, bool)> {
        self.recorder.0.lock().unwrap().clone()
    }
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/admission/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn request_uid(fixture: &str) -> String {
    let request: Value = serde_json::from_slice(&read_fixture(fixture)).unwrap();
    request["request"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_valid_virtual_service_is_allowed() {
    let webhook = Webhook::new();
    let answer = webhook.review("allowed-v1.json").await;
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["uid"], request_uid("allowed-v1.json"));
    assert!(answer["response"].get("status").is_none(), "{answer}");
    assert!(
        webhook.metrics().contains(
            r#"galley_validation_passed_total{group="networking.istio.io",version="v1",resource="virtualservices"} 1"#
        ),
        "{}",
        webhook.metrics()
    );
    assert_eq!(webhook.observed(), [(request_uid("allowed-v1.json"), true)]);
}

#[tokio::test]
async fn an_invalid_weight_is_denied_with_its_field_path() {
    let webhook = Webhook::new();
    let answer = webhook.review("denied-weight.json").await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["uid"], request_uid("denied-weight.json"));
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(response["status"]["reason"], "BadRequest");
    assert_eq!(
        response["status"]["message"],
        "spec.http[0].route[1].weight: weight -10 is negative"
    );
    assert!(
        webhook.metrics().contains(
            r#"galley_validation_failed_total{group="networking.istio.io",version="v1",resource="virtualservices",reason="invalid_resource"} 1"#
        ),
        "{}",
        webhook.metrics()
    );
    assert_eq!(
        webhook.observed(),
        [(request_uid("denied-weight.json"), false)]
    );
}

#[tokio::test]
async fn an_unknown_field_is_denied_naming_it() {
    let webhook = Webhook::new();
    let answer = webhook.review("unknown-field.json").await;
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.mtls.mod: unknown field"),
        "{message}"
    );
    assert!(webhook.metrics().contains(r#"reason="decode_error"} 1"#));
}

#[tokio::test]
async fn a_malformed_body_is_refused_with_http_400_and_a_reason() {
    let webhook = Webhook::new();
    let (status, body) = webhook
        .post("/validate", read_fixture("malformed.json"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not a valid AdmissionReview"), "{body}");
    let (status, body) = webhook
        .post("/validate", br#"{"apiVersion":"v1","kind":"Pod"}"#.to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("unsupported AdmissionReview apiVersion"),
        "{body}"
    );
    assert!(
        webhook
            .metrics()
            .contains(r#"galley_validation_failed_total{group="",version="",resource="",reason="malformed_body"} 2"#),
        "{}",
        webhook.metrics()
    );
    assert!(webhook.observed().is_empty());
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let webhook = Webhook::new();
    let mut body = read_fixture("allowed-v1.json");
    body.resize(7 * 1024 * 1024, b' ');
    let (status, reason) = webhook.post("/validate", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason.contains("larger than"), "{reason}");
}

#[tokio::test]
async fn a_v1beta1_request_gets_a_v1beta1_answer_with_warnings() {
    let webhook = Webhook::new();
    let answer = webhook.review("v1beta1-warning.json").await;
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(
        answer["response"]["uid"],
        request_uid("v1beta1-warning.json")
    );
    assert_eq!(answer["response"]["allowed"], true);
    let warnings = answer["response"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("outlierDetection")),
        "{answer}"
    );
}

#[tokio::test]
async fn delete_is_allowed_unchecked() {
    let webhook = Webhook::new();
    let answer = webhook.review("delete.json").await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["uid"], request_uid("delete.json"));
}

#[tokio::test]
async fn a_dry_run_is_decided_but_leaves_no_trace() {
    let webhook = Webhook::new();
    let answer = webhook.review("dry-run-denied.json").await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["uid"],
        request_uid("dry-run-denied.json")
    );
    assert!(webhook.observed().is_empty(), "observer told of a dry run");
    assert!(
        !webhook
            .metrics()
            .contains("galley_validation_failed_total{"),
        "{}",
        webhook.metrics()
    );
}

#[tokio::test]
async fn kinds_trireme_does_not_know_are_allowed() {
    let webhook = Webhook::new();
    let answer = webhook.review("unknown-kind.json").await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["uid"], request_uid("unknown-kind.json"));
    assert!(
        webhook
            .metrics()
            .contains(r#"resource="configmaps",reason="unknown_type"} 1"#)
    );
}

#[tokio::test]
async fn istios_trailing_slash_path_is_served_too() {
    let webhook = Webhook::new();
    let (status, body) = webhook
        .post("/validate/", read_fixture("denied-weight.json"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false);
}

#[tokio::test]
async fn every_answer_echoes_its_request_uid() {
    let webhook = Webhook::new();
    for fixture in [
        "allowed-v1.json",
        "denied-weight.json",
        "v1beta1-warning.json",
        "delete.json",
        "dry-run-denied.json",
        "unknown-kind.json",
        "unknown-field.json",
    ] {
        let answer = webhook.review(fixture).await;
        assert_eq!(answer["response"]["uid"], request_uid(fixture), "{fixture}");
    }
}

/// The leader's probe (before it switches the webhook to `failurePolicy:
/// Fail`) is what the self-probe sends: galley's router must deny it, and
/// the probe's check must accept only that denial.
#[tokio::test]
async fn the_webhook_probe_is_denied_and_its_check_passes() {
    use galley::webhook::probe::{ProbeError, check_answer, probe_review};

    let webhook = Webhook::new();
    let sent = serde_json::to_vec(&probe_review("probe-1")).unwrap();
    let (status, body) = webhook.post("/validate", sent).await;
    check_answer("probe-1", status.as_u16(), body.as_bytes()).unwrap();

    // A webhook that allowed it, answered another request, or failed is
    // not fit to fail closed.
    let (status, body) = webhook
        .post("/validate", read_fixture("allowed-v1.json"))
        .await;
    let uid = request_uid("allowed-v1.json");
    assert!(matches!(
        check_answer(&uid, status.as_u16(), body.as_bytes()),
        Err(ProbeError::Allowed)
    ));
    let (status, body) = webhook
        .post(
            "/validate",
            serde_json::to_vec(&probe_review("probe-2")).unwrap(),
        )
        .await;
    assert!(matches!(
        check_answer("probe-3", status.as_u16(), body.as_bytes()),
        Err(ProbeError::Uid { .. })
    ));
    assert!(matches!(
        check_answer("probe-2", 500, body.as_bytes()),
        Err(ProbeError::Status(500))
    ));
}
