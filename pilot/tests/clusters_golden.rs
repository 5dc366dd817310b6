//! Clusters (CDS) and load assignments (EDS) generated from ServiceEntries,
//! WorkloadEntries and DestinationRules, compared with golden proto3 JSON in
//! `tests/golden/` (rewrite with `UPDATE_GOLDEN=1` and review the diff), plus
//! plain assertions on the fields each case is about.

mod support;

use pilot::model::{MeshSnapshot, Proxy, ProxyType};
use pilot::translate::clusters::outbound_clusters;
use pilot::translate::endpoints::{eds_cluster_names, load_assignment};
use pilot::translate::traffic_policy::hash_policy_for;
use serde_json::{Value, json};
use support::{
    assert_golden, envoy_binary, grpc_cluster, ingress_gateway, snapshot_from_yaml, to_json,
};
use trireme_proto::envoy::pb::envoy::config::cluster::v3::Cluster;
use trireme_proto::envoy::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

/// A sidecar in `bookinfo`.
fn sidecar() -> Proxy {
    Proxy {
        id: "sidecar~10.2.0.7~productpage-v1-1.bookinfo~bookinfo.svc.cluster.local".into(),
        proxy_type: ProxyType::Sidecar,
        ip_addresses: vec!["10.2.0.7".into()],
        pod_id: "productpage-v1-1.bookinfo".into(),
        namespace: "bookinfo".into(),
        dns_domain: "bookinfo.svc.cluster.local".into(),
        labels: [("app".to_string(), "productpage".to_string())].into(),
        cluster_id: "Kubernetes".into(),
        service_account: "bookinfo-productpage".into(),
        workload_name: "productpage-v1".into(),
        interception_mode: "REDIRECT".into(),
        istio_version: "1.28.0".into(),
        mesh_id: "cluster.local".into(),
    }
}

/// The clusters of `host` (all ports and subsets), in generated order.
fn clusters_of(snapshot: &MeshSnapshot, proxy: &Proxy, host: &str) -> Vec<Cluster> {
    outbound_clusters(snapshot, proxy)
        .into_iter()
        .filter(|c| c.name.ends_with(&format!("|{host}")))
        .collect()
}

fn cluster<'a>(clusters: &'a [Cluster], name: &str) -> &'a Cluster {
    clusters
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn render(clusters: &[Cluster]) -> Value {
    Value::Array(clusters.iter().map(to_json).collect())
}

fn assignment(snapshot: &MeshSnapshot, name: &str) -> ClusterLoadAssignment {
    load_assignment(snapshot, name).unwrap_or_else(|| panic!("no assignment for {name}"))
}

