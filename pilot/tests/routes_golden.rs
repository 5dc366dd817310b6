//! Gateway route configurations (RDS) from Istio VirtualServices, compared
//! with reviewed golden JSON (`tests/golden/routes_*.json`, proto3 JSON as in
//! Envoy's config dump). Each golden test also asserts the fields that carry
//! its meaning, so a golden file regenerated without review still gets checked.

mod support;

use std::path::PathBuf;

use mesh_config::{AnyResource, parse_all};
use pilot::model::{ConfigSet, MeshSettings, MeshSnapshot, Proxy};
use pilot::translate::routes::gateway_route_configuration;
use serde_json::{Value, json};
use support::{assert_golden, ingress_gateway, snapshot_from_yaml, to_json};
use trireme_proto::envoy::pb::envoy::config::route::v3::RouteConfiguration;

/// A gateway on port 80 for every host, and the services the routes point at.
const GATEWAY_AND_SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: web
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin
  namespace: default
spec:
  hosts: [httpbin.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
"#;

/// `http.80` of the ingress gateway with `virtual_service` added to the
/// gateway and services above.
fn http_routes(virtual_service: &str) -> RouteConfiguration {
    let snapshot = snapshot_from_yaml(&format!("{GATEWAY_AND_SERVICES}---\n{virtual_service}"));
    gateway_route_configuration(&snapshot, &ingress_gateway(), "http.80").expect("http.80 exists")
}

/// The routes of the only virtual host, as JSON.
fn only_host_routes(config: &RouteConfiguration) -> Vec<Value> {
    assert_eq!(config.virtual_hosts.len(), 1, "one virtual host expected");
    config.virtual_hosts[0].routes.iter().map(to_json).collect()
}

fn golden(name: &str, config: &RouteConfiguration) -> Value {
    let rendered = to_json(config);
    assert_golden(name, &rendered);
    rendered
}

// ---- features, one golden each ----

#[test]
fn weighted_subsets_split_80_20() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/web]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"#,
    );
    let json = golden("routes_weighted", &config);
    assert_eq!(json["name"], "http.80");
    assert_eq!(json["validateClusters"], false);
    assert_eq!(json["ignorePortInHostMatching"], true);
    let host = &json["virtualHosts"][0];
    assert_eq!(host["name"], "reviews.example.com:80");
    assert_eq!(
        host["domains"],
        json!(["reviews.example.com", "reviews.example.com:80"])
    );
    let clusters = &host["routes"][0]["route"]["weightedClusters"]["clusters"];
    assert_eq!(
        clusters,
        &json!([
            {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "weight": 80},
            {"name": "outbound|9080|v2|reviews.default.svc.cluster.local", "weight": 20},
        ])
    );
    assert_eq!(host["routes"][0]["match"], json!({"prefix": "/"}));
}

#[test]
fn header_match_sends_jason_to_v2() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.example.com]
  gateways: [istio-system/web]
  http:
  - name: jason
    match:
    - name: by-header
      headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - name: everyone-else
    route:
    - destination: {host: reviews, subset: v1}
"#,
    );
    golden("routes_header_match", &config);
    let routes = only_host_routes(&config);
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["name"], "jason.by-header");
    assert_eq!(
        routes[0]["match"]["headers"],
        json!([{"name": "end-user", "stringMatch": {"exact": "jason"}}])
    );
    assert_eq!(
        routes[0]["route"]["cluster"],
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        routes[1]["route"]["cluster"],
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        routes[0]["metadata"]["filterMetadata"]["istio"]["config"],
        "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews"
    );
    assert_eq!(
        routes[0]["decorator"]["operation"],
        "reviews.default.svc.cluster.local:9080/*"
    );
}

#[test]
fn uri_prefix_rewrite_and_authority() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {prefix: /api/v1/}
    rewrite:
      uri: /
      authority: httpbin.internal
    route:
    - destination: {host: httpbin}
  - match:
    - uri: {regex: "^/users/([0-9]+)$"}
    rewrite:
      uriRegexRewrite: {match: "^/users/([0-9]+)$", rewrite: '/u/\1'}
    route:
    - destination: {host: httpbin, port: {number: 8000}}
