//! Trireme citadel: the certificate authority that signs workload identities.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use citadel::auth::{
    Authenticator, AuthenticatorChain, ClientCertAuthenticator, IN_CLUSTER_CA_FILE,
    IN_CLUSTER_TOKEN_FILE, JwksRefresh, JwksSource, JwtAuthenticator, JwtConfig, KubeApiConfig,
    KubeApiTokenReviewer, TokenReviewAuthenticator, in_cluster_api_server,
};
use citadel::authority::{Authority, RootKey, SigningPolicy, create_self_signed_root_valid_for};
use citadel::keys::{CaKeyType, RsaKeySize};
use citadel::kube_ca;
use citadel::reload::{AuthorityWatcher, RootRotation, SharedAuthority};
use citadel::rotation::RotationPolicy;
use citadel::server::{GrpcServer, ServingTls};
use citadel::service::{CertificateService, CitadelMetrics};
use citadel::trust_bundle;
use clap::Parser;
use event_bus::{Bus, ConnectionState};
use kube_singleton::{
    ElectionConfig, LeaderElector, NAMESPACE_CONTROLLER, RootCertPublisher, lease_name,
    watch_namespaces,
};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime};

const COMPONENT: &str = "citadel";
/// The organization named in the roots citadel creates.
const ORGANIZATION: &str = "Trireme";

/// Trireme citadel: the certificate authority that signs workload identities.
#[derive(Debug, Parser)]
#[command(name = COMPONENT, version, about)]
struct Args {
    #[command(flatten)]
    common: ControlPlaneArgs,

    /// Address of the TLS gRPC server for IstioCertificateService.
    #[arg(long, env = "TRIREME_GRPC_ADDR", default_value = "0.0.0.0:15012")]
    grpc_addr: SocketAddr,

    /// Directory holding the CA (Istio's file names); a self-signed root is
    /// created there on first start. Relative to the working directory.
    #[arg(long, env = "TRIREME_CA_DIR", default_value = "var/citadel")]
    ca_dir: PathBuf,

    /// Key type of the self-signed root made on first start; an existing CA
    /// in `--ca-dir` is kept whatever its key type.
    #[arg(long, env = "TRIREME_CA_KEY_TYPE", value_enum, default_value = "ecdsa")]
    ca_key_type: CaKeyType,

    /// Size in bits of an RSA root key (`--ca-key-type rsa`): 2048, 3072 or 4096.
    #[arg(long, env = "TRIREME_CA_RSA_KEY_SIZE", default_value = "2048")]
    ca_rsa_key_size: RsaKeySize,

    /// SPIFFE trust domain of issued identities.
    #[arg(long, env = "TRIREME_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,

    /// Longest certificate lifetime a workload may request, e.g. `90d`, `12h`.
    #[arg(long, env = "TRIREME_MAX_WORKLOAD_CERT_TTL", default_value = "90d", value_parser = parse_long_duration)]
    max_workload_cert_ttl: Duration,

    /// Issuer (`iss`) of JWTs accepted for authentication; needs `--jwks`.
    /// Tokens of other issuers are left to the next authenticator.
    #[arg(long, env = "TRIREME_JWT_ISSUER", requires = "jwks")]
    jwt_issuer: Option<String>,

    /// Keys of `--jwt-issuer`: a JWKS file, or an http(s) URL fetched in the
    /// background and refreshed (startup does not wait for it).
    #[arg(long, env = "TRIREME_JWKS", requires = "jwt_issuer")]
    jwks: Option<JwksSource>,

    /// How often a JWKS URL is fetched again; a token naming an unknown key
    /// also triggers a fetch, at most every 30s.
    #[arg(long, env = "TRIREME_JWKS_REFRESH_INTERVAL", default_value = "20m", value_parser = parse_long_duration)]
    jwks_refresh_interval: Duration,

