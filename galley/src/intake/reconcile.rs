//! What the buckets should hold after a scan of the config, given what they
//! hold now: pure, so every rule about keeping accepted state is tested
//! without a bus.
//!
//! The rules: a valid resource is published under its key; an invalid new
//! version of a resource never replaces its last valid one (the resource
//! stays as it was, the verdict says why the edit was refused); a document
//! that cannot even be read (so its key is unknown) keeps every resource
//! its file had published; a resource gone from the config is deleted.

use std::collections::BTreeMap;

use mesh_config::store::{Verdict, key_safe};

/// One document of the scanned config, judged.
#[derive(Debug, Clone, PartialEq)]
pub enum Judged {
    /// Readable and valid: published under `key`.
    Accepted {
        key: String,
        resource: serde_json::Value,
        warnings: Vec<String>,
    },
    /// Readable (so its key is known) but invalid.
    Rejected {
        key: String,
        errors: Vec<String>,
        warnings: Vec<String>,
    },
    /// Not readable as a resource: which one it meant is unknown.
    Unreadable { error: String },
}

/// A document and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedDocument {
    /// The file it is in, relative to the config directory; for an object
    /// from Kubernetes, `k8s:<key>` (each object its own file).
    pub file: String,
    /// Its position in the file, from 1.
    pub document: usize,
    /// Where it came from, for people: `dir:<file>#<document>` or
    /// `k8s:<key>`.
    pub source: String,
    pub judged: Judged,
}

impl ScannedDocument {
    /// Document `document` of `file` in the config directory.
    pub fn in_file(file: &str, document: usize, judged: Judged) -> ScannedDocument {
        ScannedDocument {
            file: file.to_owned(),
            document,
            source: format!("dir:{file}#{document}"),
            judged,
        }
    }

    /// An object read from the Kubernetes API server, known by `key`.
    pub fn from_kubernetes(key: &str, judged: Judged) -> ScannedDocument {
        let source = format!("k8s:{key}");
        ScannedDocument {
            file: source.clone(),
            document: 1,
            source,
            judged,
        }
    }
}

/// A published resource and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub resource: serde_json::Value,
    pub file: String,
}

/// What the buckets should hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Desired {
    pub config: BTreeMap<String, Published>,
    pub verdicts: BTreeMap<String, Verdict>,
}

/// The desired state after `scan`, keeping from `previous` what the rules
/// say to keep; `now` stamps the verdicts.
pub fn reconcile(
    previous: &BTreeMap<String, Published>,
    scan: &[ScannedDocument],
    now: &str,
) -> Desired {
    let mut desired = Desired::default();
    let mut unreadable_files = Vec::new();
    for document in scan {
        let source = &document.source;
        let verdict = |key: &str, accepted, errors: &[String], warnings: &[String]| Verdict {
            key: key.to_owned(),
            accepted,
            errors: errors.to_vec(),
            warnings: warnings.to_vec(),
            source: source.to_owned(),
            observed_at: now.to_owned(),
        };
        match &document.judged {
            Judged::Accepted {
                key,
                resource,
                warnings,
            } => {
                if let Some(first) = desired.config.get(key) {
                    let error = format!("{key} is already defined in {}", first.file);
                    let verdict_key = document_key(&document.file, document.document);
                    desired
                        .verdicts
                        .insert(verdict_key, verdict(key, false, &[error], warnings));
                    continue;
                }
                desired.config.insert(
                    key.clone(),
                    Published {
                        resource: resource.clone(),
                        file: document.file.clone(),
                    },
                );
                desired
                    .verdicts
                    .insert(key.clone(), verdict(key, true, &[], warnings));
            }
            Judged::Rejected {
                key,
                errors,
                warnings,
            } => {
                if let Some(kept) = previous.get(key) {
                    desired.config.entry(key.clone()).or_insert(kept.clone());
                }
                desired
                    .verdicts
                    .insert(key.clone(), verdict(key, false, errors, warnings));
            }
            Judged::Unreadable { error } => {
                unreadable_files.push(document.file.clone());
                let key = document_key(&document.file, document.document);
                desired.verdicts.insert(
                    key.clone(),
                    verdict(&key, false, std::slice::from_ref(error), &[]),
                );
            }
        }
    }
    // A file with a document nobody can read keeps what it had published
    // and is not now publishing under another document.
    for (key, published) in previous {
        if unreadable_files.contains(&published.file) && !desired.config.contains_key(key) {
            desired.config.insert(key.clone(), published.clone());
        }
    }
    desired
}