/// `address:port` of every endpoint, in order.
fn addresses(assignment: &ClusterLoadAssignment) -> Vec<String> {
    let json = to_json(assignment);
    json["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|locality| {
            locality["lbEndpoints"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| {
            let socket = &e["endpoint"]["address"]["socketAddress"];
            format!(
                "{}:{}",
                socket["address"].as_str().unwrap(),
                socket["portValue"]
            )
        })
        .collect()
}

const REVIEWS: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9443, name: grpc-api, targetPort: 9444}
  endpoints:
  - {address: 10.0.0.1, labels: {app: reviews, version: v1}, serviceAccount: bookinfo-reviews}
  - {address: 10.0.0.2, labels: {app: reviews, version: v2}, serviceAccount: bookinfo-reviews}
  - {address: 10.0.0.3, labels: {app: reviews, version: v2}, ports: {http: 19080}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets:
  - {name: v2, labels: {version: v2}}
  - {name: v1, labels: {version: v1}}
"#;

#[test]
fn static_service_with_subsets() {
    let snapshot = snapshot_from_yaml(REVIEWS);
    let host = "reviews.bookinfo.svc.cluster.local";
    let clusters = clusters_of(&snapshot, &sidecar(), host);
    assert_golden("clusters_static_subsets", &render(&clusters));

    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "outbound|9080||reviews.bookinfo.svc.cluster.local",
            "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
            "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
            "outbound|9443||reviews.bookinfo.svc.cluster.local",
            "outbound|9443|v1|reviews.bookinfo.svc.cluster.local",
            "outbound|9443|v2|reviews.bookinfo.svc.cluster.local",
        ]
    );
    for c in &clusters {
        let json = to_json(c);
        assert_eq!(json["type"], "EDS", "{}", c.name);
        assert_eq!(json["edsClusterConfig"]["serviceName"], c.name.as_str());
        assert_eq!(json["edsClusterConfig"]["edsConfig"]["ads"], json!({}));
        assert_eq!(json["connectTimeout"], "10s");
        assert_eq!(json["lbPolicy"], "LEAST_REQUEST", "Istio's default");
    }
    let http = to_json(cluster(
        &clusters,
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
    ));
    assert!(
        http.get("typedExtensionProtocolOptions").is_none(),
        "HTTP/1.1 needs no options"
    );
    let grpc = to_json(cluster(
        &clusters,
        "outbound|9443||reviews.bookinfo.svc.cluster.local",
    ));
    let options = &grpc["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["explicitHttpConfig"]["http2ProtocolOptions"],
        json!({})
    );

    let mut assignments = Vec::new();
    for name in [
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
        "outbound|9443|v2|reviews.bookinfo.svc.cluster.local",
    ] {
        assignments.push(to_json(&assignment(&snapshot, name)));
    }
    assert_golden("endpoints_static_subsets", &Value::Array(assignments));

    let all = assignment(
        &snapshot,
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
    );
    assert_eq!(
        addresses(&all),
        ["10.0.0.1:9080", "10.0.0.2:9080", "10.0.0.3:19080"]
    );
    let v1 = assignment(
        &snapshot,
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
    );
    assert_eq!(addresses(&v1), ["10.0.0.1:9080"]);
    let v2 = assignment(
        &snapshot,
        "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
    );
    assert_eq!(addresses(&v2), ["10.0.0.2:9080", "10.0.0.3:19080"]);
    let grpc_v2 = assignment(
        &snapshot,
        "outbound|9443|v2|reviews.bookinfo.svc.cluster.local",
    );
    assert_eq!(
        addresses(&grpc_v2),
        ["10.0.0.2:9444", "10.0.0.3:9444"],
        "target port"
    );

    assert_eq!(eds_cluster_names(&snapshot).len(), 6);
}

#[test]
fn unknown_clusters_and_empty_subsets() {
    let snapshot = snapshot_from_yaml(REVIEWS);
    assert!(load_assignment(&snapshot, "BlackHoleCluster").is_none());
    assert!(load_assignment(&snapshot, "outbound|9080||nothing.example.com").is_none());
    assert!(
        load_assignment(
            &snapshot,
            "outbound|1234||reviews.bookinfo.svc.cluster.local"
        )
        .is_none()
    );
    assert!(
        load_assignment(
            &snapshot,
            "inbound|9080||reviews.bookinfo.svc.cluster.local"
        )
        .is_none()
    );
    let unknown_subset = assignment(
        &snapshot,
        "outbound|9080|v9|reviews.bookinfo.svc.cluster.local",
    );
    assert!(
        unknown_subset.endpoints.is_empty(),
        "empty, so Envoy does not wait"
    );
    assert_eq!(
        unknown_subset.cluster_name,
        "outbound|9080|v9|reviews.bookinfo.svc.cluster.local"
    );
}

#[test]
fn subset_rule_from_another_namespace_still_selects_for_eds() {
    // The proxy's namespace has its own rule with subset `canary`; EDS (shared
    // by all proxies) falls back to it because the service's rule lacks it.
    let snapshot = snapshot_from_yaml(&format!(
        "{REVIEWS}\n---\n{}",
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-canary, namespace: frontend}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets:
  - {name: canary, labels: {version: v1}}
"#
    ));
    let canary = assignment(
        &snapshot,
        "outbound|9080|canary|reviews.bookinfo.svc.cluster.local",
    );
    assert_eq!(addresses(&canary), ["10.0.0.1:9080"]);
}

#[test]
fn dns_resolution() {
    let snapshot = snapshot_from_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: bookinfo}
spec:
  hosts: [payments.example.com]
  resolution: DNS
  ports:
  - {number: 443, name: tls, protocol: TLS}
  endpoints:
  - {address: eu.payments.example.com, locality: europe-west1/europe-west1-b, labels: {region: eu}}
  - {address: us.payments.example.com, locality: us-east1/us-east1-c, weight: 3, labels: {region: us}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments, namespace: bookinfo}
