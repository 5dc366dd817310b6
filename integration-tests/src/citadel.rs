//! A real `citadel` process for tests: its own CA directory, free ports, a
//! JWT issuer whose signing key the test holds, and a gRPC client that asks
//! it for certificates the way an agent does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

use crate::{Process, binary, eventually, free_port, http_get};

pub const JWT_ISSUER: &str = "https://issuer.trireme.test";

/// A JWT issuer for tests: an ES256 key and its JWKS file.
pub struct TestIssuer {
    key: KeyPair,
    pub jwks_path: PathBuf,
}

impl TestIssuer {
    /// Makes a key and writes its JWKS into `dir`.
    pub fn create(dir: &Path) -> TestIssuer {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = key.public_key_raw();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "test", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        let jwks_path = dir.join("jwks.json");
        std::fs::write(&jwks_path, jwks.to_string()).unwrap();
        TestIssuer { key, jwks_path }
    }

    /// A token for `ns/sa` with audience `istio-ca`, valid for ten minutes.
    pub fn token(&self, namespace: &str, service_account: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "iss": JWT_ISSUER, "aud": "istio-ca", "iat": now, "exp": now + 600,
            "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("test".into());
        let signer = EncodingKey::from_ec_der(&self.key.serialize_der());
        jsonwebtoken::encode(&header, &claims, &signer).unwrap()
    }
}

/// A running citadel.
pub struct Citadel {
    pub process: Process,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub ca_dir: PathBuf,
}

impl Citadel {
    /// Starts citadel on free ports with `ca_dir`, trusting `issuer`, with
    /// `extra_args` appended; returns once it is ready (CA loaded, bus
    /// connected), which `nats_url` must make possible.
    pub fn start(
        ca_dir: &Path,
        issuer: &TestIssuer,
        nats_url: &str,
        extra_args: &[&str],
    ) -> Citadel {
        let grpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Citadel::start_at(grpc_addr, http_addr, ca_dir, issuer, nats_url, extra_args)
    }

    /// Like [`Citadel::start`] on given addresses: a restarted citadel comes
    /// back where its clients look for it.
    pub fn start_at(
        grpc_addr: SocketAddr,
        http_addr: SocketAddr,
        ca_dir: &Path,
        issuer: &TestIssuer,
        nats_url: &str,
        extra_args: &[&str],
    ) -> Citadel {
        let mut command = Command::new(binary("citadel"));
        command
            .arg("--grpc-addr")
            .arg(grpc_addr.to_string())
            .arg("--http-addr")
            .arg(http_addr.to_string())
            .arg("--ca-dir")
            .arg(ca_dir)
            .args(["--jwt-issuer", JWT_ISSUER, "--jwks"])
            .arg(&issuer.jwks_path)
            .args(extra_args)
            .env("TRIREME_NATS_URL", nats_url);
        let process = Process::spawn("citadel", command);
        eventually("citadel to be ready", Duration::from_secs(15), || {
            http_get(http_addr, "/healthz/ready")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
        Citadel {
            process,
            grpc_addr,
            http_addr,
            ca_dir: ca_dir.to_owned(),
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        self.process.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.process.wait_for_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|status| status.success()),
            "citadel did not stop cleanly: {status:?}"
        );
    }

    /// The trust bundle citadel keeps in its CA directory.
    pub fn root_cert_pem(&self) -> String {
        std::fs::read_to_string(self.ca_dir.join("root-cert.pem")).unwrap()
    }

    /// Asks for a certificate for `id` with `token`, trusting `roots_pem` for
    /// the server; returns the PEM chain, leaf first.
    pub fn request_certificate(
        &self,
        roots_pem: &str,
        token: &str,
        id: &str,
    ) -> Result<Vec<String>, tonic::Status> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(create_certificate(self.grpc_addr, roots_pem, token, id))
    }
}

/// A PEM CSR for a fresh P-256 key asking for `id`.
pub fn csr_for(id: &str) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

async fn create_certificate(
    addr: SocketAddr,
    roots_pem: &str,
    token: &str,
    id: &str,
) -> Result<Vec<String>, tonic::Status> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    use trireme_proto::istio::v1::auth::IstioCertificateRequest;
    use trireme_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(roots_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(format!("connecting: {error:?}")))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr_for(id),
        validity_duration: 3600,
        metadata: None,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let response = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await?;
    Ok(response.into_inner().cert_chain)
}

/// `openssl verify` of `chain`'s leaf against `roots_pem`, with the
/// certificates between them as untrusted intermediates; returns whether it
/// verified and openssl's output.
pub fn openssl_verify(dir: &Path, roots_pem: &str, chain: &[String]) -> (bool, String) {
    let roots = dir.join("verify-roots.pem");
    let leaf = dir.join("verify-leaf.pem");
    let untrusted = dir.join("verify-untrusted.pem");
    std::fs::write(&roots, roots_pem).unwrap();
    std::fs::write(&leaf, &chain[0]).unwrap();
    let mut command = Command::new("openssl");
    command.arg("verify").arg("-CAfile").arg(&roots);
    if chain.len() > 2 {
        std::fs::write(&untrusted, chain[1..chain.len() - 1].concat()).unwrap();
        command.arg("-untrusted").arg(&untrusted);
    }
    let output = command.arg(&leaf).output().expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The serial number of the certificate the TLS server at `addr` presents,
/// read with `openssl s_client`.
pub fn served_certificate_serial(addr: SocketAddr) -> String {
    let script = format!(
        "openssl s_client -connect {addr} -servername localhost -alpn h2 </dev/null 2>/dev/null \
         | openssl x509 -noout -serial"
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}