"#,
    );
    golden("routes_rewrite", &config);
    let routes = only_host_routes(&config);
    assert_eq!(routes[0]["match"]["prefix"], "/api/v1/");
    assert_eq!(routes[0]["route"]["prefixRewrite"], "/");
    assert_eq!(routes[0]["route"]["hostRewriteLiteral"], "httpbin.internal");
    assert_eq!(
        routes[0]["route"]["cluster"],
        "outbound|8000||httpbin.default.svc.cluster.local"
    );
    assert_eq!(
        routes[1]["match"]["safeRegex"]["regex"],
        "^/users/([0-9]+)$"
    );
    assert_eq!(routes[1]["route"]["regexRewrite"]["substitution"], "/u/\\1");
}

#[test]
fn redirect_defaults_to_301() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: moved, namespace: default}
spec:
  hosts: [old.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {exact: /old}
    redirect:
      uri: /new
      authority: new.example.com
  - match:
    - uri: {prefix: /temp}
    redirect:
      scheme: https
      port: 8443
      redirectCode: 307
"#,
    );
    golden("routes_redirect", &config);
    let routes = only_host_routes(&config);
    assert_eq!(
        routes[0]["redirect"],
        json!({"hostRedirect": "new.example.com", "pathRedirect": "/new"}),
        "301 is Envoy's default response code, so it is not rendered"
    );
    assert!(routes[0].get("route").is_none());
    assert_eq!(
        routes[1]["redirect"],
        json!({"schemeRedirect": "https", "portRedirect": 8443, "responseCode": "TEMPORARY_REDIRECT"})
    );
}

#[test]
fn fault_abort_and_delay() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: faults, namespace: default}
spec:
  hosts: [faults.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {prefix: /abort}
    fault:
      abort:
        httpStatus: 503
        percentage: {value: 100}
    route:
    - destination: {host: httpbin}
  - match:
    - uri: {prefix: /delay}
    fault:
      delay:
        fixedDelay: 1s
        percentage: {value: 100}
    route:
    - destination: {host: httpbin}
"#,
    );
    golden("routes_fault", &config);
    let routes = only_host_routes(&config);
    let abort = &routes[0]["typedPerFilterConfig"]["envoy.filters.http.fault"];
    assert_eq!(
        abort["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    );
    assert_eq!(abort["abort"]["httpStatus"], 503);
    assert_eq!(
        abort["abort"]["percentage"],
        json!({"numerator": 1000000, "denominator": "MILLION"})
    );
    let delay = &routes[1]["typedPerFilterConfig"]["envoy.filters.http.fault"]["delay"];
    assert_eq!(delay["fixedDelay"], "1s");
    assert_eq!(
        delay["percentage"],
        json!({"numerator": 1000000, "denominator": "MILLION"})
    );
}

#[test]
fn retries_three_attempts_on_5xx() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: retries, namespace: default}
spec:
  hosts: [retries.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {prefix: /flaky}
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: 5xx,429
    route:
    - destination: {host: httpbin}
  - match:
    - uri: {prefix: /never}
    retries:
      attempts: 0
    route:
    - destination: {host: httpbin}
  - route:
    - destination: {host: httpbin}
"#,
    );
    golden("routes_retries", &config);
    let routes = only_host_routes(&config);
    let given = &routes[0]["route"]["retryPolicy"];
    assert_eq!(given["numRetries"], 3);
    assert_eq!(given["retryOn"], "5xx,retriable-status-codes");
    assert_eq!(given["retriableStatusCodes"], json!([429]));
    assert_eq!(given["perTryTimeout"], "2s");
    assert!(
        routes[1]["route"].get("retryPolicy").is_none(),
        "attempts 0 turns retries off"
    );
    let default = &routes[2]["route"]["retryPolicy"];
    assert_eq!(default["numRetries"], 2);
    assert_eq!(
        default["retryOn"],
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(default["retriableStatusCodes"], json!([503]));
    assert_eq!(default["hostSelectionRetryMaxAttempts"], "5");
    assert_eq!(
        default["retryHostPredicate"][0]["name"],
        "envoy.retry_host_predicates.previous_hosts"
    );
}

