//! AuthorizationPolicy: action and provider, and the shape of each rule's
//! `from`, `to` and `when`.

use super::{Checker, Path, hosts, selectors};
use crate::security::authorization_policy::{
    Action, AuthorizationPolicy, Condition, Operation, Rule, Source,
};

pub fn validate(v: &mut Checker, at: &Path, p: &AuthorizationPolicy) {
    selectors::one_attachment(
        v,
        at,
        p.selector.as_ref(),
        p.target_ref.as_ref(),
        &p.target_refs,
    );
    let action = p.action.unwrap_or_default();
    let rules_at = at.field("rules");
    match action {
        Action::Custom => {
            if p.rules.is_empty() {
                v.error(&rules_at, "a CUSTOM policy without rules never applies; add an empty rule {} to apply it to every request");
            } else if p.provider.as_ref().is_none_or(|pr| pr.name.is_empty()) {
                v.error(
                    &at.field("provider").field("name"),
                    "a CUSTOM policy needs provider.name",
                );
            }
        }
        Action::Deny if p.rules.is_empty() => {
            v.error(&rules_at, "a DENY policy without rules never applies; add an empty rule {} to deny every request");
        }
        _ => {}
    }
    if p.provider.is_some() && action != Action::Custom {
        v.error(
            &at.field("provider"),
            format!("provider is only used with action CUSTOM, not {action:?}"),
        );
    }
    for (i, rule) in p.rules.iter().enumerate() {
        rule_of(v, &rules_at.index(i), rule, action);
    }
}

fn rule_of(v: &mut Checker, at: &Path, rule: &Rule, action: Action) {
    let mut tcp_in_from = false;
    let mut tcp_in_to = false;
    for (i, from) in rule.from.iter().enumerate() {
        let at = at.field("from").index(i);
        match &from.source {
            None => v.error(&at.field("source"), "from needs a source"),
            Some(src) => {
                source(v, &at.field("source"), src, action);
                tcp_in_from |= !(src.principals.is_empty()
                    && src.not_principals.is_empty()
                    && src.ip_blocks.is_empty()
                    && src.not_ip_blocks.is_empty()
                    && src.namespaces.is_empty()
                    && src.not_namespaces.is_empty()
                    && src.remote_ip_blocks.is_empty()
                    && src.not_remote_ip_blocks.is_empty()
                    && src.service_accounts.is_empty()
                    && src.not_service_accounts.is_empty());
            }
        }
    }
    for (i, to) in rule.to.iter().enumerate() {
        let at = at.field("to").index(i);
        match &to.operation {
            None => v.error(&at.field("operation"), "to needs an operation"),
            Some(op) => {
                operation(v, &at.field("operation"), op);
                tcp_in_to |= !op.ports.is_empty() || !op.not_ports.is_empty();
            }
        }
    }
    for (i, condition) in rule.when.iter().enumerate() {
        when(v, &at.field("when").index(i), condition, action);
    }
    let has_from = !rule.from.is_empty();
    let has_to = !rule.to.is_empty();
    if action == Action::Deny && ((has_from && !has_to && !tcp_in_from) || (has_to && !tcp_in_to)) {
        v.warn(at, "this DENY rule uses only HTTP attributes, so it denies all traffic to TCP ports in scope; name the ports explicitly");
    }
}

/// Values of a source or operation field: no empty strings.
fn non_empty(v: &mut Checker, at: &Path, field: &str, values: &[String]) {
    if let Some(i) = values.iter().position(String::is_empty) {
        v.error(&at.field(field).index(i), "empty values are not allowed");
    }
}

/// One `*` at most, and only at the start or the end.
fn wildcard_values(v: &mut Checker, at: &Path, field: &str, values: &[String]) {
    for (i, value) in values.iter().enumerate() {
        let stars = value.matches('*').count();
        let ok = stars == 0 || (stars == 1 && (value.starts_with('*') || value.ends_with('*')));
        v.require(
            &at.field(field).index(i),
            ok,
            format!("{value:?}: a single '*' is allowed, at the start or the end"),
        );
    }
}

fn ip_values(v: &mut Checker, at: &Path, field: &str, values: &[String]) {
    for (i, value) in values.iter().enumerate() {
        if !value.is_empty() {
            v.check(&at.field(field).index(i), hosts::ip_or_cidr(value));
        }
    }
}

