//! The phases of a fit: restore, epoch, after a step, end of epoch, end.
use super::step::{Outcome, StepPath};
use super::{
    BeforeStep, EvalInfo, FitSummary, Interval, Loaders, StepInfo, StepTimings, StopReason, Trainer,
};
use crate::checkpoint::{self, Checkpoint, Progress};
use crate::distributed::DataParallel;
use crate::{Error, Model, Result, TrainerConfig};
use kiln_losses::Loss;
use kiln_optim::Optimizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the Trainer carries across a checkpoint besides model, optimizer
/// and generators.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TrainerState {
    best_monitor: Option<f64>,
    bad_evals: usize,
    /// The best checkpoint, relative to the run directory, and its value.
    best_checkpoint: Option<(PathBuf, f64)>,
    scheduler: Option<serde_json::Value>,
    /// The gradient scaler's `state_dict()` (PyTorch's keys).
    #[serde(default)]
    grad_scaler: Option<serde_json::Value>,
}

/// One fit in progress: the trainer, what it trains, and where it stands.
pub(super) struct Fit<'f, 'a, 'd> {
    trainer: &'f mut Trainer<'a>,
    cfg: TrainerConfig,
    model: &'f mut dyn Model,
    loss_fn: &'f dyn Loss,
    optimizer: &'f mut dyn Optimizer,
    data: Loaders<'f, 'd>,
    data_parallel: Option<DataParallel<'a>>,
    path: StepPath<'f>,
    progress: Progress,
    state: TrainerState,
    summary: FitSummary,
    batches_per_epoch: usize,
}

