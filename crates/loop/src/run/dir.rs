//! The run directory: a run's identity on disk.
//!
//! A run directory holds `config.json` (the run's [`RunConfig`], written
//! when training starts), `checkpoints/`, the metric files, plots and
//! `best.json`. Nothing inside refers to the directory's own path, so a run
//! can be copied or moved and resumed from any working directory. While a
//! process trains in it, it holds an exclusive OS lock on `RUN/.lock`
//! (released on any exit, even `kill -9`), so a second process on the same
//! run fails at once, naming the first one's pid.
use crate::checkpoint::{self, Checkpoint};
use crate::run::RunConfig;
use crate::{Error, Result};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// File name of the run's configuration.
pub const CONFIG_FILE: &str = "config.json";
const LOCK_FILE: &str = ".lock";

/// A locked run directory.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    // Held for the lifetime of the value: the OS releases it on exit.
    _lock: File,
}

/// Whether `path` holds a run (a config, checkpoints or metrics).
pub fn is_run(path: &Path) -> bool {
    path.join(CONFIG_FILE).exists()
        || path
            .join(crate::loggers::metrics_log::METRICS_FILE)
            .exists()
        || checkpoint::list(path).is_ok_and(|l| !l.is_empty())
}

/// The directory of a command that writes outputs but is no training run
/// (`kiln lr-find`): `path`, created if missing, or a fresh
/// `runs/YYYYMMDD-HHMMSS` named as [`RunDir::create`] names runs. Nothing is
/// written into it (not even a lock); a directory holding a run is refused.
pub fn create_output_dir(path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(path) if is_run(path) => Err(Error::Usage(format!(
            "{} holds a training run; pass another --run-dir",
            path.display()
        ))),
        Some(path) => {
            std::fs::create_dir_all(path).map_err(|e| io_error(path, e))?;
            Ok(path.to_path_buf())
        }
        None => fresh_dir(Path::new("runs")),
    }
}

fn io_error(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

fn already_a_run(path: &Path) -> Error {
    Error::Usage(format!(
        "{} already holds a run; continue it with `kiln train --resume {}` or pass another --run-dir",
        path.display(),
        path.display()
    ))
}

impl RunDir {
    /// A new run in `path`, or in a fresh `runs/YYYYMMDD-HHMMSS` (UTC; `-2`,
    /// `-3`… when runs start in the same second) when `path` is `None`.
    /// Refuses a directory that already holds a run.
    pub fn create(path: Option<&Path>) -> Result<Self> {
        let path = match path {
            Some(path) => {
                if is_run(path) {
                    return Err(already_a_run(path));
                }
                std::fs::create_dir_all(path).map_err(|e| io_error(path, e))?;
                path.to_path_buf()
            }
            None => fresh_dir(Path::new("runs"))?,
        };
        let dir = Self::lock(&path)?;
        // Another process may have started a run here between the check and the lock.
        if is_run(&path) {
            return Err(already_a_run(&path));
        }
        Ok(dir)
    }

    /// An existing run, to resume: it must hold a `config.json`.
    pub fn open(path: &Path) -> Result<Self> {
        check_is_run(path)?;
        Self::lock(path)
    }

    fn lock(path: &Path) -> Result<Self> {
        let lock_path = path.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {pid}")
                };
                return Err(Error::Usage(format!(
                    "{} is in use by {holder}; wait for it to finish or pass another --run-dir",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, e)),
        }
        // Tell a second process who holds the run.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()))
            .and_then(|()| file.flush());
        Ok(Self {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved configuration, its specs resolved by `registries`.
    pub fn read_config(&self, registries: &crate::run::Registries) -> Result<RunConfig> {
        read_config(&self.path, registries)
    }

    /// Writes `config` as the run's `config.json` (atomically).
    pub fn write_config(&self, config: &RunConfig) -> Result<()> {
        let mut text = serde_json::to_string_pretty(&config.to_json()?)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        text.push('\n');
        kiln_tensor::io::write_atomic(&self.path.join(CONFIG_FILE), text.as_bytes())?;
        Ok(())
    }

    /// The newest checkpoint that verifies, skipping (and reporting through
    /// `warn`) newer ones that do not.
    pub fn latest_checkpoint(
        &self,
        warn: &mut dyn FnMut(String),
    ) -> Result<Option<(PathBuf, Checkpoint)>> {
        checkpoint::latest_valid(&self.path, warn)
    }

    /// Removes what interrupted writes left behind (see [`checkpoint::clean_stale`]).
    pub fn clean_stale(&self) -> Result<Vec<PathBuf>> {
        checkpoint::clean_stale(&self.path)
    }
}

/// Errors unless `path` is a run directory one can resume (it has a
/// `config.json`), saying what to do instead.
pub fn check_is_run(path: &Path) -> Result<()> {
    if !path.is_dir() {
        return Err(Error::Usage(format!(
            "--resume {}: no such directory",
            path.display()
        )));
    }
    if !path.join(CONFIG_FILE).is_file() {
        return Err(Error::Usage(format!(
            "--resume {}: not a kiln run directory (it has no {CONFIG_FILE}); start a new run with --run-dir {}",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Reads `DIR/config.json`, its specs resolved by `registries`.
pub fn read_config(dir: &Path, registries: &crate::run::Registries) -> Result<RunConfig> {
    let path = dir.join(CONFIG_FILE);
    let layer = crate::run::Layer::from_file(&path)?;
    RunConfig::from_layers(&[layer], registries)
}

/// Creates `parent/YYYYMMDD-HHMMSS` (UTC), or with `-2`, `-3`… when taken.
fn fresh_dir(parent: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from the Unix day count (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let stamp = format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    for n in 1.. {
        let dir = match n {
            1 => parent.join(&stamp),
            n => parent.join(format!("{stamp}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&dir, e)),
        }
    }
    Err(io_error(parent, "no free run directory name"))
}
