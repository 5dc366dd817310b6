//! Reading a config directory: every `*.yaml`, `*.yml` and `*.json` file
//! under it (recursively, in name order), every document parsed strictly
//! and validated.

use std::path::{Path, PathBuf};

use mesh_config::store::key_of;
use mesh_config::validation::{self, Finding};

use super::reconcile::{Judged, ScannedDocument};

/// Files larger than this are refused unread: config files are small, and
/// one huge file must not take galley's memory.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Every document under `root`, judged.
pub fn scan(root: &Path) -> std::io::Result<Vec<ScannedDocument>> {
    let mut documents = Vec::new();
    for path in config_files(root)? {
        let file = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        documents.extend(scan_file(&path, &file));
    }
    Ok(documents)
}

fn scan_file(path: &Path, file: &str) -> Vec<ScannedDocument> {
    let unreadable = |error: String| {
        vec![ScannedDocument::in_file(
            file,
            1,
            Judged::Unreadable { error },
        )]
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return unreadable(format!(
                "{} bytes is more than the {MAX_FILE_BYTES} a config file may have",
                meta.len()
            ));
        }
        Ok(_) => {}
        Err(error) => return unreadable(error.to_string()),
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => return unreadable(error.to_string()),
    };
    mesh_config::parse_documents(file, &text)
        .into_iter()
        .map(|parsed| match parsed {
            Ok(parsed) => {
                ScannedDocument::in_file(file, parsed.location.document, judge(&parsed.resource))
            }
            Err(error) => ScannedDocument::in_file(
                file,
                error.location.document,
                Judged::Unreadable {
                    error: error.to_string(),
                },
            ),
        })
        .collect()
}

/// Validates one readable resource.
pub fn judge(resource: &mesh_config::AnyResource) -> Judged {
    let key = key_of(resource);
    let report = validation::validate(resource);
    let warnings = findings(&report.warnings);
    if report.is_valid() {
        Judged::Accepted {
            key,
            resource: serde_json::to_value(resource).expect("resources serialize"),
            warnings,
        }
    } else {
        Judged::Rejected {
            key,
            errors: findings(&report.errors),
            warnings,
        }
    }
}

fn findings(findings: &[Finding]) -> Vec<String> {
    findings.iter().map(Finding::to_string).collect()
}

fn config_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
