//! Rewrites the generated CRDs from the config model: `make crds`.
//!
//! They are written twice: to `deploy/crds/` (plain files for `kubectl
//! apply -f`) and to `deploy/kubernetes/base/crds/` with a
//! `kustomization.yaml` listing them, because kustomize loads nothing from
//! outside a kustomization's root.

use std::path::{Path, PathBuf};

use mesh_config::{Kind, crd};

/// Where the CRDs go, relative to the workspace root.
const DIRS: [&str; 2] = ["deploy/crds", "deploy/kubernetes/base/crds"];

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in DIRS {
        write_dir(&root.join(dir))?;
    }
    let path = root.join(DIRS[1]).join("kustomization.yaml");
    std::fs::write(&path, crd_kustomization())?;
    println!("wrote {}", path.display());
    Ok(())
}

fn write_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for kind in Kind::ALL {
        let path = dir.join(crd::file_name(*kind));
        std::fs::write(&path, crd::custom_resource_definition_yaml(*kind))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The kustomization listing every generated CRD, in `Kind::ALL` order.
/// Kept identical to what `tests/crds_up_to_date.rs` expects.
fn crd_kustomization() -> String {
    let mut text = String::from(
        "# Generated from Trireme's config model by `make crds`; do not edit.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    for kind in Kind::ALL {
        text.push_str(&format!("  - {}\n", crd::file_name(*kind)));
    }
    text
}
