//! S9: the agent's start-up. A release `agent proxy sidecar` is started as
//! an injected pod's would be (a service-account token and the trust bundle
//! mounted under its root, citadel authenticating the token as a JWT, pilot
//! for its Envoy's xDS, a real Envoy started by the agent), and a client
//! plays Envoy on the agent's SDS socket: the time from the agent's spawn to
//! the SDS response carrying the workload certificate (`default`), and the
//! agent's memory then and once its Envoy is configured. Each run is a fresh
//! agent with a fresh root directory; citadel and pilot stay up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use event_bus::Bus;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use perf::mesh_gen::MeshShape;
use perf::report::{ProcessUsage, Summary};
use prost::Message;
use serde_json::json;
use tonic::transport::{Endpoint, Uri};
use trireme_proto::envoy::pb::envoy::config::core::v3::{Node, data_source};
use trireme_proto::envoy::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use trireme_proto::envoy::pb::envoy::service::discovery::v3::DiscoveryRequest;
use trireme_proto::envoy::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;

use crate::outcome::{Outcome, Row, median_p99_ms};
use crate::processes::{Binaries, Nats, Pilot, Running, envoy_bin, free_port, wait_for};
use crate::scenarios::Scale;

/// `iss` of the tokens the benchmark mints, and citadel's `--jwt-issuer`.
const JWT_ISSUER: &str = "https://perf.trireme.local";
/// Who the benchmark's workload is: an endpoint of the mesh's `svc-0`.
const NAMESPACE: &str = "ns-0";
const SERVICE_ACCOUNT: &str = "svc-0";
/// Where an injected pod has the SDS socket, the token and the trust
/// bundle, under the agent's root directory (Istio's paths).
const SDS_SOCKET: &str = "var/run/secrets/workload-spiffe-uds/socket";
const TOKEN: &str = "var/run/secrets/tokens/istio-token";
const ROOT_CERT: &str = "var/run/secrets/istio/root-cert.pem";
/// Envoy's `type_url` for SDS.
const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// The longest a fresh agent may take to serve its certificate.
const SECRET_LIMIT: Duration = Duration::from_secs(30);
/// The longest a fresh agent may take to be ready (its Envoy configured).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// Istio's pilot-agent has no published memory figure; one user's report of
/// an idle 1.12 sidecar, read with `top`, is what there is.
const ANCHOR: &str =
    "no published anchor; Istio's pilot-agent ~50 MB idle in a user's report (istio/istio#38000)";

/// One agent's start.
struct Run {
    secret: Duration,
    at_secret: ProcessUsage,
    ready: ProcessUsage,
}

pub async fn s9_agent(bins: &Binaries, scale: Scale) -> anyhow::Result<Outcome> {
    let runs = if scale.full { 20 } else { 5 };
    // The workload's service, so pilot has something to configure its
    // Envoy with.
    let shape = MeshShape::single_service();
    let nats = Nats::start(bins).await?;
    let bus = Bus::connect(nats.url.clone(), "perf-scenarios").await?;
    shape.publish(&bus).await.context("publishing the mesh")?;
    let pilot = Pilot::start(bins, &nats.url, None).await?;
    let citadel = Citadel::start(bins, &nats.url).await?;
    let envoy = envoy_bin();
    let mut results = Vec::new();
    for run in 0..runs {
        results.push(
            start_agent(bins, &citadel, &pilot, &envoy, run)
                .await
                .with_context(|| format!("agent run {run}"))?,
        );
    }
    drop(citadel);
    drop(pilot);

    let secrets: Vec<Duration> = results.iter().map(|r| r.secret).collect();
    let summary = Summary::of(&secrets);
    let mb = |pick: fn(&Run) -> u64| median_kib(results.iter().map(pick)) as f64 / 1024.0;
    let (rss_secret, hwm_secret) = (
        mb(|r| r.at_secret.rss_kib),
        mb(|r| r.at_secret.peak_rss_kib),
    );
    let (rss_ready, hwm_ready) = (mb(|r| r.ready.rss_kib), mb(|r| r.ready.peak_rss_kib));
    let per_run: Vec<_> = results
        .iter()
        .map(|r| {
            json!({
                "secret_ms": r.secret.as_secs_f64() * 1e3,
                "rss_kib_at_secret": r.at_secret.rss_kib, "hwm_kib_at_secret": r.at_secret.peak_rss_kib,
                "rss_kib_ready": r.ready.rss_kib, "hwm_kib_ready": r.ready.peak_rss_kib,
            })
        })
        .collect();
    Ok(Outcome {
        id: "S9",
        title: format!(
            "agent: `agent proxy sidecar` spawned -> first SDS secret (`default`, from citadel), {runs} fresh agents"
        ),
        rows: vec![
            Row::new(
                "start -> first SDS certificate: median / p99 (ms)",
                median_p99_ms(&summary),
            ),
            Row::new(
                "agent VmRSS / VmHWM at the first secret, median (MB)",
                format!("{rss_secret:.1} / {hwm_secret:.1}"),
            ),
            Row::new(
                "agent VmRSS / VmHWM once ready (Envoy configured), median (MB)",
                format!("{rss_ready:.1} / {hwm_ready:.1}"),
            )
            .against(ANCHOR, None),
        ],
        json: json!({
            "runs": runs, "secret": summary.to_json_ms(),
            "median_rss_kib_at_secret": median_kib(results.iter().map(|r| r.at_secret.rss_kib)),
            "median_hwm_kib_at_secret": median_kib(results.iter().map(|r| r.at_secret.peak_rss_kib)),
            "median_rss_kib_ready": median_kib(results.iter().map(|r| r.ready.rss_kib)),
            "median_hwm_kib_ready": median_kib(results.iter().map(|r| r.ready.peak_rss_kib)),
            "per_run": per_run,
        }),
    })
}

