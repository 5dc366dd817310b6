//! The generated CRDs carry Istio's CEL rules at the fields where Istio's own
//! CRDs put them, and galley refuses every document one of those rules would
//! refuse at the API server, at the same field.

use std::path::{Path, PathBuf};

use mesh_config::crd::cel_rules::{self, CelRule};
use mesh_config::{Kind, crd, parse_all, validation};
use serde_json::Value;

use Kind::*;

/// (kind, JSON pointer into the `spec` schema, rule id): every CEL rule but
/// the duration rule, exactly where Istio's CRDs have one.
const EXPECTED: &[(Kind, &str, &str)] = &[
    (AuthorizationPolicy, "", "selector-or-target-refs"),
    (
        AuthorizationPolicy,
        "/properties/rules/items/properties/from/items/properties/source",
        "authz-service-accounts-exclusive",
    ),
    (
        AuthorizationPolicy,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-no-wildcard",
    ),
    (
        AuthorizationPolicy,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-not-empty",
    ),
    (
        AuthorizationPolicy,
        "/properties/selector/properties/matchLabels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        AuthorizationPolicy,
        "/properties/targetRef/properties/namespace",
        "target-ref-same-namespace",
    ),
    (
        AuthorizationPolicy,
        "/properties/targetRefs/items/properties/namespace",
        "target-ref-same-namespace",
    ),
    (
        DestinationRule,
        "/properties/workloadSelector/properties/matchLabels",
        "selector-label-key-no-wildcard",
    ),
    (
        DestinationRule,
        "/properties/workloadSelector/properties/matchLabels",
        "selector-label-key-not-empty",
    ),
    (
        DestinationRule,
        "/properties/workloadSelector/properties/matchLabels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        EnvoyFilter,
        "",
        "envoy-filter-workload-selector-or-target-refs",
    ),
    (
        EnvoyFilter,
        "/properties/configPatches/items/properties/match",
        "envoy-filter-waypoint-match-needs-waypoint-context",
    ),
    (
        EnvoyFilter,
        "/properties/configPatches/items/properties/match/properties/waypoint/properties/portNumber",
        "port-in-range",
    ),
    (
        EnvoyFilter,
        "/properties/targetRefs/items/properties/namespace",
        "target-ref-same-namespace",
    ),
    (
        EnvoyFilter,
        "/properties/workloadSelector/properties/labels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        Gateway,
        "/properties/servers/items/properties/tls",
        "tls-credential-names-or-certificates",
    ),
    (
        Gateway,
        "/properties/servers/items/properties/tls",
        "tls-credential-name-or-names",
    ),
    (
        PeerAuthentication,
        "",
        "peer-authn-port-level-mtls-needs-selector",
    ),
    (
        PeerAuthentication,
        "/properties/portLevelMtls",
        "peer-authn-port-level-mtls-keys-in-range",
    ),
    (
        PeerAuthentication,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-no-wildcard",
    ),
    (
        PeerAuthentication,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-not-empty",
    ),
    (
        PeerAuthentication,
        "/properties/selector/properties/matchLabels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        ProxyConfig,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-no-wildcard",
    ),
    (
        ProxyConfig,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-not-empty",
    ),
    (
        ProxyConfig,
        "/properties/selector/properties/matchLabels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (RequestAuthentication, "", "selector-or-target-refs"),
    (
        RequestAuthentication,
        "/properties/jwtRules/items",
        "request-authn-jwks-or-jwks-uri",
    ),
    (
        RequestAuthentication,
        "/properties/jwtRules/items/properties/jwksUri",
        "request-authn-jwks-uri-http",
    ),
    (
        RequestAuthentication,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-no-wildcard",
    ),
    (
        RequestAuthentication,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-not-empty",
    ),
    (
        RequestAuthentication,
        "/properties/selector/properties/matchLabels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        RequestAuthentication,
        "/properties/targetRef/properties/namespace",
        "target-ref-same-namespace",
    ),
    (
        RequestAuthentication,
        "/properties/targetRefs/items/properties/namespace",
        "target-ref-same-namespace",
    ),
    (
        ServiceEntry,
        "",
        "service-entry-workload-selector-or-endpoints",
    ),
    (ServiceEntry, "", "service-entry-cidr-needs-none-or-static"),
    (ServiceEntry, "", "service-entry-none-without-endpoints"),
    (
        ServiceEntry,
        "",
        "service-entry-dns-round-robin-one-endpoint",
    ),
    (
        ServiceEntry,
        "/properties/endpoints/items",
        "workload-address-or-network",
    ),
    (
        ServiceEntry,
        "/properties/endpoints/items",
        "workload-unix-address-without-ports",
    ),
    (
        ServiceEntry,
        "/properties/endpoints/items/properties/address",
        "workload-unix-address-absolute",
    ),
    (
        ServiceEntry,
        "/properties/endpoints/items/properties/address",
        "workload-unix-address-not-directory",
    ),
    (
        ServiceEntry,
        "/properties/endpoints/items/properties/ports",
        "workload-port-names-valid",
    ),
    (
        ServiceEntry,
        "/properties/endpoints/items/properties/ports/additionalProperties",
        "port-in-range",
    ),
    (
        ServiceEntry,
        "/properties/hosts/items",
        "service-entry-host-not-wildcard",
    ),
    (
        ServiceEntry,
        "/properties/ports",
        "service-entry-port-numbers-unique",
    ),
    (
        ServiceEntry,
        "/properties/ports/items/properties/number",
        "port-in-range",
    ),
    (
        ServiceEntry,
        "/properties/ports/items/properties/targetPort",
        "port-in-range",
    ),
    (
        ServiceEntry,
        "/properties/workloadSelector/properties/labels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        Sidecar,
        "/properties/ingress/items/properties/tls",
        "tls-credential-names-or-certificates",
    ),
    (
        Sidecar,
        "/properties/ingress/items/properties/tls",
        "tls-credential-name-or-names",
    ),
    (
        Sidecar,
        "/properties/workloadSelector/properties/labels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (Telemetry, "", "selector-or-target-refs"),
    (
        Telemetry,
        "/properties/metrics/items/properties/overrides/items/properties/tagOverrides/additionalProperties",
        "telemetry-tag-upsert-needs-value",
    ),
    (
        Telemetry,
        "/properties/metrics/items/properties/overrides/items/properties/tagOverrides/additionalProperties",
        "telemetry-tag-remove-without-value",
    ),
    (
        Telemetry,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-no-wildcard",
    ),
    (
        Telemetry,
        "/properties/selector/properties/matchLabels",
        "selector-label-key-not-empty",
    ),
    (
        Telemetry,
        "/properties/selector/properties/matchLabels/additionalProperties",
        "selector-label-value-no-wildcard",
    ),
    (
        Telemetry,
        "/properties/targetRef/properties/namespace",
        "target-ref-same-namespace",
    ),
    (
        Telemetry,
        "/properties/targetRefs/items/properties/namespace",
        "target-ref-same-namespace",
    ),
    (WorkloadEntry, "", "workload-address-or-network"),
    (WorkloadEntry, "", "workload-unix-address-without-ports"),
    (
        WorkloadEntry,
        "/properties/address",
        "workload-unix-address-absolute",
    ),
    (
        WorkloadEntry,
        "/properties/address",
        "workload-unix-address-not-directory",
    ),
    (
        WorkloadEntry,
        "/properties/ports",
        "workload-port-names-valid",
    ),
    (
        WorkloadEntry,
        "/properties/ports/additionalProperties",
        "port-in-range",
    ),
    (
        WorkloadGroup,
        "/properties/probe/properties/grpc/properties/port",
        "port-in-range",
    ),
    (
        WorkloadGroup,
        "/properties/probe/properties/httpGet/properties/port",
        "port-in-range",
    ),
    (
        WorkloadGroup,
        "/properties/probe/properties/httpGet/properties/scheme",
        "probe-http-scheme",
    ),
    (
        WorkloadGroup,
        "/properties/probe/properties/tcpSocket/properties/port",
        "port-in-range",
    ),
    (
        WorkloadGroup,
        "/properties/template",
        "workload-unix-address-without-ports",
    ),
    (
        WorkloadGroup,
        "/properties/template/properties/address",
        "workload-unix-address-absolute",
    ),
    (
        WorkloadGroup,
        "/properties/template/properties/address",
        "workload-unix-address-not-directory",
    ),
    (
        WorkloadGroup,
        "/properties/template/properties/ports",
        "workload-port-names-valid",
    ),
    (
        WorkloadGroup,
        "/properties/template/properties/ports/additionalProperties",
        "port-in-range",
    ),
];

/// How many duration fields carry the 1ms rule, per kind (Istio's count for
/// the fields our model has).
const DURATION_RULES: &[(Kind, usize)] = &[
    (DestinationRule, 44),
    (Sidecar, 14),
    (VirtualService, 6),
    (RequestAuthentication, 1),
    (Telemetry, 1),
];

fn rule(id: &str) -> CelRule {
    cel_rules::all_rules()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no rule {id}"))
}

/// The `spec` schema of every served version of `kind`'s CRD.
fn spec_schemas(kind: Kind) -> Vec<Value> {
    let crd = crd::custom_resource_definition(kind);
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["schema"]["openAPIV3Schema"]["properties"]["spec"].clone())
        .collect()
}

/// Every `(pointer, rule)` of a schema, walking properties, items and map values.
fn validations(schema: &Value, at: &str, out: &mut Vec<(String, String)>) {
    for v in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push((at.to_string(), v["rule"].as_str().unwrap().to_string()));
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            validations(child, &format!("{at}/properties/{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            validations(&schema[key], &format!("{at}/{key}"), out);
        }
    }
}

#[test]
fn each_rule_sits_where_istio_puts_it() {
    for (kind, at, id) in EXPECTED {
        let expected = rule(id);
        for spec in spec_schemas(*kind) {
            let node = spec
                .pointer(at)
                .unwrap_or_else(|| panic!("{kind:?}: no schema at {at:?}"));
            let rules = node["x-kubernetes-validations"].as_array();
            let found = rules
                .into_iter()
                .flatten()
                .any(|v| v["rule"] == expected.rule && v["message"] == expected.message);
            assert!(found, "{kind:?} {at:?}: rule {id} missing: {node:#}");
        }
    }
}

#[test]
fn no_rule_is_outside_the_table() {
    let duration = rule("duration-at-least-1ms").rule;
    for kind in Kind::ALL {
        let mut found = Vec::new();
        validations(&spec_schemas(*kind)[0], "", &mut found);
        let durations = found.iter().filter(|(_, r)| r == duration).count();
        let others = found.len() - durations;
        let expected_others = EXPECTED.iter().filter(|(k, _, _)| k == kind).count();
        let expected_durations = DURATION_RULES
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n);
        assert_eq!(others, expected_others, "{kind:?}: {found:#?}");
        assert_eq!(durations, expected_durations, "{kind:?} durations");
    }
}

