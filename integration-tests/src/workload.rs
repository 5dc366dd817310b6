//! A workload's side of certificate issuance: a real citadel (with its bus
//! and a JWT issuer) plus the token and root-cert files a pod would have
//! mounted, and the `workload-identity` client configuration that uses them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use workload_identity::CaClientConfig;

use crate::citadel::{Citadel, TestIssuer};
use crate::{NatsServer, free_port};

/// Everything a workload needs to get certificates from a running citadel.
pub struct CaFixture {
    pub citadel: Citadel,
    pub issuer: TestIssuer,
    /// The projected token (Istio's `istio-token`).
    pub token_path: PathBuf,
    /// The mounted `istio-ca-root-cert` ConfigMap's `root-cert.pem`.
    pub root_cert_path: PathBuf,
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
}

impl CaFixture {
    /// citadel with a fresh CA, and a token for `namespace/service_account`.
    pub fn start(namespace: &str, service_account: &str) -> CaFixture {
        Self::start_on(Ipv4Addr::LOCALHOST.into(), namespace, service_account)
    }

    /// Like [`CaFixture::start`] with citadel listening on `ip` (the node's
    /// address, for workloads in network namespaces).
    pub fn start_on(ip: IpAddr, namespace: &str, service_account: &str) -> CaFixture {
        let dir = tempfile::tempdir().expect("a temp dir");
        let nats = NatsServer::start();
        let issuer = TestIssuer::create(dir.path());
        let citadel = Citadel::start_at(
            (ip, free_port()).into(),
            (ip, free_port()).into(),
            &dir.path().join("ca"),
            &issuer,
            &nats.url(),
            &[],
        );
        let token_path = dir.path().join("istio-token");
        std::fs::write(&token_path, issuer.token(namespace, service_account)).unwrap();
        let root_cert_path = dir.path().join("root-cert.pem");
        std::fs::write(&root_cert_path, citadel.root_cert_pem()).unwrap();
        CaFixture {
            citadel,
            issuer,
            token_path,
            root_cert_path,
            nats,
            dir,
        }
    }

    /// How a workload reaches this citadel: by `localhost`, a name its
    /// serving certificate carries.
    pub fn client_config(&self) -> CaClientConfig {
        CaClientConfig {
            address: format!("localhost:{}", self.citadel.grpc_addr.port()),
            root_cert: self.root_cert_path.clone(),
            token_path: self.token_path.clone(),
            server_name: None,
            timeout: Duration::from_secs(5),
        }
    }

    /// Stops citadel (its clients now get connection refused).
    pub fn stop_citadel(&mut self) {
        self.citadel.stop();
    }

    /// Starts citadel again where it was, with the same CA directory (so the
    /// same root), or with another one to play a different CA.
    pub fn start_citadel(&mut self, ca_dir_name: &str) {
        self.citadel = Citadel::start_at(
            self.citadel.grpc_addr,
            self.citadel.http_addr,
            &self.dir.path().join(ca_dir_name),
            &self.issuer,
            &self.nats.url(),
            &[],
        );
    }
}
