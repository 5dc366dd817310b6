//! The mutating admission webhook: the API server sends each pod being
//! created as an `AdmissionReview`; the injector answers with the JSON Patch
//! that adds the sidecar (or allows the pod unchanged, or denies it with the
//! reason it cannot be injected).
//!
//! - [`review`]: the decision, a plain function from body to answer;
//! - [`handler`]: the axum routes and metrics;
//! - [`metrics`]: Istio's `sidecar_injection_*` metrics.
//!
//! HTTPS with the certificate reloaded from files comes from
//! `admission-webhook`, shared with galley.

pub mod handler;
pub mod metrics;
pub mod review;

use std::net::SocketAddr;
use std::sync::Arc;

use admission_webhook::{HttpsArgs, tls};
use anyhow::Context;
use service_runtime::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use metrics::InjectionMetrics;
pub use review::{Outcome, Reviewed, Site, review, review_at};

use crate::inject::Injector;

/// Binds the webhook's HTTPS port and serves `POST /inject` until
/// `shutdown`. Returns the bound address and the certificate being served
/// (`None` until the files hold a usable pair).
pub async fn start(
    args: &HttpsArgs,
    injector: Arc<Injector>,
    metrics: InjectionMetrics,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, watch::Receiver<Option<tls::ServingCert>>)> {
    let addr = args.addr.0.context("the webhook is disabled")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the webhook's address {addr}"))?;
    let bound = listener.local_addr()?;
    let files = args.cert_files();
    tracing::info!(addr = %bound, cert = %files.cert.display(), key = %files.key.display(), "injection webhook starting; serving POST /inject");
    let settings = tls::watch_cert_files(files, args.cert_poll_interval);
    let router = handler::router(injector, metrics);
    tokio::spawn(tls::serve(
        listener,
        settings.acceptors,
        router,
        shutdown.wait_owned(),
    ));
    Ok((bound, settings.serving))
}