/// Starts agent number `run` in a fresh root and measures it; stops it.
async fn start_agent(
    bins: &Binaries,
    citadel: &Citadel,
    pilot: &Pilot,
    envoy: &Path,
    run: usize,
) -> anyhow::Result<Run> {
    let root = bins.work.join(format!("s9-agent-{run}"));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    citadel.mount_pod_secrets(bins, &root)?;
    let status_port = free_port();
    let mut command = Command::new(bins.path("agent"));
    command
        .args(["proxy", "sidecar", "--root-dir"])
        .arg(&root)
        .arg("--envoy-bin")
        .arg(envoy)
        .args(["--interception-mode", "NONE"])
        .args(["--control-plane-auth-policy", "NONE"])
        .args(["--discovery-address", &pilot.xds.to_string()])
        .args(["--ca-address", &format!("localhost:{}", citadel.grpc_port)])
        .args(["--ca-server-name", "localhost"])
        .args(["--pod-name", &format!("svc-0-bench-{run}")])
        .args(["--pod-namespace", NAMESPACE])
        .args(["--instance-ip", "127.0.0.1"])
        .args(["--service-account", SERVICE_ACCOUNT])
        .args(["--labels", "app=svc-0,version=v1"])
        .args(["--concurrency", "1"])
        .args(["--status-port", &status_port.to_string()])
        .args(["--admin-port", &free_port().to_string()])
        .args(["--stats-port", &free_port().to_string()])
        .args(["--readiness-port", &free_port().to_string()])
        .args(["--termination-drain-duration", "1s"])
        .env_remove("PROXY_CONFIG")
        .env_remove("ISTIOD_SAN")
        .env_remove("CA_ADDR");
    let log = bins.work.join(format!("s9-agent-{run}.log"));
    let socket = root.join(SDS_SOCKET);
    let spawned = Instant::now();
    let agent = Running::spawn("agent", command, &log)?;
    first_certificate(&socket, agent.pid(), spawned + SECRET_LIMIT)
        .await
        .with_context(|| format!("the agent's first SDS secret (log: {})", log.display()))?;
    let secret_at = spawned.elapsed();
    let at_secret = ProcessUsage::sample(agent.pid())?;
    let status = std::net::SocketAddr::from(([127, 0, 0, 1], status_port));
    wait_for("the agent to be ready", READY_LIMIT, || async move {
        crate::http::get_text(status, "/healthz/ready")
            .await
            .ok()
            .filter(|(code, _)| *code == 200)
    })
    .await
    .with_context(|| format!("log: {}", log.display()))?;
    let ready = ProcessUsage::sample(agent.pid())?;
    drop(agent);
    Ok(Run {
        secret: secret_at,
        at_secret,
        ready,
    })
}

