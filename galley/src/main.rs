//! Trireme galley: validates Istio configuration and publishes it to the bus.

use std::process::ExitCode;

use clap::Parser;
use event_bus::{Bus, ConnectionState};
use galley::webhook::{Webhook, WebhookArgs};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime};

const COMPONENT: &str = "galley";

/// Trireme galley: validates Istio configuration and publishes it to the bus.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    #[command(flatten)]
    common: ControlPlaneArgs,

    #[command(flatten)]
    webhook: WebhookArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let health = Health::default();
    let bus_ready = health.register("bus", "connecting to NATS");
    let mut metrics = MetricsRegistry::new(COMPONENT);
    let webhook = Webhook::register(&args.webhook, metrics.registry_mut(), &health);
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.common.runtime,
        args.common.http_addr,
        metrics,
        health,
        axum::Router::new(),
    )
    .await?;
    if let Some(webhook) = webhook {
        webhook.start(runtime.shutdown.clone()).await?;
    }
    let bus = Bus::connect(&args.common.bus.nats_url, COMPONENT).await?;
    bus_ready.follow(bus.watch_connection(), ConnectionState::readiness);
    runtime.run_until_shutdown().await
}