#[test]
fn timeout_half_a_second_and_none_by_default() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: timeouts, namespace: default}
spec:
  hosts: [timeouts.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {prefix: /quick}
    timeout: 0.5s
    route:
    - destination: {host: httpbin}
  - route:
    - destination: {host: httpbin}
"#,
    );
    golden("routes_timeout", &config);
    let routes = only_host_routes(&config);
    assert_eq!(routes[0]["route"]["timeout"], "0.500s");
    assert_eq!(
        routes[1]["route"]["timeout"], "0s",
        "Istio disables the route timeout"
    );
}

#[test]
fn mirror_with_percentage() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mirror, namespace: default}
spec:
  hosts: [mirror.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {prefix: /single}
    route:
    - destination: {host: httpbin, subset: v1}
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 12.5}
  - route:
    - destination: {host: httpbin, subset: v1}
    mirrors:
    - destination: {host: httpbin, subset: v2}
    - destination: {host: reviews, subset: v3}
      percentage: {value: 0.1}
    - destination: {host: reviews, subset: off}
      percentage: {value: 0}
"#,
    );
    golden("routes_mirror", &config);
    let routes = only_host_routes(&config);
    assert_eq!(
        routes[0]["route"]["requestMirrorPolicies"],
        json!([{
            "cluster": "outbound|8000|v2|httpbin.default.svc.cluster.local",
            "runtimeFraction": {"defaultValue": {"numerator": 125000, "denominator": "MILLION"}},
            "traceSampled": false,
        }])
    );
    let listed = routes[1]["route"]["requestMirrorPolicies"]
        .as_array()
        .unwrap();
    assert_eq!(listed.len(), 2, "a 0% mirror is dropped");
    assert_eq!(
        listed[0]["runtimeFraction"]["defaultValue"],
        json!({"numerator": 100})
    );
    assert_eq!(
        listed[1]["cluster"],
        "outbound|9080|v3|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        listed[1]["runtimeFraction"]["defaultValue"]["numerator"],
        1000
    );
}

#[test]
fn cors_policy_per_route() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cors, namespace: default}
spec:
  hosts: [cors.example.com]
  gateways: [istio-system/web]
  http:
  - route:
    - destination: {host: httpbin}
    corsPolicy:
      allowOrigins:
      - exact: https://example.com
      - regex: "https://.*\\.example\\.org"
      allowMethods: [GET, POST]
      allowHeaders: [x-custom, authorization]
      exposeHeaders: [x-trace]
      maxAge: 24h
      allowCredentials: true
"#,
    );
    golden("routes_cors", &config);
    let routes = only_host_routes(&config);
    let cors = &routes[0]["typedPerFilterConfig"]["envoy.filters.http.cors"];
    assert_eq!(
        cors["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
    );
    assert_eq!(
        cors["allowOriginStringMatch"],
        json!([{"exact": "https://example.com"}, {"safeRegex": {"regex": "https://.*\\.example\\.org"}}])
    );
    assert_eq!(cors["allowMethods"], "GET,POST");
    assert_eq!(cors["allowHeaders"], "x-custom,authorization");
    assert_eq!(cors["exposeHeaders"], "x-trace");
    assert_eq!(cors["maxAge"], "86400");
    assert_eq!(cors["allowCredentials"], true);
    assert_eq!(cors["forwardNotMatchingPreflights"], true);
}