    /// PEM CA certificates trusted for a JWKS URL besides the system's roots.
    #[arg(long, env = "TRIREME_JWKS_CA_FILE")]
    jwks_ca_file: Option<PathBuf>,

    /// Audience (`aud`) JWTs must carry.
    #[arg(long, env = "TRIREME_JWT_AUDIENCE", default_value = "istio-ca")]
    jwt_audience: String,

    /// JWT claim holding `system:serviceaccount:<namespace>:<name>`.
    #[arg(long, env = "TRIREME_JWT_IDENTITY_CLAIM", default_value = "sub")]
    jwt_identity_claim: String,

    /// Kubernetes API server (https) asked to review service-account tokens.
    /// Without it, TokenReview is on only in a pod (KUBERNETES_SERVICE_HOST).
    #[arg(long, env = "TRIREME_KUBE_API_SERVER")]
    kube_api_server: Option<reqwest::Url>,

    /// citadel's own service-account token for the API server; re-read for
    /// every review.
    #[arg(long, env = "TRIREME_KUBE_TOKEN_FILE", default_value = IN_CLUSTER_TOKEN_FILE)]
    kube_token_file: PathBuf,

    /// PEM CA certificates of the API server (the only roots trusted for it).
    #[arg(long, env = "TRIREME_KUBE_CA_FILE", default_value = IN_CLUSTER_CA_FILE)]
    kube_ca_file: PathBuf,

    /// Audience requested in TokenReviews and required in their answer.
    #[arg(
        long,
        env = "TRIREME_TOKEN_REVIEW_AUDIENCE",
        default_value = "istio-ca"
    )]
    token_review_audience: String,

    /// DNS names of citadel's own TLS serving certificate, comma-separated.
    /// Every name a workload's `CA_ADDR` may use must be here: the agent
    /// checks citadel's certificate against it.
    #[arg(
        long,
        env = "TRIREME_SERVER_DNS_NAMES",
        value_delimiter = ',',
        default_value = "citadel.istio-system.svc,citadel.istio-system.svc.cluster.local,citadel.istio-system,localhost"
    )]
    server_dns_names: Vec<String>,

    /// Lifetime of citadel's own serving certificate; renewed at half of it.
    #[arg(long, env = "TRIREME_SERVER_CERT_TTL", default_value = "24h", value_parser = parse_long_duration)]
    server_cert_ttl: Duration,

    /// How often `--ca-dir` is checked for changed files (a replaced plug-in
    /// CA) and for a due root rotation step.
    #[arg(long, env = "TRIREME_CA_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_long_duration)]
    ca_reload_interval: Duration,

    /// Lifetime of a self-signed root citadel creates.
    #[arg(long, env = "TRIREME_ROOT_CERT_TTL", default_value = "3650d", value_parser = parse_long_duration)]
    root_cert_ttl: Duration,

    /// Rotate a self-signed root once less than this percentage of its
    /// lifetime remains; 0 never rotates. Plug-in CAs are never rotated.
    #[arg(long, env = "TRIREME_ROOT_CERT_GRACE_PERIOD_PERCENTILE", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    root_cert_grace_period_percentile: u32,

    /// During a root rotation, how long the new root is trusted before
    /// anything is signed with it, so every workload learns it first.
    #[arg(long, env = "TRIREME_ROOT_ROTATION_PROPAGATION_DELAY", default_value = "1h", value_parser = parse_long_duration)]
    root_rotation_propagation_delay: Duration,

    /// During a root rotation, how long the previous root stays trusted once
    /// the new one signs. Defaults to --max-workload-cert-ttl, so no
    /// certificate outlives the trust in its root.
    #[arg(long, env = "TRIREME_ROOT_ROTATION_OVERLAP", value_parser = parse_long_duration)]
    root_rotation_overlap: Option<Duration>,

    /// In-cluster mode: unless `--ca-dir` holds a plug-in CA (Istio's
    /// `cacerts`), the self-signed root is kept in the Secret
    /// `istio-ca-secret` of `--pod-namespace` (read, or created on first
    /// start) and copied to `--ca-dir`; and the elected replica writes the
    /// trust bundle ConfigMap `istio-ca-root-cert` into every namespace.
    /// Uses the pod's service account (or KUBECONFIG outside a pod).
    #[arg(long, env = "TRIREME_KUBERNETES")]
    kubernetes: bool,

    /// The control plane's namespace: the CA Secret's and the Lease's.
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pod_namespace: String,

    /// This replica's identity in the leader election (its pod name);
    /// required with `--kubernetes`.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,

    /// Istio revision: a non-default one suffixes the Lease name.
    #[arg(long, env = "REVISION", default_value = "default")]
    revision: String,
}

