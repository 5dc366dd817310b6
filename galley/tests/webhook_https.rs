//! The webhook over real HTTPS: served with a certificate from files, seen
//! by a TLS client, reloaded when the files change (a bad new pair keeps the
//! old one), and probed by galley itself.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use galley::webhook::{Webhook, WebhookArgs};
use prometheus_client::registry::Registry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use service_runtime::{Health, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, X509Certificate};

use support::certs::{WEBHOOK_HOST, WebhookCa, cert_paths};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    webhook: WebhookArgs,
}

fn webhook_args(dir: &Path) -> WebhookArgs {
    let (cert, key) = cert_paths(dir);
    Args::try_parse_from([
        "galley",
        "--webhook-addr",
        "127.0.0.1:0",
        "--webhook-cert",
        cert.to_str().unwrap(),
        "--webhook-key",
        key.to_str().unwrap(),
        "--webhook-cert-poll-interval",
        "50ms",
        "--webhook-probe-interval",
        "200ms",
    ])
    .unwrap()
    .webhook
}

/// A client trusting `ca_pem`, checking the name as the API server does.
fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// Posts `body` to `/validate` on a new connection; returns the serial of
/// the certificate served and the HTTP response.
async fn post(connector: &TlsConnector, addr: SocketAddr, body: &[u8]) -> (String, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(WEBHOOK_HOST).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).unwrap();
    let serial = cert.raw_serial_as_string();
    let head = format!(
        "POST /validate HTTP/1.1\r\nhost: {WEBHOOK_HOST}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    (serial, response)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/admission/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_reloads_its_certificate_and_probes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = cert_paths(dir.path());
    let ca = WebhookCa::new();
    ca.issue(1).write(&cert_file, &key_file);

    let mut registry = Registry::default();
    let health = Health::default();
    let webhook =
        Webhook::register(&webhook_args(dir.path()), &mut registry, &health).expect("enabled");
    let shutdown = Shutdown::default();
    let addr = webhook.start(shutdown.clone()).await.unwrap();
    let client = connector(&ca.root_pem);

    // Served with the first certificate; the verdict comes back over TLS.
    let (serial, response) = post(&client, addr, &fixture("denied-weight.json")).await;
    assert_eq!(serial, "01");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""allowed":false"#), "{response}");
    assert!(
        response.contains("spec.http[0].route[1].weight: weight -10 is negative"),
        "{response}"
    );

    // The self-probe gets its denial: gauge 1, webhook ready.
    eventually("the self-probe to succeed", async || {
        render(&registry)
            .contains("galley_webhook_probe_success 1\n")
            .then_some(())
    })
    .await;
    let report = health.report();
    assert!(report.ready, "{}", report.to_text());

    // New files: a new connection sees the new certificate.
    ca.issue(2).write(&cert_file, &key_file);
    eventually("the new certificate to be served", async || {
        let (serial, _) = post(&client, addr, &fixture("allowed-v1.json")).await;
        (serial == "02").then_some(())
    })
    .await;

    // A mismatched pair (certificate 3, key of another) keeps 2 in service.
    let three = ca.issue(3);
    let other = ca.issue(4);
    std::fs::write(&key_file, &other.key_pem).unwrap();
    std::fs::write(&cert_file, &three.chain_pem).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (serial, response) = post(&client, addr, &fixture("allowed-v1.json")).await;
    assert_eq!(serial, "02");
    assert!(response.contains(r#""allowed":true"#), "{response}");
    // ... and the probe, which trusts exactly the served certificate, still
    // succeeds.
    assert!(render(&registry).contains("galley_webhook_probe_success 1\n"));

    shutdown.trigger();
}

#[tokio::test]
async fn not_ready_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let health = Health::default();
    let webhook =
        Webhook::register(&webhook_args(dir.path()), &mut registry, &health).expect("enabled");
    let shutdown = Shutdown::default();
    webhook.start(shutdown.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = health.report();
    assert!(!report.ready);
    assert!(
        report
            .to_text()
            .contains("[-] webhook: no successful self-probe yet"),
        "{}",
        report.to_text()
    );
    assert!(render(&registry).contains("galley_webhook_probe_success 0\n"));
    shutdown.trigger();
}
