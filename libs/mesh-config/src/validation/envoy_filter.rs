//! EnvoyFilter: each patch needs applyTo, an operation and (unless removing)
//! a value, and its match must fit the kind of object patched.

use super::{Checker, Path, ports, regex, selectors};
use crate::networking::envoy_filter::{
    ApplyTo, EnvoyConfigObjectPatch, EnvoyFilter, Operation, PatchContext,
};

const MAX_PROXY_VERSION: usize = 1024;

pub fn validate(v: &mut Checker, at: &Path, f: &EnvoyFilter) {
    // Istio warns on every EnvoyFilter: it patches generated Envoy config,
    // which changes between releases.
    v.warn(at, "EnvoyFilter patches Envoy's generated configuration, which may change between releases; prefer other APIs");
    if let Some(selector) = &f.workload_selector {
        selectors::labels(
            v,
            &at.field("workloadSelector").field("labels"),
            &selector.labels,
        );
    }
    if f.workload_selector.is_some() && !f.target_refs.is_empty() {
        v.error(
            &at.field("targetRefs"),
            "only one of workloadSelector and targetRefs may be set",
        );
    }
    for (i, target) in f.target_refs.iter().enumerate() {
        selectors::target_ref(v, &at.field("targetRefs").index(i), target);
    }
    for (i, patch) in f.config_patches.iter().enumerate() {
        config_patch(v, &at.field("configPatches").index(i), patch);
    }
}

