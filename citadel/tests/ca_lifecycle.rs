//! The authority changes under a running citadel: a plug-in CA directory
//! whose files are replaced, a directory that is broken mid-copy, a rotation
//! step interrupted by a crash, and the serving certificate renewed, all
//! without a restart.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use citadel::authority::{
    Authority, CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE, RootKey, SigningPolicy,
};
use citadel::csr::VerifiedCsr;
use citadel::reload::{AuthorityWatcher, RootRotation};
use citadel::rotation::{NEXT_CA_KEY_FILE, RotationPolicy, RotationStep, advance};
use citadel::server::ServingTls;
use time::OffsetDateTime;

const PLUGIN_FILES: [&str; 4] = [CA_CERT_FILE, CA_KEY_FILE, ROOT_CERT_FILE, CERT_CHAIN_FILE];

fn copy_plugin_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in PLUGIN_FILES {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

fn sign(authority: &Authority) -> Vec<String> {
    let csr = support::p256_csr(&[support::WORKLOAD_ID]);
    let csr = VerifiedCsr::from_pem(csr.as_bytes()).unwrap();
    authority
        .sign(&csr, &support::WORKLOAD_ID.parse().unwrap(), None)
        .unwrap()
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap()
}

#[test]
fn replacing_plugin_ca_files_changes_the_signing_ca_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second, live) = (
        dir.path().join("first"),
        dir.path().join("second"),
        dir.path().join("live"),
    );
    for ca in [&first, &second] {
        std::fs::create_dir(ca).unwrap();
        support::openssl_plugin_ca(ca);
    }
    copy_plugin_files(&first, &live);
    let mut watcher = AuthorityWatcher::start(&live, SigningPolicy::default(), None).unwrap();
    let following = watcher.subscribe();

    let chain = sign(&following.borrow());
    assert_eq!(chain[1], read(&first, CA_CERT_FILE));
    assert!(
        !watcher.check(OffsetDateTime::now_utc()).unwrap(),
        "nothing changed yet"
    );

    copy_plugin_files(&second, &live);
    assert!(watcher.check(OffsetDateTime::now_utc()).unwrap());
    let chain = sign(&following.borrow());
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(chain[1], read(&second, CA_CERT_FILE));
    let root = support::write(
        dir.path(),
        "second-root.pem",
        &read(&second, ROOT_CERT_FILE),
    );
    let verified = support::openssl_verify(dir.path(), &root, &chain);
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
}

#[test]
fn a_broken_directory_never_replaces_a_working_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (other, live) = (dir.path().join("other"), dir.path().join("live"));
    std::fs::create_dir_all(&other).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    support::openssl_plugin_ca(&live);
    support::openssl_plugin_ca(&other);
    let mut watcher = AuthorityWatcher::start(&live, SigningPolicy::default(), None).unwrap();
    let before = read(&live, CA_CERT_FILE);

    // Half-way through a copy: the new certificate, still the old key.
    std::fs::copy(other.join(CA_CERT_FILE), live.join(CA_CERT_FILE)).unwrap();
    let error = watcher.check(OffsetDateTime::now_utc()).unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
    assert_eq!(
        sign(&watcher.current())[1],
        before,
        "still signing with the old CA"
    );

    // Garbage is refused the same way, naming the file.
    std::fs::write(live.join(CA_CERT_FILE), "not a certificate").unwrap();
    let error = watcher.check(OffsetDateTime::now_utc()).unwrap_err();
    assert!(error.to_string().contains(CA_CERT_FILE), "{error}");
    assert_eq!(sign(&watcher.current())[1], before);

    // The copy completes: the new CA is taken.
    copy_plugin_files(&other, &live);
    assert!(watcher.check(OffsetDateTime::now_utc()).unwrap());
    assert_eq!(sign(&watcher.current())[1], read(&other, CA_CERT_FILE));
}