spec:
  host: payments.example.com
  subsets:
  - {name: eu, labels: {region: eu}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: bookinfo}
spec:
  hosts: [httpbin.org]
  resolution: DNS_ROUND_ROBIN
  ports:
  - {number: 80, name: http, protocol: HTTP}
"#,
    );
    let proxy = sidecar();
    let mut clusters = clusters_of(&snapshot, &proxy, "payments.example.com");
    clusters.extend(clusters_of(&snapshot, &proxy, "httpbin.org"));
    assert_golden("clusters_dns", &render(&clusters));

    let payments = to_json(cluster(&clusters, "outbound|443||payments.example.com"));
    assert_eq!(payments["type"], "STRICT_DNS");
    assert_eq!(payments["dnsLookupFamily"], "V4_ONLY");
    assert!(payments.get("edsClusterConfig").is_none());
    assert_eq!(
        payments["loadAssignment"]["clusterName"],
        "outbound|443||payments.example.com"
    );
    assert_eq!(
        payments["loadAssignment"]["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let eu = to_json(cluster(&clusters, "outbound|443|eu|payments.example.com"));
    let eu_endpoints = &eu["loadAssignment"]["endpoints"];
    assert_eq!(eu_endpoints.as_array().unwrap().len(), 1);
    assert_eq!(
        eu_endpoints[0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]["address"],
        "eu.payments.example.com"
    );

    let httpbin = to_json(cluster(&clusters, "outbound|80||httpbin.org"));
    assert_eq!(
        httpbin["type"], "LOGICAL_DNS",
        "DNS_ROUND_ROBIN with one endpoint"
    );
    let only = &httpbin["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]
        ["socketAddress"];
    assert_eq!(
        only["address"], "httpbin.org",
        "no endpoints: the host itself"
    );
    assert_eq!(only["portValue"], 80);
    assert!(
        !eds_cluster_names(&snapshot)
            .iter()
            .any(|n| n.ends_with("|httpbin.org"))
    );
}

#[test]
fn passthrough_services_are_original_dst_on_sidecars_and_eds_on_gateways() {
    let snapshot = snapshot_from_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: bookinfo}
spec:
  hosts: [legacy.internal]
  addresses: [192.168.10.0/24]
  resolution: NONE
  ports:
  - {number: 5432, name: tcp-postgres, protocol: TCP}
"#,
    );
    let name = "outbound|5432||legacy.internal";
    let on_sidecar = to_json(cluster(&outbound_clusters(&snapshot, &sidecar()), name));
    assert_eq!(on_sidecar["type"], "ORIGINAL_DST");
    assert_eq!(on_sidecar["lbPolicy"], "CLUSTER_PROVIDED");
    assert!(on_sidecar.get("edsClusterConfig").is_none());
    let on_gateway = to_json(cluster(
        &outbound_clusters(&snapshot, &ingress_gateway()),
        name,
    ));
    assert_eq!(on_gateway["type"], "EDS");
    assert_eq!(on_gateway["edsClusterConfig"]["serviceName"], name);
    assert!(assignment(&snapshot, name).endpoints.is_empty());
}

#[test]
fn fixed_clusters() {
    let snapshot = snapshot_from_yaml("");
    let clusters = outbound_clusters(&snapshot, &sidecar());
    assert_golden("clusters_fixed", &render(&clusters));
    let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["BlackHoleCluster", "PassthroughCluster"]);
    let blackhole = to_json(&clusters[0]);
    assert_eq!(blackhole["type"], "STATIC");
    assert!(blackhole.get("loadAssignment").is_none());
    let passthrough = to_json(&clusters[1]);
    assert_eq!(passthrough["type"], "ORIGINAL_DST");
    assert_eq!(passthrough["lbPolicy"], "CLUSTER_PROVIDED");
}

