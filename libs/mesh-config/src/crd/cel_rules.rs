//! The CEL rules (`x-kubernetes-validations`) that Istio's own CRDs carry, placed at the same fields of the schemas generated from our
//! types, so the API server refuses what galley refuses (galley enforces the
//! same rules in `validation`, for config that never meets an API server).
//!
//! The expressions and messages are ours; each rule names the Istio CRD rule
//! whose semantics it mirrors. Placements are JSON pointers into the `spec`
//! schema after it was made structural; a pointer that no longer resolves is
//! a bug that [`apply`] reports by panicking (the tests render every kind).
//! The size limits Istio sets beside them are in `limits`.

use serde_json::{Value, json};

use crate::kinds::Kind;

/// One CEL rule: `rule` must hold for the value at its placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CelRule {
    /// Stable name; the fixtures under `tests/fixtures/cel/` are named after it.
    pub id: &'static str,
    pub rule: &'static str,
    pub message: &'static str,
}

/// Where rules go: a kind and a JSON pointer into its `spec` schema.
#[derive(Debug, Clone)]
pub struct Placement {
    pub kind: Kind,
    pub at: String,
    pub rules: &'static [CelRule],
}

// ---- Rules shared by several kinds -------------------------------------------

/// Istio `WorkloadSelector.matchLabels`: "wildcard not allowed in label key match".
const LABEL_KEY_NO_WILDCARD: CelRule = CelRule {
    id: "selector-label-key-no-wildcard",
    rule: "self.all(k, !k.contains('*'))",
    message: "label keys in a selector cannot contain '*'",
};
/// Istio `WorkloadSelector.matchLabels`: "key must not be empty".
const LABEL_KEY_NOT_EMPTY: CelRule = CelRule {
    id: "selector-label-key-not-empty",
    rule: "self.all(k, size(k) > 0)",
    message: "label keys in a selector cannot be empty",
};
/// Istio `WorkloadSelector.matchLabels` values (and the networking selector's
/// `labels` values): "wildcard not allowed in label value match".
const LABEL_VALUE_NO_WILDCARD: CelRule = CelRule {
    id: "selector-label-value-no-wildcard",
    rule: "!self.contains('*')",
    message: "label values in a selector cannot contain '*'",
};
/// Istio `PolicyTargetReference.namespace`: "cross namespace referencing is not
/// currently supported".
const TARGET_REF_SAME_NAMESPACE: CelRule = CelRule {
    id: "target-ref-same-namespace",
    rule: "size(self) == 0",
    message: "a target reference cannot name another namespace",
};
/// Istio's policy kinds (AuthorizationPolicy, RequestAuthentication, Telemetry,
/// WasmPlugin): "only one of targetRefs or selector can be set".
const SELECTOR_OR_TARGET_REFS: CelRule = CelRule {
    id: "selector-or-target-refs",
    rule: "[has(self.selector), has(self.targetRef), has(self.targetRefs)].filter(set, set).size() <= 1",
    message: "set at most one of selector, targetRef and targetRefs",
};
/// Istio's port fields (ServiceEntry ports, WorkloadEntry ports, probes,
/// EnvoyFilter waypoint match): "port must be between 1-65535".
const PORT_IN_RANGE: CelRule = CelRule {
    id: "port-in-range",
    rule: "self >= 1 && self <= 65535",
    message: "a port number must be within 1-65535",
};
/// Istio's `google.protobuf.Duration` fields: "must be a valid duration greater
/// than 1ms". Placed by [`apply_durations`], not by the table.
pub const DURATION_AT_LEAST_1MS: CelRule = CelRule {
    id: "duration-at-least-1ms",
    rule: "duration('1ms') <= duration(self)",
    message: "must be a duration of 1ms or more, such as 500ms or 5s",
};
/// Istio `ServerTLSSettings`: "only one of credentialNames or tlsCertificates
/// can be set" (Istio states this rule twice, once with a misleading message).
const TLS_CREDENTIAL_NAMES_OR_CERTIFICATES: CelRule = CelRule {
    id: "tls-credential-names-or-certificates",
    rule: "!(has(self.credentialNames) && has(self.tlsCertificates))",
    message: "credentialNames and tlsCertificates are alternatives: set one of them",
};
/// Istio `ServerTLSSettings`: "only one of credentialName or credentialNames can be set".
const TLS_CREDENTIAL_NAME_OR_NAMES: CelRule = CelRule {
    id: "tls-credential-name-or-names",
    rule: "!(has(self.credentialName) && has(self.credentialNames))",
    message: "credentialName and credentialNames are alternatives: set one of them",
};

