//! S6-S8 come from benchmarks of their own (`cargo bench` runs them before
//! this runner in `make bench`); their JSON under target/bench/ is read
//! back so that one table and one report hold every figure.

use serde_json::{Value, json};

use crate::outcome::{Outcome, Row};
use crate::scenarios::read_bench_json;

fn number(value: &Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or(f64::NAN)
}

/// S6: translation only, from pilot's `translate` bench.
pub fn s6_translation() -> Option<Outcome> {
    let report = read_bench_json("translate")?;
    let cases = report["cases"].as_array()?;
    // (case text starts with, Istio's figure ms, DESIGN.md's target ms)
    let anchors = [
        ("CDS for 1000 services", 3.5, 2.0),
        ("RDS for 1000 gateway hosts", 43.0, 20.0),
    ];
    let rows = anchors
        .iter()
        .filter_map(|(prefix, istio, target)| {
            let case = cases
                .iter()
                .find(|c| c["case"].as_str().is_some_and(|t| t.starts_with(prefix)))?;
            let (median, p99) = (number(case, "median_ms"), number(case, "p99_ms"));
            Some(
                Row::new(
                    format!("{prefix}: median / p99 (ms)"),
                    format!("{median:.1} / {p99:.1}"),
                )
                .against(
                    format!("istiod {istio} ms (faster machine); target <= {target} ms"),
                    Some(median / istio),
                ),
            )
        })
        .collect();
    Some(Outcome {
        id: "S6",
        title: "translation only, in process (cargo bench -p pilot --bench translate)".into(),
        rows,
        json: report,
    })
}

/// S7: citadel's CSR throughput, from its `csr_throughput` bench. citadel
/// signs every leaf with its P-256 root whatever the CSR's key, so the
/// anchor is `openssl speed`'s P-256 signing rate from the same run.
pub fn s7_citadel() -> Option<Outcome> {
    let report = read_bench_json("citadel-csr")?;
    let sign = report["openssl"]["ecdsap256"]["sign_per_second"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let rows = report["cells"]
        .as_array()?
        .iter()
        .map(|cell| {
            let rate = number(cell, "csrs_per_second_median");
            Row::new(
                format!(
                    "{} CSRs/s, {} clients (p50 / p99 ms {:.2} / {:.2})",
                    cell["key_type"].as_str().unwrap_or("?"),
                    cell["clients"],
                    number(cell, "p50_ms"),
                    number(cell, "p99_ms")
                ),
                format!("{rate:.0}"),
            )
            .against(
                format!("openssl P-256 sign {sign:.0}/s; target >= 10000/s"),
                Some(rate / sign),
            )
        })
        .collect();
    Some(Outcome {
        id: "S7",
        title: "citadel: CSRs signed per second over TLS (cargo bench -p citadel)".into(),
        rows,
        json: report,
    })
}

/// S8: the webhooks' latencies, from galley's and the injector's benches.
pub fn s8_webhooks() -> Option<Outcome> {
    let galley = read_bench_json("webhook");
    let injector = read_bench_json("injector");
    let mut rows = Vec::new();
    for cell in galley
        .as_ref()
        .and_then(|g| g["cells"].as_array())
        .into_iter()
        .flatten()
    {
        rows.push(Row::new(
            format!(
                "galley {} , {} clients: req/s (p50 / p99 ms {:.3} / {:.3})",
                cell["route"].as_str().unwrap_or("?"),
                cell["clients"],
                number(cell, "p50_ms"),
                number(cell, "p99_ms")
            ),
            format!("{:.0}", number(cell, "requests_per_second")),
        ));
    }
    for figure in injector
        .as_ref()
        .and_then(|i| i["figures"].as_array())
        .into_iter()
        .flatten()
    {
        rows.push(Row::new(
            format!(
                "injector {} ({}): p50 / p99 (ms)",
                figure["case"].as_str().unwrap_or("?"),
                figure["path"].as_str().unwrap_or("?")
            ),
            format!(
                "{:.2} / {:.2}",
                number(figure, "p50_us") / 1e3,
                number(figure, "p99_us") / 1e3
            ),
        ));
    }
    if rows.is_empty() {
        return None;
    }
    Some(Outcome {
        id: "S8",
        title: "webhooks: galley's /validate and the injector's /inject (their cargo benches)"
            .into(),
        rows,
        json: json!({"galley": galley, "injector": injector}),
    })
}
