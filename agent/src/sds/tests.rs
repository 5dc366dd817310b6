//! The SDS server in process, over its real Unix socket, with a gRPC client
//! playing Envoy and identities from the in-memory test CA.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use trireme_proto::envoy::pb::envoy::config::core::v3::Node;
use trireme_proto::envoy::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use trireme_proto::envoy::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use workload_identity::WorkloadIdentity;
use workload_identity::testing::TestCa;

use super::*;

const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";
const LIMIT: Duration = Duration::from_secs(10);

type Publisher = watch::Sender<Option<Arc<WorkloadIdentity>>>;

fn identity(ca: &TestCa) -> Arc<WorkloadIdentity> {
    Arc::new(ca.issue(ID, Duration::from_secs(3600)))
}

async fn connect(socket: &Path) -> SecretDiscoveryServiceClient<Channel> {
    let socket = socket.to_owned();
    let channel = Endpoint::from_static("http://sds.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(socket)
                    .await
                    .map(TokioIo::new)
            }
        }))
        .await
        .expect("connecting to the SDS socket");
    SecretDiscoveryServiceClient::new(channel)
}

fn sotw_request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: "sidecar~10.0.0.1~reviews-1.bookinfo~bookinfo.svc.cluster.local".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|name| name.to_string()).collect(),
        type_url: SECRET_TYPE_URL.to_owned(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    }
}

/// An open SotW stream: send requests, await responses.
struct Envoyish {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: tonic::Streaming<DiscoveryResponse>,
}

impl Envoyish {
    async fn open(socket: &Path, first: DiscoveryRequest) -> Self {
        let (requests, receiver) = mpsc::channel(4);
        requests.send(first).await.unwrap();
        let responses = connect(socket)
            .await
            .stream_secrets(ReceiverStream::new(receiver))
            .await
            .expect("stream accepted")
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    async fn next(&mut self) -> Option<DiscoveryResponse> {
        tokio::time::timeout(LIMIT, self.responses.message())
            .await
            .expect("a response in time")
            .expect("no stream error")
    }

    async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        let ack = sotw_request(names, &response.version_info, &response.nonce);
        self.requests.send(ack).await.unwrap();
    }
}

fn start(dir: &Path, identity: Option<Arc<WorkloadIdentity>>) -> (SdsServer, Publisher) {
    let (publish, identities) = watch::channel(identity);
    let server = SdsServer::start(socket_path(dir), identities).unwrap();
    (server, publish)
}

#[tokio::test]
async fn binds_istios_socket_path_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _publish) = start(dir.path(), None);
    let socket = dir
        .path()
        .join("var/run/secrets/workload-spiffe-uds/socket");
    assert_eq!(server.socket_path(), socket);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    server.shutdown().await;
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn replaces_a_stale_socket_but_not_a_live_one_or_a_plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_path(dir.path());
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file whose server is gone, as a killed agent leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let (server, _publish) = start(dir.path(), None);

    let (_, identities) = watch::channel(None);
    let error = SdsServer::start(socket.clone(), identities.clone()).unwrap_err();
    assert!(matches!(error, SdsError::InUse(_)), "{error}");
    server.shutdown().await;

    std::fs::File::create(&socket)
        .unwrap()
        .write_all(b"not a socket")
        .unwrap();
    let error = SdsServer::start(socket.clone(), identities).unwrap_err();
    assert!(matches!(error, SdsError::NotASocket(_)), "{error}");
    assert!(socket.exists(), "the file is left alone");
}

#[tokio::test]
async fn serves_both_secrets_and_pushes_a_renewal_on_the_open_stream() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = identity(&ca);
    let (server, publish) = start(dir.path(), Some(first.clone()));
    let names = [WORKLOAD_CERTIFICATE, ROOT_CA];
    let mut envoy = Envoyish::open(server.socket_path(), sotw_request(&names, "", "")).await;

    let response = envoy.next().await.unwrap();
    assert_eq!(response.version_info, first.serial());
    assert_eq!(response.resources.len(), 2);
    envoy.ack(&response, &names).await;

    let second = identity(&ca);
    publish.send_replace(Some(second.clone()));
    let pushed = envoy.next().await.unwrap();
    assert_eq!(pushed.version_info, second.serial());
    assert_ne!(pushed.nonce, response.nonce);
    let expected = resources::SecretSnapshot::from_identity(&second);
    assert!(
        pushed
            .resources
            .contains(&expected.get(WORKLOAD_CERTIFICATE).unwrap().packed)
    );
    envoy.ack(&pushed, &names).await;

    // Shutting down ends the stream cleanly instead of leaving it hanging.
    tokio::time::timeout(LIMIT, server.shutdown())
        .await
        .expect("shutdown in time");
    assert!(envoy.next().await.is_none());
}