// ---- WorkloadEntry (also a ServiceEntry endpoint and a WorkloadGroup template)

/// Istio `WorkloadEntry`: "Address is required" (unless `network` is set).
const ADDRESS_OR_NETWORK: CelRule = CelRule {
    id: "workload-address-or-network",
    rule: "has(self.address) || has(self.network)",
    message: "address is required unless network is set",
};
/// Istio `WorkloadEntry`: "UDS may not include ports".
const UNIX_ADDRESS_WITHOUT_PORTS: CelRule = CelRule {
    id: "workload-unix-address-without-ports",
    rule: "!(has(self.address) && self.address.startsWith('unix://') && has(self.ports))",
    message: "a unix domain socket address cannot have ports",
};
/// Istio `WorkloadEntry.address`: "UDS must be an absolute path or abstract socket".
const UNIX_ADDRESS_ABSOLUTE: CelRule = CelRule {
    id: "workload-unix-address-absolute",
    rule: "!self.startsWith('unix://') || self.substring(7).startsWith('/') || self.substring(7).startsWith('@')",
    message: "a unix domain socket must be an absolute path (unix:///path) or an abstract socket (unix://@name)",
};
/// Istio `WorkloadEntry.address`: "UDS may not be a dir".
const UNIX_ADDRESS_NOT_DIRECTORY: CelRule = CelRule {
    id: "workload-unix-address-not-directory",
    rule: "!(self.startsWith('unix://') && self.endsWith('/'))",
    message: "a unix domain socket path cannot end in '/'",
};
/// Istio `WorkloadEntry.ports`: "port name must be valid".
const PORT_NAMES_VALID: CelRule = CelRule {
    id: "workload-port-names-valid",
    rule: "self.all(name, size(name) < 63 && name.matches('^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$'))",
    message: "port names must be shorter than 63 characters of letters, digits and inner '-'",
};
const WORKLOAD_ENTRY: &[CelRule] = &[ADDRESS_OR_NETWORK, UNIX_ADDRESS_WITHOUT_PORTS];
const WORKLOAD_ADDRESS: &[CelRule] = &[UNIX_ADDRESS_ABSOLUTE, UNIX_ADDRESS_NOT_DIRECTORY];

// ---- WorkloadGroup ----------------------------------------------------------

/// Istio `WorkloadGroup` `HTTPHealthCheckConfig.scheme`: "scheme must be one of [HTTP, HTTPS]".
const PROBE_HTTP_SCHEME: CelRule = CelRule {
    id: "probe-http-scheme",
    rule: "self == '' || self == 'HTTP' || self == 'HTTPS'",
    message: "an HTTP probe's scheme is HTTP or HTTPS",
};

// ---- ServiceEntry -----------------------------------------------------------

