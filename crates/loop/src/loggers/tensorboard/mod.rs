//! TensorBoard logs: event files as PyTorch's `SummaryWriter` writes them,
//! and [`TensorBoardLogger`], the training loop's TensorBoard callback.
//!
//! - [`SummaryWriter`] (in `writer.rs`): `add_scalar`, `add_histogram`,
//!   `add_text`, `add_hparams`, `flush`, `close`, usable without a
//!   [`Trainer`](crate::Trainer); [`SummaryWriter::resume`] continues a log
//!   after a restart with PyTorch's `purge_step` mechanism.
//! - [`events`]: file names, TFRecord framing (masked CRC-32C) and a reader.
//! - [`histogram`]: PyTorch's `bins='tensorflow'` histogram, bit for bit.
//! - [`hparams`]: the HParams plugin's summaries.
//! - [`proto`]: the protobuf messages, declared with `prost`'s derive.
//!
//! # What the logger writes
//!
//! | tag | when | value |
//! | --- | --- | --- |
//! | `train/loss` | every `log_every_n_steps`-th optimizer step (steps 50, 100, … by default) | that step's training loss |
//! | `train/lr` | same steps, when the optimizer has one | learning rate of the first parameter group |
//! | `train/samples_per_sec` | same steps | training samples per second since the previous logged step |
//! | `train/grad_norm` | same steps, when clipping by norm | total gradient norm before clipping |
//! | `epoch` | same steps | the epoch (1-based), as Lightning logs it |
//! | `test/<metric>`, `val/<metric>` | after every evaluation, at its step | each metric of the evaluation by set: `test_loss` → `test/loss`, `test_accuracy` → `test/accuracy`, `val_loss` → `val/loss`, `test_top5_accuracy` → `test/top5_accuracy` |
//! | `params/<name>`, `grads/<name>` | with histograms on (`--log-histograms`): the gradients the last optimizer step of each epoch used (after clipping), at that step; the parameters at each epoch end | histogram of each parameter (PyTorch's dotted name) and of its gradient |
//! | `config/text_summary` | at the start of a run and of each resumed part, at its first step | the run's flags as pretty JSON in a Markdown code block |
//!
//! At the end of a run (and again at the end of a resumed one), the
//! sub-run `hparams/` gets the HParams plugin's session: the flags as
//! hyperparameters (nested objects flattened with `/`, see
//! [`hparams::hparams_from_json`]) and as metrics `hparam/train_loss` (the
//! last training loss) and `hparam/<metric>` for each metric of the last
//! evaluation (`hparam/test_loss`, `hparam/accuracy`…). TensorBoard's HParams
//! tab then lists one row per run directory under its `--logdir`.
//!
//! # Resume
//!
//! [`TensorBoardLogger::resume`] opens a new event file in the same
//! directory whose first events are the `file_version` and a
//! `SessionLog.START` at `resume_step + 1` (PyTorch's
//! `SummaryWriter(purge_step=resume_step + 1)`): readers drop every event of
//! the older files with a step after the checkpoint, which the resumed run
//! writes again, so a killed and resumed run reads as one curve. The older
//! files are never modified.
//!
//! TensorBoard's server (its Python loader) takes the *first* `START` of a
//! run for the run's beginning and purges only at later ones, so a PyTorch
//! log started without `purge_step` is not cleaned up at its first resume
//! (`EventAccumulator` purges at any `START`). [`TensorBoardLogger::create`]
//! therefore writes a `START` at step 0 (as TensorFlow's session supervisor
//! did), and the resume's is a restart for both readers. TensorBoard's Rust
//! data server ignores `SessionLog` but drops a tag's points when the same
//! tag goes back in steps, which a resumed run also does as it logs the same
//! steps again.
//!
//! # Cost
//!
//! Logging a scalar encodes one small protobuf into a memory buffer (no
//! system call); a background thread writes the buffer every
//! [`TensorBoardConfig::flush_interval`] (5 s by default) and the logger
//! flushes at every epoch end and at the end of the run. Nothing is created
//! (no file, no thread) until the run starts (`on_run_start`, or the first
//! write through the API), so a run that fails to start leaves no file and a
//! process that does not log (a data-parallel rank other than 0) pays
//! nothing.
pub mod events;
pub mod histogram;
pub mod hparams;
pub mod proto;
mod writer;

pub use hparams::{hparams_from_json, HParamValue};
pub use writer::{SummaryWriter, WriterOptions, TEXT_TAG_SUFFIX};