fn immediate_rotation() -> RootRotation {
    RootRotation {
        organization: "Test".into(),
        policy: RotationPolicy {
            grace_period_percentile: 100,
            root_validity: Duration::from_secs(3600),
            propagation_delay: Duration::ZERO,
            overlap: Duration::from_secs(3600),
        },
        new_root_key: Box::new(|| Ok(RootKey::GenerateEcdsaP256)),
    }
}

#[test]
fn a_rotation_interrupted_by_a_crash_is_finished_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    Authority::load_or_create(
        &ca,
        "Test",
        RootKey::GenerateEcdsaP256,
        SigningPolicy::default(),
    )
    .unwrap();
    let rotation = immediate_rotation();
    let step = advance(
        &ca,
        "Test",
        &rotation.policy,
        OffsetDateTime::now_utc(),
        &*rotation.new_root_key,
    )
    .unwrap();
    assert_eq!(step, Some(RotationStep::NewRootTrusted));
    // The switch to the new root died after writing its key only: the
    // directory's certificate and key no longer match.
    std::fs::copy(ca.join(NEXT_CA_KEY_FILE), ca.join(CA_KEY_FILE)).unwrap();
    assert!(Authority::load_from_dir(&ca, SigningPolicy::default()).is_err());

    let watcher = AuthorityWatcher::start(&ca, SigningPolicy::default(), Some(rotation)).unwrap();
    let authority = watcher.current();
    assert_eq!(authority.trust_bundle_der().len(), 2, "both roots trusted");
    let chain = sign(&authority);
    let bundle = support::write(dir.path(), "bundle.pem", authority.root_cert_pem());
    let verified = support::openssl_verify(dir.path(), &bundle, &chain);
    assert!(verified.contains("leaf.pem: OK"), "{verified}");
}

#[test]
fn a_watcher_takes_rotation_steps_and_publishes_each_new_authority() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    Authority::load_or_create(
        &ca,
        "Test",
        RootKey::GenerateEcdsaP256,
        SigningPolicy::default(),
    )
    .unwrap();
    let mut rotation = immediate_rotation();
    rotation.policy.grace_period_percentile = 50;
    rotation.policy.propagation_delay = Duration::from_secs(60);
    let mut watcher =
        AuthorityWatcher::start(&ca, SigningPolicy::default(), Some(rotation)).unwrap();
    let mut following = watcher.subscribe();
    let first_root = watcher.current().signing_root_pem().to_owned();
    following.borrow_and_update();

    // Nine years on, the ten-year root is due.
    let later = OffsetDateTime::now_utc() + Duration::from_secs(9 * 365 * 24 * 3600);
    assert!(watcher.check(later).unwrap());
    assert!(following.has_changed().unwrap());
    assert_eq!(following.borrow_and_update().trust_bundle_der().len(), 2);
    assert_eq!(watcher.current().signing_root_pem(), first_root);

    assert!(watcher.check(later + Duration::from_secs(61)).unwrap());
    assert_ne!(following.borrow_and_update().signing_root_pem(), first_root);
}

#[tokio::test]
async fn the_serving_certificate_is_renewed_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    Authority::load_or_create(
        &ca,
        "Test",
        RootKey::GenerateEcdsaP256,
        SigningPolicy::default(),
    )
    .unwrap();
    let watcher = AuthorityWatcher::start(&ca, SigningPolicy::default(), None).unwrap();
    let tls = Arc::new(
        ServingTls::new(
            &watcher.current(),
            vec!["localhost".into()],
            Duration::from_secs(4),
        )
        .unwrap(),
    );
    let first_renewal = tls.renew_at();
    let renewer = tokio::spawn({
        let (tls, following) = (tls.clone(), watcher.subscribe());
        async move { tls.keep_fresh(following, std::future::pending()).await }
    });
    // Renewal is due half-way through the four seconds.
    tokio::time::timeout(Duration::from_secs(10), async {
        while tls.renew_at() == first_renewal {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("renewed within its lifetime");
    assert!(tls.renew_at() > first_renewal);
    renewer.abort();
}
