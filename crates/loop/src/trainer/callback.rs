//! Hooks into a fit, and what they are told.
use crate::checkpoint::Progress;
use crate::{Model, Result};
use kiln_tensor::params::NamedParameter;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a training batch reports to callbacks.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Batch index within the epoch (0-based).
    pub batch: usize,
    /// Samples in this batch.
    pub batch_len: usize,
    /// Samples in the training set (this rank's shard when data-parallel).
    pub dataset_len: usize,
    /// Optimizer steps taken so far (after this batch).
    pub step: usize,
    /// Whether this batch ended with an optimizer step.
    pub stepped: bool,
    /// Whether the step was skipped because the scaled gradients were not
    /// finite (mixed precision with a gradient scaler); never true otherwise.
    pub skipped: bool,
    /// The batch's loss (before dividing for accumulation).
    pub loss: f64,
    /// The step's extra metrics on this batch ([`crate::step::StepOutput::metric`]).
    pub metrics: Vec<(String, f64)>,
    /// Learning rate of the first param group this batch trained with
    /// (before its scheduler step, as Lightning's `LearningRateMonitor`).
    pub lr: Option<f64>,
    /// Total gradient norm before clipping, when `clip_grad_norm` is set.
    pub grad_norm: Option<f64>,
    /// Training throughput since the previous batch.
    pub samples_per_sec: f64,
    /// Whether the log interval asks for this batch to be reported.
    pub log: bool,
    /// Where this batch's time went.
    pub timings: StepTimings,
}

/// Where a training batch's wall-clock time went, in seconds.
///
/// Measured with [`std::time::Instant`] around the phases of the step
/// (a few clock reads per batch). libtorch runs CPU kernels synchronously,
/// so on the CPU each phase is the time its kernels took; on CUDA, kernels
/// are asynchronous and the phases are mostly launch time, while `total`
/// stays right over many batches (reading the loss synchronises).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimings {
    /// From the end of the previous batch to the end of this one: the
    /// reciprocal of the throughput, including callbacks and bookkeeping.
    pub total: f64,
    /// Assembling the batch (the data loader's `next`).
    pub data: f64,
    /// Forward pass and loss (every evaluation of a closure optimizer).
    pub forward: f64,
    /// Backward pass (every evaluation of a closure optimizer).
    pub backward: f64,
    /// The optimizer: `step()` (a closure optimizer's own work, without its
    /// forward and backward passes) and `zero_grad()`; with a gradient
    /// scaler, its `step` and `update`.
    pub optimizer: f64,
}

impl StepTimings {
    /// Everything else: reading the loss, gradient averaging and clipping,
    /// schedulers, callbacks, metrics and checkpoints.
    pub fn other(&self) -> f64 {
        (self.total - self.data - self.forward - self.backward - self.optimizer).max(0.0)
    }
}

/// One phase of a fit summed over its calls, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PhaseTime {
    /// How many times the phase ran.
    pub calls: usize,
    /// Seconds over all of them.
    pub total: f64,
}

impl PhaseTime {
    /// Counts one call that took `seconds`.
    pub fn add(&mut self, seconds: f64) {
        self.calls += 1;
        self.total += seconds;
    }

    /// Seconds per call (0 before the first).
    pub fn mean(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.total / self.calls as f64
        }
    }
}

/// Where a whole fit's wall-clock time went: the training batches'
/// [`StepTimings`] summed, and the phases around them, measured where they
/// run. What `--profile simple` reports ([`crate::profiler::simple_report`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FitTimings {
    /// [`StepTimings::data`], one call per training batch.
    pub data: PhaseTime,
    /// [`StepTimings::forward`], one call per training batch.
    pub forward: PhaseTime,
    /// [`StepTimings::backward`], one call per training batch.
    pub backward: PhaseTime,
    /// [`StepTimings::optimizer`], one call per optimizer step.
    pub optimizer: PhaseTime,
    /// Each evaluation's loops over its sets (their batches, forward
    /// passes and metrics; not the callbacks told of it).
    pub evaluation: PhaseTime,
    /// Each checkpoint: gathering the state, writing it, pruning old ones
    /// (not the callbacks' flush before it).
    pub checkpoint: PhaseTime,
    /// Each round of callbacks: loggers, the progress display, metric files.
    pub logging: PhaseTime,
    /// The fit from its start to its end.
    pub wall: f64,
}

