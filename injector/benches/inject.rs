//! Injection latency: `webhook::review` (decode the AdmissionReview, decide,
//! render the template, merge, diff into a JSON Patch, answer) on
//!
//! - a typical pod (bookinfo's reviews-v1: one container, probes, a few
//!   annotations);
//! - a pod of about 64 KB (many containers, env vars, volumes);
//! - a pod whose container has 1,500 environment variables;
//!
//! in process, and the typical pod through the HTTPS server (TLS accept
//! loop, axum, metrics) with one keep-alive client. Each case is measured
//! in several runs of a fixed window; the table pools their samples and
//! shows the spread of the runs' medians, since the machines are shared and
//! noisy. No assertions on the figures.
//!
//! Quick by default (5 runs of 1 s per case, under a minute); `BENCH_FULL=1`
//! for 10 runs of 5 s. Figures, the machine and the git revision go to
//! `target/bench/injector.json`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use admission_webhook::HttpsArgs;
use anyhow::{Context, bail};
use bench_report::{Summary, git_revision};
use clap::Parser;
use injector::webhook::{self, InjectionMetrics, Outcome, review};
use injector::{Injector, InjectorConfig, SidecarTemplate};
use serde::Serialize;
use serde_json::{Value, json};
use service_runtime::Shutdown;

use support::certs::{SelfSigned, cert_paths, client, url};
use support::reviews::{pod_create, typical_pod};

/// How long each case is measured.
struct Plan {
    runs: usize,
    window: Duration,
    warm_up: Duration,
}

impl Plan {
    fn from_env() -> Self {
        if std::env::var_os("BENCH_FULL").is_some() {
            Self {
                runs: 10,
                window: Duration::from_secs(5),
                warm_up: Duration::from_secs(1),
            }
        } else {
            Self {
                runs: 5,
                window: Duration::from_secs(1),
                warm_up: Duration::from_millis(200),
            }
        }
    }
}

/// One case's figures, its runs pooled.
#[derive(Debug, Serialize)]
struct Figures {
    case: &'static str,
    path: &'static str,
    /// The pod's JSON size, and the whole AdmissionReview's.
    pod_bytes: usize,
    body_bytes: usize,
    runs: usize,
    samples: usize,
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
    ops_per_second: f64,
    /// The lowest and highest median of a single run.
    run_p50_min_us: f64,
    run_p50_max_us: f64,
}

#[derive(Debug, Serialize)]
struct Machine {
    cpu_model: String,
    nproc: usize,
}

#[derive(Debug, Serialize)]
struct Report {
    git_revision: String,
    /// Uncommitted changes in the work tree when measured.
    git_dirty: bool,
    machine: Machine,
    runs_per_case: usize,
    window_seconds: f64,
    figures: Vec<Figures>,
}

/// What one run of a case measured.
struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

fn main() -> anyhow::Result<()> {
    let plan = Plan::from_env();
    let injector = Arc::new(Injector::new(
        InjectorConfig::default(),
        SidecarTemplate::built_in(),
    ));
    let mut figures = Vec::new();
    for (case, pod) in [
        ("typical pod", typical_pod()),
        ("64 KB pod", large_pod(64 * 1024)),
        ("1,500 env vars", pod_with_env(1_500)),
    ] {
        figures.push(bench_in_process(&injector, &plan, case, pod)?);
    }
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    figures.push(runtime.block_on(bench_https(injector, &plan))?);
    let git = git_revision();
    let report = Report {
        git_revision: git.head.unwrap_or_else(|| "unknown".into()),
        git_dirty: git.dirty.unwrap_or(false),
        machine: machine(),
        runs_per_case: plan.runs,
        window_seconds: plan.window.as_secs_f64(),
        figures,
    };
    print_table(&report);
    write_json(&report)
}

