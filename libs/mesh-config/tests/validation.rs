//! Semantic validation against real configuration: Istio's bookinfo samples
//! and the repository's own config must be valid, and every document under
//! `fixtures/invalid/` must be refused with exactly the one error its
//! `# expect: PATH` header names.

use std::path::{Path, PathBuf};

use mesh_config::{parse_all, validation};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Parses every document of every file in `dir` and returns the findings
/// of each as `file: document N: path: message` lines.
fn findings(dir: &Path) -> (usize, Vec<String>, Vec<String>) {
    let mut documents = 0;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for path in yaml_files(dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed =
            parse_all(&name, &text).unwrap_or_else(|e| panic!("{name} does not parse: {e:?}"));
        for doc in parsed {
            documents += 1;
            let report = validation::validate(&doc.resource);
            let at = format!("{name}: document {}", doc.location.document);
            errors.extend(report.errors.iter().map(|f| format!("{at}: {f}")));
            warnings.extend(report.warnings.iter().map(|f| format!("{at}: {f}")));
        }
    }
    (documents, errors, warnings)
}

#[test]
fn istio_bookinfo_samples_are_valid() {
    for dir in ["tests/fixtures/istio-bookinfo", "tests/fixtures/bookinfo"] {
        let (documents, errors, _) = findings(&manifest_dir().join(dir));
        assert!(documents >= 10, "{dir}: only {documents} documents");
        assert!(errors.is_empty(), "{dir}:\n{}", errors.join("\n"));
    }
}

#[test]
fn the_repositorys_own_config_is_valid() {
    let dir = manifest_dir().join("../../deploy/local/config");
    let (documents, errors, _) = findings(&dir);
    assert!(documents > 0);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Reads the `# expect: PATH` header of an invalid fixture.
fn expected_path(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{name} has no '# expect: PATH' header"))
        .trim()
        .to_string()
}

#[test]
fn each_invalid_document_is_refused_at_its_field() {
    let files = yaml_files(&manifest_dir().join("tests/fixtures/invalid"));
    assert!(files.len() >= 40, "only {} invalid fixtures", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let expected = expected_path(&text, &name);
        let parsed = match parse_all(&name, &text) {
            Ok(parsed) => parsed,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {e:?}"));
                continue;
            }
        };
        assert_eq!(parsed.len(), 1, "{name}: one document per fixture");
        let report = validation::validate(&parsed[0].resource);
        let paths: Vec<&str> = report.errors.iter().map(|f| f.path.as_str()).collect();
        if paths != [expected.as_str()] {
            failures.push(format!(
                "{name}: expected one error at {expected}, got:\n    {}",
                report
                    .errors
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
