//! `istio_agent_cert_expiry_seconds{resource_name="default"}`: Istio's gauge
//! of the time left on the workload certificate (negative once expired),
//! read from the current identity at scrape time.

use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use workload_identity::IdentityReceiver;

use super::resources::WORKLOAD_CERTIFICATE;

pub const CERT_EXPIRY_SECONDS: &str = "istio_agent_cert_expiry_seconds";

/// Registers the expiry gauge on `registry` (which must not add a prefix of
/// its own). Absent until the first certificate arrives.
pub fn register(registry: &mut Registry, identities: IdentityReceiver) {
    registry.register_collector(Box::new(CertExpiry { identities }));
}

#[derive(Debug)]
struct CertExpiry {
    identities: IdentityReceiver,
}

impl Collector for CertExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(identity) = self.identities.borrow().clone() else {
            return Ok(());
        };
        let gauge = ConstGauge::new(identity.seconds_until_expiry(SystemTime::now()));
        let mut metric = encoder.encode_descriptor(
            CERT_EXPIRY_SECONDS,
            "The time remaining, in seconds, before the certificate chain will expire. \
             A negative value indicates the cert is expired.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric.encode_family(&[("resource_name", WORKLOAD_CERTIFICATE)])?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;
    use workload_identity::testing::TestCa;

    use super::*;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    fn value(text: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with("istio_agent_cert_expiry_seconds{"))
            .and_then(|line| line.rsplit_once(' '))
            .and_then(|(_, value)| value.parse().ok())
    }

    #[test]
    fn reports_the_seconds_left_on_the_current_certificate() {
        let (publish, identities) = watch::channel(None);
        let mut registry = Registry::default();
        register(&mut registry, identities);
        assert_eq!(value(&scrape(&registry)), None, "absent before the first");

        let identity = TestCa::new().issue(
            "spiffe://cluster.local/ns/a/sa/b",
            Duration::from_secs(3600),
        );
        publish.send_replace(Some(Arc::new(identity)));
        let text = scrape(&registry);
        assert!(
            text.contains("# TYPE istio_agent_cert_expiry_seconds gauge"),
            "{text}"
        );
        assert!(text.contains("resource_name=\"default\""), "{text}");
        let left = value(&text).unwrap();
        assert!((3590.0..=3600.0).contains(&left), "{left}");
    }
}
