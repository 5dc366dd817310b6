//! The size limits (`maxItems`, `maxLength`, `maxProperties`, `minItems`)
//! Istio's CRDs set on the fields our model has. Besides refusing huge
//! documents, they bound the estimated cost of the CEL rules (`cel_rules`)
//! that iterate or scan a value, which the API server checks when the CRD is
//! created.

use serde_json::{Value, json};

use super::cel_rules::resolve;
use crate::kinds::Kind;

/// One limit: `keyword: value` on the schema at `at` in `kind`'s `spec`.
#[derive(Debug, Clone)]
pub struct Limit {
    pub kind: Kind,
    pub at: String,
    pub keyword: &'static str,
    pub value: u64,
}

/// Adds the limits of `kind` to its `spec` schema.
pub fn apply(kind: Kind, spec: &mut Value) {
    for limit in limits().iter().filter(|l| l.kind == kind) {
        resolve(kind, spec, &limit.at)
            .as_object_mut()
            .expect("a schema is an object")
            .insert(limit.keyword.into(), json!(limit.value));
    }
}

fn limit(kind: Kind, at: impl Into<String>, keyword: &'static str, value: u64) -> Limit {
    Limit {
        kind,
        at: at.into(),
        keyword,
        value,
    }
}

/// Every size limit Istio's CRDs set on a field our model has (compared with
/// Istio's `crd-all.gen.yaml` when written).
pub fn limits() -> Vec<Limit> {
    use Kind::*;
    let mut all = Vec::new();
    all.extend([
        // WorkloadEntry fields, wherever a WorkloadEntry schema appears.
        limit(WorkloadEntry, "/properties/address", "maxLength", 256),
        limit(WorkloadEntry, "/properties/ports", "maxProperties", 128),
        limit(WorkloadEntry, "/properties/labels", "maxProperties", 256),
        limit(WorkloadEntry, "/properties/network", "maxLength", 2048),
        limit(WorkloadEntry, "/properties/locality", "maxLength", 2048),
        limit(WorkloadEntry, "/properties/serviceAccount", "maxLength", 253),
        limit(ServiceEntry, "/properties/endpoints/items/properties/address", "maxLength", 256),
        limit(ServiceEntry, "/properties/endpoints/items/properties/ports", "maxProperties", 128),
        limit(ServiceEntry, "/properties/endpoints/items/properties/labels", "maxProperties", 256),
        limit(ServiceEntry, "/properties/endpoints/items/properties/network", "maxLength", 2048),
        limit(ServiceEntry, "/properties/endpoints/items/properties/locality", "maxLength", 2048),
        limit(ServiceEntry, "/properties/endpoints/items/properties/serviceAccount", "maxLength", 253),
        limit(WorkloadGroup, "/properties/template/properties/address", "maxLength", 256),
        limit(WorkloadGroup, "/properties/template/properties/ports", "maxProperties", 128),
        limit(WorkloadGroup, "/properties/template/properties/labels", "maxProperties", 256),
        limit(WorkloadGroup, "/properties/metadata/properties/labels", "maxProperties", 256),
        limit(WorkloadGroup, "/properties/metadata/properties/annotations", "maxProperties", 256),
        // ServiceEntry lists.
        limit(ServiceEntry, "/properties/hosts", "maxItems", 256),
        limit(ServiceEntry, "/properties/hosts", "minItems", 1),
        limit(ServiceEntry, "/properties/addresses", "maxItems", 256),
        limit(ServiceEntry, "/properties/addresses/items", "maxLength", 64),
        limit(ServiceEntry, "/properties/ports", "maxItems", 256),
        limit(ServiceEntry, "/properties/ports/items/properties/name", "maxLength", 256),
        limit(ServiceEntry, "/properties/ports/items/properties/protocol", "maxLength", 256),
        limit(ServiceEntry, "/properties/endpoints", "maxItems", 4096),
        limit(ServiceEntry, "/properties/workloadSelector/properties/labels", "maxProperties", 256),
        limit(ServiceEntry, "/properties/workloadSelector/properties/labels/additionalProperties", "maxLength", 63),
        limit(Sidecar, "/properties/workloadSelector/properties/labels", "maxProperties", 256),
        limit(Sidecar, "/properties/workloadSelector/properties/labels/additionalProperties", "maxLength", 63),
        limit(Sidecar, "/properties/ingress/items/properties/tls/properties/credentialNames", "maxItems", 2),
        limit(Sidecar, "/properties/ingress/items/properties/tls/properties/tlsCertificates", "maxItems", 2),
        limit(Gateway, "/properties/servers/items/properties/tls/properties/credentialNames", "maxItems", 2),
        limit(Gateway, "/properties/servers/items/properties/tls/properties/tlsCertificates", "maxItems", 2),
        // Security.
        limit(AuthorizationPolicy, "/properties/rules", "maxItems", 512),
        limit(AuthorizationPolicy, "/properties/rules/items/properties/from", "maxItems", 512),
        limit(AuthorizationPolicy, "/properties/rules/items/properties/from/items/properties/source/properties/serviceAccounts", "maxItems", 16),
        limit(AuthorizationPolicy, "/properties/rules/items/properties/from/items/properties/source/properties/serviceAccounts/items", "maxLength", 320),
        limit(AuthorizationPolicy, "/properties/rules/items/properties/from/items/properties/source/properties/notServiceAccounts", "maxItems", 16),
        limit(AuthorizationPolicy, "/properties/rules/items/properties/from/items/properties/source/properties/notServiceAccounts/items", "maxLength", 320),
        limit(RequestAuthentication, "/properties/jwtRules", "maxItems", 4096),
        limit(RequestAuthentication, "/properties/jwtRules/items/properties/jwksUri", "maxLength", 2048),
    ]);
    for kind in [
        AuthorizationPolicy,
        RequestAuthentication,
        Telemetry,
        EnvoyFilter,
    ] {
        // `PolicyTargetReference`, single and in a list.
        for reference in ["/properties/targetRef", "/properties/targetRefs/items"] {
            if kind == EnvoyFilter && reference == "/properties/targetRef" {
                continue; // EnvoyFilter has targetRefs only.
            }
            for (field, max) in [("group", 253), ("kind", 63), ("name", 253)] {
                let at = format!("{reference}/properties/{field}");
                all.push(limit(kind, at, "maxLength", max));
            }
        }
    }
    all.extend([
        limit(EnvoyFilter, "/properties/targetRefs", "maxItems", 16),
        limit(
            EnvoyFilter,
            "/properties/workloadSelector/properties/labels",
            "maxProperties",
            256,
        ),
        limit(
            EnvoyFilter,
            "/properties/workloadSelector/properties/labels/additionalProperties",
            "maxLength",
            63,
        ),
        limit(
            WorkloadGroup,
            "/properties/template/properties/network",
            "maxLength",
            2048,
        ),
        limit(
            WorkloadGroup,
            "/properties/template/properties/locality",
            "maxLength",
            2048,
        ),
        limit(
            WorkloadGroup,
            "/properties/template/properties/serviceAccount",
            "maxLength",
            253,
        ),
        limit(
            DestinationRule,
            "/properties/trafficPolicy/properties/portLevelSettings",
            "maxItems",
            4096,
        ),
        limit(
            DestinationRule,
            "/properties/subsets/items/properties/trafficPolicy/properties/portLevelSettings",
            "maxItems",
            4096,
        ),
        limit(
            ProxyConfig,
            "/properties/environmentVariables/additionalProperties",
            "maxLength",
            2048,
        ),
        limit(
            RequestAuthentication,
            "/properties/jwtRules/items/properties/spaceDelimitedClaims",
            "maxItems",
            64,
        ),
        limit(
            Sidecar,
            "/properties/ingress/items/properties/tls/properties/credentialNames",
            "minItems",
            1,
        ),
        limit(
            Sidecar,
            "/properties/ingress/items/properties/tls/properties/tlsCertificates",
            "minItems",
            1,
        ),
        limit(
            Gateway,
            "/properties/servers/items/properties/tls/properties/credentialNames",
            "minItems",
            1,
        ),
        limit(
            Gateway,
            "/properties/servers/items/properties/tls/properties/tlsCertificates",
            "minItems",
            1,
        ),
    ]);
    for kind in [AuthorizationPolicy, RequestAuthentication, Telemetry] {
        all.extend([
            limit(
                kind,
                "/properties/selector/properties/matchLabels",
                "maxProperties",
                4096,
            ),
            limit(
                kind,
                "/properties/selector/properties/matchLabels/additionalProperties",
                "maxLength",
                63,
            ),
            limit(kind, "/properties/targetRefs", "maxItems", 16),
        ]);
    }
    all.extend([
        limit(
            PeerAuthentication,
            "/properties/selector/properties/matchLabels",
            "maxProperties",
            4096,
        ),
        limit(
            PeerAuthentication,
            "/properties/selector/properties/matchLabels/additionalProperties",
            "maxLength",
            63,
        ),
        limit(
            ProxyConfig,
            "/properties/selector/properties/matchLabels",
            "maxProperties",
            4096,
        ),
        limit(
            ProxyConfig,
            "/properties/selector/properties/matchLabels/additionalProperties",
            "maxLength",
            63,
        ),
        limit(
            DestinationRule,
            "/properties/workloadSelector/properties/matchLabels",
            "maxProperties",
            4096,
        ),
        limit(
            DestinationRule,
            "/properties/workloadSelector/properties/matchLabels/additionalProperties",
            "maxLength",
            63,
        ),
    ]);
    all
}
