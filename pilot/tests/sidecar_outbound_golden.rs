//! A sidecar's outbound listeners (LDS), route configurations (RDS) and
//! clusters (CDS) for a small mesh, compared with golden proto3 JSON in
//! `tests/golden/` (rewrite with `UPDATE_GOLDEN=1` and review the diff),
//! plain assertions on what each case is about, and `envoy --mode validate`
//! of the whole outbound config with the routes inlined.

mod support;

use pilot::model::{MeshSnapshot, Proxy, ProxyScope};
use pilot::translate::endpoints::load_assignment;
use pilot::translate::sidecar::outbound;
use serde_json::{Value, json};
use support::{assert_golden, client_sidecar, snapshot_from_yaml, to_json};

/// Two HTTP services (reviews split by a VirtualService over DestinationRule
/// subsets; ratings with explicit ISTIO_MUTUAL), two TCP services with
/// addresses (mysql routed 90/10 to a replica), one without (mongo), and an
/// external HTTPS API.
const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: [10.0.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.2.0.1, labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}, serviceAccount: bookinfo-reviews}
  - {address: 10.2.0.2, labels: {app: reviews, version: v2, security.istio.io/tlsMode: istio}, serviceAccount: bookinfo-reviews}
  - {address: 10.2.0.3, labels: {app: reviews, version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.default.svc.cluster.local]
  addresses: [10.0.0.11]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.2.1.1, labels: {app: ratings, security.istio.io/tlsMode: istio}, serviceAccount: bookinfo-ratings}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql, namespace: db}
spec:
  hosts: [mysql.db.svc.cluster.local]
  addresses: [10.0.0.20]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  endpoints: [{address: 10.3.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mysql-replica, namespace: db}
spec:
  hosts: [mysql-replica.db.svc.cluster.local]
  addresses: [10.0.0.21]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 3306, name: tcp-mysql, protocol: TCP}]
  endpoints: [{address: 10.3.0.2}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql, namespace: db}
spec:
  hosts: [mysql.db.svc.cluster.local]
  tcp:
  - match: [{port: 3306}]
    route:
    - {destination: {host: mysql.db.svc.cluster.local}, weight: 90}
    - {destination: {host: mysql-replica.db.svc.cluster.local}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mongo, namespace: db}
spec:
  hosts: [mongo.db.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 27017, name: mongo}]
  endpoints: [{address: 10.3.1.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example-api, namespace: egress}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
"#;

fn mesh(extra: &str) -> MeshSnapshot {
    snapshot_from_yaml(&format!("{MESH}{extra}"))
}

struct Outbound {
    listeners: Vec<Value>,
    clusters: Vec<Value>,
    scope: ProxyScope,
}

fn outbound(snapshot: &MeshSnapshot, proxy: &Proxy) -> Outbound {
    let scope = ProxyScope::new(snapshot, proxy);
    Outbound {
        listeners: outbound::listeners(snapshot, proxy, &scope)
            .iter()
            .map(to_json)
            .collect(),
        clusters: outbound::clusters(snapshot, proxy, &scope)
            .iter()
            .map(to_json)
            .collect(),
        scope,
    }
}

fn routes(snapshot: &MeshSnapshot, proxy: &Proxy, scope: &ProxyScope, name: &str) -> Value {
    let config = outbound::route_configuration(snapshot, proxy, scope, name)
        .unwrap_or_else(|| panic!("no route configuration {name}"));
    to_json(&config)
}

fn names(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["name"].as_str().unwrap()).collect()
}

fn named<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(items)))
}

fn virtual_host<'a>(routes: &'a Value, name: &str) -> &'a Value {
    named(routes["virtualHosts"].as_array().unwrap(), name)
}

/// Where the TCP proxy of a filter chain sends connections.
fn tcp_target(chain: &Value) -> &Value {
    let proxy = &chain["filters"][0]["typedConfig"];
    if proxy["cluster"].is_null() {
        &proxy["weightedClusters"]
    } else {
        &proxy["cluster"]
    }
}

const REGISTRY_ONLY: &str = "
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: client}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
";