/// One STATIC ServiceEntry per host, each with one endpoint.
fn services(hosts_and_ports: &[(&str, &str)]) -> String {
    hosts_and_ports
        .iter()
        .map(|(host, port)| {
            format!(
                r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: bookinfo}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{port}]
  endpoints:
  - {{address: 10.1.0.1, serviceAccount: {name}}}
"#,
                name = host.split('.').next().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

const HTTP_PORT: &str = "{number: 8080, name: http-web, protocol: HTTP}";

#[test]
fn load_balancer_simple_and_consistent_hash() {
    let yaml = services(&[
        ("roundrobin.bookinfo.svc.cluster.local", HTTP_PORT),
        ("ringhash.bookinfo.svc.cluster.local", HTTP_PORT),
        ("cookie.bookinfo.svc.cluster.local", HTTP_PORT),
        ("maglev.bookinfo.svc.cluster.local", HTTP_PORT),
    ]) + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: roundrobin, namespace: bookinfo}
spec:
  host: roundrobin
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ringhash, namespace: bookinfo}
spec:
  host: ringhash
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
        ringHash: {minimumRingSize: 4096}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cookie, namespace: bookinfo}
spec:
  host: cookie
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, path: /, ttl: 1h}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: maglev, namespace: bookinfo}
spec:
  host: maglev
  trafficPolicy:
    loadBalancer:
      consistentHash:
        useSourceIp: true
        maglev: {tableSize: 65537}
"#;
    let snapshot = snapshot_from_yaml(&yaml);
    let proxy = sidecar();
    let clusters: Vec<Cluster> = outbound_clusters(&snapshot, &proxy)
        .into_iter()
        .filter(|c| c.name.starts_with("outbound|"))
        .collect();
    assert_golden("clusters_load_balancer", &render(&clusters));

    let round_robin = to_json(cluster(
        &clusters,
        "outbound|8080||roundrobin.bookinfo.svc.cluster.local",
    ));
    assert_eq!(
        round_robin["lbPolicy"],
        Value::Null,
        "ROUND_ROBIN is 0, which JSON omits"
    );
    assert_eq!(
        round_robin["roundRobinLbConfig"]["slowStartConfig"]["slowStartWindow"],
        "30s"
    );
    let ring = to_json(cluster(
        &clusters,
        "outbound|8080||ringhash.bookinfo.svc.cluster.local",
    ));
    assert_eq!(ring["lbPolicy"], "RING_HASH");
    assert_eq!(ring["ringHashLbConfig"]["minimumRingSize"], "4096");
    let cookie = to_json(cluster(
        &clusters,
        "outbound|8080||cookie.bookinfo.svc.cluster.local",
    ));
    assert_eq!(cookie["lbPolicy"], "RING_HASH");
    assert_eq!(
        cookie["ringHashLbConfig"]["minimumRingSize"], "1024",
        "Istio's default ring"
    );
    let maglev = to_json(cluster(
        &clusters,
        "outbound|8080||maglev.bookinfo.svc.cluster.local",
    ));
    assert_eq!(maglev["lbPolicy"], "MAGLEV");
    assert_eq!(maglev["maglevLbConfig"]["tableSize"], "65537");

    let hash = |host: &str| -> Value {
        Value::Array(
            hash_policy_for(&snapshot, "bookinfo", host, 8080, "")
                .iter()
                .map(to_json)
                .collect(),
        )
    };
    assert_eq!(
        hash("ringhash.bookinfo.svc.cluster.local"),
        json!([{"header": {"headerName": "x-user"}}])
    );
    assert_eq!(
        hash("cookie.bookinfo.svc.cluster.local"),
        json!([{"cookie": {"name": "session", "path": "/", "ttl": "3600s"}}])
    );
    assert_eq!(
        hash("maglev.bookinfo.svc.cluster.local"),
        json!([{"connectionProperties": {"sourceIp": true}}])
    );
    assert_eq!(hash("roundrobin.bookinfo.svc.cluster.local"), json!([]));
    assert_eq!(hash("unknown.example.com"), json!([]));
}

#[test]
fn connection_pool() {
    let yaml = services(&[
        ("pooled.bookinfo.svc.cluster.local", HTTP_PORT),
        ("upgraded.bookinfo.svc.cluster.local", HTTP_PORT),
        ("client.bookinfo.svc.cluster.local", HTTP_PORT),
    ]) + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pooled, namespace: bookinfo}
