//! Trireme agent: runs beside each workload (Istio's pilot-agent).

mod init;

use std::{net::SocketAddr, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use service_runtime::{Health, MetricsRegistry, RuntimeArgs, ServiceRuntime};

const COMPONENT: &str = "agent";

/// Trireme agent: runs beside each workload, supervises its Envoy, serves it
/// certificates and config.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the iptables rules that send the pod's traffic through its
    /// proxy (Istio's init container).
    Init(init::InitArgs),
    /// Run beside a workload's proxy and report its health.
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Address of the agent's HTTP server (/metrics, /healthz/live, /healthz/ready).
    #[arg(long, env = "TRIREME_STATUS_ADDR", default_value = "0.0.0.0:15020")]
    status_addr: SocketAddr,

    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Init(args) => init::run(args),
        Command::Proxy(args) => run_proxy(args).await,
    };
    service_runtime::exit_code(outcome)
}

async fn run_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let health = Health::default();
    // The agent is ready only once its Envoy is; supervising Envoy comes with
    // the sidecar work, so until then this stays not ready, truthfully.
    let _envoy_ready = health.register("envoy", "not started: Envoy supervision is not built yet");
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.runtime,
        args.status_addr,
        MetricsRegistry::new(COMPONENT),
        health,
        axum::Router::new(),
    )
    .await?;
    runtime.run_until_shutdown().await
}
