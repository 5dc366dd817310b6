//! The webhook probes itself: every interval it sends its own HTTPS port (on
//! the loopback address, trusting exactly the certificate it serves) an
//! `AdmissionReview` of a deliberately invalid VirtualService, and counts the
//! probe a success only if the answer is a denial echoing the request's uid.
//! The outcome drives `galley_webhook_probe_success` and the `webhook`
//! readiness condition: not ready until a probe has succeeded; after that a
//! few failures in a row only mark it degraded, more make it not ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::json;
use service_runtime::Readiness;
use service_runtime::server_cert_check::{CheckedServerCert, ServerCertCheck};
use tokio::sync::watch;

use super::admission::AdmissionReviewResponse;
use super::tls::ServingCert;

/// Failures in a row tolerated (readiness says "degraded") before the
/// webhook is reported not ready.
const TOLERATED_FAILURES: u32 = 2;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why one probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no usable serving certificate")]
    NoCertificate,
    #[error("request failed: {0}")]
    Request(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer is not an AdmissionReview: {0}")]
    Answer(String),
    #[error("answer echoes uid {got:?}, not {sent:?}")]
    Uid { sent: String, got: String },
    #[error("the invalid VirtualService was allowed")]
    Allowed,
}

/// Probes the webhook at `target`.
pub struct SelfProbe {
    client: reqwest::Client,
    url: String,
    serving: watch::Receiver<Option<ServingCert>>,
    sequence: AtomicU64,
}

impl SelfProbe {
    /// A probe of `https://127.0.0.1:<port>/validate` (the port of `target`)
    /// trusting only the certificate in `serving`.
    pub fn new(
        target: SocketAddr,
        serving: watch::Receiver<Option<ServingCert>>,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = CheckedServerCert::new(
            PinnedServingCert {
                serving: serving.clone(),
            },
            provider.clone(),
        );
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            // A new connection (and handshake) each time: the probe checks
            // the certificate currently served.
            .pool_max_idle_per_host(0)
            .build()?;
        let loopback = if target.is_ipv6() {
            format!("[::1]:{}", target.port())
        } else {
            format!("127.0.0.1:{}", target.port())
        };
        Ok(Self {
            client,
            url: format!("https://{loopback}/validate"),
            serving,
            sequence: AtomicU64::new(0),
        })
    }

    /// Sends one probe; `Ok` when the webhook denied it as it should.
    pub async fn probe_once(&self) -> Result<(), ProbeError> {
        // Without a certificate the handshake would only wait for one.
        if self.serving.borrow().is_none() {
            return Err(ProbeError::NoCertificate);
        }
        let uid = format!(
            "galley-self-probe-{}-{}",
            std::process::id(),
            self.sequence.fetch_add(1, Ordering::Relaxed)
        );
        let response = self
            .client
            .post(&self.url)
            .json(&probe_review(&uid))
            .send()
            .await
            .map_err(|error| ProbeError::Request(format!("{error:#}")))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|error| ProbeError::Request(format!("{error:#}")))?;
        check_answer(&uid, status, &body)
    }

    /// Where the probe is sent.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Probes every `interval` (the first at once), keeping `gauge` and
    /// `readiness` up to date, until the task is dropped.
    pub async fn run(&self, interval: Duration, gauge: Gauge, readiness: Readiness) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tracker = ProbeTracker::default();
        loop {
            ticks.tick().await;
            let outcome = self.probe_once().await;
            if let Err(error) = &outcome {
                tracing::warn!(%error, url = %self.url, "webhook self-probe failed");
            }
            let succeeded = outcome.is_ok();
            let (ready, detail) = tracker.record(outcome.map_err(|e| e.to_string()));
            readiness.set(ready, &detail);
            gauge.set(i64::from(succeeded));
        }
    }
}

/// Turns probe outcomes into readiness.
#[derive(Debug, Default)]
struct ProbeTracker {
    ever_succeeded: bool,
    failures_in_a_row: u32,
}

impl ProbeTracker {
    fn record(&mut self, outcome: Result<(), String>) -> (bool, String) {
        match outcome {
            Ok(()) => {
                self.ever_succeeded = true;
                self.failures_in_a_row = 0;
                (
                    true,
                    "self-probe denied an invalid resource, as it should".into(),
                )
            }
            Err(error) => {
                self.failures_in_a_row += 1;
                let n = self.failures_in_a_row;
                if !self.ever_succeeded {
                    (false, format!("no successful self-probe yet: {error}"))
                } else if n <= TOLERATED_FAILURES {
                    (
                        true,
                        format!("degraded: {n} self-probe(s) failed in a row: {error}"),
                    )
                } else {
                    (false, format!("{n} self-probes failed in a row: {error}"))
                }
            }
        }
    }
}

/// Checks a webhook's answer (HTTP `status`, `body`) to [`probe_review`]`(uid)`:
/// `Ok` only for an AdmissionReview denying it and echoing `uid`.
pub fn check_answer(uid: &str, status: u16, body: &[u8]) -> Result<(), ProbeError> {
    if !(200..300).contains(&status) {
        return Err(ProbeError::Status(status));
    }
    let review: AdmissionReviewResponse =
        serde_json::from_slice(body).map_err(|error| ProbeError::Answer(error.to_string()))?;
    if review.response.uid != uid {
        return Err(ProbeError::Uid {
            sent: uid.to_owned(),
            got: review.response.uid,
        });
    }
    if review.response.allowed {
        return Err(ProbeError::Allowed);
    }
    Ok(())
}

/// An AdmissionReview no valid webhook may allow: a VirtualService whose only
/// route has a negative weight.
pub fn probe_review(uid: &str) -> serde_json::Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "name": "galley-self-probe",
            "namespace": "istio-system",
            "operation": "CREATE",
            "dryRun": true,
            "object": {
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": "galley-self-probe", "namespace": "istio-system"},
                "spec": {
                    "hosts": ["galley-self-probe.invalid"],
                    "http": [{"route": [{"destination": {"host": "galley-self-probe.invalid"}, "weight": -1}]}]
                }
            }
        }
    })
}

/// Trusts exactly the certificate the webhook serves now (whatever name it
/// carries: the probe connects to the loopback address), and checks the
/// handshake signatures as usual.
#[derive(Debug)]
struct PinnedServingCert {
    serving: watch::Receiver<Option<ServingCert>>,
}

impl ServerCertCheck for PinnedServingCert {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
        _: &CryptoProvider,
    ) -> Result<(), rustls::Error> {
        match &*self.serving.borrow() {
            Some(serving) if serving.leaf.as_ref() == end_entity.as_ref() => Ok(()),
            _ => Err(rustls::Error::General(
                "the webhook presented a certificate other than the one configured".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_after_a_success_degraded_on_a_few_failures() {
        let mut tracker = ProbeTracker::default();
        assert!(!tracker.record(Err("refused".into())).0);
        assert!(tracker.record(Ok(())).0);
        let (ready, detail) = tracker.record(Err("timeout".into()));
        assert!(ready && detail.starts_with("degraded"), "{detail}");
        assert!(tracker.record(Err("timeout".into())).0);
        let (ready, detail) = tracker.record(Err("timeout".into()));
        assert!(!ready, "{detail}");
        assert!(tracker.record(Ok(())).0);
    }

    #[test]
    fn the_probe_object_is_invalid() {
        let review = probe_review("u");
        let reviewed = super::super::review::review(&serde_json::to_vec(&review).unwrap()).unwrap();
        assert!(!reviewed.answer.response.allowed);
        assert_eq!(reviewed.answer.response.uid, "u");
    }
}
