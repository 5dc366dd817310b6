//! A sidecar's inbound side (the `virtualInbound` listener, NONE-mode
//! ingress listeners, `inbound|<port>||` clusters) under each
//! PeerAuthentication mode, compared with golden proto3 JSON in
//! `tests/golden/` (rewrite with `UPDATE_GOLDEN=1` and review the diff), each
//! accepted by `envoy --mode validate`, plus plain assertions on what a
//! caller of the workload would notice.

mod support;

use pilot::model::{MeshSnapshot, Proxy, ProxyType};
use pilot::translate::clusters::blackhole_cluster;
use pilot::translate::sidecar::inbound::{inbound_clusters, inbound_listeners};
use pilot::xds::generator::view_key;
use serde_json::{Value, json};
use support::{assert_golden, grpc_cluster, snapshot_from_yaml, to_json};

/// The workload: `server` in namespace `server` at 10.1.0.7, serving HTTP on
/// 8080 (service port 80) and Postgres on 5432.
const WORKLOAD: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: server, namespace: server}
spec:
  hosts: [server.server.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 8080}
  - {number: 5432, name: tcp-postgres, protocol: TCP}
  workloadSelector: {labels: {app: server}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: server-v1-1, namespace: server}
spec: {address: 10.1.0.7, labels: {app: server, version: v1}, serviceAccount: server}
";

fn namespace_policy(mode: &str) -> String {
    format!(
        "---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: server}}
spec:
  mtls: {{mode: {mode}}}
"
    )
}

/// STRICT for the workload, but Postgres plaintext and 9999 (declared by no
/// service) PERMISSIVE.
const PORT_LEVEL: &str = "---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server, namespace: server}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
  portLevelMtls:
    5432: {mode: DISABLE}
    9999: {mode: PERMISSIVE}
";

/// Without capture: the app listens on localhost, the sidecar on the pod IP.
const INGRESS: &str = "---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: server, namespace: server}
spec:
  workloadSelector: {labels: {app: server}}
  ingress:
  - port: {number: 9080, name: http, protocol: HTTP}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9432, name: tcp-postgres, protocol: TCP}
    defaultEndpoint: 127.0.0.1:5432
";

