//! A small in-memory API server behind tower-test mock services: one mock
//! service per replica (so every request is attributed to the replica that
//! made it), one shared object store with resourceVersions and optimistic
//! concurrency, a log of every call, and fault injection.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

pub const NS: &str = "istio-system";

pub fn lease_path(name: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}")
}
pub fn mutating_path(name: &str) -> String {
    format!("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}")
}
pub fn validating_path(name: &str) -> String {
    format!("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{name}")
}
pub fn configmap_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/istio-ca-root-cert")
}
pub fn configmaps_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub replica: String,
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
    /// When it was served (tokio's clock).
    pub at: tokio::time::Instant,
}

impl Call {
    pub fn is_lease(&self) -> bool {
        self.path.contains("/leases")
    }
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// A one-shot canned error for the next matching request.
struct Fault {
    replica: String,
    method: String,
    path: String,
    status: u16,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    next_rv: u64,
    calls: Vec<Call>,
    faults: Vec<Fault>,
    /// Replicas whose lease requests all fail with 500.
    lease_outage: Vec<String>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

/// JSON merge patch, with lists of objects that have a `name` merged by name
/// (what a strategic merge patch does for webhooks; ConfigMaps have no lists).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter()
                .all(|e| e.get("name").is_some_and(Value::is_string)) =>
        {
            for pe in p {
                match t.iter_mut().find(|te| te.get("name") == pe.get("name")) {
                    Some(te) => merge(te, pe),
                    None => t.push(pe.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client for `replica`, served by this fake.
    pub fn client(&self, replica: &str) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let this = self.clone();
        let replica = replica.to_string();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = this.serve(&replica, request).await;
                send.send_response(response);
            }
        });
        kube::Client::new(service, NS)
    }

    /// Stores an object at `path` (its resourceVersion is assigned).
    pub fn seed(&self, path: &str, mut object: Value) {
        let mut st = self.state.lock().unwrap();
        st.next_rv += 1;
        object["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
        st.objects.insert(path.to_string(), object);
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Changes a stored object in place, bumping its resourceVersion (an
    /// outside writer).
    pub fn edit(&self, path: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.state.lock().unwrap();
        st.next_rv += 1;
        let rv = st.next_rv.to_string();
        let object = st.objects.get_mut(path).expect("object to edit");
        f(object);
        object["metadata"]["resourceVersion"] = json!(rv);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// Every call except those on Leases.
    pub fn job_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| !c.is_lease()).collect()
    }

    /// The next `method` request by `replica` on exactly `path` fails with `status`.
    pub fn fail_next(&self, replica: &str, method: &str, path: &str, status: u16) {
        self.state.lock().unwrap().faults.push(Fault {
            replica: replica.into(),
            method: method.into(),
            path: path.into(),
            status,
        });
    }

    /// All of `replica`'s lease requests fail with 500 from now on.
    pub fn lease_outage(&self, replica: &str) {
        self.state.lock().unwrap().lease_outage.push(replica.into());
    }

    async fn serve(&self, replica: &str, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Option<Value> =
            (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());

        let mut st = self.state.lock().unwrap();
        let (code, out) = Self::handle(&mut st, replica, &method, &path, body.as_ref());
        st.calls.push(Call {
            replica: replica.into(),
            method,
            path,
            content_type,
            body,
            status: code,
            at: tokio::time::Instant::now(),
        });
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&out).unwrap()))
            .unwrap()
    }

    fn handle(
        st: &mut State,
        replica: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        if let Some(i) = st
            .faults
            .iter()
            .position(|f| f.replica == replica && f.method == method && f.path == path)
        {
            let f = st.faults.remove(i);
            let reason = match f.status {
                404 => "NotFound",
                409 => "Conflict",
                _ => "InternalError",
            };
            return (f.status, status(f.status, reason, "injected"));
        }
        if path.contains("/leases") && st.lease_outage.iter().any(|r| r == replica) {
            return (500, status(500, "InternalError", "etcd unavailable"));
        }
        match method {
            "GET" => match st.objects.get(path) {
                Some(o) => (200, o.clone()),
                None => (404, status(404, "NotFound", "not found")),
            },
            "POST" => {
                let mut object = body.expect("POST body").clone();
                let name = object["metadata"]["name"]
                    .as_str()
                    .expect("name")
                    .to_string();
                let at = format!("{path}/{name}");
                if st.objects.contains_key(&at) {
                    return (409, status(409, "AlreadyExists", "already exists"));
                }
                st.next_rv += 1;
                object["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
                st.objects.insert(at, object.clone());
                (201, object)
            }
            "PUT" | "PATCH" => {
                let Some(current) = st.objects.get(path).cloned() else {
                    return (404, status(404, "NotFound", "not found"));
                };
                let body = body.expect("body");
                let wanted = &body["metadata"]["resourceVersion"];
                let have = &current["metadata"]["resourceVersion"];
                if (method == "PUT" || !wanted.is_null()) && wanted != have {
                    return (409, status(409, "Conflict", "the object has been modified"));
                }
                let mut next = if method == "PUT" {
                    body.clone()
                } else {
                    let mut o = current;
                    merge(&mut o, body);
                    o
                };
                st.next_rv += 1;
                next["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
                st.objects.insert(path.to_string(), next.clone());
                (200, next)
            }
            _ => (405, status(405, "MethodNotAllowed", "unsupported")),
        }
    }
}

/// A webhook configuration object with `entries` (name, failurePolicy), no caBundle.
pub fn webhook_config(kind: &str, name: &str, entries: &[(&str, &str)]) -> Value {
    let webhooks: Vec<Value> = entries
        .iter()
        .map(|(n, policy)| {
            json!({
                "name": n,
                "clientConfig": {"service": {"name": "galley", "namespace": NS, "path": "/validate"}},
                "failurePolicy": policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
            })
        })
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": name},
        "webhooks": webhooks,
    })
}
