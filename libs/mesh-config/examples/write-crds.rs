//! Rewrites the generated CRDs from the config model: `make crds`.
//!
//! They are written twice: to `deploy/crds/` (plain files for `kubectl
//! apply -f`) and to `deploy/kubernetes/base/crds/` with a
//! `kustomization.yaml` listing them, because kustomize loads nothing from
//! outside a kustomization's root.

use std::path::{Path, PathBuf};

use mesh_config::Kind;
use mesh_config::crd::{self, CRD_DIRS};

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in CRD_DIRS {
        write_dir(&root.join(dir))?;
    }
    let path = root.join(CRD_DIRS[1]).join("kustomization.yaml");
    std::fs::write(&path, crd::kustomization_yaml())?;
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