fn sidecar(ip: &str, interception: &str) -> Proxy {
    Proxy {
        id: format!("sidecar~{ip}~server-v1-1.server~server.svc.cluster.local"),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec![ip.into()],
        pod_id: "server-v1-1.server".into(),
        namespace: "server".into(),
        dns_domain: "server.svc.cluster.local".into(),
        labels: [
            ("app".to_string(), "server".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        cluster_id: "Kubernetes".into(),
        service_account: "server".into(),
        workload_name: "server-v1".into(),
        interception_mode: interception.into(),
        istio_version: "1.28.0".into(),
        mesh_id: "cluster.local".into(),
    }
}

struct Inbound {
    listeners: Vec<Value>,
    clusters: Vec<Value>,
}

impl Inbound {
    fn of(snapshot: &MeshSnapshot, proxy: &Proxy) -> Inbound {
        Inbound {
            listeners: inbound_listeners(snapshot, proxy)
                .iter()
                .map(to_json)
                .collect(),
            clusters: inbound_clusters(snapshot, proxy)
                .iter()
                .map(to_json)
                .collect(),
        }
    }

    fn captured(config: &str) -> Inbound {
        Inbound::of(
            &snapshot_from_yaml(&format!("{WORKLOAD}{config}")),
            &sidecar("10.1.0.7", "REDIRECT"),
        )
    }

    fn json(&self) -> Value {
        json!({"listeners": self.listeners, "clusters": self.clusters})
    }

    fn listener(&self, name: &str) -> &Value {
        self.listeners
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no listener {name}"))
    }

    fn cluster(&self, name: &str) -> &Value {
        self.clusters
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    /// The chains of `virtualInbound` for one destination port (`None`: the
    /// chains for undeclared ports).
    fn chains(&self, port: Option<u32>) -> Vec<&Value> {
        chains_of(self.listener("virtualInbound"), port)
    }
}

fn chains_of(listener: &Value, port: Option<u32>) -> Vec<&Value> {
    listener["filterChains"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["filterChainMatch"]["destinationPort"].as_u64() == port.map(u64::from))
        .collect()
}

fn transport(chain: &Value) -> &str {
    chain["filterChainMatch"]["transportProtocol"]
        .as_str()
        .unwrap_or("")
}

fn tls_context(chain: &Value) -> &Value {
    &chain["transportSocket"]["typedConfig"]
}

fn first_filter(chain: &Value) -> &Value {
    &chain["filters"][0]["typedConfig"]
}

fn listener_filter_names(listener: &Value) -> Vec<&str> {
    listener["listenerFilters"]
        .as_array()
        .map(|filters| {
            filters
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn strict_accepts_only_mesh_mtls_and_tells_the_app_who_called() {
    let inbound = Inbound::captured(&namespace_policy("STRICT"));
    assert_golden("inbound_strict", &inbound.json());

    let listener = inbound.listener("virtualInbound");
    assert_eq!(listener["address"]["socketAddress"]["portValue"], 15006);
    // Handing off by original destination would pass inbound connections
    // to an outbound listener of the same port.
    assert!(listener.get("useOriginalDst").is_none(), "{listener}");
    assert_eq!(listener["trafficDirection"], "INBOUND");
    assert_eq!(
        listener_filter_names(listener),
        [
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.tls_inspector"
        ]
    );
    for port in [Some(8080), Some(5432), None] {
        let chains = inbound.chains(port);
        assert_eq!(chains.len(), 1, "{port:?}: one chain, TLS only");
        assert_eq!(transport(chains[0]), "tls");
        let tls = tls_context(chains[0]);
        assert_eq!(tls["requireClientCertificate"], true);
        let common = &tls["commonTlsContext"];
        let certificate = &common["tlsCertificateSdsSecretConfigs"][0];
        assert_eq!(certificate["name"], "default");
        assert_eq!(
            certificate["sdsConfig"]["apiConfigSource"]["grpcServices"][0]["envoyGrpc"]["clusterName"],
            "sds-grpc"
        );
        assert_eq!(
            common["combinedValidationContext"]["validationContextSdsSecretConfig"]["name"],
            "ROOTCA"
        );
    }
    let http = first_filter(inbound.chains(Some(8080))[0]);
    assert_eq!(http["forwardClientCertDetails"], "APPEND_FORWARD");
    assert_eq!(
        http["setCurrentClientCertDetails"],
        json!({"subject": true, "uri": true, "dns": true})
    );
    let route = &http["routeConfig"]["virtualHosts"][0]["routes"][0]["route"];
    assert_eq!(route["cluster"], "inbound|8080||");
    assert_eq!(route["timeout"], "0s", "no 15 s cut-off for slow requests");
    assert_eq!(
        tls_context(inbound.chains(Some(8080))[0])["commonTlsContext"]["alpnProtocols"],
        json!(["h2", "http/1.1"])
    );
    let tcp = first_filter(inbound.chains(Some(5432))[0]);
    assert_eq!(tcp["cluster"], "inbound|5432||");
    assert_eq!(
        first_filter(inbound.chains(None)[0])["cluster"],
        "InboundPassthroughCluster"
    );
}

#[test]
fn captured_traffic_reaches_the_app_at_the_pod_ip_from_127_0_0_6() {
    let inbound = Inbound::captured(&namespace_policy("STRICT"));
    let names: Vec<&str> = inbound
        .clusters
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "inbound|5432||",
            "inbound|8080||",
            "InboundPassthroughCluster"
        ]
    );
    for cluster in &inbound.clusters {
        assert_eq!(cluster["type"], "ORIGINAL_DST");
        assert_eq!(cluster["lbPolicy"], "CLUSTER_PROVIDED");
        assert_eq!(
            cluster["upstreamBindConfig"]["sourceAddress"]["address"],
            "127.0.0.6"
        );
        assert_eq!(
            cluster["circuitBreakers"]["thresholds"][0]["maxRequests"],
            u32::MAX,
            "no Envoy default of 1024 concurrent requests"
        );
    }
}

#[test]
fn permissive_accepts_mtls_plaintext_and_the_apps_own_tls() {
    // No PeerAuthentication at all: Istio's default is PERMISSIVE.
    let inbound = Inbound::captured("");
    assert_golden("inbound_permissive", &inbound.json());

    for port in [Some(8080), Some(5432), None] {
        let chains = inbound.chains(port);
        let kinds: Vec<(&str, bool)> = chains
            .iter()
            .map(|c| (transport(c), c.get("transportSocket").is_some()))
            .collect();
        assert_eq!(
            kinds,
            [("tls", true), ("tls", false), ("raw_buffer", false)],
            "{port:?}: mesh mTLS terminated, app TLS passed through, plaintext served"
        );
        assert_eq!(
            chains[0]["filterChainMatch"]["applicationProtocols"],
            json!([
                "istio-peer-exchange",
                "istio",
                "istio-http/1.0",
                "istio-http/1.1",
                "istio-h2"
            ])
        );
    }
    assert_eq!(
        first_filter(inbound.chains(Some(8080))[2])["statPrefix"],
        "inbound_0.0.0.0_8080",
        "plaintext HTTP is served by the HTTP connection manager"
    );
}

#[test]
fn disable_serves_plaintext_without_waiting_for_a_tls_hello() {
    let inbound = Inbound::captured(&namespace_policy("DISABLE"));
    assert_golden("inbound_disable", &inbound.json());

    for port in [Some(8080), Some(5432), None] {
        let chains = inbound.chains(port);
        assert_eq!(chains.len(), 1, "{port:?}");
        assert_eq!(transport(chains[0]), "");
        assert!(chains[0].get("transportSocket").is_none());
    }
    assert_eq!(
        listener_filter_names(inbound.listener("virtualInbound")),
        ["envoy.filters.listener.original_dst"],
        "nothing inspects TLS, so server-first protocols start at once"
    );
}

#[test]
fn port_level_modes_override_the_workload_mode() {
    let inbound = Inbound::captured(PORT_LEVEL);
    assert_golden("inbound_port_level", &inbound.json());

    assert_eq!(transport(inbound.chains(Some(8080))[0]), "tls");
    assert_eq!(inbound.chains(Some(8080)).len(), 1, "STRICT");
    let postgres = inbound.chains(Some(5432));
    assert_eq!(postgres.len(), 1, "DISABLE");
    assert!(postgres[0].get("transportSocket").is_none());
    let undeclared = inbound.chains(Some(9999));
    assert_eq!(undeclared.len(), 3, "PERMISSIVE");
    assert!(
        undeclared
            .iter()
            .all(|c| first_filter(c)["cluster"] == "InboundPassthroughCluster"),
        "a port only the policy names passes through"
    );
    assert_eq!(inbound.chains(None).len(), 1, "other ports: STRICT");
    let inspector = &inbound.listener("virtualInbound")["listenerFilters"][1];
    assert_eq!(inspector["name"], "envoy.filters.listener.tls_inspector");
    assert_eq!(
        inspector["filterDisabled"],
        json!({"destinationPortRange": {"start": 5432, "end": 5433}}),
        "the plaintext port is not held up by the TLS inspector"
    );
    assert!(
        inbound
            .clusters
            .iter()
            .all(|c| c["name"] != "inbound|9999||")
    );
}

#[test]
fn interception_none_listens_on_the_sidecar_ingress_ports() {
    let snapshot = snapshot_from_yaml(&format!(
        "{WORKLOAD}{}{INGRESS}",
        namespace_policy("STRICT")
    ));
    let inbound = Inbound::of(&snapshot, &sidecar("10.1.0.7", "NONE"));
    assert_golden("inbound_none_ingress", &inbound.json());

    let names: Vec<&str> = inbound
        .listeners
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["10.1.0.7_9080", "10.1.0.7_9432"],
        "no virtualInbound"
    );
    let http = inbound.listener("10.1.0.7_9080");
    assert_eq!(http["bindToPort"], true);
    assert_eq!(http["address"]["socketAddress"]["address"], "10.1.0.7");
    let chains = chains_of(http, None);
    assert_eq!(chains.len(), 1);
    assert_eq!(transport(chains[0]), "tls", "STRICT applies here too");
    let cluster = inbound.cluster("inbound|9080||");
    assert_eq!(cluster["type"], "STATIC");
    assert_eq!(
        cluster["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"],
        json!({"address": "127.0.0.1", "portValue": 8080})
    );
    assert!(
        inbound
            .clusters
            .iter()
            .all(|c| c["name"] != "InboundPassthroughCluster")
    );
}

#[test]
fn interception_none_without_an_ingress_listener_opens_nothing() {
    let snapshot = snapshot_from_yaml(WORKLOAD);
    let inbound = Inbound::of(&snapshot, &sidecar("10.1.0.7", "NONE"));
    assert!(inbound.listeners.is_empty());
    assert!(inbound.clusters.is_empty());
}

#[test]
fn tproxy_listens_transparently() {
    let snapshot = snapshot_from_yaml(WORKLOAD);
    let inbound = Inbound::of(&snapshot, &sidecar("10.1.0.7", "TPROXY"));
    assert_eq!(inbound.listener("virtualInbound")["transparent"], true);
    let redirect = Inbound::captured("");
    assert!(
        redirect
            .listener("virtualInbound")
            .get("transparent")
            .is_none()
    );
}

#[test]
fn a_proxy_that_is_no_service_instance_still_gets_the_passthrough() {
    let snapshot = snapshot_from_yaml(WORKLOAD);
    let inbound = Inbound::of(&snapshot, &sidecar("10.1.0.99", "REDIRECT"));
    let chains = inbound.listener("virtualInbound")["filterChains"]
        .as_array()
        .unwrap();
    assert!(
        chains
            .iter()
            .all(|c| c["filterChainMatch"]["destinationPort"].is_null()
                || c["filterChainMatch"]["destinationPort"] == 15006)
    );
    let names: Vec<&str> = inbound
        .clusters
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["InboundPassthroughCluster"]);
}

#[test]
fn proxies_of_one_workload_shape_share_a_view() {
    let snapshot = snapshot_from_yaml(&format!(
        "{WORKLOAD}---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server-v1-2, namespace: server}}
spec: {{address: 10.1.0.8, labels: {{app: server, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: server-v1-3, namespace: server}}
spec: {{address: 10.1.0.9, labels: {{app: server, version: v1}}, ports: {{http: 8081}}}}
"
    ));
    let key = |ip: &str, mode: &str| view_key(&snapshot, &sidecar(ip, mode));
    assert_eq!(
        key("10.1.0.7", "REDIRECT"),
        key("10.1.0.8", "REDIRECT"),
        "same ports, same modes: same bytes"
    );
    assert_ne!(
        key("10.1.0.7", "REDIRECT"),
        key("10.1.0.9", "REDIRECT"),
        "another workload port"
    );
    assert_ne!(
        key("10.1.0.7", "REDIRECT"),
        key("10.1.0.99", "REDIRECT"),
        "not an instance"
    );
    assert_ne!(key("10.1.0.7", "REDIRECT"), key("10.1.0.7", "TPROXY"));

    let with_ingress = snapshot_from_yaml(&format!("{WORKLOAD}{INGRESS}"));
    let none = |ip: &str| view_key(&with_ingress, &sidecar(ip, "NONE"));
    assert_ne!(
        none("10.1.0.7"),
        none("10.1.0.8"),
        "NONE-mode listeners bind the proxy's own IP"
    );
}

/// Every golden inbound listener and cluster, with the clusters they name
/// and an `sds-grpc` cluster as the agent's bootstrap has, passes
/// `envoy --mode validate`. Skipped without Envoy.
#[test]
fn envoy_accepts_every_golden_inbound_config() {
    let Some(envoy) = support::envoy_binary() else {
        eprintln!("skipped: no Envoy (set ENVOY_BIN or run make tools)");
        return;
    };
    for case in [
        "inbound_strict",
        "inbound_permissive",
        "inbound_disable",
        "inbound_port_level",
        "inbound_none_ingress",
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/golden/{case}.json"));
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let mut clusters = golden["clusters"].as_array().unwrap().clone();
        clusters.push(to_json(&blackhole_cluster()));
        clusters.push(grpc_cluster("sds-grpc", 15099));
        clusters.push(grpc_cluster("xds-grpc", 15010));
        let bootstrap = json!({
            "node": {"id": sidecar("10.1.0.7", "REDIRECT").id, "cluster": "server.server"},
            "dynamicResources": {"adsConfig": {
                "apiType": "GRPC",
                "transportApiVersion": "V3",
                "grpcServices": [{"envoyGrpc": {"clusterName": "xds-grpc"}}]
            }},
            "staticResources": {"listeners": golden["listeners"], "clusters": clusters}
        });
        support::assert_envoy_accepts(&envoy, &bootstrap);
    }
}
