//! Rewrites `deploy/crds/` from the config model: `make crds`.

use std::path::PathBuf;

use mesh_config::{Kind, crd};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    std::fs::create_dir_all(&dir)?;
    for kind in Kind::ALL {
        let path = dir.join(crd::file_name(*kind));
        std::fs::write(&path, crd::custom_resource_definition_yaml(*kind))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
