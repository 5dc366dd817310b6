//! The webhook's HTTP surface: `POST /validate` (and Istio's `/validate/`)
//! answering an `AdmissionReview` with a verdict from [`review`]. Verdicts on
//! real requests (not dry runs) are counted in the metrics and told to an
//! [`AdmissionObserver`]; malformed bodies are counted too.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use mesh_config::AnyResource;

use super::admission::AdmissionRequest;
use super::metrics::WebhookMetrics;
use super::review::{MAX_BODY_BYTES, MalformedBody, Outcome, Reviewed, review};

/// Bodies larger than this are decided on a blocking thread, so one large
/// object never stalls the other requests of its worker.
const INLINE_BODY_BYTES: usize = 256 * 1024;

/// One verdict the webhook reached on a request that was not a dry run.
#[derive(Debug)]
pub struct Verdict<'a> {
    pub request: &'a AdmissionRequest,
    pub outcome: &'a Outcome,
    pub allowed: bool,
    /// The typed object, when it parsed.
    pub resource: Option<&'a AnyResource>,
}

/// Told about every verdict except those on dry runs, e.g. to publish
/// verdicts later. Called on the request path: keep it quick.
pub trait AdmissionObserver: Send + Sync + 'static {
    fn observe(&self, verdict: &Verdict<'_>);
}

/// An observer that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreVerdicts;

impl AdmissionObserver for IgnoreVerdicts {
    fn observe(&self, _: &Verdict<'_>) {}
}

#[derive(Clone)]
struct WebhookState {
    metrics: WebhookMetrics,
    observer: Arc<dyn AdmissionObserver>,
}

/// The validating webhook's routes.
pub fn router(metrics: WebhookMetrics, observer: Arc<dyn AdmissionObserver>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/validate/", post(validate))
        .with_state(WebhookState { metrics, observer })
}

async fn validate(State(state): State<WebhookState>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(error) => {
            let reason =
                format!("request body unreadable or larger than {MAX_BODY_BYTES} bytes: {error}");
            return malformed(&state, reason);
        }
    };
    match decide(bytes).await {
        Ok(reviewed) => {
            record(&state, &reviewed);
            axum::Json(reviewed.answer).into_response()
        }
        Err(error) => malformed(&state, error.to_string()),
    }
}

async fn decide(bytes: Bytes) -> Result<Reviewed, MalformedBody> {
    if bytes.len() <= INLINE_BODY_BYTES {
        return review(&bytes);
    }
    tokio::task::spawn_blocking(move || review(&bytes))
        .await
        .unwrap_or_else(|error| Err(MalformedBody::Json(format!("review failed: {error}"))))
}

fn malformed(state: &WebhookState, reason: String) -> Response {
    tracing::warn!(%reason, "refused a malformed admission request");
    state.metrics.failed(None, "malformed_body");
    (StatusCode::BAD_REQUEST, reason).into_response()
}

fn record(state: &WebhookState, reviewed: &Reviewed) {
    let request = &reviewed.request;
    let response = &reviewed.answer.response;
    // Dry runs (`kubectl --dry-run=server`, the self-probe) leave no trace
    // beyond the log.
    if !request.is_dry_run() {
        match reviewed.outcome.failure_reason() {
            None => state.metrics.passed(request),
            Some(reason) => state.metrics.failed(Some(request), reason),
        }
    }
    let kind = &request.kind.kind;
    if response.allowed {
        tracing::debug!(uid = %request.uid, %kind, name = %request.name, namespace = %request.namespace, outcome = ?reviewed.outcome, "admitted");
    } else {
        let message = response.status.as_ref().map_or("", |s| s.message.as_str());
        tracing::info!(uid = %request.uid, %kind, name = %request.name, namespace = %request.namespace, dry_run = request.is_dry_run(), %message, "denied");
    }
    if !request.is_dry_run() {
        state.observer.observe(&Verdict {
            request,
            outcome: &reviewed.outcome,
            allowed: response.allowed,
            resource: reviewed.resource.as_ref(),
        });
    }
}
