//! xds-floor: the floor for a full push on this machine. Serves the
//! responses `xds-load --dump-dir` captured, pre-encoded, to any number of
//! state-of-the-world ADS streams (see `perf::floor`).
//!
//! `xds-floor --dump-dir target/bench/dump --xds-addr 127.0.0.1:15020 --http-addr 127.0.0.1:15021`
//!
//! HTTP: `POST /push[?types=cds,eds,lds,rds]` re-sends those types (default:
//! all; SIGHUP: all) to every stream with a new version and answers
//! `{generation, pushed_at_ns, streams}`;
//! `GET /stats` answers `{streams, generation, responses, bytes, acks, nacks}`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use perf::floor::{FloorAds, FloorResources, FloorState};
use perf::resource_type::XdsType;
use perf::sys::raise_nofile_limit;
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(about = "Floor xDS server: pre-encoded responses, no per-stream work")]
struct Args {
    /// Directory with cds.pb, lds.pb (and eds.pb, rds.pb) from xds-load --dump-dir.
    #[arg(long)]
    dump_dir: PathBuf,

    /// Plain-text gRPC address for ADS.
    #[arg(long, default_value = "127.0.0.1:15020")]
    xds_addr: SocketAddr,

    /// Address of POST /push and GET /stats.
    #[arg(long, default_value = "127.0.0.1:15021")]
    http_addr: SocketAddr,

    /// Log filter (`tracing` syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    perf::sys::init_logging(&args.log);
    raise_nofile_limit()?;
    let resources = FloorResources::load(&args.dump_dir)?;
    let state = FloorState::new(resources);

    let http = tokio::net::TcpListener::bind(args.http_addr).await?;
    let router = axum::Router::new()
        .route("/push", post(push))
        .route("/stats", get(stats))
        .with_state(Arc::clone(&state));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(http, router).await {
            tracing::error!(%error, "HTTP API stopped");
        }
    });
    tokio::spawn(push_on_sighup(Arc::clone(&state)));

    tracing::info!(xds = %args.xds_addr, http = %args.http_addr, "floor serving");
    // As pilot's server is configured, so the comparison holds.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(FloorAds(state))
        .serve_with_shutdown(args.xds_addr, shutdown())
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct PushQuery {
    /// Comma-separated types to re-send; all when absent.
    types: Option<String>,
}

async fn push(State(state): State<Arc<FloorState>>, Query(query): Query<PushQuery>) -> Response {
    let types: Result<Vec<XdsType>, String> = query
        .types
        .iter()
        .flat_map(|types| types.split(','))
        .filter(|t| !t.trim().is_empty())
        .map(|t| t.trim().parse())
        .collect();
    let types = match types {
        Ok(types) => types,
        Err(error) => return (StatusCode::BAD_REQUEST, error).into_response(),
    };
    let pushed = state.push(&types);
    tracing::info!(
        generation = pushed.generation,
        streams = pushed.streams,
        "push"
    );
    Json(pushed).into_response()
}

async fn stats(State(state): State<Arc<FloorState>>) -> Json<perf::floor::FloorStats> {
    Json(state.stats())
}

async fn push_on_sighup(state: Arc<FloorState>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return;
    };
    while hangups.recv().await.is_some() {
        let pushed = state.push(&[]);
        tracing::info!(generation = pushed.generation, "push (SIGHUP)");
    }
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
