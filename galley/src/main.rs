//! Trireme galley: validates Istio configuration and publishes it to the bus.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use event_bus::{Bus, ConnectionState};
use galley::intake::kube_watch::{self, KubernetesIntakeSettings};
use galley::intake::{Buckets, DirectoryIntake};
use galley::webhook::{Started, Webhook, WebhookArgs};
use kube_singleton::{
    ElectionConfig, LeaderElector, VALIDATION_CONTROLLER, WebhookPatcher, WebhookProbe, lease_name,
    validator_webhook_name,
};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime, Shutdown};

const COMPONENT: &str = "galley";

/// Trireme galley: validates Istio configuration and publishes it to the bus.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    #[command(flatten)]
    common: ControlPlaneArgs,

    /// Directory of Istio YAML/JSON to validate and publish, read
    /// recursively and watched.
    #[arg(long, env = "TRIREME_CONFIG_DIR", conflicts_with = "kubernetes")]
    config_dir: Option<PathBuf>,

    /// Validate and publish the cluster's Istio resources (a watch of
    /// every Istio kind), and, as the leader of Istio's validation lease,
    /// keep the validating webhook's caBundle current and switch it to
    /// `failurePolicy: Fail` once it answers a probe. Uses the pod's
    /// service account unless --kubeconfig is given.
    #[arg(long, env = "TRIREME_KUBERNETES")]
    kubernetes: bool,

    /// Kubeconfig file to reach the API server with, instead of the
    /// in-cluster service account.
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,

    /// Write each resource's verdict to its `status.validationMessages`
    /// (Istio's PILOT_ENABLE_ANALYSIS, `--set global.istiod.enableAnalysis=true`).
    #[arg(long, env = "PILOT_ENABLE_ANALYSIS", requires = "kubernetes", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set, default_value = "false")]
    enable_analysis: bool,

    /// galley's namespace: where its lease is, and whose
    /// `istio-validator-<namespace>` webhook configuration it keeps.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pod_namespace: String,

    /// This replica's identity in the lease (Kubernetes sets POD_NAME).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,

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
    let kubernetes_ready = args.kubernetes.then(|| {
        health.register(
            "kubernetes",
            "waiting for the first list of every Istio kind",
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
    let started = match webhook {
        Some(webhook) => Some(webhook.start_serving(runtime.shutdown.clone()).await?),
        None => None,
    };
    let client = match args.kubernetes {
        true => Some(kube_singleton::client(args.kubeconfig.as_deref()).await?),
        false => None,
    };
    if let (Some(client), Some(started)) = (&client, started) {
        let pod_name = args
            .pod_name
            .clone()
            .context("--kubernetes needs --pod-name (POD_NAME) for the validation lease")?;
        start_webhook_patcher(
            client.clone(),
            &args.pod_namespace,
            pod_name,
            started,
            runtime.shutdown.clone(),
        )?;
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
    if let (Some(client), Some(ready)) = (client, kubernetes_ready) {
        let buckets = Buckets::open(&bus)
            .await
            .context("opening the config and verdict buckets")?;
        let settings = KubernetesIntakeSettings {
            write_status: args.enable_analysis,
        };
        let shutdown = runtime.shutdown.clone();
        tokio::spawn(async move {
            let run = kube_watch::run(client, buckets, settings, ready, shutdown.wait());
            if let Err(error) = run.await {
                tracing::error!(
                    error = format!("{error:#}"),
                    "the Kubernetes intake stopped"
                );
                shutdown.trigger();
            }
        });
    }
    runtime.run_until_shutdown().await
}

/// While this replica holds Istio's validation lease: the validating
/// webhook configuration's caBundle follows the certificate the webhook
/// serves, and it turns `failurePolicy: Fail` once the webhook has denied
/// an invalid VirtualService sent to it.
fn start_webhook_patcher(
    client: kube::Client,
    namespace: &str,
    pod_name: String,
    started: Started,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let election = ElectionConfig::new(namespace, lease_name(VALIDATION_CONTROLLER, ""), pod_name);
    let (leader, _election) = LeaderElector::new(client.clone(), election)
        .context("the validation lease")?
        .spawn(shutdown.clone().wait_owned());
    let bundle = admission_webhook::tls::follow_ca_bundle(started.serving);
    let probe = started.probe;
    let probe: Arc<dyn WebhookProbe> = Arc::new(move || {
        let probe = probe.clone();
        async move { probe.probe_once().await.map_err(|error| error.to_string()) }
    });
    let patcher = WebhookPatcher {
        client,
        leader,
        bundle,
        mutating: Vec::new(),
        validating: vec![validator_webhook_name("", namespace)],
        probe: Some(probe),
        retry: Duration::from_secs(5),
        resync: Duration::from_secs(60),
    };
    tokio::spawn(async move {
        tokio::select! {
            () = patcher.run() => {}
            () = shutdown.wait() => {}
        }
    });
    Ok(())
}