/// Like the shared duration parser, plus days (`90d`).
fn parse_long_duration(text: &str) -> Result<Duration, String> {
    match text.strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .map(|days| Duration::from_secs(days * 24 * 60 * 60))
            .map_err(|error| format!("{text:?}: {error}")),
        None => service_runtime::args::parse_duration(text),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    service_runtime::exit_code(run(Args::parse()).await)
}

/// Client certificate first (renewal), then offline JWTs of the configured
/// issuer, then TokenReview, which takes any other bearer token.
fn authenticators(args: &Args, authority: SharedAuthority) -> anyhow::Result<AuthenticatorChain> {
    let client_cert = ClientCertAuthenticator::following(authority);
    let mut chain: Vec<Arc<dyn Authenticator>> = vec![Arc::new(client_cert)];
    if let (Some(issuer), Some(jwks)) = (&args.jwt_issuer, &args.jwks) {
        let config = JwtConfig {
            issuer: issuer.clone(),
            audience: args.jwt_audience.clone(),
            identity_claim: args.jwt_identity_claim.clone(),
            trust_domain: args.trust_domain.clone(),
        };
        let refresh = JwksRefresh {
            interval: args.jwks_refresh_interval,
            ..JwksRefresh::default()
        };
        let jwt =
            JwtAuthenticator::from_source(config, jwks, refresh, args.jwks_ca_file.as_deref())
                .context("--jwks")?;
        chain.push(Arc::new(jwt));
    }
    let api_server = in_cluster_api_server(args.kube_api_server.as_ref(), |name| {
        std::env::var(name).ok()
    })
    .map_err(anyhow::Error::msg)?;
    // Off outside a cluster without --kube-api-server; the startup log lists
    // the authenticators that are on, and where TokenReview's API server
    // came from.
    if let Some((api_server, origin)) = api_server {
        let config = KubeApiConfig::new(
            api_server,
            args.kube_token_file.clone(),
            args.kube_ca_file.clone(),
        );
        let reviewer = KubeApiTokenReviewer::new(&config).context("--kube-ca-file")?;
        let description = format!("{} from {origin}", reviewer.endpoint());
        let authenticator = TokenReviewAuthenticator::new(
            Arc::new(reviewer),
            args.token_review_audience.clone(),
            args.trust_domain.clone(),
        );
        chain.push(Arc::new(authenticator.described_as(description)));
    }
    Ok(AuthenticatorChain::new(chain))
}

fn root_rotation(args: &Args) -> RootRotation {
    RootRotation {
        organization: ORGANIZATION.to_owned(),
        policy: RotationPolicy {
            grace_period_percentile: args.root_cert_grace_period_percentile,
            root_validity: args.root_cert_ttl,
            propagation_delay: args.root_rotation_propagation_delay,
            overlap: args
                .root_rotation_overlap
                .unwrap_or(args.max_workload_cert_ttl),
        },
        new_root_key: Box::new({
            let (key_type, rsa_size) = (args.ca_key_type, args.ca_rsa_key_size);
            move || Ok(root_key(key_type, rsa_size))
        }),
    }
}