#[test]
fn header_manipulation_on_route_and_destinations() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: headers, namespace: default}
spec:
  hosts: [headers.example.com]
  gateways: [istio-system/web]
  http:
  - headers:
      request:
        set: {x-env: prod, host: rewritten.example.com}
        add: {x-added: "yes"}
        remove: [x-internal, ":path"]
      response:
        set: {cache-control: no-store}
        remove: [server]
    route:
    - destination: {host: httpbin, subset: v1}
      weight: 90
      headers:
        request:
          set: {x-subset: v1}
        response:
          add: {x-served-by: v1}
    - destination: {host: httpbin, subset: v2}
      weight: 10
      headers:
        request:
          set: {":authority": v2.internal}
        response:
          remove: [x-debug]
"#,
    );
    golden("routes_headers", &config);
    let routes = only_host_routes(&config);
    let route = &routes[0];
    assert_eq!(
        route["requestHeadersToAdd"],
        json!([
            {"header": {"key": "x-env", "value": "prod"}, "appendAction": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-added", "value": "yes"}},
        ]),
        "host is not a header Envoy can set; APPEND_IF_EXISTS_OR_ADD is the default and not rendered"
    );
    assert_eq!(route["requestHeadersToRemove"], json!(["x-internal"]));
    assert_eq!(route["responseHeadersToRemove"], json!(["server"]));
    assert_eq!(
        route["route"]["hostRewriteLiteral"],
        "rewritten.example.com"
    );
    let clusters = &route["route"]["weightedClusters"]["clusters"];
    assert_eq!(
        clusters[0]["requestHeadersToAdd"][0]["header"]["key"],
        "x-subset"
    );
    assert_eq!(
        clusters[0]["responseHeadersToAdd"][0]["header"]["key"],
        "x-served-by"
    );
    assert_eq!(clusters[1]["hostRewriteLiteral"], "v2.internal");
    assert_eq!(clusters[1]["responseHeadersToRemove"], json!(["x-debug"]));
}

#[test]
fn every_kind_of_match_condition() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: matches, namespace: default}
spec:
  hosts: [matches.example.com]
  gateways: [istio-system/web]
  http:
  - name: conditions
    match:
    - uri: {prefix: /Search}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: matches.}
      headers:
        x-version: {regex: "v[0-9]+"}
        x-present: {}
      withoutHeaders:
        x-canary: {exact: "true"}
        x-debug: {}
      queryParams:
        q: {exact: rust}
        page: {regex: "[0-9]+"}
    route:
    - destination: {host: httpbin}
  - name: text
    match:
    - uri: {exact: /teapot}
    directResponse:
      status: 418
      body: {string: "I'm a teapot"}
  - name: binary
    match:
    - uri: {exact: /bytes}
    directResponse:
      status: 200
      body: {bytes: aGVsbG8=}
"#,
    );
    golden("routes_matches", &config);
    let routes = only_host_routes(&config);
    let m = &routes[0]["match"];
    assert_eq!(m["caseSensitive"], false);
    assert_eq!(
        m["headers"],
        json!([
            {"name": "x-canary", "stringMatch": {"exact": "true"}, "invertMatch": true, "treatMissingHeaderAsEmpty": true},
            {"name": "x-debug", "presentMatch": true, "invertMatch": true},
            {"name": "x-present", "presentMatch": true},
            {"name": "x-version", "stringMatch": {"safeRegex": {"regex": "v[0-9]+"}}},
            {"name": ":method", "stringMatch": {"exact": "GET"}},
            {"name": ":authority", "stringMatch": {"prefix": "matches."}},
        ])
    );
    assert_eq!(
        m["queryParameters"],
        json!([
            {"name": "page", "stringMatch": {"safeRegex": {"regex": "[0-9]+"}}},
            {"name": "q", "stringMatch": {"exact": "rust"}},
        ])
    );
    assert_eq!(
        routes[1]["directResponse"],
        json!({"status": 418, "body": {"inlineString": "I'm a teapot"}})
    );
    assert_eq!(
        routes[2]["directResponse"]["body"]["inlineBytes"],
        "aGVsbG8="
    );
    let json = to_json(&config);
    assert_eq!(json["maxDirectResponseBodySizeBytes"], 1048576);
}

// ---- how VirtualServices meet gateway servers ----

