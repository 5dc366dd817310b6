//! pilot's xDS metrics under Istio's names, so existing dashboards and alerts
//! work unchanged. Istio exports its counters without Prometheus' `_total`
//! suffix (`pilot_xds_pushes`, `pilot_total_xds_rejects`), so those are
//! registered as gauges that only ever increase, keeping the names exact.

use prometheus_client::metrics::{family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

use super::resource_type::ResourceType;

/// The `type` label Istio's metrics carry (`type` is a Rust keyword, hence
/// a label list rather than a derived struct).
pub type TypeLabel = Vec<(String, String)>;

fn type_label(value: &str) -> TypeLabel {
    vec![("type".to_string(), value.to_string())]
}

/// Handles to every xDS metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct XdsMetrics {
    /// Connected proxies.
    pub connected: Gauge,
    pushes: Family<TypeLabel, Gauge>,
    rejects: Family<TypeLabel, Gauge>,
    cds_rejects: Gauge,
    eds_rejects: Gauge,
    lds_rejects: Gauge,
    rds_rejects: Gauge,
    push_time: Family<TypeLabel, Histogram>,
    pub convergence_time: Histogram,
    pub debounce_time: Histogram,
    push_triggers: Family<TypeLabel, Gauge>,
}

fn seconds_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0,
    ])
}

impl XdsMetrics {
    pub fn register(registry: &mut Registry) -> XdsMetrics {
        let metrics = XdsMetrics {
            connected: Gauge::default(),
            pushes: Family::default(),
            rejects: Family::default(),
            cds_rejects: Gauge::default(),
            eds_rejects: Gauge::default(),
            lds_rejects: Gauge::default(),
            rds_rejects: Gauge::default(),
            push_time: Family::new_with_constructor(seconds_histogram),
            convergence_time: seconds_histogram(),
            debounce_time: seconds_histogram(),
            push_triggers: Family::default(),
        };
        // Every type shows from the start, at zero, so dashboards and alerts
        // (e.g. on pilot_total_xds_rejects) see the series before the first event.
        for resource_type in ResourceType::PUSH_ORDER {
            let label = type_label(resource_type.short_name());
            drop(metrics.pushes.get_or_create(&label));
            drop(metrics.rejects.get_or_create(&label));
        }
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using xDS",
            metrics.connected.clone(),
        );
        registry.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds",
            metrics.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of xDS responses from pilot rejected by proxy",
            metrics.rejects.clone(),
        );
        registry.register(
            "pilot_xds_cds_reject",
            "Pilot rejected CDS configs",
            metrics.cds_rejects.clone(),
        );
        registry.register(
            "pilot_xds_eds_reject",
            "Pilot rejected EDS",
            metrics.eds_rejects.clone(),
        );
        registry.register(
            "pilot_xds_lds_reject",
            "Pilot rejected LDS",
            metrics.lds_rejects.clone(),
        );
        registry.register(
            "pilot_xds_rds_reject",
            "Pilot rejected RDS",
            metrics.rds_rejects.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Time in seconds pilot takes to generate and send a push, by type",
            metrics.push_time.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between a config change and a proxy acknowledging it",
            metrics.convergence_time.clone(),
        );
        registry.register(
            "pilot_debounce_time",
            "Delay in seconds between the first config event and the push it causes",
            metrics.debounce_time.clone(),
        );
        registry.register(
            "pilot_push_triggers",
            "Total number of times a push was triggered, by reason",
            metrics.push_triggers.clone(),
        );
        metrics
    }

    /// Metrics that go nowhere, for tests.
    pub fn unregistered() -> XdsMetrics {
        XdsMetrics::register(&mut Registry::default())
    }

    pub fn record_push(&self, resource_type: ResourceType, seconds: f64) {
        let label = type_label(resource_type.short_name());
        self.pushes.get_or_create(&label).inc();
        self.push_time.get_or_create(&label).observe(seconds);
    }

    pub fn record_reject(&self, resource_type: ResourceType) {
        self.rejects
            .get_or_create(&type_label(resource_type.short_name()))
            .inc();
        match resource_type {
            ResourceType::Cluster => self.cds_rejects.inc(),
            ResourceType::Endpoint => self.eds_rejects.inc(),
            ResourceType::Listener => self.lds_rejects.inc(),
            ResourceType::Route => self.rds_rejects.inc(),
        };
    }

    pub fn record_trigger(&self, reason: &str) {
        self.push_triggers.get_or_create(&type_label(reason)).inc();
    }

    /// Pushes sent so far of one type (for tests and debug pages).
    pub fn pushes_of(&self, resource_type: ResourceType) -> i64 {
        self.pushes
            .get_or_create(&type_label(resource_type.short_name()))
            .get()
    }

    pub fn rejects_of(&self, resource_type: ResourceType) -> i64 {
        self.rejects
            .get_or_create(&type_label(resource_type.short_name()))
            .get()
    }
}
