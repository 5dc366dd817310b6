//! The webhook's HTTP surface: `POST /inject` (and `/inject/`, and Istio's
//! `/inject/:path` forms, where the path carries the cluster and network)
//! answering an `AdmissionReview` with a JSON Patch from [`review`].

use std::sync::Arc;
use std::time::Instant;

use admission_webhook::admission::MAX_BODY_BYTES;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::metrics::InjectionMetrics;
use super::review::{Outcome, Reviewed, Site, review_at};
use crate::inject::Injector;

/// Bodies larger than this are injected on a blocking thread, so one large
/// pod never stalls the other requests of its worker.
const INLINE_BODY_BYTES: usize = 128 * 1024;

#[derive(Clone)]
struct WebhookState {
    injector: Arc<Injector>,
    metrics: InjectionMetrics,
}

/// The injection webhook's routes.
pub fn router(injector: Arc<Injector>, metrics: InjectionMetrics) -> Router {
    Router::new()
        .route("/inject", post(inject))
        .route("/inject/", post(inject))
        .route("/inject/{*params}", post(inject_at))
        .with_state(WebhookState { injector, metrics })
}

async fn inject_at(
    State(state): State<WebhookState>,
    Path(params): Path<String>,
    body: Body,
) -> Response {
    answer(state, Site::from_path(&params), body).await
}

async fn inject(State(state): State<WebhookState>, body: Body) -> Response {
    answer(state, Site::default(), body).await
}

async fn answer(state: WebhookState, site: Site, body: Body) -> Response {
    let started = Instant::now();
    state.metrics.requests.inc();
    let response = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => match decide(state.injector.clone(), bytes, site).await {
            Ok(reviewed) => {
                record(&state, &reviewed);
                axum::Json(reviewed.answer).into_response()
            }
            Err(reason) => malformed(&state, reason),
        },
        Err(error) => malformed(
            &state,
            format!("request body unreadable or larger than {MAX_BODY_BYTES} bytes: {error}"),
        ),
    };
    state.metrics.time.observe(started.elapsed().as_secs_f64());
    response
}

async fn decide(injector: Arc<Injector>, bytes: Bytes, site: Site) -> Result<Reviewed, String> {
    if bytes.len() <= INLINE_BODY_BYTES {
        return review_at(&injector, &bytes, &site).map_err(|e| e.to_string());
    }
    tokio::task::spawn_blocking(move || {
        review_at(&injector, &bytes, &site).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|error| Err(format!("injection failed: {error}")))
}

fn malformed(state: &WebhookState, reason: String) -> Response {
    tracing::warn!(%reason, "refused a malformed admission request");
    state.metrics.failed("malformed_body");
    (StatusCode::BAD_REQUEST, reason).into_response()
}

fn record(state: &WebhookState, reviewed: &Reviewed) {
    let request = &reviewed.request;
    let pod = request
        .object
        .as_ref()
        .and_then(|o| {
            o.pointer("/metadata/name")
                .or_else(|| o.pointer("/metadata/generateName"))
        })
        .and_then(|n| n.as_str())
        .unwrap_or_default();
    match &reviewed.outcome {
        Outcome::Injected => {
            state.metrics.success.inc();
            tracing::debug!(uid = %request.uid, namespace = %request.namespace, %pod, "injected");
        }
        Outcome::Skipped(reason) => {
            state.metrics.skip.inc();
            tracing::debug!(uid = %request.uid, namespace = %request.namespace, %pod, %reason, "not injected");
        }
        Outcome::Failed(reason) => {
            state.metrics.failed("inject");
            tracing::info!(uid = %request.uid, namespace = %request.namespace, %pod, %reason, "injection denied");
        }
    }
}
