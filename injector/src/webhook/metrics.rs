//! The injection webhook's metrics, under Istio's names:
//! `sidecar_injection_requests_total`, `sidecar_injection_success_total`,
//! `sidecar_injection_failure_total{type}`, `sidecar_injection_skip_total`
//! and the `sidecar_injection_time_seconds` histogram.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureType {
    /// `malformed_body` or `inject`.
    pub r#type: String,
}

/// Cheap to clone: every clone updates the same series.
#[derive(Debug, Clone)]
pub struct InjectionMetrics {
    pub requests: Counter,
    pub success: Counter,
    pub skip: Counter,
    failure: Family<FailureType, Counter>,
    pub time: Histogram,
}

impl InjectionMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Counter::default(),
            success: Counter::default(),
            skip: Counter::default(),
            failure: Family::default(),
            // 0.1 ms to about 1.6 s.
            time: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0001, 2.0, 15,
            )),
        };
        // prometheus-client adds the `_total` suffix to counters.
        registry.register(
            "sidecar_injection_requests",
            "Injection requests received",
            metrics.requests.clone(),
        );
        registry.register(
            "sidecar_injection_success",
            "Pods injected",
            metrics.success.clone(),
        );
        registry.register(
            "sidecar_injection_skip",
            "Requests allowed without injection",
            metrics.skip.clone(),
        );
        registry.register(
            "sidecar_injection_failure",
            "Requests that failed, by type",
            metrics.failure.clone(),
        );
        registry.register(
            "sidecar_injection_time_seconds",
            "Time to answer an injection request",
            metrics.time.clone(),
        );
        metrics
    }

    pub fn failed(&self, kind: &str) {
        self.failure
            .get_or_create(&FailureType {
                r#type: kind.to_string(),
            })
            .inc();
    }
}
