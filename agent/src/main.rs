//! Trireme agent: runs beside each workload (Istio's pilot-agent).

use std::process::ExitCode;

use agent::init;
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
    /// Install the iptables rules that send the pod's traffic through its
    /// proxy (Istio's init container).
    Init(Box<init::InitArgs>),
    /// Run beside a workload: write Envoy's bootstrap, start and supervise
    /// Envoy, carry its xDS to pilot, serve the status port.
    Proxy(Box<ProxyArgs>),
    /// Wait until the proxy is ready (the injected `postStart` hook that
    /// holds the app until the proxy has started).
    Wait(agent::wait::WaitArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Init(args) => init::run(*args),
        Command::Proxy(args) => proxy::run(*args).await,
        Command::Wait(args) => agent::wait::run(args).await,
    };
    service_runtime::exit_code(outcome)
}
