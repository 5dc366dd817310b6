//! The directory pilot watches (`--config-dir`): files are replaced
//! atomically (written beside, then renamed) so pilot never reads half a file.

use std::path::{Path, PathBuf};

pub struct ConfigDir {
    dir: tempfile::TempDir,
}

impl Default for ConfigDir {
    fn default() -> Self {
        ConfigDir::new()
    }
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        ConfigDir {
            dir: tempfile::tempdir().expect("a temp dir for config"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates or replaces `name` (which may include subdirectories).
    pub fn write(&self, name: &str, contents: &str) {
        let path = self.file(name);
        let parent = path.parent().expect("files live in the config dir");
        std::fs::create_dir_all(parent).expect("creating config subdirectories");
        let file_name = path.file_name().unwrap().to_string_lossy();
        // A name pilot does not read (neither .yaml, .yml nor .json).
        let staging = parent.join(format!(".{file_name}.partial"));
        std::fs::write(&staging, contents).expect("writing config");
        std::fs::rename(&staging, &path).expect("moving config into place");
    }

    /// Removes `name` if present.
    pub fn remove(&self, name: &str) {
        match std::fs::remove_file(self.file(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {name}: {e}"),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file(name).exists()
    }
}
