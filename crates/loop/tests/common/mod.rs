//! Helpers shared by kiln-loop's integration tests (each test file uses some).
#![allow(dead_code)]
use anyhow::Result;
use std::fs;
use std::path::{Path, PathBuf};

/// Held by every test that seeds or draws from libtorch's global CPU
/// generator (model initialisation, dropout, training, runs) or changes
/// another process-wide setting: all the tests of one process share them.
pub fn global_state() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the test `name` (its path in this binary, `module::test`) alone in
/// a child process and checks that it passed: for tests that measure what
/// the whole process allocates. Returns `false` in that child, where the
/// caller goes on with the test's body, and `true` in the parent.
pub fn in_own_process(name: &str) -> Result<bool> {
    const CHILD: &str = "KILN_LOOP_TEST_ALONE";
    if std::env::var_os(CHILD).is_some() {
        return Ok(false);
    }
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--exact", name, "--test-threads", "1", "--nocapture"])
        .env(CHILD, "1")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() && text.contains("1 passed"),
        "{name}, alone in a process of its own:\n{text}"
    );
    Ok(true)
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMP/kiln-loop-<pid>-<n>-<name>` (`n` counts the directories this
    /// process made, so tests never share one), emptied first.
    pub fn new(name: &str) -> Result<Self> {
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-loop-{}-{n}-{name}", std::process::id()));
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
