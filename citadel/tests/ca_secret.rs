//! citadel's in-cluster root in `istio-ca-secret`, against a fake API server
//! behind a tower-test mock (the pattern of libs/kube-singleton's tests):
//! an existing Secret is used as is, an absent one is created with Istio's
//! type and keys, a lost creation race adopts the winner's root, and a
//! malformed Secret is reported by key and never overwritten.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use citadel::authority::{CaFiles, RootKey, create_self_signed_root};
use citadel::kube_ca::{CA_SECRET_TYPE, CaSecretError, CaSecretOutcome, load_or_create};
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

const NS: &str = "istio-system";
const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const SECRET: &str = "/api/v1/namespaces/istio-system/secrets/istio-ca-secret";

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    /// (method, path, status)
    calls: Vec<(String, String, u16)>,
    bodies: Vec<Value>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": reason, "reason": reason, "code": code})
}

impl FakeApi {
    fn client(&self) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let this = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                send.send_response(this.serve(request).await);
            }
        });
        kube::Client::new(service, NS)
    }

    async fn serve(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Option<Value> =
            (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
        let mut st = self.0.lock().unwrap();
        let (code, out) = match method.as_str() {
            "GET" => match st.objects.get(&path) {
                Some(object) => (200, object.clone()),
                None => (404, status(404, "NotFound")),
            },
            "POST" => {
                let object = body.clone().expect("POST body");
                let at = format!("{path}/{}", object["metadata"]["name"].as_str().unwrap());
                match st.objects.entry(at) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        (409, status(409, "AlreadyExists"))
                    }
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(object.clone());
                        (201, object)
                    }
                }
            }
            _ => (405, status(405, "MethodNotAllowed")),
        };
        st.calls.push((method, path, code));
        if let Some(body) = body {
            st.bodies.push(body);
        }
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&out).unwrap()))
            .unwrap()
    }

    fn seed(&self, object: Value) {
        self.0
            .lock()
            .unwrap()
            .objects
            .insert(SECRET.to_owned(), object);
    }

    fn stored(&self) -> Option<Value> {
        self.0.lock().unwrap().objects.get(SECRET).cloned()
    }

    fn calls(&self) -> Vec<(String, String, u16)> {
        self.0.lock().unwrap().calls.clone()
    }
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn root() -> CaFiles {
    create_self_signed_root("Trireme", RootKey::GenerateEcdsaP256).unwrap()
}

/// The Secret as Istio writes it, in the API server's JSON.
fn secret_json(files: &CaFiles) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "istio-ca-secret", "namespace": NS, "resourceVersion": "1"},
        "type": "istio.io/ca-root",
        "data": {
            "ca-cert.pem": b64(&files.ca_cert),
            "ca-key.pem": b64(&files.ca_key),
            "cert-chain.pem": "",
            "root-cert.pem": b64(&files.root_cert),
        }
    })
}

fn call(method: &str, path: &str, status: u16) -> (String, String, u16) {
    (method.to_owned(), path.to_owned(), status)
}

#[tokio::test]
async fn an_existing_secret_is_used_and_nothing_is_created() {
    let api = FakeApi::default();
    let theirs = root();
    api.seed(secret_json(&theirs));
    let (files, outcome) = load_or_create(api.client(), NS, || panic!("no root is made"))
        .await
        .unwrap();
    assert_eq!(outcome, CaSecretOutcome::Existing);
    assert_eq!(files.ca_cert, theirs.ca_cert);
    assert_eq!(files.ca_key, theirs.ca_key);
    assert_eq!(files.root_cert, theirs.root_cert);
    assert_eq!(api.calls(), [call("GET", SECRET, 200)]);
}

