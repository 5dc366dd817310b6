//! The injection webhook's routes in process (no TLS): what the API server
//! gets back for pods to inject, pods to leave alone, pods to refuse and
//! bodies that are not AdmissionReviews, and the metrics those leave.

mod support;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use injector::webhook::InjectionMetrics;
use injector::webhook::handler::router;
use injector::{Injector, InjectorConfig, SidecarTemplate};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tower::ServiceExt;

use support::reviews::{
    V1, V1BETA1, names, patch_of, patched, pod_create, pod_kind, review, typical_pod,
};

struct Webhook {
    router: axum::Router,
    registry: Registry,
}

impl Webhook {
    /// The built-in template and Istio's default configuration.
    fn new() -> Self {
        let mut registry = Registry::default();
        let metrics = InjectionMetrics::new(&mut registry);
        let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
        Self {
            router: router(Arc::new(injector), metrics),
            registry,
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> (StatusCode, String) {
        let request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    /// Posts `review` to `path`; the AdmissionReview answer (HTTP 200).
    async fn answer_at(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, review.to_string().into_bytes()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn answer(&self, review: &Value) -> Value {
        self.answer_at("/inject", review).await
    }

    /// Posts `body` to `/inject` expecting HTTP 400; the reason given.
    async fn refusal(&self, body: Vec<u8>) -> String {
        let (status, reason) = self.post("/inject", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
        assert!(!reason.is_empty());
        reason
    }

    fn metrics(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text
    }
}

/// Asserts `answer` allows the request of `uid` without changing it.
fn assert_allowed_unchanged(answer: &Value, uid: &str) {
    let response = &answer["response"];
    assert_eq!(response["uid"], uid, "{answer}");
    assert_eq!(response["allowed"], true, "{answer}");
    assert!(response.get("patch").is_none(), "{answer}");
    assert!(response.get("patchType").is_none(), "{answer}");
}

/// Asserts `answer` injects `pod`; the pod as patched.
fn assert_injected(answer: &Value, uid: &str, pod: &Value) -> Value {
    let response = &answer["response"];
    assert_eq!(response["uid"], uid, "{answer}");
    assert_eq!(response["allowed"], true, "{answer}");
    assert_eq!(response["patchType"], "JSONPatch", "{answer}");
    let injected = patched(pod, &patch_of(answer).expect("a patch"));
    assert_eq!(names(&injected, "initContainers"), ["istio-init"]);
    assert_eq!(names(&injected, "containers"), ["reviews", "istio-proxy"]);
    injected
}

fn with_label(mut pod: Value, key: &str, value: &str) -> Value {
    pod["metadata"]["labels"][key] = json!(value);
    pod
}

#[tokio::test]
async fn a_v1_pod_creation_gets_a_patch_that_adds_the_sidecar() {
    let webhook = Webhook::new();
    let pod = typical_pod();
    let answer = webhook.answer(&pod_create("uid-v1", pod.clone())).await;
    assert_eq!(answer["apiVersion"], V1);
    assert_eq!(answer["kind"], "AdmissionReview");
    let injected = assert_injected(&answer, "uid-v1", &pod);

    // What the patch adds beyond the containers: mesh labels, the status
    // annotation, Istio's volumes, and the app's probes sent through the agent.
    let labels = &injected["metadata"]["labels"];
    assert_eq!(labels["service.istio.io/canonical-name"], "reviews");
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    assert!(injected["metadata"]["annotations"]["sidecar.istio.io/status"].is_string());
    assert!(names(&injected, "volumes").contains(&"istio-envoy".to_string()));
    assert_eq!(
        injected["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        15020
    );
    // The annotation asked for 50m of CPU for the proxy.
    assert_eq!(
        injected["spec"]["containers"][1]["resources"]["requests"]["cpu"],
        "50m"
    );
}

#[tokio::test]
async fn a_v1beta1_review_is_answered_as_v1beta1() {
    let webhook = Webhook::new();
    let pod = typical_pod();
    let request = review(V1BETA1, "uid-beta", "CREATE", pod_kind(), Some(pod.clone()));
    let answer = webhook.answer(&request).await;
    assert_eq!(answer["apiVersion"], V1BETA1);
    assert_injected(&answer, "uid-beta", &pod);
}

#[tokio::test]
async fn pods_that_opt_out_or_use_the_host_network_are_allowed_unchanged() {
    let webhook = Webhook::new();
    let opted_out = with_label(typical_pod(), "sidecar.istio.io/inject", "false");
    let answer = webhook.answer(&pod_create("uid-out", opted_out)).await;
    assert_allowed_unchanged(&answer, "uid-out");

    let mut host_network = typical_pod();
    host_network["spec"]["hostNetwork"] = json!(true);
    let answer = webhook.answer(&pod_create("uid-host", host_network)).await;
    assert_allowed_unchanged(&answer, "uid-host");
}

#[tokio::test]
async fn updates_and_other_kinds_are_allowed_unchanged() {
    let webhook = Webhook::new();
    let update = review(V1, "uid-upd", "UPDATE", pod_kind(), Some(typical_pod()));
    assert_allowed_unchanged(&webhook.answer(&update).await, "uid-upd");

    let deployment_kind = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let deployment = json!({"kind": "Deployment", "spec": {"template": typical_pod()}});
    let create = review(V1, "uid-dep", "CREATE", deployment_kind, Some(deployment));
    assert_allowed_unchanged(&webhook.answer(&create).await, "uid-dep");
}

#[tokio::test]
async fn a_bad_annotation_is_denied_naming_it() {
    let webhook = Webhook::new();
    let mut pod = typical_pod();
    pod["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] = json!("lots");
    let answer = webhook.answer(&pod_create("uid-bad", pod)).await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "uid-bad");
    assert_eq!(response["allowed"], false);
    assert!(response.get("patch").is_none(), "{answer}");
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("sidecar.istio.io/proxyCPU"), "{message}");
}

#[tokio::test]
async fn a_pod_creation_without_its_object_is_denied() {
    let webhook = Webhook::new();
    let request = review(V1, "uid-none", "CREATE", pod_kind(), None);
    let answer = webhook.answer(&request).await;
    assert_eq!(answer["response"]["uid"], "uid-none");
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("request.object"), "{message}");
}

#[tokio::test]
async fn bodies_that_are_not_admission_reviews_get_http_400_with_the_reason() {
    let webhook = Webhook::new();
    let reason = webhook.refusal(b"pod please".to_vec()).await;
    assert!(reason.contains("not a valid AdmissionReview"), "{reason}");

    let mut wrong_version = pod_create("u", typical_pod());
    wrong_version["apiVersion"] = json!("admission.k8s.io/v2");
    let reason = webhook.refusal(wrong_version.to_string().into()).await;
    assert!(reason.contains("admission.k8s.io/v2"), "{reason}");

    let mut wrong_kind = pod_create("u", typical_pod());
    wrong_kind["kind"] = json!("Pod");
    let reason = webhook.refusal(wrong_kind.to_string().into()).await;
    assert!(reason.contains("is not AdmissionReview"), "{reason}");

    let no_request = json!({"apiVersion": V1, "kind": "AdmissionReview"});
    let reason = webhook.refusal(no_request.to_string().into()).await;
    assert!(reason.contains("no request"), "{reason}");

    // A valid review padded past the 6 MiB limit is refused unread.
    let mut huge = pod_create("u", typical_pod()).to_string().into_bytes();
    huge.resize(6 * 1024 * 1024 + 1, b' ');
    let reason = webhook.refusal(huge).await;
    assert!(reason.contains("larger than 6291456 bytes"), "{reason}");
}

/// The `value` of `name` in the istio-proxy container's environment.
fn proxy_env<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "istio-proxy")?["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[tokio::test]
async fn istios_path_names_the_pods_cluster_and_network() {
    let webhook = Webhook::new();
    let pod = typical_pod();
    let answer = webhook
        .answer_at(
            "/inject/cluster/c2/net/network1",
            &pod_create("uid-path", pod.clone()),
        )
        .await;
    let injected = assert_injected(&answer, "uid-path", &pod);
    assert_eq!(proxy_env(&injected, "ISTIO_META_CLUSTER_ID"), Some("c2"));
    assert_eq!(proxy_env(&injected, "ISTIO_META_NETWORK"), Some("network1"));
    let answer = webhook
        .answer_at("/inject/", &pod_create("uid-slash", pod.clone()))
        .await;
    let injected = assert_injected(&answer, "uid-slash", &pod);
    assert_eq!(
        proxy_env(&injected, "ISTIO_META_CLUSTER_ID"),
        Some("Kubernetes")
    );
    assert_eq!(proxy_env(&injected, "ISTIO_META_NETWORK"), None);
}

#[tokio::test]
async fn metrics_count_each_outcome() {
    let webhook = Webhook::new();
    // Two injected, two skipped, one denied, two malformed.
    for uid in ["a", "b"] {
        webhook.answer(&pod_create(uid, typical_pod())).await;
    }
    let opted_out = with_label(typical_pod(), "sidecar.istio.io/inject", "false");
    webhook.answer(&pod_create("c", opted_out)).await;
    let update = review(V1, "d", "UPDATE", pod_kind(), Some(typical_pod()));
    webhook.answer(&update).await;
    webhook
        .answer(&review(V1, "e", "CREATE", pod_kind(), None))
        .await;
    webhook.refusal(b"{".to_vec()).await;
    webhook.refusal(b"[]".to_vec()).await;

    let text = webhook.metrics();
    for line in [
        "sidecar_injection_requests_total 7\n",
        "sidecar_injection_success_total 2\n",
        "sidecar_injection_skip_total 2\n",
        "sidecar_injection_failure_total{type=\"inject\"} 1\n",
        "sidecar_injection_failure_total{type=\"malformed_body\"} 2\n",
        "sidecar_injection_time_seconds_count 7\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
