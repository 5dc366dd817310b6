//! Certificates issued by the authority verify with openssl and carry exactly
//! the fields a workload certificate must have.

mod support;

use std::path::Path;
use std::time::Duration;

use citadel::authority::{
    Authority, AuthorityError, CA_CERT_FILE, ROOT_CERT_FILE, RootKey, SignError, SigningPolicy,
};
use citadel::csr::VerifiedCsr;
use citadel::identity::SpiffeId;
use citadel::keys::RsaKeySize;
use support::{WORKLOAD_ID, openssl, openssl_rsa_csr, openssl_verify, p256_csr, write};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

fn workload() -> SpiffeId {
    WORKLOAD_ID.parse().unwrap()
}

fn new_authority(dir: &Path) -> Authority {
    Authority::load_or_create(
        dir,
        "cluster.local",
        RootKey::GenerateEcdsaP256,
        SigningPolicy::default(),
    )
    .unwrap()
}

fn sign_p256(authority: &Authority, ttl: Option<Duration>) -> Vec<String> {
    let csr = VerifiedCsr::from_pem(p256_csr(&[WORKLOAD_ID]).as_bytes()).unwrap();
    authority.sign(&csr, &workload(), ttl).unwrap()
}

/// Checks a leaf's fields with x509-parser, independently of how it was made.
fn assert_workload_leaf(leaf_pem: &str, expected_ttl: Duration) {
    let der = pem::parse(leaf_pem).unwrap().into_contents();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    assert!(!leaf.is_ca());
    let basic_constraints = leaf.basic_constraints().unwrap().expect("basicConstraints");
    assert!(!basic_constraints.value.ca);

    let key_usage = leaf.key_usage().unwrap().expect("keyUsage").value;
    assert!(key_usage.digital_signature() && key_usage.key_encipherment());
    assert!(!key_usage.key_cert_sign());

    let extended = leaf
        .extended_key_usage()
        .unwrap()
        .expect("extendedKeyUsage")
        .value;
    assert!(extended.server_auth && extended.client_auth);

    let san = leaf.subject_alternative_name().unwrap().expect("SAN");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(WORKLOAD_ID)]);
    assert!(san.critical, "SAN must be critical with an empty subject");

    let extensions = leaf.extensions();
    assert!(extensions.iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::SubjectKeyIdentifier(_)
    )));
    assert!(extensions.iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));

    let validity = leaf.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    let expected = expected_ttl.as_secs() as i64;
    // The leaf is backdated by a minute for clock skew.
    assert!(
        (expected..=expected + 120).contains(&lifetime),
        "lifetime {lifetime}s"
    );
}

fn assert_openssl_reads_leaf(dir: &Path, leaf_pem: &str) {
    let file = write(dir, "read-back.pem", leaf_pem);
    let text = openssl(dir, &["x509", "-in", &file, "-text", "-noout"]);
    for expected in [
        &format!("URI:{WORKLOAD_ID}") as &str,
        "CA:FALSE",
        "Digital Signature, Key Encipherment",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn p256_leaf_verifies_and_reads_back_as_specified() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(&dir.path().join("ca"));
    let chain = sign_p256(&authority, None);

    assert_eq!(chain.len(), 2, "leaf then root");
    assert_eq!(chain[1], authority.root_cert_pem());
    let root = write(dir.path(), "root.pem", authority.root_cert_pem());
    assert!(openssl_verify(dir.path(), &root, &chain).contains("OK"));
    assert_workload_leaf(&chain[0], Duration::from_secs(24 * 60 * 60));
    assert_openssl_reads_leaf(dir.path(), &chain[0]);
}

#[test]
fn rsa_2048_leaf_verifies_with_requested_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(&dir.path().join("ca"));
    let csr_pem = openssl_rsa_csr(dir.path(), 2048, WORKLOAD_ID);
    let csr = VerifiedCsr::from_pem(csr_pem.as_bytes()).unwrap();
    let ttl = Duration::from_secs(3600);
    let chain = authority.sign(&csr, &workload(), Some(ttl)).unwrap();

    let root = write(dir.path(), "root.pem", authority.root_cert_pem());
    assert!(openssl_verify(dir.path(), &root, &chain).contains("OK"));
    assert_workload_leaf(&chain[0], ttl);
    assert_openssl_reads_leaf(dir.path(), &chain[0]);
}

