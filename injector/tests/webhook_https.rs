//! The injection webhook over real HTTPS: served with a certificate from
//! files, answered to a client that trusts it, and the certificate replaced
//! on disk picked up by new connections.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use admission_webhook::HttpsArgs;
use clap::Parser;
use injector::webhook::{self, InjectionMetrics};
use injector::{Injector, InjectorConfig, SidecarTemplate};
use prometheus_client::registry::Registry;
use serde_json::Value;
use service_runtime::Shutdown;
use x509_parser::prelude::{FromDer, X509Certificate};

use support::certs::{SelfSigned, cert_paths, client, url};
use support::reviews::{names, patch_of, patched, pod_create, typical_pod};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    webhook: HttpsArgs,
}

/// A free local port, the certificate files in `dir`, and a 50 ms poll so
/// a replaced certificate is seen within the test's patience.
fn https_args(dir: &Path) -> HttpsArgs {
    let (cert, key) = cert_paths(dir);
    Args::try_parse_from([
        "injector",
        "--webhook-addr",
        "127.0.0.1:0",
        "--webhook-cert",
        cert.to_str().unwrap(),
        "--webhook-key",
        key.to_str().unwrap(),
        "--webhook-cert-poll-interval",
        "50ms",
    ])
    .unwrap()
    .webhook
}

/// Posts `body` to `/inject` on a new connection trusting `trusted`;
/// returns the serial of the certificate served and the answer.
async fn post(trusted: &[&SelfSigned], addr: SocketAddr, body: &Value) -> (String, Value) {
    let response = client(trusted, addr)
        .post(url(addr, "/inject"))
        .json(body)
        .send()
        .await
        .expect("an HTTPS answer");
    assert!(response.status().is_success(), "{}", response.status());
    let tls = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS information");
    let leaf = tls.peer_certificate().expect("a peer certificate");
    let (_, cert) = X509Certificate::from_der(leaf).expect("an X.509 certificate");
    let serial = cert.raw_serial_as_string();
    (serial, response.json().await.expect("a JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injects_over_https_and_picks_up_a_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = cert_paths(dir.path());
    let first = SelfSigned::new(1);
    first.write(&cert_file, &key_file);

    let injector = Injector::new(InjectorConfig::default(), SidecarTemplate::built_in());
    let metrics = InjectionMetrics::new(&mut Registry::default());
    let shutdown = Shutdown::default();
    let (addr, mut serving) = webhook::start(
        &https_args(dir.path()),
        Arc::new(injector),
        metrics,
        shutdown.clone(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), serving.wait_for(Option::is_some))
        .await
        .expect("the first certificate served within 5 s")
        .unwrap();

    // The injected answer comes back over TLS with the first certificate.
    let pod = typical_pod();
    let (serial, answer) = post(&[&first], addr, &pod_create("uid-tls", pod.clone())).await;
    assert_eq!(serial, "01");
    assert_eq!(answer["response"]["uid"], "uid-tls");
    let injected = patched(&pod, &patch_of(&answer).expect("a patch"));
    assert_eq!(names(&injected, "containers"), ["reviews", "istio-proxy"]);

    // New files: a new connection is handshaken with the new certificate.
    let second = SelfSigned::new(2);
    second.write(&cert_file, &key_file);
    let mut seen = serial;
    for _ in 0..100 {
        (seen, _) = post(&[&first, &second], addr, &pod_create("uid-2", pod.clone())).await;
        if seen == "02" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen, "02",
        "the replaced certificate was not served within 5 s"
    );
    let served = serving.borrow().clone().map(|cert| cert.serial);
    assert_eq!(served.as_deref(), Some("02"));

    shutdown.trigger();
}