/// A pod of at least `bytes` of JSON: the typical pod's container repeated
/// with 30 env vars, 4 mounts and 2 volumes each, as sidecar-heavy
/// workloads (log shippers, proxies, agents) look.
fn large_pod(bytes: usize) -> Value {
    let mut pod = typical_pod();
    pod["spec"]["containers"] = json!([]);
    pod["spec"]["volumes"] = json!([]);
    let mut index = 0;
    while pod.to_string().len() < bytes {
        let mut container = typical_pod()["spec"]["containers"][0].clone();
        container["name"] = json!(format!("worker-{index}"));
        container["ports"] = json!([{"containerPort": 9000 + index, "protocol": "TCP"}]);
        container["env"] = json!(env_vars(30, &format!("WORKER_{index}")));
        container["volumeMounts"] = json!([
            {"name": format!("data-{index}"), "mountPath": format!("/data/{index}")},
            {"name": format!("config-{index}"), "mountPath": format!("/etc/worker/{index}"), "readOnly": true},
            {"name": format!("data-{index}"), "mountPath": "/var/log", "subPath": "logs"},
            {"name": format!("config-{index}"), "mountPath": "/etc/extra", "subPath": "extra"}
        ]);
        push(&mut pod["spec"]["containers"], container);
        push(
            &mut pod["spec"]["volumes"],
            json!({"name": format!("data-{index}"), "emptyDir": {}}),
        );
        push(
            &mut pod["spec"]["volumes"],
            json!({"name": format!("config-{index}"), "configMap": {"name": format!("worker-{index}")}}),
        );
        index += 1;
    }
    pod
}

/// The typical pod with `count` environment variables on its container.
fn pod_with_env(count: usize) -> Value {
    let mut pod = typical_pod();
    pod["spec"]["containers"][0]["env"] = json!(env_vars(count, "SETTING"));
    pod
}

fn env_vars(count: usize, prefix: &str) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"name": format!("{prefix}_{i}"), "value": format!("value-{i}")}))
        .collect()
}

fn push(list: &mut Value, item: Value) {
    list.as_array_mut().expect("a list").push(item);
}

fn bench_in_process(
    injector: &Injector,
    plan: &Plan,
    case: &'static str,
    pod: Value,
) -> anyhow::Result<Figures> {
    let pod_bytes = pod.to_string().len();
    eprintln!(
        "inject bench: {case} ({pod_bytes} bytes of pod, containers: {}), {} runs of {:?}",
        pod["spec"]["containers"].as_array().map_or(0, Vec::len),
        plan.runs,
        plan.window
    );
    let body = pod_create("bench", pod).to_string().into_bytes();
    // A case that is not injected would time the wrong path.
    let outcome = review(injector, &body)?.outcome;
    if outcome != Outcome::Injected {
        bail!("{case}: not injected: {outcome:?}");
    }
    let once = || {
        let started = Instant::now();
        let reviewed = review(injector, &body).expect("the body decodes");
        std::hint::black_box(reviewed);
        started.elapsed()
    };
    time_for(plan.warm_up, once);
    let runs = (0..plan.runs)
        .map(|_| time_for(plan.window, once))
        .collect::<Vec<_>>();
    Ok(figures(
        case,
        "webhook::review",
        pod_bytes,
        body.len(),
        &runs,
    ))
}

/// Calls `once` (which returns its own latency) until `window` is over.
fn time_for(window: Duration, mut once: impl FnMut() -> Duration) -> Run {
    let begin = Instant::now();
    let mut latencies = Vec::new();
    while begin.elapsed() < window {
        latencies.push(once());
    }
    Run {
        latencies,
        elapsed: begin.elapsed(),
    }
}

/// The typical pod through `webhook::start` with one keep-alive client.
async fn bench_https(injector: Arc<Injector>, plan: &Plan) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let (cert_file, key_file) = cert_paths(dir.path());
    let cert = SelfSigned::new(1);
    cert.write(&cert_file, &key_file);
    let args = https_args(dir.path())?;
    let metrics = InjectionMetrics::new(&mut prometheus_client::registry::Registry::default());
    let shutdown = Shutdown::default();
    let (addr, mut serving) = webhook::start(&args, injector, metrics, shutdown.clone()).await?;
    tokio::time::timeout(Duration::from_secs(5), serving.wait_for(Option::is_some))
        .await
        .context("no serving certificate within 5 s")??;

    let pod = typical_pod();
    let pod_bytes = pod.to_string().len();
    let body = bytes_of(&pod_create("bench", pod));
    let http = client(&[&cert], addr);
    eprintln!(
        "inject bench: typical pod over HTTPS, {} runs of {:?}",
        plan.runs, plan.window
    );
    post_for(&http, addr, &body, plan.warm_up).await?;
    let mut runs = Vec::new();
    for _ in 0..plan.runs {
        runs.push(post_for(&http, addr, &body, plan.window).await?);
    }
    shutdown.trigger();
    Ok(figures(
        "typical pod",
        "HTTPS POST /inject",
        pod_bytes,
        body.len(),
        &runs,
    ))
}