spec:
  host: pooled
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        maxConnectionDuration: 1h
        tcpKeepalive: {probes: 5, time: 7200s, interval: 75s}
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 1
        maxRetries: 3
        idleTimeout: 30s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upgraded, namespace: bookinfo}
spec:
  host: upgraded
  trafficPolicy:
    connectionPool:
      http: {h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 50}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: client, namespace: bookinfo}
spec:
  host: client
  trafficPolicy:
    connectionPool:
      http: {useClientProtocol: true}
"#;
    let snapshot = snapshot_from_yaml(&yaml);
    let clusters: Vec<Cluster> = outbound_clusters(&snapshot, &sidecar())
        .into_iter()
        .filter(|c| c.name.starts_with("outbound|"))
        .collect();
    assert_golden("clusters_connection_pool", &render(&clusters));

    let pooled = to_json(cluster(
        &clusters,
        "outbound|8080||pooled.bookinfo.svc.cluster.local",
    ));
    assert_eq!(pooled["connectTimeout"], "0.030s");
    assert_eq!(
        pooled["circuitBreakers"]["thresholds"][0],
        json!({
            "maxConnections": 100,
            "maxPendingRequests": 10,
            "maxRequests": 1000,
            "maxRetries": 3,
            "trackRemaining": true
        })
    );
    assert_eq!(
        pooled["upstreamConnectionOptions"]["tcpKeepalive"],
        json!({"keepaliveProbes": 5, "keepaliveTime": 7200, "keepaliveInterval": 75})
    );
    let options = &pooled["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["commonHttpProtocolOptions"],
        json!({"idleTimeout": "30s", "maxConnectionDuration": "3600s", "maxRequestsPerConnection": 1})
    );
    assert_eq!(
        options["explicitHttpConfig"],
        json!({"httpProtocolOptions": {}})
    );

    let upgraded = to_json(cluster(
        &clusters,
        "outbound|8080||upgraded.bookinfo.svc.cluster.local",
    ));
    let upgraded_options = &upgraded["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        upgraded_options["explicitHttpConfig"]["http2ProtocolOptions"]["maxConcurrentStreams"],
        50
    );
    let client = to_json(cluster(
        &clusters,
        "outbound|8080||client.bookinfo.svc.cluster.local",
    ));
    let client_options = &client["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        client_options["useDownstreamProtocolConfig"],
        json!({"httpProtocolOptions": {}, "http2ProtocolOptions": {}})
    );
    // Without a pool, every limit is lifted to the maximum.
    let default = to_json(&outbound_clusters(&snapshot, &sidecar())[0]);
    assert_eq!(
        default["circuitBreakers"]["thresholds"][0]["maxRetries"],
        u32::MAX
    );
}

#[test]
fn outlier_detection() {
    let yaml = services(&[
        ("ejecting.bookinfo.svc.cluster.local", HTTP_PORT),
        ("split.bookinfo.svc.cluster.local", HTTP_PORT),
    ]) + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ejecting, namespace: bookinfo}
spec:
  host: ejecting
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 7
      consecutiveGatewayErrors: 0
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 30
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split, namespace: bookinfo}
spec:
  host: split
  trafficPolicy:
    outlierDetection:
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 4
"#;
    let snapshot = snapshot_from_yaml(&yaml);
    let clusters: Vec<Cluster> = outbound_clusters(&snapshot, &sidecar())
        .into_iter()
        .filter(|c| c.name.starts_with("outbound|"))
        .collect();
    assert_golden("clusters_outlier_detection", &render(&clusters));

    let ejecting = to_json(cluster(
        &clusters,
        "outbound|8080||ejecting.bookinfo.svc.cluster.local",
    ));
    assert_eq!(
        ejecting["outlierDetection"],
        json!({
            "consecutive5xx": 7,
            "enforcingConsecutive5xx": 100,
            "consecutiveGatewayFailure": 0,
            "enforcingConsecutiveGatewayFailure": 0,
            "interval": "300s",
            "baseEjectionTime": "900s",
            "maxEjectionPercent": 50,
            "enforcingSuccessRate": 0
        })
    );
    assert_eq!(
        ejecting["commonLbConfig"]["healthyPanicThreshold"],
        json!({"value": 30.0})
    );
    let split = to_json(cluster(
        &clusters,
        "outbound|8080||split.bookinfo.svc.cluster.local",
    ));
    assert_eq!(
        split["outlierDetection"]["splitExternalLocalOriginErrors"],
        true
    );
    assert_eq!(
        split["outlierDetection"]["consecutiveLocalOriginFailure"],
        4
    );
    assert_eq!(
        split["outlierDetection"]["enforcingConsecutiveLocalOriginFailure"],
        100
    );
    assert_eq!(
        split["commonLbConfig"]["healthyPanicThreshold"],
        json!({}),
        "0: panic mode off"
    );
}

