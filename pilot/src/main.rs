//! Trireme pilot: turns services and Istio configuration into Envoy configuration, served over xDS.

use std::{net::SocketAddr, process::ExitCode};

use clap::Parser;
use service_runtime::{BusArgs, Health, MetricsRegistry, RuntimeArgs, ServiceRuntime};

const COMPONENT: &str = "pilot";

/// Trireme pilot: turns services and Istio configuration into Envoy configuration, served over xDS.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    /// Address of the HTTP server for /metrics, /healthz/live, /healthz/ready and /version.
    #[arg(long, env = "TRIREME_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    http_addr: SocketAddr,

    #[command(flatten)]
    bus: BusArgs,

    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let health = Health::default();
    let bus_ready = health.register("bus", "connecting to NATS");
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.runtime,
        args.http_addr,
        MetricsRegistry::new(COMPONENT),
        health,
        axum::Router::new(),
    )
    .await?;
    let bus = event_bus::Bus::connect(&args.bus.nats_url, COMPONENT).await?;
    bus_ready.follow(bus.watch_connection(), |state| {
        (state.is_connected(), state.as_str().to_string())
    });

    let shutdown = runtime.shutdown.clone();
    runtime
        .run(async move {
            shutdown.wait().await;
            Ok(())
        })
        .await
}
