//! Per-route policies of an Istio HTTP route: retries, mirroring, and the
//! fault-injection and CORS settings that Envoy takes per route from its HTTP
//! filters. Defaults follow Istio, so unchanged YAML behaves the same.

use std::collections::HashMap;

use mesh_config::networking::virtual_service::{
    Abort, CorsPolicy, Delay, Destination, HttpFaultInjection, HttpRetry, HttpRoute, Percent,
    StringMatch, UnmatchedPreflights, grpc_status_code,
};
use trireme_proto::envoy::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use trireme_proto::envoy::pb::envoy::config::route::v3::{
    RetryPolicy, retry_policy, route_action::RequestMirrorPolicy,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use trireme_proto::envoy::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use trireme_proto::envoy::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use trireme_proto::envoy::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use trireme_proto::envoy::pb::envoy::r#type::v3::{
    FractionalPercent, fractional_percent::DenominatorType,
};
use trireme_proto::envoy::pb::google::protobuf::{Any, BoolValue, UInt32Value};

use super::matching::string_matcher;
use super::{CORS_FILTER, FAULT_FILTER, pack_any, proto_duration};

/// Istio retries twice on these when a route says nothing about retries.
const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIES: u32 = 2;
/// With `retriable-status-codes` in the default, Istio retries on 503.
const DEFAULT_RETRIABLE_STATUS: u32 = 503;
/// How often Envoy may re-pick a host to avoid one it already tried.
const HOST_SELECTION_ATTEMPTS: i64 = 5;

/// The fault and CORS settings of a route, keyed by the filter they configure.
pub(super) fn per_filter_config(http: &HttpRoute) -> HashMap<String, Any> {
    let mut config = HashMap::new();
    if let Some(fault) = http.fault.as_ref().and_then(http_fault) {
        config.insert(FAULT_FILTER.to_string(), pack_any(fault));
    }
    if let Some(cors) = &http.cors_policy {
        config.insert(CORS_FILTER.to_string(), pack_any(cors_policy(cors)));
    }
    config
}

// ---- retries ----

/// Istio's retry policy: its default when the route has none, nothing when
/// `attempts` is 0 (retries off), else the default overridden field by field.
pub(super) fn retry_policy(retries: Option<&HttpRetry>) -> Option<RetryPolicy> {
    let mut policy = default_retry_policy();
    let Some(retries) = retries else {
        return Some(policy);
    };
    let attempts = u32::try_from(retries.attempts.unwrap_or(0)).unwrap_or(0);
    if attempts == 0 {
        return None;
    }
    policy.num_retries = Some(UInt32Value { value: attempts });
    if !retries.retry_on.is_empty() {
        (policy.retry_on, policy.retriable_status_codes) = split_retry_on(&retries.retry_on);
    }
    policy.per_try_timeout = retries.per_try_timeout.as_ref().map(proto_duration);
    if let Some(ignore_previous) = retries.retry_ignore_previous_hosts {
        policy.retry_host_predicate = if ignore_previous {
            vec![previous_hosts()]
        } else {
            Vec::new()
        };
    }
    if retries.retry_remote_localities == Some(true) {
        policy.retry_priority = Some(previous_priorities());
    }
    policy.retry_back_off = retries
        .backoff
        .as_ref()
        .map(proto_duration)
        .filter(|d| d.seconds > 0 || d.nanos > 0)
        .map(|base| retry_policy::RetryBackOff {
            base_interval: Some(base),
            ..Default::default()
        });
    Some(policy)
}

fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(UInt32Value {
            value: DEFAULT_RETRIES,
        }),
        retriable_status_codes: vec![DEFAULT_RETRIABLE_STATUS],
        retry_host_predicate: vec![previous_hosts()],
        host_selection_retry_max_attempts: HOST_SELECTION_ATTEMPTS,
        ..Default::default()
    }
}

/// Splits Istio's `retryOn` into Envoy's conditions and status codes: plain
/// numbers are status codes, and need `retriable-status-codes` to count.
fn split_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let (codes, conditions): (Vec<&str>, Vec<&str>) = retry_on
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .partition(|part| {
            part.parse::<u32>()
                .is_ok_and(|code| (100..600).contains(&code))
        });
    let codes: Vec<u32> = codes.iter().filter_map(|code| code.parse().ok()).collect();
    let mut conditions = conditions.join(",");
    if !codes.is_empty() && !conditions.contains("retriable-status-codes") {
        if !conditions.is_empty() {
            conditions.push(',');
        }
        conditions.push_str("retriable-status-codes");
    }
    (conditions, codes)
}

/// Prefer hosts not tried yet when retrying.
fn previous_hosts() -> retry_policy::RetryHostPredicate {
    retry_policy::RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
            pack_any(PreviousHostsPredicate::default()),
        )),
    }
}

/// Retry in other localities (`retryRemoteLocalities`), with Istio's update
/// frequency of 2.
fn previous_priorities() -> retry_policy::RetryPriority {
    use trireme_proto::envoy::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
    retry_policy::RetryPriority {
        name: "envoy.retry_priorities.previous_priorities".into(),
        config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(
            pack_any(PreviousPrioritiesConfig {
                update_frequency: 2,
            }),
        )),
    }
}

// ---- mirroring ----

