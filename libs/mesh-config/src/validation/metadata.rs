//! `metadata`: the name and namespace rules the API server applies, Istio's
//! stricter rule for Gateway names, and the annotations Istio restricts.

use super::{Checker, Path, names};
use crate::{AnyResource, Kind};

const DRY_RUN: &str = "istio.io/dry-run";

pub fn validate(v: &mut Checker, resource: &AnyResource) {
    let meta = resource.metadata();
    let at = Path::root("metadata");
    let name_at = at.field("name");
    if meta.name.is_empty() {
        if meta.generate_name.is_none() {
            v.error(&name_at, "a name is required");
        }
    } else if resource.kind() == Kind::Gateway {
        // Istio refuses dots in Gateway names: `ns/name` references split on them.
        v.require(
            &name_at,
            names::is_k8s_label(&meta.name),
            format!(
                "Gateway name {:?} must be a DNS-1123 label (lower case, digits, '-', no dots)",
                meta.name
            ),
        );
    } else {
        v.require(
            &name_at,
            names::is_k8s_subdomain(&meta.name),
            format!(
                "name {:?} must be a DNS-1123 subdomain (lower case letters, digits, '-' and '.')",
                meta.name
            ),
        );
    }
    if let Some(ns) = meta.namespace.as_deref() {
        v.require(
            &at.field("namespace"),
            names::is_k8s_label(ns),
            format!("namespace {ns:?} must be a DNS-1123 label"),
        );
    }
    names::labels(v, &at.field("labels"), &meta.labels);
    if let Some(value) = meta.annotations.get(DRY_RUN) {
        dry_run(v, &at.field("annotations").key(DRY_RUN), resource, value);
    }
}

/// Only ALLOW and DENY authorization policies can be dry-run.
fn dry_run(v: &mut Checker, at: &Path, resource: &AnyResource, value: &str) {
    use crate::security::authorization_policy::Action;
    let AnyResource::AuthorizationPolicy(policy) = resource else {
        v.error(
            at,
            format!("{DRY_RUN} is only supported on AuthorizationPolicy"),
        );
        return;
    };
    match policy.spec.action.unwrap_or_default() {
        Action::Allow | Action::Deny => v.require(
            at,
            matches!(
                value,
                "true" | "false" | "1" | "0" | "t" | "f" | "TRUE" | "FALSE" | "True" | "False"
            ),
            format!("{DRY_RUN} must be a boolean, got {value:?}"),
        ),
        other => v.error(
            at,
            format!("{DRY_RUN} is only supported with action ALLOW or DENY, not {other:?}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn name_is_a_subdomain() {
        let doc = "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata:\n  name: Bad_Name\nspec:\n  concurrency: 1\n";
        assert_one_error(doc, "metadata.name");
        let doc = "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata:\n  name: a.b\nspec:\n  concurrency: 1\n";
        assert_valid(doc);
    }

    #[test]
    fn name_is_required() {
        let doc =
            "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nspec:\n  concurrency: 1\n";
        assert_one_error(doc, "metadata.name");
    }

    #[test]
    fn namespace_is_a_label() {
        let doc = "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata:\n  name: a\n  namespace: a.b\nspec:\n  concurrency: 1\n";
        assert_one_error(doc, "metadata.namespace");
    }

    #[test]
    fn gateway_names_have_no_dots() {
        let doc = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: my.gw\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n";
        assert_one_error(doc, "metadata.name");
    }

    #[test]
    fn dry_run_only_on_allow_or_deny_policies() {
        let doc = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\n  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        ports: ['8080']\n";
        assert_valid(doc);
        let doc = "apiVersion: networking.istio.io/v1beta1\nkind: ProxyConfig\nmetadata:\n  name: a\n  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  concurrency: 1\n";
        assert_one_error(doc, "metadata.annotations[istio.io/dry-run]");
    }
}
