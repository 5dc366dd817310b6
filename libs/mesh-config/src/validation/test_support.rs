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

/// The paths of the warnings of a document.
pub fn warning_paths(yaml: &str) -> Vec<String> {
    report(yaml).warnings.into_iter().map(|f| f.path).collect()
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
