//! `trireme validate` runs Istio's semantic rules after the strict parse:
//! errors fail the run with `error  FILE: document N: KIND NAME: PATH: MESSAGE`,
//! warnings are printed and do not.

use std::process::{Command, Output};

fn validate(yaml: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs.yaml");
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_trireme"))
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout =
        String::from_utf8_lossy(&output.stdout).replace(&*file.to_string_lossy(), "vs.yaml");
    (output, stdout)
}

const HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n";

#[test]
fn a_semantic_error_fails_with_kind_name_and_path() {
    let yaml = format!(
        "{HEAD}  http:\n  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: -1\n    - destination: {{host: reviews, subset: v2}}\n      weight: 101\n"
    );
    let (output, stdout) = validate(&yaml);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "error  vs.yaml: document 1: VirtualService reviews: spec.http[0].route[0].weight: "
        ),
        "{stdout}"
    );
    assert!(stdout.contains("0 valid, 1 invalid"), "{stdout}");
}

#[test]
fn warnings_alone_leave_a_document_valid() {
    let yaml = format!(
        "{HEAD}  http:\n  - route:\n    - destination: {{host: reviews}}\n  - route:\n    - destination: {{host: reviews, subset: v2}}\n"
    );
    let (output, stdout) = validate(&yaml);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning vs.yaml: document 1: VirtualService reviews: spec.http[1]: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok     vs.yaml: document 1: VirtualService reviews"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 valid, 0 invalid, 1 warnings"),
        "{stdout}"
    );
}
