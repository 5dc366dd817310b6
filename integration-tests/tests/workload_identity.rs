//! A workload's certificate manager against the real citadel binary: first
//! issuance, renewal by client certificate, rotation of short-lived
//! certificates, and riding out a citadel outage.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration_tests::citadel::openssl_verify;
use integration_tests::workload::CaFixture;
use workload_identity::{
    BackoffPolicy, CaClient, CertificateManager, KeyType, ManagerConfig, RotationPolicy,
    RsaKeySize, WorkloadIdentity,
};

const ID: &str = "spiffe://cluster.local/ns/bookinfo/sa/reviews";

fn config(ttl: Duration) -> ManagerConfig {
    ManagerConfig {
        ttl,
        // Retries capped at 1 s so an outage of a few seconds is bridged
        // within a second of citadel's return.
        backoff: BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        },
        ..ManagerConfig::new(ID)
    }
}

/// The manager's own logs, on stderr when `TRIREME_TEST_LOGS=1` asks for
/// the processes' output too.
fn show_logs() {
    if std::env::var_os("TRIREME_TEST_LOGS").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("workload_identity=debug")
            .with_test_writer()
            .try_init();
    }
}

/// A manager on its own runtime, so the test thread can block on citadel.
struct Workload {
    manager: CertificateManager,
    runtime: tokio::runtime::Runtime,
}

impl Workload {
    fn start(fixture: &CaFixture, config: ManagerConfig) -> Workload {
        show_logs();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let ca = CaClient::new(fixture.client_config()).unwrap();
        let manager = {
            let _entered = runtime.enter();
            CertificateManager::start(config, ca).unwrap()
        };
        Workload { manager, runtime }
    }

    fn wait_ready(&self, limit: Duration) -> Arc<WorkloadIdentity> {
        self.runtime
            .block_on(async { tokio::time::timeout(limit, self.manager.ready()).await })
            .expect("a certificate in time")
    }

    /// The next identity after `previous`, within `limit`.
    fn wait_next(&self, previous: &WorkloadIdentity, limit: Duration) -> Arc<WorkloadIdentity> {
        let mut identities = self.manager.subscribe();
        let serial = previous.serial().to_owned();
        self.runtime.block_on(async {
            let next = tokio::time::timeout(
                limit,
                identities.wait_for(|current| {
                    current
                        .as_ref()
                        .is_some_and(|identity| identity.serial() != serial)
                }),
            )
            .await
            .unwrap_or_else(|_| panic!("no certificate after {serial} within {limit:?}"))
            .expect("manager running");
            next.clone().unwrap()
        })
    }
}

/// `openssl x509` on the leaf with `args`.
fn openssl_x509(identity: &WorkloadIdentity, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &identity.chain()[0]).unwrap();
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(&leaf)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn assert_issued_by(fixture: &CaFixture, identity: &WorkloadIdentity) {
    let root = fixture.citadel.root_cert_pem();
    let (verified, output) = openssl_verify(fixture.dir.path(), &root, identity.chain());
    assert!(verified, "{output}");
    let text = openssl_x509(identity, &["-ext", "subjectAltName"]);
    assert!(text.contains(&format!("URI:{ID}")), "{text}");
    let serial = openssl_x509(identity, &["-serial"]);
    assert_eq!(
        serial
            .trim()
            .trim_start_matches("serial=")
            .trim_start_matches('0'),
        identity.serial().to_uppercase(),
    );
}

#[test]
fn first_issuance_gives_a_verified_p256_certificate_and_the_trust_bundle() {
    let fixture = CaFixture::start("bookinfo", "reviews");
    let workload = Workload::start(&fixture, config(Duration::from_secs(3600)));
    let identity = workload.wait_ready(Duration::from_secs(10));

    assert_issued_by(&fixture, &identity);
    let text = openssl_x509(&identity, &["-text"]);
    assert!(text.contains("prime256v1"), "{text}");
    assert_eq!(identity.trust_bundle(), [fixture.citadel.root_cert_pem()]);
    let lifetime = identity.lifetime().as_secs();
    assert!(
        (3590..=3600).contains(&lifetime),
        "asked for 1 h, got {lifetime} s"
    );
}