#[test]
fn sidecar_outbound_matches_golden() {
    let snapshot = mesh("");
    let proxy = client_sidecar("REDIRECT");
    let out = outbound(&snapshot, &proxy);
    assert_golden("sidecar_outbound_listeners", &Value::Array(out.listeners));
    assert_golden(
        "sidecar_outbound_routes_9080",
        &routes(&snapshot, &proxy, &out.scope, "9080"),
    );
    assert_golden("sidecar_outbound_clusters", &Value::Array(out.clusters));
}

#[test]
fn listeners_follow_istio_shapes() {
    let snapshot = mesh("");
    let out = outbound(&snapshot, &client_sidecar("REDIRECT"));
    assert_eq!(
        names(&out.listeners),
        [
            "virtualOutbound",
            "0.0.0.0_443",
            "10.0.0.20_3306",
            "10.0.0.21_3306",
            "0.0.0.0_9080",
            "0.0.0.0_27017"
        ]
    );

    let virtual_outbound = named(&out.listeners, "virtualOutbound");
    assert_eq!(virtual_outbound["useOriginalDst"], true);
    assert_eq!(
        virtual_outbound["address"]["socketAddress"],
        json!({"address": "0.0.0.0", "portValue": 15001})
    );
    let catch_all = named(
        virtual_outbound["filterChains"].as_array().unwrap(),
        "virtualOutbound-catchall-tcp",
    );
    assert_eq!(*tcp_target(catch_all), "PassthroughCluster", "ALLOW_ANY");

    let http = named(&out.listeners, "0.0.0.0_9080");
    assert_eq!(http["bindToPort"], false, "fed by virtualOutbound");
    let manager = &http["filterChains"][0]["filters"][0]["typedConfig"];
    assert_eq!(manager["rds"]["routeConfigName"], "9080");
    assert_eq!(manager["statPrefix"], "outbound_0.0.0.0_9080");
    assert_eq!(
        http["filterChains"][0]["filterChainMatch"]["applicationProtocols"],
        json!(["http/1.1", "h2c"]),
        "only plaintext HTTP goes to the connection manager"
    );
    assert_eq!(
        *tcp_target(&http["defaultFilterChain"]),
        "PassthroughCluster"
    );
    assert_eq!(
        http["listenerFilters"][0]["name"],
        "envoy.filters.listener.http_inspector"
    );

    let mysql = named(&out.listeners, "10.0.0.20_3306");
    assert_eq!(mysql["bindToPort"], false);
    assert_eq!(
        *tcp_target(&mysql["filterChains"][0]),
        json!({"clusters": [
            {"name": "outbound|3306||mysql.db.svc.cluster.local", "weight": 90},
            {"name": "outbound|3306||mysql-replica.db.svc.cluster.local", "weight": 10}
        ]}),
        "the VirtualService's tcp route"
    );
    assert!(mysql.get("listenerFilters").is_none(), "nothing to inspect");

    let mongo = named(&out.listeners, "0.0.0.0_27017");
    assert_eq!(
        *tcp_target(&mongo["filterChains"][0]),
        "outbound|27017||mongo.db.svc.cluster.local",
        "a TCP service without address takes its port"
    );
    assert!(mongo.get("defaultFilterChain").is_none());

    let api = named(&out.listeners, "0.0.0.0_443");
    let sni = &api["filterChains"][0];
    assert_eq!(
        sni["filterChainMatch"],
        json!({"serverNames": ["api.example.com"], "transportProtocol": "tls"})
    );
    assert_eq!(*tcp_target(sni), "outbound|443||api.example.com");
    assert_eq!(
        api["listenerFilters"][0]["name"],
        "envoy.filters.listener.tls_inspector"
    );
}

