//! The webhook's metrics, under Istio's names so existing dashboards work:
//! `galley_validation_passed` and `galley_validation_failed` (labelled by the
//! request's group, version and resource, plus a reason on failures), and
//! `galley_webhook_probe_success`, the outcome of the last self-probe.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::admission::AdmissionRequest;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub group: String,
    pub version: String,
    pub resource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub reason: String,
}

/// Cheap to clone: every clone updates the same series.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    passed: Family<ResourceLabels, Counter>,
    failed: Family<FailureLabels, Counter>,
    pub probe_success: Gauge,
}

impl WebhookMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "galley_validation_passed",
            "Resources the validating webhook found valid",
            metrics.passed.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Requests the validating webhook did not pass, by reason",
            metrics.failed.clone(),
        );
        registry.register(
            "galley_webhook_probe_success",
            "Whether the last self-probe of the validating webhook got the expected denial (1) or not (0)",
            metrics.probe_success.clone(),
        );
        metrics
    }

    pub fn passed(&self, request: &AdmissionRequest) {
        let r = &request.resource;
        self.passed
            .get_or_create(&ResourceLabels {
                group: r.group.clone(),
                version: r.version.clone(),
                resource: r.resource.clone(),
            })
            .inc();
    }

    /// A failure; `request` is `None` when the body could not be read.
    pub fn failed(&self, request: Option<&AdmissionRequest>, reason: &str) {
        let r = request.map(|r| r.resource.clone()).unwrap_or_default();
        self.failed
            .get_or_create(&FailureLabels {
                group: r.group,
                version: r.version,
                resource: r.resource,
                reason: reason.to_string(),
            })
            .inc();
    }
}
