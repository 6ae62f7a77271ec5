//! The `Trainer`: the tutorial's loop with what a long run needs — step and
//! batch limits, gradient accumulation, clipping, lr schedules, evaluation
//! schedules, early stopping, non-finite loss detection, interrupts,
//! callbacks and checkpoints that resume bit for bit, data parallelism.
//!
//! What a batch computes is a [`Step`] (kiln's own, [`crate::step::LossStep`],
//! or a crate's); the Trainer owns everything around it. The code is split
//! by phase: `update.rs` turns a batch into gradients and an optimizer step
//! (the one place optimizers and precisions differ), `fit.rs` runs the
//! phases of a fit (restore, epoch, after a step, end of epoch, end),
//! [`config`] holds the settings and [`callback`] the hooks.
mod averaging;
pub mod callback;
pub mod config;
mod fit;
mod update;

pub use callback::{
    signal_name, BeforeStep, Callback, EvalInfo, FitSummary, FitTimings, PhaseTime, StepInfo,
    StepTimings, StopReason,
};
pub use config::{Averaging, CheckpointConfig, EarlyStopping, Interval, Mode, Swa, TrainerConfig};

use crate::checkpoint::Checkpoint;
use crate::distributed::DataParallel;
use crate::metrics::{Accuracy, MeanLoss, Metric, StepMetric};
use crate::step::Step;
use crate::{DataLoader, Error, Model, Result};
use kiln_optim::scheduler::LrScheduler;
use kiln_optim::Optimizer;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// The data of a fit: the training loader and the named evaluation loaders
/// (`("val", …)`, `("test", …)`), evaluated in that order; their metrics are
/// reported as `{name}_{metric}` (`val_loss`, `test_accuracy`).
#[derive(Debug, Clone, Copy)]
pub struct Loaders<'l> {
    /// Batches to train on.
    pub train: &'l DataLoader,
    /// Evaluation sets by name.
    pub eval: &'l [(&'l str, &'l DataLoader)],
}

impl Loaders<'_> {
    /// The evaluation sets' names, in order.
    pub fn eval_names(&self) -> Vec<&str> {
        self.eval.iter().map(|(n, _)| *n).collect()
    }
}

/// Drives training; build it with [`Trainer::new`] and add callbacks.
pub struct Trainer<'a> {
    config: TrainerConfig,
    callbacks: Vec<Box<dyn Callback + 'a>>,
    metrics: Vec<Box<dyn Metric>>,
    run_config: serde_json::Value,
    scheduler: Option<(Box<dyn LrScheduler + 'a>, Interval)>,
    data_parallel: Option<DataParallel<'a>>,
    interrupt: Option<Arc<AtomicUsize>>,
    grad_scaler: Option<kiln_optim::amp::GradScaler>,
    checkpoint_dir: Option<PathBuf>,
    step_metrics: Vec<String>,
    /// Time in callbacks during the current fit (the `logging` phase).
    logging: PhaseTime,
}

