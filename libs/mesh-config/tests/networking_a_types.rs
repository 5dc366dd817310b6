//! Reads realistic `VirtualService`, `Gateway`, `Sidecar` and `EnvoyFilter` specs into
//! the typed model, refuses unknown fields, and survives a JSON round trip.

use std::fmt::Debug;

use mesh_config::common::Duration;
use mesh_config::networking::envoy_filter::{
    Action, ApplyTo, FilterClass, Operation, PatchContext,
};
use mesh_config::networking::gateway::{TlsMode, TlsProtocol};
use mesh_config::networking::sidecar::{CaptureMode, Mode};
use mesh_config::networking::virtual_service::{RedirectPortSelection, UnmatchedPreflights};
use mesh_config::networking::{EnvoyFilter, Gateway, Sidecar, VirtualService};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(yaml: &str) -> T {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("failed to parse: {e}\n{yaml}"))
}

fn assert_json_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let json = serde_json::to_string(value).expect("serialize to JSON");
    let back: T = serde_json::from_str(&json).expect("deserialize from JSON");
    assert_eq!(&back, value, "JSON round trip changed the value: {json}");
}

fn assert_rejects<T: DeserializeOwned + Debug>(yaml: &str, expected: &[&str]) {
    let err = serde_yaml_ng::from_str::<T>(yaml).expect_err("invalid input was accepted");
    let message = err.to_string();
    for needle in expected {
        assert!(
            message.contains(needle),
            "error does not mention `{needle}`: {message}"
        );
    }
}

fn assert_rejects_unknown<T: DeserializeOwned + Debug>(yaml: &str, field: &str) {
    assert_rejects::<T>(yaml, &["unknown field", &format!("`{field}`")]);
}

const VIRTUAL_SERVICE: &str = r#"
hosts:
  - reviews.prod.svc.cluster.local
  - reviews.example.com
gateways:
  - istio-system/public-gateway
  - mesh
exportTo: ["."]
http:
  - name: reviews-v2-routes
    match:
      - name: v2-prefix
        uri:
          prefix: /wpcatalog
        headers:
          end-user:
            exact: jason
          x-debug: {}
        queryParams:
          version:
            regex: "^v[0-9]+$"
        withoutHeaders:
          x-canary:
            exact: "false"
        ignoreUriCase: true
        port: 8080
        sourceLabels:
          app: productpage
        sourceNamespace: frontend
        gateways: [mesh]
        statPrefix: reviews_v2
      - method:
          exact: GET
        authority:
          prefix: reviews
        scheme:
          exact: https
    rewrite:
      uri: /newcatalog
      authority: reviews.internal
    route:
      - destination:
          host: reviews.prod.svc.cluster.local
          subset: v2
          port:
            number: 9080
        weight: 75
        headers:
          request:
            set:
              x-route: v2
          response:
            add:
              x-served-by: reviews-v2
            remove: [server]
      - destination:
          host: reviews.prod.svc.cluster.local
          subset: v3
        weight: 25
    timeout: 10s
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream
      retryRemoteLocalities: true
      retryIgnorePreviousHosts: false
      backoff: 100ms
    fault:
      delay:
        fixedDelay: 5s
        percentage:
          value: 0.1
      abort:
        httpStatus: 503
        percentage:
          value: 1.5
    mirror:
      host: reviews-shadow
      subset: v1
    mirror_percent: 20
    mirrorPercentage:
      value: 20.0
    mirrors:
      - destination:
          host: reviews-shadow-2
        percentage:
          value: 5
    corsPolicy:
      allowOrigin: ["https://legacy.example.com"]
      allowOrigins:
        - exact: https://example.com
        - regex: "https://.*\\.example\\.org"
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-request-id]
      maxAge: 24h
      allowCredentials: false
      unmatchedPreflights: IGNORE
    headers:
      request:
        remove: [x-internal]
  - match:
      - uri:
          exact: /old
    redirect:
      uri: /new
      authority: new.example.com
      derivePort: FROM_REQUEST_PORT
      scheme: https
      redirectCode: 308
  - match:
      - uri:
          regex: "^/legacy/(.*)$"
    rewrite:
      uriRegexRewrite:
        match: "^/legacy/(.*)$"
        rewrite: /v2/\1
    route:
      - destination:
          host: legacy
  - match:
      - uri:
          exact: /teapot
    directResponse:
      status: 418
      body:
        string: "I'm a teapot"
  - match:
      - uri:
          prefix: /ratings
    delegate:
      name: ratings
      namespace: ratings-team
  - fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage:
          value: 50
    route:
      - destination:
          host: grpc-backend