fn config_patch(v: &mut Checker, at: &Path, cp: &EnvoyConfigObjectPatch) {
    let m = cp.r#match.as_ref();
    let context = m.and_then(|m| m.context).unwrap_or_default();
    let waypoint = m.and_then(|m| m.waypoint.as_ref());
    if (context == PatchContext::Waypoint) != waypoint.is_some() {
        v.error(
            &at.field("match"),
            "a waypoint match and context WAYPOINT go together: one needs the other",
        );
    }
    if let Some(port) = waypoint.and_then(|w| w.port_number) {
        v.check(
            &at.field("match").field("waypoint").field("portNumber"),
            ports::number(port),
        );
    }
    if context == PatchContext::Waypoint {
        return; // Istio's webhook leaves waypoint patches to the waypoint
    }
    let apply_to = cp.apply_to.unwrap_or_default();
    if apply_to == ApplyTo::Invalid {
        v.error(&at.field("applyTo"), "applyTo is required");
        return;
    }
    let Some(patch) = &cp.patch else {
        v.error(&at.field("patch"), "a patch is required");
        return;
    };
    let operation = patch.operation.unwrap_or_default();
    if operation == Operation::Invalid {
        v.error(
            &at.field("patch").field("operation"),
            "a patch operation is required",
        );
        return;
    }
    if operation != Operation::Remove && patch.value.is_none() {
        v.error(
            &at.field("patch").field("value"),
            format!("{operation:?} needs a value"),
        );
        return;
    }
    if let Some(version) = m
        .and_then(|m| m.proxy.as_ref())
        .map(|p| &p.proxy_version)
        .filter(|v| !v.is_empty())
    {
        let at = at.field("match").field("proxy").field("proxyVersion");
        if version.len() > MAX_PROXY_VERSION {
            v.warn(
                &at,
                format!("proxyVersion longer than {MAX_PROXY_VERSION} characters is ignored"),
            );
        } else {
            v.check(&at, regex::re2(version));
        }
    }
    let Some(m) = m else { return };
    let match_at = at.field("match");
    let has_object = m.listener.is_some() || m.route_configuration.is_some() || m.cluster.is_some();
    if !has_object {
        return;
    }
    match apply_to {
        ApplyTo::Listener | ApplyTo::FilterChain | ApplyTo::NetworkFilter | ApplyTo::HttpFilter => {
            let Some(listener) = &m.listener else {
                v.error(
                    &match_at,
                    format!("applyTo {apply_to:?} needs a listener match"),
                );
                return;
            };
            let Some(filter) = listener
                .filter_chain
                .as_ref()
                .and_then(|c| c.filter.as_ref())
            else {
                return;
            };
            let filter_at = match_at
                .field("listener")
                .field("filterChain")
                .field("filter");
            if matches!(apply_to, ApplyTo::Listener | ApplyTo::FilterChain) {
                v.warn(
                    &filter_at,
                    format!("a filter match has no effect with applyTo {apply_to:?}"),
                );
            }
            if filter.name.is_empty() {
                v.error(&filter_at.field("name"), "a filter match needs a name");
                return;
            }
            if let Some(sub) = &filter.sub_filter {
                let sub_at = filter_at.field("subFilter");
                if apply_to != ApplyTo::HttpFilter {
                    v.error(&sub_at, "subFilter matches need applyTo HTTP_FILTER");
                } else if !matches!(
                    filter.name.as_str(),
                    "envoy.filters.network.http_connection_manager"
                        | "envoy.http_connection_manager"
                ) {
                    v.error(&sub_at, "subFilter matches need the filter to be envoy.filters.network.http_connection_manager");
                } else if sub.name.is_empty() {
                    v.error(&sub_at.field("name"), "a subFilter match needs a name");
                }
            }
        }
        ApplyTo::RouteConfiguration | ApplyTo::VirtualHost | ApplyTo::HttpRoute => {
            v.require(
                &match_at,
                m.route_configuration.is_some(),
                format!("applyTo {apply_to:?} needs a routeConfiguration match"),
            );
        }
        ApplyTo::Cluster => {
            v.require(
                &match_at,
                m.cluster.is_some(),
                "applyTo CLUSTER needs a cluster match",
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn ef(patches: &str) -> String {
        doc(
            "networking.istio.io/v1alpha3",
            "EnvoyFilter",
            &format!("  configPatches:\n{patches}"),
        )
    }

    #[test]
    fn every_envoy_filter_warns() {
        assert_warning(
            &ef("  - applyTo: CLUSTER\n    patch: {operation: REMOVE}\n"),
            "spec",
        );
    }

    #[test]
    fn patch_shapes() {
        assert_one_error(&ef("  - applyTo: CLUSTER\n"), "spec.configPatches[0].patch");
        assert_one_error(
            &ef("  - applyTo: CLUSTER\n    patch: {value: {}}\n"),
            "spec.configPatches[0].patch.operation",
        );
        assert_one_error(
            &ef(
                "  - applyTo: HTTP_ROUTE\n    match: {cluster: {service: a}}\n    patch: {operation: MERGE, value: {}}\n",
            ),
            "spec.configPatches[0].match",
        );
    }

    #[test]
    fn proxy_version_is_a_regex() {
        assert_one_error(
            &ef(
                "  - applyTo: CLUSTER\n    match: {proxy: {proxyVersion: '^1\\.(?=2)'}}\n    patch: {operation: REMOVE}\n",
            ),
            "spec.configPatches[0].match.proxy.proxyVersion",
        );
    }

    #[test]
    fn filter_matches() {
        let filter = |apply_to: &str, filter: &str| {
            ef(&format!(
                "  - applyTo: {apply_to}\n    match:\n      listener:\n        filterChain:\n          filter: {filter}\n    patch: {{operation: MERGE, value: {{}}}}\n"
            ))
        };
        assert_one_error(
            &filter("NETWORK_FILTER", "{name: ''}"),
            "spec.configPatches[0].match.listener.filterChain.filter.name",
        );
        assert_one_error(
            &filter(
                "HTTP_FILTER",
                "{name: envoy.filters.network.tcp_proxy, subFilter: {name: x}}",
            ),
            "spec.configPatches[0].match.listener.filterChain.filter.subFilter",
        );
        assert_one_error(
            &filter(
                "HTTP_FILTER",
                "{name: envoy.filters.network.http_connection_manager, subFilter: {name: ''}}",
            ),
            "spec.configPatches[0].match.listener.filterChain.filter.subFilter.name",
        );
        assert_warning(
            &filter("LISTENER", "{name: envoy.filters.network.tcp_proxy}"),
            "spec.configPatches[0].match.listener.filterChain.filter",
        );
    }

    #[test]
    fn waypoint_matches_need_the_waypoint_context() {
        assert_one_error(
            &ef(
                "  - applyTo: HTTP_FILTER\n    match: {waypoint: {portNumber: 80}}\n    patch: {operation: REMOVE}\n",
            ),
            "spec.configPatches[0].match",
        );
        assert_one_error(
            &ef(
                "  - applyTo: HTTP_FILTER\n    match: {context: WAYPOINT, waypoint: {portNumber: 65536}}\n    patch: {operation: REMOVE}\n",
            ),
            "spec.configPatches[0].match.waypoint.portNumber",
        );
        assert_one_error(
            &ef(
                "  - applyTo: HTTP_FILTER\n    match: {context: WAYPOINT, listener: {portNumber: 80}}\n    patch: {operation: REMOVE}\n",
            ),
            "spec.configPatches[0].match",
        );
        assert_one_error(
            &doc(
                "networking.istio.io/v1alpha3",
                "EnvoyFilter",
                "  workloadSelector: {labels: {app: a}}\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
            ),
            "spec.targetRefs",
        );
    }
}
