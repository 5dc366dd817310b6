//! The Prometheus registry each service fills with its own metrics, plus the
//! metrics every service exports: `istio_build` (Istio's name for the build
//! info gauge, so existing dashboards find it) and process CPU/memory.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, family::Family, gauge::ConstGauge, gauge::Gauge},
    registry::Registry,
};

use crate::version::VERSION;

/// Labels of `istio_build`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: String,
    tag: String,
}

/// A registry being filled at start-up; frozen into a [`SharedRegistry`] once
/// the service is running.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Registry,
}

/// The registry after start-up, shared with the `/metrics` handler.
pub type SharedRegistry = Arc<Registry>;

impl MetricsRegistry {
    /// A registry holding the metrics every service exports.
    pub fn new(component: &str) -> Self {
        let mut registry = Registry::default();
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                component: component.to_string(),
                tag: VERSION.to_string(),
            })
            .set(1);
        registry.register(
            "istio_build",
            "Build information of the running component",
            build,
        );
        registry.register_collector(Box::new(ProcessCollector));
        Self { registry }
    }

    /// Where a service registers its own metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub(crate) fn freeze(self) -> SharedRegistry {
        Arc::new(self.registry)
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing metrics to a String cannot fail");
    out
}

/// CPU time and resident memory of this process, read from `/proc` at scrape
/// time (Linux only; elsewhere the metrics are absent).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(usage) = read_process_usage() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(usage.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = ConstGauge::new(usage.resident_bytes as i64);
        rss.encode(encoder.encode_descriptor(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            None,
            rss.metric_type(),
        )?)?;
        Ok(())
    }
}

/// A process's CPU and memory use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
}

/// Reads this process's usage from `/proc/self`.
pub fn read_process_usage() -> Option<ProcessUsage> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    parse_process_usage(&stat, &statm, clock_ticks_per_second(), page_size())
}

fn parse_process_usage(stat: &str, statm: &str, ticks: f64, page: u64) -> Option<ProcessUsage> {
    // The command name may contain spaces; fields are counted after its ')'.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessUsage {
        cpu_seconds: (utime + stime) / ticks,
        resident_bytes: resident_pages * page,
    })
}

// USER_HZ and the page size are 100 and 4 KiB on every Linux target we build for.
fn clock_ticks_per_second() -> f64 {
    100.0
}

fn page_size() -> u64 {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_with_spaces_in_the_name() {
        let stat = "42 (my pilot) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 4 0 1 1 1";
        let usage = parse_process_usage(stat, "1000 300 10 1 0 50 0", 100.0, 4096).unwrap();
        assert_eq!(usage.cpu_seconds, 3.0);
        assert_eq!(usage.resident_bytes, 300 * 4096);
    }

    #[test]
    fn exports_build_and_process_metrics() {
        let registry = MetricsRegistry::new("pilot").freeze();
        let text = render(&registry);
        assert!(
            text.contains(&format!(
                "istio_build{{component=\"pilot\",tag=\"{VERSION}\"}} 1"
            )),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
