//! Reads realistic `security.istio.io` and `telemetry.istio.io` specs into the typed
//! model, refuses unknown fields, and survives a JSON round trip.

use std::fmt::Debug;

use mesh_config::common::Duration;
use mesh_config::security::authorization_policy::Action;
use mesh_config::security::peer_authentication::MutualTlsMode;
use mesh_config::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use mesh_config::telemetry::Telemetry;
use mesh_config::telemetry::telemetry::{IstioMetric, TagOverrideOperation, WorkloadMode};
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

fn assert_rejects_unknown<T: DeserializeOwned + Debug>(yaml: &str, field: &str) {
    let err = serde_yaml_ng::from_str::<T>(yaml).expect_err("unknown field was accepted");
    let message = err.to_string();
    assert!(
        message.contains("unknown field") && message.contains(field),
        "error does not name `{field}`: {message}"
    );
}

const PEER_AUTHENTICATION: &str = r#"
selector:
  matchLabels:
    app: reviews
mtls:
  mode: STRICT
portLevelMtls:
  8080:
    mode: DISABLE
  "9090":
    mode: PERMISSIVE
  15021: {}
"#;

#[test]
fn peer_authentication_parses() {
    let pa: PeerAuthentication = parse(PEER_AUTHENTICATION);
    assert_eq!(pa.selector.as_ref().unwrap().match_labels["app"], "reviews");
    assert_eq!(pa.mtls.as_ref().unwrap().mode, Some(MutualTlsMode::Strict));
    assert_eq!(pa.port_level_mtls.len(), 3);
    assert_eq!(
        pa.port_level_mtls["8080"].mode,
        Some(MutualTlsMode::Disable)
    );
    assert_eq!(
        pa.port_level_mtls["9090"].mode,
        Some(MutualTlsMode::Permissive)
    );
    assert_eq!(pa.port_level_mtls["15021"].mode, None);
    assert_json_round_trip(&pa);

    let unset: PeerAuthentication = parse("mtls: {mode: UNSET}");
    assert_eq!(unset.mtls.unwrap().mode, Some(MutualTlsMode::Unset));
    assert_eq!(
        parse::<PeerAuthentication>("{}"),
        PeerAuthentication::default()
    );
}

#[test]
fn peer_authentication_rejects_bad_input() {
    assert_rejects_unknown::<PeerAuthentication>(
        "portLevelMtls:\n  8080:\n    mode: STRICT\n    strict: true\n",
        "strict",
    );
    let err = serde_yaml_ng::from_str::<PeerAuthentication>("mtls: {mode: MUTUAL}").unwrap_err();
    assert!(err.to_string().contains("MUTUAL"), "{err}");
}

const AUTHORIZATION_POLICY: &str = r#"
selector:
  matchLabels:
    app: httpbin
    version: v1
action: DENY
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep"]
      notPrincipals: ["cluster.local/ns/default/sa/intruder"]
      requestPrincipals: ["https://accounts.example.com/*"]
      notRequestPrincipals: ["https://accounts.example.com/banned"]
      namespaces: ["test"]
      notNamespaces: ["prod"]
      ipBlocks: ["10.0.0.0/8"]
      notIpBlocks: ["10.1.2.3"]
      remoteIpBlocks: ["203.0.113.0/24"]
      notRemoteIpBlocks: ["203.0.113.4"]
      trustDomains: ["cluster.local"]
      notTrustDomains: ["evil.example"]
  - source:
      serviceAccounts: ["default/sleep", "curl"]
      notServiceAccounts: ["default/legacy"]
  to:
  - operation:
      hosts: ["httpbin.example.com"]
      notHosts: ["admin.example.com"]
      ports: ["8000"]
      notPorts: ["9000"]
      methods: ["GET", "HEAD"]
      notMethods: ["DELETE"]
      paths: ["/info*"]
      notPaths: ["/info/secret"]
  when:
  - key: request.auth.claims[iss]
    values: ["https://accounts.example.com"]
  - key: request.headers[x-canary]
    notValues: ["true"]
- {}
"#;

