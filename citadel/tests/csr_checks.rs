//! Hostile and unusual CSRs are refused with a reason naming what is wrong.

mod support;

use citadel::csr::{CsrError, CsrKeyType, MAX_CSR_PEM_BYTES, VerifiedCsr};
use support::{WORKLOAD_ID, openssl_rsa_csr, p256_csr};

#[test]
fn accepts_p256_csr_and_reports_its_requested_identity() {
    let csr = VerifiedCsr::from_pem(p256_csr(&[WORKLOAD_ID]).as_bytes()).unwrap();
    assert_eq!(csr.key_type(), CsrKeyType::EcdsaP256);
    assert_eq!(csr.requested_uri(), Some(WORKLOAD_ID));
}

#[test]
fn accepts_rsa_2048_and_4096_csrs_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    for bits in [2048, 4096] {
        let pem = openssl_rsa_csr(dir.path(), bits, WORKLOAD_ID);
        let csr = VerifiedCsr::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(
            csr.key_type(),
            CsrKeyType::Rsa {
                bits: bits as usize
            }
        );
        assert_eq!(csr.requested_uri(), Some(WORKLOAD_ID));
    }
}

#[test]
fn refuses_rsa_1024_as_weak() {
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_rsa_csr(dir.path(), 1024, WORKLOAD_ID);
    assert_eq!(
        VerifiedCsr::from_pem(pem.as_bytes()),
        Err(CsrError::WeakRsaKey { bits: 1024 })
    );
}

#[test]
fn refuses_unusual_rsa_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let pem = openssl_rsa_csr(dir.path(), 2560, WORKLOAD_ID);
    assert_eq!(
        VerifiedCsr::from_pem(pem.as_bytes()),
        Err(CsrError::UnsupportedRsaKeySize { bits: 2560 })
    );
}

#[test]
fn refuses_other_key_types() {
    let dir = tempfile::tempdir().unwrap();
    support::openssl(
        dir.path(),
        &["genpkey", "-algorithm", "ED25519", "-out", "ed.key"],
    );
    support::openssl(
        dir.path(),
        &[
            "req", "-new", "-key", "ed.key", "-subj", "/O=w", "-out", "ed.csr",
        ],
    );
    let pem = std::fs::read(dir.path().join("ed.csr")).unwrap();
    assert!(matches!(
        VerifiedCsr::from_pem(&pem),
        Err(CsrError::UnsupportedSignatureAlgorithm(_) | CsrError::UnsupportedKeyType(_))
    ));
}

#[test]
fn refuses_p384_keys() {
    let dir = tempfile::tempdir().unwrap();
    support::openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.key",
        ],
    );
    support::openssl(
        dir.path(),
        &[
            "req", "-new", "-key", "p384.key", "-subj", "/O=w", "-out", "p384.csr",
        ],
    );
    let pem = std::fs::read(dir.path().join("p384.csr")).unwrap();
    assert!(matches!(
        VerifiedCsr::from_pem(&pem),
        Err(CsrError::UnsupportedCurve(curve)) if curve == "1.3.132.0.34"
    ));
}

#[test]
fn refuses_garbage_pem() {
    for garbage in [
        &b"not a csr at all"[..],
        b"",
        b"-----BEGIN CERTIFICATE REQUEST-----\n%%%\n",
    ] {
        assert!(
            matches!(
                VerifiedCsr::from_pem(garbage),
                Err(CsrError::MalformedPem(_))
            ),
            "{garbage:?}"
        );
    }
}

#[test]
fn refuses_pem_that_is_not_a_request() {
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x00]));
    assert_eq!(
        VerifiedCsr::from_pem(pem.as_bytes()),
        Err(CsrError::NotACertificateRequest("CERTIFICATE".into()))
    );
}

#[test]
fn refuses_der_that_is_not_a_request() {
    let pem = pem::encode(&pem::Pem::new(
        "CERTIFICATE REQUEST",
        vec![0x30, 0x03, 1, 2, 3],
    ));
    assert!(matches!(
        VerifiedCsr::from_pem(pem.as_bytes()),
        Err(CsrError::MalformedRequest(_))
    ));
}

#[test]
fn refuses_tampered_signature() {
    let pem = p256_csr(&[WORKLOAD_ID]);
    let mut der = pem::parse(&pem).unwrap().into_contents();
    // The signature is the last field; its final byte is part of s.
    *der.last_mut().unwrap() ^= 0x01;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    assert_eq!(
        VerifiedCsr::from_pem(tampered.as_bytes()),
        Err(CsrError::BadSignature)
    );
}

#[test]
fn refuses_tampered_request_body() {
    let pem = p256_csr(&[WORKLOAD_ID]);
    let mut der = pem::parse(&pem).unwrap().into_contents();
    // Rewrite the asked-for identity after signing: the signature must catch it.
    let position = der.windows(7).position(|w| w == b"reviews").unwrap();
    der[position] = b'R';
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    assert_eq!(
        VerifiedCsr::from_pem(tampered.as_bytes()),
        Err(CsrError::BadSignature)
    );
}

#[test]
fn refuses_several_identities() {
    let other = "spiffe://cluster.local/ns/default/sa/ratings";
    let pem = p256_csr(&[WORKLOAD_ID, other]);
    assert_eq!(
        VerifiedCsr::from_pem(pem.as_bytes()),
        Err(CsrError::SeveralIdentities(2))
    );
}

#[test]
fn refuses_several_pem_blocks() {
    let pem = format!("{}{}", p256_csr(&[WORKLOAD_ID]), p256_csr(&[WORKLOAD_ID]));
    assert_eq!(
        VerifiedCsr::from_pem(pem.as_bytes()),
        Err(CsrError::SeveralPemBlocks)
    );
}

#[test]
fn refuses_oversized_input_before_parsing() {
    let mut pem = p256_csr(&[WORKLOAD_ID]).into_bytes();
    pem.resize(MAX_CSR_PEM_BYTES + 1, b'\n');
    assert_eq!(
        VerifiedCsr::from_pem(&pem),
        Err(CsrError::TooLarge {
            size: MAX_CSR_PEM_BYTES + 1,
            limit: MAX_CSR_PEM_BYTES
        })
    );
}

#[test]
fn errors_name_the_reason() {
    let message = CsrError::WeakRsaKey { bits: 1024 }.to_string();
    assert!(
        message.contains("1024") && message.contains("minimum"),
        "{message}"
    );
}

/// Until the fuzz target exists: every single-byte corruption of a valid CSR
/// is answered without a panic, and none can change what would be certified.
#[test]
fn single_byte_corruptions_never_panic_or_change_the_request() {
    let pem = p256_csr(&[WORKLOAD_ID]);
    let original = VerifiedCsr::from_pem(pem.as_bytes()).unwrap();
    let der = pem::parse(&pem).unwrap().into_contents();
    for index in 0..der.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut corrupted = der.clone();
            corrupted[index] ^= flip;
            if let Ok(accepted) = VerifiedCsr::from_der(&corrupted) {
                assert_eq!(accepted, original, "byte {index} ^ {flip:#x}");
            }
        }
    }
}