/// The key of a new self-signed root, as `--ca-key-type` asks.
fn root_key(key_type: CaKeyType, rsa_size: RsaKeySize) -> RootKey {
    match key_type {
        CaKeyType::Ecdsa => RootKey::GenerateEcdsaP256,
        CaKeyType::Rsa => RootKey::GenerateRsa { bits: rsa_size },
    }
}

/// Creates the self-signed root on first start; later starts reuse it.
fn create_root_if_missing(args: &Args) -> anyhow::Result<()> {
    if Authority::holds_ca(&args.ca_dir) {
        return Ok(());
    }
    let key = root_key(args.ca_key_type, args.ca_rsa_key_size);
    create_self_signed_root_valid_for(ORGANIZATION, key, args.root_cert_ttl)
        .and_then(|files| files.write_to(&args.ca_dir))?;
    tracing::info!(ca_dir = %args.ca_dir.display(), "created a self-signed root");
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let health = Health::default();
    let bus_ready = health.register("bus", "connecting to NATS");
    let ca_ready = health.register("ca", "loading the certificate authority");
    let mut metrics_registry = MetricsRegistry::new(COMPONENT);
    let metrics = CitadelMetrics::register(metrics_registry.registry_mut());

    // Logging and health first, so everything below is logged and a slow
    // start shows as not ready rather than as nothing at all.
    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.common.runtime,
        args.common.http_addr,
        metrics_registry,
        health,
        axum::Router::new(),
    )
    .await?;

    let policy = SigningPolicy {
        max_ttl: args.max_workload_cert_ttl,
        ..SigningPolicy::default()
    };
    let kube_client = match args.kubernetes {
        true => Some(
            kube_singleton::client(None)
                .await
                .context("--kubernetes: connecting to the API server")?,
        ),
        false => None,
    };
    let rotation = match &kube_client {
        Some(client) if !kube_ca::holds_plugin_ca(&args.ca_dir) => {
            root_from_secret(&args, client.clone()).await?;
            // Each replica rotating its copy would split the mesh's trust;
            // the Secret-kept root is not rotated (yet).
            None
        }
        _ => {
            create_root_if_missing(&args)
                .with_context(|| format!("creating the CA in {}", args.ca_dir.display()))?;
            Some(root_rotation(&args))
        }
    };
    let watcher = AuthorityWatcher::start(&args.ca_dir, policy, rotation)
        .with_context(|| format!("loading the CA from {}", args.ca_dir.display()))?;
    let authority = watcher.subscribe();
    let authenticators = authenticators(&args, authority.clone())?;
    let tls = ServingTls::new(
        &watcher.current(),
        args.server_dns_names.clone(),
        args.server_cert_ttl,
    )
    .context("issuing the serving certificate")?;
    let tls = Arc::new(tls);
    let grpc = GrpcServer::bind(args.grpc_addr, tls.clone())
        .await
        .with_context(|| format!("binding gRPC on {}", args.grpc_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let service =
        CertificateService::following(authority.clone(), authenticators.clone(), metrics.clone());

    tracing::info!(
        %grpc_addr,
        ca_dir = %args.ca_dir.display(),
        trust_domain = %args.trust_domain,
        max_workload_cert_ttl = ?args.max_workload_cert_ttl,
        authenticators = ?authenticators.describe(),
        server_dns_names = ?args.server_dns_names,
        "certificate authority loaded; serving IstioCertificateService over TLS"
    );
    ca_ready.set_ready("certificate authority loaded");

    let bus = Bus::connect(&args.common.bus.nats_url, COMPONENT).await?;
    bus_ready.follow(bus.watch_connection(), ConnectionState::readiness);
    let shutdown = runtime.shutdown.clone();
    let background = [
        tokio::spawn(watcher.run(args.ca_reload_interval, shutdown.clone().wait_owned())),
        tokio::spawn({
            let tls = tls.clone();
            let (authority, shutdown) = (authority.clone(), shutdown.clone());
            async move { tls.keep_fresh(authority, shutdown.wait_owned()).await }
        }),
        tokio::spawn(trust_bundle::publish(
            bus,
            args.trust_domain.clone(),
            authority.clone(),
            shutdown.clone().wait_owned(),
        )),
        tokio::spawn({
            let authority = authority.clone();
            async move { metrics.follow_authority(authority).await }
        }),
    ];
    let elector = match kube_client {
        Some(client) => Some(publish_root_cert(&args, client, authority, &shutdown)?),
        None => None,
    };
    let outcome = runtime
        .run(async move {
            grpc.serve(service, async move { shutdown.wait().await })
                .await
                .context("gRPC server")
        })
        .await;
    for task in background {
        task.abort();
    }
    if let Some((elector, publisher)) = elector {
        publisher.abort();
        // The elector releases the Lease on shutdown, so another replica
        // takes over at once rather than after the lease expires.
        let _ = tokio::time::timeout(Duration::from_secs(5), elector).await;
    }
    outcome
}

/// Reads the root from `istio-ca-secret` (creating it on first start) and
/// copies it to `--ca-dir`.
async fn root_from_secret(args: &Args, client: kube::Client) -> anyhow::Result<()> {
    let key = (args.ca_key_type, args.ca_rsa_key_size);
    let make_root = || {
        create_self_signed_root_valid_for(ORGANIZATION, root_key(key.0, key.1), args.root_cert_ttl)
    };
    let (files, outcome) = kube_ca::load_or_create(client, &args.pod_namespace, make_root).await?;
    kube_ca::write_from_secret(&args.ca_dir, &files)
        .with_context(|| format!("copying the CA to {}", args.ca_dir.display()))?;
    tracing::info!(
        namespace = %args.pod_namespace,
        secret = kube_ca::CA_SECRET,
        ?outcome,
        ca_dir = %args.ca_dir.display(),
        "certificate authority from its Secret"
    );
    Ok(())
}

/// Runs the election on Istio's namespace-controller Lease and, while
/// leading, writes the trust bundle (`root-cert.pem`, every trusted root,
/// following rotations and reloads) into `istio-ca-root-cert` in every
/// namespace. Returns the elector's and the publisher's tasks.
fn publish_root_cert(
    args: &Args,
    client: kube::Client,
    authority: SharedAuthority,
    shutdown: &service_runtime::Shutdown,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let pod_name = args
        .pod_name
        .clone()
        .filter(|name| !name.is_empty())
        .context("--kubernetes needs --pod-name (POD_NAME) for the leader election")?;
    let lease = lease_name(NAMESPACE_CONTROLLER, &args.revision);
    let config = ElectionConfig::new(&args.pod_namespace, &lease, pod_name);
    let elector = LeaderElector::new(client.clone(), config)?;
    let (leader, elector) = elector.spawn(shutdown.clone().wait_owned());
    let bundle = trust_bundle_pem(authority);
    let publisher = RootCertPublisher {
        client: client.clone(),
        leader,
        bundle,
        retry: Duration::from_secs(5),
        resync: Duration::from_secs(10 * 60),
    };
    tracing::info!(%lease, configmap = kube_singleton::ROOT_CERT_CONFIGMAP, "trust bundle ConfigMaps written while leading");
    let publisher = tokio::spawn(publisher.run(watch_namespaces(client)));
    Ok((elector, publisher))
}

/// `root-cert.pem` of the authority in use, changing with it.
fn trust_bundle_pem(mut authority: SharedAuthority) -> tokio::sync::watch::Receiver<String> {
    let current = authority.borrow_and_update().root_cert_pem().to_owned();
    let (tx, rx) = tokio::sync::watch::channel(current);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = authority.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
            let bundle = authority.borrow_and_update().root_cert_pem().to_owned();
            tx.send_if_modified(|current| {
                let changed = *current != bundle;
                *current = bundle;
                changed
            });
        }
    });
    rx
}
