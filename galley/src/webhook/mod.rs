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

pub mod admission;
pub mod handler;
pub mod metrics;
pub mod probe;
pub mod review;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// Address of the validating webhook's HTTPS server, or `none` to run
    /// without it.
    #[arg(long = "webhook-addr", env = "TRIREME_WEBHOOK_ADDR", default_value = "0.0.0.0:15017", value_parser = parse_optional_addr)]
    pub addr: OptionalAddr,

    /// PEM certificate chain the webhook serves (leaf first). Read again
    /// whenever it changes.
    #[arg(
        long = "webhook-cert",
        env = "TRIREME_WEBHOOK_CERT",
        default_value = "/var/run/secrets/istio-dns/cert-chain.pem"
    )]
    pub cert: PathBuf,

    /// PEM private key of the webhook's certificate.
    #[arg(
        long = "webhook-key",
        env = "TRIREME_WEBHOOK_KEY",
        default_value = "/var/run/secrets/istio-dns/key.pem"
    )]
    pub key: PathBuf,

    /// How often the certificate files are checked for changes.
    #[arg(long = "webhook-cert-poll-interval", env = "TRIREME_WEBHOOK_CERT_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cert_poll_interval: Duration,

    /// How often galley sends its own webhook an invalid resource to check
    /// that it is denied (`galley_webhook_probe_success`, readiness).
    #[arg(long = "webhook-probe-interval", env = "TRIREME_WEBHOOK_PROBE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub probe_interval: Duration,
}

/// An address, or `None` for `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|addr| OptionalAddr(Some(addr)))
        .map_err(|error| format!("{text:?}: {error} (or `none`)"))
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
        args.addr.0?;
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
        let addr = self.args.addr.0.context("the webhook is disabled")?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the webhook's address {addr}"))?;
        let bound = listener.local_addr()?;
        let files = tls::CertFiles {
            cert: self.args.cert.clone(),
            key: self.args.key.clone(),
        };
        tracing::info!(addr = %bound, cert = %files.cert.display(), key = %files.key.display(), probe_interval = ?self.args.probe_interval, "validating webhook starting; serving POST /validate");
        let settings = tls::watch_cert_files(files, self.args.cert_poll_interval);
        let router = handler::router(self.metrics.clone(), self.observer);
        tokio::spawn(tls::serve(
            listener,
            settings.acceptors,
            router,
            shutdown.clone().wait_owned(),
        ));
        let probe = probe::SelfProbe::new(bound, settings.serving)?;
        let run = probe.run(
            self.args.probe_interval,
            self.metrics.probe_success.clone(),
            self.readiness,
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = run => {}
                _ = shutdown.wait() => {}
            }
        });
        Ok(bound)
    }
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
        assert_eq!(args.addr.0, Some(([0, 0, 0, 0], 15017).into()));
        assert_eq!(
            args.cert,
            PathBuf::from("/var/run/secrets/istio-dns/cert-chain.pem")
        );
        assert_eq!(args.probe_interval, Duration::from_secs(30));
        let args = Args::try_parse_from(["galley", "--webhook-addr", "none"])
            .unwrap()
            .webhook;
        assert_eq!(args.addr.0, None);
    }
}
