//! The `Trainer`: the tutorial's loop with the things a long run needs —
//! step and batch limits, gradient accumulation, evaluation schedules,
//! early stopping, non-finite loss detection, callbacks and checkpoints
//! that resume bit for bit.
use crate::checkpoint::{self, Checkpoint, Progress};
use crate::distributed::DataParallel;
use crate::metrics::{Accuracy, MeanLoss, Metric};
use crate::train::{loss_line, test_report};
use crate::{DataLoader, Error, Result};
use kiln_losses::Loss;
use kiln_optim::scheduler::LrScheduler;
use kiln_optim::Optimizer;
use kiln_tensor::nn::{ModuleT, VarStore};
use kiln_tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Whether a smaller or a larger value of a monitored metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Smaller is better (losses).
    Min,
    /// Larger is better (accuracies).
    Max,
}

impl Mode {
    fn improves(self, value: f64, best: Option<f64>, min_delta: f64) -> bool {
        match best {
            None => value.is_finite(),
            Some(best) => match self {
                Mode::Min => value < best - min_delta,
                Mode::Max => value > best + min_delta,
            },
        }
    }
}

/// When the lr scheduler steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// After every optimizer step.
    Step,
    /// After every epoch (after its evaluation; ReduceLROnPlateau gets the
    /// monitored metric, `test_loss` unless early stopping names another).
    Epoch,
}

/// Stop when a monitored evaluation metric has not improved by more than
/// `min_delta` for `patience` evaluations (Lightning's `EarlyStopping`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Metric name: `test_loss`, `accuracy`, `top5_accuracy`…
    pub monitor: String,
    /// Direction of improvement.
    pub mode: Mode,
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

/// Where and how often to write checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// The run directory (`checkpoints/` is created inside).
    pub run_dir: PathBuf,
    /// Also write one every this many optimizer steps (always at epoch ends).
    pub every_steps: Option<usize>,
    /// How many of the newest checkpoints to keep.
    pub keep_last: usize,
    /// Also keep the best checkpoint by this evaluation metric.
    pub keep_best: Option<(String, Mode)>,
}

/// The Trainer's settings; `Default` is the tutorial's job (5 epochs, a log
/// line every 100 batches, evaluation after every epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Train on at most this many batches per epoch.
    pub limit_train_batches: Option<usize>,
    /// Evaluate on at most this many batches.
    pub limit_test_batches: Option<usize>,
    /// Batches whose gradients are summed per optimizer step (1 = none);
    /// each batch's loss is divided by this before `backward`.
    pub accumulate_grad_batches: usize,
    /// Report the training loss every this many batches.
    pub log_every: usize,
    /// Evaluate after every this many epochs (0 = never at epoch ends).
    pub eval_every_epochs: usize,
    /// Also evaluate every this many optimizer steps.
    pub eval_every_steps: Option<usize>,
    /// Early stopping, if any.
    pub early_stopping: Option<EarlyStopping>,
    /// Stop at the first NaN or infinite training loss (without stepping on it).
    pub stop_on_nonfinite: bool,
    /// Clip each gradient element to [-v, v] before stepping (`clip_grad_value_`).
    pub clip_grad_value: Option<f64>,
    /// Rescale gradients so their total 2-norm is at most this (`clip_grad_norm_`).
    pub clip_grad_norm: Option<f64>,
    /// Checkpointing, if any.
    pub checkpoint: Option<CheckpointConfig>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            max_steps: None,
            limit_train_batches: None,
            limit_test_batches: None,
            accumulate_grad_batches: 1,
            log_every: 100,
            eval_every_epochs: 1,
            eval_every_steps: None,
            early_stopping: None,
            stop_on_nonfinite: true,
            clip_grad_value: None,
            clip_grad_norm: None,
            checkpoint: None,
        }
    }
}

impl TrainerConfig {
    /// One batch of training and one of evaluation, to check a setup quickly.
    pub fn dry_run(mut self) -> Self {
        self.epochs = 1;
        self.limit_train_batches = Some(1);
        self.limit_test_batches = Some(1);
        self
    }

