//! Trireme injector: adds the sidecar proxy to pods as they are created.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use admission_webhook::HttpsArgs;
use admission_webhook::tls::describe_serving;
use anyhow::Context;
use clap::Parser;
use event_bus::{Bus, ConnectionState};
use injector::webhook::{self, InjectionMetrics};
use injector::{Injector, InjectorConfig, SidecarTemplate};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime};

const COMPONENT: &str = "injector";

/// Trireme injector: adds the sidecar proxy to pods as they are created.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    #[command(flatten)]
    common: ControlPlaneArgs,

    #[command(flatten)]
    webhook: HttpsArgs,

    /// Injector configuration (YAML: Istio's `policy`,
    /// `alwaysInjectSelector`, `neverInjectSelector`, `injectedAnnotations`,
    /// `values`, `meshConfig`); Istio's defaults when absent.
    #[arg(long, env = "TRIREME_INJECTOR_CONFIG")]
    injector_config: Option<PathBuf>,

    /// A sidecar template replacing the built-in one (see
    /// injector/TEMPLATE.md for the values it receives).
    #[arg(long, env = "TRIREME_INJECTOR_TEMPLATE")]
    template: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::exit_code(run(Args::parse()).await)
}

fn load_injector(args: &Args) -> anyhow::Result<Injector> {
    let config = match &args.injector_config {
        Some(path) => InjectorConfig::from_file(path)?,
        None => InjectorConfig::default(),
    };
    let template = match &args.template {
        Some(path) => SidecarTemplate::from_file(path)
            .with_context(|| format!("loading the sidecar template {}", path.display()))?,
        None => SidecarTemplate::built_in(),
    };
    Ok(Injector::new(config, template))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let injector = Arc::new(load_injector(&args)?);
    let health = Health::default();
    let bus_ready = health.register("bus", "connecting to NATS");
    let webhook_ready = args
        .webhook
        .addr
        .0
        .map(|_| health.register("webhook", "no usable serving certificate yet"));
    let mut metrics = MetricsRegistry::new(COMPONENT);
    let injection_metrics = InjectionMetrics::new(metrics.registry_mut());
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.common.runtime,
        args.common.http_addr,
        metrics,
        health,
        axum::Router::new(),
    )
    .await?;
    if let Some(ready) = webhook_ready {
        let (_, serving) = webhook::start(
            &args.webhook,
            injector,
            injection_metrics,
            runtime.shutdown.clone(),
        )
        .await?;
        ready.follow(serving, |cert| (cert.is_some(), describe_serving(cert)));
    }
    let bus = Bus::connect(&args.common.bus.nats_url, COMPONENT).await?;
    bus_ready.follow(bus.watch_connection(), ConnectionState::readiness);
    runtime.run_until_shutdown().await
}
