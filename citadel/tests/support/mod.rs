//! Helpers shared by citadel's integration tests: real CSRs made with rcgen
//! and the openssl command line, and openssl as an independent checker;
//! a local HTTPS server (`https`), ES256 token signing (`jwt`) and a fake
//! Kubernetes TokenReview endpoint (`kube`).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod https;
pub mod jwt;
pub mod kube;

use std::path::Path;
use std::process::Command;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

pub const WORKLOAD_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

/// Runs openssl in `dir`, panicking with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (apt-get install -y openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A PEM CSR for a fresh ECDSA P-256 key asking for the given URI SANs.
pub fn p256_csr(uris: &[&str]) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI((*uri).try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// Generates an RSA key of `bits` with openssl, PKCS#8 PEM, into `dir`.
pub fn openssl_rsa_key(dir: &Path, name: &str, bits: u32) -> String {
    let bits_option = format!("rsa_keygen_bits:{bits}");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            &bits_option,
            "-out",
            name,
        ],
    );
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// A PEM CSR for a fresh RSA key of `bits`, made and signed by openssl.
pub fn openssl_rsa_csr(dir: &Path, bits: u32, uri: &str) -> String {
    let key_file = format!("rsa-{bits}.key");
    openssl_rsa_key(dir, &key_file, bits);
    let san = format!("subjectAltName=URI:{uri}");
    let csr_file = format!("rsa-{bits}.csr");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key_file,
            "-subj",
            "/O=workload",
            "-addext",
            &san,
            "-out",
            &csr_file,
        ],
    );
    std::fs::read_to_string(dir.join(csr_file)).unwrap()
}

/// Writes `contents` to `dir/name` and returns the name, for openssl args.
pub fn write(dir: &Path, name: &str, contents: &str) -> String {
    std::fs::write(dir.join(name), contents).unwrap();
    name.to_owned()
}

/// `openssl verify` of a leaf against a root file, with any intermediates
/// given as untrusted.
pub fn openssl_verify(dir: &Path, root_file: &str, chain: &[String]) -> String {
    let leaf = write(dir, "leaf.pem", &chain[0]);
    let intermediates = &chain[1..chain.len() - 1];
    let mut args = vec!["verify", "-CAfile", root_file];
    let untrusted;
    if !intermediates.is_empty() {
        untrusted = write(dir, "untrusted.pem", &intermediates.concat());
        args.extend(["-untrusted", untrusted.as_str()]);
    }
    args.push(&leaf);
    openssl(dir, &args)
}

/// Makes a root and an intermediate CA with openssl, each with a P-256 key,
/// laid out in `dir` with Istio's plug-in CA file names.
pub fn openssl_plugin_ca(dir: &Path) {
    openssl_plugin_ca_with_intermediate_days(dir, 365);
}

pub fn openssl_plugin_ca_with_intermediate_days(dir: &Path, intermediate_days: u32) {
    let intermediate_days = intermediate_days.to_string();
    for key in ["root.key", "ca-key.pem"] {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                key,
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            "/O=test/CN=plug-in root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root-cert.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/O=test/CN=plug-in intermediate",
            "-out",
            "intermediate.csr",
        ],
    );
    write(
        dir,
        "intermediate.ext",
        "basicConstraints=critical,CA:TRUE,pathlen:0\n\
         keyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\n\
         authorityKeyIdentifier=keyid\n",
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "intermediate.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            &intermediate_days,
            "-extfile",
            "intermediate.ext",
            "-out",
            "ca-cert.pem",
        ],
    );
    let intermediate = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap();
    let root = std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    write(dir, "cert-chain.pem", &format!("{intermediate}{root}"));
}
