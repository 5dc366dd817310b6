//! `agent proxy sidecar|router`: everything beside a workload's Envoy. It
//! writes Envoy's bootstrap, carries Envoy's ADS stream to pilot, serves the
//! status port (readiness, app probes, merged metrics), supervises Envoy and
//! drains it on the way out.

pub mod admin;
pub mod bootstrap;
pub mod config;
pub mod envoy;
pub mod status;
pub mod upstream_tls;
pub mod xds_proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use service_runtime::{Health, MetricsRegistry, Readiness, RuntimeArgs, ServiceRuntime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use workload_identity::{CaClient, CertificateManager, IdentityArgs};

use self::admin::AdminClient;
use self::bootstrap::{BootstrapInputs, ProxyPorts, XdsMode};
use self::config::{
    ControlPlaneAuthPolicy, Paths, ProxyConfig, ProxyKind, Workload, node_metadata_from_env,
    parse_labels,
};
use self::envoy::{DrainSettings, EnvoyCommand, EnvoyState};
use self::upstream_tls::TlsUpstream;
use self::xds_proxy::{PlaintextUpstream, Upstream, XdsProxy};

const COMPONENT: &str = "agent";

/// Flags of `agent proxy`. Each has the environment variable Istio's injected
/// sidecar sets as its fallback; flags win, then the environment, then
/// `PROXY_CONFIG`, then the defaults.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The kind of proxy: a workload's sidecar or a gateway.
    #[arg(value_enum, default_value = "sidecar")]
    pub kind: ProxyKind,

    /// pilot's xDS address (`PROXY_CONFIG` discoveryAddress).
    #[arg(long)]
    pub discovery_address: Option<String>,

    /// MUTUAL_TLS (TLS with the workload certificate) or NONE (plain text).
    #[arg(long, value_parser = parse_auth_policy)]
    pub control_plane_auth_policy: Option<ControlPlaneAuthPolicy>,

    /// The identity pilot's certificate must carry (a URI or DNS SAN) under
    /// MUTUAL_TLS; defaults to `spiffe://<trust-domain>/ns/istio-system/sa/pilot`.
    #[arg(long, env = "ISTIOD_SAN")]
    pub discovery_san: Option<String>,

    /// The workload certificate: citadel's address, the root to trust, the
    /// token to present, lifetime and rotation. Relative paths are under
    /// `--root-dir`.
    #[command(flatten)]
    pub identity: IdentityArgs,

    /// Root of the agent's sockets and scratch files (`/` in a pod).
    #[arg(long, env = "TRIREME_AGENT_ROOT_DIR", default_value = "/")]
    pub root_dir: PathBuf,

    /// The Envoy binary.
    #[arg(long, env = "ENVOY_BIN", default_value = "envoy")]
    pub envoy_bin: PathBuf,

    /// uid Envoy runs as (when the agent runs as root), excluded from capture.
    #[arg(long, env = "ISTIO_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,

    /// gid Envoy runs as; defaults to the uid.
    #[arg(long)]
    pub proxy_gid: Option<u32>,

    #[arg(long, env = "POD_NAME", default_value = "workload")]
    pub pod_name: String,

    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub pod_namespace: String,