#[test]
fn authorization_policy_parses() {
    let ap: AuthorizationPolicy = parse(AUTHORIZATION_POLICY);
    assert_eq!(ap.action, Some(Action::Deny));
    assert_eq!(ap.selector.as_ref().unwrap().match_labels.len(), 2);
    assert_eq!(ap.rules.len(), 2);
    assert_eq!(ap.rules[1], Default::default());

    let rule = &ap.rules[0];
    let source = rule.from[0].source.as_ref().unwrap();
    assert_eq!(source.principals, ["cluster.local/ns/default/sa/sleep"]);
    assert_eq!(source.not_ip_blocks, ["10.1.2.3"]);
    assert_eq!(source.remote_ip_blocks, ["203.0.113.0/24"]);
    assert_eq!(source.not_trust_domains, ["evil.example"]);
    let by_sa = rule.from[1].source.as_ref().unwrap();
    assert_eq!(by_sa.service_accounts, ["default/sleep", "curl"]);
    assert!(by_sa.principals.is_empty());

    let op = rule.to[0].operation.as_ref().unwrap();
    assert_eq!(op.methods, ["GET", "HEAD"]);
    assert_eq!(op.ports, ["8000"]);
    assert_eq!(op.not_paths, ["/info/secret"]);

    assert_eq!(rule.when.len(), 2);
    assert_eq!(rule.when[0].key, "request.auth.claims[iss]");
    assert_eq!(rule.when[1].not_values, ["true"]);
    assert_json_round_trip(&ap);
}

#[test]
fn authorization_policy_custom_action_and_target_refs() {
    let ap: AuthorizationPolicy = parse(
        r#"
targetRefs:
- kind: Gateway
  group: gateway.networking.k8s.io
  name: ingress
targetRef:
  kind: Service
  name: reviews
action: CUSTOM
provider:
  name: my-ext-authz
rules:
- to:
  - operation:
      paths: ["/admin/*"]
"#,
    );
    assert_eq!(ap.action, Some(Action::Custom));
    assert_eq!(ap.provider.as_ref().unwrap().name, "my-ext-authz");
    assert_eq!(ap.target_refs[0].kind, "Gateway");
    assert_eq!(ap.target_refs[0].group, "gateway.networking.k8s.io");
    assert_eq!(ap.target_ref.as_ref().unwrap().name, "reviews");
    assert_json_round_trip(&ap);

    for (text, action) in [
        ("ALLOW", Action::Allow),
        ("DENY", Action::Deny),
        ("AUDIT", Action::Audit),
        ("CUSTOM", Action::Custom),
    ] {
        let ap: AuthorizationPolicy = parse(&format!("action: {text}"));
        assert_eq!(ap.action, Some(action));
    }
    assert_eq!(parse::<AuthorizationPolicy>("{}").action, None);
}

#[test]
fn authorization_policy_rejects_bad_input() {
    assert_rejects_unknown::<AuthorizationPolicy>(
        "rules:\n- from:\n  - source:\n      principal: [a]\n",
        "principal",
    );
    assert_rejects_unknown::<AuthorizationPolicy>(
        "rules:\n- to:\n  - operation:\n      method: [GET]\n",
        "method",
    );
    let err = serde_yaml_ng::from_str::<AuthorizationPolicy>("rules:\n- when:\n  - values: [a]\n")
        .unwrap_err();
    assert!(err.to_string().contains("missing field `key`"), "{err}");
}

const REQUEST_AUTHENTICATION: &str = r#"
selector:
  matchLabels:
    app: productpage
jwtRules:
- issuer: "https://accounts.example.com"
  audiences: ["bookstore_web.apps.example.com", "bookstore_android.apps.example.com"]
  jwksUri: "https://accounts.example.com/.well-known/jwks.json"
  fromHeaders:
  - name: x-jwt-assertion
    prefix: "Bearer "
  - name: x-goog-iap-jwt-assertion
  fromParams: ["my_token"]
  fromCookies: ["auth-token"]
  outputPayloadToHeader: x-jwt-payload
  forwardOriginalToken: true
  outputClaimToHeaders:
  - header: x-my-company-jwt-group
    claim: my-group
  - header: x-jwt-claim-group
    claim: nested.key.group
  timeout: 10s
  spaceDelimitedClaims: ["roles", "provider.login.scope"]
- issuer: "testing@secure.istio.io"
  jwks: '{"keys":[{"kty":"RSA","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX"}]}'
"#;

