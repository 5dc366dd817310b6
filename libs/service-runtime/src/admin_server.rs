//! The HTTP server every service exposes for operators and Kubernetes:
//! `/metrics` (Prometheus text), `/healthz/live`, `/healthz/ready` and `/version`.
//! A service adds its own routes (debug pages, webhooks) with `extra_routes`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use crate::{Health, Shutdown, metrics, metrics::SharedRegistry, version};

#[derive(Clone)]
struct AdminState {
    component: &'static str,
    health: Health,
    registry: SharedRegistry,
}

/// The admin routes, merged with `extra_routes`.
pub fn router(
    component: &'static str,
    health: Health,
    registry: SharedRegistry,
    extra_routes: Router,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz/live", get(|| async { "live\n" }))
        .route("/healthz/ready", get(readiness_page))
        .route("/version", get(version_page))
        .with_state(AdminState {
            component,
            health,
            registry,
        })
        .merge(extra_routes)
}

/// Binds `addr` and serves `router` until `shutdown` fires. Returns the bound
/// address (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin HTTP server to {addr}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "admin HTTP server failed");
        }
    });
    Ok((bound, task))
}

async fn metrics_page(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(&state.registry),
    )
}

async fn readiness_page(State(state): State<AdminState>) -> impl IntoResponse {
    let report = state.health.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, report.to_text())
}

async fn version_page(State(state): State<AdminState>) -> String {
    format!(
        "{} {} (Istio API {})\n",
        state.component,
        version::VERSION,
        version::ISTIO_COMPAT_VERSION
    )
}
