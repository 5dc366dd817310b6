//! Trireme agent: runs beside each workload (Istio's pilot-agent).

use std::process::ExitCode;

use agent::proxy::{self, ProxyArgs};
use clap::{Parser, Subcommand};

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
    /// Run beside a workload: write Envoy's bootstrap, start and supervise
    /// Envoy, carry its xDS to pilot, serve the status port.
    Proxy(ProxyArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Proxy(args) => proxy::run(args).await,
    };
    service_runtime::exit_code(outcome)
}
