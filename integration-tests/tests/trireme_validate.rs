//! `trireme validate` reads Istio YAML as the services do and reports problems
//! with file, document, field path and line.

use std::path::Path;
use std::process::Command;

use integration_tests::{binary, workspace_root};

/// `trireme validate -f <path>`: (exit code, standard output).
fn validate(path: &Path) -> (Option<i32>, String) {
    let output = Command::new(binary("trireme"))
        .args(["validate", "-f"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), stdout)
}

/// [`validate`] of one file `name` holding `contents`.
fn validate_file(name: &str, contents: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, contents).unwrap();
    validate(&file)
}

#[test]
fn istio_samples_validate() {
    let samples = workspace_root().join("libs/mesh-config/tests/fixtures/istio-bookinfo");
    let (code, stdout) = validate(&samples);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains(" 0 invalid"), "{stdout}");
}

#[test]
fn a_mistake_fails_with_its_location() {
    let (code, stdout) = validate_file(
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: eighty\n",
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("bad.yaml: document 1, line 10"), "{stdout}");
    assert!(stdout.contains("spec.servers[0].port.number"), "{stdout}");
}

#[test]
fn a_semantic_error_names_kind_name_and_field() {
    let (code, stdout) = validate_file(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    timeout: 0s\n",
    );
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("vs.yaml: document 1: VirtualService reviews: spec.http[0].timeout: "),
        "{stdout}"
    );
}