impl FitTimings {
    /// The phases by name, in the order they come in a step.
    pub fn phases(&self) -> [(&'static str, PhaseTime); 7] {
        [
            ("data", self.data),
            ("forward", self.forward),
            ("backward", self.backward),
            ("optimizer", self.optimizer),
            ("evaluation", self.evaluation),
            ("checkpoint", self.checkpoint),
            ("logging", self.logging),
        ]
    }

    /// Adds a training batch's timings (the optimizer's only when it stepped).
    pub(crate) fn add_batch(&mut self, batch: &StepTimings, stepped: bool) {
        self.data.add(batch.data);
        self.forward.add(batch.forward);
        self.backward.add(batch.backward);
        if stepped {
            self.optimizer.add(batch.optimizer);
        }
    }
}

/// What an optimizer step is about to use, for
/// [`Callback::on_before_optimizer_step`].
#[derive(Debug, Clone, Copy)]
pub struct BeforeStep {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Batch index within the epoch.
    pub batch: usize,
    /// Optimizer steps taken before this one.
    pub step: usize,
    /// Whether this is the last optimizer step of the epoch.
    pub last_in_epoch: bool,
}

/// What an evaluation reports to callbacks.
#[derive(Debug, Clone)]
pub struct EvalInfo {
    /// Epoch of the evaluation (1-based).
    pub epoch: usize,
    /// Optimizer steps taken so far.
    pub step: usize,
    /// Metric values by name (`test_loss`, `test_accuracy`, `val_loss`, …),
    /// sorted by name.
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

/// Why a fit ended. Serialised with a `reason` tag
/// (`{"reason":"early_stopped","epoch":3,"monitor":"val_loss"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// All epochs ran.
    Completed,
    /// `max_steps` was reached.
    MaxSteps {
        /// The limit.
        max_steps: usize,
    },
    /// Early stopping triggered after this epoch.
    EarlyStopped {
        /// The epoch after which it stopped.
        epoch: usize,
        /// The metric that stopped improving.
        monitor: String,
        /// Its best value.
        best: Option<f64>,
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
    /// A signal (SIGINT, SIGTERM) asked the run to stop; the current step
    /// was finished and a checkpoint written.
    Interrupted {
        /// The signal number.
        signal: i32,
        /// The epoch in progress.
        epoch: usize,
        /// Optimizer steps taken.
        step: usize,
    },
    /// A callback asked the fit to stop ([`Callback::should_stop`]), after
    /// this step; a checkpoint was written there.
    Requested {
        /// The epoch in progress.
        epoch: usize,
        /// Optimizer steps taken.
        step: usize,
    },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Completed => write!(f, "all epochs completed"),
            StopReason::MaxSteps { max_steps } => write!(f, "reached max steps ({max_steps})"),
            StopReason::EarlyStopped {
                epoch,
                monitor,
                best,
            } => {
                write!(
                    f,
                    "early stopping after epoch {epoch}: {monitor} stopped improving"
                )?;
                match best {
                    Some(b) => write!(f, " (best {b:.6})"),
                    None => Ok(()),
                }
            }
            StopReason::NonFiniteLoss {
                epoch,
                batch,
                step,
                loss,
            } => write!(
                f,
                "training loss became {loss} at epoch {epoch}, batch {batch} (after {step} steps)"
            ),
            StopReason::Interrupted {
                signal,
                epoch,
                step,
            } => write!(
                f,
                "interrupted ({}) at epoch {epoch} step {step}",
                signal_name(*signal)
            ),
            StopReason::Requested { epoch, step } => {
                write!(f, "a callback asked to stop at epoch {epoch} step {step}")
            }
        }
    }
}

/// `SIGINT`, `SIGTERM`, or the number.
pub fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
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
    /// Where the fit's time went.
    pub timings: FitTimings,
}

/// Hooks into a fit; every method has a no-op default. Loggers and progress
/// displays are callbacks.
pub trait Callback {
    /// Before the first batch (also after a resume, with its progress).
    fn on_run_start(&mut self, _start: &Progress) -> Result<()> {
        Ok(())
    }
    /// An epoch begins from its first batch.
    fn on_epoch_start(&mut self, _epoch: usize) -> Result<()> {
        Ok(())
    }
    /// The gradients an optimizer step is about to use (averaged over ranks,
    /// unscaled and clipped); called once per evaluation of the loss, so
    /// several times per step for closure optimizers (LBFGS).
    fn on_before_optimizer_step(
        &mut self,
        _info: &BeforeStep,
        _params: &[NamedParameter],
    ) -> Result<()> {
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
    /// After an epoch (and its evaluation), with the model.
    fn on_epoch_end(&mut self, _epoch: usize, _model: &dyn Model) -> Result<()> {
        Ok(())
    }
    /// Before a checkpoint at `progress` is written: make every record up
    /// to it durable (flush files), so that a run killed at any moment and
    /// resumed from that checkpoint has each step logged exactly once.
    fn on_before_checkpoint(&mut self, _progress: &Progress) -> Result<()> {
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
    /// Whether the fit should stop (Lightning's `trainer.should_stop`):
    /// asked after every optimizer step and at each epoch end; the fit
    /// ends there with [`StopReason::Requested`], checkpointed like an
    /// interrupt.
    fn should_stop(&self) -> bool {
        false
    }
}