/// `serviceAccounts`: `name` or `namespace/name`, at most 16, no wildcards.
fn service_accounts(v: &mut Checker, at: &Path, field: &str, values: &[String]) {
    if values.len() > 16 {
        v.error(
            &at.field(field),
            "at most 16 service accounts may be listed",
        );
    }
    for (i, value) in values.iter().enumerate() {
        let parts: Vec<&str> = value.split('/').collect();
        let ok = !value.contains('*')
            && value.len() <= 320
            && parts.len() <= 2
            && parts.iter().all(|p| !p.is_empty());
        v.require(
            &at.field(field).index(i),
            ok,
            format!(
                "{value:?} must be SERVICE_ACCOUNT or NAMESPACE/SERVICE_ACCOUNT, without wildcards"
            ),
        );
    }
}

fn source(v: &mut Checker, at: &Path, s: &Source, action: Action) {
    let fields: [(&str, &Vec<String>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    if fields.iter().all(|(_, values)| values.is_empty()) {
        v.error(at, "a source needs at least one field");
    }
    let identity = !(s.principals.is_empty()
        && s.not_principals.is_empty()
        && s.namespaces.is_empty()
        && s.not_namespaces.is_empty());
    if identity && !(s.service_accounts.is_empty() && s.not_service_accounts.is_empty()) {
        v.error(
            at,
            "serviceAccounts cannot be combined with principals or namespaces",
        );
    }
    for (field, values) in fields {
        match field {
            "serviceAccounts" | "notServiceAccounts" => service_accounts(v, at, field, values),
            "trustDomains" | "notTrustDomains" => {
                non_empty(v, at, field, values);
                wildcard_values(v, at, field, values);
                for (i, value) in values.iter().enumerate() {
                    v.require(
                        &at.field(field).index(i),
                        !value.contains('/'),
                        "trust domains cannot contain '/'",
                    );
                }
            }
            "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                non_empty(v, at, field, values);
                ip_values(v, at, field, values);
            }
            _ => non_empty(v, at, field, values),
        }
    }
    if action == Action::Custom {
        // The external authorizer sees the request before Istio's identity
        // attributes exist.
        let identity_fields = [
            "namespaces",
            "notNamespaces",
            "serviceAccounts",
            "notServiceAccounts",
            "trustDomains",
            "notTrustDomains",
            "principals",
            "notPrincipals",
            "requestPrincipals",
            "notRequestPrincipals",
        ];
        for (field, values) in fields {
            if identity_fields.contains(&field) && !values.is_empty() {
                v.error(
                    &at.field(field),
                    format!("{field} is not supported with action CUSTOM"),
                );
            }
        }
    }
}

fn operation(v: &mut Checker, at: &Path, op: &Operation) {
    let fields: [(&str, &Vec<String>); 8] = [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("ports", &op.ports),
        ("notPorts", &op.not_ports),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ];
    if fields.iter().all(|(_, values)| values.is_empty()) {
        v.error(at, "an operation needs at least one field");
    }
    for (field, values) in fields {
        non_empty(v, at, field, values);
    }
    for (field, values) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
        for (i, port) in values.iter().enumerate() {
            if !port.is_empty() {
                v.require(
                    &at.field(field).index(i),
                    port.parse::<u16>().is_ok(),
                    format!("{port:?} is not a port number"),
                );
            }
        }
    }
    for (field, values) in [("paths", &op.paths), ("notPaths", &op.not_paths)] {
        for (i, path) in values.iter().enumerate() {
            v.check(&at.field(field).index(i), path_template(path));
        }
    }
}

/// Paths may use `{*}` (one segment) and `{**}` (the rest, last only).
fn path_template(path: &str) -> Result<(), String> {
    let templated = path.contains("{*}") || path.contains("{**}");
    let mut seen_any = false;
    for segment in path.trim_matches('/').split('/') {
        match segment {
            "{*}" | "{**}" if seen_any => {
                return Err(format!("{path:?}: {{**}} must be the last segment"));
            }
            "{*}" => continue,
            "{**}" => {
                seen_any = true;
                continue;
            }
            _ => {}
        }
        if segment.contains(['{', '}']) {
            return Err(format!(
                "{path:?}: only whole segments {{*}} and {{**}} may use braces"
            ));
        }
        let literal = segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:=@".contains(c));
        if templated && !literal {
            return Err(format!(
                "{path:?}: segment {segment:?} is not a valid literal next to a template"
            ));
        }
    }
    Ok(())
}

