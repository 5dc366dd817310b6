//! `perf-scenarios`: issue 8's multi-process scenarios (S1-S5), run with
//! pilot and the load tool as separate release processes, plus the figures
//! of the in-process benchmarks (S6-S8) read from target/bench/; prints one
//! table and writes target/bench/scenarios.json. `make bench` runs it after
//! `cargo bench`; `BENCH_FULL=1` (or `--full`) for the full sizes and
//! windows.

mod gathered;
mod http;
mod outcome;
mod processes;
mod s10_envoys;
mod s9_agent;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use perf::report::{Machine, git_revision, write_json};
use serde_json::json;

use crate::outcome::{Outcome, print_table};
use crate::processes::Binaries;
use crate::scenarios::Scale;

#[derive(Debug, Parser)]
#[command(name = "perf-scenarios", about)]
struct Args {
    /// Full sizes and windows (also `BENCH_FULL=1`).
    #[arg(long, env = "BENCH_FULL", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    full: bool,

    /// Run only these scenarios, comma-separated (e.g. `S2,S3`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,

    /// Where pilot, xds-load and xds-floor are (release builds).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,

    /// nats-server.
    #[arg(
        long,
        env = "NATS_SERVER_BIN",
        default_value = ".tools/bin/nats-server"
    )]
    nats_server: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("perf-scenarios: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let work = tempfile_dir()?;
    let bins = Binaries {
        dir: args.bin_dir.clone(),
        nats_server: args.nats_server.clone(),
        work: work.clone(),
    };
    let scale = Scale { full: args.full };
    let wanted =
        |id: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(id));
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failures = Vec::new();
    macro_rules! scenario {
        ($id:literal, $run:expr) => {
            if wanted($id) {
                eprintln!("perf-scenarios: running {} ({} mode)...", $id, if scale.full { "full" } else { "quick" });
                let started = std::time::Instant::now();
                match $run.await {
                    Ok(outcome) => outcomes.push(outcome),
                    Err(error) => {
                        eprintln!("perf-scenarios: {} failed: {error:#}", $id);
                        failures.push(json!({"id": $id, "error": format!("{error:#}")}));
                    }
                }
                eprintln!("perf-scenarios: {} took {:.0} s", $id, started.elapsed().as_secs_f64());
            }
        };
    }
    scenario!("S1", scenarios::s1_reference_mesh(&bins, scale));
    scenario!("S2", scenarios::s2_idle_streams(&bins, scale));
    scenario!("S3", scenarios::s3_full_push(&bins, scale));
    scenario!("S4", scenarios::s4_endpoint_churn(&bins, scale));
    scenario!("S5", scenarios::s5_reconnect_storm(&bins, scale));
    scenario!("S9", s9_agent::s9_agent(&bins, scale));
    scenario!("S10", s10_envoys::s10_envoys(&bins, scale));
    for (id, gathered) in [
        ("S6", gathered::s6_translation()),
        ("S7", gathered::s7_citadel()),
        ("S8", gathered::s8_webhooks()),
    ] {
        match gathered {
            Some(outcome) if wanted(id) => outcomes.push(outcome),
            None if wanted(id) => eprintln!(
                "perf-scenarios: {id}: no JSON under target/bench/ (run `cargo bench` first)"
            ),
            _ => {}
        }
    }
    // By number: S2 before S10.
    outcomes.sort_by_key(|o| {
        o.id.trim_start_matches('S')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    print_table(&outcomes);
    let report = json!({
        "bench": "perf-scenarios",
        "mode": if scale.full { "full" } else { "quick" },
        "machine": Machine::detect().to_json(),
        "git": git_revision().to_json(),
        "scenarios": outcomes.iter().map(Outcome::to_json).collect::<Vec<_>>(),
        "failures": failures,
    });
    let path = write_json("scenarios", &report)?;
    println!(
        "\nwritten: {} (logs of the runs: {})",
        path.display(),
        work.display()
    );
    Ok(failures.is_empty())
}

/// A scratch directory for logs and dumps, kept for inspection.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("perf-scenarios-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
