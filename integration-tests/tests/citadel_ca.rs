//! The citadel binary as an operator runs it: its root survives a restart,
//! its trust bundle is on the bus, a plug-in CA replaced on disk and its own
//! serving certificate are both picked up while it keeps running.

use std::path::Path;
use std::time::Duration;

use citadel::authority::{ROOT_CERT_FILE, RootKey, create_self_signed_root};
use citadel::trust_bundle::{TRUST_BUNDLE_BUCKET, TrustBundle};
use event_bus::{BucketConfig, Bus};
use integration_tests::citadel::{Citadel, TestIssuer, openssl_verify, served_certificate_serial};
use integration_tests::{NatsServer, eventually};
use nix::sys::signal::Signal;

const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

fn stop(mut citadel: Citadel) {
    citadel.process.signal(Signal::SIGTERM);
    let status = citadel.process.wait_for_exit(Duration::from_secs(5));
    assert!(status.is_some_and(|status| status.success()), "{status:?}");
}

#[test]
fn a_restarted_citadel_keeps_its_root_and_the_old_bundle_verifies_new_leaves() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::create(dir.path());
    let ca_dir = dir.path().join("ca");

    let first = Citadel::start(&ca_dir, &issuer, &nats.url(), &[]);
    let old_bundle = first.root_cert_pem();
    let token = issuer.token("bookinfo", "reviews");
    let before = first.request_certificate(&old_bundle, &token, ID).unwrap();
    stop(first);

    let second = Citadel::start(&ca_dir, &issuer, &nats.url(), &[]);
    assert_eq!(
        second.root_cert_pem(),
        old_bundle,
        "root kept across the restart"
    );
    let after = second
        .request_certificate(&old_bundle, &token, ID)
        .expect("the old bundle still trusts the server");
    assert_ne!(before[0], after[0], "a fresh leaf");
    let (verified, output) = openssl_verify(dir.path(), &old_bundle, &after);
    assert!(verified, "{output}");
}

#[test]
fn the_trust_bundle_is_published_on_the_bus() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::create(dir.path());
    let citadel = Citadel::start(&dir.path().join("ca"), &issuer, &nats.url(), &[]);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let published = runtime.block_on(async {
        let bus = Bus::connect(nats.url(), "test-reader").await.unwrap();
        let bucket = bus
            .kv_bucket::<TrustBundle>(BucketConfig::new(TRUST_BUNDLE_BUCKET))
            .await
            .unwrap();
        for _ in 0..100 {
            if let Some((bundle, _)) = bucket.get("cluster.local").await.unwrap() {
                return bundle;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no trust bundle under cluster.local in bucket {TRUST_BUNDLE_BUCKET}");
    });
    assert_eq!(published.trust_domain, "cluster.local");
    assert_eq!(published.roots.concat(), citadel.root_cert_pem());
}

fn write_ca(dir: &Path, organization: &str) {
    create_self_signed_root(organization, RootKey::GenerateEcdsaP256)
        .unwrap()
        .write_to(dir)
        .unwrap();
}

#[test]
fn replacing_the_plugin_ca_files_takes_effect_without_a_restart() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::create(dir.path());
    let (ca_dir, replacement) = (dir.path().join("cacerts"), dir.path().join("replacement"));
    write_ca(&ca_dir, "first operator CA");
    write_ca(&replacement, "second operator CA");
    let citadel = Citadel::start(
        &ca_dir,
        &issuer,
        &nats.url(),
        &["--ca-reload-interval", "200ms"],
    );
    let first_root = citadel.root_cert_pem();
    let token = issuer.token("bookinfo", "reviews");
    let chain = citadel
        .request_certificate(&first_root, &token, ID)
        .unwrap();
    assert_eq!(chain.last().unwrap(), &first_root);

    for file in [
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
        "ca-cert.pem",
    ] {
        std::fs::copy(replacement.join(file), ca_dir.join(file)).unwrap();
    }
    let second_root = std::fs::read_to_string(replacement.join(ROOT_CERT_FILE)).unwrap();
    // The serving certificate is reissued by the new CA too, so the client
    // now trusts the new root.
    let chain = eventually(
        "citadel to sign with the new CA",
        Duration::from_secs(10),
        || {
            citadel
                .request_certificate(&second_root, &token, ID)
                .ok()
                .filter(|chain| chain.last() == Some(&second_root))
        },
    );
    let (verified, output) = openssl_verify(dir.path(), &second_root, &chain);
    assert!(verified, "{output}");
    let (verified, _) = openssl_verify(dir.path(), &first_root, &chain);
    assert!(!verified, "the old root does not vouch for the new leaf");
}

#[test]
fn the_serving_certificate_is_renewed_while_citadel_runs() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::create(dir.path());
    let citadel = Citadel::start(
        &dir.path().join("ca"),
        &issuer,
        &nats.url(),
        &["--server-cert-ttl", "4s"],
    );
    let first = served_certificate_serial(citadel.grpc_addr);
    assert!(first.starts_with("serial="), "{first:?}");
    let renewed = eventually(
        "a renewed serving certificate",
        Duration::from_secs(10),
        || Some(served_certificate_serial(citadel.grpc_addr)).filter(|serial| *serial != first),
    );
    assert!(renewed.starts_with("serial="), "{renewed:?}");
    let bundle = citadel.root_cert_pem();
    let token = issuer.token("bookinfo", "reviews");
    citadel
        .request_certificate(&bundle, &token, ID)
        .expect("still serving with the renewed certificate");
}
