//! The `Trainer`: the tutorial's loop with what a long run needs — step and
//! batch limits, gradient accumulation, clipping, lr schedules, evaluation
//! schedules, early stopping, non-finite loss detection, interrupts,
//! callbacks and checkpoints that resume bit for bit, data parallelism.
//!
//! The code is split by phase: [`step`] turns a batch into gradients and an
//! optimizer step (the one place optimizers differ), `fit.rs` runs the
//! phases of a fit (restore, epoch, after a step, end of epoch, end),
//! [`config`] holds the settings and [`callback`] the hooks.
pub mod callback;
pub mod config;
mod fit;
mod step;

pub use callback::{
    signal_name, BeforeStep, Callback, EvalInfo, FitSummary, StepInfo, StepTimings, StopReason,
};
pub use config::{CheckpointConfig, EarlyStopping, Interval, Mode, TrainerConfig};

use crate::checkpoint::Checkpoint;
use crate::distributed::DataParallel;
use crate::metrics::{Accuracy, MeanLoss, Metric};
use crate::{DataLoader, Error, Model, Result};
use kiln_losses::Loss;
use kiln_optim::scheduler::LrScheduler;
use kiln_optim::Optimizer;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// The data of a fit: the training loader and the named evaluation loaders
/// (`("val", …)`, `("test", …)`), evaluated in that order; their metrics are
/// reported as `{name}_{metric}` (`val_loss`, `test_accuracy`).
#[derive(Debug, Clone, Copy)]
pub struct Loaders<'l, 'd> {
    /// Batches to train on.
    pub train: &'l DataLoader<'d>,
    /// Evaluation sets by name.
    pub eval: &'l [(&'l str, &'l DataLoader<'d>)],
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

    /// Writes checkpoints as `checkpoints` says (replacing the config's).
    pub fn checkpoints(mut self, checkpoints: CheckpointConfig) -> Result<Self> {
        self.config.checkpoint = Some(checkpoints);
        self.config.validate()?;
        Ok(self)
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

    /// Errors unless every monitored metric (early stopping, the plateau
    /// monitor, the best checkpoint) is one the evaluations will report,
    /// listing those that are.
    pub fn check_monitors(&self, eval_sets: &[&str]) -> Result<()> {
        let names = self.metric_names(eval_sets);
        for (what, monitor) in self.config.monitored() {
            if !names.iter().any(|n| n == monitor) {
                let known = if names.is_empty() {
                    "none: nothing is evaluated".to_string()
                } else {
                    names.join(", ")
                };
                return Err(Error::InvalidArgument(format!(
                    "{what} monitors '{monitor}', which this run does not report; it reports {known}"
                )));
            }
        }
        Ok(())
    }

    /// Trains `model` from scratch, or from `resume` (a loaded checkpoint,
    /// whose model, optimizer, scheduler, generator and loop state are
    /// restored first).
    pub fn fit(
        &mut self,
        model: &mut dyn Model,
        loss_fn: &dyn Loss,
        optimizer: &mut dyn Optimizer,
        data: Loaders<'_, '_>,
        resume: Option<Checkpoint>,
    ) -> Result<FitSummary> {
        fit::Fit::new(self, model, loss_fn, optimizer, data)?.run(resume)
    }

    fn each(&mut self, mut f: impl FnMut(&mut dyn Callback) -> Result<()>) -> Result<()> {
        self.callbacks.iter_mut().try_for_each(|c| f(c.as_mut()))
    }
}
