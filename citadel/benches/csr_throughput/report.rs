//! The printed table and the JSON file of one run.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use bench_report::{GitRevision, git_revision};
use serde_json::{Value, json};

use crate::Settings;
use crate::load::{Cell, Window};
use crate::openssl_speed::{Rates, Speed};

/// DESIGN.md's performance target for citadel.
const TARGET_P256_CSRS_PER_SECOND: f64 = 10_000.0;

/// Everything one run measured.
pub struct Run {
    pub settings: Settings,
    pub repetitions: usize,
    pub cells: Vec<Cell>,
    pub citadel_peak_rss_kib: u64,
    pub openssl: Result<Speed, String>,
    pub machine: Machine,
}

impl Run {
    fn openssl_rates(&self, key_type: &str) -> Option<Rates> {
        self.openssl.as_ref().ok()?.for_key_type(key_type)
    }
}

/// The machine and source the figures come from.
pub struct Machine {
    machine: bench_report::Machine,
    git: GitRevision,
}

impl Machine {
    /// Taken before the load starts, so the load average shows what else the
    /// (shared) machine was doing.
    pub fn describe() -> Self {
        Self {
            machine: bench_report::Machine::detect(),
            git: git_revision(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "nproc": self.machine.nproc,
            "kernel": self.machine.kernel,
            "cpu_model": self.machine.cpu_model,
            "load_average_at_start": self.machine.load_average,
            "git_head": self.git.head,
            "git_dirty": self.git.dirty,
        })
    }
}

pub fn print_table(run: &Run) {
    let settings = &run.settings;
    println!();
    println!(
        "citadel CSR throughput over TLS ({} mode: {} x {:?} windows per cell after {:?} warm-up; {} CPUs, load {} at start)",
        if settings.full { "full" } else { "quick" },
        run.repetitions,
        settings.window,
        settings.warmup,
        run.machine.machine.nproc,
        run.machine.machine.load_average.as_deref().unwrap_or("?"),
    );
    println!(
        "{:<9} {:>7} {:>10} {:>7} {:>7} {:>11} {:>12} {:>11} {:>11} {:>8}",
        "key type",
        "clients",
        "CSRs/s",
        "p50 ms",
        "p99 ms",
        "citadel",
        "CSRs per",
        "loadgen",
        "openssl",
        "CSRs/s ÷"
    );
    println!(
        "{:<9} {:>7} {:>10} {:>7} {:>7} {:>11} {:>12} {:>11} {:>11} {:>8}",
        "", "", "(median)", "", "", "CPU s/s", "citadel CPU-s", "CPU s/s", "sign/s", "sign/s"
    );
    for cell in &run.cells {
        print_row(cell, run.openssl_rates(cell.key_type));
    }
    print_notes(run);
}

fn print_row(cell: &Cell, openssl: Option<Rates>) {
    let sign = openssl.map(|rates| rates.sign_per_second);
    println!(
        "{:<9} {:>7} {:>10.0} {:>7.2} {:>7.2} {:>11.2} {:>12.0} {:>11.2} {:>11} {:>8}",
        cell.key_type,
        cell.clients,
        cell.median_csrs_per_second,
        cell.p50_ms,
        cell.p99_ms,
        cell.median_citadel_cpu,
        per_cpu_second(cell),
        cell.median_loadgen_cpu,
        sign.map_or_else(|| "-".to_owned(), |sign| format!("{sign:.0}")),
        sign.map_or_else(
            || "-".to_owned(),
            |sign| format!("{:.3}", cell.median_csrs_per_second / sign)
        ),
    );
    if let Some(error) = &cell.first_error {
        let failed: u64 = cell.windows.iter().map(|window| window.failed).sum();
        println!("          {failed} requests failed, first: {error}");
    }
}

/// CSRs signed per CPU-second citadel spent: comparable with openssl's
/// per-CPU-second rates whatever else the machine was doing.
fn per_cpu_second(cell: &Cell) -> f64 {
    if cell.median_citadel_cpu > 0.0 {
        cell.median_csrs_per_second / cell.median_citadel_cpu
    } else {
        f64::NAN
    }
}