/// Istio `ServiceEntry`: "only one of WorkloadSelector or Endpoints can be set".
const WORKLOAD_SELECTOR_OR_ENDPOINTS: CelRule = CelRule {
    id: "service-entry-workload-selector-or-endpoints",
    rule: "!(has(self.workloadSelector) && has(self.endpoints))",
    message: "workloadSelector and endpoints are alternatives: set one of them",
};
/// Istio `ServiceEntry`: "CIDR addresses are allowed only for NONE/STATIC resolution types".
const CIDR_ADDRESSES_NEED_NONE_OR_STATIC: CelRule = CelRule {
    id: "service-entry-cidr-needs-none-or-static",
    rule: "!has(self.addresses) || !self.addresses.exists(a, a.contains('/')) || !has(self.resolution) || self.resolution in ['NONE', 'STATIC']",
    message: "CIDR addresses need resolution NONE or STATIC",
};
/// Istio `ServiceEntry`: "NONE mode cannot set endpoints" (NONE is the default).
const RESOLUTION_NONE_WITHOUT_ENDPOINTS: CelRule = CelRule {
    id: "service-entry-none-without-endpoints",
    rule: "!has(self.endpoints) || (has(self.resolution) && self.resolution != 'NONE')",
    message: "endpoints need a resolution other than NONE (the default)",
};
/// Istio `ServiceEntry`: "DNS_ROUND_ROBIN mode cannot have multiple endpoints".
const DNS_ROUND_ROBIN_ONE_ENDPOINT: CelRule = CelRule {
    id: "service-entry-dns-round-robin-one-endpoint",
    rule: "!(has(self.resolution) && self.resolution == 'DNS_ROUND_ROBIN' && has(self.endpoints) && size(self.endpoints) > 1)",
    message: "resolution DNS_ROUND_ROBIN takes at most one endpoint",
};
/// Istio `ServiceEntry.hosts`: "hostname cannot be wildcard".
const HOST_NOT_WILDCARD: CelRule = CelRule {
    id: "service-entry-host-not-wildcard",
    rule: "self != '*'",
    message: "a host cannot be '*'",
};
/// Istio `ServiceEntry.ports`: "port number cannot be duplicated".
const PORT_NUMBERS_UNIQUE: CelRule = CelRule {
    id: "service-entry-port-numbers-unique",
    rule: "self.all(p, self.filter(q, q.number == p.number).size() == 1)",
    message: "each port number may appear once",
};

// ---- Security ---------------------------------------------------------------

/// Istio `AuthorizationPolicy` `Source`: "Cannot set serviceAccounts with
/// namespaces or principals".
const SERVICE_ACCOUNTS_EXCLUSIVE: CelRule = CelRule {
    id: "authz-service-accounts-exclusive",
    rule: "!(has(self.serviceAccounts) || has(self.notServiceAccounts)) || !(has(self.principals) || has(self.notPrincipals) || has(self.namespaces) || has(self.notNamespaces))",
    message: "serviceAccounts and notServiceAccounts cannot be combined with principals or namespaces",
};
/// Istio `PeerAuthentication`: "portLevelMtls requires selector".
const PORT_LEVEL_MTLS_NEEDS_SELECTOR: CelRule = CelRule {
    id: "peer-authn-port-level-mtls-needs-selector",
    rule: "!has(self.portLevelMtls) || (has(self.selector) && has(self.selector.matchLabels) && size(self.selector.matchLabels) > 0)",
    message: "portLevelMtls needs a selector with at least one label",
};
/// Istio `PeerAuthentication.portLevelMtls`: "port must be between 1-65535" (keys).
const PORT_LEVEL_MTLS_KEYS_IN_RANGE: CelRule = CelRule {
    id: "peer-authn-port-level-mtls-keys-in-range",
    rule: "self.all(port, int(port) >= 1 && int(port) <= 65535)",
    message: "portLevelMtls is keyed by port numbers within 1-65535",
};
/// Istio `JWTRule`: "only one of jwks or jwksUri can be set".
const JWKS_OR_JWKS_URI: CelRule = CelRule {
    id: "request-authn-jwks-or-jwks-uri",
    rule: "!(has(self.jwks) && has(self.jwksUri))",
    message: "jwks and jwksUri are alternatives: set one of them",
};
/// Istio `JWTRule.jwksUri`: "url must have scheme http:// or https://".
const JWKS_URI_HTTP: CelRule = CelRule {
    id: "request-authn-jwks-uri-http",
    rule: "isURL(self) && url(self).getScheme() in ['http', 'https']",
    message: "jwksUri must be an http:// or https:// URL",
};

// ---- Telemetry --------------------------------------------------------------