#[test]
fn durations_where_zero_turns_a_feature_off_have_no_lower_bound() {
    let spec = &spec_schemas(DestinationRule)[0];
    let policy = "/properties/trafficPolicy/properties";
    for unbounded in [
        "/connectionPool/properties/tcp/properties/idleTimeout",
        "/loadBalancer/properties/consistentHash/properties/httpCookie/properties/ttl",
        "/retryBudget/properties/budgetInterval",
    ] {
        let node = spec.pointer(&format!("{policy}{unbounded}")).unwrap();
        assert!(
            node.get("x-kubernetes-validations").is_none(),
            "{unbounded}"
        );
        assert!(
            node.get(cel_rules::DURATION_MARKER).is_none(),
            "{unbounded}"
        );
    }
    let bounded = spec
        .pointer(&format!(
            "{policy}/connectionPool/properties/http/properties/idleTimeout"
        ))
        .unwrap();
    assert_eq!(
        bounded["x-kubernetes-validations"][0]["rule"],
        rule("duration-at-least-1ms").rule
    );
}

#[test]
fn size_limits_as_istio_sets_them() {
    for (kind, at, keyword, value) in [
        (ServiceEntry, "/properties/hosts", "maxItems", 256),
        (ServiceEntry, "/properties/hosts", "minItems", 1),
        (ServiceEntry, "/properties/addresses/items", "maxLength", 64),
        (ServiceEntry, "/properties/ports", "maxItems", 256),
        (ServiceEntry, "/properties/endpoints", "maxItems", 4096),
        (WorkloadEntry, "/properties/ports", "maxProperties", 128),
        (
            WorkloadGroup,
            "/properties/template/properties/address",
            "maxLength",
            256,
        ),
        (
            AuthorizationPolicy,
            "/properties/targetRefs",
            "maxItems",
            16,
        ),
        (
            Telemetry,
            "/properties/targetRef/properties/kind",
            "maxLength",
            63,
        ),
        (
            PeerAuthentication,
            "/properties/selector/properties/matchLabels",
            "maxProperties",
            4096,
        ),
        (
            Gateway,
            "/properties/servers/items/properties/tls/properties/credentialNames",
            "maxItems",
            2,
        ),
    ] {
        let spec = &spec_schemas(kind)[0];
        assert_eq!(
            spec.pointer(at).unwrap()[keyword],
            value,
            "{kind:?} {at} {keyword}"
        );
    }
}

