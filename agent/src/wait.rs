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
    let client = crate::proxy::http_client()?;
    let attempt_timeout = Duration::from_millis(args.request_timeout_millis);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let mut last = String::from("no attempt yet");
    while Instant::now() < deadline {
        match client.get(&args.url).timeout(attempt_timeout).send().await {
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        wait: WaitArgs,
    }

    fn args(url: &str, timeout_seconds: &str) -> WaitArgs {
        Cli::parse_from([
            "wait",
            "--url",
            url,
            "--timeout-seconds",
            timeout_seconds,
            "--period-millis",
            "20",
        ])
        .wait
    }

    /// Answers 503 to the first `not_ready` requests, then 200.
    async fn readiness_server(not_ready: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz/ready", listener.local_addr().unwrap());
        tokio::spawn(async move {
            for served in 0.. {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let status = if served < not_ready {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let response =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn returns_once_the_proxy_is_ready() {
        let url = readiness_server(3).await;
        run(args(&url, "5")).await.unwrap();
    }

    #[tokio::test]
    async fn gives_up_with_the_last_answer() {
        let url = readiness_server(usize::MAX).await;
        let error = run(args(&url, "1")).await.unwrap_err().to_string();
        assert!(
            error.contains("not ready after 1 s") && error.contains("503"),
            "{error}"
        );
    }
}
