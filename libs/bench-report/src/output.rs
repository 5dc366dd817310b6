//! Where reports go: `target/bench/<name>.json` in the workspace.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// Writes `report` (pretty, with a final newline) to
/// `<target dir>/bench/<name>.json`; returns the path.
pub fn write_json(name: &str, report: &Value) -> std::io::Result<PathBuf> {
    let directory = target_dir().join("bench");
    std::fs::create_dir_all(&directory)?;
    let path = directory.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&path, text + "\n")?;
    Ok(path)
}

/// The workspace's target directory: `CARGO_TARGET_DIR` when set, else
/// `target/` beside the workspace's `Cargo.lock` (found by walking up from
/// this crate, which always is built inside the workspace it reports on).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    workspace_root(Path::new(env!("CARGO_MANIFEST_DIR"))).join("target")
}

/// The nearest directory at or above `start` holding a `Cargo.lock`; `start`
/// itself when none does.
fn workspace_root(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(start)
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dir_is_beside_the_workspace_lock_file() {
        let root = workspace_root(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(root.join("Cargo.lock").is_file());
        assert!(root.join("libs/bench-report").is_dir());
    }
}