    /// The workload's IP(s), comma-separated.
    #[arg(
        long,
        env = "INSTANCE_IP",
        default_value = "127.0.0.1",
        value_delimiter = ','
    )]
    pub instance_ip: Vec<String>,

    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,

    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Pod labels `key=value,...` (also `ISTIO_METAJSON_LABELS`).
    #[arg(long, value_parser = parse_labels)]
    pub labels: Option<BTreeMap<String, String>>,

    /// REDIRECT (iptables capture) or NONE (explicit listeners, no root).
    #[arg(long, env = "ISTIO_META_INTERCEPTION_MODE")]
    pub interception_mode: Option<String>,

    /// Istio's mesh ProxyConfig as JSON.
    #[arg(long, env = "PROXY_CONFIG")]
    pub proxy_config: Option<String>,

    /// Rewritten application probes as JSON (Istio's format).
    #[arg(long, env = "ISTIO_KUBE_APP_PROBERS")]
    pub app_probers: Option<String>,

    /// The app's own Prometheus endpoint, merged into /stats/prometheus.
    #[arg(long, env = "ISTIO_PROMETHEUS_ANNOTATIONS")]
    pub prometheus_annotations: Option<String>,

    /// Delta xDS (Istio's default since 1.22) or state of the world.
    #[arg(long, value_enum, default_value = "delta")]
    pub xds_mode: XdsMode,

    /// Longest wait for connections to finish on shutdown (`PROXY_CONFIG`
    /// terminationDrainDuration; 5s).
    #[arg(long, env = "TERMINATION_DRAIN_DURATION", value_parser = config::parse_duration)]
    pub termination_drain_duration: Option<Duration>,

    /// The agent's status port (Istio's 15020).
    #[arg(long, default_value_t = 15020)]
    pub status_port: u16,

    /// Envoy's admin port, on loopback (Istio's 15000).
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,

    /// Envoy's Prometheus port (Istio's 15090).
    #[arg(long, default_value_t = 15090)]
    pub stats_port: u16,

    /// Envoy's readiness port (Istio's 15021).
    #[arg(long, default_value_t = 15021)]
    pub readiness_port: u16,

    /// Envoy worker threads.
    #[arg(long, env = "ISTIO_PROXY_CONCURRENCY", default_value_t = 2)]
    pub concurrency: u32,

    /// Envoy's log level.
    #[arg(long, default_value = "warning")]
    pub proxy_log_level: String,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn parse_auth_policy(text: &str) -> Result<ControlPlaneAuthPolicy, String> {
    match text {
        "MUTUAL_TLS" => Ok(ControlPlaneAuthPolicy::MutualTls),
        "NONE" => Ok(ControlPlaneAuthPolicy::None),
        other => Err(format!("{other:?}: expected MUTUAL_TLS or NONE")),
    }
}

/// Defaults Istio's agent uses when nothing says otherwise.
const DEFAULT_DISCOVERY_ADDRESS: &str = "pilot.istio-system.svc:15012";
const DEFAULT_TERMINATION_DRAIN: Duration = Duration::from_secs(5);
/// Whose certificate pilot serves with, unless `--discovery-san` says.
const DEFAULT_PILOT_NAMESPACE: &str = "istio-system";
const DEFAULT_PILOT_SERVICE_ACCOUNT: &str = "pilot";

/// The settings every part of the proxy runner uses, resolved once.
pub struct ProxySettings {
    pub kind: ProxyKind,
    pub workload: Workload,
    pub paths: Paths,
    pub ports: ProxyPorts,
    pub discovery_address: String,
    pub auth_policy: ControlPlaneAuthPolicy,
    /// What pilot's certificate must name under MUTUAL_TLS.
    pub discovery_san: String,
    pub termination_drain: Duration,
    pub xds_mode: XdsMode,
}

impl ProxySettings {
    pub fn resolve(args: &ProxyArgs) -> anyhow::Result<Self> {
        let proxy_config = args
            .proxy_config
            .as_deref()
            .map(ProxyConfig::from_json)
            .transpose()?
            .unwrap_or_default();
        let environment: Vec<(String, String)> = std::env::vars().collect();
        let (mut metadata, env_labels) =
            node_metadata_from_env(environment.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        // proxyMetadata entries are environment variables for the agent.
        let (config_metadata, _) = node_metadata_from_env(
            proxy_config
                .proxy_metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
        for (key, value) in config_metadata {
            metadata.entry(key).or_insert(value);
        }
        if let Some(mode) = &args.interception_mode {
            metadata.insert("INTERCEPTION_MODE".into(), mode.clone());
        }
        let workload = Workload {
            pod_name: args.pod_name.clone(),
            namespace: args.pod_namespace.clone(),
            instance_ips: args.instance_ip.clone(),
            service_account: args.service_account.clone(),
            trust_domain: args.trust_domain.clone(),
            labels: args.labels.clone().unwrap_or(env_labels),
            metadata,
        };
        Ok(Self {
            kind: args.kind,
            workload,
            paths: Paths {
                root: args.root_dir.clone(),
            },
            ports: ProxyPorts {
                admin: proxy_config.proxy_admin_port.unwrap_or(args.admin_port),
                stats: args.stats_port,
                readiness: args.readiness_port,
                status: proxy_config.status_port.unwrap_or(args.status_port),
            },
            discovery_address: args
                .discovery_address
                .clone()
                .or(proxy_config.discovery_address)
                .unwrap_or_else(|| DEFAULT_DISCOVERY_ADDRESS.into()),
            auth_policy: args
                .control_plane_auth_policy
                .or(proxy_config.control_plane_auth_policy)
                .unwrap_or_default(),
            discovery_san: args.discovery_san.clone().unwrap_or_else(|| {
                workload_identity::args::spiffe_id(
                    &args.trust_domain,
                    DEFAULT_PILOT_NAMESPACE,
                    DEFAULT_PILOT_SERVICE_ACCOUNT,
                )
            }),
            termination_drain: args
                .termination_drain_duration
                .or(proxy_config.termination_drain_duration)
                .unwrap_or(DEFAULT_TERMINATION_DRAIN),
            xds_mode: args.xds_mode,
        })
    }
}

/// A plain HTTP client for Envoy's admin, app probes and app metrics. The
/// TLS part (HTTPS probes) trusts anything, as kubelet's probes do.
pub(crate) fn http_client() -> anyhow::Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer))
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .build()?)
}