#[test]
fn tls_modes() {
    let yaml = services(&[
        ("plain.bookinfo.svc.cluster.local", HTTP_PORT),
        (
            "simple.bookinfo.svc.cluster.local",
            "{number: 443, name: https, protocol: HTTPS}",
        ),
        (
            "credential.bookinfo.svc.cluster.local",
            "{number: 443, name: https, protocol: HTTPS}",
        ),
        (
            "mutual.bookinfo.svc.cluster.local",
            "{number: 8443, name: grpc, protocol: GRPC}",
        ),
        ("mesh.bookinfo.svc.cluster.local", HTTP_PORT),
    ]) + r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: plain, namespace: bookinfo}
spec:
  host: plain
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: simple, namespace: bookinfo}
spec:
  host: simple
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: credential, namespace: bookinfo}
spec:
  host: credential
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client-credential, sni: api.example.com, subjectAltNames: [api.example.com]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mutual, namespace: bookinfo}
spec:
  host: mutual
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.pem
      privateKey: /etc/certs/client-key.pem
      caCertificates: /etc/certs/ca.pem
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh, namespace: bookinfo}
spec:
  host: mesh
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;
    let snapshot = snapshot_from_yaml(&yaml);
    let clusters: Vec<Cluster> = outbound_clusters(&snapshot, &sidecar())
        .into_iter()
        .filter(|c| c.name.starts_with("outbound|"))
        .collect();
    assert_golden("clusters_tls", &render(&clusters));

    let socket = |name: &str| to_json(cluster(&clusters, name))["transportSocket"].clone();
    assert_eq!(
        socket("outbound|8080||plain.bookinfo.svc.cluster.local"),
        Value::Null
    );

    let simple = socket("outbound|443||simple.bookinfo.svc.cluster.local");
    assert_eq!(simple["name"], "envoy.transport_sockets.tls");
    let simple_context = &simple["typedConfig"];
    assert_eq!(
        simple_context["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    assert_eq!(
        simple_context["commonTlsContext"]["combinedValidationContext"]["validationContextSdsSecretConfig"]
            ["name"],
        "file-root:/etc/certs/ca.pem"
    );
    let simple_cluster = to_json(cluster(
        &clusters,
        "outbound|443||simple.bookinfo.svc.cluster.local",
    ));
    let upstream = &simple_cluster["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["upstreamHttpProtocolOptions"];
    assert_eq!(
        upstream,
        &json!({"autoSni": true, "autoSanValidation": true})
    );

    let credential = &socket("outbound|443||credential.bookinfo.svc.cluster.local")["typedConfig"];
    assert_eq!(credential["sni"], "api.example.com");
    let common = &credential["commonTlsContext"];
    assert_eq!(
        common["tlsCertificateSdsSecretConfigs"][0]["name"],
        "kubernetes://client-credential"
    );
    assert_eq!(
        common["tlsCertificateSdsSecretConfigs"][0]["sdsConfig"]["ads"],
        json!({})
    );
    let combined = &common["combinedValidationContext"];
    assert_eq!(
        combined["validationContextSdsSecretConfig"]["name"],
        "kubernetes://client-credential-cacert"
    );
    assert_eq!(
        combined["defaultValidationContext"]["matchTypedSubjectAltNames"],
        json!([{"sanType": "DNS", "matcher": {"exact": "api.example.com"}}])
    );

    let mutual = &socket("outbound|8443||mutual.bookinfo.svc.cluster.local")["typedConfig"]["commonTlsContext"];
    assert_eq!(
        mutual["tlsCertificateSdsSecretConfigs"][0]["name"],
        "file-cert:/etc/certs/client.pem~/etc/certs/client-key.pem"
    );
    assert_eq!(
        mutual["tlsCertificateSdsSecretConfigs"][0]["sdsConfig"]["apiConfigSource"]["grpcServices"]
            [0]["envoyGrpc"]["clusterName"],
        "sds-grpc"
    );
    assert_eq!(mutual["alpnProtocols"], json!(["h2"]), "gRPC port");

    let mesh = &socket("outbound|8080||mesh.bookinfo.svc.cluster.local")["typedConfig"];
    assert_eq!(
        mesh["sni"],
        "outbound_.8080_._.mesh.bookinfo.svc.cluster.local"
    );
    let mesh_common = &mesh["commonTlsContext"];
    assert_eq!(
        mesh_common["alpnProtocols"],
        json!(["istio-peer-exchange", "istio"])
    );
    assert_eq!(
        mesh_common["tlsCertificateSdsSecretConfigs"][0]["name"],
        "default"
    );
    let mesh_validation = &mesh_common["combinedValidationContext"];
    assert_eq!(
        mesh_validation["validationContextSdsSecretConfig"]["name"],
        "ROOTCA"
    );
    assert_eq!(
        mesh_validation["defaultValidationContext"]["matchTypedSubjectAltNames"],
        json!([{"sanType": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/bookinfo/sa/mesh"}}])
    );
}

#[test]
fn port_level_settings_and_subset_policies_override_in_order() {
    let snapshot = snapshot_from_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 9090, name: http-admin, protocol: HTTP}
  endpoints:
  - {address: 10.3.0.1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: bookinfo}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
    outlierDetection: {consecutive5xxErrors: 5}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 7}}
      portLevelSettings:
      - port: {number: 9090}
        tls: {mode: ISTIO_MUTUAL}
"#,
    );
    let clusters = clusters_of(&snapshot, &sidecar(), "ratings.bookinfo.svc.cluster.local");
    assert_golden("clusters_policy_merge", &render(&clusters));
    let get = |name: &str| {
        to_json(cluster(
            &clusters,
            &format!("{name}|ratings.bookinfo.svc.cluster.local"),
        ))
    };

    // Top level on 8080.
    let default_8080 = get("outbound|8080|");
    assert_eq!(default_8080["lbPolicy"], "RANDOM");
    assert_eq!(default_8080["outlierDetection"]["consecutive5xx"], 5);
    // Port level replaces the top level wholesale on 9090: no outlier detection.
    let default_9090 = get("outbound|9090|");
    assert_eq!(
        default_9090["lbPolicy"],
        Value::Null,
        "ROUND_ROBIN is 0, which JSON omits"
    );
    assert!(default_9090.get("outlierDetection").is_none());
    // The subset overrides only what it sets on 8080.
    let v1_8080 = get("outbound|8080|v1");
    assert_eq!(v1_8080["lbPolicy"], "RANDOM");
    assert_eq!(v1_8080["outlierDetection"]["consecutive5xx"], 5);
    assert_eq!(
        v1_8080["circuitBreakers"]["thresholds"][0]["maxConnections"],
        7
    );
    assert!(v1_8080.get("transportSocket").is_none());
    // The subset's port level replaces every field on 9090.
    let v1_9090 = get("outbound|9090|v1");
    assert_eq!(v1_9090["lbPolicy"], "LEAST_REQUEST");
    assert_eq!(
        v1_9090["circuitBreakers"]["thresholds"][0]["maxConnections"],
        u32::MAX
    );
    assert_eq!(
        v1_9090["transportSocket"]["typedConfig"]["sni"],
        "outbound_.9090_.v1_.ratings.bookinfo.svc.cluster.local"
    );
}