/// Istio `MetricsOverrides.TagOverride`: "value must be set when operation is UPSERT"
/// (checked, as in Istio's CRD, when the operation is written out).
const TAG_UPSERT_NEEDS_VALUE: CelRule = CelRule {
    id: "telemetry-tag-upsert-needs-value",
    rule: "!(has(self.operation) && self.operation == 'UPSERT') || (has(self.value) && size(self.value) > 0)",
    message: "an UPSERT tag override needs a value",
};
/// Istio `MetricsOverrides.TagOverride`: "value must not be set when operation is REMOVE".
const TAG_REMOVE_WITHOUT_VALUE: CelRule = CelRule {
    id: "telemetry-tag-remove-without-value",
    rule: "!(has(self.operation) && self.operation == 'REMOVE' && has(self.value))",
    message: "a REMOVE tag override takes no value",
};

// ---- EnvoyFilter ------------------------------------------------------------

/// Istio `EnvoyFilter`: "only one of targetRefs or workloadSelector can be set".
const WORKLOAD_SELECTOR_OR_TARGET_REFS: CelRule = CelRule {
    id: "envoy-filter-workload-selector-or-target-refs",
    rule: "!(has(self.workloadSelector) && has(self.targetRefs))",
    message: "workloadSelector and targetRefs are alternatives: set one of them",
};
/// Istio `EnvoyConfigObjectMatch`: "only support waypointMatch when context is WAYPOINT".
const WAYPOINT_MATCH_NEEDS_WAYPOINT_CONTEXT: CelRule = CelRule {
    id: "envoy-filter-waypoint-match-needs-waypoint-context",
    rule: "has(self.waypoint) == (has(self.context) && self.context == 'WAYPOINT')",
    message: "a waypoint match goes with, and is required by, context WAYPOINT",
};

const MATCH_LABELS: &[CelRule] = &[LABEL_KEY_NO_WILDCARD, LABEL_KEY_NOT_EMPTY];
const LABEL_VALUE: &[CelRule] = &[LABEL_VALUE_NO_WILDCARD];
const TARGET_REF: &[CelRule] = &[TARGET_REF_SAME_NAMESPACE];
const PORT: &[CelRule] = &[PORT_IN_RANGE];
const SERVER_TLS: &[CelRule] = &[
    TLS_CREDENTIAL_NAMES_OR_CERTIFICATES,
    TLS_CREDENTIAL_NAME_OR_NAMES,
];

fn place(kind: Kind, at: impl Into<String>, rules: &'static [CelRule]) -> Placement {
    Placement {
        kind,
        at: at.into(),
        rules,
    }
}

/// `istio.type.v1beta1.WorkloadSelector` at `selector`, and
/// `PolicyTargetReference` at `targetRef` / `targetRefs`.
fn selector_and_target_refs(kind: Kind) -> [Placement; 5] {
    [
        place(kind, "", &[SELECTOR_OR_TARGET_REFS]),
        place(
            kind,
            "/properties/selector/properties/matchLabels",
            MATCH_LABELS,
        ),
        place(
            kind,
            "/properties/selector/properties/matchLabels/additionalProperties",
            LABEL_VALUE,
        ),
        place(
            kind,
            "/properties/targetRef/properties/namespace",
            TARGET_REF,
        ),
        place(
            kind,
            "/properties/targetRefs/items/properties/namespace",
            TARGET_REF,
        ),
    ]
}

/// The rules of a `WorkloadEntry` schema found at `at`.
fn workload_entry(kind: Kind, at: &str) -> [Placement; 4] {
    [
        place(kind, at, WORKLOAD_ENTRY),
        place(kind, format!("{at}/properties/address"), WORKLOAD_ADDRESS),
        place(kind, format!("{at}/properties/ports"), &[PORT_NAMES_VALID]),
        place(
            kind,
            format!("{at}/properties/ports/additionalProperties"),
            PORT,
        ),
    ]
}

