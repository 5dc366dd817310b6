//! The citadel under test: the real binary as a separate process on free
//! loopback ports, with a fresh CA directory and a JWT issuer whose JWKS file
//! this bench writes.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;

use crate::load::{self, Target, Workload};

const ISSUER: &str = "https://issuer.bench.invalid";
/// citadel's default `--jwt-audience`.
const AUDIENCE: &str = "istio-ca";
const KEY_ID: &str = "bench";
/// The identity every bench client proves; its CSRs ask for the same.
pub const WORKLOAD_ID: &str = "spiffe://cluster.local/ns/bench/sa/loadgen";
const SUBJECT: &str = "system:serviceaccount:bench:loadgen";
/// Long enough for a full run; citadel checks `exp` on every request.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Creating the root and the serving certificate is quick; this only bounds
/// a citadel that never comes up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// An ES256 JWT issuer: the key signs tokens, its JWKS file goes to citadel.
pub struct JwtIssuer {
    key: KeyPair,
    jwks_path: PathBuf,
}

impl JwtIssuer {
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the JWT signing key")?;
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks(&key)?.to_string())
            .with_context(|| format!("writing {}", jwks_path.display()))?;
        Ok(Self { key, jwks_path })
    }

    /// A token for `SUBJECT`, valid for `TOKEN_LIFETIME`.
    pub fn token(&self) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT,
            "iat": now, "exp": now + TOKEN_LIFETIME.as_secs(),
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KEY_ID.into());
        let signer = EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &signer).context("signing the JWT")
    }
}

/// The public half of `key` as a one-key JWKS document.
fn jwks(key: &KeyPair) -> anyhow::Result<serde_json::Value> {
    let point = key.public_key_raw();
    // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
    if point.len() != 65 {
        bail!("unexpected P-256 public key of {} bytes", point.len());
    }
    Ok(serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": KEY_ID, "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]}))
}

/// A running citadel, killed when dropped.
pub struct Citadel {
    child: Child,
    grpc_addr: SocketAddr,
    root_cert_pem: String,
    log_path: PathBuf,
}

impl Citadel {
    /// Starts citadel in `work` and waits until its CA directory is complete.
    pub fn start(work: &Path, issuer: &JwtIssuer) -> anyhow::Result<Self> {
        let [grpc_port, http_port, nats_port] = free_ports()?;
        let ca_dir = work.join("ca");
        let log_path = work.join("citadel.log");
        let log = File::create(&log_path).context("creating citadel's log file")?;
        let grpc_addr = SocketAddr::from(([127, 0, 0, 1], grpc_port));
        let child = Command::new(env!("CARGO_BIN_EXE_citadel"))
            // Only what is set below, so the caller's TRIREME_* cannot change
            // what is measured.
            .env_clear()
            // citadel does not need the bus to sign; a port nobody listens on
            // keeps it from joining whatever NATS this machine may run.
            .env("TRIREME_NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--ca-dir")
            .arg(&ca_dir)
            .args(["--jwt-issuer", ISSUER])
            .arg("--jwks")
            .arg(&issuer.jwks_path)
            .args(["--server-dns-names", "localhost"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting citadel")?;
        let mut citadel = Self {
            child,
            grpc_addr,
            root_cert_pem: String::new(),
            log_path,
        };
        citadel.root_cert_pem = citadel.wait_for_root(&ca_dir)?;
        Ok(citadel)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn root_cert_pem(&self) -> &str {
        &self.root_cert_pem
    }

    /// `ca-cert.pem` is written last, so once it exists the root is whole.
    fn wait_for_root(&mut self, ca_dir: &Path) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !ca_dir.join("ca-cert.pem").exists() {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("no CA in {} after {START_TIMEOUT:?}", ca_dir.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let root = ca_dir.join("root-cert.pem");
        std::fs::read_to_string(&root).with_context(|| format!("reading {}", root.display()))
    }

    /// Waits until a real CreateCertificate succeeds: the gRPC port accepts
    /// TLS and the whole signing path works (citadel's readiness would also
    /// wait for NATS, which signing does not need).
    pub async fn wait_until_serving(
        &mut self,
        target: &Target,
        workload: &Workload,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_running()?;
            match load::probe(target, workload).await {
                Ok(()) => return Ok(()),
                Err(error) if Instant::now() > deadline => {
                    return Err(error.context(self.log_tail()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("citadel exited ({status}):\n{}", self.log_tail()),
            None => Ok(()),
        }
    }

    /// The end of citadel's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Citadel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distinct loopback ports free right now: all are bound at once so they
/// differ, then released for citadel to bind.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free ports")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
