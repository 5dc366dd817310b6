//! Gateway listeners (LDS) generated from Gateways and the VirtualServices
//! bound to them, compared with golden proto3 JSON in `tests/golden/`
//! (rewrite with `UPDATE_GOLDEN=1` and review the diff), plus plain
//! assertions on what each case is about.

mod support;

use pilot::translate::listeners::gateway_listeners;
use serde_json::Value;
use support::{assert_golden, ingress_gateway, snapshot_from_yaml, to_json};

const BACKENDS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: shop}
spec:
  hosts: [db.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  endpoints: [{address: 10.0.0.2}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 443, name: tls, protocol: TLS}]
  endpoints: [{address: 10.0.0.3}]
";

const GATEWAY: &str = "
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop-gw, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [shop.example.com]
  - port: {number: 80, name: http-alt, protocol: HTTP}
    hosts: [admin.example.com]
  - port: {number: 443, name: https-shop, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/shop.pem, privateKey: /etc/certs/shop-key.pem}
  - port: {number: 443, name: https-partner, protocol: HTTPS}
    hosts: [partner.example.com]
    tls: {mode: MUTUAL, credentialName: partner-cert}
  - port: {number: 8443, name: tls-legacy, protocol: TLS}
    hosts: [legacy.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 5432, name: tcp-db, protocol: TCP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: shop}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 9999, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  gateways: [shop-gw]
  tls:
  - match: [{sniHosts: [legacy.example.com], port: 8443}]
    route: [{destination: {host: legacy.example.com, port: {number: 443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: shop}
spec:
  hosts: ['*']
  gateways: [shop-gw]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db.shop.svc.cluster.local}, weight: 90}
    - {destination: {host: db.shop.svc.cluster.local, subset: canary}, weight: 10}
";

fn listeners() -> Vec<Value> {
    let snapshot = snapshot_from_yaml(&format!("{BACKENDS}{GATEWAY}"));
    gateway_listeners(&snapshot, &ingress_gateway())
        .iter()
        .map(to_json)
        .collect()
}

fn listener(all: &[Value], port: u32) -> &Value {
    all.iter()
        .find(|l| l["name"] == format!("0.0.0.0_{port}"))
        .unwrap_or_else(|| panic!("no listener on {port}"))
}

fn filter_names(chain: &Value) -> Vec<&str> {
    chain["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect()
}

#[test]
fn gateway_listeners_match_golden() {
    let all = listeners();
    assert_golden("listeners_gateway", &Value::Array(all));
}

#[test]
fn one_listener_per_port_of_the_selected_gateways_only() {
    let all = listeners();
    let names: Vec<&str> = all.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["0.0.0.0_80", "0.0.0.0_443", "0.0.0.0_5432", "0.0.0.0_8443"]
    );
}

#[test]
fn plain_http_servers_on_a_port_share_one_route_table() {
    let all = listeners();
    let chains = listener(&all, 80)["filterChains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    let manager = &chains[0]["filters"][0]["typedConfig"];
    assert_eq!(manager["rds"]["routeConfigName"], "http.80");
    let filters: Vec<&str> = manager["httpFilters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "envoy.filters.http.router"
        ]
    );
}

#[test]
fn https_servers_terminate_tls_per_sni_with_their_own_routes() {
    let all = listeners();
    let chains = listener(&all, 443)["filterChains"].as_array().unwrap();
    assert_eq!(chains.len(), 2);
    let shop = &chains[0];
    assert_eq!(
        shop["filterChainMatch"]["serverNames"][0],
        "shop.example.com"
    );
    assert_eq!(
        shop["filters"][0]["typedConfig"]["rds"]["routeConfigName"],
        "https.443.https-shop.shop-gw.shop"
    );
    let shop_tls = &shop["transportSocket"]["typedConfig"];
    assert_eq!(
        shop_tls["commonTlsContext"]["tlsCertificates"][0]["certificateChain"]["filename"],
        "/etc/certs/shop.pem"
    );
    let partner_tls = &chains[1]["transportSocket"]["typedConfig"];
    assert_eq!(partner_tls["requireClientCertificate"], true);
    assert_eq!(
        partner_tls["commonTlsContext"]["tlsCertificateSdsSecretConfigs"][0]["name"],
        "kubernetes://partner-cert"
    );
    assert_eq!(
        listener(&all, 443)["listenerFilters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
}

#[test]
fn passthrough_and_tcp_servers_forward_to_their_routes() {
    let all = listeners();
    let passthrough = &listener(&all, 8443)["filterChains"][0];
    assert_eq!(
        passthrough["filterChainMatch"]["serverNames"][0],
        "legacy.example.com"
    );
    assert_eq!(
        filter_names(passthrough),
        ["envoy.filters.network.tcp_proxy"]
    );
    assert_eq!(
        passthrough["filters"][0]["typedConfig"]["cluster"],
        "outbound|443||legacy.example.com"
    );
    let tcp = &listener(&all, 5432)["filterChains"][0];
    let weighted = &tcp["filters"][0]["typedConfig"]["weightedClusters"]["clusters"];
    assert_eq!(
        weighted[0]["name"],
        "outbound|5432||db.shop.svc.cluster.local"
    );
    assert_eq!(
        weighted[1]["name"],
        "outbound|5432|canary|db.shop.svc.cluster.local"
    );
    assert_eq!(weighted[1]["weight"], 10);
}

/// The golden listeners, with the certificate files they name made real,
/// must pass `envoy --mode validate`. Skipped without Envoy.
#[test]
fn envoy_accepts_the_gateway_listeners() {
    let Some(envoy) = support::envoy_binary() else {
        eprintln!("skipped: no Envoy (set ENVOY_BIN or run make tools)");
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (
        certs.path().join("shop.pem"),
        certs.path().join("shop-key.pem"),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=shop.example.com",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let listeners = serde_json::to_string(&listeners())
        .unwrap()
        .replace("/etc/certs/shop.pem", cert.to_str().unwrap())
        .replace("/etc/certs/shop-key.pem", key.to_str().unwrap());
    let listeners: Value = serde_json::from_str(&listeners).unwrap();
    let bootstrap = serde_json::json!({
        "node": {"id": ingress_gateway().id, "cluster": "istio-ingressgateway.istio-system"},
        "dynamicResources": {"adsConfig": {
            "apiType": "GRPC",
            "transportApiVersion": "V3",
            "grpcServices": [{"envoyGrpc": {"clusterName": "xds-grpc"}}]
        }},
        "staticResources": {
            "listeners": listeners,
            "clusters": [support::grpc_cluster("xds-grpc", 15010), support::grpc_cluster("sds-grpc", 15099)]
        }
    });
    support::assert_envoy_accepts(&envoy, &bootstrap);
}

#[test]
fn an_https_server_without_tls_settings_does_not_take_its_port_down() {
    let yaml = format!(
        "{BACKENDS}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https-broken, protocol: HTTPS}}
    hosts: [broken.example.com]
  - port: {{number: 443, name: https-shop, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, credentialName: shop-cert}}
"
    );
    let snapshot = snapshot_from_yaml(&yaml);
    let listeners: Vec<Value> = gateway_listeners(&snapshot, &ingress_gateway())
        .iter()
        .map(to_json)
        .collect();
    let chains = listener(&listeners, 443)["filterChains"]
        .as_array()
        .unwrap();
    assert_eq!(chains.len(), 1, "the valid server still serves");
    assert_eq!(
        chains[0]["filterChainMatch"]["serverNames"][0],
        "shop.example.com"
    );
}
