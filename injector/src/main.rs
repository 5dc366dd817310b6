//! Trireme injector: adds the sidecar proxy to pods as they are created.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use admission_webhook::HttpsArgs;
use admission_webhook::tls::{ServingCert, describe_serving, follow_ca_bundle};
use anyhow::Context;
use clap::Parser;
use event_bus::{Bus, ConnectionState};
use injector::ca_bundle::watch_bundle_file;
use injector::webhook::{self, InjectionMetrics};
use injector::{Injector, InjectorConfig, SidecarTemplate};
use kube_singleton::{
    ElectionConfig, INJECTION_WEBHOOK_CONTROLLER, LeaderElector, WebhookPatcher,
    injector_webhook_name, lease_name,
};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime, Shutdown};

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

    /// In-cluster mode: the elected replica keeps the `caBundle` of the
    /// MutatingWebhookConfiguration `istio-sidecar-injector` current with
    /// the certificate the webhook serves. Uses the pod's service account
    /// (or KUBECONFIG outside a pod).
    #[arg(long, env = "TRIREME_KUBERNETES")]
    kubernetes: bool,

    /// PEM CA certificates written as the webhook's `caBundle` (e.g. the
    /// `ca.crt` of a cert-manager Secret); without it, the issuers of the
    /// served `--webhook-cert` chain (the certificate itself when self-signed).
    #[arg(long, env = "TRIREME_WEBHOOK_CA_BUNDLE", requires = "kubernetes")]
    webhook_ca_bundle: Option<PathBuf>,

    /// The control plane's namespace, where the Lease is.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pod_namespace: String,

    /// This replica's identity in the leader election (its pod name);
    /// required with `--kubernetes`.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,

    /// Istio revision: a non-default one suffixes the Lease and webhook
    /// configuration names.
    #[arg(long, env = "REVISION", default_value = "default")]
    revision: String,
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
        if args.kubernetes {
            patch_ca_bundle(&args, serving.clone(), runtime.shutdown.clone()).await?;
        }
        ready.follow(serving, |cert| (cert.is_some(), describe_serving(cert)));
    }
    let bus = Bus::connect(&args.common.bus.nats_url, COMPONENT).await?;
    bus_ready.follow(bus.watch_connection(), ConnectionState::readiness);
    runtime.run_until_shutdown().await
}

/// Runs the election on Istio's injection-webhook Lease and, while leading,
/// keeps the webhook configuration's `caBundle` current (no probe: the
/// mutating webhook stays fail-open).
async fn patch_ca_bundle(
    args: &Args,
    serving: tokio::sync::watch::Receiver<Option<ServingCert>>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let pod_name = args
        .pod_name
        .clone()
        .filter(|name| !name.is_empty())
        .context("--kubernetes needs --pod-name (POD_NAME) for the leader election")?;
    let client = kube_singleton::client(None)
        .await
        .context("--kubernetes: connecting to the API server")?;
    let lease = lease_name(INJECTION_WEBHOOK_CONTROLLER, &args.revision);
    let config = ElectionConfig::new(&args.pod_namespace, &lease, pod_name);
    let (leader, _elector) =
        LeaderElector::new(client.clone(), config)?.spawn(shutdown.wait_owned());
    let bundle = match &args.webhook_ca_bundle {
        Some(path) => watch_bundle_file(path.clone(), args.webhook.cert_poll_interval),
        None => follow_ca_bundle(serving),
    };
    let webhook = injector_webhook_name(&args.revision);
    tracing::info!(%lease, %webhook, bundle_file = ?args.webhook_ca_bundle, "webhook caBundle kept current while leading");
    let patcher = WebhookPatcher {
        client,
        leader,
        bundle,
        mutating: vec![webhook],
        validating: Vec::new(),
        probe: None,
        retry: Duration::from_secs(5),
        resync: Duration::from_secs(10 * 60),
    };
    tokio::spawn(patcher.run());
    Ok(())
}