use crate::checkpoint::Progress;
use crate::notice::Notices;
use crate::{BeforeStep, Callback, EvalInfo, FitSummary, Model, Result, StepInfo};
use kiln_tensor::params::NamedParameter;
use kiln_tensor::Tensor;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Tag of the training loss.
pub const TRAIN_LOSS: &str = "train/loss";
/// Tag of the learning rate.
pub const TRAIN_LR: &str = "train/lr";
/// Tag of the training throughput.
pub const TRAIN_SAMPLES_PER_SEC: &str = "train/samples_per_sec";
/// Tag of the gradient norm before clipping.
pub const TRAIN_GRAD_NORM: &str = "train/grad_norm";
/// Tag of the epoch number.
pub const EPOCH: &str = "epoch";
/// Group of the evaluation metrics (`test/loss`…).
pub const TEST_GROUP: &str = "test/";
/// Group of the parameter histograms.
pub const PARAMS_GROUP: &str = "params/";
/// Group of the gradient histograms.
pub const GRADS_GROUP: &str = "grads/";
/// Tag (before `/text_summary`) of the run's flags.
pub const CONFIG_TAG: &str = "config";
/// Sub-run holding the HParams session.
pub const HPARAMS_RUN: &str = "hparams";
/// Prefix of the metrics in the HParams session.
pub const HPARAM_METRIC_PREFIX: &str = "hparam/";

/// The tag of evaluation metric `name`, grouped by evaluation set:
/// `test_loss` → `test/loss`, `val_accuracy` → `val/accuracy`; a name
/// without a set goes under `test/`.
pub fn eval_tag(name: &str) -> String {
    match name.split_once('_') {
        Some((set, metric)) if !set.is_empty() && !metric.is_empty() => format!("{set}/{metric}"),
        _ => format!("{TEST_GROUP}{name}"),
    }
}

/// What [`TensorBoardLogger`] writes and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBoardConfig {
    /// Log the training scalars at optimizer steps that are multiples of
    /// this (Lightning's `log_every_n_steps`, default 50; 0 = never).
    pub log_every_n_steps: u64,
    /// How often buffered events are written out (default 5 s).
    pub flush_interval: Duration,
    /// The run's flags (a JSON object): written as text at the start and as
    /// the hyperparameters at the end. `None` writes neither.
    pub flags: Option<serde_json::Value>,
    /// Histograms of every parameter and gradient at each epoch end
    /// (`--log-histograms`).
    pub histograms: bool,
}

impl Default for TensorBoardConfig {
    fn default() -> Self {
        Self {
            log_every_n_steps: 50,
            flush_interval: Duration::from_secs(5),
            flags: None,
            histograms: false,
        }
    }
}

/// The training loop's TensorBoard callback (see the module docs for the
/// tags). Each hook calls a plain method, which other loops can call too.
pub struct TensorBoardLogger {
    /// Opened on first use (see the module docs).
    writer: Option<SummaryWriter>,
    log_dir: PathBuf,
    options: WriterOptions,
    histograms: bool,
    /// The optimizer steps taken, as the last batch reported them.
    step: u64,
    log_every_n_steps: u64,
    flags: Option<serde_json::Value>,
    hparams: Vec<(String, HParamValue)>,
    /// Samples and seconds since the last logged step (throughput).
    interval_samples: f64,
    interval_secs: f64,
    last_train_loss: Option<f64>,
    last_eval: Vec<(String, f64)>,
    notices: Notices,
}

impl TensorBoardLogger {
    /// Starts a log in `log_dir` (created if missing; a run directory, so
    /// that `tensorboard --logdir runs/` lists each run by its name).
    ///
    /// The new file starts with a `SessionLog.START` at step 0, which hides
    /// any older event files in `log_dir` and lets a later
    /// [`resume`](Self::resume) work in TensorBoard's server, which treats a
    /// run's first `START` as its beginning and only later ones as restarts.
    /// Nothing is written until the run starts.
    pub fn create(log_dir: &Path, config: TensorBoardConfig, notices: Notices) -> Result<Self> {
        Self::open(log_dir, Some(0), config, notices)
    }

    /// Continues the log of a run resumed from its checkpoint at
    /// `resume_step`: events after that step in the directory's older files
    /// are hidden from readers (see the module docs).
    pub fn resume(
        log_dir: &Path,
        resume_step: u64,
        config: TensorBoardConfig,
        notices: Notices,
    ) -> Result<Self> {
        Self::open(
            log_dir,
            Some(resume_step.saturating_add(1)),
            config,
            notices,
        )
    }

