//! Shared helpers for pilot's in-process tests: build a snapshot from YAML,
//! make proxies, and compare generated Envoy resources with golden JSON files.
#![allow(dead_code)]

use std::path::PathBuf;

use mesh_config::parse_all;
use pilot::model::{ConfigSet, MeshSettings, MeshSnapshot, Proxy, ProxyType};

/// A snapshot of the resources in `yaml` (multi-document Istio YAML).
pub fn snapshot_from_yaml(yaml: &str) -> MeshSnapshot {
    let resources = parse_all("test.yaml", yaml).unwrap_or_else(|errors| {
        panic!(
            "test config does not parse:\n{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let config = ConfigSet::from_resources(resources.into_iter().map(|r| r.resource));
    MeshSnapshot::from_config(config, MeshSettings::default())
}

/// An ingress gateway proxy in `istio-system` labelled `istio: ingressgateway`.
pub fn ingress_gateway() -> Proxy {
    Proxy {
        id: "router~10.1.0.1~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local"
            .into(),
        proxy_type: ProxyType::Router,
        ip_addresses: vec!["10.1.0.1".into()],
        pod_id: "istio-ingressgateway-1.istio-system".into(),
        namespace: "istio-system".into(),
        dns_domain: "istio-system.svc.cluster.local".into(),
        labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        cluster_id: "Kubernetes".into(),
        service_account: "istio-ingressgateway-service-account".into(),
        workload_name: "istio-ingressgateway".into(),
        interception_mode: "NONE".into(),
        istio_version: "1.28.0".into(),
        mesh_id: "cluster.local".into(),
    }
}

/// The sidecar of workload `client-1` in namespace `client`, labelled
/// `app: client`, with the given interception mode (`REDIRECT`, `NONE`).
pub fn client_sidecar(interception_mode: &str) -> Proxy {
    Proxy {
        id: "sidecar~10.1.0.5~client-1.client~client.svc.cluster.local".into(),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec!["10.1.0.5".into()],
        pod_id: "client-1.client".into(),
        namespace: "client".into(),
        dns_domain: "client.svc.cluster.local".into(),
        labels: [("app".to_string(), "client".to_string())].into(),
        cluster_id: "Kubernetes".into(),
        service_account: "client".into(),
        workload_name: "client".into(),
        interception_mode: interception_mode.into(),
        istio_version: "1.28.0".into(),
        mesh_id: "cluster.local".into(),
    }
}

/// Renders a prost message of Envoy's API as pretty proto3 JSON.
pub fn to_json<M: prost::Message + prost::Name>(message: &M) -> serde_json::Value {
    trireme_proto::json::message_to_json(message).expect("Envoy resources render as JSON")
}

/// Compares `actual` with `tests/golden/<name>.json`. With `UPDATE_GOLDEN=1`
/// the file is (re)written instead, for review in the diff.
pub fn assert_golden(name: &str, actual: &serde_json::Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    let rendered = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with UPDATE_GOLDEN=1 and review it",
            path.display()
        )
    });
    assert!(
        expected == rendered,
        "{name} differs from {} (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{rendered}",
        path.display()
    );
}

/// Envoy from `ENVOY_BIN` or `.tools/bin/envoy`, if installed.
pub fn envoy_binary() -> Option<PathBuf> {
    let configured = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty());
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/envoy");
    configured
        .map(Into::into)
        .or(Some(local))
        .filter(|p| p.exists())
}

/// A STATIC cluster on localhost speaking HTTP/2 (the ADS and SDS servers).
pub fn grpc_cluster(name: &str, port: u16) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "type": "STATIC",
        "connectTimeout": "1s",
        "typedExtensionProtocolOptions": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicitHttpConfig": {"http2ProtocolOptions": {}}
            }
        },
        "loadAssignment": {
            "clusterName": name,
            "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {
                "socketAddress": {"address": "127.0.0.1", "portValue": port}
            }}}]}]
        }
    })
}

/// Runs `envoy --mode validate` on `bootstrap` and fails with Envoy's words
/// if it refuses it.
pub fn assert_envoy_accepts(envoy: &std::path::Path, bootstrap: &serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.json");
    std::fs::write(&path, serde_json::to_vec_pretty(bootstrap).unwrap()).unwrap();
    let output = std::process::Command::new(envoy)
        .args(["--mode", "validate", "--log-level", "warning", "-c"])
        .arg(&path)
        .output()
        .expect("Envoy runs");
    assert!(
        output.status.success(),
        "Envoy rejects the generated config:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