/// Plays Envoy on the SDS socket at `socket` as soon as it exists: asks for
/// `default` and waits for the response carrying its certificate chain.
async fn first_certificate(socket: &Path, pid: u32, deadline: Instant) -> anyhow::Result<()> {
    loop {
        if exited(pid) {
            bail!("the agent exited");
        }
        if Instant::now() > deadline {
            bail!("no certificate over SDS within {SECRET_LIMIT:?}");
        }
        // The socket file appears at bind, a moment before the listener
        // accepts: a refused connection is tried again.
        if socket.exists() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ask_for_certificate(socket)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => tracing::debug!("SDS not answering yet: {error:#}"),
                Err(_) => bail!("no certificate over SDS within {SECRET_LIMIT:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One SotW `StreamSecrets` stream asking for `default`, as Envoy's first
/// request does; waits for the response with the certificate.
async fn ask_for_certificate(socket: &Path) -> anyhow::Result<()> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://sds.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await?;
    let request = DiscoveryRequest {
        node: Some(Node {
            id: "sidecar~127.0.0.1~svc-0-bench.ns-0~ns-0.svc.cluster.local".into(),
            cluster: "svc-0.ns-0".into(),
            ..Default::default()
        }),
        resource_names: vec!["default".into()],
        type_url: SECRET_TYPE_URL.into(),
        ..Default::default()
    };
    // The request stream stays open, as Envoy's does: a half-closed stream
    // could end before the certificate arrives.
    let requests = futures::stream::iter([request]).chain(futures::stream::pending());
    let mut responses = SecretDiscoveryServiceClient::new(channel)
        .stream_secrets(requests)
        .await?
        .into_inner();
    while let Some(response) = responses.message().await? {
        for resource in &response.resources {
            let secret = Secret::decode(resource.value.as_slice())?;
            if secret.name != "default" {
                continue;
            }
            let Some(secret::Type::TlsCertificate(certificate)) = secret.r#type else {
                continue;
            };
            if let Some(data_source::Specifier::InlineBytes(chain)) = certificate
                .certificate_chain
                .and_then(|source| source.specifier)
                && String::from_utf8_lossy(&chain).contains("BEGIN CERTIFICATE")
            {
                return Ok(());
            }
        }
    }
    bail!("the SDS stream ended without a certificate")
}

/// Whether process `pid` has exited (gone, or a zombie).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn median_kib(values: impl Iterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// citadel trusting JWTs of a key the benchmark holds (as Kubernetes'
/// service-account issuer would be), with its own fresh CA.
struct Citadel {
    grpc_port: u16,
    ca_dir: PathBuf,
    signing_key: PathBuf,
    _process: Running,
}

impl Citadel {
    async fn start(bins: &Binaries, nats_url: &str) -> anyhow::Result<Citadel> {
        let dir = bins.work.join("s9-citadel");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let signing_key = dir.join("jwt-signing-key.pem");
        let jwks = dir.join("jwks.json");
        trireme(
            bins,
            Command::new(bins.path("trireme"))
                .args(["token", "keygen", "--key-out"])
                .arg(&signing_key)
                .arg("--jwks-out")
                .arg(&jwks),
        )?;
        let ca_dir = dir.join("ca");
        let grpc_port = free_port();
        let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = Command::new(bins.path("citadel"));
        command
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-addr", &http.to_string()])
            .arg("--ca-dir")
            .arg(&ca_dir)
            .args(["--jwt-issuer", JWT_ISSUER, "--jwks"])
            .arg(&jwks)
            .args(["--nats-url", nats_url])
            .env("TRIREME_LOG_LEVEL", "warn");
        let process = Running::spawn("citadel", command, &bins.work.join("s9-citadel.log"))?;
        wait_for(
            "citadel to be ready",
            Duration::from_secs(30),
            || async move {
                crate::http::get_text(http, "/healthz/ready")
                    .await
                    .ok()
                    .filter(|(code, _)| *code == 200)
            },
        )
        .await?;
        Ok(Citadel {
            grpc_port,
            ca_dir,
            signing_key,
            _process: process,
        })
    }

    /// What Kubernetes mounts into an injected pod, under `root`: the
    /// projected service-account token and the trust bundle.
    fn mount_pod_secrets(&self, bins: &Binaries, root: &Path) -> anyhow::Result<()> {
        let (token, root_cert) = (root.join(TOKEN), root.join(ROOT_CERT));
        for file in [&token, &root_cert] {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let jwt = trireme(
            bins,
            Command::new(bins.path("trireme"))
                .args(["token", "mint", "--key"])
                .arg(&self.signing_key)
                .args(["--issuer", JWT_ISSUER, "-n", NAMESPACE])
                .args(["--service-account", SERVICE_ACCOUNT, "--ttl", "1h"]),
        )?;
        std::fs::write(&token, jwt.trim())?;
        std::fs::copy(self.ca_dir.join("root-cert.pem"), &root_cert)
            .context("citadel's root-cert.pem")?;
        Ok(())
    }
}

/// Runs a `trireme` command; returns its standard output.
fn trireme(bins: &Binaries, command: &mut Command) -> anyhow::Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {}", bins.path("trireme").display()))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}
