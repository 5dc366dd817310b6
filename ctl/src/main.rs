//! `trireme`: the operator command line.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// trireme: the operator command line for the Trireme service mesh.
#[derive(Debug, Parser)]
#[command(name = "trireme", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the version of this client.
    Version,
    /// Check Istio configuration files offline: every document must parse
    /// strictly into its kind (unknown fields and wrong types are errors).
    Validate(commands::validate::ValidateArgs),
    /// Show galley's verdicts from the bus: every rejected resource with
    /// the field and the reason, and warnings.
    Analyze(commands::analyze::AnalyzeArgs),
    /// Every proxy connected to any pilot replica and whether it applied
    /// what it was sent (SYNCED, STALE, NACKED with Envoy's message).
    ProxyStatus(commands::proxy_status::ProxyStatusArgs),
    /// Add the sidecar to the workloads of a Kubernetes YAML stream, as the
    /// injection webhook would (`--explain`: say which and why).
    KubeInject(commands::kube_inject::KubeInjectArgs),
    /// Development JWTs for citadel: make a signing key and its JWKS, mint
    /// service-account tokens.
    Token(commands::token::TokenArgs),
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().command {
        Command::Version => {
            println!("trireme {}", env!("CARGO_PKG_VERSION"));
            Ok(true)
        }
        Command::Validate(args) => commands::validate::run(&args),
        Command::Analyze(args) => commands::analyze::run(&args),
        Command::ProxyStatus(args) => commands::proxy_status::run(&args),
        Command::KubeInject(args) => commands::kube_inject::run(&args),
        Command::Token(args) => commands::token::run(&args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