/// `when` keys Istio understands, and how their values are checked.
fn when(v: &mut Checker, at: &Path, c: &Condition, action: Action) {
    let key_at = at.field("key");
    if c.key.is_empty() {
        v.error(&key_at, "key is required");
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        v.error(
            at,
            format!("condition on {:?} needs values or notValues", c.key),
        );
        return;
    }
    let kind = match attribute(&c.key) {
        Ok(kind) => kind,
        Err(e) => return v.error(&key_at, e),
    };
    for (field, values) in [("values", &c.values), ("notValues", &c.not_values)] {
        non_empty(v, at, field, values);
        match kind {
            Attribute::Ips => ip_values(v, at, field, values),
            Attribute::Port => {
                for (i, value) in values.iter().enumerate() {
                    v.require(
                        &at.field(field).index(i),
                        value.parse::<u16>().is_ok(),
                        format!("{value:?} is not a port number"),
                    );
                }
            }
            Attribute::ServiceAccount => service_accounts(v, at, field, values),
            Attribute::Wildcards => wildcard_values(v, at, field, values),
            Attribute::Plain => {}
        }
    }
    let identity_key = matches!(
        c.key.as_str(),
        "source.namespace" | "source.serviceAccount" | "source.trustDomain" | "source.principal"
    ) || c.key.starts_with("request.auth.");
    if action == Action::Custom && identity_key {
        v.error(
            &key_at,
            format!("{} is not supported with action CUSTOM", c.key),
        );
    }
}

#[derive(Clone, Copy)]
enum Attribute {
    Plain,
    Ips,
    Port,
    ServiceAccount,
    Wildcards,
}

/// `name[key]` with a non-empty key.
fn bracketed(key: &str, prefix: &str) -> Result<Attribute, String> {
    let rest = &key[prefix.len()..];
    if rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']') {
        Ok(Attribute::Plain)
    } else {
        Err(format!("{key:?} must have the form {prefix}[NAME]"))
    }
}

