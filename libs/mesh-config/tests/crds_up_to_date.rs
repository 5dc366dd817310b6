//! The generated CRDs must be what the config model generates today, or the
//! API server would enforce a schema Trireme no longer parses. They are
//! checked in twice: `deploy/crds/` (plain files) and
//! `deploy/kubernetes/base/crds/` (with the `kustomization.yaml` listing
//! them, since kustomize loads nothing from outside its root).

use std::path::PathBuf;

use mesh_config::Kind;
use mesh_config::crd::{self, CRD_DIRS};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn checked_in_crds_match_the_types() {
    let mut stale = Vec::new();
    for dir in CRD_DIRS {
        for kind in Kind::ALL {
            let path = workspace_root().join(dir).join(crd::file_name(*kind));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            if on_disk != crd::custom_resource_definition_yaml(*kind) {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRDs (run `make crds` and commit the result): {stale:?}"
    );
}

/// The kustomization under `deploy/kubernetes/base/crds/` lists exactly the
/// generated CRDs, so a new kind reaches the manifests too.
#[test]
fn crd_kustomization_lists_every_kind() {
    let expected = crd::kustomization_yaml();
    let path = workspace_root()
        .join(CRD_DIRS[1])
        .join("kustomization.yaml");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        on_disk,
        expected,
        "{} is stale (run `make crds` and commit the result)",
        path.display()
    );
}

#[test]
fn every_served_version_is_listed_with_one_storage_version() {
    for kind in Kind::ALL {
        let crd = crd::custom_resource_definition(*kind);
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let served: Vec<&str> = versions
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(served, kind.info().versions, "{kind:?}");
        let storage = versions.iter().filter(|v| v["storage"] == true).count();
        assert_eq!(storage, 1, "{kind:?} must have exactly one storage version");
    }
}

#[test]
fn schemas_are_structural() {
    fn check(path: &str, schema: &serde_json::Value, problems: &mut Vec<String>) {
        let Some(object) = schema.as_object() else {
            problems.push(format!("{path}: not an object"));
            return;
        };
        for key in ["$ref", "$defs", "const", "nullable", "$schema"] {
            if object.contains_key(key) {
                problems.push(format!("{path}: has {key}"));
            }
        }
        if let Some(t) = object.get("type")
            && !t.is_string()
        {
            problems.push(format!("{path}: type {t} is not a single type"));
        }
        let typed = object.contains_key("type")
            || object.contains_key("x-kubernetes-preserve-unknown-fields")
            || object.contains_key("x-kubernetes-int-or-string");
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        if let Some(properties) = object.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in properties {
                check(&format!("{path}.{name}"), child, problems);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = object.get(key).filter(|c| c.is_object()) {
                check(&format!("{path}[{key}]"), child, problems);
            }
        }
    }
    let mut problems = Vec::new();
    for kind in Kind::ALL {
        let crd = crd::custom_resource_definition(*kind);
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        check(kind.info().kind, schema, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "non-structural schema parts:\n{}",
        problems.join("\n")
    );
}
