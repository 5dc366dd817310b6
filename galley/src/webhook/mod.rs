//! Galley's validating admission webhook: the API server sends each Istio
//! resource being created or updated as an `AdmissionReview`; galley reads it
//! strictly with mesh-config, validates it, and allows or denies it, listing
//! every error with its field path.
//!
//! - [`admission`]: the `AdmissionReview` types (v1 and v1beta1);
//! - [`review`]: the decision, a plain function from body to answer;
//! - [`handler`]: the axum routes, metrics and the verdict observer;
//! - [`tls`]: HTTPS with a certificate reloaded from files;
//! - [`probe`]: the periodic self-probe behind readiness;
//! - [`metrics`]: Istio's `galley_validation_*` metrics.

pub mod handler;
pub mod metrics;
pub mod probe;
pub mod review;

pub use admission_webhook::{admission, tls};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission_webhook::HttpsArgs;
use anyhow::Context;
use service_runtime::args::parse_duration;
use service_runtime::{Health, Readiness, Shutdown};
use tokio::net::TcpListener;

pub use handler::{AdmissionObserver, IgnoreVerdicts, Verdict};
pub use metrics::WebhookMetrics;
pub use review::{MalformedBody, Outcome, Reviewed, review};

/// The webhook's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Where it listens and which certificate it serves.
    #[command(flatten)]
    pub https: HttpsArgs,

    /// How often galley sends its own webhook an invalid resource to check
    /// that it is denied (`galley_webhook_probe_success`, readiness).
    #[arg(long = "webhook-probe-interval", env = "TRIREME_WEBHOOK_PROBE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub probe_interval: Duration,
}

/// The webhook between start-up (metrics and readiness registered, before
/// the service runtime freezes them) and serving.
pub struct Webhook {
    args: WebhookArgs,
    metrics: WebhookMetrics,
    readiness: Readiness,
    observer: Arc<dyn AdmissionObserver>,
}

impl Webhook {
    /// Registers the webhook's metrics and its `webhook` readiness condition;
    /// `None` when `--webhook-addr none`.
    pub fn register(
        args: &WebhookArgs,
        registry: &mut prometheus_client::registry::Registry,
        health: &Health,
    ) -> Option<Self> {
        args.https.addr.0?;
        Some(Self {
            args: args.clone(),
            metrics: WebhookMetrics::new(registry),
            readiness: health.register("webhook", "not serving yet"),
            observer: Arc::new(IgnoreVerdicts),
        })
    }

    /// Verdicts on real requests go to `observer` (e.g. to publish them).
    pub fn with_observer(mut self, observer: Arc<dyn AdmissionObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Binds the HTTPS port, then serves it and probes it in tasks of their
    /// own until `shutdown`. Returns the bound address.
    pub async fn start(self, shutdown: Shutdown) -> anyhow::Result<SocketAddr> {
        Ok(self.start_serving(shutdown).await?.addr)
    }

    /// [`start`](Self::start), returning besides the address the
    /// certificate being served and the probe (for the leader's webhook
    /// configuration job).
    pub async fn start_serving(self, shutdown: Shutdown) -> anyhow::Result<Started> {
        let addr = self.args.https.addr.0.context("the webhook is disabled")?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the webhook's address {addr}"))?;
        let bound = listener.local_addr()?;
        let files = self.args.https.cert_files();
        tracing::info!(addr = %bound, cert = %files.cert.display(), key = %files.key.display(), probe_interval = ?self.args.probe_interval, "validating webhook starting; serving POST /validate");
        let settings = tls::watch_cert_files(files, self.args.https.cert_poll_interval);
        let router = handler::router(self.metrics.clone(), self.observer);
        tokio::spawn(tls::serve(
            listener,
            settings.acceptors,
            router,
            shutdown.clone().wait_owned(),
        ));
        let probe = Arc::new(probe::SelfProbe::new(bound, settings.serving.clone())?);
        let interval = self.args.probe_interval;
        let gauge = self.metrics.probe_success.clone();
        let readiness = self.readiness;
        let prober = probe.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = prober.run(interval, gauge, readiness) => {}
                _ = shutdown.wait() => {}
            }
        });
        Ok(Started {
            addr: bound,
            serving: settings.serving,
            probe,
        })
    }
}

/// A serving webhook.
pub struct Started {
    pub addr: SocketAddr,
    /// The certificate served now (`None` while there is none).
    pub serving: tokio::sync::watch::Receiver<Option<tls::ServingCert>>,
    /// Sends the webhook an invalid resource; `Ok` when it was denied.
    pub probe: Arc<probe::SelfProbe>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Args {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    #[test]
    fn defaults_follow_istio() {
        let args = Args::try_parse_from(["galley"]).unwrap().webhook;
        assert_eq!(args.https.addr.0, Some(([0, 0, 0, 0], 15017).into()));
        assert_eq!(args.probe_interval, Duration::from_secs(30));
    }
}