#[test]
fn routes_answer_by_host_and_port() {
    let snapshot = mesh("");
    let proxy = client_sidecar("REDIRECT");
    let out = outbound(&snapshot, &proxy);
    let routes = routes(&snapshot, &proxy, &out.scope, "9080");
    let hosts: Vec<&str> = routes["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            "ratings.default.svc.cluster.local:9080",
            "reviews.default.svc.cluster.local:9080",
            "allow_any"
        ]
    );
    let reviews = virtual_host(&routes, "reviews.default.svc.cluster.local:9080");
    assert_eq!(
        reviews["domains"],
        json!([
            "reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local:9080",
            "reviews.default.svc",
            "reviews.default.svc:9080",
            "reviews.default",
            "reviews.default:9080",
            "10.0.0.10",
            "10.0.0.10:9080"
        ]),
        "no bare `reviews` from another namespace"
    );
    let split = &reviews["routes"][1]["route"]["weightedClusters"]["clusters"];
    assert_eq!(
        split[0]["name"],
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    assert_eq!(split[0]["weight"], 80);
    let ratings = virtual_host(&routes, "ratings.default.svc.cluster.local:9080");
    assert_eq!(ratings["routes"][0]["name"], "default");
    assert_eq!(
        ratings["routes"][0]["route"]["cluster"],
        "outbound|9080||ratings.default.svc.cluster.local"
    );
    let allow_any = virtual_host(&routes, "allow_any");
    assert_eq!(allow_any["domains"], json!(["*"]));
    assert_eq!(
        allow_any["routes"][0]["route"]["cluster"],
        "PassthroughCluster"
    );

    assert!(
        outbound::route_configuration(&snapshot, &proxy, &out.scope, "http.80").is_none(),
        "gateway route names are not the sidecar's"
    );
}