/// kubelet does not verify the certificates of HTTPS probes; neither does
/// the agent when it runs them on kubelet's behalf.
#[derive(Debug)]
struct AcceptAnyServer;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs the proxy until SIGTERM, `/quitquitquit` or a fatal error.
pub async fn run(mut args: ProxyArgs) -> anyhow::Result<()> {
    let settings = ProxySettings::resolve(&args)?;
    // Shutting down means draining Envoy first: give the runtime that long.
    args.runtime.drain_timeout = args
        .runtime
        .drain_timeout
        .max(settings.termination_drain + Duration::from_secs(10));
    let http = http_client()?;
    let admin = AdminClient::new(settings.ports.admin, http.clone());
    let probers = args
        .app_probers
        .as_deref()
        .map(status::parse_app_probers)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default();
    let app_metrics = args
        .prometheus_annotations
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("ISTIO_PROMETHEUS_ANNOTATIONS")?;
    let status_routes = status::routes(probers, app_metrics, admin.clone(), http);

    let health = Health::default();
    let envoy_ready = health.register("envoy", "Envoy not started");
    let certificate_ready = health.register("certificate", "no workload certificate yet");
    let mut metrics = MetricsRegistry::new(COMPONENT);
    let status_addr = SocketAddr::from(([0, 0, 0, 0], settings.ports.status));
    let identity = under_root(&args.identity, &settings.paths.root);
    // The manager starts asking citadel at once; until a certificate
    // arrives the proxy is not ready, and SDS has nothing to serve.
    let manager = CertificateManager::start(
        identity.manager_config(settings.workload.spiffe_id()),
        CaClient::new(identity.ca_client_config())?,
    )?;
    crate::sds::metrics::register(metrics.registry_mut(), manager.subscribe());
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.runtime,
        status_addr,
        metrics,
        health,
        status_routes.router,
    )
    .await?;
    certificate_ready.follow(manager.subscribe(), describe_certificate);
    let sds = crate::sds::SdsServer::start(settings.paths.sds_socket(), manager.subscribe())?;
    let _ = status_routes.own_metrics_url.set(format!(
        "http://127.0.0.1:{}/metrics",
        runtime.admin_addr.port()
    ));
    let shutdown = runtime.shutdown.clone();
    tokio::spawn({
        let (quit, shutdown) = (status_routes.quit.clone(), shutdown.clone());
        async move {
            quit.notified().await;
            shutdown.trigger();
        }
    });

    write_bootstrap(&settings)?;
    let upstream: Arc<dyn Upstream> = match settings.auth_policy {
        ControlPlaneAuthPolicy::None => Arc::new(PlaintextUpstream {
            address: settings.discovery_address.clone(),
        }),
        ControlPlaneAuthPolicy::MutualTls => Arc::new(TlsUpstream {
            address: settings.discovery_address.clone(),
            san: settings.discovery_san.clone(),
            identities: manager.subscribe(),
        }),
    };
    tracing::info!(
        node = %settings.workload.node_id(settings.kind),
        identity = %settings.workload.spiffe_id(),
        pilot = %upstream.describe(),
        interception = settings.workload.interception_mode(),
        "starting the proxy"
    );
    let xds = XdsProxy::new(upstream);
    let xds_listener = xds_proxy::bind_unix(&settings.paths.xds_socket())?;
    let xds_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { xds.serve(xds_listener, shutdown.wait_owned()).await }
    });

    let (envoy_state, envoy_states) = watch::channel(EnvoyState::Starting);
    let stop_envoy = CancellationToken::new();
    // Only traffic capture needs Envoy under its own uid (the rules exempt
    // it); with interception NONE it runs as the agent does.
    let capture = settings.workload.interception_mode() != "NONE";
    let command = EnvoyCommand {
        binary: args.envoy_bin.clone(),
        bootstrap: settings.paths.bootstrap(),
        uid: capture.then_some(args.proxy_uid),
        gid: capture.then(|| args.proxy_gid.unwrap_or(args.proxy_uid)),
        concurrency: args.concurrency,
        log_level: args.proxy_log_level.clone(),
        drain_time: settings.termination_drain,
    };
    let drain = DrainSettings {
        admin: admin.clone(),
        duration: settings.termination_drain,
    };
    if let (Some(uid), Some(gid)) = (command.uid, command.gid) {
        share_with_proxy(&settings.paths, uid, gid)?;
    }
    let supervisor = tokio::spawn(envoy::supervise(
        command,
        drain,
        envoy_state,
        stop_envoy.clone(),
    ));
    tokio::spawn(follow_envoy_readiness(admin, envoy_states, envoy_ready));

    runtime
        .run(async move {
            shutdown.wait().await;
            stop_envoy.cancel();
            let outcome = supervisor.await.context("Envoy supervisor")?;
            xds_task.abort();
            sds.shutdown().await;
            drop(manager);
            outcome
        })
        .await
}

