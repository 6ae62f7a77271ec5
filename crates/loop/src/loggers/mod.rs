//! What a run shows and records, as [`crate::Callback`]s: the tutorial's
//! lines (nanoGPT's for random batches), a progress bar, JSON lines on
//! stdout, and the metric files.
pub mod json_lines;
pub mod metrics_log;
pub mod printer;
#[cfg(feature = "progress")]
pub mod progress;
#[cfg(feature = "tensorboard")]
pub mod tensorboard;

pub use json_lines::JsonLines;
pub use metrics_log::MetricsLogger;
pub use printer::{NanoGptPrinter, TutorialPrinter};
#[cfg(feature = "progress")]
pub use progress::ProgressPrinter;

use crate::EvalInfo;

/// The evaluation sets of `info`, in order of appearance (`val`, `test`),
/// read from the `{set}_loss` metric names.
pub(crate) fn eval_sets(info: &EvalInfo) -> Vec<&str> {
    let mut sets: Vec<&str> = info
        .metrics
        .iter()
        .filter_map(|(name, _)| name.strip_suffix("_loss"))
        .collect();
    // Validation before test, as a run reports them.
    sets.sort_by_key(|s| (*s != "val", *s != "test", s.to_string()));
    sets
}