tls:
  - match:
      - port: 443
        sniHosts: [login.example.com]
        destinationSubnets: [10.0.0.0/8]
        sourceLabels:
          app: web
        gateways: [mesh]
        sourceNamespace: web
    route:
      - destination:
          host: login.prod.svc.cluster.local
        weight: 100
tcp:
  - match:
      - port: 27017
        destinationSubnets: ["10.1.0.0/16"]
        sourceSubnet: 192.168.0.0/24
        sourceLabels:
          app: api
        sourceNamespace: api
    route:
      - destination:
          host: mongo.backup.svc.cluster.local
          port:
            number: 5555
"#;

#[test]
fn virtual_service_parses() {
    let vs: VirtualService = parse(VIRTUAL_SERVICE);
    assert_eq!(vs.hosts.len(), 2);
    assert_eq!(vs.gateways, ["istio-system/public-gateway", "mesh"]);
    assert_eq!(vs.export_to, ["."]);
    assert_eq!(vs.http.len(), 6);

    let main = &vs.http[0];
    assert_eq!(main.name, "reviews-v2-routes");
    let m = &main.r#match[0];
    assert_eq!(
        m.uri.as_ref().unwrap().prefix.as_deref(),
        Some("/wpcatalog")
    );
    assert_eq!(m.headers["end-user"].exact.as_deref(), Some("jason"));
    assert_eq!(m.headers["x-debug"], Default::default());
    assert_eq!(
        m.query_params["version"].regex.as_deref(),
        Some("^v[0-9]+$")
    );
    assert_eq!(
        m.without_headers["x-canary"].exact.as_deref(),
        Some("false")
    );
    assert_eq!(m.ignore_uri_case, Some(true));
    assert_eq!(m.port, Some(8080));
    assert_eq!(m.source_labels["app"], "productpage");
    assert_eq!(m.stat_prefix, "reviews_v2");
    assert_eq!(
        main.r#match[1].method.as_ref().unwrap().exact.as_deref(),
        Some("GET")
    );

    let v2 = &main.route[0];
    assert_eq!(v2.destination.host, "reviews.prod.svc.cluster.local");
    assert_eq!(v2.destination.subset, "v2");
    assert_eq!(v2.destination.port.as_ref().unwrap().number, Some(9080));
    assert_eq!(v2.weight, Some(75));
    let headers = v2.headers.as_ref().unwrap();
    assert_eq!(headers.request.as_ref().unwrap().set["x-route"], "v2");
    assert_eq!(headers.response.as_ref().unwrap().remove, ["server"]);

    assert_eq!(main.timeout, Some(Duration::from("10s")));
    let retries = main.retries.as_ref().unwrap();
    assert_eq!(retries.attempts, Some(3));
    assert_eq!(retries.per_try_timeout, Some(Duration::from("2s")));
    assert_eq!(retries.retry_ignore_previous_hosts, Some(false));
    assert_eq!(retries.backoff, Some(Duration::from("100ms")));

    let fault = main.fault.as_ref().unwrap();
    let delay = fault.delay.as_ref().unwrap();
    assert_eq!(delay.fixed_delay, Some(Duration::from("5s")));
    assert_eq!(delay.percentage.as_ref().unwrap().value, Some(0.1));
    assert_eq!(fault.abort.as_ref().unwrap().http_status, Some(503));

    // `mirror_percent` is the snake_case alternate name Istio's CRD also accepts.
    assert_eq!(main.mirror.as_ref().unwrap().host, "reviews-shadow");
    assert_eq!(main.mirror_percent, Some(20));
    assert_eq!(main.mirror_percentage.as_ref().unwrap().value, Some(20.0));
    assert_eq!(main.mirrors[0].destination.host, "reviews-shadow-2");

    let cors = main.cors_policy.as_ref().unwrap();
    assert_eq!(cors.allow_origin, ["https://legacy.example.com"]);
    assert_eq!(cors.allow_origins.len(), 2);
    assert_eq!(cors.max_age, Some(Duration::from("24h")));
    assert_eq!(cors.allow_credentials, Some(false));
    assert_eq!(cors.unmatched_preflights, Some(UnmatchedPreflights::Ignore));

    let redirect = vs.http[1].redirect.as_ref().unwrap();
    assert_eq!(
        redirect.derive_port,
        Some(RedirectPortSelection::FromRequestPort)
    );
    assert_eq!(redirect.port, None);
    assert_eq!(redirect.redirect_code, Some(308));

    let regex_rewrite = vs.http[2]
        .rewrite
        .as_ref()
        .unwrap()
        .uri_regex_rewrite
        .as_ref()
        .unwrap();
    assert_eq!(regex_rewrite.r#match, "^/legacy/(.*)$");
    assert_eq!(regex_rewrite.rewrite, "/v2/\\1");

    let direct = vs.http[3].direct_response.as_ref().unwrap();
    assert_eq!(direct.status, 418);
    assert_eq!(
        direct.body.as_ref().unwrap().string.as_deref(),
        Some("I'm a teapot")
    );

    let delegate = vs.http[4].delegate.as_ref().unwrap();
    assert_eq!(
        (delegate.name.as_str(), delegate.namespace.as_str()),
        ("ratings", "ratings-team")
    );
    assert_eq!(
        vs.http[5]
            .fault
            .as_ref()
            .unwrap()
            .abort
            .as_ref()
            .unwrap()
            .grpc_status
            .as_deref(),
        Some("UNAVAILABLE")
    );

    let tls = &vs.tls[0];
    assert_eq!(tls.r#match[0].sni_hosts, ["login.example.com"]);
    assert_eq!(tls.r#match[0].port, Some(443));
    assert_eq!(tls.route[0].weight, Some(100));

    let tcp = &vs.tcp[0];
    assert_eq!(tcp.r#match[0].source_subnet, "192.168.0.0/24");
    assert_eq!(
        tcp.route[0].destination.port.as_ref().unwrap().number,
        Some(5555)
    );

    assert_json_round_trip(&vs);
    // The serialized form uses the camelCase name.
    let json = serde_json::to_value(&vs).unwrap();
    assert_eq!(json["http"][0]["mirrorPercent"], 20);
    assert_eq!(
        json["http"][1]["redirect"]["derivePort"],
        "FROM_REQUEST_PORT"
    );
    assert_eq!(parse::<VirtualService>("{}"), VirtualService::default());
}

#[test]
fn virtual_service_rejects_bad_input() {
    // Unknown field deep inside a route destination.
    assert_rejects_unknown::<VirtualService>(
        "http:\n- route:\n  - destination:\n      host: a\n      subsett: v1\n",
        "subsett",
    );
    // Removed field (`websocketUpgrade` is reserved in the proto).
    assert_rejects_unknown::<VirtualService>(
        "http:\n- websocketUpgrade: true\n",
        "websocketUpgrade",
    );
    // Unknown field in a StringMatch.
    assert_rejects_unknown::<VirtualService>(
        "http:\n- match:\n  - uri:\n      suffix: /x\n",
        "suffix",
    );
    // Required `host` is missing.
    assert_rejects::<VirtualService>(
        "http:\n- route:\n  - destination:\n      subset: v1\n",
        &["missing field", "host"],
    );
    // Unknown enum value.
    assert_rejects::<VirtualService>(
        "http:\n- redirect:\n    derivePort: FROM_NOWHERE\n",
        &["FROM_NOWHERE"],
    );
}

const GATEWAY: &str = r#"
selector:
  istio: ingressgateway
servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
      - "*.example.com"
    tls:
      httpsRedirect: true
  - port:
      number: 443
      name: https-main
      protocol: HTTPS
    name: main-https
    bind: 0.0.0.0
    hosts:
      - prod/www.example.com
    tls:
      mode: MUTUAL
      credentialName: www-example-cert
      caCertCredentialName: www-example-ca
      subjectAltNames: [spiffe://cluster.local/ns/prod/sa/client]
      verifyCertificateSpki: ["abc="]
      verifyCertificateHash: ["AB:CD"]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384]
      insecureSkipVerify: false
  - port:
      number: 8443
      name: https-dual
      protocol: HTTPS
      targetPort: 8443
    hosts: ["*"]
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: SIMPLE
      caCrl: /etc/certs/crl.pem
      tlsCertificates:
        - serverCertificate: /etc/certs/rsa.pem
          privateKey: /etc/certs/rsa-key.pem
        - serverCertificate: /etc/certs/ecdsa.pem
          privateKey: /etc/certs/ecdsa-key.pem
          caCertificates: /etc/certs/ca.pem
  - port:
      number: 15443
      name: tls-passthrough
      protocol: TLS
    hosts: ["*.local"]
    tls:
      mode: AUTO_PASSTHROUGH
      credentialNames: [rsa-cert, ecdsa-cert]
"#;

#[test]
fn gateway_parses() {
    let gw: Gateway = parse(GATEWAY);
    assert_eq!(gw.selector["istio"], "ingressgateway");
    assert_eq!(gw.servers.len(), 4);

    let http = &gw.servers[0];
    assert_eq!(http.port.number, 80);
    assert_eq!(http.port.protocol, "HTTP");
    assert_eq!(http.tls.as_ref().unwrap().https_redirect, Some(true));
    assert_eq!(http.tls.as_ref().unwrap().mode, None);

    let https = &gw.servers[1];
    assert_eq!(https.name, "main-https");
    assert_eq!(https.bind, "0.0.0.0");
    assert_eq!(https.hosts, ["prod/www.example.com"]);
    let tls = https.tls.as_ref().unwrap();
    assert_eq!(tls.mode, Some(TlsMode::Mutual));
    assert_eq!(tls.credential_name, "www-example-cert");
    assert_eq!(tls.ca_cert_credential_name, "www-example-ca");
    assert_eq!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_2));
    assert_eq!(tls.max_protocol_version, Some(TlsProtocol::TlsV1_3));
    assert_eq!(tls.insecure_skip_verify, Some(false));

    let dual = &gw.servers[2];
    assert_eq!(dual.port.target_port, Some(8443));
    assert_eq!(dual.default_endpoint, "127.0.0.1:8080");
    let certs = &dual.tls.as_ref().unwrap().tls_certificates;
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[1].ca_certificates, "/etc/certs/ca.pem");

    let passthrough = gw.servers[3].tls.as_ref().unwrap();
    assert_eq!(passthrough.mode, Some(TlsMode::AutoPassthrough));
    assert_eq!(passthrough.credential_names, ["rsa-cert", "ecdsa-cert"]);

    assert_json_round_trip(&gw);
}

#[test]
fn gateway_rejects_bad_input() {
    assert_rejects_unknown::<Gateway>(
        "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls:\n    mode: SIMPLE\n    credentialNmae: cert\n",
        "credentialNmae",
    );
    assert_rejects_unknown::<Gateway>(
        "servers:\n- port: {number: 80, name: http, protocol: HTTP, host: x}\n  hosts: ['*']\n",
        "host",
    );
    // Port name is required by Istio's schema.
    assert_rejects::<Gateway>(
        "servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: ['*']\n",
        &["missing field", "name"],
    );
    assert_rejects::<Gateway>(
        "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n  tls: {mode: STRICT}\n",
        &["STRICT"],
    );
}

const SIDECAR: &str = r#"
workloadSelector:
  labels:
    app: ratings
ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
    captureMode: IPTABLES
  - port:
      number: 8443
      protocol: HTTPS
      name: https
    bind: 0.0.0.0
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: SIMPLE
      privateKey: /etc/istio/key.pem
      serverCertificate: /etc/istio/cert.pem
    connectionPool:
      http:
        http1MaxPendingRequests: 100
egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    bind: 127.0.0.1
    captureMode: NONE
    hosts:
      - prod-us1/*
  - hosts:
      - istio-system/*
      - "./*"
      - "~prod-us2/*"
inboundConnectionPool:
  tcp:
    maxConnections: 1000
outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy:
    host: egress-proxy.istio-system.svc.cluster.local
    subset: v1
    port:
      number: 3128
"#;

#[test]
fn sidecar_parses() {
    let sc: Sidecar = parse(SIDECAR);
    assert_eq!(
        sc.workload_selector.as_ref().unwrap().labels["app"],
        "ratings"
    );

    let uds = &sc.ingress[0];
    assert_eq!(uds.port.number, Some(9080));
    assert_eq!(uds.port.protocol, "HTTP");
    assert_eq!(uds.capture_mode, Some(CaptureMode::Iptables));
    assert_eq!(uds.default_endpoint, "unix:///var/run/someuds.sock");

    let https = &sc.ingress[1];
    assert_eq!(https.tls.as_ref().unwrap().mode, Some(TlsMode::Simple));
    assert!(https.connection_pool.as_ref().unwrap().http.is_some());

    assert_eq!(sc.egress[0].capture_mode, Some(CaptureMode::None));
    assert_eq!(sc.egress[0].hosts, ["prod-us1/*"]);
    assert_eq!(sc.egress[1].port, None);
    assert_eq!(sc.egress[1].hosts.len(), 3);

    assert!(sc.inbound_connection_pool.as_ref().unwrap().tcp.is_some());
    let outbound = sc.outbound_traffic_policy.as_ref().unwrap();
    assert_eq!(outbound.mode, Some(Mode::AllowAny));
    let proxy = outbound.egress_proxy.as_ref().unwrap();
    assert_eq!(proxy.host, "egress-proxy.istio-system.svc.cluster.local");
    assert_eq!(proxy.port.as_ref().unwrap().number, Some(3128));

    assert_json_round_trip(&sc);
}

#[test]
fn sidecar_rejects_bad_input() {
    // Sidecar's selector is networking's (`labels`), not `matchLabels`.
    assert_rejects_unknown::<Sidecar>(
        "workloadSelector:\n  matchLabels:\n    app: x\n",
        "matchLabels",
    );
    assert_rejects_unknown::<Sidecar>(
        "egress:\n- hosts: ['./*']\n  port: {number: 80, protocol: HTTP, name: http, portName: x}\n",
        "portName",
    );
    // `localhost` was removed from the API.
    assert_rejects_unknown::<Sidecar>("localhost: {}\n", "localhost");
    assert_rejects::<Sidecar>("egress:\n- bind: 127.0.0.1\n", &["missing field", "hosts"]);
    assert_rejects::<Sidecar>("outboundTrafficPolicy: {mode: DENY}\n", &["DENY"]);
}

const ENVOY_FILTER: &str = r#"
workloadSelector:
  labels:
    app: reviews
priority: -10
configPatches:
  - applyTo: NETWORK_FILTER
    match:
      context: SIDECAR_OUTBOUND
      proxy:
        proxyVersion: '^1\.2[0-9].*'
        metadata:
          ISTIO_META_CLUSTER_ID: east
      listener:
        portNumber: 9307
        portName: mysql
        name: 0.0.0.0_9307
        listenerFilter: envoy.filters.listener.tls_inspector
        filterChain:
          name: main
          sni: db.example.com
          transportProtocol: tls
          applicationProtocols: h2,http/1.1
          destinationPort: 3306
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter:
              name: envoy.filters.http.router
    patch:
      operation: INSERT_BEFORE
      filterClass: AUTHZ
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code:
            inline_string: |
              function envoy_on_request(handle) end
          stat_prefix: lua
          enabled: true
          weight: 1.5
          tags: [a, b]
  - applyTo: HTTP_ROUTE
    match:
      context: GATEWAY
      routeConfiguration:
        portNumber: 443
        portName: https
        gateway: istio-system/public-gateway
        name: https.443.https.public-gateway.istio-system
        vhost:
          name: www.example.com:443
          domainName: www.example.com
          route:
            name: default
            action: ROUTE
    patch:
      operation: MERGE_AND_REPLACE_LIST
      value:
        route:
          retry_policy:
            retriable_status_codes: [503]
  - applyTo: CLUSTER
    match:
      context: SIDECAR_INBOUND
      cluster:
        portNumber: 9080
        service: reviews.prod.svc.cluster.local
        subset: v1
        name: inbound|9080||
    patch:
      operation: REMOVE
  - applyTo: HTTP_FILTER
    match:
      context: WAYPOINT
      waypoint:
        portNumber: 15008
        route:
          name: default
        filter:
          name: envoy.filters.network.http_connection_manager
          subFilter:
            name: envoy.filters.http.router
    patch:
      operation: ADD
      value: {}
  - applyTo: LISTENER_FILTER
    patch:
      operation: INSERT_FIRST
"#;

#[test]
fn envoy_filter_parses() {
    let ef: EnvoyFilter = parse(ENVOY_FILTER);
    assert_eq!(
        ef.workload_selector.as_ref().unwrap().labels["app"],
        "reviews"
    );
    assert_eq!(ef.priority, Some(-10));
    assert_eq!(ef.config_patches.len(), 5);

    let lua = &ef.config_patches[0];
    assert_eq!(lua.apply_to, Some(ApplyTo::NetworkFilter));
    let m = lua.r#match.as_ref().unwrap();
    assert_eq!(m.context, Some(PatchContext::SidecarOutbound));
    assert_eq!(
        m.proxy.as_ref().unwrap().metadata["ISTIO_META_CLUSTER_ID"],
        "east"
    );
    let listener = m.listener.as_ref().unwrap();
    assert_eq!(listener.port_number, Some(9307));
    assert_eq!(
        listener.listener_filter,
        "envoy.filters.listener.tls_inspector"
    );
    let chain = listener.filter_chain.as_ref().unwrap();
    assert_eq!(chain.transport_protocol, "tls");
    assert_eq!(chain.destination_port, Some(3306));
    let filter = chain.filter.as_ref().unwrap();
    assert_eq!(
        filter.sub_filter.as_ref().unwrap().name,
        "envoy.filters.http.router"
    );
    assert!(m.route_configuration.is_none() && m.cluster.is_none());

    let patch = lua.patch.as_ref().unwrap();
    assert_eq!(patch.operation, Some(Operation::InsertBefore));
    assert_eq!(patch.filter_class, Some(FilterClass::Authz));
    let value = patch.value.as_ref().unwrap();
    assert_eq!(value["name"], "envoy.filters.http.lua");
    assert_eq!(
        value["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
    );
    assert_eq!(value["typed_config"]["weight"], 1.5);

    let route = ef.config_patches[1].r#match.as_ref().unwrap();
    assert_eq!(route.context, Some(PatchContext::Gateway));
    let rc = route.route_configuration.as_ref().unwrap();
    assert_eq!(rc.gateway, "istio-system/public-gateway");
    let vhost = rc.vhost.as_ref().unwrap();
    assert_eq!(vhost.domain_name, "www.example.com");
    assert_eq!(vhost.route.as_ref().unwrap().action, Some(Action::Route));
    assert_eq!(
        ef.config_patches[1].patch.as_ref().unwrap().operation,
        Some(Operation::MergeAndReplaceList)
    );

    let cluster = ef.config_patches[2].r#match.as_ref().unwrap();
    assert_eq!(cluster.cluster.as_ref().unwrap().name, "inbound|9080||");

    let waypoint = ef.config_patches[3].r#match.as_ref().unwrap();
    assert_eq!(waypoint.context, Some(PatchContext::Waypoint));
    let wp = waypoint.waypoint.as_ref().unwrap();
    assert_eq!(wp.port_number, Some(15008));
    assert_eq!(wp.route.as_ref().unwrap().name, "default");
    assert_eq!(
        wp.filter
            .as_ref()
            .unwrap()
            .sub_filter
            .as_ref()
            .unwrap()
            .name,
        "envoy.filters.http.router"
    );
    assert_eq!(
        ef.config_patches[3].patch.as_ref().unwrap().value,
        Some(serde_json::json!({}))
    );
    assert!(ef.config_patches[4].r#match.is_none());

    assert_json_round_trip(&ef);

    let by_ref: EnvoyFilter = parse(
        "targetRefs:\n- group: gateway.networking.k8s.io\n  kind: Gateway\n  name: waypoint\n",
    );
    assert_eq!(by_ref.target_refs[0].kind, "Gateway");
    assert_json_round_trip(&by_ref);
}

#[test]
fn envoy_filter_rejects_bad_input() {
    assert_rejects_unknown::<EnvoyFilter>(
        "configPatches:\n- applyTo: HTTP_FILTER\n  match:\n    listener:\n      filterChain:\n        filter:\n          subFilter:\n            name: x\n            typ: y\n",
        "typ",
    );
    // The old `workloadLabels` field was removed from the API.
    assert_rejects_unknown::<EnvoyFilter>("workloadLabels:\n  app: x\n", "workloadLabels");
    assert_rejects::<EnvoyFilter>(
        "configPatches:\n- applyTo: HTTP_FILTER\n  patch: {operation: UPSERT}\n",
        &["UPSERT"],
    );
}

#[test]
fn schemas_mark_istio_required_fields() {
    let schema = serde_json::to_value(schemars::schema_for!(VirtualService)).unwrap();
    let defs = &schema["$defs"];
    assert_eq!(defs["Destination"]["required"], serde_json::json!(["host"]));
    assert_eq!(
        defs["HttpRouteDestination"]["required"],
        serde_json::json!(["destination"])
    );
    let schema = serde_json::to_value(schemars::schema_for!(Gateway)).unwrap();
    assert_eq!(
        schema["$defs"]["Port"]["required"],
        serde_json::json!(["number", "protocol", "name"])
    );
    assert_eq!(
        schema["$defs"]["Server"]["required"],
        serde_json::json!(["port", "hosts"])
    );
}