impl<'f, 'a, 'd> Fit<'f, 'a, 'd>
where
    'a: 'f,
{
    /// Checks what can be checked before anything runs.
    pub fn new(
        trainer: &'f mut Trainer<'a>,
        model: &'f mut dyn Model,
        loss_fn: &'f dyn Loss,
        optimizer: &'f mut dyn Optimizer,
        data: Loaders<'f, 'd>,
    ) -> Result<Self> {
        let cfg = trainer.config.clone();
        if optimizer.requires_closure() && cfg.accumulate_grad_batches > 1 {
            return Err(Error::InvalidArgument(format!(
                "{} re-evaluates the loss itself and cannot accumulate gradients over batches; drop the accumulation",
                optimizer.name()
            )));
        }
        let names: Vec<&str> = data.eval.iter().map(|(n, _)| *n).collect();
        trainer.check_monitors(&names)?;
        let device = model.device();
        cfg.precision.check(device)?;
        let scaler = match trainer.grad_scaler.take() {
            Some(scaler) => Some(scaler),
            None => kiln_optim::amp::GradScaler::for_precision(cfg.precision, device)?,
        };
        if let Some(scaler) = &scaler {
            scaler.check_optimizer(&*optimizer).map_err(|e| {
                Error::Usage(format!(
                    "precision {} needs a gradient scaler, which cannot drive {}: {e}",
                    cfg.precision,
                    optimizer.name()
                ))
            })?;
        }
        let data_parallel = trainer.data_parallel;
        let clipped = (0..optimizer.num_groups())
            .flat_map(|g| optimizer.group_params(g))
            .map(|p| p.tensor.shallow_clone())
            .collect();
        let params = model.parameters()?;
        let reducer = match data_parallel {
            Some(dp) if dp.world_size() > 1 => Some(dp.reducer(&params)?),
            _ => None,
        };
        let path = StepPath {
            loss_fn,
            data_parallel,
            reducer,
            accumulate: cfg.accumulate_grad_batches,
            stop_on_nonfinite: cfg.stop_on_nonfinite,
            clip_grad_value: cfg.clip_grad_value,
            clip_grad_norm: cfg.clip_grad_norm,
            params,
            clipped,
            precision: cfg.precision,
            device,
            scaler,
            timings: StepTimings::default(),
        };
        let batches_per_epoch = data
            .train
            .len()
            .min(cfg.limit_train_batches.unwrap_or(usize::MAX));
        Ok(Self {
            trainer,
            cfg,
            model,
            loss_fn,
            optimizer,
            data,
            data_parallel,
            path,
            progress: Progress {
                epoch: 1,
                batch: 0,
                step: 0,
                sampler_seed: None,
            },
            state: TrainerState::default(),
            summary: FitSummary {
                stop: StopReason::Completed,
                steps: 0,
                last_eval: None,
                last_checkpoint: None,
            },
            batches_per_epoch,
        })
    }

    /// Restores `resume`, runs the epochs, and ends.
    pub fn run(mut self, resume: Option<Checkpoint>) -> Result<FitSummary> {
        self.restore(resume)?;
        self.trainer.each(|c| c.on_run_start(&self.progress))?;
        let mut stop = StopReason::Completed;
        for epoch in self.progress.epoch..=self.cfg.epochs {
            if let Some(reason) = self.epoch(epoch)? {
                stop = reason;
                break;
            }
        }
        self.finish(stop)
    }

    /// Loads a checkpoint's model, optimizer, generator, scheduler and loop
    /// state; makes the replicas of a data-parallel run identical.
    fn restore(&mut self, resume: Option<Checkpoint>) -> Result<()> {
        if let Some(ckpt) = resume {
            self.model.load_state_dict(&ckpt.model)?;
            self.optimizer.load_state_dict(&ckpt.optimizer)?;
            checkpoint::restore_rng(&ckpt.rng_cpu, &ckpt.rng_cuda)?;
            self.state = serde_json::from_value(ckpt.trainer)
                .map_err(|e| Error::InvalidArgument(format!("checkpoint trainer state: {e}")))?;
            match (&mut self.path.scaler, &self.state.grad_scaler) {
                (Some(scaler), Some(saved)) => scaler.load_state_dict(saved)?,
                (Some(_), None) => {
                    return Err(Error::InvalidArgument(
                        "the checkpoint has no gradient scaler state; resume it with the precision it was trained with".into(),
                    ))
                }
                _ => {}
            }
            match (&mut self.trainer.scheduler, &self.state.scheduler) {
                (Some((sched, _)), Some(saved)) => sched.load_state_dict(saved)?,
                (Some((sched, _)), None) => {
                    return Err(Error::InvalidArgument(format!(
                        "the checkpoint has no state for the {} scheduler; resume without a scheduler or start a new run",
                        sched.name()
                    )))
                }
                _ => {}
            }
            self.progress = ckpt.progress;
        }
        if let Some(dp) = self.data_parallel {
            dp.broadcast_model(&*self.model)?;
        }
        self.summary.steps = self.progress.step;
        Ok(())
    }

    /// One epoch from wherever it stands; `Some` when the fit must stop.
    fn epoch(&mut self, epoch: usize) -> Result<Option<StopReason>> {
        if let Some(max_steps) = self.cfg.max_steps.filter(|m| self.progress.step >= *m) {
            return Ok(Some(StopReason::MaxSteps { max_steps }));
        }
        let start_batch = if epoch == self.progress.epoch {
            self.progress.batch
        } else {
            0
        };
        let train = self.data.train;
        // PyTorch's `sampler.set_epoch(epoch)` with 0-based epochs.
        train.set_epoch(epoch.saturating_sub(1) as u64);
        let batches = if start_batch > 0 {
            train.resume(self.progress.sampler_seed, start_batch)?
        } else {
            self.trainer.each(|c| c.on_epoch_start(epoch))?;
            train.iter()?
        };
        self.model.set_training(true)?;
        let sampler_seed = batches.sampler_seed();
        let dataset_len = train.dataset().len();
        let accumulate = self.cfg.accumulate_grad_batches;
        let per_epoch = self.batches_per_epoch;
        let mut clock = Instant::now();
        let mut batches = batches
            .take(per_epoch.saturating_sub(start_batch))
            .enumerate();
        loop {
            let data_clock = Instant::now();
            let Some((offset, batch)) = batches.next() else {
                break;
            };
            let data = data_clock.elapsed().as_secs_f64();
            let index = start_batch + offset;
            let batch = batch?;
            let step_now = (index + 1) % accumulate == 0 || index + 1 == per_epoch;
            let before = BeforeStep {
                epoch,
                batch: index,
                step: self.progress.step,
                last_in_epoch: index + 1 == per_epoch,
            };
            let trainer = &mut *self.trainer;
            let outcome = self.path.train_batch(
                &*self.model,
                &mut *self.optimizer,
                &batch,
                step_now,
                &mut |params| trainer.each(|c| c.on_before_optimizer_step(&before, params)),
            )?;
            let (loss, stepped, grad_norm, skipped) = match outcome {
                Outcome::NonFinite { loss } => {
                    return Ok(Some(StopReason::NonFiniteLoss {
                        epoch,
                        batch: index,
                        step: self.progress.step,
                        loss,
                    }))
                }
                Outcome::Accumulated { loss } => (loss, false, None, false),
                Outcome::Stepped {
                    loss,
                    grad_norm,
                    skipped,
                } => {
                    self.progress.step += 1;
                    if let Some((sched, Interval::Step)) = &mut self.trainer.scheduler {
                        if !sched.needs_metric() {
                            sched.step(&mut *self.optimizer)?;
                        }
                    }
                    (loss, true, grad_norm, skipped)
                }
            };
            let elapsed = clock.elapsed().as_secs_f64();
            clock = Instant::now();
            let info = StepInfo {
                epoch,
                batch: index,
                batch_len: batch.len(),
                dataset_len,
                step: self.progress.step,
                stepped,
                skipped,
                loss,
                lr: self.optimizer.lr(0),
                grad_norm,
                samples_per_sec: if elapsed > 0.0 {
                    batch.len() as f64 / elapsed
                } else {
                    f64::NAN
                },
                log: index % self.cfg.log_every == 0,
                timings: StepTimings {
                    total: elapsed,
                    data,
                    ..self.path.timings
                },
            };
            self.trainer.each(|c| c.on_batch_end(&info))?;
            if stepped {
                let cursor = Progress {
                    epoch,
                    batch: index + 1,
                    step: self.progress.step,
                    sampler_seed,
                };
                if let Some(stop) = self.after_step(epoch, cursor)? {
                    return Ok(Some(stop));
                }
            }
        }
        self.end_of_epoch(epoch)
    }

    /// What follows every optimizer step, whatever the optimizer: evaluation
    /// and checkpoints every N steps, the step limit, interrupts.
    fn after_step(&mut self, epoch: usize, cursor: Progress) -> Result<Option<StopReason>> {
        let step = cursor.step;
        if self
            .cfg
            .eval_every_steps
            .is_some_and(|n| step.is_multiple_of(n))
        {
            self.evaluate(epoch, false)?;
        }
        let every = self.cfg.checkpoint.as_ref().and_then(|c| c.every_steps);
        let mut saved = false;
        if every.is_some_and(|n| step.is_multiple_of(n)) {
            self.save(&cursor)?;
            saved = true;
        }
        let stop = if let Some(max_steps) = self.cfg.max_steps.filter(|m| step >= *m) {
            Some(StopReason::MaxSteps { max_steps })
        } else {
            self.interrupted(epoch, step)?
        };
        if stop.is_some() && !saved && self.cfg.checkpoint.is_some() {
            self.save(&cursor)?;
        }
        Ok(stop)
    }

    /// The end of an epoch: evaluation, early stopping, the epoch's
    /// scheduler step, callbacks, the checkpoint and the best one.
    fn end_of_epoch(&mut self, epoch: usize) -> Result<Option<StopReason>> {
        let mut stop = None;
        let every = self.cfg.eval_every_epochs;
        let eval = if every > 0 && epoch.is_multiple_of(every) {
            Some(self.evaluate(epoch, true)?)
        } else {
            None
        };
        if let (Some(es), Some(eval)) = (&self.cfg.early_stopping, &eval) {
            let value = eval.get(&es.monitor).unwrap_or(f64::NAN);
            if es
                .mode
                .improves(value, self.state.best_monitor, es.min_delta)
            {
                self.state.best_monitor = Some(value);
                self.state.bad_evals = 0;
            } else {
                self.state.bad_evals += 1;
                if self.state.bad_evals >= es.patience {
                    stop = Some(StopReason::EarlyStopped {
                        epoch,
                        monitor: es.monitor.clone(),
                        best: self.state.best_monitor,
                    });
                }
            }
        }
        if let Some((sched, Interval::Epoch)) = &mut self.trainer.scheduler {
            if sched.needs_metric() {
                let monitor = self
                    .cfg
                    .monitor
                    .as_deref()
                    .or_else(|| self.cfg.early_stopping.as_ref().map(|e| e.monitor.as_str()));
                let default = self.data.eval.first().map(|(n, _)| format!("{n}_loss"));
                let monitor = monitor.or(default.as_deref());
                if let Some(value) = eval.as_ref().zip(monitor).and_then(|(e, m)| e.get(m)) {
                    sched.step_with_metric(&mut *self.optimizer, value)?;
                }
            } else {
                sched.step(&mut *self.optimizer)?;
            }
        }
        let model: &dyn Model = &*self.model;
        self.trainer.each(|c| c.on_epoch_end(epoch, model))?;
        if self.cfg.checkpoint.is_some() {
            let path = self.save(&Progress {
                epoch: epoch + 1,
                batch: 0,
                step: self.progress.step,
                sampler_seed: None,
            })?;
            self.track_best(&path, eval.as_ref())?;
        }
        match stop {
            Some(stop) => Ok(Some(stop)),
            None => self.interrupted(epoch, self.progress.step),
        }
    }

    /// `Some(Interrupted)` when a signal asked the run to stop (on any
    /// rank: ranks agree, so they stop at the same step).
    fn interrupted(&self, epoch: usize, step: usize) -> Result<Option<StopReason>> {
        let Some(flag) = &self.trainer.interrupt else {
            return Ok(None);
        };
        let mut signal = flag.load(Ordering::SeqCst);
        if let Some(dp) = self.data_parallel {
            signal = dp.max_u64(signal as u64)? as usize;
        }
        Ok((signal != 0).then_some(StopReason::Interrupted {
            signal: signal as i32,
            epoch,
            step,
        }))
    }

    /// Evaluates every evaluation set and reports `{set}_{metric}`.
    fn evaluate(&mut self, epoch: usize, end_of_epoch: bool) -> Result<EvalInfo> {
        let mut metrics = Vec::new();
        // An evaluation is an unsynchronized forward under DDP: rank 0's
        // buffers first if the last training forward was synchronized.
        if let Some(reducer) = &mut self.path.reducer {
            reducer.pre_forward(&*self.model)?;
            reducer.post_forward(false);
        }
        for (name, loader) in self.data.eval {
            crate::eval::evaluate(
                loader,
                &mut *self.model,
                self.loss_fn,
                &mut self.trainer.metrics,
                self.cfg.limit_eval_batches,
                self.cfg.precision,
            )?;
            if let Some(dp) = self.data_parallel {
                dp.reduce_metrics(&mut self.trainer.metrics)?;
            }
            metrics.extend(
                self.trainer
                    .metrics
                    .iter()
                    .map(|m| (format!("{name}_{}", m.name()), m.value())),
            );
        }
        metrics.sort_by(|a, b| a.0.cmp(&b.0));
        let info = EvalInfo {
            epoch,
            step: self.progress.step,
            metrics,
            end_of_epoch,
        };
        self.trainer.each(|c| c.on_eval_end(&info))?;
        self.summary.last_eval = Some(info.clone());
        Ok(info)
    }

    /// Writes a checkpoint at `cursor` and prunes old ones.
    fn save(&mut self, cursor: &Progress) -> Result<PathBuf> {
        let Some(cfg) = self.cfg.checkpoint.clone() else {
            return Err(Error::InvalidArgument(
                "checkpointing is not configured".into(),
            ));
        };
        self.state.scheduler = self.trainer.scheduler.as_ref().map(|(s, _)| s.state_dict());
        self.state.grad_scaler = self
            .path
            .scaler
            .as_ref()
            .map(|s| s.state_dict())
            .transpose()?;
        let (rng_cpu, rng_cuda) = checkpoint::capture_rng()?;
        let ckpt = Checkpoint {
            model: self.model.state_dict()?,
            optimizer: self.optimizer.state_dict()?,
            rng_cpu,
            rng_cuda,
            progress: cursor.clone(),
            trainer: serde_json::to_value(&self.state)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            config: self.trainer.run_config.clone(),
        };
        let path = checkpoint::save(&cfg.run_dir, &ckpt)?;
        let best = self
            .state
            .best_checkpoint
            .as_ref()
            .map(|(p, _)| cfg.run_dir.join(p));
        checkpoint::prune(&cfg.run_dir, cfg.keep_last, best.as_deref())?;
        self.trainer.each(|c| c.on_checkpoint(&path, cursor))?;
        self.summary.last_checkpoint = Some(path.clone());
        Ok(path)
    }

    /// Records `path` as the best checkpoint when `eval` improves the
    /// best-kept metric (`best.json` in the run directory says which).
    fn track_best(&mut self, path: &Path, eval: Option<&EvalInfo>) -> Result<()> {
        let Some(cfg) = self.cfg.checkpoint.clone() else {
            return Ok(());
        };
        let (Some((metric, mode)), Some(eval)) = (cfg.keep_best, eval) else {
            return Ok(());
        };
        let Some(value) = eval.get(&metric) else {
            return Ok(());
        };
        let best = self.state.best_checkpoint.as_ref().map(|(_, v)| *v);
        if !mode.improves(value, best, 0.0) {
            return Ok(());
        }
        let relative = path
            .strip_prefix(&cfg.run_dir)
            .unwrap_or(path)
            .to_path_buf();
        let old = self
            .state
            .best_checkpoint
            .replace((relative.clone(), value));
        checkpoint::write_best(&cfg.run_dir, &relative, &metric, value)?;
        if let Some((old, _)) = old.filter(|(old, _)| *old != relative) {
            // The old best goes unless it is still among the newest kept.
            let old = cfg.run_dir.join(old);
            let newest = checkpoint::list(&cfg.run_dir)?;
            let cut = newest.len().saturating_sub(cfg.keep_last);
            if newest.iter().take(cut).any(|p| *p == old) {
                checkpoint::remove(&old)?;
            }
        }
        Ok(())
    }

    /// Ends the fit: drops checkpoints a non-finite loss made worthless,
    /// tells the callbacks.
    fn finish(mut self, stop: StopReason) -> Result<FitSummary> {
        self.summary.steps = self.progress.step;
        if let (StopReason::NonFiniteLoss { step, .. }, Some(cfg)) = (&stop, &self.cfg.checkpoint) {
            // The parameters after `step` steps gave a non-finite loss: checkpoints
            // of that step or later hold them. Keep only the good ones.
            for dir in checkpoint::list(&cfg.run_dir)? {
                if checkpoint::step_of(&dir).is_some_and(|s| s >= *step) {
                    checkpoint::remove(&dir)?;
                }
            }
            self.summary.last_checkpoint = checkpoint::list(&cfg.run_dir)?.pop();
        }
        self.summary.stop = stop;
        let summary = self.summary;
        self.trainer.each(|c| c.on_run_end(&summary))?;
        Ok(summary)
    }
}
