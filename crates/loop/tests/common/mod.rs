//! Helpers shared by kiln-loop's integration tests (each test file uses some).
#![allow(dead_code)]
use anyhow::Result;
use std::fs;
use std::path::{Path, PathBuf};

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMP/kiln-loop-<pid>-<name>`, emptied first.
    pub fn new(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("kiln-loop-{}-{name}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory; returns its path.
    pub fn file(&self, name: &str, contents: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        fs::write(&path, contents)?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
