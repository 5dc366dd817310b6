//! Trireme pilot: turns services and Istio configuration into Envoy
//! configuration, served over xDS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use event_bus::Bus;
use mesh_config::networking::sidecar::Mode as OutboundMode;
use pilot::config_source::DirectorySource;
use pilot::config_source::bus as bus_source;
use pilot::config_source::directory::POLL_INTERVAL;
use pilot::model::{ConfigSet, MeshSettings};
use pilot::registry::kubernetes::{self, DiscoverySelectors, KubeSettings};
use pilot::tls::TlsListener;
use pilot::xds::connection::StreamShared;
use pilot::xds::debounce::{self, DebounceSettings};
use pilot::xds::status_publisher;
use pilot::xds::sync_status::SyncStatus;
use pilot::xds::{AdsServer, PushContext, XdsMetrics};
use prometheus_client::metrics::gauge::Gauge;
use service_runtime::args::{OptionalAddr, parse_duration, parse_optional_addr};
use service_runtime::{Health, MetricsRegistry, Readiness, RuntimeArgs, ServiceRuntime, Shutdown};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::Router;
use workload_identity::args::spiffe_id;
use workload_identity::{CaClient, CertificateManager, IdentityArgs};

const COMPONENT: &str = "pilot";

// mimalloc rather than glibc's malloc: pushes allocate and free from every
// worker thread at once, and glibc's arena locks and consolidation were a
// quarter of pilot's CPU under endpoint churn (issue 8, S4 profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Trireme pilot: turns services and Istio configuration into Envoy
/// configuration, served over xDS.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    /// Address of the plaintext xDS (ADS) gRPC server.
    #[arg(long, env = "TRIREME_XDS_ADDR", default_value = "0.0.0.0:15010")]
    xds_addr: SocketAddr,

    /// Address of the mutual-TLS xDS (ADS) gRPC server, or `none`. Clients
    /// must present a certificate from the mesh CA; pilot serves with its
    /// own, from citadel (see the identity flags).
    #[arg(long, env = "TRIREME_XDS_TLS_ADDR", default_value = "0.0.0.0:15012", value_parser = parse_optional_addr)]
    xds_tls_addr: OptionalAddr,

    /// Namespace of pilot's own identity.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pod_namespace: String,

    /// Service account of pilot's own identity.
    #[arg(long, env = "SERVICE_ACCOUNT", default_value = "pilot")]
    service_account: String,

    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,

    /// pilot's serving certificate for the TLS port: citadel's address, the
    /// root to trust, the token to present, lifetime and rotation.
    #[command(flatten)]
    identity: IdentityArgs,

    /// Address of the HTTP server for /metrics, /healthz/*, /version and /debug/*.
    #[arg(long, env = "TRIREME_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    http_addr: SocketAddr,

    /// Directory of Istio YAML/JSON to serve, read recursively and watched.
    #[arg(long, env = "TRIREME_CONFIG_DIR", conflicts_with = "nats_url")]
    config_dir: Option<PathBuf>,

    /// Read config from galley's bucket on this NATS bus (comma-separated
    /// URLs) instead of a directory: the whole bucket, then every change.
    /// Proxies' sync state is published there too (`trireme proxy-status`).
    #[arg(long)]
    nats_url: Option<String>,

    /// This replica's name in proxy status (Kubernetes sets POD_NAME);
    /// defaults to `<hostname>-<xds port>`.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,

    /// Quiet period after a config change before pushing (Istio's PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    debounce_after: Duration,

    /// Longest a push waits while changes keep coming (Istio's PILOT_DEBOUNCE_MAX).
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_duration)]
    debounce_max: Duration,

    /// Longest a push waits while the changes only move endpoints: under
    /// steady pod churn the quiet period never comes.
    #[arg(long, env = "TRIREME_DEBOUNCE_MAX_ENDPOINTS", default_value = "100ms", value_parser = parse_duration)]
    debounce_max_endpoints: Duration,

    /// Debounce endpoint-only changes at all (Istio's PILOT_ENABLE_EDS_DEBOUNCE);
    /// `false` pushes each at once.
    #[arg(long, env = "PILOT_ENABLE_EDS_DEBOUNCE", default_value = "true", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    eds_debounce: bool,

    /// What sidecars do with traffic for destinations outside the registry
    /// unless their Sidecar says otherwise (Istio's mesh
    /// `outboundTrafficPolicy.mode`): ALLOW_ANY or REGISTRY_ONLY.
    #[arg(long, env = "TRIREME_OUTBOUND_TRAFFIC_POLICY", default_value = "ALLOW_ANY", value_parser = parse_outbound_mode)]
    outbound_traffic_policy: OutboundMode,

    /// Read services and endpoints from Kubernetes (Services,
    /// EndpointSlices, Pods, Namespaces, Nodes) besides ServiceEntries.
    /// Uses the pod's service account unless --kubeconfig is given.
    #[arg(long, env = "TRIREME_KUBERNETES")]
    kubernetes: bool,

    /// Kubeconfig file to reach the API server with, instead of the
    /// in-cluster service account.
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,

    /// Namespaces the Kubernetes registry keeps, as mesh config's
    /// `discoverySelectors` (a JSON list of label selectors, e.g.
    /// `[{"matchLabels": {"istio-discovery": "enabled"}}]`): a namespace
    /// matching any is kept; none given keeps all.
    #[arg(long, env = "TRIREME_DISCOVERY_SELECTORS", value_parser = DiscoverySelectors::parse)]
    discovery_selectors: Option<DiscoverySelectors>,

    /// Longest an xDS connection lives before pilot asks the proxy to
    /// reconnect (GOAWAY, then 10 s grace), so proxies spread over new
    /// pilot replicas (Istio's --keepaliveMaxServerConnectionAge); `0s`
    /// keeps connections forever.
    #[arg(
        long,
        alias = "keepaliveMaxServerConnectionAge",
        env = "TRIREME_KEEPALIVE_MAX_SERVER_CONNECTION_AGE",
        default_value = "30m",
        value_parser = parse_duration
    )]
    keepalive_max_server_connection_age: Duration,

    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Grace after the maximum connection age before the connection is closed