#[test]
fn an_rsa_key_is_used_when_asked_for() {
    let fixture = CaFixture::start("bookinfo", "reviews");
    let config = ManagerConfig {
        key_type: KeyType::Rsa(RsaKeySize::Bits2048),
        ..config(Duration::from_secs(3600))
    };
    let workload = Workload::start(&fixture, config);
    let identity = workload.wait_ready(Duration::from_secs(30));
    assert_issued_by(&fixture, &identity);
    let text = openssl_x509(&identity, &["-text"]);
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("rsaEncryption"), "{text}");
}

#[test]
fn short_lived_certificates_are_rotated_by_client_certificate_renewal() {
    let fixture = CaFixture::start("bookinfo", "reviews");
    let config = ManagerConfig {
        rotation: RotationPolicy::DEFAULT,
        ..config(Duration::from_secs(4))
    };
    let workload = Workload::start(&fixture, config);
    let first = workload.wait_ready(Duration::from_secs(10));
    // Without the token only the current certificate can vouch for us.
    std::fs::remove_file(&fixture.token_path).unwrap();

    let started = Instant::now();
    let mut serials = vec![first.serial().to_owned()];
    let mut current = first;
    while started.elapsed() < Duration::from_millis(6500) {
        let next = workload.wait_next(&current, Duration::from_secs(4));
        assert_issued_by(&fixture, &next);
        eprintln!(
            "rotation {} after {:?} (lifetime {:?})",
            serials.len(),
            started.elapsed(),
            current.lifetime()
        );
        serials.push(next.serial().to_owned());
        current = next;
    }
    assert!(serials.len() >= 3, "rotations in 6.5 s: {serials:?}");
    serials.dedup();
    assert!(serials.len() >= 3, "each rotation is a new certificate");
}

#[test]
fn keeps_its_certificate_while_citadel_is_down_and_renews_once_it_is_back() {
    let mut fixture = CaFixture::start("bookinfo", "reviews");
    let workload = Workload::start(&fixture, config(Duration::from_secs(10)));
    let first = workload.wait_ready(Duration::from_secs(10));
    let issued = Instant::now();
    fixture.stop_citadel();

    // The renewal falls due after ~5 s; by 7 s it has failed for 2 s.
    std::thread::sleep(Duration::from_secs(7).saturating_sub(issued.elapsed()));
    let held = workload.manager.current().unwrap();
    assert_eq!(held.serial(), first.serial(), "still serving the old one");

    fixture.start_citadel("ca");
    let back = Instant::now();
    let renewed = workload.wait_next(&first, Duration::from_secs(5));
    eprintln!(
        "renewed {:?} after citadel was ready again ({:?} after first issuance)",
        back.elapsed(),
        issued.elapsed()
    );
    assert!(
        first.is_valid_at(std::time::SystemTime::now()),
        "bridged before expiry"
    );
    assert_issued_by(&fixture, &renewed);
}

#[test]
fn falls_back_to_the_token_when_the_ca_no_longer_accepts_the_certificate() {
    let mut fixture = CaFixture::start("bookinfo", "reviews");
    let workload = Workload::start(&fixture, config(Duration::from_secs(6)));
    let first = workload.wait_ready(Duration::from_secs(10));
    let old_root = fixture.citadel.root_cert_pem();

    // A new CA at the same address: it cannot verify the current
    // certificate, and the mounted root-cert file now names its root.
    fixture.stop_citadel();
    fixture.start_citadel("other-ca");
    let new_root = fixture.citadel.root_cert_pem();
    assert_ne!(new_root, old_root);
    std::fs::write(&fixture.root_cert_path, &new_root).unwrap();

    let renewed = workload.wait_next(&first, Duration::from_secs(10));
    assert_eq!(renewed.chain().last().unwrap(), &new_root);
    assert_eq!(renewed.trust_bundle(), [new_root]);
    assert_issued_by(&fixture, &renewed);
}
