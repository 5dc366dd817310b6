//! The load: pre-made CSRs, one TLS connection per client, and closed-loop
//! CreateCertificate calls (each client sends its next request when the
//! last one is answered) for a fixed window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bench_report::{ProcessUsage, Summary};
use citadel::keys::{RsaKeySize, generate_rsa_pkcs8_pem};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use trireme_proto::istio::v1::auth::IstioCertificateRequest;
use trireme_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;

use crate::citadel::{JwtIssuer, WORKLOAD_ID};
use crate::{REPETITIONS, Settings, median};

type Client = IstioCertificateServiceClient<Channel>;

/// Lifetime asked for each certificate, as an agent would.
const VALIDITY_SECONDS: i64 = 3600;

/// The CSRs of one key type, sent round-robin.
pub struct Workload {
    pub key_type: &'static str,
    csrs: Arc<[String]>,
}

impl Workload {
    pub fn p256(count: usize) -> anyhow::Result<Self> {
        let csrs = (0..count)
            .map(|_| {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                csr(&key)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            key_type: "P-256",
            csrs,
        })
    }

    pub fn rsa2048(count: usize) -> anyhow::Result<Self> {
        let csrs = (0..count)
            .map(|_| {
                let pem = generate_rsa_pkcs8_pem(RsaKeySize::Bits2048)?;
                csr(&KeyPair::from_pem(&pem)?)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            key_type: "RSA-2048",
            csrs,
        })
    }
}

/// A PEM CSR for `key` asking for the identity the bench's token proves.
fn csr(key: &KeyPair) -> anyhow::Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(WORKLOAD_ID.try_into()?)];
    Ok(params.serialize_request(key)?.pem()?)
}

/// Where and how clients connect and authenticate.
pub struct Target {
    endpoint: Endpoint,
    bearer: AsciiMetadataValue,
}

impl Target {
    pub fn new(addr: SocketAddr, root_pem: &str, issuer: &JwtIssuer) -> anyhow::Result<Self> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(root_pem))
            .domain_name("localhost");
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5));
        let bearer = MetadataValue::try_from(format!("Bearer {}", issuer.token()?))?;
        Ok(Self { endpoint, bearer })
    }

    /// A new channel is a new TCP connection and TLS handshake.
    async fn connect(&self) -> anyhow::Result<Client> {
        let channel = self.endpoint.connect().await?;
        Ok(IstioCertificateServiceClient::new(channel))
    }
}

/// What each client task needs to build requests, cheap to clone.
#[derive(Clone)]
struct Requests {
    csrs: Arc<[String]>,
    bearer: AsciiMetadataValue,
}

impl Requests {
    fn get(&self, index: usize) -> tonic::Request<IstioCertificateRequest> {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: self.csrs[index % self.csrs.len()].clone(),
            validity_duration: VALIDITY_SECONDS,
            metadata: None,
        });
        request
            .metadata_mut()
            .insert("authorization", self.bearer.clone());
        request
    }
}

/// One CreateCertificate on a fresh connection, succeeding only with a chain.
pub async fn probe(target: &Target, workload: &Workload) -> anyhow::Result<()> {
    let mut client = target.connect().await?;
    let requests = Requests {
        csrs: workload.csrs.clone(),
        bearer: target.bearer.clone(),
    };
    let response = client.create_certificate(requests.get(0)).await?;
    if response.into_inner().cert_chain.len() < 2 {
        bail!("citadel answered without a certificate chain");
    }
    Ok(())
}

/// The outcome of one window, or of several merged.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One measured window of a cell.
pub struct Window {
    pub csrs_per_second: f64,
    pub completed: usize,
    pub failed: u64,
    pub citadel_cpu: f64,
    pub loadgen_cpu: f64,
}

/// The figures of one key type at one concurrency.
pub struct Cell {
    pub key_type: &'static str,
    pub clients: usize,
    pub windows: Vec<Window>,
    pub median_csrs_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub median_citadel_cpu: f64,
    pub median_loadgen_cpu: f64,
    pub first_error: Option<String>,
}