#[test]
fn clusters_use_auto_mtls_only_inside_the_mesh() {
    let snapshot = mesh("");
    let out = outbound(&snapshot, &client_sidecar("REDIRECT"));
    let reviews = named(
        &out.clusters,
        "outbound|9080||reviews.default.svc.cluster.local",
    );
    let matches = reviews["transportSocketMatches"].as_array().unwrap();
    assert_eq!(matches[0]["match"], json!({"tlsMode": "istio"}));
    let tls = &matches[0]["transportSocket"]["typedConfig"];
    assert_eq!(
        tls["sni"],
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    let common = &tls["commonTlsContext"];
    assert_eq!(
        common["alpnProtocols"],
        json!(["istio-peer-exchange", "istio"])
    );
    assert_eq!(
        common["tlsCertificateSdsSecretConfigs"][0]["name"],
        "default"
    );
    assert_eq!(
        common["tlsCertificateSdsSecretConfigs"][0]["sdsConfig"]["apiConfigSource"]["grpcServices"]
            [0]["envoyGrpc"]["clusterName"],
        "sds-grpc"
    );
    let validation = &common["combinedValidationContext"];
    assert_eq!(
        validation["validationContextSdsSecretConfig"]["name"],
        "ROOTCA"
    );
    assert_eq!(
        validation["defaultValidationContext"]["matchTypedSubjectAltNames"][0]["matcher"]["exact"],
        "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    );
    assert_eq!(matches[1]["match"], json!({}), "plaintext to the rest");

    let ratings = named(
        &out.clusters,
        "outbound|9080||ratings.default.svc.cluster.local",
    );
    assert!(ratings.get("transportSocketMatches").is_none());
    assert_eq!(
        ratings["transportSocket"]["typedConfig"]["sni"],
        "outbound_.9080_._.ratings.default.svc.cluster.local",
        "the DestinationRule's ISTIO_MUTUAL always speaks mTLS"
    );

    let external = named(&out.clusters, "outbound|443||api.example.com");
    assert!(external.get("transportSocketMatches").is_none());
    assert!(external.get("transportSocket").is_none());

    let fixed: Vec<&str> = names(&out.clusters).into_iter().rev().take(2).collect();
    assert_eq!(fixed, ["PassthroughCluster", "BlackHoleCluster"]);
}

#[test]
fn endpoints_carry_their_tls_mode_for_the_transport_socket_match() {
    let snapshot = mesh("");
    let assignment = load_assignment(
        &snapshot,
        "outbound|9080||reviews.default.svc.cluster.local",
    )
    .unwrap();
    let json = to_json(&assignment);
    let endpoints = json["endpoints"][0]["lbEndpoints"].as_array().unwrap();
    let modes: Vec<&Value> = endpoints
        .iter()
        .map(|e| &e["metadata"]["filterMetadata"]["envoy.transport_socket_match"]["tlsMode"])
        .collect();
    assert_eq!(modes, [&json!("istio"), &json!("istio"), &Value::Null]);
}

#[test]
fn registry_only_blocks_unknown_destinations() {
    let snapshot = mesh(REGISTRY_ONLY);
    let proxy = client_sidecar("REDIRECT");
    let out = outbound(&snapshot, &proxy);
    let virtual_outbound = named(&out.listeners, "virtualOutbound");
    let catch_all = named(
        virtual_outbound["filterChains"].as_array().unwrap(),
        "virtualOutbound-catchall-tcp",
    );
    assert_eq!(*tcp_target(catch_all), "BlackHoleCluster");
    let http = named(&out.listeners, "0.0.0.0_9080");
    assert_eq!(*tcp_target(&http["defaultFilterChain"]), "BlackHoleCluster");
    let routes = routes(&snapshot, &proxy, &out.scope, "9080");
    let block_all = virtual_host(&routes, "block_all");
    assert_eq!(block_all["domains"], json!(["*"]));
    assert_eq!(block_all["routes"][0]["directResponse"]["status"], 502);
    assert!(
        routes["virtualHosts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["name"] != "allow_any")
    );
}

#[test]
fn sidecar_egress_hosts_limit_what_the_proxy_gets() {
    let snapshot = mesh(
        "
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: client}
spec:
  egress: [{hosts: ['default/*']}]
",
    );
    let out = outbound(&snapshot, &client_sidecar("REDIRECT"));
    assert_eq!(names(&out.listeners), ["virtualOutbound", "0.0.0.0_9080"]);
    assert_eq!(
        names(&out.clusters),
        [
            "outbound|9080||ratings.default.svc.cluster.local",
            "outbound|9080||reviews.default.svc.cluster.local",
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            "outbound|9080|v2|reviews.default.svc.cluster.local",
            "BlackHoleCluster",
            "PassthroughCluster"
        ]
    );
}

#[test]
fn services_not_exported_to_the_proxy_are_left_out() {
    let snapshot = mesh(
        "
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: internal, namespace: db}
spec:
  hosts: [internal.db.svc.cluster.local]
  exportTo: ['.']
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
",
    );
    let proxy = client_sidecar("REDIRECT");
    let out = outbound(&snapshot, &proxy);
    assert!(
        !names(&out.clusters)
            .iter()
            .any(|n| n.contains("internal.db"))
    );
    let routes = routes(&snapshot, &proxy, &out.scope, "9080");
    assert!(
        !routes.to_string().contains("internal.db"),
        "no virtual host either"
    );
}

#[test]
fn without_interception_listeners_bind_localhost_and_nothing_passes_through() {
    let snapshot = mesh("");
    let proxy = client_sidecar("NONE");
    let out = outbound(&snapshot, &proxy);
    assert_eq!(
        names(&out.listeners),
        [
            "127.0.0.1_443",
            "127.0.0.1_3306",
            "127.0.0.1_9080",
            "127.0.0.1_27017"
        ],
        "no virtualOutbound; TCP services share the bound port"
    );
    for listener in &out.listeners {
        assert!(listener.get("bindToPort").is_none(), "binds for real");
        assert!(
            listener.get("defaultFilterChain").is_none(),
            "nothing to pass on to"
        );
    }
    let http = named(&out.listeners, "127.0.0.1_9080");
    assert!(http.get("listenerFilters").is_none());
    assert!(http["filterChains"][0].get("filterChainMatch").is_none());
    let routes = routes(&snapshot, &proxy, &out.scope, "9080");
    assert_eq!(
        virtual_host(&routes, "block_all")["routes"][0]["directResponse"]["status"],
        502,
        "the original destination is the proxy itself"
    );
}

#[test]
fn an_egress_listener_with_port_and_bind_makes_its_own_listener() {
    let snapshot = mesh(
        "
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: client}
spec:
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.2
    hosts: ['default/*']
  - hosts: ['db/*']
",
    );
    let proxy = client_sidecar("NONE");
    let out = outbound(&snapshot, &proxy);
    assert_eq!(
        names(&out.listeners),
        ["127.0.0.1_3306", "127.0.0.2_9080", "127.0.0.1_27017"]
    );
    let http = named(&out.listeners, "127.0.0.2_9080");
    assert_eq!(
        http["filterChains"][0]["filters"][0]["typedConfig"]["rds"]["routeConfigName"],
        "127.0.0.2:9080"
    );
    let routes = routes(&snapshot, &proxy, &out.scope, "127.0.0.2:9080");
    virtual_host(&routes, "reviews.default.svc.cluster.local:9080");
}

