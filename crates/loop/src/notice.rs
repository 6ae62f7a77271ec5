//! What a run tells its caller besides its results: where it writes, the
//! seed it drew, what it removed or wrote, warnings. Library code never
//! prints; it sends [`Notice`]s to the caller's [`Notices`] sink, and the
//! `kiln` binary prints them on stderr (`kiln: …`, `warning: …`).
use std::path::PathBuf;
use std::sync::Arc;

/// One thing a run has to say.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A new run writes into this directory.
    RunDir(PathBuf),
    /// A run continues from a checkpoint.
    Resuming {
        /// The run directory.
        run: PathBuf,
        /// The checkpoint it continues from.
        checkpoint: PathBuf,
    },
    /// A resumed run trains with hyperparameters given again instead of the
    /// checkpoint's (`lr 0.001 → 0.1`).
    NewHyperparameters(Vec<String>),
    /// A resumed run has no checkpoint yet: it starts over with its saved config.
    NoCheckpointYet(PathBuf),
    /// The seed the run uses (drawn from the OS when not given).
    Seed(u64),
    /// A file left by an interrupted write was removed.
    Removed(PathBuf),
    /// A file the run wrote at its end (a plot, the trained module).
    Wrote(PathBuf),
    /// `kiln sample` draws from this checkpoint, decoding with this
    /// vocabulary (sample.py's `Loading meta from …`).
    Sampling {
        /// The checkpoint directory.
        checkpoint: PathBuf,
        /// Its `meta.pkl`.
        meta: PathBuf,
    },
    /// The model's summary table (Lightning's `ModelSummary`, several
    /// lines), shown at the start of a run.
    ModelSummary(String),
    /// Something the user should know; the run goes on.
    Warning(String),
    /// A profiler's report at the end of a run (`--profile simple`:
    /// Lightning's table, several lines), shown as it is.
    Profile(String),
    /// This rank of a data-parallel job failed and is ending the job (the
    /// CLI prints it as the job's error, in one write).
    RankFailed {
        /// This rank.
        rank: usize,
        /// Ranks in the job.
        world: usize,
        /// The error, on one line.
        error: String,
    },
}

impl Notice {
    /// Whether this is a warning (the CLI prefixes it `warning:`).
    pub fn is_warning(&self) -> bool {
        matches!(self, Notice::Warning(_))
    }
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::RunDir(dir) => write!(f, "run directory {}", dir.display()),
            Notice::Resuming { run, checkpoint } => write!(
                f,
                "resuming {} from {}",
                run.display(),
                checkpoint.display()
            ),
            Notice::NoCheckpointYet(run) => write!(
                f,
                "{} has no checkpoint yet; starting it from the beginning with its saved config",
                run.display()
            ),
            Notice::NewHyperparameters(changes) => write!(
                f,
                "resuming with new optimizer settings: {}",
                changes.join(", ")
            ),
            Notice::Seed(seed) => write!(f, "seed set to {seed}"),
            Notice::Removed(path) => write!(
                f,
                "removed {} (left by an interrupted write)",
                path.display()
            ),
            Notice::Wrote(path) => write!(f, "wrote {}", path.display()),
            Notice::Sampling { checkpoint, meta } => write!(
                f,
                "sampling from {} (vocabulary {})",
                checkpoint.display(),
                meta.display()
            ),
            Notice::ModelSummary(table) => f.write_str(table),
            Notice::Warning(text) | Notice::Profile(text) => f.write_str(text),
            Notice::RankFailed { rank, world, error } => {
                // A mismatch this rank reports already names it.
                if error.starts_with(&format!("rank {rank} of {world} ")) {
                    f.write_str(error)
                } else {
                    write!(f, "rank {rank} of {world}: {error}")
                }
            }
        }
    }
}

/// Where notices go: a function of the caller's (cheap to clone, usable
/// from any thread).
#[derive(Clone)]
pub struct Notices(Arc<dyn Fn(&Notice) + Send + Sync>);

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notices")
    }
}

impl Default for Notices {
    /// Notices nobody reads.
    fn default() -> Self {
        Self::ignore()
    }
}

impl Notices {
    /// Sends every notice to `sink`.
    pub fn new(sink: impl Fn(&Notice) + Send + Sync + 'static) -> Self {
        Self(Arc::new(sink))
    }

    /// Drops every notice.
    pub fn ignore() -> Self {
        Self::new(|_| {})
    }

    /// Sends `notice`.
    pub fn send(&self, notice: Notice) {
        (self.0)(&notice);
    }

    /// Sends a warning.
    pub fn warn(&self, text: impl Into<String>) {
        self.send(Notice::Warning(text.into()));
    }
}