    fn open(
        log_dir: &Path,
        purge_step: Option<u64>,
        config: TensorBoardConfig,
        notices: Notices,
    ) -> Result<Self> {
        let hparams = match &config.flags {
            Some(flags) => hparams_from_json(flags)?,
            None => Vec::new(),
        };
        Ok(Self {
            writer: None,
            log_dir: log_dir.to_path_buf(),
            options: WriterOptions {
                flush_interval: config.flush_interval,
                purge_step,
                filename_suffix: String::new(),
            },
            histograms: config.histograms,
            step: purge_step.map_or(0, |s| s.saturating_sub(1)),
            log_every_n_steps: config.log_every_n_steps,
            flags: config.flags,
            hparams,
            interval_samples: 0.0,
            interval_secs: 0.0,
            last_train_loss: None,
            last_eval: Vec::new(),
            notices,
        })
    }

    /// The underlying writer, to log more (opened now if it was not yet).
    pub fn writer(&mut self) -> Result<&mut SummaryWriter> {
        if self.writer.is_none() {
            let mut writer = SummaryWriter::with_options(&self.log_dir, &self.options)?;
            writer.set_notices(self.notices.clone());
            self.writer = Some(writer);
        }
        self.writer.as_mut().ok_or_else(|| {
            crate::Error::InvalidArgument("the TensorBoard writer could not be opened".into())
        })
    }

    /// Writes the flags as text (`config/text_summary`) at `step`; nothing
    /// without flags.
    pub fn log_flags(&mut self, step: u64) -> Result<()> {
        let Some(flags) = &self.flags else {
            return Ok(());
        };
        let pretty = serde_json::to_string_pretty(flags).unwrap_or_else(|_| flags.to_string());
        let text = format!("```json\n{pretty}\n```");
        self.writer()?.add_text(CONFIG_TAG, &text, step)
    }

    /// Counts a training batch of `batch_len` samples that ran at
    /// `samples_per_sec`, for `train/samples_per_sec`. Call it for every
    /// batch, before [`log_train_step`](Self::log_train_step).
    pub fn record_batch(&mut self, batch_len: usize, samples_per_sec: f64) {
        if samples_per_sec.is_finite() && samples_per_sec > 0.0 {
            self.interval_samples += batch_len as f64;
            self.interval_secs += batch_len as f64 / samples_per_sec;
        }
    }

    /// After optimizer step `step`: writes `train/loss`, `train/lr`,
    /// `train/samples_per_sec`, `train/grad_norm` and `epoch` when `step` is
    /// a multiple of `log_every_n_steps`.
    pub fn log_train_step(
        &mut self,
        step: u64,
        epoch: u64,
        loss: f64,
        lr: Option<f64>,
        grad_norm: Option<f64>,
    ) -> Result<()> {
        self.last_train_loss = Some(loss);
        if self.log_every_n_steps == 0 || !step.is_multiple_of(self.log_every_n_steps) {
            return Ok(());
        }
        self.writer()?.add_scalar(TRAIN_LOSS, loss, step)?;
        if let Some(lr) = lr {
            self.writer()?.add_scalar(TRAIN_LR, lr, step)?;
        }
        if self.interval_secs > 0.0 {
            let rate = self.interval_samples / self.interval_secs;
            self.writer()?
                .add_scalar(TRAIN_SAMPLES_PER_SEC, rate, step)?;
        }
        self.interval_samples = 0.0;
        self.interval_secs = 0.0;
        if let Some(norm) = grad_norm {
            self.writer()?.add_scalar(TRAIN_GRAD_NORM, norm, step)?;
        }
        self.writer()?.add_scalar(EPOCH, epoch as f64, step)
    }

    /// After an evaluation at `step`: every metric as `test/<name>` (see
    /// [`eval_tag`]); the last evaluation's metrics go to the hparams.
    pub fn log_eval(&mut self, step: u64, metrics: &[(String, f64)]) -> Result<()> {
        for (name, value) in metrics {
            self.writer()?.add_scalar(&eval_tag(name), *value, step)?;
        }
        self.last_eval = metrics.to_vec();
        Ok(())
    }

    /// Histograms of each parameter (`params/<name>`) and of its gradient
    /// when it has one (`grads/<name>`), at `step`.
    pub fn log_histograms(&mut self, params: &[(String, Tensor)], step: u64) -> Result<()> {
        self.log_parameter_histograms(params, step)?;
        self.log_gradient_histograms(params, step)
    }

