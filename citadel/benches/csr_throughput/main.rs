//! CSRs signed per second by the real `citadel` binary over TLS, for P-256
//! and RSA-2048 CSRs at 1, 8 and 64 concurrent clients, beside the sign rates
//! `openssl speed` measures on the same machine in the same run (DESIGN.md's
//! target: >= 10k P-256 CSRs/s).
//!
//! citadel runs as its own process on free loopback ports with a fresh CA
//! directory and a JWT issuer this bench makes, so what is measured is the
//! whole path a workload's agent takes: TLS, JWT check, CSR check, signing.
//! Each cell (key type x clients) runs `REPETITIONS` fixed windows and reports
//! the median rate and the p50/p99 latency of every request in them, with
//! citadel's CPU seconds per second from /proc. No assertions: the machines
//! are shared and noisy, the figures are for reading.
//!
//! Quick by default (under two minutes); `BENCH_FULL=1` for longer windows.
//! Figures also go to `target/bench/citadel-csr.json`.

mod citadel;
mod load;
mod openssl_speed;
mod report;

use std::time::Duration;

use anyhow::Context;
use bench_report::ProcessUsage;

use crate::citadel::{Citadel, JwtIssuer};
use crate::load::{Target, Workload};
use crate::report::Run;

/// Concurrent clients per cell, each with its own TLS connection.
const CONCURRENCY: [usize; 3] = [1, 8, 64];
const REPETITIONS: usize = 3;
/// Distinct P-256 CSRs sent round-robin; cheap to make, so plenty.
const P256_CSRS: usize = 256;
/// RSA keys are slow to generate; a handful reused round-robin is enough for
/// citadel, which keeps nothing between requests.
const RSA_CSRS: usize = 8;

/// How long each part runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub full: bool,
    pub warmup: Duration,
    pub window: Duration,
    pub openssl_seconds: u32,
}

impl Settings {
    fn from_env() -> Self {
        let full = std::env::var("BENCH_FULL").is_ok_and(|value| value == "1");
        if full {
            Self {
                full,
                warmup: Duration::from_secs(2),
                window: Duration::from_secs(10),
                openssl_seconds: 10,
            }
        } else {
            Self {
                full,
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(2),
                openssl_seconds: 2,
            }
        }
    }
}

// cargo passes `--bench` (and any filter after `--`); there is only one
// benchmark here, so the arguments are ignored.
fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let run = runtime.block_on(measure(settings))?;
    report::print_table(&run);
    let json_path = report::write_json(&run)?;
    println!("figures written to {}", json_path.display());
    Ok(())
}

async fn measure(settings: Settings) -> anyhow::Result<Run> {
    let machine = report::Machine::describe();
    let work = tempfile::tempdir().context("making a work directory")?;
    let issuer = JwtIssuer::new(work.path())?;
    eprintln!("csr_throughput: starting citadel");
    let mut citadel = Citadel::start(work.path(), &issuer)?;
    let target = Target::new(citadel.grpc_addr(), citadel.root_cert_pem(), &issuer)?;
    let workloads = make_workloads()?;
    citadel
        .wait_until_serving(&target, &workloads[0])
        .await
        .context("citadel never served a CSR")?;

    let mut cells = Vec::new();
    for workload in &workloads {
        for clients in CONCURRENCY {
            eprintln!(
                "csr_throughput: {} CSRs, {clients} clients",
                workload.key_type
            );
            let cell = load::measure_cell(&target, workload, clients, &settings, citadel.pid())
                .await
                .with_context(|| format!("{} at {clients} clients", workload.key_type))?;
            cells.push(cell);
        }
    }
    let citadel_peak_rss_kib = ProcessUsage::sample(citadel.pid())?.peak_rss_kib;
    drop(citadel);

    eprintln!(
        "csr_throughput: openssl speed -seconds {}",
        settings.openssl_seconds
    );
    let openssl = openssl_speed::measure(settings.openssl_seconds);
    Ok(Run {
        settings,
        repetitions: REPETITIONS,
        cells,
        citadel_peak_rss_kib,
        openssl,
        machine,
    })
}

fn make_workloads() -> anyhow::Result<Vec<Workload>> {
    eprintln!("csr_throughput: making {P256_CSRS} P-256 and {RSA_CSRS} RSA-2048 CSRs");
    Ok(vec![
        Workload::p256(P256_CSRS)?,
        Workload::rsa2048(RSA_CSRS)?,
    ])
}

/// Median of a non-empty sample; the mean of the middle two when even.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}