#[tokio::test]
async fn a_stream_opened_before_the_first_certificate_gets_it_on_arrival() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (server, publish) = start(dir.path(), None);
    let mut envoy = Envoyish::open(
        server.socket_path(),
        sotw_request(&[WORKLOAD_CERTIFICATE], "", ""),
    )
    .await;
    let first = identity(&ca);
    publish.send_replace(Some(first.clone()));
    let response = envoy.next().await.unwrap();
    assert_eq!(response.version_info, first.serial());
    assert_eq!(response.resources.len(), 1);
}

#[tokio::test]
async fn delta_streams_send_only_what_changed() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (server, publish) = start(dir.path(), Some(identity(&ca)));
    let (requests, receiver) = mpsc::channel(4);
    requests
        .send(DeltaDiscoveryRequest {
            type_url: SECRET_TYPE_URL.to_owned(),
            resource_names_subscribe: vec![WORKLOAD_CERTIFICATE.into(), ROOT_CA.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut responses = connect(server.socket_path())
        .await
        .delta_secrets(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    assert_eq!(first.resources.len(), 2);
    requests
        .send(DeltaDiscoveryRequest {
            type_url: SECRET_TYPE_URL.to_owned(),
            response_nonce: first.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let renewed = identity(&ca);
    publish.send_replace(Some(renewed.clone()));
    let pushed = tokio::time::timeout(LIMIT, responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = pushed.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, [WORKLOAD_CERTIFICATE], "same root, not resent");
    assert_eq!(pushed.resources[0].version, renewed.serial());
}

#[tokio::test]
async fn fetch_answers_once_a_certificate_is_there() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (server, publish) = start(dir.path(), None);
    let mut client = connect(server.socket_path()).await;
    let status = client
        .fetch_secrets(sotw_request(&[ROOT_CA], "", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    publish.send_replace(Some(identity(&ca)));
    let response = client
        .fetch_secrets(sotw_request(&[ROOT_CA], "", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.resources.len(), 1);
}

/// Collects everything logged, at every level and from every crate.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn no_log_line_carries_the_private_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not a scoped default: a callsite first reached by another test
    // thread (with no subscriber) would otherwise stay cached as "never
    // interested", and this test would miss the very lines it checks. Other
    // tests' lines may land in the capture too; the checks allow for that.
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other test sets a global subscriber");

    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let first = identity(&ca);
    let (server, publish) = start(dir.path(), Some(first.clone()));
    let names = [WORKLOAD_CERTIFICATE, ROOT_CA];
    let mut envoy = Envoyish::open(server.socket_path(), sotw_request(&names, "", "")).await;
    let response = envoy.next().await.unwrap();
    // A NACK is logged with its details; the renewal after it too.
    let mut nack = sotw_request(&names, "", &response.nonce);
    nack.error_detail = Some(trireme_proto::envoy::pb::google::rpc::Status {
        code: 3,
        message: "Failed to load private key".into(),
        details: Vec::new(),
    });
    envoy.requests.send(nack).await.unwrap();
    let logged = |text: &str| String::from_utf8_lossy(&captured.0.lock().unwrap()).contains(text);
    tokio::time::timeout(LIMIT, async {
        while !logged("Envoy rejected the secrets") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the NACK is logged");
    let second = identity(&ca);
    publish.send_replace(Some(second.clone()));
    envoy.next().await.unwrap();
    server.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("pushing secrets"), "{logs}");
    assert!(logs.contains("Failed to load private key"), "{logs}");
    for identity in [&first, &second] {
        let key_body: Vec<&str> = identity
            .private_key()
            .pem()
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        for line in key_body {
            assert!(!logs.contains(line), "key material logged:\n{logs}");
        }
    }
    assert!(!logs.contains("PRIVATE KEY"), "{logs}");
}
