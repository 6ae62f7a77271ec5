//! What a run writes while it trains: `config.json`, the metric files,
//! TensorBoard, and what it shows on stdout — all callbacks of the Trainer.
use super::dir::RunDir;
use super::plan::RunPlan;
use super::RunConfig;
use crate::checkpoint::Progress;
use crate::loggers::metrics_log::Formats;
use crate::loggers::{JsonLines, MetricsLogger, NanoGptPrinter, TutorialPrinter};
use crate::notice::Notices;
use crate::profiler::{Profile, TraceProfiler};
use crate::{Callback, Result, Trainer};
use std::io::Write;

/// What a run shows on stdout (the caller's choice; library code never
/// writes to the process's stdout or stderr on its own).
#[derive(Default)]
pub enum Display {
    /// Nothing.
    #[default]
    Quiet,
    /// The tutorial's lines (nanoGPT's when training on random batches),
    /// into this writer.
    Tutorial(Box<dyn Write + Send>),
    /// One JSON object per event, into this writer.
    Json(Box<dyn Write + Send>),
    /// A progress bar on the terminal; data-parallel ranks (which MPI
    /// gives a pseudo-terminal each) print the tutorial's lines into the
    /// writer instead.
    Terminal(Box<dyn Write + Send>),
}

impl std::fmt::Debug for Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Display::Quiet => "Quiet",
            Display::Tutorial(_) => "Tutorial",
            Display::Json(_) => "Json",
            Display::Terminal(_) => "Terminal",
        })
    }
}

/// Writes the run's `config.json` when training actually starts (after a
/// resumed checkpoint was restored), so a start that fails changes nothing.
struct ConfigWriter<'r> {
    dir: &'r RunDir,
    config: RunConfig,
}

impl Callback for ConfigWriter<'_> {
    fn on_run_start(&mut self, _start: &Progress) -> Result<()> {
        self.dir.write_config(&self.config)
    }
}

/// Adds the callbacks of a run in `dir` (rank 0, not a dry run):
/// `config.json`, the metric files and TensorBoard, each continuing after
/// `resume_step` when the run resumes.
pub(super) fn attach<'a>(
    mut trainer: Trainer<'a>,
    plan: &RunPlan,
    dir: &'a RunDir,
    resume_step: Option<usize>,
    notices: &Notices,
) -> Result<Trainer<'a>> {
    let config = &plan.config;
    trainer = trainer.callback(ConfigWriter {
        dir,
        config: config.clone(),
    });
    let loggers = config.logger;
    if loggers.jsonl || loggers.csv {
        let formats = Formats {
            jsonl: loggers.jsonl,
            csv: loggers.csv,
        };
        trainer = trainer.callback(match resume_step {
            Some(step) => MetricsLogger::resume(dir.path(), formats, step, notices.clone()),
            None => MetricsLogger::create(dir.path(), formats, notices.clone()),
        });
    }
    #[cfg(feature = "tensorboard")]
    if loggers.tensorboard {
        use crate::loggers::tensorboard::{TensorBoardConfig, TensorBoardLogger};
        let tb = TensorBoardConfig {
            log_every_n_steps: config.log_every_n_steps as u64,
            flags: Some(config.to_json()?),
            histograms: config.log_histograms,
            ..TensorBoardConfig::default()
        };
        trainer = trainer.callback(match resume_step {
            Some(step) => TensorBoardLogger::resume(dir.path(), step as u64, tb, notices.clone())?,
            None => TensorBoardLogger::create(dir.path(), tb, notices.clone())?,
        });
    }
    #[cfg(not(feature = "tensorboard"))]
    if loggers.tensorboard {
        return Err(crate::Error::Usage(
            "--logger tensorboard: this kiln was built without the `tensorboard` feature of kiln-loop".into(),
        ));
    }
    Ok(trainer)
}

/// Adds `--profile trace`'s recorder (rank 0) when the run writes into
/// `dir`; a run that writes nothing (`--dry-run`) is told it gets no trace.
pub(super) fn profile<'a>(
    trainer: Trainer<'a>,
    plan: &RunPlan,
    dir: Option<&RunDir>,
    device: kiln_tensor::Device,
    notices: &Notices,
) -> Trainer<'a> {
    let Some(Profile::Trace { steps, skip }) = plan.config.profile else {
        return trainer;
    };
    match dir {
        Some(dir) => trainer.callback(TraceProfiler::new(
            dir.path(),
            steps,
            skip,
            device.is_cuda(),
            notices.clone(),
        )),
        None => {
            notices.warn("--profile trace: --dry-run writes nothing, so no trace is recorded");
            trainer
        }
    }
}

/// The JSON log's `start` event: the run directory (`null` when nothing
/// is written), the seed, whether the run resumed.
pub(super) fn start_event(
    run_dir: Option<&RunDir>,
    seed: u64,
    resumed: bool,
) -> serde_json::Map<String, serde_json::Value> {
    let mut start = serde_json::Map::new();
    start.insert(
        "run_dir".into(),
        run_dir.map_or(serde_json::Value::Null, |d| {
            d.path().display().to_string().into()
        }),
    );
    start.insert("seed".into(), seed.into());
    start.insert("resumed".into(), resumed.into());
    start
}

/// Adds what `display` asks for on stdout (rank 0); `data_parallel` ranks
/// get no progress bar, whose length is `train_batches`; training on
/// `random_batches` (nanoGPT's `get_batch`) prints nanoGPT's lines instead
/// of the tutorial's or a bar. The JSON log's `start` event carries
/// `start` (the run directory, the seed).
pub(super) fn show<'a>(
    trainer: Trainer<'a>,
    display: Display,
    data_parallel: bool,
    (train_batches, random_batches): (usize, bool),
    start: serde_json::Map<String, serde_json::Value>,
) -> Trainer<'a> {
    match display {
        Display::Quiet => trainer,
        Display::Json(out) => trainer.callback(JsonLines::new(out).start(start)),
        Display::Tutorial(out) | Display::Terminal(out) if random_batches => {
            trainer.callback(NanoGptPrinter::new(out))
        }
        Display::Tutorial(out) => trainer.callback(TutorialPrinter::new(out)),
        Display::Terminal(out) if data_parallel => trainer.callback(TutorialPrinter::new(out)),
        #[cfg(feature = "progress")]
        Display::Terminal(out) => {
            trainer.callback(crate::loggers::ProgressPrinter::new(train_batches, out))
        }
        #[cfg(not(feature = "progress"))]
        Display::Terminal(out) => {
            let _ = train_batches;
            trainer.callback(TutorialPrinter::new(out))
        }
    }
}