    /// Rejects settings that cannot work, naming them.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.into()));
        if self.accumulate_grad_batches == 0 {
            return bad("accumulate_grad_batches must be at least 1");
        }
        if self.log_every == 0 {
            return bad("log_every must be at least 1");
        }
        if self.eval_every_steps == Some(0)
            || self
                .checkpoint
                .as_ref()
                .is_some_and(|c| c.every_steps == Some(0))
        {
            return bad("an every-N-steps interval must be at least 1");
        }
        if self.checkpoint.as_ref().is_some_and(|c| c.keep_last == 0) {
            return bad("keep_last must be at least 1 (the newest checkpoint is what resume uses)");
        }
        if self
            .early_stopping
            .as_ref()
            .is_some_and(|e| e.patience == 0)
        {
            return bad("early stopping patience must be at least 1");
        }
        let positive = |v: Option<f64>| v.is_none_or(|v| v.is_finite() && v > 0.0);
        if !positive(self.clip_grad_norm) || !positive(self.clip_grad_value) {
            return bad("gradient clipping thresholds must be finite and positive");
        }
        Ok(())
    }
}

/// What a training step reports to callbacks.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Batch index within the epoch (0-based).
    pub batch: usize,
    /// Samples in this batch.
    pub batch_len: usize,
    /// Samples in the training set.
    pub dataset_len: usize,
    /// Optimizer steps taken so far (after this batch).
    pub step: usize,
    /// Whether this batch ended with an optimizer step.
    pub stepped: bool,
    /// The batch's loss (before dividing for accumulation).
    pub loss: f64,
    /// Learning rate of the first param group.
    pub lr: Option<f64>,
    /// Total gradient norm before clipping, when `clip_grad_norm` is set.
    pub grad_norm: Option<f64>,
    /// Training throughput since the previous batch.
    pub samples_per_sec: f64,
    /// Whether the log interval asks for this batch to be reported.
    pub log: bool,
}

/// What an evaluation reports to callbacks.
#[derive(Debug, Clone)]
pub struct EvalInfo {
    /// Epoch of the evaluation (1-based).
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: usize,
    /// Metric values by name (`test_loss`, `accuracy`, …), sorted by name.
    pub metrics: Vec<(String, f64)>,
    /// Whether this is the end-of-epoch evaluation.
    pub end_of_epoch: bool,
}

impl EvalInfo {
    /// A metric's value by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// Why a fit ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// `max_steps` was reached.
    MaxSteps,
    /// Early stopping triggered after this epoch.
    EarlyStopped {
        /// The epoch after which it stopped.
        epoch: usize,
    },
    /// The training loss was NaN or infinite at this batch; no step was
    /// taken on it and no checkpoint written after it.
    NonFiniteLoss {
        /// Epoch of the offending batch.
        epoch: usize,
        /// Batch index within the epoch.
        batch: usize,
        /// Optimizer steps completed before it.
        step: usize,
        /// The loss value.
        loss: f64,
    },
}

/// What a fit did.
#[derive(Debug, Clone)]
pub struct FitSummary {
    /// Why it ended.
    pub stop: StopReason,
    /// Optimizer steps taken in total (including before a resume).
    pub steps: usize,
    /// The last evaluation, if any.
    pub last_eval: Option<EvalInfo>,
    /// The newest checkpoint written, if any.
    pub last_checkpoint: Option<PathBuf>,
}