#[test]
fn every_rule_is_placed_and_has_a_message() {
    for rule in cel_rules::all_rules() {
        assert!(!rule.message.is_empty(), "{}", rule.id);
        let used =
            rule.id == "duration-at-least-1ms" || EXPECTED.iter().any(|(_, _, id)| *id == rule.id);
        assert!(used, "{} is in no CRD", rule.id);
    }
}

#[test]
fn every_rule_is_valid_cel() {
    for rule in cel_rules::all_rules() {
        if let Err(error) = cel::Program::compile(rule.rule) {
            panic!("{}: {:?} does not parse: {error}", rule.id, rule.rule);
        }
    }
    // The parser does refuse broken expressions.
    for broken in ["has(self.a) &&& true", "a b", "self.)"] {
        assert!(cel::Program::compile(broken).is_err(), "{broken}");
    }
}

// ---- galley agrees: one fixture per rule, refused at the rule's field --------

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cel")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The rule a fixture violates: the longest rule id its file name starts with.
fn rule_of(path: &Path) -> CelRule {
    let stem = path.file_stem().unwrap().to_string_lossy().to_string();
    cel_rules::all_rules()
        .into_iter()
        .filter(|r| stem == r.id || stem.starts_with(&format!("{}-", r.id)))
        .max_by_key(|r| r.id.len())
        .unwrap_or_else(|| panic!("{stem}: named after no rule"))
}