/// The verdict key of a document that names no resource of its own (it is
/// unreadable, or a second definition of one): `File/<path>/<document>`,
/// the path's characters outside NATS keys' alphabet replaced by `_`.
pub fn document_key(file: &str, document: usize) -> String {
    let path: Vec<String> = file
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(key_safe)
        .collect();
    format!("File/{}/{document}", path.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-11-22T10:00:00Z";

    fn doc(file: &str, document: usize, judged: Judged) -> ScannedDocument {
        ScannedDocument::in_file(file, document, judged)
    }

    fn accepted(key: &str, weight: u32) -> Judged {
        Judged::Accepted {
            key: key.into(),
            resource: json!({ "weight": weight }),
            warnings: vec![],
        }
    }

    fn rejected(key: &str) -> Judged {
        Judged::Rejected {
            key: key.into(),
            errors: vec!["spec.http[0].route[0].weight: more than 100".into()],
            warnings: vec![],
        }
    }

    #[test]
    fn valid_resources_are_published_with_an_accepting_verdict() {
        let scan = [doc("a.yaml", 1, accepted("VirtualService/shop/a", 90))];
        let desired = reconcile(&BTreeMap::new(), &scan, NOW);
        assert_eq!(
            desired.config["VirtualService/shop/a"].resource["weight"],
            90
        );
        let verdict = &desired.verdicts["VirtualService/shop/a"];
        assert!(verdict.accepted);
        assert_eq!(verdict.source, "dir:a.yaml#1");
    }

    #[test]
    fn an_invalid_edit_keeps_the_last_valid_version() {
        let before = reconcile(
            &BTreeMap::new(),
            &[doc("a.yaml", 1, accepted("VirtualService/shop/a", 90))],
            NOW,
        );
        let after = reconcile(
            &before.config,
            &[doc("a.yaml", 1, rejected("VirtualService/shop/a"))],
            NOW,
        );
        assert_eq!(after.config["VirtualService/shop/a"].resource["weight"], 90);
        let verdict = &after.verdicts["VirtualService/shop/a"];
        assert!(!verdict.accepted);
        assert!(verdict.errors[0].starts_with("spec.http[0].route[0].weight"));
    }

    #[test]
    fn an_invalid_new_resource_is_not_published() {
        let desired = reconcile(
            &BTreeMap::new(),
            &[doc("a.yaml", 1, rejected("VirtualService/shop/a"))],
            NOW,
        );
        assert!(desired.config.is_empty());
        assert!(!desired.verdicts["VirtualService/shop/a"].accepted);
    }

    #[test]
    fn a_removed_resource_is_deleted() {
        let before = reconcile(
            &BTreeMap::new(),
            &[
                doc("a.yaml", 1, accepted("VirtualService/shop/a", 90)),
                doc("a.yaml", 2, accepted("VirtualService/shop/b", 10)),
            ],
            NOW,
        );
        let after = reconcile(
            &before.config,
            &[doc("a.yaml", 1, accepted("VirtualService/shop/a", 90))],
            NOW,
        );
        assert!(!after.config.contains_key("VirtualService/shop/b"));
        assert!(!after.verdicts.contains_key("VirtualService/shop/b"));
    }

    #[test]
    fn an_unreadable_document_keeps_everything_its_file_published() {
        let before = reconcile(
            &BTreeMap::new(),
            &[
                doc("a.yaml", 1, accepted("VirtualService/shop/a", 90)),
                doc("b.yaml", 1, accepted("VirtualService/shop/b", 10)),
                doc("c.yaml", 1, accepted("VirtualService/shop/c", 10)),
            ],
            NOW,
        );
        let unreadable = Judged::Unreadable {
            error: "line 3: mapping values are not allowed here".into(),
        };
        // a.yaml now fails to read; c.yaml was removed.
        let after = reconcile(
            &before.config,
            &[
                doc("a.yaml", 1, unreadable),
                doc("b.yaml", 1, accepted("VirtualService/shop/b", 10)),
            ],
            NOW,
        );
        assert!(after.config.contains_key("VirtualService/shop/a"));
        assert!(!after.config.contains_key("VirtualService/shop/c"));
        assert!(!after.verdicts["File/a.yaml/1"].accepted);
    }

    #[test]
    fn a_second_definition_of_a_key_is_rejected_and_the_first_kept() {
        let desired = reconcile(
            &BTreeMap::new(),
            &[
                doc("a.yaml", 1, accepted("VirtualService/shop/a", 90)),
                doc("b.yaml", 1, accepted("VirtualService/shop/a", 10)),
            ],
            NOW,
        );
        assert_eq!(
            desired.config["VirtualService/shop/a"].resource["weight"],
            90
        );
        assert!(desired.verdicts["VirtualService/shop/a"].accepted);
        let duplicate = desired
            .verdicts
            .values()
            .find(|verdict| !verdict.accepted)
            .expect("a verdict for the duplicate");
        assert!(duplicate.errors[0].contains("already defined in a.yaml"));
    }

    #[test]
    fn unreadable_keys_use_only_characters_nats_allows() {
        assert_eq!(document_key("my dir/ä b.yaml", 2), "File/my_dir/__b.yaml/2");
    }
}