#[test]
fn request_authentication_parses() {
    let ra: RequestAuthentication = parse(REQUEST_AUTHENTICATION);
    assert_eq!(ra.jwt_rules.len(), 2);
    let rule = &ra.jwt_rules[0];
    assert_eq!(rule.issuer, "https://accounts.example.com");
    assert_eq!(rule.audiences.len(), 2);
    assert_eq!(
        rule.jwks_uri,
        "https://accounts.example.com/.well-known/jwks.json"
    );
    assert_eq!(rule.from_headers[0].prefix, "Bearer ");
    assert_eq!(rule.from_headers[1].name, "x-goog-iap-jwt-assertion");
    assert_eq!(rule.from_headers[1].prefix, "");
    assert_eq!(rule.from_params, ["my_token"]);
    assert_eq!(rule.from_cookies, ["auth-token"]);
    assert_eq!(rule.output_payload_to_header, "x-jwt-payload");
    assert_eq!(rule.forward_original_token, Some(true));
    assert_eq!(rule.output_claim_to_headers[1].claim, "nested.key.group");
    assert_eq!(rule.timeout, Some(Duration::from("10s")));
    assert_eq!(
        rule.timeout.as_ref().unwrap().to_std().unwrap(),
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        rule.space_delimited_claims,
        ["roles", "provider.login.scope"]
    );

    let inline = &ra.jwt_rules[1];
    assert!(inline.jwks.starts_with(r#"{"keys""#));
    assert!(inline.jwks_uri.is_empty());
    assert_eq!(inline.forward_original_token, None);
    assert_json_round_trip(&ra);
}

#[test]
fn request_authentication_accepts_snake_case_jwks_uri() {
    // The upstream CRD lists `jwks_uri` as an alternative spelling of `jwksUri`.
    let ra: RequestAuthentication =
        parse("jwtRules:\n- issuer: a\n  jwks_uri: https://a.example/keys\n");
    assert_eq!(ra.jwt_rules[0].jwks_uri, "https://a.example/keys");
    let json = serde_json::to_value(&ra).unwrap();
    assert_eq!(json["jwtRules"][0]["jwksUri"], "https://a.example/keys");
}

#[test]
fn request_authentication_rejects_bad_input() {
    assert_rejects_unknown::<RequestAuthentication>(
        "jwtRules:\n- issuer: a\n  fromHeaders:\n  - name: x-token\n    strip: true\n",
        "strip",
    );
    assert_rejects_unknown::<RequestAuthentication>(
        "jwtRules:\n- issuer: a\n  jwksURL: https://a.example/keys\n",
        "jwksURL",
    );
    let err = serde_yaml_ng::from_str::<RequestAuthentication>(
        "jwtRules:\n- outputClaimToHeaders:\n  - header: x-sub\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("missing field `claim`"), "{err}");
}

const TELEMETRY: &str = r#"
selector:
  matchLabels:
    app: frontend
tracing:
- match:
    mode: SERVER
  providers:
  - name: otel-tracing
  randomSamplingPercentage: 12.5
  disableSpanReporting: false
  customTags:
    cluster:
      literal:
        value: east-1
    pod:
      environment:
        name: POD_NAME
        defaultValue: unknown
    user:
      header:
        name: x-user-id
        defaultValue: anonymous
    sni:
      formatter:
        value: "%REQUESTED_SERVER_NAME%"
  useRequestIdForTraceSampling: true
  enableIstioTags: false
  disableContextPropagation: true
metrics:
- providers:
  - name: prometheus
  reportingInterval: 15s
  overrides:
  - match:
      metric: REQUEST_COUNT
      mode: CLIENT
    tagOverrides:
      request_host:
        value: request.host
      response_flags:
        operation: REMOVE
  - match:
      customMetric: my_app_requests
    disabled: true
  - disabled: false
    match:
      metric: ALL_METRICS
      mode: CLIENT_AND_SERVER
accessLogging:
- match:
    mode: CLIENT
  providers:
  - name: envoy
  disabled: false
  filter:
    expression: response.code >= 400
"#;

#[test]
fn telemetry_parses() {
    let t: Telemetry = parse(TELEMETRY);

    let tracing = &t.tracing[0];
    assert_eq!(
        tracing.r#match.as_ref().unwrap().mode,
        Some(WorkloadMode::Server)
    );
    assert_eq!(tracing.providers[0].name, "otel-tracing");
    assert_eq!(tracing.random_sampling_percentage, Some(12.5));
    assert_eq!(tracing.disable_span_reporting, Some(false));
    assert_eq!(tracing.use_request_id_for_trace_sampling, Some(true));
    assert_eq!(tracing.enable_istio_tags, Some(false));
    assert_eq!(tracing.disable_context_propagation, Some(true));
    let tags = &tracing.custom_tags;
    assert_eq!(tags["cluster"].literal.as_ref().unwrap().value, "east-1");
    assert!(tags["cluster"].environment.is_none());
    assert_eq!(
        tags["pod"].environment.as_ref().unwrap().default_value,
        "unknown"
    );
    assert_eq!(tags["user"].header.as_ref().unwrap().name, "x-user-id");
    assert_eq!(
        tags["sni"].formatter.as_ref().unwrap().value,
        "%REQUESTED_SERVER_NAME%"
    );

    let metrics = &t.metrics[0];
    assert_eq!(metrics.reporting_interval, Some(Duration::from("15s")));
    let first = &metrics.overrides[0];
    let selector = first.r#match.as_ref().unwrap();
    assert_eq!(selector.metric, Some(IstioMetric::RequestCount));
    assert_eq!(selector.mode, Some(WorkloadMode::Client));
    assert_eq!(first.tag_overrides["request_host"].value, "request.host");
    assert_eq!(first.tag_overrides["request_host"].operation, None);
    assert_eq!(
        first.tag_overrides["response_flags"].operation,
        Some(TagOverrideOperation::Remove)
    );
    let custom = &metrics.overrides[1];
    assert_eq!(
        custom.r#match.as_ref().unwrap().custom_metric.as_deref(),
        Some("my_app_requests")
    );
    assert_eq!(custom.disabled, Some(true));
    let all = metrics.overrides[2].r#match.as_ref().unwrap();
    assert_eq!(all.metric, Some(IstioMetric::AllMetrics));
    assert_eq!(all.mode, Some(WorkloadMode::ClientAndServer));

    let logging = &t.access_logging[0];
    assert_eq!(
        logging.r#match.as_ref().unwrap().mode,
        Some(WorkloadMode::Client)
    );
    assert_eq!(logging.providers[0].name, "envoy");
    assert_eq!(logging.disabled, Some(false));
    assert_eq!(
        logging.filter.as_ref().unwrap().expression,
        "response.code >= 400"
    );
    assert_json_round_trip(&t);
}

#[test]
fn telemetry_reads_every_istio_metric() {
    let names = [
        ("ALL_METRICS", IstioMetric::AllMetrics),
        ("REQUEST_COUNT", IstioMetric::RequestCount),
        ("REQUEST_DURATION", IstioMetric::RequestDuration),
        ("REQUEST_SIZE", IstioMetric::RequestSize),
        ("RESPONSE_SIZE", IstioMetric::ResponseSize),
        ("TCP_OPENED_CONNECTIONS", IstioMetric::TcpOpenedConnections),
        ("TCP_CLOSED_CONNECTIONS", IstioMetric::TcpClosedConnections),
        ("TCP_SENT_BYTES", IstioMetric::TcpSentBytes),
        ("TCP_RECEIVED_BYTES", IstioMetric::TcpReceivedBytes),
        ("GRPC_REQUEST_MESSAGES", IstioMetric::GrpcRequestMessages),
        ("GRPC_RESPONSE_MESSAGES", IstioMetric::GrpcResponseMessages),
    ];
    for (text, metric) in names {
        let t: Telemetry = parse(&format!(
            "metrics:\n- overrides:\n  - match:\n      metric: {text}\n"
        ));
        let selector = t.metrics[0].overrides[0].r#match.as_ref().unwrap();
        assert_eq!(selector.metric, Some(metric));
        assert_eq!(serde_json::to_value(metric).unwrap(), text);
    }
}

#[test]
fn telemetry_rejects_bad_input() {
    assert_rejects_unknown::<Telemetry>(
        "tracing:\n- customTags:\n    a:\n      literal:\n        value: x\n        default: y\n",
        "default",
    );
    assert_rejects_unknown::<Telemetry>(
        "metrics:\n- overrides:\n  - tagOverrides:\n      a:\n        expression: x\n",
        "expression",
    );
    assert_rejects_unknown::<Telemetry>(
        "accessLogging:\n- filter:\n    cel: response.code >= 400\n",
        "cel",
    );
    let err = serde_yaml_ng::from_str::<Telemetry>("tracing:\n- match:\n    mode: INBOUND\n")
        .unwrap_err();
    assert!(err.to_string().contains("INBOUND"), "{err}");
}
