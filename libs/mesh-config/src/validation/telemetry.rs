//! Telemetry: providers, tracing sampling and tags, metric overrides.

use super::{Checker, Path, selectors};
use crate::telemetry::Telemetry;
use crate::telemetry::telemetry::{Metrics, ProviderRef, TagOverrideOperation, Tracing};

pub fn validate(v: &mut Checker, at: &Path, t: &Telemetry) {
    selectors::one_attachment(
        v,
        at,
        t.selector.as_ref(),
        t.target_ref.as_ref(),
        &t.target_refs,
    );
    for (i, metrics) in t.metrics.iter().enumerate() {
        metrics_of(v, &at.field("metrics").index(i), metrics);
    }
    if t.tracing.len() > 1 {
        v.warn(&at.field("tracing"), "only the first tracing entry is used");
    }
    for (i, tracing) in t.tracing.iter().enumerate() {
        tracing_of(v, &at.field("tracing").index(i), tracing);
    }
    for (i, logging) in t.access_logging.iter().enumerate() {
        let at = at.field("accessLogging").index(i);
        providers(v, &at, &logging.providers);
        if let Some(filter) = &logging.filter {
            v.require(
                &at.field("filter").field("expression"),
                !filter.expression.trim().is_empty(),
                "a filter needs a CEL expression",
            );
        }
    }
}

fn providers(v: &mut Checker, at: &Path, list: &[ProviderRef]) {
    for (i, provider) in list.iter().enumerate() {
        v.require(
            &at.field("providers").index(i).field("name"),
            !provider.name.is_empty(),
            "provider name is required",
        );
    }
}

fn tracing_of(v: &mut Checker, at: &Path, t: &Tracing) {
    if t.providers.len() > 1 {
        v.warn(&at.field("providers"), "only one tracing provider is used");
    }
    providers(v, at, &t.providers);
    if let Some(p) = t.random_sampling_percentage {
        v.require(
            &at.field("randomSamplingPercentage"),
            (0.0..=100.0).contains(&p),
            format!("sampling percentage {p} is not in [0, 100]"),
        );
    }
    for (name, tag) in &t.custom_tags {
        let at = at.field("customTags").key(name);
        v.require(&at, !name.is_empty(), "tag names cannot be empty");
        if let Some(literal) = &tag.literal {
            v.require(
                &at.field("literal").field("value"),
                !literal.value.is_empty(),
                "a literal tag needs a value",
            );
        }
        if let Some(header) = &tag.header {
            v.require(
                &at.field("header").field("name"),
                !header.name.is_empty(),
                "a header tag needs a header name",
            );
        }
        if let Some(env) = &tag.environment {
            v.require(
                &at.field("environment").field("name"),
                !env.name.is_empty(),
                "an environment tag needs a variable name",
            );
        }
    }
}

fn metrics_of(v: &mut Checker, at: &Path, m: &Metrics) {
    providers(v, at, &m.providers);
    if let Some(interval) = &m.reporting_interval {
        v.check(
            &at.field("reportingInterval"),
            super::durations::at_least_1ms(interval),
        );
    }
    for (i, o) in m.overrides.iter().enumerate() {
        let at = at.field("overrides").index(i);
        for (name, tag) in &o.tag_overrides {
            let at = at.field("tagOverrides").key(name);
            if name.is_empty() {
                v.warn(&at, "tag names should not be empty");
            }
            match tag.operation.unwrap_or_default() {
                TagOverrideOperation::Upsert => v.require(
                    &at.field("value"),
                    !tag.value.is_empty(),
                    "UPSERT needs a value",
                ),
                TagOverrideOperation::Remove => v.require(
                    &at.field("value"),
                    tag.value.is_empty(),
                    "REMOVE takes no value",
                ),
            }
        }
        if let Some(custom) = o.r#match.as_ref().and_then(|m| m.custom_metric.as_ref()) {
            v.require(
                &at.field("match").field("customMetric"),
                !custom.is_empty(),
                "customMetric cannot be empty",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    fn telemetry(spec: &str) -> String {
        doc("telemetry.istio.io/v1", "Telemetry", spec)
    }

    #[test]
    fn tracing() {
        assert_valid(&telemetry(
            "  tracing:\n  - providers: [{name: zipkin}]\n    randomSamplingPercentage: 0\n",
        ));
        assert_one_error(
            &telemetry("  tracing:\n  - randomSamplingPercentage: -1\n"),
            "spec.tracing[0].randomSamplingPercentage",
        );
        assert_warning(
            &telemetry("  tracing:\n  - providers: [{name: a}, {name: b}]\n"),
            "spec.tracing[0].providers",
        );
        assert_warning(&telemetry("  tracing:\n  - {}\n  - {}\n"), "spec.tracing");
        assert_one_error(
            &telemetry("  tracing:\n  - customTags:\n      team: {literal: {value: ''}}\n"),
            "spec.tracing[0].customTags[team].literal.value",
        );
        assert_one_error(
            &telemetry("  tracing:\n  - customTags:\n      ua: {header: {name: ''}}\n"),
            "spec.tracing[0].customTags[ua].header.name",
        );
        assert_one_error(
            &telemetry("  tracing:\n  - customTags:\n      pod: {environment: {name: ''}}\n"),
            "spec.tracing[0].customTags[pod].environment.name",
        );
    }

    #[test]
    fn metrics() {
        assert_one_error(
            &telemetry(
                "  metrics:\n  - overrides:\n    - tagOverrides:\n        request_host: {operation: REMOVE, value: x}\n",
            ),
            "spec.metrics[0].overrides[0].tagOverrides[request_host].value",
        );
        assert_one_error(
            &telemetry("  metrics:\n  - overrides:\n    - match: {customMetric: ''}\n"),
            "spec.metrics[0].overrides[0].match.customMetric",
        );
        assert_one_error(
            &telemetry("  metrics:\n  - reportingInterval: 0s\n"),
            "spec.metrics[0].reportingInterval",
        );
    }

    #[test]
    fn access_logging_and_targets() {
        assert_one_error(
            &telemetry("  accessLogging:\n  - filter: {expression: ' '}\n"),
            "spec.accessLogging[0].filter.expression",
        );
        assert_one_error(
            &telemetry(
                "  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw, namespace: other}\n",
            ),
            "spec.targetRef.namespace",
        );
    }
}