fn print_notes(run: &Run) {
    println!(
        "citadel peak RSS (VmHWM): {:.1} MiB; DESIGN.md target: >= {TARGET_P256_CSRS_PER_SECOND:.0} P-256 CSRs/s",
        run.citadel_peak_rss_kib as f64 / 1024.0
    );
    println!(
        "citadel signs every leaf with its P-256 root key; the CSR's key type changes the CSR check (an RSA verify is cheap)."
    );
    println!(
        "citadel and the load generator share the machine's CPUs; CPU s/s above 1 means more than one core."
    );
    match &run.openssl {
        Ok(speed) => {
            println!(
                "openssl: `{}` ({}), one core, rates per CPU-second",
                speed.command,
                speed.version.as_deref().unwrap_or("version unknown")
            );
            for (name, rates) in [("P-256", speed.p256), ("RSA-2048", speed.rsa2048)] {
                match rates {
                    Some(rates) => println!(
                        "  {name}: {:.0} sign/s, {:.0} verify/s",
                        rates.sign_per_second, rates.verify_per_second
                    ),
                    None => println!("  {name}: not found in openssl's output"),
                }
            }
        }
        Err(reason) => println!("openssl speed: no figures: {reason}"),
    }
}

/// Writes `target/bench/citadel-csr.json`; returns its path.
pub fn write_json(run: &Run) -> anyhow::Result<PathBuf> {
    let settings = &run.settings;
    let document = json!({
        "bench": "citadel csr_throughput",
        "mode": if settings.full { "full" } else { "quick" },
        "window_seconds": settings.window.as_secs_f64(),
        "warmup_seconds": settings.warmup.as_secs_f64(),
        "repetitions": run.repetitions,
        "unix_time": SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        "machine": run.machine.to_json(),
        "citadel": {"peak_rss_kib": run.citadel_peak_rss_kib, "ca_key_type": "ecdsa"},
        "openssl": openssl_json(&run.openssl),
        "cells": run.cells.iter().map(|cell| cell_json(cell, run.openssl_rates(cell.key_type))).collect::<Vec<_>>(),
    });
    Ok(bench_report::write_json("citadel-csr", &document)?)
}

fn openssl_json(openssl: &Result<Speed, String>) -> Value {
    let rates = |rates: Option<Rates>| {
        rates.map(|rates| {
            json!({
                "sign_per_second": rates.sign_per_second,
                "verify_per_second": rates.verify_per_second,
            })
        })
    };
    match openssl {
        Ok(speed) => json!({
            "command": speed.command,
            "version": speed.version,
            "ecdsap256": rates(speed.p256),
            "rsa2048": rates(speed.rsa2048),
        }),
        Err(reason) => json!({ "error": reason }),
    }
}

fn cell_json(cell: &Cell, openssl: Option<Rates>) -> Value {
    let sign = openssl.map(|rates| rates.sign_per_second);
    json!({
        "key_type": cell.key_type,
        "clients": cell.clients,
        "csrs_per_second_median": cell.median_csrs_per_second,
        "p50_ms": cell.p50_ms,
        "p99_ms": cell.p99_ms,
        "citadel_cpu_seconds_per_second": cell.median_citadel_cpu,
        "csrs_per_citadel_cpu_second": per_cpu_second(cell),
        "loadgen_cpu_seconds_per_second": cell.median_loadgen_cpu,
        "openssl_sign_per_second": sign,
        "ratio_to_openssl_sign": sign.map(|sign| cell.median_csrs_per_second / sign),
        "first_error": cell.first_error,
        "windows": cell.windows.iter().map(window_json).collect::<Vec<_>>(),
    })
}

fn window_json(window: &Window) -> Value {
    json!({
        "csrs_per_second": window.csrs_per_second,
        "completed": window.completed,
        "failed": window.failed,
        "citadel_cpu_seconds_per_second": window.citadel_cpu,
        "loadgen_cpu_seconds_per_second": window.loadgen_cpu,
    })
}