#[test]
fn issues_the_proved_identity_when_the_csr_names_none() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let csr = VerifiedCsr::from_pem(p256_csr(&[]).as_bytes()).unwrap();
    let chain = authority.sign(&csr, &workload(), None).unwrap();
    assert_workload_leaf(&chain[0], Duration::from_secs(24 * 60 * 60));
}

#[test]
fn refuses_a_csr_asking_for_another_identity() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let other = "spiffe://cluster.local/ns/default/sa/ratings";
    let csr = VerifiedCsr::from_pem(p256_csr(&[other]).as_bytes()).unwrap();
    assert_eq!(
        authority.sign(&csr, &workload(), None),
        Err(SignError::IdentityMismatch {
            requested: other.into(),
            proved: WORKLOAD_ID.into()
        })
    );
}

#[test]
fn refuses_ttl_above_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let authority = new_authority(dir.path());
    let csr = VerifiedCsr::from_pem(p256_csr(&[WORKLOAD_ID]).as_bytes()).unwrap();
    let max = SigningPolicy::default().max_ttl;
    let too_long = max + Duration::from_secs(1);
    let error = authority
        .sign(&csr, &workload(), Some(too_long))
        .unwrap_err();
    assert_eq!(
        error,
        SignError::TtlTooLong {
            requested: too_long,
            max
        }
    );
    assert!(error.to_string().contains("exceeds the maximum"), "{error}");
    assert_eq!(
        authority.sign(&csr, &workload(), Some(Duration::ZERO)),
        Err(SignError::ZeroTtl)
    );
    // The maximum itself is allowed.
    authority.sign(&csr, &workload(), Some(max)).unwrap();
}

#[test]
fn root_is_persisted_and_reused_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let first = new_authority(&ca_dir);
    let root_file_before = std::fs::read(ca_dir.join(ROOT_CERT_FILE)).unwrap();
    // A client keeps the bundle it was given before the restart.
    std::fs::write(dir.path().join("old-root.pem"), &root_file_before).unwrap();
    drop(first);

    let reloaded = new_authority(&ca_dir);
    assert_eq!(
        std::fs::read(ca_dir.join(ROOT_CERT_FILE)).unwrap(),
        root_file_before
    );
    assert_eq!(
        reloaded.root_cert_pem().as_bytes(),
        root_file_before.as_slice()
    );

    let chain = sign_p256(&reloaded, None);
    assert!(openssl_verify(dir.path(), "old-root.pem", &chain).contains("OK"));
}

#[test]
fn ca_key_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    new_authority(dir.path());
    let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn plugin_ca_chain_includes_the_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("plugin");
    std::fs::create_dir(&ca_dir).unwrap();
    support::openssl_plugin_ca(&ca_dir);

    let authority = Authority::load_from_dir(&ca_dir, SigningPolicy::default()).unwrap();
    let chain = sign_p256(&authority, None);

    let intermediate = std::fs::read_to_string(ca_dir.join(CA_CERT_FILE)).unwrap();
    let root = std::fs::read_to_string(ca_dir.join(ROOT_CERT_FILE)).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    assert_eq!(
        pem::parse(&chain[1]).unwrap(),
        pem::parse(&intermediate).unwrap()
    );
    assert_eq!(pem::parse(&chain[2]).unwrap(), pem::parse(&root).unwrap());

    let root_file = ca_dir.join(ROOT_CERT_FILE);
    let output = openssl_verify(dir.path(), root_file.to_str().unwrap(), &chain);
    assert!(output.contains("OK"), "{output}");
    assert_workload_leaf(&chain[0], Duration::from_secs(24 * 60 * 60));
    assert_openssl_reads_leaf(dir.path(), &chain[0]);
}

#[test]
fn rsa_root_by_choice_signs_verifiable_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let key = support::openssl_rsa_key(dir.path(), "root-rsa.key", 2048);
    let ca_dir = dir.path().join("ca");
    let authority = Authority::load_or_create(
        &ca_dir,
        "cluster.local",
        RootKey::Pkcs8Pem(key),
        SigningPolicy::default(),
    )
    .unwrap();
    let chain = sign_p256(&authority, None);
    let root = ca_dir.join(ROOT_CERT_FILE);
    assert!(openssl_verify(dir.path(), root.to_str().unwrap(), &chain).contains("OK"));
    let text = openssl(&ca_dir, &["x509", "-in", ROOT_CERT_FILE, "-text", "-noout"]);
    assert!(
        text.contains("rsaEncryption") && text.contains("CA:TRUE"),
        "{text}"
    );
}