/// Hooks into a run; every method has a no-op default.
pub trait Callback {
    /// Before the first batch (also after a resume, with its progress).
    fn on_run_start(&mut self, _start: &Progress) -> Result<()> {
        Ok(())
    }
    /// An epoch begins from its first batch.
    fn on_epoch_start(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
    /// After each training batch.
    fn on_batch_end(&mut self, _info: &StepInfo) -> Result<()> {
        Ok(())
    }
    /// After each evaluation.
    fn on_eval_end(&mut self, _info: &EvalInfo) -> Result<()> {
        Ok(())
    }
    /// After an epoch (and its evaluation).
    fn on_epoch_end(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
    /// After a checkpoint was written.
    fn on_checkpoint(&mut self, _path: &Path, _progress: &Progress) -> Result<()> {
        Ok(())
    }
    /// After the last batch or evaluation.
    fn on_run_end(&mut self, _summary: &FitSummary) -> Result<()> {
        Ok(())
    }
}

/// Writes the tutorial's lines: `Epoch N` and its rule, `loss: … [current/size]`
/// at each log interval, and the `Test Error` block after each epoch.
pub struct TutorialPrinter<W: std::io::Write> {
    out: W,
}

impl<W: std::io::Write> TutorialPrinter<W> {
    /// Prints to `out`.
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: std::io::Write> Callback for TutorialPrinter<W> {
    fn on_epoch_start(&mut self, epoch: usize) -> Result<()> {
        writeln!(self.out, "Epoch {epoch}\n-------------------------------")?;
        Ok(())
    }

    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        if info.log {
            writeln!(
                self.out,
                "{}",
                loss_line(info.loss, info.batch * info.batch_len, info.dataset_len)
            )?;
        }
        Ok(())
    }

    fn on_eval_end(&mut self, info: &EvalInfo) -> Result<()> {
        let loss = info.get("test_loss").unwrap_or(f64::NAN);
        match info.get("accuracy") {
            Some(accuracy) => writeln!(self.out, "{}", test_report(accuracy, loss))?,
            // Regression: no accuracy to report.
            None => writeln!(self.out, "Test Error: \n Avg loss: {loss:>8.6} \n")?,
        }
        Ok(())
    }

    fn on_run_end(&mut self, summary: &FitSummary) -> Result<()> {
        if let StopReason::Completed | StopReason::MaxSteps | StopReason::EarlyStopped { .. } =
            summary.stop
        {
            writeln!(self.out, "Training completed")?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// One `optimizer.step(closure)` on `batch`, the closure clearing the
/// gradients, recomputing the loss and back-propagating it; returns the
/// loss of the first evaluation, as PyTorch's `step(closure)` does.
fn closure_step(
    model: &dyn ModuleT,
    loss_fn: &dyn Loss,
    optimizer: &mut dyn Optimizer,
    batch: &crate::Batch,
    accumulate: usize,
) -> Result<f64> {
    if accumulate > 1 {
        return Err(Error::InvalidArgument(format!(
            "{} re-evaluates the loss itself and cannot accumulate gradients over batches",
            optimizer.name()
        )));
    }
    let params: Vec<Tensor> = (0..optimizer.num_groups())
        .flat_map(|g| optimizer.group_params(g))
        .map(|p| p.tensor.shallow_clone())
        .collect();
    let mut failure = None;
    let mut closure = || -> kiln_optim::Result<f64> {
        let run = || -> Result<f64> {
            for p in &params {
                kiln_tensor::ops::clear_grad(p)?;
            }
            let loss = loss_fn.forward(&forward(model, &batch.inputs, true)?, &batch.targets)?;
            loss.f_backward()?;
            Ok(loss.f_double_value(&[])?)
        };
        run().map_err(|e| {
            let message = e.to_string();
            failure = Some(e);
            kiln_optim::Error::InvalidArgument(message)
        })
    };
    match optimizer.step_with_closure(&mut closure) {
        Ok(loss) => Ok(loss),
        // Report the loop's own error rather than its text inside the optimizer's.
        Err(err) => Err(failure.unwrap_or(Error::Optim(err))),
    }
}

/// Clips the gradients of every parameter the optimizer updates; returns the
/// total norm when norm clipping is on.
fn clip(optimizer: &dyn Optimizer, cfg: &TrainerConfig) -> Result<Option<f64>> {
    if cfg.clip_grad_value.is_none() && cfg.clip_grad_norm.is_none() {
        return Ok(None);
    }
    let params: Vec<&Tensor> = (0..optimizer.num_groups())
        .flat_map(|g| optimizer.group_params(g))
        .map(|p| &p.tensor)
        .collect();
    if let Some(value) = cfg.clip_grad_value {
        kiln_optim::clip_grad_value_(params.iter().copied(), value)?;
    }
    match cfg.clip_grad_norm {
        Some(max_norm) => {
            let total = kiln_optim::clip_grad_norm_(params.iter().copied(), max_norm, 2.0, false)?;
            Ok(Some(total.f_double_value(&[])?))
        }
        None => Ok(None),
    }
}

/// Runs `model` without letting a libtorch panic escape as a crash.
pub(crate) fn forward(model: &dyn ModuleT, inputs: &Tensor, train: bool) -> Result<Tensor> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.forward_t(inputs, train)
    }))
    .map_err(|payload| {
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("the model panicked");
        Error::Model(text.lines().next().unwrap_or(text).to_string())
    })
}

/// One evaluation pass over at most `limit` batches, accumulating `metrics`
/// (reset first). The loss of each batch is fed to every metric.
pub fn evaluate(
    loader: &DataLoader<'_>,
    model: &dyn ModuleT,
    loss_fn: &dyn Loss,
    metrics: &mut [Box<dyn Metric>],
    limit: Option<usize>,
) -> Result<()> {
    metrics.iter_mut().for_each(|m| m.reset());
    kiln_tensor::tch::no_grad(|| -> Result<()> {
        for batch in loader.iter()?.take(limit.unwrap_or(usize::MAX)) {
            let batch = batch?;
            let pred = forward(model, &batch.inputs, false)?;
            let loss = loss_fn
                .forward(&pred, &batch.targets)?
                .f_double_value(&[])?;
            for m in metrics.iter_mut() {
                m.update(&pred, &batch.targets, loss)?;
            }
        }
        Ok(())
    })
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TrainerState {
    best_monitor: Option<f64>,
    bad_evals: usize,
    best_checkpoint: Option<(PathBuf, f64)>,
    scheduler: Option<serde_json::Value>,
}

/// Drives training; build it with [`Trainer::new`] and add callbacks.
pub struct Trainer<'a> {
    config: TrainerConfig,
    callbacks: Vec<Box<dyn Callback + 'a>>,
    metrics: Vec<Box<dyn Metric>>,
    run_config: serde_json::Value,
    scheduler: Option<(Box<dyn LrScheduler + 'a>, Interval)>,
    data_parallel: Option<DataParallel<'a>>,
}

impl<'a> Trainer<'a> {
    /// A trainer with `config` (validated), evaluating loss and accuracy.
    pub fn new(config: TrainerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            callbacks: Vec::new(),
            metrics: vec![Box::new(MeanLoss::default()), Box::new(Accuracy::default())],
            run_config: serde_json::Value::Null,
            scheduler: None,
            data_parallel: None,
        })
    }