fn https_args(dir: &Path) -> anyhow::Result<HttpsArgs> {
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        webhook: HttpsArgs,
    }
    let (cert, key) = cert_paths(dir);
    let args = Args::try_parse_from([
        "injector".as_ref(),
        "--webhook-addr".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--webhook-cert".as_ref(),
        cert.as_os_str(),
        "--webhook-key".as_ref(),
        key.as_os_str(),
    ])?;
    Ok(args.webhook)
}

fn bytes_of(review: &Value) -> axum::body::Bytes {
    axum::body::Bytes::from(review.to_string())
}

/// Posts `body` back to back until `window` is over; any failure ends the
/// benchmark, since figures with errors in them would mislead.
async fn post_for(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: &axum::body::Bytes,
    window: Duration,
) -> anyhow::Result<Run> {
    let url = url(addr, "/inject");
    let begin = Instant::now();
    let mut latencies = Vec::new();
    while begin.elapsed() < window {
        let sent = Instant::now();
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await?
            .error_for_status()?;
        response.bytes().await?;
        latencies.push(sent.elapsed());
    }
    Ok(Run {
        latencies,
        elapsed: begin.elapsed(),
    })
}

fn figures(
    case: &'static str,
    path: &'static str,
    pod_bytes: usize,
    body_bytes: usize,
    runs: &[Run],
) -> Figures {
    let pooled: Vec<Duration> = runs.iter().flat_map(|r| r.latencies.clone()).collect();
    let summary = Summary::of(&pooled);
    let run_p50s: Vec<f64> = runs
        .iter()
        .map(|run| us(Summary::of(&run.latencies).median))
        .collect();
    let elapsed: f64 = runs.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    Figures {
        case,
        path,
        pod_bytes,
        body_bytes,
        runs: runs.len(),
        samples: summary.count,
        mean_us: us(summary.mean),
        p50_us: us(summary.median),
        p99_us: us(summary.p99),
        ops_per_second: summary.count as f64 / elapsed,
        run_p50_min_us: run_p50s.iter().copied().fold(f64::INFINITY, f64::min),
        run_p50_max_us: run_p50s.iter().copied().fold(0.0, f64::max),
    }
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// The CPU model and the CPUs this process may use (what `nproc` prints).
fn machine() -> Machine {
    let machine = bench_report::Machine::detect();
    Machine {
        cpu_model: machine.cpu_model.unwrap_or_else(|| "unknown".into()),
        nproc: machine.nproc,
    }
}

fn print_table(report: &Report) {
    println!(
        "\ninjector: {} runs of {} s per case; {} ({} CPUs); git {}{}",
        report.runs_per_case,
        report.window_seconds,
        report.machine.cpu_model,
        report.machine.nproc,
        report.git_revision,
        if report.git_dirty { " (dirty)" } else { "" },
    );
    println!(
        "{:<15} {:<19} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>19}",
        "case",
        "path",
        "pod B",
        "samples",
        "mean µs",
        "p50 µs",
        "p99 µs",
        "ops/s",
        "run p50 min–max µs"
    );
    for f in &report.figures {
        println!(
            "{:<15} {:<19} {:>9} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>8.0} {:>19}",
            f.case,
            f.path,
            f.pod_bytes,
            f.samples,
            f.mean_us,
            f.p50_us,
            f.p99_us,
            f.ops_per_second,
            format!("{:.1}–{:.1}", f.run_p50_min_us, f.run_p50_max_us),
        );
    }
}

fn write_json(report: &Report) -> anyhow::Result<()> {
    let path = bench_report::write_json("injector", &serde_json::to_value(report)?)?;
    println!("figures written to {}", path.display());
    Ok(())
}