#[test]
fn unknown_route_names_have_no_configuration() {
    let snapshot = snapshot_from_yaml(GATEWAY_AND_SERVICES);
    let gateway = ingress_gateway();
    assert!(gateway_route_configuration(&snapshot, &gateway, "http.8080").is_none());
    assert!(
        gateway_route_configuration(&snapshot, &gateway, "https.443.https.web.istio-system")
            .is_none()
    );
    let stranger = Proxy {
        labels: [("app".to_string(), "other".to_string())].into(),
        ..gateway
    };
    assert!(gateway_route_configuration(&snapshot, &stranger, "http.80").is_none());
}

#[test]
fn servers_without_virtual_services_answer_404() {
    let snapshot = snapshot_from_yaml(GATEWAY_AND_SERVICES);
    let config = gateway_route_configuration(&snapshot, &ingress_gateway(), "http.80").unwrap();
    assert_eq!(
        to_json(&config)["virtualHosts"],
        json!([{"name": "blackhole:80", "domains": ["*"]}])
    );
}

const TWO_SERVERS: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: site, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["team-a/*.example.com", "./shop.example.com"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*/*.example.com"]
    tls: {mode: SIMPLE, credentialName: site-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: team-a}
spec:
  hosts: [app.example.com, "*.example.com"]
  gateways: [istio-system/site]
  http:
  - route:
    - destination: {host: app.team-a.svc.cluster.local, port: {number: 8080}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: intruder, namespace: team-b}
spec:
  hosts: [app.example.com]
  gateways: [istio-system/site]
  http:
  - match:
    - uri: {prefix: /b}
    route:
    - destination: {host: b.team-b.svc.cluster.local, port: {number: 80}}
"#;

#[test]
fn server_host_namespaces_limit_which_virtual_services_bind() {
    let snapshot = snapshot_from_yaml(TWO_SERVERS);
    let config = gateway_route_configuration(&snapshot, &ingress_gateway(), "http.80").unwrap();
    let json = to_json(&config);
    let names: Vec<&str> = json["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    // team-b may not use `team-a/*.example.com`; `./shop` is the gateway's own
    // namespace, so neither VirtualService binds it, but the redirect host stays.
    assert_eq!(
        names,
        [
            "*.example.com:80",
            "app.example.com:80",
            "shop.example.com:80"
        ]
    );
    for host in json["virtualHosts"].as_array().unwrap() {
        assert_eq!(
            host["requireTls"], "ALL",
            "httpsRedirect redirects every host to TLS"
        );
    }
    let app = &json["virtualHosts"][1];
    assert_eq!(app["routes"].as_array().unwrap().len(), 1);
    assert_eq!(
        app["routes"][0]["route"]["cluster"],
        "outbound|8080||app.team-a.svc.cluster.local"
    );
    assert!(json["virtualHosts"][2].get("routes").is_none());
}

#[test]
fn https_servers_have_their_own_table_with_catch_alls_last() {
    let snapshot = snapshot_from_yaml(TWO_SERVERS);
    let config = gateway_route_configuration(
        &snapshot,
        &ingress_gateway(),
        "https.443.https.site.istio-system",
    )
    .expect("the HTTPS server's table");
    let json = to_json(&config);
    assert_eq!(json["name"], "https.443.https.site.istio-system");
    let app = json["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "app.example.com:443")
        .unwrap();
    assert!(app.get("requireTls").is_none());
    let prefixes: Vec<&str> = app["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["match"]["prefix"].as_str().unwrap())
        .collect();
    // team-a's catch-all is defined first but must not hide team-b's /b.
    assert_eq!(prefixes, ["/b", "/"]);
}

#[test]
fn match_gateways_ports_and_source_labels_filter_routes() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: scoped, namespace: default}
spec:
  hosts: [scoped.example.com]
  gateways: [istio-system/web, mesh]
  http:
  - name: mesh-only
    match:
    - gateways: [mesh]
    route:
    - destination: {host: httpbin}
  - name: other-port
    match:
    - port: 8080
    route:
    - destination: {host: httpbin}
  - name: other-pods
    match:
    - sourceLabels: {app: frontend}
    route:
    - destination: {host: httpbin}
  - name: this-gateway
    match:
    - gateways: [istio-system/web]
      uri: {prefix: /gw}
    - port: 80
      sourceLabels: {istio: ingressgateway}
      uri: {prefix: /port}
    route:
    - destination: {host: httpbin}
  - name: delegated
    delegate: {name: elsewhere}
  - name: last
    route:
    - destination: {host: httpbin}
  - name: unreachable
    route:
    - destination: {host: reviews}
"#,
    );
    let routes = only_host_routes(&config);
    let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["this-gateway", "this-gateway", "last"]);
    assert_eq!(routes[0]["match"]["prefix"], "/gw");
    assert_eq!(routes[1]["match"]["prefix"], "/port");
}

#[test]
fn redirect_from_request_port_uses_the_listener_port() {
    let config = http_routes(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ports, namespace: default}
spec:
  hosts: [ports.example.com]
  gateways: [istio-system/web]
  http:
  - match:
    - uri: {prefix: /same}
    redirect: {uri: /there, derivePort: FROM_REQUEST_PORT}
  - match:
    - uri: {prefix: /https}
    redirect: {scheme: https, port: 443, redirectCode: 308}
  - match:
    - uri: {prefix: /odd}
    redirect: {uri: /x, redirectCode: 305}
"#,
    );
    let routes = only_host_routes(&config);
    // Port 80 over plain HTTP is the default, so Envoy is left to omit it.
    assert!(routes[0]["redirect"].get("portRedirect").is_none());
    assert_eq!(
        routes[1]["redirect"],
        json!({"schemeRedirect": "https", "responseCode": "PERMANENT_REDIRECT"})
    );
    assert_eq!(
        routes.len(),
        2,
        "an unsupported redirect code leaves the route out"
    );
}

// ---- Istio's bookinfo samples ----

fn bookinfo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../libs/mesh-config/tests/fixtures/istio-bookinfo")
}

/// The bookinfo services on 9080, as Kubernetes would register them.
const BOOKINFO_SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bookinfo, namespace: default}
spec:
  hosts:
  - productpage.default.svc.cluster.local
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
"#;

fn bookinfo_service_entries() -> Vec<AnyResource> {
    ["productpage", "reviews", "ratings", "details"]
        .into_iter()
        .flat_map(|service| {
            let yaml = BOOKINFO_SERVICES
                .replace("name: bookinfo", &format!("name: {service}"))
                .replace("productpage.default", &format!("{service}.default"));
            parse_all("services.yaml", &yaml).unwrap()
        })
        .map(|parsed| parsed.resource)
        .collect()
}

fn parse_fixture(name: &str) -> Vec<AnyResource> {
    let text = std::fs::read_to_string(bookinfo_dir().join(name)).unwrap();
    parse_all(name, &text)
        .unwrap()
        .into_iter()
        .map(|parsed| parsed.resource)
        .collect()
}

/// `http.8080` of the ingress gateway for the bookinfo gateway, the bookinfo
/// services and one sample whose VirtualServices are bound to
/// `bookinfo-gateway` (the samples themselves target sidecars).
fn bookinfo_routes(sample: &str) -> RouteConfiguration {
    let mut resources = parse_fixture("bookinfo-gateway.yaml");
    resources.extend(bookinfo_service_entries());
    if sample != "bookinfo-gateway.yaml" {
        resources.extend(
            parse_fixture(sample)
                .into_iter()
                .map(|resource| match resource {
                    AnyResource::VirtualService(mut vs) => {
                        vs.spec.gateways = vec!["default/bookinfo-gateway".into()];
                        AnyResource::VirtualService(vs)
                    }
                    // Other gateways (cert-manager's) would add their own servers.
                    other => other,
                }),
        );
    }
    let snapshot = MeshSnapshot::from_config(
        ConfigSet::from_resources(resources),
        MeshSettings::default(),
    );
    gateway_route_configuration(&snapshot, &ingress_gateway(), "http.8080")
        .expect("bookinfo serves http.8080")
}

fn bookinfo_samples() -> Vec<String> {
    let mut samples: Vec<String> = std::fs::read_dir(bookinfo_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .filter(|name| {
            std::fs::read_to_string(bookinfo_dir().join(name))
                .unwrap()
                .contains("kind: VirtualService")
        })
        .collect();
    samples.sort();
    samples
}

#[test]
fn every_bookinfo_sample_routes_consistently() {
    let samples = bookinfo_samples();
    assert!(
        samples.len() >= 15,
        "bookinfo fixtures are missing: {samples:?}"
    );
    for sample in &samples {
        let config = bookinfo_routes(sample);
        let stem = sample.trim_end_matches(".yaml").replace('-', "_");
        let json = golden(&format!("routes_bookinfo_{stem}"), &config);
        for host in json["virtualHosts"].as_array().unwrap() {
            for route in host["routes"].as_array().unwrap_or(&Vec::new()) {
                assert_routes_somewhere(sample, route);
            }
        }
        // The productpage entry point is always served, first, under "*".
        let star = &json["virtualHosts"][0];
        assert_eq!(star["name"], "*:8080", "{sample}");
        assert_eq!(star["domains"], json!(["*"]), "{sample}");
        assert_eq!(
            star["routes"][0]["match"]["path"], "/productpage",
            "{sample}"
        );
    }
}

/// Every bookinfo route forwards to a bookinfo service on 9080 (or, for the
/// cert-manager sample, its solver on 8089).
fn assert_routes_somewhere(sample: &str, route: &Value) {
    let action = &route["route"];
    let clusters: Vec<&str> = match action.get("cluster") {
        Some(cluster) => vec![cluster.as_str().unwrap()],
        None => action["weightedClusters"]["clusters"]
            .as_array()
            .unwrap_or_else(|| panic!("{sample}: route without destination: {route}"))
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect(),
    };
    for cluster in clusters {
        assert!(
            cluster.starts_with("outbound|9080|")
                && cluster.ends_with(".default.svc.cluster.local")
                || cluster == "outbound|8089||cert-manager-resolver.istio-system.svc.cluster.local",
            "{sample}: unexpected cluster {cluster}"
        );
    }
}

#[test]
fn bookinfo_samples_carry_their_intent() {
    let reviews_host = |config: &RouteConfiguration| {
        let json = to_json(config);
        json["virtualHosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "reviews.default.svc.cluster.local:8080")
            .cloned()
            .expect("reviews virtual host")
    };

    let split = reviews_host(&bookinfo_routes("virtual-service-reviews-80-20.yaml"));
    let weights: Vec<(String, u64)> = split["routes"][0]["route"]["weightedClusters"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
                80
            ),
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local".to_string(),
                20
            ),
        ]
    );

    let jason = reviews_host(&bookinfo_routes("virtual-service-reviews-jason-v2-v3.yaml"));
    assert_eq!(
        jason["routes"][0]["match"]["headers"][0]["stringMatch"]["exact"],
        "jason"
    );
    assert_eq!(
        jason["routes"][0]["route"]["cluster"],
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        jason["routes"][1]["route"]["cluster"],
        "outbound|9080|v3|reviews.default.svc.cluster.local"
    );

    let abort = to_json(&bookinfo_routes("virtual-service-ratings-test-abort.yaml"));
    let ratings = abort["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "ratings.default.svc.cluster.local:8080")
        .unwrap();
    let fault = &ratings["routes"][0]["typedPerFilterConfig"]["envoy.filters.http.fault"];
    assert_eq!(fault["abort"]["httpStatus"], 500);
    assert_eq!(fault["abort"]["percentage"]["numerator"], 1000000);

    // The egress sample only routes port 80, which this listener is not.
    let egress = to_json(&bookinfo_routes("egress-rule-google-apis.yaml"));
    assert_eq!(egress["virtualHosts"].as_array().unwrap().len(), 1);
}