/// Every placement of every kind (durations aside: see [`apply_durations`]).
pub fn placements() -> Vec<Placement> {
    use Kind::*;
    let mut all = Vec::new();
    all.extend(workload_entry(WorkloadEntry, ""));
    // A WorkloadGroup's template may leave the address out (it is filled per
    // VM), so only the unix-socket rules apply to it.
    all.extend([
        place(
            WorkloadGroup,
            "/properties/template",
            &[UNIX_ADDRESS_WITHOUT_PORTS],
        ),
        place(
            WorkloadGroup,
            "/properties/template/properties/address",
            WORKLOAD_ADDRESS,
        ),
        place(
            WorkloadGroup,
            "/properties/template/properties/ports",
            &[PORT_NAMES_VALID],
        ),
        place(
            WorkloadGroup,
            "/properties/template/properties/ports/additionalProperties",
            PORT,
        ),
        place(
            WorkloadGroup,
            "/properties/probe/properties/httpGet/properties/port",
            PORT,
        ),
        place(
            WorkloadGroup,
            "/properties/probe/properties/httpGet/properties/scheme",
            &[PROBE_HTTP_SCHEME],
        ),
        place(
            WorkloadGroup,
            "/properties/probe/properties/tcpSocket/properties/port",
            PORT,
        ),
        place(
            WorkloadGroup,
            "/properties/probe/properties/grpc/properties/port",
            PORT,
        ),
    ]);
    all.push(place(
        ServiceEntry,
        "",
        &[
            WORKLOAD_SELECTOR_OR_ENDPOINTS,
            CIDR_ADDRESSES_NEED_NONE_OR_STATIC,
            RESOLUTION_NONE_WITHOUT_ENDPOINTS,
            DNS_ROUND_ROBIN_ONE_ENDPOINT,
        ],
    ));
    all.extend([
        place(
            ServiceEntry,
            "/properties/hosts/items",
            &[HOST_NOT_WILDCARD],
        ),
        place(ServiceEntry, "/properties/ports", &[PORT_NUMBERS_UNIQUE]),
        place(
            ServiceEntry,
            "/properties/ports/items/properties/number",
            PORT,
        ),
        place(
            ServiceEntry,
            "/properties/ports/items/properties/targetPort",
            PORT,
        ),
        place(
            ServiceEntry,
            "/properties/workloadSelector/properties/labels/additionalProperties",
            LABEL_VALUE,
        ),
    ]);
    all.extend(workload_entry(ServiceEntry, "/properties/endpoints/items"));
    all.extend([
        place(
            Sidecar,
            "/properties/ingress/items/properties/tls",
            SERVER_TLS,
        ),
        place(
            Sidecar,
            "/properties/workloadSelector/properties/labels/additionalProperties",
            LABEL_VALUE,
        ),
        place(
            Gateway,
            "/properties/servers/items/properties/tls",
            SERVER_TLS,
        ),
        place(
            DestinationRule,
            "/properties/workloadSelector/properties/matchLabels",
            MATCH_LABELS,
        ),
        place(
            DestinationRule,
            "/properties/workloadSelector/properties/matchLabels/additionalProperties",
            LABEL_VALUE,
        ),
        place(
            ProxyConfig,
            "/properties/selector/properties/matchLabels",
            MATCH_LABELS,
        ),
        place(
            ProxyConfig,
            "/properties/selector/properties/matchLabels/additionalProperties",
            LABEL_VALUE,
        ),
    ]);
    all.extend([
        place(EnvoyFilter, "", &[WORKLOAD_SELECTOR_OR_TARGET_REFS]),
        place(EnvoyFilter, "/properties/configPatches/items/properties/match", &[WAYPOINT_MATCH_NEEDS_WAYPOINT_CONTEXT]),
        place(EnvoyFilter, "/properties/configPatches/items/properties/match/properties/waypoint/properties/portNumber", PORT),
        place(EnvoyFilter, "/properties/targetRefs/items/properties/namespace", TARGET_REF),
        place(EnvoyFilter, "/properties/workloadSelector/properties/labels/additionalProperties", LABEL_VALUE),
    ]);
    all.extend(selector_and_target_refs(AuthorizationPolicy));
    all.push(place(
        AuthorizationPolicy,
        "/properties/rules/items/properties/from/items/properties/source",
        &[SERVICE_ACCOUNTS_EXCLUSIVE],
    ));
    all.extend([
        place(PeerAuthentication, "", &[PORT_LEVEL_MTLS_NEEDS_SELECTOR]),
        place(
            PeerAuthentication,
            "/properties/portLevelMtls",
            &[PORT_LEVEL_MTLS_KEYS_IN_RANGE],
        ),
        place(
            PeerAuthentication,
            "/properties/selector/properties/matchLabels",
            MATCH_LABELS,
        ),
        place(
            PeerAuthentication,
            "/properties/selector/properties/matchLabels/additionalProperties",
            LABEL_VALUE,
        ),
    ]);
    all.extend(selector_and_target_refs(RequestAuthentication));
    all.extend([
        place(
            RequestAuthentication,
            "/properties/jwtRules/items",
            &[JWKS_OR_JWKS_URI],
        ),
        place(
            RequestAuthentication,
            "/properties/jwtRules/items/properties/jwksUri",
            &[JWKS_URI_HTTP],
        ),
    ]);
    all.extend(selector_and_target_refs(Telemetry));
    all.push(place(Telemetry, "/properties/metrics/items/properties/overrides/items/properties/tagOverrides/additionalProperties", &[TAG_UPSERT_NEEDS_VALUE, TAG_REMOVE_WITHOUT_VALUE]));
    all
}