    /// Steps `scheduler` every optimizer step or every epoch. Build it on the
    /// optimizer passed to [`Trainer::fit`] (as in PyTorch, building sets the
    /// initial lr); a resumed run restores its state from the checkpoint.
    pub fn scheduler(mut self, scheduler: Box<dyn LrScheduler + 'a>, interval: Interval) -> Self {
        self.scheduler = Some((scheduler, interval));
        self
    }

    /// Adds a callback (called in the order added).
    pub fn callback(mut self, callback: impl Callback + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// Replaces the evaluation metrics (default: `test_loss` and `accuracy`).
    pub fn metrics(mut self, metrics: Vec<Box<dyn Metric>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Adds an evaluation metric (besides `test_loss` and `accuracy`).
    pub fn metric(mut self, metric: impl Metric + 'static) -> Self {
        self.metrics.push(Box::new(metric));
        self
    }

    /// The run's configuration, stored in every checkpoint.
    pub fn run_config(mut self, config: serde_json::Value) -> Self {
        self.run_config = config;
        self
    }

    /// Trains data-parallel: rank 0's parameters are broadcast at the start,
    /// gradients averaged over ranks before every optimizer step, a NaN loss
    /// on any rank stops all, and evaluation metrics are summed over ranks.
    /// The loaders should read shards ([`DataLoader::distributed`]).
    pub fn data_parallel(mut self, dp: DataParallel<'a>) -> Self {
        self.data_parallel = Some(dp);
        self
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Callback) -> Result<()>) -> Result<()> {
        self.callbacks.iter_mut().try_for_each(|c| f(c.as_mut()))
    }

    /// Trains from scratch, or from `resume` (a loaded checkpoint, whose
    /// model and optimizer state are restored into `vs` and `optimizer`).
    #[allow(clippy::too_many_arguments)]
    pub fn fit(
        &mut self,
        model: &dyn ModuleT,
        vs: &VarStore,
        loss_fn: &dyn Loss,
        optimizer: &mut dyn Optimizer,
        train_loader: &DataLoader<'_>,
        test_loader: &DataLoader<'_>,
        resume: Option<Checkpoint>,
    ) -> Result<FitSummary> {
        let cfg = self.config.clone();
        let mut progress = Progress {
            epoch: 1,
            batch: 0,
            step: 0,
            sampler_seed: None,
        };
        let mut state = TrainerState::default();
        if let Some(ckpt) = resume {
            kiln_tensor::params::load_state_dict(vs, &ckpt.model)?;
            optimizer.load_state_dict(&ckpt.optimizer)?;
            checkpoint::restore_rng(&ckpt.rng_cpu, &ckpt.rng_cuda)?;
            state = serde_json::from_value(ckpt.trainer)
                .map_err(|e| Error::InvalidArgument(format!("checkpoint trainer state: {e}")))?;
            match (&mut self.scheduler, &state.scheduler) {
                (Some((sched, _)), Some(saved)) => sched.load_state_dict(saved)?,
                (Some((sched, _)), None) => {
                    return Err(Error::InvalidArgument(format!(
                        "the checkpoint has no state for the {} scheduler; resume without --scheduler or start a new run",
                        sched.name()
                    )))
                }
                _ => {}
            }
            progress = ckpt.progress;
        }
        if let Some(dp) = &self.data_parallel {
            dp.broadcast_parameters(vs)?;
        }
        let mut summary = FitSummary {
            stop: StopReason::Completed,
            steps: progress.step,
            last_eval: None,
            last_checkpoint: None,
        };
        self.each(|c| c.on_run_start(&progress))?;
        let dataset_len = train_loader.dataset().len();
        let accumulate = cfg.accumulate_grad_batches;
        let batches_per_epoch = train_loader
            .len()
            .min(cfg.limit_train_batches.unwrap_or(usize::MAX));

        'epochs: for epoch in progress.epoch..=cfg.epochs {
            if cfg.max_steps.is_some_and(|m| progress.step >= m) {
                summary.stop = StopReason::MaxSteps;
                break;
            }
            let start_batch = if epoch == progress.epoch {
                progress.batch
            } else {
                0
            };
            // PyTorch's `sampler.set_epoch(epoch)` with 0-based epochs.
            train_loader.set_epoch(epoch.saturating_sub(1) as u64);
            let batches = if start_batch > 0 {
                train_loader.resume(progress.sampler_seed, start_batch)?
            } else {
                self.each(|c| c.on_epoch_start(epoch))?;
                train_loader.iter()?
            };
            let sampler_seed = batches.sampler_seed();
            let mut clock = Instant::now();
            for (offset, batch) in batches
                .take(batches_per_epoch.saturating_sub(start_batch))
                .enumerate()
            {
                let batch_index = start_batch + offset;
                let batch = batch?;
                if optimizer.requires_closure() {
                    // LBFGS: the optimizer re-evaluates the batch's loss itself.
                    let loss_value = closure_step(model, loss_fn, optimizer, &batch, accumulate)?;
                    progress.step += 1;
                    let info = StepInfo {
                        epoch,
                        batch: batch_index,
                        batch_len: batch.len(),
                        dataset_len,
                        step: progress.step,
                        stepped: true,
                        loss: loss_value,
                        lr: optimizer.lr(0),
                        grad_norm: None,
                        samples_per_sec: f64::NAN,
                        log: batch_index % cfg.log_every == 0,
                    };
                    if cfg.stop_on_nonfinite && !loss_value.is_finite() {
                        summary.stop = StopReason::NonFiniteLoss {
                            epoch,
                            batch: batch_index,
                            step: progress.step - 1,
                            loss: loss_value,
                        };
                        break 'epochs;
                    }
                    self.each(|c| c.on_batch_end(&info))?;
                    continue;
                }
                let pred = forward(model, &batch.inputs, true)?;
                let loss = loss_fn.forward(&pred, &batch.targets)?;
                let loss_value = loss.f_double_value(&[])?;
                let nonfinite = match &self.data_parallel {
                    Some(dp) if cfg.stop_on_nonfinite => dp.any(!loss_value.is_finite())?,
                    _ => !loss_value.is_finite(),
                };
                if cfg.stop_on_nonfinite && nonfinite {
                    summary.stop = StopReason::NonFiniteLoss {
                        epoch,
                        batch: batch_index,
                        step: progress.step,
                        loss: loss_value,
                    };
                    break 'epochs;
                }
                if accumulate > 1 {
                    loss.f_div_scalar(accumulate as f64)?.f_backward()?;
                } else {
                    loss.f_backward()?;
                }
                let stepped =
                    (batch_index + 1) % accumulate == 0 || batch_index + 1 == batches_per_epoch;
                let mut grad_norm = None;
                if stepped {
                    // Clipping sees the averaged gradients, as with DDP.
                    if let Some(dp) = &self.data_parallel {
                        dp.average_gradients(vs)?;
                    }
                    grad_norm = clip(optimizer, &cfg)?;
                    optimizer.step()?;
                    optimizer.zero_grad()?;
                    progress.step += 1;
                    if let Some((sched, Interval::Step)) = &mut self.scheduler {
                        if !sched.needs_metric() {
                            sched.step(optimizer)?;
                        }
                    }
                }
                let elapsed = clock.elapsed().as_secs_f64();
                clock = Instant::now();
                let info = StepInfo {
                    epoch,
                    batch: batch_index,
                    batch_len: batch.len(),
                    dataset_len,
                    step: progress.step,
                    stepped,
                    loss: loss_value,
                    lr: optimizer.lr(0),
                    grad_norm,
                    samples_per_sec: if elapsed > 0.0 {
                        batch.len() as f64 / elapsed
                    } else {
                        f64::NAN
                    },
                    log: batch_index % cfg.log_every == 0,
                };
                self.each(|c| c.on_batch_end(&info))?;
                if !stepped {
                    continue;
                }
                let cursor = Progress {
                    epoch,
                    batch: batch_index + 1,
                    step: progress.step,
                    sampler_seed,
                };
                if let Some(every) = cfg.eval_every_steps {
                    if progress.step % every == 0 {
                        let eval =
                            self.eval(model, loss_fn, test_loader, epoch, progress.step, false)?;
                        summary.last_eval = Some(eval);
                    }
                }
                let every = cfg.checkpoint.as_ref().and_then(|c| c.every_steps);
                if every.is_some_and(|n| progress.step % n == 0) {
                    summary.last_checkpoint = Some(self.save(vs, optimizer, &cursor, &mut state)?);
                }
                if cfg.max_steps.is_some_and(|m| progress.step >= m) {
                    summary.stop = StopReason::MaxSteps;
                    if every.is_none_or(|n| progress.step % n != 0) && cfg.checkpoint.is_some() {
                        summary.last_checkpoint =
                            Some(self.save(vs, optimizer, &cursor, &mut state)?);
                    }
                    break 'epochs;
                }
            }

            let mut stop_early = false;
            if cfg.eval_every_epochs > 0 && epoch % cfg.eval_every_epochs == 0 {
                let eval = self.eval(model, loss_fn, test_loader, epoch, progress.step, true)?;
                if let Some(es) = &cfg.early_stopping {
                    let value = eval.get(&es.monitor).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "early stopping monitors '{}', which no metric reports",
                            es.monitor
                        ))
                    })?;
                    if es.mode.improves(value, state.best_monitor, es.min_delta) {
                        state.best_monitor = Some(value);
                        state.bad_evals = 0;
                    } else {
                        state.bad_evals += 1;
                        stop_early = state.bad_evals >= es.patience;
                    }
                }
                summary.last_eval = Some(eval);
            }
            if let Some((sched, Interval::Epoch)) = &mut self.scheduler {
                if sched.needs_metric() {
                    let monitor = cfg
                        .early_stopping
                        .as_ref()
                        .map_or("test_loss", |e| e.monitor.as_str());
                    if let Some(value) = summary
                        .last_eval
                        .as_ref()
                        .filter(|e| e.epoch == epoch)
                        .and_then(|e| e.get(monitor))
                    {
                        sched.step_with_metric(optimizer, value)?;
                    }
                } else {
                    sched.step(optimizer)?;
                }
            }
            self.each(|c| c.on_epoch_end(epoch))?;
            let cursor = Progress {
                epoch: epoch + 1,
                batch: 0,
                step: progress.step,
                sampler_seed: None,
            };
            if cfg.checkpoint.is_some() {
                let path = self.save(vs, optimizer, &cursor, &mut state)?;
                self.track_best(&path, summary.last_eval.as_ref(), &mut state)?;
                summary.last_checkpoint = Some(path);
            }
            if stop_early {
                summary.stop = StopReason::EarlyStopped { epoch };
                break;
            }
        }
        summary.steps = progress.step;
        if let (StopReason::NonFiniteLoss { step, .. }, Some(cfg)) =
            (&summary.stop, &cfg.checkpoint)
        {
            // The parameters after `step` steps gave a non-finite loss: checkpoints
            // of that step or later hold them. Keep only the good ones.
            for dir in checkpoint::list(&cfg.run_dir)? {
                if checkpoint::step_of(&dir).is_some_and(|s| s >= *step) {
                    std::fs::remove_dir_all(&dir).map_err(|e| Error::Data {
                        path: dir.clone(),
                        message: e.to_string(),
                    })?;
                }
            }
            summary.last_checkpoint = checkpoint::list(&cfg.run_dir)?.pop();
        }
        self.each(|c| c.on_run_end(&summary))?;
        Ok(summary)
    }

    fn eval(
        &mut self,
        model: &dyn ModuleT,
        loss_fn: &dyn Loss,
        loader: &DataLoader<'_>,
        epoch: usize,
        step: usize,
        end_of_epoch: bool,
    ) -> Result<EvalInfo> {
        evaluate(
            loader,
            model,
            loss_fn,
            &mut self.metrics,
            self.config.limit_test_batches,
        )?;
        if let Some(dp) = &self.data_parallel {
            dp.reduce_metrics(&mut self.metrics)?;
        }
        let mut metrics: Vec<(String, f64)> =
            self.metrics.iter().map(|m| (m.name(), m.value())).collect();
        metrics.sort_by(|a, b| a.0.cmp(&b.0));
        let info = EvalInfo {
            epoch,
            step,
            metrics,
            end_of_epoch,
        };
        self.each(|c| c.on_eval_end(&info))?;
        Ok(info)
    }

    fn save(
        &mut self,
        vs: &VarStore,
        optimizer: &dyn Optimizer,
        progress: &Progress,
        state: &mut TrainerState,
    ) -> Result<PathBuf> {
        state.scheduler = self.scheduler.as_ref().map(|(s, _)| s.state_dict());
        let Some(cfg) = self.config.checkpoint.clone() else {
            return Err(Error::InvalidArgument(
                "checkpointing is not configured".into(),
            ));
        };
        let (rng_cpu, rng_cuda) = checkpoint::capture_rng()?;
        let ckpt = Checkpoint {
            model: kiln_tensor::params::state_dict(vs)?,
            optimizer: optimizer.state_dict()?,
            rng_cpu,
            rng_cuda,
            progress: progress.clone(),
            trainer: serde_json::to_value(&*state)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            config: self.run_config.clone(),
        };
        let path = checkpoint::save(&cfg.run_dir, &ckpt)?;
        let keep = state.best_checkpoint.as_ref().map(|(p, _)| p.as_path());
        checkpoint::prune(&cfg.run_dir, cfg.keep_last, keep)?;
        self.each(|c| c.on_checkpoint(&path, progress))?;
        Ok(path)
    }

    fn track_best(
        &mut self,
        path: &Path,
        eval: Option<&EvalInfo>,
        state: &mut TrainerState,
    ) -> Result<()> {
        let Some(cfg) = self.config.checkpoint.clone() else {
            return Ok(());
        };
        let (Some((metric, mode)), Some(eval)) = (cfg.keep_best, eval) else {
            return Ok(());
        };
        let Some(value) = eval.get(&metric) else {
            return Ok(());
        };
        if mode.improves(value, state.best_checkpoint.as_ref().map(|(_, v)| *v), 0.0) {
            let old = state.best_checkpoint.replace((path.to_path_buf(), value));
            // The best checkpoint is also recorded in a file a person can read.
            let best = cfg.run_dir.join("best.json");
            let text = serde_json::json!({ "checkpoint": path, "metric": metric, "value": value })
                .to_string();
            std::fs::write(&best, text).map_err(|e| Error::Data {
                path: best.clone(),
                message: e.to_string(),
            })?;
            if let Some((old, _)) = old {
                let newest_kept = checkpoint::list(&cfg.run_dir)?;
                let cut = newest_kept.len().saturating_sub(cfg.keep_last);
                if newest_kept.iter().take(cut).any(|p| *p == old) && old != path {
                    let _ = std::fs::remove_dir_all(&old);
                }
            }
        }
        Ok(())
    }
}
