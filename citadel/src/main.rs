//! Trireme citadel: the certificate authority that signs workload identities.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use citadel::auth::{
    Authenticator, AuthenticatorChain, ClientCertAuthenticator, JwtAuthenticator, JwtConfig,
};
use citadel::authority::{Authority, RootKey, SigningPolicy};
use citadel::keys::{CaKeyType, RsaKeySize};
use citadel::server::{GrpcServer, tls_config};
use citadel::service::{CertificateService, CitadelMetrics};
use clap::Parser;
use event_bus::{Bus, ConnectionState};
use service_runtime::{ControlPlaneArgs, Health, MetricsRegistry, ServiceRuntime};

const COMPONENT: &str = "citadel";

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
    #[arg(long, env = "TRIREME_JWT_ISSUER", requires = "jwks")]
    jwt_issuer: Option<String>,

    /// JWKS file with the keys of `--jwt-issuer` (URLs are not supported yet).
    #[arg(long, env = "TRIREME_JWKS", requires = "jwt_issuer")]
    jwks: Option<PathBuf>,

    /// Audience (`aud`) JWTs must carry.
    #[arg(long, env = "TRIREME_JWT_AUDIENCE", default_value = "istio-ca")]
    jwt_audience: String,

    /// JWT claim holding `system:serviceaccount:<namespace>:<name>`.
    #[arg(long, env = "TRIREME_JWT_IDENTITY_CLAIM", default_value = "sub")]
    jwt_identity_claim: String,

    /// DNS names of citadel's own TLS serving certificate, comma-separated.
    #[arg(
        long,
        env = "TRIREME_SERVER_DNS_NAMES",
        value_delimiter = ',',
        default_value = "citadel.istio-system.svc,localhost"
    )]
    server_dns_names: Vec<String>,
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

fn authenticators(args: &Args, authority: &Authority) -> anyhow::Result<AuthenticatorChain> {
    let mut chain: Vec<Arc<dyn Authenticator>> = Vec::new();
    if let (Some(issuer), Some(jwks)) = (&args.jwt_issuer, &args.jwks) {
        let config = JwtConfig {
            issuer: issuer.clone(),
            audience: args.jwt_audience.clone(),
            identity_claim: args.jwt_identity_claim.clone(),
            trust_domain: args.trust_domain.clone(),
        };
        chain.push(Arc::new(JwtAuthenticator::from_jwks_file(config, jwks)?));
    }
    let client_cert = ClientCertAuthenticator::from_roots_pem(authority.root_cert_pem())
        .map_err(|reason| anyhow::anyhow!("trust bundle: {reason}"))?;
    chain.push(Arc::new(client_cert));
    Ok(AuthenticatorChain::new(chain))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let health = Health::default();
    let bus_ready = health.register("bus", "connecting to NATS");
    let ca_ready = health.register("ca", "loading the certificate authority");
    let mut metrics_registry = MetricsRegistry::new(COMPONENT);
    let metrics = CitadelMetrics::register(metrics_registry.registry_mut());

    let policy = SigningPolicy {
        max_ttl: args.max_workload_cert_ttl,
        ..SigningPolicy::default()
    };
    let root_key = match args.ca_key_type {
        CaKeyType::Ecdsa => RootKey::GenerateEcdsaP256,
        CaKeyType::Rsa => RootKey::GenerateRsa {
            bits: args.ca_rsa_key_size,
        },
    };
    let authority = Authority::load_or_create(&args.ca_dir, "Trireme", root_key, policy)
        .with_context(|| format!("loading the CA from {}", args.ca_dir.display()))?;
    let authority = Arc::new(authority);
    let authenticators = authenticators(&args, &authority)?;
    let tls = tls_config(&authority, &args.server_dns_names)
        .context("issuing the serving certificate")?;
    let grpc = GrpcServer::bind(args.grpc_addr, tls)
        .await
        .with_context(|| format!("binding gRPC on {}", args.grpc_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let service = CertificateService::new(authority.clone(), authenticators.clone(), metrics);

    let runtime = ServiceRuntime::start(
        COMPONENT,
        &args.common.runtime,
        args.common.http_addr,
        metrics_registry,
        health,
        axum::Router::new(),
    )
    .await?;
    tracing::info!(
        %grpc_addr,
        ca_dir = %args.ca_dir.display(),
        trust_domain = %args.trust_domain,
        max_workload_cert_ttl = ?args.max_workload_cert_ttl,
        authenticators = ?authenticators.kinds(),
        server_dns_names = ?args.server_dns_names,
        "certificate authority loaded; serving IstioCertificateService over TLS"
    );
    ca_ready.set_ready("certificate authority loaded");

    let bus = Bus::connect(&args.common.bus.nats_url, COMPONENT).await?;
    bus_ready.follow(bus.watch_connection(), ConnectionState::readiness);
    let shutdown = runtime.shutdown.clone();
    runtime
        .run(async move {
            grpc.serve(service, async move { shutdown.wait().await })
                .await
                .context("gRPC server")
        })
        .await
}
