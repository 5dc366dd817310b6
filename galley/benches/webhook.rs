//! Webhook validation latency (p50/p99) and throughput at 1, 16 and 64
//! concurrent HTTPS clients, beside an always-allow route on the same server
//! stack (TLS accept loop, axum, body read, AdmissionReview decode), measured
//! in the same run. The server runs in process on a free port with a
//! throwaway certificate; each client holds one keep-alive connection and
//! sends a valid VirtualService (`tests/fixtures/admission/allowed-v1.json`)
//! back to back. No assertions: the machines are shared and noisy.
//!
//! Quick by default (3 s per cell); `BENCH_FULL=1` for 10 s cells. Figures
//! also go to `target/bench/webhook.json`.

#[path = "../tests/support/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::post;
use bench_report::Summary;
use galley::webhook::admission::{AdmissionResponse, AdmissionReviewRequest};
use galley::webhook::handler::router;
use galley::webhook::tls::{CertFiles, serve, watch_cert_files};
use galley::webhook::{IgnoreVerdicts, WebhookMetrics};
use serde::Serialize;
use service_runtime::Shutdown;

use certs::{WEBHOOK_HOST, WebhookCa, cert_paths};

const CONCURRENCY: [usize; 3] = [1, 16, 64];
const ROUTES: [&str; 2] = ["/validate", "/allow"];

#[derive(Debug, Serialize)]
struct Cell {
    route: &'static str,
    clients: usize,
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug, Serialize)]
struct Run {
    window_seconds: f64,
    cpus: usize,
    cells: Vec<Cell>,
}

fn main() -> anyhow::Result<()> {
    let window = if std::env::var_os("BENCH_FULL").is_some() {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(3)
    };
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let run = runtime.block_on(measure(window))?;
    print_table(&run);
    let path = bench_report::write_json("webhook", &serde_json::to_value(&run)?)?;
    println!("figures written to {}", path.display());
    Ok(())
}

async fn measure(window: Duration) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = cert_paths(dir.path());
    let ca = WebhookCa::new();
    ca.issue(1).write(&cert, &key);
    let settings = watch_cert_files(CertFiles { cert, key }, Duration::from_secs(5));
    let mut registry = prometheus_client::registry::Registry::default();
    let app = router(WebhookMetrics::new(&mut registry), Arc::new(IgnoreVerdicts))
        .route("/allow", post(always_allow));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::default();
    tokio::spawn(serve(
        listener,
        settings.acceptors,
        app,
        shutdown.clone().wait_owned(),
    ));
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/allowed-v1.json"),
    )?;
    let mut cells = Vec::new();
    for clients in CONCURRENCY {
        for route in ROUTES {
            eprintln!("webhook bench: {route} with {clients} clients for {window:?}");
            cells.push(drive(addr, &ca.root_pem, route, clients, window, &body).await?);
        }
    }
    shutdown.trigger();
    Ok(Run {
        window_seconds: window.as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cells,
    })
}

/// The baseline: read and decode the review, allow it unchecked.
async fn always_allow(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    match serde_json::from_slice::<AdmissionReviewRequest>(&body) {
        Ok(review) => {
            let uid = review.request.map(|r| r.uid).unwrap_or_default();
            axum::Json(AdmissionResponse::allow(&uid, vec![]).into_review(&review.api_version))
                .into_response()
        }
        Err(error) => (axum::http::StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

fn client(root_pem: &str, addr: SocketAddr) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(root_pem.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve(WEBHOOK_HOST, addr)
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()?)
}

async fn drive(
    addr: SocketAddr,
    root_pem: &str,
    route: &'static str,
    clients: usize,
    window: Duration,
    body: &[u8],
) -> anyhow::Result<Cell> {
    let url = format!("https://{WEBHOOK_HOST}:{}{route}", addr.port());
    let body = axum::body::Bytes::copy_from_slice(body);
    let mut workers = Vec::new();
    for _ in 0..clients {
        let client = client(root_pem, addr)?;
        let url = url.clone();
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            // One warm-up request opens the connection outside the window.
            let _ = client.post(&url).body(body.clone()).send().await;
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let begin = Instant::now();
            while begin.elapsed() < window {
                let sent = Instant::now();
                let outcome = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match outcome {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors, begin.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut longest = Duration::ZERO;
    for worker in workers {
        let (mine, failed, elapsed) = worker.await?;
        latencies.extend(mine);
        errors += failed;
        longest = longest.max(elapsed);
    }
    let latency = Summary::of(&latencies);
    let seconds = longest.as_secs_f64();
    Ok(Cell {
        route,
        clients,
        requests: latencies.len() as u64,
        errors,
        seconds,
        requests_per_second: latencies.len() as f64 / seconds,
        p50_ms: ms(latency.median),
        p99_ms: ms(latency.p99),
    })
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn print_table(run: &Run) {
    println!(
        "\nwebhook: {} s per cell, {} CPUs, one keep-alive HTTPS connection per client",
        run.window_seconds, run.cpus
    );
    println!(
        "{:<10} {:>7} {:>10} {:>9} {:>9} {:>7}",
        "route", "clients", "req/s", "p50 ms", "p99 ms", "errors"
    );
    for cell in &run.cells {
        println!(
            "{:<10} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>7}",
            cell.route,
            cell.clients,
            cell.requests_per_second,
            cell.p50_ms,
            cell.p99_ms,
            cell.errors
        );
    }
}