impl<'a> Trainer<'a> {
    /// A trainer with `config` (validated), evaluating loss and accuracy.
    /// Installs kiln's CPU allocator unless `KILN_CPU_ALLOCATOR=libtorch`
    /// ([`kiln_tensor::memory::install_from_env`]; [`crate::run::Components::build`] does so
    /// before it loads the data and builds the model).
    pub fn new(config: TrainerConfig) -> Result<Self> {
        config.validate()?;
        kiln_tensor::memory::install_from_env().map_err(|e| Error::Usage(e.to_string()))?;
        Ok(Self {
            config,
            callbacks: Vec::new(),
            metrics: vec![Box::new(MeanLoss::default()), Box::new(Accuracy::default())],
            run_config: serde_json::Value::Null,
            scheduler: None,
            data_parallel: None,
            interrupt: None,
            grad_scaler: None,
            checkpoint_dir: None,
            step_metrics: Vec::new(),
            logging: PhaseTime::default(),
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

    /// Adds a boxed callback (called in the order added).
    pub fn boxed_callback(mut self, callback: Box<dyn Callback + 'a>) -> Self {
        self.callbacks.push(callback);
        self
    }

    /// Replaces the evaluation metrics (default: loss and accuracy).
    pub fn metrics(mut self, metrics: Vec<Box<dyn Metric>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Adds an evaluation metric (besides loss and accuracy).
    pub fn metric(mut self, metric: impl Metric + 'static) -> Self {
        self.metrics.push(Box::new(metric));
        self
    }

    /// Writes checkpoints into `run_dir/checkpoints`, as the config's
    /// [`CheckpointConfig`] says (without a directory nothing is written).
    pub fn checkpoint_dir(mut self, run_dir: impl Into<PathBuf>) -> Self {
        self.checkpoint_dir = Some(run_dir.into());
        self
    }

    /// Also reports the extra metrics `names` a custom [`Step`] gives
    /// ([`crate::step::StepOutput::metric`]), averaged over each
    /// evaluation's batches, so they can be monitored (early stopping,
    /// best checkpoint) like the built-in ones.
    pub fn step_metrics(mut self, names: &[&str]) -> Self {
        for name in names {
            if !self.step_metrics.iter().any(|n| n == name) {
                self.step_metrics.push(name.to_string());
                self.metrics.push(Box::new(StepMetric::new(*name)));
            }
        }
        self
    }

    /// The run's configuration, stored in every checkpoint.
    pub fn run_config(mut self, config: serde_json::Value) -> Self {
        self.run_config = config;
        self
    }

    /// Trains data-parallel as PyTorch's `DistributedDataParallel`: every
    /// rank's model must match rank 0's, whose parameters and buffers are
    /// broadcast at the start; gradients are averaged over ranks in buckets
    /// summed during backward ([`crate::distributed::Reducer`]), buffers
    /// follow rank 0 before forwards, a NaN loss on any rank stops all, and
    /// evaluation metrics are summed over ranks. The loaders should read shards
    /// ([`DataLoader::distributed`]).
    pub fn data_parallel(mut self, dp: DataParallel<'a>) -> Self {
        self.data_parallel = Some(dp);
        self
    }

    /// Stops cleanly when `flag` becomes non-zero (a signal number, set by a
    /// signal handler): the current optimizer step finishes, a checkpoint is
    /// written and the fit returns [`StopReason::Interrupted`].
    pub fn interrupt_flag(mut self, flag: Arc<AtomicUsize>) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// Scales losses and unscales gradients with `scaler` (its own
    /// settings) instead of the default `torch.amp.GradScaler` that the
    /// `16-mixed` precision gets; its state is checkpointed.
    pub fn grad_scaler(mut self, scaler: kiln_optim::amp::GradScaler) -> Self {
        self.grad_scaler = Some(scaler);
        self
    }

    /// The settings.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The metric names evaluations over `eval_sets` will report
    /// (`{set}_{metric}`), in order.
    pub fn metric_names(&self, eval_sets: &[&str]) -> Vec<String> {
        eval_sets
            .iter()
            .flat_map(|set| {
                self.metrics
                    .iter()
                    .map(move |m| format!("{set}_{}", m.name()))
            })
            .collect()
    }

    /// Every check that needs more than the settings, each condition
    /// written once (the run layer calls this before anything is written,
    /// `fit` again): every monitored metric is one the evaluations over
    /// `eval_sets` report, the precision can run on the model's device, its
    /// gradient scaler can drive the optimizer, and a closure optimizer is
    /// not asked to accumulate. Errors are [`Error::Setting`]s.
    pub fn check(
        &self,
        model: &dyn Model,
        optimizer: &dyn Optimizer,
        eval_sets: &[&str],
    ) -> Result<()> {
        self.config.validate()?;
        let names = self.metric_names(eval_sets);
        for (setting, monitor) in self.config.monitored() {
            if !names.iter().any(|n| n == monitor) {
                let known = if names.is_empty() {
                    "none: nothing is evaluated".to_string()
                } else {
                    names.join(", ")
                };
                return Err(Error::setting(
                    setting,
                    format!(
                        "monitors '{monitor}', which this run does not report; it reports {known}"
                    ),
                ));
            }
        }
        let device = model.device();
        let precision = self.config.precision;
        precision
            .check(device)
            .map_err(|e| Error::setting("precision", format!("{precision}: {e}")))?;
        let default_scaler = match &self.grad_scaler {
            Some(_) => None,
            None => kiln_optim::amp::GradScaler::for_precision(precision, device)
                .map_err(|e| Error::setting("precision", format!("{precision}: {e}")))?,
        };
        if let Some(scaler) = self.grad_scaler.as_ref().or(default_scaler.as_ref()) {
            scaler.check_optimizer(optimizer).map_err(|e| {
                Error::setting(
                    "precision",
                    format!(
                        "{precision} scales gradients, which the optimizer {} does not allow: {e}",
                        optimizer.name()
                    ),
                )
            })?;
        }
        if optimizer.requires_closure() && self.config.accumulate_grad_batches > 1 {
            return Err(Error::setting(
                "accumulate_grad_batches",
                format!(
                    "cannot be used with {}: it re-evaluates the loss itself; drop the accumulation",
                    optimizer.name()
                ),
            ));
        }
        Ok(())
    }

    /// Trains `model` with `step` (kiln's [`crate::step::LossStep`] or a
    /// crate's own) from scratch, or from `resume` (a loaded checkpoint,
    /// whose model, optimizer, scheduler, generators and loop state are
    /// restored first).
    pub fn fit(
        &mut self,
        model: &mut dyn Model,
        step: &dyn Step,
        optimizer: &mut dyn Optimizer,
        data: Loaders<'_>,
        resume: Option<Checkpoint>,
    ) -> Result<FitSummary> {
        fit::Fit::new(self, model, step, optimizer, data)?.run(resume)
    }

    /// Calls every callback, timing the round as the `logging` phase.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Callback) -> Result<()>) -> Result<()> {
        let clock = std::time::Instant::now();
        let result = self.callbacks.iter_mut().try_for_each(|c| f(c.as_mut()));
        self.logging.add(clock.elapsed().as_secs_f64());
        result
    }
}