/// (Istio's MaxServerConnectionAgeGrace).
const MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(10);

fn parse_outbound_mode(mode: &str) -> Result<OutboundMode, String> {
    match mode.to_ascii_uppercase().as_str() {
        "ALLOW_ANY" => Ok(OutboundMode::AllowAny),
        "REGISTRY_ONLY" => Ok(OutboundMode::RegistryOnly),
        _ => Err(format!("{mode:?} is not ALLOW_ANY or REGISTRY_ONLY")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let health = Health::default();
    let config_ready = health.register("config", "waiting for the first full config load");
    let bus_health = args
        .nats_url
        .as_ref()
        .map(|_| health.register("bus", "connecting to NATS"));
    let kube_health = args
        .kubernetes
        .then(|| health.register("kubernetes", kubernetes::watch::WAITING));
    // Bound before the runtime reports ready, so a port clash fails the start.
    let tls = match args.xds_tls_addr.0 {
        Some(addr) => Some(start_tls(&args, addr, &health).await?),
        None => {
            tracing::info!("xDS over TLS disabled (--xds-tls-addr none)");
            None
        }
    };
    let mut metrics_registry = MetricsRegistry::new(COMPONENT);
    let metrics = XdsMetrics::register(metrics_registry.registry_mut());
    let config_errors = Gauge::<i64>::default();
    metrics_registry.registry_mut().register(
        "pilot_config_file_errors",
        "Documents in the config directory that currently fail to parse",
        config_errors.clone(),
    );

    let bus_connected = Gauge::<i64>::default();
    metrics_registry.registry_mut().register(
        "pilot_bus_connected",
        "1 while connected to the NATS bus config comes from, else 0",
        bus_connected.clone(),
    );

    let (publisher, contexts) = watch::channel(Arc::new(PushContext::empty()));
    let sync_status = SyncStatus::default();
    let debug = pilot::debug::router(contexts.clone(), sync_status.clone(), metrics.clone());
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.runtime,
        args.http_addr,
        metrics_registry,
        health,
        debug,
    )
    .await?;
    let shutdown = runtime.shutdown.clone();

    let (updates, update_receiver) = mpsc::channel(16);
    let debounce = DebounceSettings {
        after: args.debounce_after,
        max: args.debounce_max,
        endpoint_max: args.debounce_max_endpoints,
        eds_debounce: args.eds_debounce,
    };
    let settings = MeshSettings {
        outbound_traffic_policy: args.outbound_traffic_policy,
        ..MeshSettings::default()
    };
    let domain_suffix = settings.domain_suffix.clone();
    tracing::info!(outbound_traffic_policy = ?settings.outbound_traffic_policy, "mesh settings");
    tokio::spawn(debounce::run(
        update_receiver,
        publisher,
        settings,
        debounce,
        metrics.clone(),
        shutdown.token(),
    ));
    follow_first_push(contexts.clone(), config_ready);
    // With Kubernetes, the config sources' updates pass through a merge
    // that adds the registry's latest snapshot (and waits for its sync).
    let updates = if args.kubernetes {
        let client = kube_singleton::client(args.kubeconfig.as_deref()).await?;
        let kube_settings = KubeSettings {
            domain_suffix,
            discovery_selectors: args.discovery_selectors.clone().unwrap_or_default(),
        };
        tracing::info!(selectors = ?kube_settings.discovery_selectors, "reading services from Kubernetes");
        let registry = kubernetes::watch::start(client, kube_settings, shutdown.token());
        kube_health
            .expect("registered with --kubernetes")
            .follow(registry.health, |health| health.describe());
        let (config_updates, configs) = mpsc::channel(16);
        tokio::spawn(kubernetes::watch::merge(
            configs,
            registry.snapshots,
            updates,
        ));
        config_updates
    } else {
        updates
    };
    match (args.config_dir, &args.nats_url) {
        (Some(dir), _) => {
            tokio::spawn(watch_directory(
                dir,
                updates,
                config_errors,
                shutdown.clone(),
            ));
        }
        (None, Some(nats_url)) => {
            let bus = Bus::connect(nats_url, COMPONENT)
                .await
                .with_context(|| format!("connecting to NATS at {nats_url}"))?;
            follow_bus_connection(&bus, bus_health, &bus_connected);
            let bucket = bus_source::open_bucket(&bus)
                .await
                .context("opening the config bucket")?;
            tracing::info!(%nats_url, bucket = bucket.name(), "reading config from the bus");
            let statuses = status_publisher::open_bucket(&bus)
                .await
                .context("opening the proxy status bucket")?;
            let replica = args
                .pod_name
                .clone()
                .unwrap_or_else(|| format!("{}-{}", hostname(), args.xds_addr.port()));
            tracing::info!(%replica, "publishing proxies' sync state");
            tokio::spawn(status_publisher::run(
                statuses,
                sync_status.clone(),
                replica,
                shutdown.token(),
            ));
            let watch = bucket.watch_state();
            tokio::spawn(async move {
                // The bus stays open as long as the watch needs it.
                let _bus = bus;
                bus_source::follow(watch, updates).await;
            });
        }
        (None, None) => {
            tracing::warn!("neither --config-dir nor --nats-url given: serving an empty mesh");
            updates.send(ConfigSet::default()).await.ok();
        }
    }

    let shared = StreamShared {
        metrics,
        sync_status,
        shutdown: shutdown.token(),
    };
    let loaded = first_push(contexts.clone());
    let ads = AdsServer::new(contexts, shared);
    let max_connection_age =
        Some(args.keepalive_max_server_connection_age).filter(|age| !age.is_zero());
    let xds_addr = args.xds_addr;
    let plaintext_listener =
        bind_xds(xds_addr).with_context(|| format!("binding the xDS address {xds_addr}"))?;
    let plaintext = {
        let ads = ads.clone();
        let loaded = loaded.clone();
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = loaded => {}
                _ = shutdown.wait() => return Ok(()),
            }
            tracing::info!(%xds_addr, "serving ADS (state-of-the-world and delta) in plain text");
            let incoming = TcpListenerStream::new(plaintext_listener).map(|stream| {
                let stream = stream?;
                stream.set_nodelay(true)?;
                Ok::<_, std::io::Error>(stream)
            });
            ads_router(ads, max_connection_age)
                .serve_with_incoming_shutdown(incoming, shutdown.wait())
                .await
        }
    };
    let secure = async {
        let Some((listener, manager)) = tls else {
            return Ok(());
        };
        let addr = listener.local_addr()?;
        tokio::select! {
            _ = loaded => {}
            _ = shutdown.wait() => return Ok(()),
        }
        tracing::info!(%addr, "serving ADS over mutual TLS");
        let served = listener
            .serve(ads_router(ads, max_connection_age), shutdown.wait())
            .await;
        drop(manager);
        served.with_context(|| format!("serving xDS over TLS on {addr}"))
    };
    runtime
        .run(async move {
            let (plaintext, secure) = tokio::join!(plaintext, secure);
            plaintext.with_context(|| format!("serving xDS on {xds_addr}"))?;
            secure
        })
        .await
}

