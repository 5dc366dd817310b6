//! Verdicts written to the objects' `status` (`PILOT_ENABLE_ANALYSIS`),
//! against a tower-test mock of the API server: which requests galley
//! sends, to which path, with which body; and that it sends none when the
//! status already says it.

use std::sync::{Arc, Mutex};

use galley::intake::kube_watch::write_statuses;
use galley::intake::kubernetes::{KubernetesIntake, WatchEvent};
use galley::intake::status::StatusWriter;
use http::{Request, Response};
use kube::client::Body;
use mesh_config::Kind;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// A kube client whose requests are recorded and answered 200 with the
/// request's body, or 404 for paths containing `gone`.
fn mock_client() -> (kube::Client, Arc<Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let recorded = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            let content_type = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            recorded.lock().unwrap().push(Call {
                method,
                path: path.clone(),
                query,
                content_type,
                body: body.clone(),
            });
            let (code, out) = if path.contains("gone") {
                (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                )
            } else {
                let mut object = body;
                object["apiVersion"] = json!("networking.istio.io/v1");
                object["kind"] = json!("VirtualService");
                object["metadata"] = json!({"name": "x", "namespace": "shop"});
                (200, object)
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&out).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "istio-system"), calls)
}

fn virtual_service(name: &str, weight: i64, generation: i64, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "shop", "generation": generation, "resourceVersion": "5"},
        "spec": {"hosts": ["catalog"], "http": [{"route": [
            {"destination": {"host": "catalog"}, "weight": weight}
        ]}]}
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

fn policy(generation: i64, status: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "strict", "namespace": "shop", "generation": generation},
        "spec": {"mtls": {"mode": "STRICT"}},
        "status": status
    })
}

fn synced_intake() -> KubernetesIntake {
    let mut intake = KubernetesIntake::new(Kind::ALL.iter().copied());
    for &kind in Kind::ALL {
        intake.apply(kind, WatchEvent::Init);
        intake.apply(kind, WatchEvent::InitDone);
    }
    intake
}

fn take(calls: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
    std::mem::take(&mut *calls.lock().unwrap())
}

#[tokio::test]
async fn a_rejected_resource_gets_istio_validation_messages_once() {
    let (client, calls) = mock_client();
    let writer = StatusWriter::new(client);
    let mut intake = synced_intake();
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("bad", -1, 3, None)),
    );
    // Already carries its verdict for this generation: nothing to write.
    intake.apply(
        Kind::PeerAuthentication,
        WatchEvent::Apply(policy(2, json!({"observedGeneration": 2}))),
    );

    assert!(write_statuses(&writer, &mut intake).await);
    let sent = take(&calls);
    assert_eq!(sent.len(), 1, "{sent:#?}");
    let call = &sent[0];
    assert_eq!(call.method, "PATCH");
    assert_eq!(
        call.path,
        "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/bad/status"
    );
    assert_eq!(call.content_type, "application/merge-patch+json");
    assert!(call.query.contains("fieldManager=galley"), "{}", call.query);
    let status = &call.body["status"];
    assert_eq!(status["observedGeneration"], 3);
    let messages = status["validationMessages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["type"]["code"], "IST0106");
    assert_eq!(messages[0]["type"]["name"], "SchemaValidationError");
    assert_eq!(messages[0]["level"], "ERROR");
    assert!(messages[0]["message"].as_str().unwrap().contains("weight"));
    assert_eq!(
        call.body.as_object().unwrap().len(),
        1,
        "only status is patched"
    );

    // Written: not again, neither now nor when the watch brings it back.
    assert!(write_statuses(&writer, &mut intake).await);
    let echoed = virtual_service("bad", -1, 3, Some(status.clone()));
    intake.apply(Kind::VirtualService, WatchEvent::Apply(echoed));
    assert!(write_statuses(&writer, &mut intake).await);
    assert!(take(&calls).is_empty());

    // Fixed in generation 4: the messages are cleared.
    let fixed = virtual_service("bad", 100, 4, Some(status.clone()));
    intake.apply(Kind::VirtualService, WatchEvent::Apply(fixed));
    assert!(write_statuses(&writer, &mut intake).await);
    let sent = take(&calls);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        json!({"status": {"validationMessages": null, "observedGeneration": 4}})
    );
}

#[tokio::test]
async fn other_versions_kinds_and_vanished_objects() {
    let (client, calls) = mock_client();
    let writer = StatusWriter::new(client);
    let mut intake = synced_intake();
    // A PeerAuthentication galley has not judged yet at this generation.
    intake.apply(
        Kind::PeerAuthentication,
        WatchEvent::Apply(policy(7, json!({"observedGeneration": 6}))),
    );
    // Deleted before its status could be written: 404 is not retried.
    intake.apply(
        Kind::VirtualService,
        WatchEvent::Apply(virtual_service("gone", -1, 1, None)),
    );
    assert!(write_statuses(&writer, &mut intake).await);
    let mut paths: Vec<(String, Value)> = take(&calls)
        .into_iter()
        .map(|call| (call.path, call.body))
        .collect();
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert_eq!(
        paths[0].0,
        "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/gone/status"
    );
    assert_eq!(
        paths[1],
        (
            "/apis/security.istio.io/v1/namespaces/shop/peerauthentications/strict/status".into(),
            json!({"status": {"observedGeneration": 7}})
        )
    );
}