/// Every distinct rule, by id.
pub fn all_rules() -> Vec<CelRule> {
    let mut rules: Vec<CelRule> = placements()
        .iter()
        .flat_map(|p| p.rules.iter().copied())
        .chain([DURATION_AT_LEAST_1MS])
        .collect();
    rules.sort_by_key(|r| r.id);
    rules.dedup_by_key(|r| r.id);
    rules
}

/// Duration fields where Istio has no lower bound, because zero is meaningful:
/// a TCP `idleTimeout` of 0 disables it, a cookie `ttl` of 0 makes a session
/// cookie, and the retry budget's `budgetInterval` has no CEL rule.
const DURATIONS_WITHOUT_BOUND: &[&str] = &[
    "/tcp/properties/idleTimeout",
    "/httpCookie/properties/ttl",
    "/retryBudget/properties/budgetInterval",
];

/// Marker `common::Duration` puts on its schema so that the duration rule can
/// be placed on every duration field; removed here.
pub const DURATION_MARKER: &str = "x-trireme-duration";

/// Adds the CEL rules of `kind` to its `spec` schema.
pub fn apply(kind: Kind, spec: &mut Value) {
    apply_durations(spec, String::new());
    for placement in placements().iter().filter(|p| p.kind == kind) {
        let target = resolve(kind, spec, &placement.at);
        let rules = target
            .as_object_mut()
            .expect("a schema is an object")
            .entry("x-kubernetes-validations")
            .or_insert_with(|| json!([]));
        let list = rules.as_array_mut().expect("validations are a list");
        list.extend(
            placement
                .rules
                .iter()
                .map(|r| json!({ "rule": r.rule, "message": r.message })),
        );
    }
}

pub(super) fn resolve<'a>(kind: Kind, spec: &'a mut Value, at: &str) -> &'a mut Value {
    spec.pointer_mut(at)
        .unwrap_or_else(|| panic!("{kind:?}: no schema at {at:?} for a CEL rule or limit"))
}

/// Replaces the duration marker by the duration rule (or drops it, for the
/// fields where Istio has none), walking properties, items and map values.
fn apply_durations(schema: &mut Value, at: String) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if object.remove(DURATION_MARKER).is_some()
        && !DURATIONS_WITHOUT_BOUND.iter().any(|s| at.ends_with(s))
    {
        let rule = DURATION_AT_LEAST_1MS;
        object.insert(
            "x-kubernetes-validations".into(),
            json!([{ "rule": rule.rule, "message": rule.message }]),
        );
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (name, child) in properties.iter_mut() {
            apply_durations(child, format!("{at}/properties/{name}"));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = object.get_mut(key) {
            apply_durations(child, format!("{at}/{key}"));
        }
    }
}
