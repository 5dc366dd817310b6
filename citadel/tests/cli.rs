//! The citadel binary's root-key flags: `--ca-key-type rsa` makes an RSA root
//! on first start, and RSA sizes other than 2048/3072/4096 are refused before
//! anything starts.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use citadel::authority::{CA_CERT_FILE, ROOT_CERT_FILE};

/// Flags' environment fallbacks that would change what a test asks for.
const FLAG_ENV: [&str; 3] = [
    "TRIREME_CA_KEY_TYPE",
    "TRIREME_CA_RSA_KEY_SIZE",
    "TRIREME_CA_DIR",
];

fn citadel() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_citadel"));
    for name in FLAG_ENV {
        command.env_remove(name);
    }
    command
}

/// Kills the child when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn refused_with(args: &[&str]) -> String {
    let output = citadel().args(args).output().unwrap();
    assert!(!output.status.success(), "citadel {args:?} was accepted");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn refuses_rsa_key_sizes_other_than_2048_3072_4096() {
    for size in ["1024", "8192", "2k"] {
        let stderr = refused_with(&["--ca-key-type", "rsa", "--ca-rsa-key-size", size]);
        assert!(
            stderr.contains("--ca-rsa-key-size") && stderr.contains("use 2048, 3072 or 4096"),
            "{stderr}"
        );
    }
}

#[test]
fn refuses_unknown_key_types() {
    let stderr = refused_with(&["--ca-key-type", "dsa"]);
    assert!(
        stderr.contains("ecdsa") && stderr.contains("rsa"),
        "{stderr}"
    );
}

/// Waits for the file that marks a complete CA directory.
fn wait_for_ca(dir: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dir.join(CA_CERT_FILE).exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("citadel exited early: {status}");
        }
        assert!(Instant::now() < deadline, "no CA in {}", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn first_start_with_rsa_key_type_makes_an_rsa_3072_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    // Nothing listens on port 1; citadel keeps retrying the bus in the
    // background, which does not hold up the CA.
    let child = citadel()
        .args(["--ca-key-type", "rsa", "--ca-rsa-key-size", "3072"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(&ca_dir)
        .env("TRIREME_NATS_URL", "nats://127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    wait_for_ca(&ca_dir, &mut running.0);
    let text = support::openssl(&ca_dir, &["x509", "-in", ROOT_CERT_FILE, "-text", "-noout"]);
    assert!(
        text.contains("rsaEncryption") && text.contains("Public-Key: (3072 bit)"),
        "{text}"
    );
}
