//! A stand-in for the Kubernetes API server's TokenReview endpoint, over
//! HTTPS: it checks the caller's bearer token, verifies the reviewed token
//! as an ES256 JWT of [`KUBE_ISSUER`] signed by its own key, and records
//! every request so tests can assert what citadel sent.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use citadel::auth::KubeApiConfig;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde_json::{Value, json};

use super::https::HttpsServer;
use super::jwt::Signer;

/// `iss` of the service-account tokens the fake API server signs.
pub const KUBE_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// A reviewed token the fake refuses to review: HTTP 403.
pub const FORBIDDEN_TOKEN: &str = "answer-403";
/// A reviewed token that makes the fake fail: HTTP 500 with a text body.
pub const BROKEN_TOKEN: &str = "answer-500";
/// A reviewed token the fake wrongly authenticates for audience `other`.
pub const LYING_TOKEN: &str = "answer-wrong-audience";

/// What citadel sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Clone)]
struct State {
    /// Key of the "cluster": tokens it signed are valid.
    key: Arc<DecodingKey>,
    /// The bearer token citadel must present.
    caller_token: Arc<Mutex<String>>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

pub struct FakeApiServer {
    pub server: HttpsServer,
    /// Signs service-account tokens the fake accepts.
    pub signer: Signer,
    /// citadel's own token, as citadel reads it.
    pub token_file: PathBuf,
    state: State,
    _dir: tempfile::TempDir,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let signer = Signer::new("kube");
        let jwk: Jwk = serde_json::from_value(signer.jwk()).unwrap();
        let state = State {
            key: Arc::new(DecodingKey::from_jwk(&jwk).unwrap()),
            caller_token: Arc::new(Mutex::new(String::new())),
            recorded: Arc::default(),
        };
        let handler_state = state.clone();
        let router = axum::Router::new().fallback(move |request: Request| {
            let state = handler_state.clone();
            async move { handle(state, request).await }
        });
        let dir = tempfile::tempdir().unwrap();
        let fake = Self {
            server: HttpsServer::start(router).await,
            signer,
            token_file: dir.path().join("citadel-token"),
            state,
            _dir: dir,
        };
        fake.set_caller_token("citadel-token-1");
        fake
    }

    /// What citadel's token file holds and the fake expects (a rotation).
    pub fn set_caller_token(&self, token: &str) {
        std::fs::write(&self.token_file, format!("{token}\n")).unwrap();
        *self.state.caller_token.lock().unwrap() = token.to_owned();
    }

    pub fn config(&self) -> KubeApiConfig {
        KubeApiConfig::new(
            self.server.url("/").parse().unwrap(),
            self.token_file.clone(),
            self.server.ca_file.clone(),
        )
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.recorded.lock().unwrap().clone()
    }

    /// A service-account token of this cluster with the given claims changed.
    pub fn token(&self, ns: &str, sa: &str, aud: &str, exp: u64) -> String {
        self.signer
            .token_with(super::jwt::claims(KUBE_ISSUER, aud, exp, ns, sa))
    }
}

async fn handle(state: State, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = to_bytes(body, 64 * 1024)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: body.clone(),
    };
    state.recorded.lock().unwrap().push(recorded.clone());

    if recorded.method != "POST" || recorded.path != TOKEN_REVIEWS {
        return status(
            StatusCode::NOT_FOUND,
            "the server could not find the requested resource",
        );
    }
    let expected = format!("Bearer {}", state.caller_token.lock().unwrap());
    if recorded.authorization.as_deref() != Some(expected.as_str()) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let audiences: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let review_status = match token {
        FORBIDDEN_TOKEN => {
            return status(
                StatusCode::FORBIDDEN,
                "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:istio-system:citadel\" cannot create resource \"tokenreviews\"",
            );
        }
        BROKEN_TOKEN => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "etcd is on fire").into_response();
        }
        LYING_TOKEN => json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:a:x"},
            "audiences": ["other"],
        }),
        token => review(&state.key, token, &audiences),
    };
    let answer = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {"creationTimestamp": null},
        "spec": body["spec"],
        "status": review_status,
    });
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

/// Verifies `token` as this cluster's service-account token for one of
/// `audiences`, answering as an API server's TokenReview status.
fn review(key: &DecodingKey, token: &str, audiences: &[String]) -> Value {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[KUBE_ISSUER]);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    match decode::<Value>(token, key, &validation) {
        Ok(data) => json!({
            "authenticated": true,
            "user": {
                "username": data.claims["sub"],
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "audiences": audiences,
        }),
        Err(error) => json!({
            "authenticated": false,
            "user": {},
            "error": format!("[invalid bearer token, {error}]"),
        }),
    }
}

fn status(code: StatusCode, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}