const EDGE_CASES: &str = "
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: db}
spec:
  hosts: [legacy.db.svc.cluster.local]
  addresses: [192.168.10.0/24]
  location: MESH_INTERNAL
  resolution: NONE
  ports: [{number: 27017, name: tcp-legacy, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mongo, namespace: db}
spec:
  hosts: [mongo.db.svc.cluster.local]
  tcp:
  - route:
    - {destination: {host: mongo.db.svc.cluster.local}, weight: 100}
    - {destination: {host: legacy.db.svc.cluster.local}, weight: 0}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wikipedia, namespace: egress}
spec:
  hosts: ['*.wikipedia.org']
  location: MESH_EXTERNAL
  resolution: NONE
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
";

#[test]
fn ranges_wildcards_and_zero_weights_stay_valid_for_envoy() {
    let snapshot = mesh(EDGE_CASES);
    let out = outbound(&snapshot, &client_sidecar("REDIRECT"));
    let port = named(&out.listeners, "0.0.0.0_27017");
    let chains = port["filterChains"].as_array().unwrap();
    assert_eq!(
        chains[0]["filterChainMatch"]["prefixRanges"],
        json!([{"addressPrefix": "192.168.10.0", "prefixLen": 24}]),
        "connections into the range go to its service"
    );
    assert_eq!(
        *tcp_target(&chains[0]),
        "outbound|27017||legacy.db.svc.cluster.local"
    );
    assert_eq!(
        *tcp_target(&chains[1]),
        "outbound|27017||mongo.db.svc.cluster.local",
        "a destination weighted 0 gets nothing (Envoy refuses weight 0)"
    );
    let tls = named(&out.listeners, "0.0.0.0_443")["filterChains"]
        .as_array()
        .unwrap();
    let server_names: Vec<&Value> = tls
        .iter()
        .map(|c| &c["filterChainMatch"]["serverNames"][0])
        .collect();
    assert_eq!(
        server_names,
        [&json!("*.wikipedia.org"), &json!("api.example.com")]
    );
}

/// The outbound config of `proxy` as an Envoy bootstrap: listeners with their
/// routes inlined (Envoy cannot fetch RDS while validating), every cluster,
/// and the agent's `sds-grpc` cluster the TLS contexts name.
fn bootstrap(snapshot: &MeshSnapshot, proxy: &Proxy) -> Value {
    let out = outbound(snapshot, proxy);
    let mut listeners = out.listeners;
    for listener in &mut listeners {
        for chain in listener["filterChains"].as_array_mut().unwrap() {
            let manager = &mut chain["filters"][0]["typedConfig"];
            let Some(name) = manager["rds"]["routeConfigName"]
                .as_str()
                .map(str::to_string)
            else {
                continue;
            };
            let manager = manager.as_object_mut().unwrap();
            manager.remove("rds");
            manager.insert(
                "routeConfig".into(),
                routes(snapshot, proxy, &out.scope, &name),
            );
        }
    }
    let mut clusters = out.clusters;
    clusters.push(support::grpc_cluster("xds-grpc", 15010));
    clusters.push(support::grpc_cluster("sds-grpc", 15099));
    json!({
        "node": {"id": proxy.id, "cluster": "client.client"},
        "dynamicResources": {"adsConfig": {
            "apiType": "GRPC",
            "transportApiVersion": "V3",
            "grpcServices": [{"envoyGrpc": {"clusterName": "xds-grpc"}}]
        }},
        "staticResources": {"listeners": listeners, "clusters": clusters}
    })
}

/// Skipped without Envoy.
#[test]
fn envoy_accepts_the_sidecar_outbound_config() {
    let Some(envoy) = support::envoy_binary() else {
        eprintln!("skipped: no Envoy (set ENVOY_BIN or run make tools)");
        return;
    };
    for (extra, interception) in [("", "REDIRECT"), (REGISTRY_ONLY, "REDIRECT"), ("", "NONE")] {
        let snapshot = mesh(extra);
        support::assert_envoy_accepts(&envoy, &bootstrap(&snapshot, &client_sidecar(interception)));
    }
}
