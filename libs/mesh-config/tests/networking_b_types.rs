//! Typed parsing of DestinationRule, ServiceEntry, WorkloadEntry, WorkloadGroup and
//! the networking ProxyConfig kind.

use mesh_config::common::Duration;
use mesh_config::networking::destination_rule::{H2UpgradePolicy, SimpleLb, TlsMode};
use mesh_config::networking::service_entry::{Location, Resolution};
use mesh_config::networking::{
    DestinationRule, ProxyConfig, ServiceEntry, WorkloadEntry, WorkloadGroup,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Serializes to JSON and back, and checks nothing was lost or changed.
fn assert_json_round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = serde_json::to_string(value).expect("serialize to JSON");
    let back: T = serde_json::from_str(&json).expect("deserialize JSON");
    assert_eq!(&back, value, "JSON round trip changed the value: {json}");
}

/// Parses `yaml` as `T` and expects a failure that names `field`.
fn assert_rejects_unknown<T: DeserializeOwned + Debug>(yaml: &str, field: &str) {
    let err = serde_yaml_ng::from_str::<T>(yaml).expect_err("unknown field accepted");
    let msg = err.to_string();
    assert!(
        msg.contains(field) && msg.contains("unknown field"),
        "error does not name `{field}`: {msg}"
    );
}

const DESTINATION_RULE: &str = r#"
host: reviews.prod.svc.cluster.local
exportTo: [".", "istio-system"]
workloadSelector:
  matchLabels:
    app: productpage
