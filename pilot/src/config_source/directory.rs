//! A directory of Istio YAML/JSON files, read recursively and re-read when any
//! file changes. A file that stops parsing keeps serving its last good
//! content, so a typo never takes config away from running proxies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_config::{AnyResource, parse_documents};

/// What identifies a file's content cheaply between scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

#[derive(Debug, Clone)]
struct LoadedFile {
    fingerprint: Fingerprint,
    /// The resources of the last version of the file that parsed completely.
    last_good: Vec<AnyResource>,
    /// Problems of the current version, if it does not parse.
    errors: Vec<String>,
}

/// The outcome of one load of the directory.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub resources: Vec<AnyResource>,
    /// Every document that failed, with file, document, field and line.
    pub errors: Vec<String>,
    pub files: usize,
}

/// A watched directory of config files.
#[derive(Debug)]
pub struct DirectorySource {
    root: PathBuf,
    files: BTreeMap<PathBuf, LoadedFile>,
}

impl DirectorySource {
    pub fn new(root: impl Into<PathBuf>) -> DirectorySource {
        DirectorySource {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads changed files. Returns `None` when nothing changed since the
    /// last call (the first call always loads).
    pub fn reload(&mut self) -> std::io::Result<Option<LoadReport>> {
        let current = list_config_files(&self.root)?;
        let mut changed = current.len() != self.files.len();
        let mut next = BTreeMap::new();
        for (path, fingerprint) in current {
            match self.files.remove(&path) {
                Some(loaded) if loaded.fingerprint == fingerprint => {
                    next.insert(path, loaded);
                }
                previous => {
                    changed = true;
                    let last_good = previous.map(|p| p.last_good).unwrap_or_default();
                    next.insert(path.clone(), load_file(&path, fingerprint, last_good));
                }
            }
        }
        let first_load = self.files.is_empty() && next.is_empty();
        self.files = next;
        if !changed && !first_load {
            return Ok(None);
        }
        Ok(Some(self.report()))
    }

    fn report(&self) -> LoadReport {
        LoadReport {
            resources: self
                .files
                .values()
                .flat_map(|f| f.last_good.iter().cloned())
                .collect(),
            errors: self
                .files
                .values()
                .flat_map(|f| f.errors.iter().cloned())
                .collect(),
            files: self.files.len(),
        }
    }
}

fn load_file(path: &Path, fingerprint: Fingerprint, last_good: Vec<AnyResource>) -> LoadedFile {
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            return LoadedFile {
                fingerprint,
                last_good,
                errors: vec![format!("{name}: cannot read: {error}")],
            };
        }
    };
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for result in parse_documents(&name, &text) {
        match result {
            Ok(parsed) => resources.push(parsed.resource),
            Err(error) => errors.push(error.to_string()),
        }
    }
    if errors.is_empty() {
        LoadedFile {
            fingerprint,
            last_good: resources,
            errors,
        }
    } else {
        // Keep serving what this file said when it last parsed.
        LoadedFile {
            fingerprint,
            last_good,
            errors,
        }
    }
}

/// Every *.yaml, *.yml and *.json below `root`, with fingerprints.
fn list_config_files(root: &Path) -> std::io::Result<BTreeMap<PathBuf, Fingerprint>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(_) => continue, // removed while listing
            };
            if metadata.is_dir() {
                pending.push(path);
            } else if is_config_file(&path) {
                files.insert(
                    path,
                    Fingerprint {
                        modified: metadata.modified().ok(),
                        len: metadata.len(),
                    },
                );
            }
        }
    }
    Ok(files)
}

fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    !hidden
        && path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
}

/// How often the directory is scanned for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: ['*']\n";

    #[test]
    fn loads_recursively_and_reports_only_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("nested")).unwrap();
        std::fs::write(dir.path().join("nested/gw.yaml"), GATEWAY).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let mut source = DirectorySource::new(dir.path());
        let first = source.reload().unwrap().expect("first load reports");
        assert_eq!(first.resources.len(), 1);
        assert_eq!(first.files, 1);
        assert!(source.reload().unwrap().is_none(), "nothing changed");
        std::fs::remove_file(dir.path().join("nested/gw.yaml")).unwrap();
        let after_removal = source.reload().unwrap().expect("removal reports");
        assert!(after_removal.resources.is_empty());
    }

    #[test]
    fn a_broken_file_keeps_its_last_good_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gw.yaml");
        std::fs::write(&file, GATEWAY).unwrap();
        let mut source = DirectorySource::new(dir.path());
        source.reload().unwrap();
        std::fs::write(&file, GATEWAY.replace("number: 8080", "number: eighty")).unwrap();
        let report = source.reload().unwrap().expect("the edit is seen");
        assert_eq!(report.resources.len(), 1, "last good Gateway still served");
        assert_eq!(report.errors.len(), 1);
        assert!(
            report.errors[0].contains("spec.servers[0].port.number"),
            "{:?}",
            report.errors
        );
    }

    #[test]
    fn an_empty_directory_is_a_complete_load() {
        let dir = tempfile::tempdir().unwrap();
        let report = DirectorySource::new(dir.path()).reload().unwrap();
        assert!(report.is_some_and(|r| r.resources.is_empty()));
    }
}