fn write_bootstrap(settings: &ProxySettings) -> anyhow::Result<()> {
    let path = settings.paths.bootstrap();
    let (xds_socket, sds_socket) = (settings.paths.xds_socket(), settings.paths.sds_socket());
    let bootstrap = bootstrap::bootstrap(&BootstrapInputs {
        kind: settings.kind,
        workload: &settings.workload,
        ports: settings.ports,
        xds_mode: settings.xds_mode,
        xds_socket: &xds_socket,
        sds_socket: &sds_socket,
        istio_version: env!("CARGO_PKG_VERSION"),
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&bootstrap)?)
        .with_context(|| format!("writing the Envoy bootstrap {}", path.display()))
}

/// Paths of the identity flags, relative ones taken under `root`.
fn under_root(identity: &IdentityArgs, root: &std::path::Path) -> IdentityArgs {
    let resolve = |path: &PathBuf| {
        if path.is_relative() {
            root.join(path)
        } else {
            path.clone()
        }
    };
    IdentityArgs {
        ca_root_cert: resolve(&identity.ca_root_cert),
        token_path: resolve(&identity.token_path),
        ..identity.clone()
    }
}

fn describe_certificate(
    identity: &Option<std::sync::Arc<workload_identity::WorkloadIdentity>>,
) -> (bool, String) {
    match identity {
        Some(identity) => (
            true,
            format!(
                "certificate {} for {}",
                identity.serial(),
                identity.spiffe_id()
            ),
        ),
        None => (false, "no workload certificate from citadel yet".into()),
    }
}

/// Envoy under the proxy uid must read its bootstrap and reach the agent's
/// sockets: hand those files (and the directories holding them) to it.
fn share_with_proxy(paths: &Paths, uid: u32, gid: u32) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for path in [paths.bootstrap(), paths.xds_socket(), paths.sds_socket()] {
        let parent = path.parent().map(std::path::Path::to_path_buf);
        for target in parent.iter().chain(std::iter::once(&path)) {
            if target.exists() {
                std::os::unix::fs::chown(target, Some(uid), Some(gid))
                    .with_context(|| format!("handing {} to uid {uid}", target.display()))?;
            }
        }
    }
    Ok(())
}

/// Ready when Envoy runs and has its listeners and clusters, as Istio's
/// readiness probe on 15021 reports.
async fn follow_envoy_readiness(
    admin: AdminClient,
    states: watch::Receiver<EnvoyState>,
    readiness: Readiness,
) {
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticks.tick().await;
        let state = *states.borrow();
        match state {
            EnvoyState::Running { .. } => match admin.config_ready().await {
                Ok(()) => readiness.set_ready("Envoy has listeners and clusters"),
                Err(reason) => readiness.set_not_ready(&reason),
            },
            EnvoyState::Stopped => {
                readiness.set_not_ready("Envoy stopped");
                return;
            }
            other => readiness.set_not_ready(&format!("Envoy {other:?}")),
        }
    }
}
