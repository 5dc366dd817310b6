//! `agent wait`: blocks until the proxy reports ready, for the injected
//! proxy container's `postStart` hook when `holdApplicationUntilProxyStarts`
//! is on (kubelet starts the app containers only once the hook returns), as
//! Istio's `pilot-agent wait`.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The readiness URL to poll.
    #[arg(long, default_value = "http://localhost:15021/healthz/ready")]
    url: String,

    /// Give up after this many seconds.
    #[arg(
        long = "timeout-seconds",
        visible_alias = "timeoutSeconds",
        default_value_t = 60
    )]
    timeout_seconds: u64,

    /// Milliseconds between attempts.
    #[arg(
        long = "period-millis",
        visible_alias = "periodMillis",
        default_value_t = 500
    )]
    period_millis: u64,

    /// Milliseconds one attempt may take.
    #[arg(
        long = "request-timeout-millis",
        visible_alias = "requestTimeoutMillis",
        default_value_t = 500
    )]
    request_timeout_millis: u64,
}

/// Polls until the URL answers 200, or fails after the timeout.
pub async fn run(args: WaitArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(args.request_timeout_millis))
        .no_proxy()
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut last = String::from("no attempt yet");
    while Instant::now() < deadline {
        match client.get(&args.url).send().await {
            Ok(response) if response.status().is_success() => {
                eprintln!("proxy ready: {} answered {}", args.url, response.status());
                return Ok(());
            }
            Ok(response) => last = format!("HTTP {}", response.status()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(args.period_millis)).await;
    }
    bail!(
        "{} not ready after {} s (last: {last})",
        args.url,
        args.timeout_seconds
    )
}