/// `mirror` (with `mirrorPercentage` or the older integer `mirrorPercent`)
/// and `mirrors`; an explicit 0% drops the mirror, no percentage means 100%.
pub(super) fn mirror_policies(
    http: &HttpRoute,
    cluster_for: impl Fn(&Destination) -> String,
) -> Vec<RequestMirrorPolicy> {
    let single = http.mirror.as_ref().and_then(|destination| {
        let share = match (&http.mirror_percentage, http.mirror_percent) {
            (Some(percentage), _) => positive(percentage).map(million_parts),
            (None, Some(percent)) => (percent > 0).then(|| hundredths(percent)),
            (None, None) => Some(hundredths(100)),
        };
        Some((destination, share?))
    });
    let listed = http.mirrors.iter().filter_map(|mirror| {
        let share = match &mirror.percentage {
            Some(percentage) => positive(percentage).map(million_parts)?,
            None => hundredths(100),
        };
        Some((&mirror.destination, share))
    });
    single
        .into_iter()
        .chain(listed)
        .map(|(destination, share)| RequestMirrorPolicy {
            cluster: cluster_for(destination),
            runtime_fraction: Some(RuntimeFractionalPercent {
                default_value: Some(share),
                ..Default::default()
            }),
            // Mirrored requests do not start traces of their own.
            trace_sampled: Some(BoolValue { value: false }),
            ..Default::default()
        })
        .collect()
}

// ---- fault injection ----

fn http_fault(fault: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = fault.delay.as_ref().and_then(fault_delay);
    let abort = fault.abort.as_ref().and_then(fault_abort);
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

/// A fixed delay; exponential delays are not supported (by Istio either), and
/// Envoy refuses a zero delay.
fn fault_delay(delay: &Delay) -> Option<FaultDelay> {
    let fixed = delay.fixed_delay.as_ref().map(proto_duration)?;
    if fixed.seconds == 0 && fixed.nanos == 0 {
        return None;
    }
    let percentage = match &delay.percentage {
        Some(percentage) => million_parts(percentage),
        None => hundredths(delay.percent.unwrap_or(0)),
    };
    Some(FaultDelay {
        percentage: Some(percentage),
        fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(fixed)),
    })
}

/// An HTTP or gRPC abort; without a percentage nothing is aborted, as in Istio.
fn fault_abort(abort: &Abort) -> Option<FaultAbort> {
    let error = if let Some(status) = abort.http_status {
        // Envoy accepts only statuses in [200, 600).
        let status = u32::try_from(status)
            .ok()
            .filter(|s| (200..600).contains(s))?;
        ErrorType::HttpStatus(status)
    } else {
        ErrorType::GrpcStatus(grpc_status_code(abort.grpc_status.as_deref()?)?)
    };
    Some(FaultAbort {
        percentage: abort.percentage.as_ref().map(million_parts),
        error_type: Some(error),
        ..Default::default()
    })
}

// ---- CORS ----

fn cors_policy(cors: &CorsPolicy) -> EnvoyCors {
    let origins = if cors.allow_origins.is_empty() {
        // The deprecated `allowOrigin` lists exact origins.
        cors.allow_origin
            .iter()
            .filter_map(|origin| {
                string_matcher(&StringMatch {
                    exact: Some(origin.clone()),
                    ..Default::default()
                })
            })
            .collect()
    } else {
        cors.allow_origins
            .iter()
            .filter_map(string_matcher)
            .collect()
    };
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: cors.allow_methods.join(","),
        allow_headers: cors.allow_headers.join(","),
        expose_headers: cors.expose_headers.join(","),
        max_age: cors
            .max_age
            .as_ref()
            .map(|age| proto_duration(age).seconds.to_string())
            .unwrap_or_default(),
        allow_credentials: cors.allow_credentials.map(|value| BoolValue { value }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(hundredths(100)),
            ..Default::default()
        }),
        // Envoy stopped forwarding unmatched preflights upstream; Istio keeps
        // forwarding them unless told to ignore them.
        forward_not_matching_preflights: Some(BoolValue {
            value: cors.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        }),
        ..Default::default()
    }
}

// ---- percentages ----

fn positive(percentage: &Percent) -> Option<&Percent> {
    (percentage.value.unwrap_or(0.0) > 0.0).then_some(percentage)
}

/// Istio's `percentage` in millionths, so fractions such as 0.1% survive.
fn million_parts(percentage: &Percent) -> FractionalPercent {
    let value = percentage.value.unwrap_or(0.0).clamp(0.0, 100.0);
    FractionalPercent {
        numerator: (value * 10_000.0) as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// The older integer percentages.
fn hundredths(percent: impl Into<i64>) -> FractionalPercent {
    FractionalPercent {
        numerator: percent.into().clamp(0, 100) as u32,
        denominator: DenominatorType::Hundred as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_numbers_in_retry_on_become_retriable_codes() {
        assert_eq!(
            split_retry_on("5xx, 503,gateway-error,429"),
            (
                "5xx,gateway-error,retriable-status-codes".to_string(),
                vec![503, 429]
            )
        );
        assert_eq!(
            split_retry_on("503"),
            ("retriable-status-codes".to_string(), vec![503])
        );
        assert_eq!(
            split_retry_on("connect-failure"),
            ("connect-failure".to_string(), vec![])
        );
    }

    #[test]
    fn retries_default_and_disable_like_istio() {
        let default = retry_policy(None).unwrap();
        assert_eq!(default.num_retries.unwrap().value, 2);
        assert_eq!(default.retriable_status_codes, [503]);
        assert_eq!(default.host_selection_retry_max_attempts, 5);
        let off = HttpRetry {
            attempts: Some(0),
            ..Default::default()
        };
        assert!(retry_policy(Some(&off)).is_none());
    }

    #[test]
    fn grpc_status_names_map_to_codes() {
        assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status_code("UNAUTHENTICATED"), Some(16));
        assert_eq!(grpc_status_code("unavailable"), None);
    }

    #[test]
    fn percentages_keep_fractions() {
        let tenth = million_parts(&Percent { value: Some(0.1) });
        assert_eq!(tenth.numerator, 1_000);
        assert_eq!(
            million_parts(&Percent { value: Some(250.0) }).numerator,
            1_000_000
        );
    }
}