fn attribute(key: &str) -> Result<Attribute, String> {
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => Ok(Attribute::Ips),
        "destination.port" => Ok(Attribute::Port),
        "source.serviceAccount" => Ok(Attribute::ServiceAccount),
        "source.trustDomain" => Ok(Attribute::Wildcards),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(Attribute::Plain),
        "destination.namespace" => Err(
            "destination.namespace is not a condition: the policy's namespace decides it".into(),
        ),
        "destination.name" | "destination.user" => Err(format!(
            "{key} was only supported by the removed v1alpha1 API"
        )),
        _ if key.starts_with("request.headers") => bracketed(key, "request.headers"),
        _ if key.starts_with("request.auth.claims") => bracketed(key, "request.auth.claims"),
        _ if key.starts_with("destination.labels") => {
            Err("destination.labels is not a condition: use the policy's selector".into())
        }
        _ if key.starts_with("experimental.envoy.filters.") => key
            .find('[')
            .filter(|&i| i > 0 && key.ends_with(']') && i < key.len() - 2)
            .map(|_| Attribute::Plain)
            .ok_or_else(|| format!("{key:?} must have the form NAME[KEY]")),
        _ => Err(format!("unknown condition key {key:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::path_template;

    #[test]
    fn path_templates() {
        assert!(path_template("/api/{*}/items").is_ok());
        assert!(path_template("/api/{**}").is_ok());
        assert!(path_template("/api/{**}/x").is_ok());
        assert!(path_template("/api/{**}/{*}").is_err());
        assert!(path_template("/api/{id}").is_err());
        assert!(path_template("/api/*").is_ok());
    }
}

#[cfg(test)]
mod rule_tests {
    use super::super::test_support::*;

    fn ap(spec: &str) -> String {
        doc("security.istio.io/v1", "AuthorizationPolicy", spec)
    }

    fn source(body: &str) -> String {
        ap(&format!("  rules:\n  - from:\n    - source: {body}\n"))
    }

    fn when(body: &str) -> String {
        ap(&format!("  rules:\n  - when:\n    - {body}\n"))
    }

    #[test]
    fn allow_nothing_and_allow_all_are_valid() {
        assert_valid(&ap("  {}\n"));
        assert_valid(&ap("  rules:\n  - {}\n"));
    }

    #[test]
    fn from_and_to_need_content() {
        assert_one_error(
            &ap("  rules:\n  - from:\n    - {}\n"),
            "spec.rules[0].from[0].source",
        );
        assert_one_error(
            &ap("  rules:\n  - to:\n    - {}\n"),
            "spec.rules[0].to[0].operation",
        );
        assert_one_error(
            &ap("  rules:\n  - to:\n    - operation: {}\n"),
            "spec.rules[0].to[0].operation",
        );
        assert_one_error(
            &ap("  rules:\n  - to:\n    - operation: {methods: ['']}\n"),
            "spec.rules[0].to[0].operation.methods[0]",
        );
    }

    #[test]
    fn source_shapes() {
        assert_valid(&source(
            "{principals: ['*'], notRequestPrincipals: ['*'], remoteIpBlocks: [1.2.3.4]}",
        ));
        assert_one_error(
            &source("{namespaces: ['']}"),
            "spec.rules[0].from[0].source.namespaces[0]",
        );
        assert_one_error(
            &source("{serviceAccounts: ['a/b/c']}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
        );
        assert_one_error(
            &source("{serviceAccounts: ['default/*']}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
        );
        assert_one_error(
            &source("{trustDomains: ['a*b']}"),
            "spec.rules[0].from[0].source.trustDomains[0]",
        );
        assert_one_error(
            &source("{notTrustDomains: ['td/x']}"),
            "spec.rules[0].from[0].source.notTrustDomains[0]",
        );
        assert_one_error(
            &source("{notRemoteIpBlocks: ['10.0.0.0/8/1']}"),
            "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
        );
        let many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
        assert_one_error(
            &source(&format!("{{serviceAccounts: [{}]}}", many.join(", "))),
            "spec.rules[0].from[0].source.serviceAccounts",
        );
    }

    #[test]
    fn operation_paths() {
        assert_valid(&ap(
            "  rules:\n  - to:\n    - operation: {paths: ['/api/{*}/items', '/static/*']}\n",
        ));
        assert_one_error(
            &ap("  rules:\n  - to:\n    - operation: {notPaths: ['/api/{id}']}\n"),
            "spec.rules[0].to[0].operation.notPaths[0]",
        );
    }

    #[test]
    fn when_keys_and_values() {
        assert_valid(&when("{key: source.ip, values: [10.0.0.0/8]}"));
        assert_valid(&when(
            "{key: 'request.headers[user-agent]', notValues: ['curl*']}",
        ));
        assert_valid(&when(
            "{key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: ['[update]']}",
        ));
        assert_one_error(&when("{key: '', values: [a]}"), "spec.rules[0].when[0].key");
        assert_one_error(
            &when("{key: source.ip, values: [nowhere]}"),
            "spec.rules[0].when[0].values[0]",
        );
        assert_one_error(
            &when("{key: destination.port, values: ['99999']}"),
            "spec.rules[0].when[0].values[0]",
        );
        assert_one_error(
            &when("{key: 'request.headers', values: [a]}"),
            "spec.rules[0].when[0].key",
        );
        assert_one_error(
            &when("{key: destination.namespace, values: [a]}"),
            "spec.rules[0].when[0].key",
        );
        assert_one_error(
            &when("{key: 'destination.labels[app]', values: [a]}"),
            "spec.rules[0].when[0].key",
        );
        assert_one_error(
            &when("{key: source.serviceAccount, values: ['a/b/c']}"),
            "spec.rules[0].when[0].values[0]",
        );
        assert_one_error(
            &when("{key: source.namespace, values: ['']}"),
            "spec.rules[0].when[0].values[0]",
        );
    }

    #[test]
    fn custom_restrictions() {
        let custom = |rule: &str| {
            ap(&format!(
                "  action: CUSTOM\n  provider: {{name: ext-authz}}\n  rules:\n  - {rule}\n"
            ))
        };
        assert_valid(&custom("to: [{operation: {paths: [/admin]}}]"));
        assert_one_error(
            &custom("when: [{key: request.auth.principal, values: [a]}]"),
            "spec.rules[0].when[0].key",
        );
        assert_one_error(
            &custom("from: [{source: {namespaces: [a]}}]"),
            "spec.rules[0].from[0].source.namespaces",
        );
        assert_one_error(
            &ap("  action: CUSTOM\n  provider: {name: ext-authz}\n"),
            "spec.rules",
        );
    }

    #[test]
    fn deny_rules_with_only_http_attributes_warn() {
        assert_warning(
            &ap("  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST]}\n"),
            "spec.rules[0]",
        );
    }

    #[test]
    fn target_refs() {
        assert_valid(&ap(
            "  targetRefs:\n  - {kind: Service, group: '', name: reviews}\n  rules:\n  - {}\n",
        ));
        assert_one_error(
            &ap(
                "  targetRefs:\n  - {kind: Deployment, group: apps, name: reviews}\n  rules:\n  - {}\n",
            ),
            "spec.targetRefs[0].kind",
        );
        assert_one_error(
            &ap("  targetRef: {kind: Service, name: ''}\n  rules:\n  - {}\n"),
            "spec.targetRef.name",
        );
    }
}