#[test]
fn generated_rsa_2048_root_signs_verifiable_leaves_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let rsa_root = || RootKey::GenerateRsa {
        bits: RsaKeySize::Bits2048,
    };
    let authority = Authority::load_or_create(
        &ca_dir,
        "cluster.local",
        rsa_root(),
        SigningPolicy::default(),
    )
    .unwrap();
    let chain = sign_p256(&authority, None);
    let root = ca_dir.join(ROOT_CERT_FILE);
    let verified = openssl_verify(dir.path(), root.to_str().unwrap(), &chain);
    assert!(verified.contains("OK"), "{verified}");
    let text = openssl(&ca_dir, &["x509", "-in", ROOT_CERT_FILE, "-text", "-noout"]);
    for expected in ["rsaEncryption", "Public-Key: (2048 bit)", "CA:TRUE"] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // A second start on the same directory keeps the root, whatever key it
    // would have generated.
    let key_before = std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap();
    for root_key in [rsa_root(), RootKey::GenerateEcdsaP256] {
        let restarted =
            Authority::load_or_create(&ca_dir, "cluster.local", root_key, SigningPolicy::default())
                .unwrap();
        assert_eq!(restarted.root_cert_pem(), authority.root_cert_pem());
        let chain = sign_p256(&restarted, None);
        assert!(openssl_verify(dir.path(), root.to_str().unwrap(), &chain).contains("OK"));
    }
    assert_eq!(
        std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap(),
        key_before
    );
}

#[test]
fn refuses_a_ca_key_that_does_not_match_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("plugin");
    std::fs::create_dir(&ca_dir).unwrap();
    support::openssl_plugin_ca(&ca_dir);
    std::fs::copy(ca_dir.join("root.key"), ca_dir.join("ca-key.pem")).unwrap();
    assert!(matches!(
        Authority::load_from_dir(&ca_dir, SigningPolicy::default()),
        Err(AuthorityError::KeyMismatch)
    ));
}

#[test]
fn refuses_a_plugin_ca_whose_root_did_not_sign_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("plugin");
    std::fs::create_dir(&ca_dir).unwrap();
    support::openssl_plugin_ca(&ca_dir);
    // Another root, not the one that signed the intermediate.
    let other = dir.path().join("other");
    new_authority(&other);
    std::fs::copy(other.join(ROOT_CERT_FILE), ca_dir.join(ROOT_CERT_FILE)).unwrap();
    std::fs::write(
        ca_dir.join("cert-chain.pem"),
        std::fs::read(ca_dir.join(CA_CERT_FILE)).unwrap(),
    )
    .unwrap();
    let error = Authority::load_from_dir(&ca_dir, SigningPolicy::default())
        .err()
        .expect("a root that did not sign the intermediate is refused");
    assert!(
        matches!(error, AuthorityError::RootNotInBundle { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("root-cert.pem"), "{error}");
}

#[test]
fn reports_root_and_chain_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("plugin");
    std::fs::create_dir(&ca_dir).unwrap();
    support::openssl_plugin_ca(&ca_dir);
    let authority = Authority::load_from_dir(&ca_dir, SigningPolicy::default()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    // openssl made the intermediate for 365 days and the root for 3650.
    let days = |t: time::OffsetDateTime| (t - now).whole_days();
    assert!((364..=365).contains(&days(authority.cert_chain_not_after())));
    assert!((3649..=3650).contains(&days(authority.root_not_after())));
}

#[test]
fn leaf_never_outlives_the_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("plugin");
    std::fs::create_dir(&ca_dir).unwrap();
    support::openssl_plugin_ca_with_intermediate_days(&ca_dir, 1);
    let authority = Authority::load_from_dir(&ca_dir, SigningPolicy::default()).unwrap();
    let chain = sign_p256(&authority, Some(Duration::from_secs(7 * 24 * 60 * 60)));

    let der = pem::parse(&chain[0]).unwrap().into_contents();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        authority.cert_chain_not_after().unix_timestamp()
    );
    let root = ca_dir.join(ROOT_CERT_FILE);
    assert!(openssl_verify(dir.path(), root.to_str().unwrap(), &chain).contains("OK"));
}
