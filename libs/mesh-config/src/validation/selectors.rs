//! Workload selectors and policy target references.

use std::collections::BTreeMap;

use super::{Checker, Path};
use crate::common::{PolicyTargetReference, WorkloadSelector};

/// Selector labels: keys non-empty, no wildcards in keys or values; an empty
/// selector is allowed but selects every workload of the namespace, which
/// deserves a warning.
pub fn labels(v: &mut Checker, at: &Path, labels: &BTreeMap<String, String>) {
    for (key, value) in labels {
        let at = at.key(key);
        v.require(
            &at,
            !key.is_empty(),
            "selector label keys must not be empty",
        );
        v.require(
            &at,
            !key.contains('*') && !value.contains('*'),
            format!("wildcards are not supported in selectors ({key}={value})"),
        );
    }
    if labels.is_empty() {
        v.warn(
            at,
            "selector has no labels: it applies to every workload in the namespace",
        );
    }
}

/// `istio.type.v1beta1.WorkloadSelector` (`matchLabels`).
pub fn workload_selector(v: &mut Checker, at: &Path, selector: Option<&WorkloadSelector>) {
    if let Some(selector) = selector {
        labels(v, &at.field("matchLabels"), &selector.match_labels);
    }
}

/// The kinds a policy may target, by API group (empty = core).
const TARGET_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

pub fn target_ref(v: &mut Checker, at: &Path, target: &PolicyTargetReference) {
    v.require(
        &at.field("name"),
        !target.name.is_empty(),
        "targetRef name is required",
    );
    v.require(
        &at.field("namespace"),
        target.namespace.is_empty(),
        "targetRef may not name another namespace: cross-namespace references are not supported",
    );
    let group = if target.group == "core" {
        ""
    } else {
        target.group.as_str()
    };
    v.require(
        &at.field("kind"),
        TARGET_KINDS.contains(&(group, target.kind.as_str())),
        format!(
            "cannot target {}/{}; targets are Service, ServiceEntry, or a Gateway API Gateway or GatewayClass",
            target.group, target.kind
        ),
    );
}

/// Policies attach by `selector`, `targetRef` or `targetRefs`, one at a time.
pub fn one_attachment(
    v: &mut Checker,
    at: &Path,
    selector: Option<&WorkloadSelector>,
    target: Option<&PolicyTargetReference>,
    targets: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target.is_some())
        + usize::from(!targets.is_empty());
    if set > 1 {
        v.error(
            at,
            "only one of selector, targetRef or targetRefs may be set",
        );
    }
    workload_selector(v, &at.field("selector"), selector);
    if let Some(target) = target {
        target_ref(v, &at.field("targetRef"), target);
    }
    for (i, target) in targets.iter().enumerate() {
        target_ref(v, &at.field("targetRefs").index(i), target);
    }
}