/// The machine's name (the pod's, in Kubernetes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "pilot".to_owned())
}

/// Reports the bus connection: a gauge, and a health detail that says
/// "degraded" while disconnected. Readiness stays true: pilot keeps serving
/// the last config it read, which is better than serving nothing.
fn follow_bus_connection(bus: &Bus, health: Option<Readiness>, connected: &Gauge<i64>) {
    let mut states = bus.watch_connection();
    let connected = connected.clone();
    tokio::spawn(async move {
        loop {
            let state = *states.borrow_and_update();
            connected.set(i64::from(state.is_connected()));
            if let Some(health) = &health {
                if state.is_connected() {
                    health.set_ready("connected");
                } else {
                    health.set_ready(&format!("degraded: NATS {state}, serving the last config"));
                }
            }
            if states.changed().await.is_err() {
                return;
            }
        }
    });
}

fn ads_router(ads: AdsServer, max_connection_age: Option<Duration>) -> Router {
    let mut builder =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(age) = max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(MAX_CONNECTION_AGE_GRACE);
    }
    builder.add_service(ads)
}

/// pilot's own certificate from citadel, and the TLS port bound to serve
/// with it; ready ("xds-tls") once a certificate has arrived.
async fn start_tls(
    args: &Args,
    addr: SocketAddr,
    health: &Health,
) -> anyhow::Result<(TlsListener, CertificateManager)> {
    let spiffe_id = spiffe_id(
        &args.trust_domain,
        &args.pod_namespace,
        &args.service_account,
    );
    let manager = CertificateManager::start(
        args.identity.manager_config(spiffe_id),
        CaClient::new(args.identity.ca_client_config())?,
    )?;
    health
        .register("xds-tls", "no serving certificate yet")
        .follow(manager.subscribe(), pilot::tls::describe_identity);
    let listener = TlsListener::bind(addr, manager.subscribe())
        .await
        .with_context(|| format!("binding the xDS TLS port {addr}"))?;
    Ok((listener, manager))
}