/// `spec.endpoints[0].ports[http]` without indexes and keys: `spec.endpoints.ports`.
fn without_indexes(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The dotted field path of a schema pointer: `/properties/ports/items` -> `spec.ports`.
fn field_path(pointer: &str) -> String {
    let mut path = String::from("spec");
    let mut parts = pointer.split('/').skip(1);
    while let Some(part) = parts.next() {
        if part == "properties" {
            path.push('.');
            path.push_str(parts.next().unwrap());
        }
    }
    path
}

#[test]
fn every_cel_rule_has_a_fixture_that_galley_refuses_at_its_field() {
    let files = fixtures();
    let mut failures = Vec::new();
    for rule in cel_rules::all_rules() {
        if !files.iter().any(|f| rule_of(f).id == rule.id) {
            failures.push(format!("{}: no fixture in tests/fixtures/cel/", rule.id));
        }
    }
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: no '# expect: PATH' header"))
            .trim()
            .to_string();
        let parsed = parse_all(&name, &text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(parsed.len(), 1, "{name}: one document expected");
        let resource = &parsed[0].resource;
        let rule = rule_of(path);
        // The path galley reports must lie within a placement of the rule.
        let within = EXPECTED
            .iter()
            .filter(|(kind, _, id)| *kind == resource.kind() && *id == rule.id)
            .map(|(_, at, _)| field_path(at))
            .chain((rule.id == "duration-at-least-1ms").then(|| "spec".to_string()))
            .any(|placed| {
                let galley = without_indexes(&expected);
                galley == placed || galley.starts_with(&format!("{placed}."))
            });
        if !within {
            failures.push(format!(
                "{name}: {expected} is not where {} sits in {:?}'s CRD",
                rule.id,
                resource.kind()
            ));
        }
        let report = validation::validate(resource);
        let paths: Vec<&str> = report.errors.iter().map(|f| f.path.as_str()).collect();
        if paths != [expected.as_str()] {
            failures.push(format!(
                "{name}: expected one error at {expected}, got {:#?}",
                report.errors
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- the CRDs stay readable by Kubernetes tooling ---------------------------

#[test]
fn checked_in_crds_parse_back_to_what_is_generated() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for kind in Kind::ALL {
        let text = std::fs::read_to_string(dir.join(crd::file_name(*kind))).unwrap();
        let parsed: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(parsed, crd::custom_resource_definition(*kind), "{kind:?}");
    }
}

/// `kubectl kustomize` decodes every CRD as a Kubernetes object offline (no
/// cluster needed); skipped where kubectl is not installed.
#[test]
fn kubectl_reads_the_crds() {
    let Ok(version) = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("kubectl not found; skipping");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let mut kustomization = String::from("resources:\n");
    for kind in Kind::ALL {
        let name = crd::file_name(*kind);
        let yaml = crd::custom_resource_definition_yaml(*kind);
        std::fs::write(dir.path().join(&name), yaml).unwrap();
        kustomization.push_str(&format!("- {name}\n"));
    }
    std::fs::write(dir.path().join("kustomization.yaml"), kustomization).unwrap();
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).unwrap();
    let crds = rendered.matches("kind: CustomResourceDefinition").count();
    assert_eq!(crds, Kind::ALL.len());
    assert_eq!(
        rendered.matches("x-kubernetes-validations").count(),
        Kind::ALL
            .iter()
            .map(|k| crd::custom_resource_definition_yaml(*k)
                .matches("x-kubernetes-validations")
                .count())
            .sum::<usize>()
    );
}
