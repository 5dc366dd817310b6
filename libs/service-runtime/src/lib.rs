//! What every Trireme service runs on, used the same way by each binary:
//!
//! - [`RuntimeArgs`]: the shared command-line flags (each with an environment
//!   variable fallback) for logging and shutdown;
//! - [`telemetry`]: `tracing` logs as text or JSON, and OpenTelemetry traces over
//!   OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - [`metrics`]: a Prometheus registry with build and process metrics;
//! - [`health`]: named readiness conditions behind `/healthz/ready`;
//! - [`shutdown`]: SIGTERM/SIGINT handling with a bounded drain;
//! - [`tls_incoming`]: TLS connections for a gRPC server whose certificate
//!   changes at run time;
//! - [`admin_server`]: the HTTP server for `/metrics`, `/healthz/*` and `/version`;
//! - [`ServiceRuntime`]: all of the above started in one call.

pub mod admin_server;
pub mod args;
pub mod health;
pub mod metrics;
mod runtime;
pub mod server_cert_check;
pub mod shutdown;
pub mod telemetry;
pub mod tls_incoming;
pub mod version;

pub use args::{BusArgs, ControlPlaneArgs, LogFormat, RuntimeArgs};
pub use health::{Health, Readiness};
pub use metrics::MetricsRegistry;
pub use runtime::ServiceRuntime;
pub use shutdown::Shutdown;

/// Turns a service's outcome into its exit status, printing the error chain.
pub fn exit_code(outcome: anyhow::Result<()>) -> std::process::ExitCode {
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
