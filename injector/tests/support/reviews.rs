//! AdmissionReview requests as the API server sends them to the injector,
//! around pods shaped like real workloads.

use admission_webhook::admission::AdmissionResponse;
use serde_json::{Value, json};

pub const V1: &str = "admission.k8s.io/v1";
pub const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The core group's Pod, as `request.kind`.
pub fn pod_kind() -> Value {
    json!({"group": "", "version": "v1", "kind": "Pod"})
}

/// An AdmissionReview of `api_version` for `operation` on an object of
/// `kind` in namespace `default`; `object` absent when `None`.
pub fn review(
    api_version: &str,
    uid: &str,
    operation: &str,
    kind: Value,
    object: Option<Value>,
) -> Value {
    let resource = format!(
        "{}s",
        kind["kind"].as_str().unwrap_or_default().to_lowercase()
    );
    let mut request = json!({
        "uid": uid,
        "kind": kind,
        "resource": {"group": kind["group"], "version": kind["version"], "resource": resource},
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "dryRun": false
    });
    if let Some(object) = object {
        request["object"] = object;
    }
    json!({"apiVersion": api_version, "kind": "AdmissionReview", "request": request})
}

/// A v1 CREATE of `pod`.
pub fn pod_create(uid: &str, pod: Value) -> Value {
    review(V1, uid, "CREATE", pod_kind(), Some(pod))
}

/// A pod of bookinfo's `reviews-v1` Deployment as its ReplicaSet creates
/// it: one container with ports, probes, resources, volumes and a few
/// annotations.
pub fn typical_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-7f9c8d6b5d-",
            "namespace": "default",
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "7f9c8d6b5d"},
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9080",
                "sidecar.istio.io/proxyCPU": "50m"
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7f9c8d6b5d",
                "uid": "b1c7e8a2-4f0e-4c1e-9d7a-1f2e3d4c5b6a", "controller": true, "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [{
                "name": "reviews",
                "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.2",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 9080, "protocol": "TCP"}],
                "env": [{"name": "LOG_DIR", "value": "/tmp/logs"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}, "initialDelaySeconds": 5, "periodSeconds": 10},
                "livenessProbe": {"httpGet": {"path": "/health", "port": 9080}, "periodSeconds": 15},
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "securityContext": {"runAsUser": 1000},
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "wlp-output", "mountPath": "/opt/ibm/wlp/output"}
                ]
            }],
            "volumes": [{"name": "wlp-output", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst"
        }
    })
}

/// The JSON Patch an answer carries, decoded; `None` without one.
pub fn patch_of(answer: &Value) -> Option<json_patch::Patch> {
    let response: AdmissionResponse =
        serde_json::from_value(answer["response"].clone()).expect("an AdmissionResponse");
    let text = response.patch_json()?.expect("the patch is base64");
    Some(serde_json::from_slice(&text).expect("the patch is a JSON Patch"))
}

/// `pod` with `patch` applied.
pub fn patched(pod: &Value, patch: &json_patch::Patch) -> Value {
    let mut pod = pod.clone();
    json_patch::patch(&mut pod, patch).expect("the patch applies to the pod");
    pod
}

/// The names of `spec.<list>` of `pod`.
pub fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
