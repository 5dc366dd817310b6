//! xDS over mutual TLS with real parts: citadel issues pilot's serving
//! certificate and the sidecar's client certificate; an agent with
//! `MUTUAL_TLS` gets its Envoy configured through pilot's TLS port; clients
//! without a mesh certificate are refused by pilot, a proxy gets config only
//! for the namespace its certificate proves, and a pilot with the wrong
//! identity is refused by the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use integration_tests::agent::{Agent, AgentWorkload};
use integration_tests::config_dir::ConfigDir;
use integration_tests::eventually;
use integration_tests::pilot::Pilot;
use integration_tests::workload::CaFixture;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use workload_identity::testing::TestCa;
use workload_identity::{CaClient, CertificateManager, ManagerConfig, WorkloadIdentity};

const CATALOG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: catalog, namespace: shop }
spec:
  hosts: [catalog.shop.svc.cluster.local]
  addresses: [10.10.0.1]
  ports: [{ number: 80, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.21 }]
"#;

fn workload(pod: &'static str, ip: &'static str) -> AgentWorkload<'static> {
    AgentWorkload {
        pod,
        namespace: "shop",
        ip,
        service_account: "client",
        labels: "app=client",
    }
}

/// The mesh (citadel, pilot with its TLS port) every test here starts from.
struct Mesh {
    _config: ConfigDir,
    ca: CaFixture,
    pilot: Pilot,
    tls_addr: SocketAddr,
}

impl Mesh {
    /// A certificate from the mesh's citadel for `shop/client`.
    async fn client_certificate(&self) -> Arc<WorkloadIdentity> {
        let manager = CertificateManager::start(
            ManagerConfig::new("spiffe://cluster.local/ns/shop/sa/client"),
            CaClient::new(self.ca.client_config()).unwrap(),
        )
        .unwrap();
        tokio::time::timeout(Duration::from_secs(10), manager.ready())
            .await
            .expect("a certificate from citadel")
    }
}

fn mesh() -> Mesh {
    let config = ConfigDir::new();
    config.write("catalog.yaml", CATALOG);
    let ca = CaFixture::start("shop", "client");
    let pilot = Pilot::start_with_tls(config.path(), &ca);
    let tls_addr = pilot.xds_tls_addr.expect("started with TLS");
    let (_, ready) = pilot.get("/healthz/ready");
    assert!(
        ready.contains("[+] xds-tls: serving certificate"),
        "pilot's readiness: {ready}"
    );
    Mesh {
        _config: config,
        ca,
        pilot,
        tls_addr,
    }
}

#[test]
fn a_mutual_tls_sidecar_gets_its_config_from_pilots_tls_port() {
    let mesh = mesh();
    let root = tempfile::tempdir().unwrap();
    let mut agent = Agent::start_mtls(
        root.path(),
        &workload("client-1", "127.0.0.20"),
        mesh.tls_addr,
        &mesh.ca,
        &[],
    );
    agent.wait_ready(Duration::from_secs(30));
    eventually(
        "pilot to see the sidecar in sync",
        Duration::from_secs(10),
        || mesh.pilot.in_sync(&agent.node_id).then_some(()),
    );
    let (_, clusters) = agent.envoy_admin("/clusters").unwrap();
    assert!(
        clusters.contains("outbound|80||catalog.shop.svc.cluster.local"),
        "{clusters}"
    );
}

#[test]
fn pilots_tls_port_refuses_clients_without_a_mesh_certificate() {
    let mesh = mesh();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mesh_identity = runtime.block_on(mesh.client_certificate());
    let stranger = TestCa::new().issue(
        "spiffe://cluster.local/ns/shop/sa/client",
        Duration::from_secs(3600),
    );

    // The same client code is let in with a mesh certificate: the refusals
    // below are about the certificate, not the client.
    let answer = runtime.block_on(h2_answer(mesh.tls_addr, Some(&mesh_identity)));
    assert!(answer.is_ok(), "mesh certificate refused: {answer:?}");
    let answer = runtime.block_on(h2_answer(mesh.tls_addr, None));
    assert!(answer.is_err(), "no certificate let in: {answer:?}");
    let answer = runtime.block_on(h2_answer(mesh.tls_addr, Some(&stranger)));
    assert!(
        answer.is_err(),
        "another CA's certificate let in: {answer:?}"
    );
}

