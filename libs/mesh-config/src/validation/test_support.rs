//! Helpers for the validators' unit tests: parse one YAML document, validate
//! it, and look at the paths found.

use super::{Report, validate};

/// Parses and validates one document; panics if it does not parse.
pub fn report(yaml: &str) -> Report {
    let mut parsed = crate::parse_all("test.yaml", yaml)
        .unwrap_or_else(|errors| panic!("test document does not parse: {errors:?}"));
    assert_eq!(parsed.len(), 1, "one document expected");
    validate(&parsed.remove(0).resource)
}

/// Asserts that a document has exactly one error, at `path`.
#[track_caller]
pub fn assert_one_error(yaml: &str, path: &str) {
    let report = report(yaml);
    let paths: Vec<&str> = report.errors.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec![path], "errors: {:#?}", report.errors);
}

/// Asserts that a document has no errors.
#[track_caller]
pub fn assert_valid(yaml: &str) {
    let report = report(yaml);
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
}

/// A document of `kind` in namespace `default` with the given `spec` body
/// (already indented by two spaces).
pub fn doc(api_version: &str, kind: &str, spec: &str) -> String {
    format!(
        "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: test\n  namespace: default\nspec:\n{spec}"
    )
}

/// Asserts that a document is valid and warns at `path`.
#[track_caller]
pub fn assert_warning(yaml: &str, path: &str) {
    let report = report(yaml);
    assert!(report.errors.is_empty(), "errors: {:#?}", report.errors);
    assert!(
        report.warnings.iter().any(|w| w.path == path),
        "no warning at {path}: {:#?}",
        report.warnings
    );
}
