//! The checks shared by the libFuzzer target and the stable driver: every
//! input goes through citadel's CSR parser three ways, and any CSR it accepts
//! is signed by a throwaway authority whose output is checked.

use std::sync::OnceLock;
use std::time::Duration;

use citadel::authority::{Authority, RootKey, SignError, SigningPolicy, create_self_signed_root};
use citadel::csr::{CsrKeyType, MAX_CSR_PEM_BYTES, VerifiedCsr};
use citadel::identity::SpiffeId;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const FALLBACK_ID: &str = "spiffe://cluster.local/ns/fuzz/sa/workload";
const OTHER_ID: &str = "spiffe://cluster.local/ns/fuzz/sa/someone-else";

/// One in-memory root, made on first use: signing is then cheap enough to do
/// for every accepted input.
fn authority() -> &'static Authority {
    static AUTHORITY: OnceLock<Authority> = OnceLock::new();
    AUTHORITY.get_or_init(|| {
        let files = create_self_signed_root("citadel-fuzz", RootKey::GenerateEcdsaP256)
            .expect("creating the throwaway root");
        Authority::from_files(&files, SigningPolicy::default()).expect("loading the root")
    })
}

/// Feeds `data` to the CSR checks as PEM, as DER, and as DER wrapped in a
/// well-formed PEM block (so mutations reach the DER parser through the PEM
/// path too). Nothing may panic; what is accepted must sign correctly.
pub fn check_csr(data: &[u8]) {
    check_one(VerifiedCsr::from_pem(data));
    check_one(VerifiedCsr::from_der(data));
    if data.len() <= MAX_CSR_PEM_BYTES / 2 {
        let armoured = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", data));
        let from_armoured = VerifiedCsr::from_pem(armoured.as_bytes());
        assert_eq!(
            from_armoured.as_ref().ok(),
            VerifiedCsr::from_der(data).as_ref().ok(),
            "PEM and DER paths disagree"
        );
        check_one(from_armoured);
    }
}

fn check_one(result: Result<VerifiedCsr, citadel::csr::CsrError>) {
    let csr = match result {
        Ok(csr) => csr,
        Err(error) => {
            // Every refusal must render as a reason for INVALID_ARGUMENT.
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    if let CsrKeyType::Rsa { bits } = csr.key_type() {
        assert!([2048, 3072, 4096].contains(&bits), "accepted RSA-{bits}");
    }
    let proved: SpiffeId = csr
        .requested_uri()
        .and_then(|uri| uri.parse().ok())
        .unwrap_or_else(|| FALLBACK_ID.parse().unwrap());
    let proved_uri = proved.to_uri();
    let ttl = Some(Duration::from_secs(3600));

    match authority().sign(&csr, &proved, ttl) {
        Ok(chain) => {
            assert_eq!(csr.requested_uri().unwrap_or(&proved_uri), proved_uri);
            check_leaf(&chain, &csr, &proved_uri);
        }
        Err(SignError::IdentityMismatch { .. }) => {
            // Only when the CSR asked for something that is not a valid
            // SPIFFE ID, so the fallback identity was "proved" instead.
            assert!(csr.requested_uri().is_some_and(|uri| uri != proved_uri));
        }
        Err(SignError::UnusableKey(_)) => {}
        Err(other) => panic!("unexpected signing error: {other}"),
    }

    // Asking for one identity while proving another is always refused.
    let other: SpiffeId = OTHER_ID.parse().unwrap();
    if let Some(requested) = csr.requested_uri().filter(|uri| *uri != OTHER_ID) {
        match authority().sign(&csr, &other, ttl) {
            Err(SignError::IdentityMismatch { .. }) => {}
            result => panic!("CSR for {requested:?} signed for {OTHER_ID:?}: {result:?}"),
        }
    }
}

/// The leaf carries exactly the proved identity and the CSR's key, and the
/// chain is leaf then root.
fn check_leaf(chain: &[String], csr: &VerifiedCsr, proved_uri: &str) {
    assert_eq!(chain.len(), 2, "leaf and root");
    let block = pem::parse(&chain[0]).expect("leaf PEM");
    let (_, leaf) = X509Certificate::from_der(block.contents()).expect("leaf DER");
    assert_eq!(leaf.public_key().raw, csr.subject_public_key_info_der());
    assert!(!leaf.is_ca());
    let mut uris = Vec::new();
    for extension in leaf.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(*uri),
                    other => panic!("leaf carries a non-URI SAN {other:?}"),
                }
            }
        }
    }
    assert_eq!(uris, [proved_uri]);
}