trafficPolicy:
  loadBalancer:
    simple: LEAST_REQUEST
    localityLbSetting:
      enabled: true
      distribute:
      - from: us-west/zone1/*
        to:
          "us-west/zone1/*": 80
          "us-west/zone2/*": 20
      failover:
      - from: us-east
        to: eu-west
      failoverPriority:
      - topology.istio.io/network
    zoneAwareLbSetting:
      enabled: true
      failover:
      - from: us-east
        to: us-west
      failoverPriority: [version=v1]
      minClusterSize: 3
    warmupDurationSecs: 30s
    warmup:
      duration: 60s
      minimumPercent: 10
      aggression: 1.5
  connectionPool:
    tcp:
      maxConnections: 100
      connectTimeout: 30ms
      tcpKeepalive:
        probes: 3
        time: 7200s
        interval: 75s
      maxConnectionDuration: 1h
      idleTimeout: 5m
    http:
      http1MaxPendingRequests: 64
      http2MaxRequests: 1000
      maxRequestsPerConnection: 10
      maxRetries: 3
      idleTimeout: 30s
      h2UpgradePolicy: UPGRADE
      useClientProtocol: true
      maxConcurrentStreams: 256
      http2KeepAlive:
        interval: 10s
        timeout: 3s
  outlierDetection:
    consecutiveErrors: 7
    splitExternalLocalOriginErrors: true
    consecutiveLocalOriginFailures: 4
    consecutiveGatewayErrors: 5
    consecutive5xxErrors: 10
    interval: 5m
    baseEjectionTime: 15m
    maxEjectionPercent: 50
    minHealthPercent: 30
    outlierDetectionHttpErrorCodes: [500, 503, 429]
  tls:
    mode: MUTUAL
    clientCertificate: /etc/certs/client.pem
    privateKey: /etc/certs/key.pem
    caCertificates: /etc/certs/ca.pem
    subjectAltNames: [reviews.example.com]
    sni: reviews.example.com
    insecureSkipVerify: false
    caCrl: /etc/certs/crl.pem
  portLevelSettings:
  - port:
      number: 9080
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          path: /
          ttl: 0s
          attributes:
          - name: SameSite
            value: Strict
          - name: Secure
        ringHash:
          minimumRingSize: 1024
    tls:
      mode: ISTIO_MUTUAL
  - port:
      number: 9443
    loadBalancer:
      consistentHash:
        useSourceIp: true
        maglev:
          tableSize: 65537
        minimumRingSize: 2048
  tunnel:
    protocol: CONNECT
    targetHost: egress.example.com
    targetPort: 8443
  proxyProtocol:
    version: V2
  retryBudget:
    percent: 25
    minRetryConcurrency: 5
    budgetInterval: 10s
subsets:
- name: v1
  labels:
    version: v1
- name: v2
  labels:
    version: v2
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    tls:
      mode: SIMPLE
      credentialName: reviews-client-cert
"#;

#[test]
fn destination_rule_parses_every_section() {
    let dr: DestinationRule = serde_yaml_ng::from_str(DESTINATION_RULE).expect("parse");
    assert_eq!(dr.host, "reviews.prod.svc.cluster.local");
    assert_eq!(dr.export_to, [".", "istio-system"]);
    assert_eq!(
        dr.workload_selector.as_ref().unwrap().match_labels["app"],
        "productpage"
    );

    let policy = dr.traffic_policy.as_ref().unwrap();
    let lb = policy.load_balancer.as_ref().unwrap();
    assert_eq!(lb.simple, Some(SimpleLb::LeastRequest));
    let locality = lb.locality_lb_setting.as_ref().unwrap();
    assert_eq!(locality.enabled, Some(true));
    assert_eq!(locality.distribute[0].to["us-west/zone2/*"], 20);
    assert_eq!(locality.failover[0].to, "eu-west");
    assert_eq!(
        lb.zone_aware_lb_setting.as_ref().unwrap().min_cluster_size,
        Some(3)
    );
    assert_eq!(lb.warmup_duration_secs, Some(Duration::from("30s")));
    let warmup = lb.warmup.as_ref().unwrap();
    assert_eq!(warmup.duration, Some(Duration::from("60s")));
    assert_eq!(warmup.aggression, Some(1.5));

    let pool = policy.connection_pool.as_ref().unwrap();
    let tcp = pool.tcp.as_ref().unwrap();
    assert_eq!(tcp.max_connections, Some(100));
    assert_eq!(
        tcp.tcp_keepalive.as_ref().unwrap().interval,
        Some(Duration::from("75s"))
    );
    assert_eq!(tcp.idle_timeout, Some(Duration::from("5m")));
    let http = pool.http.as_ref().unwrap();
    assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::Upgrade));
    assert_eq!(http.use_client_protocol, Some(true));
    assert_eq!(http.max_concurrent_streams, Some(256));
    assert_eq!(
        http.http2_keep_alive.as_ref().unwrap().timeout,
        Some(Duration::from("3s"))
    );

    let outlier = policy.outlier_detection.as_ref().unwrap();
    assert_eq!(outlier.consecutive_errors, Some(7));
    assert_eq!(outlier.consecutive_5xx_errors, Some(10));
    assert_eq!(outlier.base_ejection_time, Some(Duration::from("15m")));
    assert_eq!(outlier.outlier_detection_http_error_codes, [500, 503, 429]);

    let tls = policy.tls.as_ref().unwrap();
    assert_eq!(tls.mode, Some(TlsMode::Mutual));
    assert_eq!(tls.ca_certificates, "/etc/certs/ca.pem");
    assert_eq!(tls.insecure_skip_verify, Some(false));
    assert_eq!(tls.ca_crl, "/etc/certs/crl.pem");

    let ports = &policy.port_level_settings;
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].port.as_ref().unwrap().number, Some(9080));
    let hash = ports[0]
        .load_balancer
        .as_ref()
        .unwrap()
        .consistent_hash
        .as_ref()
        .unwrap();
    let cookie = hash.http_cookie.as_ref().unwrap();
    assert_eq!(cookie.name, "user");
    assert_eq!(cookie.attributes[0].value, "Strict");
    assert_eq!(cookie.attributes[1].value, "");
    assert_eq!(
        hash.ring_hash.as_ref().unwrap().minimum_ring_size,
        Some(1024)
    );
    assert_eq!(
        ports[0].tls.as_ref().unwrap().mode,
        Some(TlsMode::IstioMutual)
    );
    let hash = ports[1]
        .load_balancer
        .as_ref()
        .unwrap()
        .consistent_hash
        .as_ref()
        .unwrap();
    assert_eq!(hash.use_source_ip, Some(true));
    assert_eq!(hash.maglev.as_ref().unwrap().table_size, Some(65537));
    assert_eq!(hash.minimum_ring_size, Some(2048));

    let tunnel = policy.tunnel.as_ref().unwrap();
    assert_eq!(
        (tunnel.target_host.as_str(), tunnel.target_port),
        ("egress.example.com", 8443)
    );
    assert!(policy.proxy_protocol.is_some());
    let budget = policy.retry_budget.as_ref().unwrap();
    assert_eq!(budget.percent, Some(25.0));
    assert_eq!(budget.min_retry_concurrency, Some(5));

    assert_eq!(dr.subsets.len(), 2);
    assert_eq!(dr.subsets[1].labels["version"], "v2");
    let subset_policy = dr.subsets[1].traffic_policy.as_ref().unwrap();
    assert_eq!(
        subset_policy.load_balancer.as_ref().unwrap().simple,
        Some(SimpleLb::RoundRobin)
    );
    assert_eq!(
        subset_policy.tls.as_ref().unwrap().credential_name,
        "reviews-client-cert"
    );

    assert_json_round_trip(&dr);
}

#[test]
fn destination_rule_rejects_unknown_nested_field() {
    let yaml = r#"
host: reviews
trafficPolicy:
  connectionPool:
    http:
      maxRequestsPerConection: 1
"#;
    assert_rejects_unknown::<DestinationRule>(yaml, "maxRequestsPerConection");
}

#[test]
fn destination_rule_rejects_unknown_enum_value_and_missing_host() {
    let bad_enum = "host: reviews\ntrafficPolicy:\n  tls:\n    mode: STRICT\n";
    let err = serde_yaml_ng::from_str::<DestinationRule>(bad_enum).unwrap_err();
    assert!(err.to_string().contains("STRICT"), "{err}");

    let err = serde_yaml_ng::from_str::<DestinationRule>("subsets: []\n").unwrap_err();
    assert!(err.to_string().contains("host"), "{err}");
}

const SERVICE_ENTRY: &str = r#"
hosts:
- api.payments.example.com
- "*.payments.example.com"
addresses:
- 240.0.0.10/32
ports:
- number: 443
  name: https
  protocol: TLS
- number: 80
  name: http
  protocol: HTTP
  targetPort: 8080
location: MESH_EXTERNAL
resolution: DNS_ROUND_ROBIN
endpoints:
- address: us.payments.example.com
  ports:
    https: 8443
  labels:
    region: us
  locality: us-east1/us-east1-b
  weight: 70
- address: eu.payments.example.com
  network: network-eu
  locality: europe-west1
  weight: 30
  serviceAccount: payments
exportTo: ["*"]
subjectAltNames:
- spiffe://payments.example.com/ns/default/sa/api
"#;

#[test]
fn service_entry_parses() {
    let se: ServiceEntry = serde_yaml_ng::from_str(SERVICE_ENTRY).expect("parse");
    assert_eq!(se.hosts[1], "*.payments.example.com");
    assert_eq!(se.addresses, ["240.0.0.10/32"]);
    assert_eq!(se.ports[0].number, 443);
    assert_eq!(se.ports[0].protocol, "TLS");
    assert_eq!(se.ports[1].target_port, Some(8080));
    assert_eq!(se.location, Some(Location::MeshExternal));
    assert_eq!(se.resolution, Some(Resolution::DnsRoundRobin));
    assert_eq!(se.endpoints.len(), 2);
    assert_eq!(se.endpoints[0].ports["https"], 8443);
    assert_eq!(se.endpoints[0].weight, Some(70));
    assert_eq!(se.endpoints[1].network, "network-eu");
    assert_eq!(se.endpoints[1].service_account, "payments");
    assert!(se.workload_selector.is_none());
    assert_eq!(se.export_to, ["*"]);
    assert_eq!(se.subject_alt_names.len(), 1);
    assert_json_round_trip(&se);
}

#[test]
fn service_entry_with_workload_selector() {
    let yaml = r#"
hosts: [legacy.internal]
ports:
- number: 9090
  name: grpc
  protocol: GRPC
location: MESH_INTERNAL
resolution: STATIC
workloadSelector:
  labels:
    app: legacy
"#;
    let se: ServiceEntry = serde_yaml_ng::from_str(yaml).expect("parse");
    assert_eq!(se.location, Some(Location::MeshInternal));
    assert_eq!(se.resolution, Some(Resolution::Static));
    assert_eq!(
        se.workload_selector.as_ref().unwrap().labels["app"],
        "legacy"
    );
    assert_json_round_trip(&se);

    // The networking selector's field is `labels`, not `matchLabels`.
    let wrong = yaml.replace("  labels:\n    app", "  matchLabels:\n    app");
    assert_rejects_unknown::<ServiceEntry>(&wrong, "matchLabels");
}

#[test]
fn service_entry_rejects_unknown_nested_field() {
    let yaml = r#"
hosts: [api.example.com]
endpoints:
- address: 10.0.0.1
  zone: a
"#;
    assert_rejects_unknown::<ServiceEntry>(yaml, "zone");
    let yaml = "hosts: [a.example.com]\nports:\n- number: 80\n  name: http\n  port: 80\n";
    assert_rejects_unknown::<ServiceEntry>(yaml, "port");
}

const WORKLOAD_ENTRY: &str = r#"
address: 10.128.0.17
ports:
  http: 8080
  grpc: 9090
labels:
  app: ratings
  version: vm
network: vm-network
locality: us-central1/us-central1-a
weight: 5
serviceAccount: ratings-vm
"#;

#[test]
fn workload_entry_parses() {
    let we: WorkloadEntry = serde_yaml_ng::from_str(WORKLOAD_ENTRY).expect("parse");
    assert_eq!(we.address, "10.128.0.17");
    assert_eq!(we.ports["grpc"], 9090);
    assert_eq!(we.labels["version"], "vm");
    assert_eq!(we.network, "vm-network");
    assert_eq!(we.locality, "us-central1/us-central1-a");
    assert_eq!(we.weight, Some(5));
    assert_eq!(we.service_account, "ratings-vm");
    assert_json_round_trip(&we);

    assert_rejects_unknown::<WorkloadEntry>("address: 10.0.0.1\nport: 80\n", "port");
}

const WORKLOAD_GROUP: &str = r#"
metadata:
  labels:
    app: reviews
    class: vm
  annotations:
    example.com/owner: team-a
template:
  ports:
    http: 9080
  network: vm-net
  serviceAccount: reviews-vm
probe:
  initialDelaySeconds: 5
  timeoutSeconds: 3
  periodSeconds: 4
  successThreshold: 1
  failureThreshold: 3
  httpGet:
    path: /ready
    port: 9080
    host: 127.0.0.1
    scheme: HTTPS
    httpHeaders:
    - name: X-Probe
      value: "1"
"#;

#[test]
fn workload_group_parses() {
    let wg: WorkloadGroup = serde_yaml_ng::from_str(WORKLOAD_GROUP).expect("parse");
    let meta = wg.metadata.as_ref().unwrap();
    assert_eq!(meta.labels["class"], "vm");
    assert_eq!(meta.annotations["example.com/owner"], "team-a");
    assert_eq!(wg.template.ports["http"], 9080);
    assert_eq!(wg.template.service_account, "reviews-vm");
    let probe = wg.probe.as_ref().unwrap();
    assert_eq!(probe.period_seconds, Some(4));
    assert_eq!(probe.failure_threshold, Some(3));
    let get = probe.http_get.as_ref().unwrap();
    assert_eq!((get.path.as_str(), get.port), ("/ready", 9080));
    assert_eq!(get.scheme, "HTTPS");
    assert_eq!(get.http_headers[0].name, "X-Probe");
    assert!(probe.tcp_socket.is_none() && probe.exec.is_none() && probe.grpc.is_none());
    assert_json_round_trip(&wg);
}

#[test]
fn workload_group_other_probe_kinds() {
    for (probe, check) in [
        (
            "tcpSocket:\n    host: localhost\n    port: 3306",
            "tcp" as &str,
        ),
        ("exec:\n    command: [/bin/check, --quick]", "exec"),
        (
            "grpc:\n    port: 9090\n    service: grpc.health.v1.Health",
            "grpc",
        ),
    ] {
        let yaml = format!("template:\n  serviceAccount: db\nprobe:\n  {probe}\n");
        let wg: WorkloadGroup = serde_yaml_ng::from_str(&yaml).expect("parse");
        let p = wg.probe.as_ref().unwrap();
        match check {
            "tcp" => assert_eq!(p.tcp_socket.as_ref().unwrap().port, 3306),
            "exec" => assert_eq!(p.exec.as_ref().unwrap().command[1], "--quick"),
            _ => assert_eq!(p.grpc.as_ref().unwrap().port, Some(9090)),
        }
        assert_json_round_trip(&wg);
    }
}

#[test]
fn workload_group_rejects_unknown_nested_field() {
    let yaml = r#"
template: {}
probe:
  httpGet:
    port: 80
    headers:
    - name: a
"#;
    assert_rejects_unknown::<WorkloadGroup>(yaml, "headers");
    // The template is required.
    let err = serde_yaml_ng::from_str::<WorkloadGroup>("metadata: {}\n").unwrap_err();
    assert!(err.to_string().contains("template"), "{err}");
}

const PROXY_CONFIG: &str = r#"
selector:
  matchLabels:
    app: ratings
concurrency: 0
environmentVariables:
  ISTIO_META_DNS_CAPTURE: "true"
  EXIT_ON_ZERO_ACTIVE_CONNECTIONS: "true"
image:
  imageType: distroless
"#;

#[test]
fn proxy_config_parses() {
    let pc: ProxyConfig = serde_yaml_ng::from_str(PROXY_CONFIG).expect("parse");
    assert_eq!(pc.selector.as_ref().unwrap().match_labels["app"], "ratings");
    // An explicit 0 (all cores) is kept apart from "not set".
    assert_eq!(pc.concurrency, Some(0));
    assert_eq!(pc.environment_variables["ISTIO_META_DNS_CAPTURE"], "true");
    assert_eq!(pc.image.as_ref().unwrap().image_type, "distroless");
    assert_json_round_trip(&pc);

    let json = serde_json::to_value(&pc).unwrap();
    assert_eq!(json["concurrency"], 0);

    assert_rejects_unknown::<ProxyConfig>("image:\n  hub: docker.io/istio\n", "hub");
}