#[test]
fn workload_entry_weights_and_localities() {
    let snapshot = snapshot_from_yaml(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: details, namespace: bookinfo}
spec:
  hosts: [details.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP, targetPort: 8080}
  workloadSelector:
    labels: {app: details}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm-a, namespace: bookinfo}
spec:
  address: 10.4.0.2
  labels: {app: details, version: v1}
  locality: us-east1/us-east1-b/rack1
  weight: 3
  serviceAccount: details
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm-b, namespace: bookinfo}
spec:
  address: 10.4.0.1
  labels: {app: details, version: v1}
  locality: us-east1/us-east1-b/rack1
  ports: {http: 18080}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: details-vm-c, namespace: bookinfo}
spec:
  address: 10.4.0.3
  labels: {app: details, version: v2}
  locality: europe-west1/europe-west1-c
  weight: 5
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: other, namespace: bookinfo}
spec:
  address: 10.4.0.9
  labels: {app: other}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: bookinfo}
spec:
  host: details
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: us-east1/*
          to: {"us-east1/*": 80, "europe-west1/*": 20}
  subsets:
  - {name: v1, labels: {version: v1}}
"#,
    );
    let all = assignment(
        &snapshot,
        "outbound|9080||details.bookinfo.svc.cluster.local",
    );
    let v1 = assignment(
        &snapshot,
        "outbound|9080|v1|details.bookinfo.svc.cluster.local",
    );
    assert_golden(
        "endpoints_workload_entries",
        &Value::Array(vec![to_json(&all), to_json(&v1)]),
    );

    let json = to_json(&all);
    let localities = json["endpoints"].as_array().unwrap();
    assert_eq!(localities.len(), 2);
    assert_eq!(
        localities[0]["locality"],
        json!({"region": "europe-west1", "zone": "europe-west1-c"})
    );
    assert_eq!(localities[0]["loadBalancingWeight"], 5);
    assert_eq!(
        localities[1]["locality"],
        json!({"region": "us-east1", "zone": "us-east1-b", "subZone": "rack1"})
    );
    assert_eq!(localities[1]["loadBalancingWeight"], 4);
    let weights: Vec<&Value> = localities[1]["lbEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["loadBalancingWeight"])
        .collect();
    assert_eq!(weights, [&json!(1), &json!(3)]);
    assert_eq!(
        addresses(&all),
        ["10.4.0.3:8080", "10.4.0.1:18080", "10.4.0.2:8080"]
    );
    assert_eq!(addresses(&v1), ["10.4.0.1:18080", "10.4.0.2:8080"]);

    let clusters = clusters_of(&snapshot, &sidecar(), "details.bookinfo.svc.cluster.local");
    let default = to_json(cluster(
        &clusters,
        "outbound|9080||details.bookinfo.svc.cluster.local",
    ));
    assert_eq!(
        default["commonLbConfig"]["localityWeightedLbConfig"],
        json!({})
    );
}

/// Envoy from `ENVOY_BIN` or the workspace's `.tools/bin/envoy`, if installed.
/// Every golden cluster, and every golden load assignment (as a STATIC
/// cluster), must pass `envoy --mode validate` with an ADS and an `sds-grpc`
/// cluster beside them, as the agent's bootstrap has. Skipped without Envoy.
#[test]
fn envoy_accepts_every_golden_cluster_and_assignment() {
    let Some(envoy) = envoy_binary() else {
        eprintln!("skipped: no Envoy (set ENVOY_BIN or run make tools)");
        return;
    };
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name.starts_with("clusters_") || name.starts_with("endpoints_"))
                && name.ends_with(".json")
        })
        .collect();
    files.sort();
    let mut clusters = std::collections::BTreeMap::new();
    for file in files {
        let is_assignment = file
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("endpoints_");
        let items: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for mut item in items {
            if is_assignment {
                let name = format!("eds-check-{}", item["clusterName"].as_str().unwrap());
                item["clusterName"] = json!(name);
                item = json!({"name": name, "type": "STATIC", "connectTimeout": "1s", "loadAssignment": item});
            }
            clusters.insert(item["name"].as_str().unwrap().to_string(), item);
        }
    }
    clusters.insert("sds-grpc".into(), grpc_cluster("sds-grpc", 15099));
    clusters.insert("xds-grpc".into(), grpc_cluster("xds-grpc", 15010));
    let bootstrap = json!({
        "node": {"id": sidecar().id, "cluster": "productpage.bookinfo"},
        "dynamicResources": {"adsConfig": {
            "apiType": "GRPC",
            "transportApiVersion": "V3",
            "grpcServices": [{"envoyGrpc": {"clusterName": "xds-grpc"}}]
        }},
        "staticResources": {"clusters": clusters.into_values().collect::<Vec<_>>()}
    });
    support::assert_envoy_accepts(&envoy, &bootstrap);
}