    /// Histograms of each parameter's values (`params/<name>`) at `step`.
    pub fn log_parameter_histograms(
        &mut self,
        params: &[(String, Tensor)],
        step: u64,
    ) -> Result<()> {
        for (name, param) in params {
            self.writer()?
                .add_histogram(&format!("{PARAMS_GROUP}{name}"), param, step)?;
        }
        Ok(())
    }

    /// Histograms of each parameter's gradient (`grads/<name>`), for those
    /// that have one, at `step`.
    pub fn log_gradient_histograms(
        &mut self,
        params: &[(String, Tensor)],
        step: u64,
    ) -> Result<()> {
        for (name, param) in params {
            let grad = param.f_grad()?;
            if grad.defined() {
                self.writer()?
                    .add_histogram(&format!("{GRADS_GROUP}{name}"), &grad, step)?;
            }
        }
        Ok(())
    }

    /// The metrics the HParams session reports: `hparam/train_loss` and
    /// `hparam/<metric>` for each metric of the last evaluation.
    pub fn final_metrics(&self) -> Vec<(String, f64)> {
        let mut metrics: Vec<(String, f64)> = self
            .last_train_loss
            .map(|l| (format!("{HPARAM_METRIC_PREFIX}train_loss"), l))
            .into_iter()
            .collect();
        for (name, value) in &self.last_eval {
            let tag = format!("{HPARAM_METRIC_PREFIX}{name}");
            if !metrics.iter().any(|(t, _)| *t == tag) {
                metrics.push((tag, *value));
            }
        }
        metrics
    }

    /// At the end of the run (after `step` optimizer steps): the HParams
    /// session in the `hparams/` sub-run (when the logger has flags), then
    /// a flush.
    pub fn finish(&mut self, step: u64) -> Result<()> {
        if self.flags.is_some() {
            let metrics = self.final_metrics();
            let hparams = std::mem::take(&mut self.hparams);
            let written = self
                .writer()?
                .add_hparams(&hparams, &metrics, HPARAMS_RUN, step);
            self.hparams = hparams;
            written?;
        }
        self.flush()
    }

    /// Writes everything queued to the file now.
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.writer {
            Some(writer) => writer.flush(),
            None => Ok(()),
        }
    }

    /// Flushes, syncs and closes the event file.
    pub fn close(self) -> Result<()> {
        match self.writer {
            Some(writer) => writer.close(),
            None => Ok(()),
        }
    }
}

impl Callback for TensorBoardLogger {
    fn on_run_start(&mut self, start: &Progress) -> Result<()> {
        self.step = start.step as u64;
        self.writer()?;
        self.log_flags(start.step as u64)?;
        self.flush()
    }

    fn on_before_optimizer_step(
        &mut self,
        info: &BeforeStep,
        params: &[NamedParameter],
    ) -> Result<()> {
        // The epoch's last gradients, as the optimizer uses them; written
        // before the epoch-end checkpoint, at the step they make.
        if self.histograms && info.last_in_epoch {
            let named: Vec<(String, Tensor)> = params
                .iter()
                .map(|p| (p.name.clone(), p.tensor.shallow_clone()))
                .collect();
            self.log_gradient_histograms(&named, info.step as u64 + 1)?;
        }
        Ok(())
    }

    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        self.step = info.step as u64;
        self.record_batch(info.batch_len, info.samples_per_sec);
        if !info.stepped {
            return Ok(());
        }
        self.log_train_step(
            info.step as u64,
            info.epoch as u64,
            info.loss,
            info.lr,
            info.grad_norm,
        )
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> Result<()> {
        self.log_eval(info.step as u64, &info.metrics)
    }

    fn on_epoch_end(&mut self, _epoch: usize, model: &dyn Model) -> Result<()> {
        if self.histograms {
            let params: Vec<(String, Tensor)> = model
                .parameters()?
                .into_iter()
                .map(|p| (p.name, p.tensor))
                .collect();
            self.log_parameter_histograms(&params, self.step)?;
        }
        self.flush()
    }

    fn on_before_checkpoint(&mut self, _progress: &Progress) -> Result<()> {
        match &mut self.writer {
            Some(writer) => writer.sync(),
            None => Ok(()),
        }
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> Result<()> {
        self.finish(summary.steps as u64)
    }
}