#[test]
fn a_proxy_gets_config_only_for_the_namespace_its_certificate_proves() {
    let mesh = mesh();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let shop_client = runtime.block_on(mesh.client_certificate());
    let own = "sidecar~127.0.0.20~client-1.shop~shop.svc.cluster.local";
    let answer = runtime.block_on(first_ads_answer(mesh.tls_addr, &shop_client, own));
    assert!(answer.is_ok(), "its own namespace refused: {answer:?}");

    let claimed = "sidecar~127.0.0.20~payments-1.payments~payments.svc.cluster.local";
    let refused = runtime
        .block_on(first_ads_answer(mesh.tls_addr, &shop_client, claimed))
        .expect_err("a shop certificate must not get payments' config");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("ns/shop"),
        "{}",
        refused.message()
    );
}

#[test]
fn the_agent_refuses_a_pilot_with_another_identity() {
    let mesh = mesh();
    let root = tempfile::tempdir().unwrap();
    let expected = "spiffe://cluster.local/ns/istio-system/sa/not-pilot";
    let agent = Agent::start_mtls(
        root.path(),
        &workload("client-2", "127.0.0.30"),
        mesh.tls_addr,
        &mesh.ca,
        &["--discovery-san", expected],
    );
    // The agent says why, and says it again on retries.
    eventually(
        "the agent to log that pilot's certificate names someone else",
        Duration::from_secs(20),
        || {
            let log = agent.log_tail(200);
            (log.contains("not the expected") && log.contains(expected)).then_some(())
        },
    );
    assert!(
        mesh.pilot.sync_status(&agent.node_id).is_none(),
        "pilot served a proxy that refused it"
    );
    let readiness = agent.status("/healthz/ready");
    assert!(
        !matches!(readiness, Ok((200, _))),
        "the proxy is ready without config: {readiness:?}"
    );
}

/// Handshakes with pilot's TLS port presenting `client` (or no certificate),
/// opens HTTP/2 and returns how many bytes pilot answered with. Under TLS
/// 1.3 the server's refusal of a client certificate arrives after the
/// client's side of the handshake, so it shows on the first read.
async fn h2_answer(
    addr: SocketAddr,
    client: Option<&WorkloadIdentity>,
) -> Result<usize, std::io::Error> {
    let config = client_config(client);
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("pilot").unwrap(), tcp)
            .await?;
        // The HTTP/2 client preface and an empty SETTINGS frame.
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await?;
        tls.flush().await?;
        let mut buffer = [0u8; 64];
        match tls.read(&mut buffer).await? {
            0 => Err(std::io::Error::other("closed without an answer")),
            n => Ok(n),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 10s"))?
}

/// TLS settings presenting `client` (or no certificate), taking any server.
fn client_config(client: Option<&WorkloadIdentity>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match client {
        Some(identity) => {
            let chain = identity
                .chain()
                .iter()
                .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                .collect();
            let key =
                PrivateKeyDer::from_pem_slice(identity.private_key().pem().as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Opens ADS on pilot's TLS port presenting `client`, sends a CDS request
/// from node `node_id`, and returns pilot's first answer.
async fn first_ads_answer(
    addr: SocketAddr,
    client: &WorkloadIdentity,
    node_id: &str,
) -> Result<DiscoveryResponse, tonic::Status> {
    let config = Arc::new(client_config(Some(client)));
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("pilot").unwrap(), tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://pilot")
        .connect_with_connector(connector)
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = DiscoveryRequest {
        node: Some(Node {
            id: node_id.to_owned(),
            ..Node::default()
        }),
        type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
        ..DiscoveryRequest::default()
    };
    // Keep the request side open, as Envoy does.
    let requests = futures::stream::iter([request]).chain(futures::stream::pending());
    let answer = async {
        let mut responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(requests)
            .await?
            .into_inner();
        responses
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("the stream ended without an answer"))
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no answer within 10s"))?
}

/// These tests are about pilot's check of clients, so this client takes any
/// server.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