/// Ready once the first push context (a complete config load) is published.
/// Resolves once the first push context (the whole config) is built. A
/// proxy served before that would get an empty mesh, and after a pilot
/// restart drop every cluster it had; as istiod does, pilot accepts xDS
/// streams only once its config is loaded (connections wait in the listen
/// backlog meanwhile).
fn first_push(
    mut contexts: watch::Receiver<Arc<PushContext>>,
) -> futures::future::Shared<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    async move {
        let _ = contexts.wait_for(|context| context.version > 0).await;
    }
    .boxed()
    .shared()
}

/// Listen backlog for xDS: a reconnect storm of thousands of proxies must
/// not overflow it (each overflow costs a proxy a SYN retransmit, 1 s+).
const XDS_LISTEN_BACKLOG: u32 = 4096;

/// Binds the plain-text xDS port now, so a clash fails the start.
fn bind_xds(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(XDS_LISTEN_BACKLOG)
}

fn follow_first_push(contexts: watch::Receiver<Arc<PushContext>>, ready: Readiness) {
    ready.follow(contexts, |context| {
        if context.version > 0 {
            (
                true,
                format!("config loaded (push version {})", context.version),
            )
        } else {
            (false, "waiting for the first full config load".to_string())
        }
    });
}

/// Polls the config directory and sends every changed load to the pipeline.
async fn watch_directory(
    dir: PathBuf,
    updates: mpsc::Sender<ConfigSet>,
    errors_gauge: Gauge<i64>,
    shutdown: Shutdown,
) {
    let mut source = DirectorySource::new(&dir);
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait() => return,
        }
        let report = match source.reload() {
            Ok(Some(report)) => report,
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "cannot read the config directory; keeping the last config");
                continue;
            }
        };
        errors_gauge.set(report.errors.len() as i64);
        for error in &report.errors {
            tracing::error!(%error, "config document rejected; the rest is served");
        }
        tracing::info!(dir = %dir.display(), files = report.files, resources = report.resources.len(), "config loaded");
        let config = ConfigSet::from_resources(report.resources);
        if updates.send(config).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_port_defaults_to_15012_and_can_be_turned_off() {
        let args = Args::try_parse_from(["pilot"]).unwrap();
        assert_eq!(args.xds_tls_addr.0, Some(([0, 0, 0, 0], 15012).into()));
        assert_eq!(args.pod_namespace, "istio-system");
        assert_eq!(args.service_account, "pilot");
        let args = Args::try_parse_from(["pilot", "--xds-tls-addr", "none"]).unwrap();
        assert_eq!(args.xds_tls_addr.0, None);
        assert!(Args::try_parse_from(["pilot", "--xds-tls-addr", "nowhere"]).is_err());
    }

    #[test]
    fn kubernetes_is_off_by_default_and_takes_discovery_selectors() {
        let args = Args::try_parse_from(["pilot"]).unwrap();
        assert!(!args.kubernetes);
        assert_eq!(args.discovery_selectors, None);
        assert_eq!(
            args.keepalive_max_server_connection_age,
            Duration::from_secs(30 * 60)
        );
        let args = Args::try_parse_from([
            "pilot",
            "--kubernetes",
            "--kubeconfig",
            "/tmp/kubeconfig",
            "--discovery-selectors",
            r#"[{"matchLabels": {"istio-discovery": "enabled"}}]"#,
            "--keepaliveMaxServerConnectionAge",
            "5m",
        ])
        .unwrap();
        assert!(args.kubernetes);
        assert!(!args.discovery_selectors.unwrap().is_empty());
        assert_eq!(
            args.keepalive_max_server_connection_age,
            Duration::from_secs(300)
        );
        assert!(Args::try_parse_from(["pilot", "--kubeconfig", "/tmp/k"]).is_err());
        assert!(
            Args::try_parse_from([
                "pilot",
                "--discovery-selectors",
                r#"[{"matchExpressions": [{"key": "a", "operator": "Maybe"}]}]"#
            ])
            .is_err()
        );
    }
}