#[tokio::test]
async fn an_absent_secret_is_created_with_istios_type_and_keys() {
    let api = FakeApi::default();
    let made = root();
    let (files, outcome) = load_or_create(api.client(), NS, || Ok(made.clone()))
        .await
        .unwrap();
    assert_eq!(outcome, CaSecretOutcome::Created);
    assert_eq!(files, made);
    assert_eq!(
        api.calls(),
        [call("GET", SECRET, 404), call("POST", SECRETS, 201)]
    );
    let stored = api.stored().expect("the Secret was created");
    assert_eq!(stored["type"], CA_SECRET_TYPE);
    assert_eq!(stored["metadata"]["name"], "istio-ca-secret");
    assert_eq!(stored["metadata"]["namespace"], NS);
    let data = stored["data"].as_object().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    assert_eq!(data["ca-cert.pem"], b64(&made.ca_cert));
    assert_eq!(data["ca-key.pem"], b64(&made.ca_key));
    assert_eq!(data["root-cert.pem"], b64(&made.ca_cert));
    assert_eq!(data["cert-chain.pem"], "");
}

#[tokio::test]
async fn a_lost_creation_race_adopts_the_winners_root() {
    let api = FakeApi::default();
    let winner = root();
    let ours = root();
    // Another replica creates the Secret between our read and our create.
    let racer = api.clone();
    let winners_secret = secret_json(&winner);
    let (files, outcome) = load_or_create(api.client(), NS, move || {
        racer.seed(winners_secret);
        Ok(ours)
    })
    .await
    .unwrap();
    assert_eq!(outcome, CaSecretOutcome::CreatedByAnotherReplica);
    assert_eq!(files.ca_cert, winner.ca_cert);
    assert_eq!(files.ca_key, winner.ca_key);
    assert_eq!(
        api.calls(),
        [
            call("GET", SECRET, 404),
            call("POST", SECRETS, 409),
            call("GET", SECRET, 200),
        ]
    );
    assert_eq!(
        api.stored().unwrap(),
        secret_json(&winner),
        "never overwritten"
    );
}

#[tokio::test]
async fn two_replicas_starting_together_share_one_root() {
    let api = FakeApi::default();
    let (a, b) = tokio::join!(
        load_or_create(api.client(), NS, || Ok(root())),
        load_or_create(api.client(), NS, || Ok(root())),
    );
    let ((a, _), (b, _)) = (a.unwrap(), b.unwrap());
    assert_eq!(a.ca_cert, b.ca_cert);
    assert_eq!(a.ca_key, b.ca_key);
    let creates = api
        .calls()
        .iter()
        .filter(|(m, _, s)| m == "POST" && *s == 201)
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn a_secret_without_a_key_is_an_error_naming_it_and_is_left_alone() {
    let api = FakeApi::default();
    let mut secret = secret_json(&root());
    secret["data"].as_object_mut().unwrap().remove("ca-key.pem");
    api.seed(secret.clone());
    let error = load_or_create(api.client(), NS, || panic!("no root is made"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            CaSecretError::MissingKey {
                key: "ca-key.pem",
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("istio-system/istio-ca-secret"),
        "{message}"
    );
    assert!(message.contains("ca-key.pem"), "{message}");
    assert_eq!(api.calls(), [call("GET", SECRET, 200)]);
    assert_eq!(api.stored().unwrap(), secret);
}

#[tokio::test]
async fn a_secret_with_a_broken_certificate_is_an_error_naming_the_key() {
    let api = FakeApi::default();
    let mut secret = secret_json(&root());
    secret["data"]["ca-cert.pem"] = json!(b64(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    ));
    api.seed(secret.clone());
    let error = load_or_create(api.client(), NS, || panic!("no root is made"))
        .await
        .unwrap_err();
    assert!(matches!(error, CaSecretError::Invalid { .. }), "{error:?}");
    assert!(error.to_string().contains("ca-cert.pem"), "{error}");
    assert!(api.calls().iter().all(|(m, _, _)| m == "GET"));
    assert_eq!(api.stored().unwrap(), secret);

    // A key that does not belong to the certificate.
    let api = FakeApi::default();
    let mut secret = secret_json(&root());
    secret["data"]["ca-key.pem"] = json!(b64(&root().ca_key));
    api.seed(secret.clone());
    let error = load_or_create(api.client(), NS, || panic!("no root is made"))
        .await
        .unwrap_err();
    assert!(matches!(error, CaSecretError::Invalid { .. }), "{error:?}");
    assert_eq!(api.stored().unwrap(), secret);
}
