//! The load tool's HTTP API, for the scenario runner:
//!
//! - `GET /stats`: totals ([`crate::load_stats::Stats`]).
//! - `GET /converged?since=<unix_ns>&type=<cds|eds|lds|rds|any>`: who heard
//!   the type after `since` ([`crate::load_stats::Converged`]).
//! - `GET /ready`: 200 once every proxy ACKed its full config on its current
//!   stream, else 503; the body counts either way.
//! - `GET /ready_times`: first stream opening and last full-config ACK.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::load_stats::LoadStats;
use crate::resource_type::XdsType;

pub fn router(stats: Arc<LoadStats>) -> Router {
    Router::new()
        .route("/stats", get(stats_handler))
        .route("/converged", get(converged))
        .route("/ready", get(ready))
        .route("/ready_times", get(ready_times))
        .with_state(stats)
}

async fn stats_handler(State(stats): State<Arc<LoadStats>>) -> Response {
    Json(stats.stats()).into_response()
}

#[derive(Debug, Deserialize)]
struct ConvergedQuery {
    since: u64,
    #[serde(rename = "type", default = "any")]
    xds_type: String,
}

fn any() -> String {
    "any".into()
}

async fn converged(
    State(stats): State<Arc<LoadStats>>,
    Query(query): Query<ConvergedQuery>,
) -> Response {
    let xds_type = match query.xds_type.as_str() {
        "any" => None,
        name => match name.parse::<XdsType>() {
            Ok(xds_type) => Some(xds_type),
            Err(error) => return (StatusCode::BAD_REQUEST, error).into_response(),
        },
    };
    Json(stats.converged(query.since, xds_type)).into_response()
}

async fn ready(State(stats): State<Arc<LoadStats>>) -> Response {
    let readiness = stats.readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness)).into_response()
}

async fn ready_times(State(stats): State<Arc<LoadStats>>) -> Response {
    Json(stats.ready_times()).into_response()
}
