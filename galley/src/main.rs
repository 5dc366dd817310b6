//! Trireme galley: validates Istio configuration and publishes it to the bus.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use event_bus::{Bus, ConnectionState};
use galley::intake::{Buckets, DirectoryIntake};
use galley::webhook::{Webhook, WebhookArgs};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime};

const COMPONENT: &str = "galley";

/// Trireme galley: validates Istio configuration and publishes it to the bus.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    #[command(flatten)]
    common: ControlPlaneArgs,

    /// Directory of Istio YAML/JSON to validate and publish, read
    /// recursively and watched.
    #[arg(long, env = "TRIREME_CONFIG_DIR")]
    config_dir: Option<PathBuf>,

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
    let intake_ready = args.config_dir.as_ref().map(|_| {
        health.register(
            "config",
            "waiting for the first publish of the config directory",
        )
    });
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
    if let (Some(dir), Some(ready)) = (args.config_dir, intake_ready) {
        let buckets = Buckets::open(&bus)
            .await
            .context("opening the config and verdict buckets")?;
        let mut intake = DirectoryIntake::new(dir.clone(), buckets).await?;
        intake
            .sync_once()
            .await
            .with_context(|| format!("publishing {}", dir.display()))?;
        ready.set_ready(&format!("publishing {}", dir.display()));
        let shutdown = runtime.shutdown.clone();
        tokio::spawn(async move { intake.run(shutdown.wait()).await });
    }
    runtime.run_until_shutdown().await
}