/// Connects `clients` clients, warms up, then measures `REPETITIONS` windows.
pub async fn measure_cell(
    target: &Target,
    workload: &Workload,
    clients: usize,
    settings: &Settings,
    citadel_pid: u32,
) -> anyhow::Result<Cell> {
    let connections = connect_all(target, clients).await?;
    let requests = Requests {
        csrs: workload.csrs.clone(),
        bearer: target.bearer.clone(),
    };
    // Lets citadel's allocator and the connections settle before counting.
    run_window(&connections, &requests, settings.warmup).await;
    let mut windows = Vec::with_capacity(REPETITIONS);
    let mut all = Tally::default();
    for _ in 0..REPETITIONS {
        let citadel_before = ProcessUsage::sample(citadel_pid)?;
        let loadgen_before = ProcessUsage::sample_self()?;
        let tally = run_window(&connections, &requests, settings.window).await;
        let citadel_after = ProcessUsage::sample(citadel_pid)?;
        let loadgen_after = ProcessUsage::sample_self()?;
        windows.push(Window {
            csrs_per_second: tally.latencies.len() as f64 / settings.window.as_secs_f64(),
            completed: tally.latencies.len(),
            failed: tally.failed,
            citadel_cpu: ProcessUsage::cpu_per_wall_second(&citadel_before, &citadel_after),
            loadgen_cpu: ProcessUsage::cpu_per_wall_second(&loadgen_before, &loadgen_after),
        });
        all.merge(tally);
    }
    summarize(workload.key_type, clients, windows, all)
}

fn summarize(
    key_type: &'static str,
    clients: usize,
    windows: Vec<Window>,
    all: Tally,
) -> anyhow::Result<Cell> {
    if all.latencies.is_empty() {
        bail!(
            "no CSR was signed: {}",
            all.first_error.as_deref().unwrap_or("no answer in time")
        );
    }
    let latency = Summary::of(&all.latencies);
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let of = |pick: fn(&Window) -> f64| median(&windows.iter().map(pick).collect::<Vec<_>>());
    Ok(Cell {
        key_type,
        clients,
        median_csrs_per_second: of(|window| window.csrs_per_second),
        median_citadel_cpu: of(|window| window.citadel_cpu),
        median_loadgen_cpu: of(|window| window.loadgen_cpu),
        p50_ms: ms(latency.median),
        p99_ms: ms(latency.p99),
        first_error: all.first_error,
        windows,
    })
}

async fn connect_all(target: &Target, clients: usize) -> anyhow::Result<Vec<Client>> {
    let mut connections = Vec::with_capacity(clients);
    for index in 0..clients {
        let client = target
            .connect()
            .await
            .with_context(|| format!("connecting client {index}"))?;
        connections.push(client);
    }
    Ok(connections)
}

/// Every client sends requests back to back until `duration` is over; a
/// request still unanswered then is dropped and not counted.
async fn run_window(connections: &[Client], requests: &Requests, duration: Duration) -> Tally {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = connections
        .iter()
        .enumerate()
        .map(|(index, client)| {
            tokio::spawn(client_loop(
                client.clone(),
                requests.clone(),
                index,
                deadline,
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(client_tally) => tally.merge(client_tally),
            Err(error) => {
                tally.failed += 1;
                tally.first_error.get_or_insert(error.to_string());
            }
        }
    }
    tally
}

async fn client_loop(
    mut client: Client,
    requests: Requests,
    first: usize,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    // Clients start at different CSRs so they do not send the same one at
    // the same moment.
    for index in first.. {
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        let call = client.create_certificate(requests.get(index));
        match tokio::time::timeout_at(deadline, call).await {
            Err(_window_over) => break,
            Ok(Ok(_)) => tally.latencies.push(started.elapsed()),
            Ok(Err(status)) => {
                tally.failed += 1;
                tally.first_error.get_or_insert(status.to_string());
            }
        }
    }
    tally
}
