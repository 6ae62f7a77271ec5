//! The phases of a fit: restore, epoch, after a step, end of epoch, end.
use super::averaging::Averager;
use super::update::{Hooks, Outcome, UpdatePath};
use super::{
    BeforeStep, EvalInfo, FitSummary, FitTimings, Interval, Loaders, PhaseTime, StepInfo,
    StepTimings, StopReason, Trainer,
};
use crate::checkpoint::{self, Checkpoint, Progress};
use crate::data::loader::PassState;
use crate::distributed::DataParallel;
use crate::step::Step;
use crate::{Error, Model, Result, TrainerConfig};
use kiln_optim::Optimizer;
use kiln_tensor::params::NamedParameter;
use kiln_tensor::Tensor;
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
    /// `--ema`/`--swa`: `n_averaged`, the strategy and SWALR's state (the
    /// averaged tensors are the checkpoint's `averaged.safetensors`).
    #[serde(default)]
    averaging: Option<serde_json::Value>,
}

/// Where the fit stands: the loop cursor and the data pass it is in.
struct Cursor {
    progress: Progress,
    pass: PassState,
}

/// One fit in progress: the trainer, what it trains, and where it stands.
pub(super) struct Fit<'f, 'a> {
    trainer: &'f mut Trainer<'a>,
    cfg: TrainerConfig,
    model: &'f mut dyn Model,
    step: &'f dyn Step,
    optimizer: &'f mut dyn Optimizer,
    data: Loaders<'f>,
    data_parallel: Option<DataParallel<'a>>,
    path: UpdatePath<'f>,
    progress: Progress,
    /// The data pass a resumed fit continues.
    resumed_pass: Option<PassState>,
    state: TrainerState,
    /// `--ema`/`--swa`'s averaged weights.
    averager: Option<Averager>,
    summary: FitSummary,
    batches_per_epoch: usize,
    /// Where the fit's time goes (the callbacks' share is the Trainer's).
    timings: FitTimings,
    started: Instant,
}

impl<'f, 'a> Fit<'f, 'a>
where
    'a: 'f,
{
    /// Checks what can be checked before anything runs.
    pub fn new(
        trainer: &'f mut Trainer<'a>,
        model: &'f mut dyn Model,
        step: &'f dyn Step,
        optimizer: &'f mut dyn Optimizer,
        data: Loaders<'f>,
    ) -> Result<Self> {
        trainer.check(&*model, &*optimizer, &data.eval_names())?;
        let started = Instant::now();
        trainer.logging = PhaseTime::default();
        let cfg = trainer.config.clone();
        let device = model.device();
        let scaler = match trainer.grad_scaler.take() {
            Some(scaler) => Some(scaler),
            None => kiln_optim::amp::GradScaler::for_precision(cfg.precision, device)?,
        };
        let data_parallel = trainer.data_parallel;
        let params = model.parameters()?;
        // What clipping sees: the parameters the optimizer updates, in the
        // model's order (`clip_grad_norm_(model.parameters())`: the order of
        // the per-tensor norms is the order of their sum), whatever order
        // its param groups list them in.
        let held: Vec<Tensor> = (0..optimizer.num_groups())
            .flat_map(|g| optimizer.group_params(g))
            .map(|p| p.tensor.shallow_clone())
            .collect();
        let ptr = |t: &Tensor| t.data_ptr() as usize;
        let in_model: std::collections::HashSet<usize> =
            params.iter().map(|p| ptr(&p.tensor)).collect();
        let held_ptrs: std::collections::HashSet<usize> = held.iter().map(ptr).collect();
        let clipped = params
            .iter()
            .map(|p| &p.tensor)
            .filter(|t| held_ptrs.contains(&ptr(t)))
            .chain(held.iter().filter(|t| !in_model.contains(&ptr(t))))
            .map(Tensor::shallow_clone)
            .collect();
        let reducer = match data_parallel {
            // DDP reduces the gradients of the parameters that require them.
            Some(dp) if dp.world_size() > 1 => Some(
                dp.reducer(
                    &params
                        .iter()
                        .filter(|p| p.tensor.requires_grad())
                        .map(|p| NamedParameter {
                            name: p.name.clone(),
                            tensor: p.tensor.shallow_clone(),
                        })
                        .collect::<Vec<_>>(),
                )?,
            ),
            _ => None,
        };
        let averager = match &cfg.averaging {
            Some(averaging) => Some(Averager::new(averaging, &*model, &mut *optimizer)?),
            None => None,
        };
        let path = UpdatePath {
            step,
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
            step,
            optimizer,
            data,
            data_parallel,
            path,
            progress: Progress::start(),
            resumed_pass: None,
            state: TrainerState::default(),
            averager,
            summary: FitSummary {
                stop: StopReason::Completed,
                steps: 0,
                last_eval: None,
                last_checkpoint: None,
                timings: FitTimings::default(),
            },
            batches_per_epoch,
            timings: FitTimings::default(),
            started,
        })
    }

    /// Restores `resume`, runs the epochs, and ends.
    pub fn run(mut self, resume: Option<Checkpoint>) -> Result<FitSummary> {
        let fresh = resume.is_none();
        self.restore(resume)?;
        self.trainer.each(|c| c.on_run_start(&self.progress))?;
        if fresh {
            // nanoGPT draws its first batch before its loop (random
            // batches only; other loaders draw nothing here) and evaluates
            // at iteration 0 when it evaluates every N iterations.
            self.data.train.draw_ahead()?;
            if self.data.train.is_random() && self.cfg.eval_every_steps.is_some() {
                self.evaluate(self.progress.epoch, false)?;
            }
        }
        let mut stop = StopReason::Completed;
        for epoch in self.progress.epoch..=self.cfg.epochs {
            if let Some(reason) = self.epoch(epoch)? {
                stop = reason;
                break;
            }
        }
        self.finish(stop)
    }

    /// Loads a checkpoint's model, optimizer, generators, scheduler and loop
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
            if let Some(averager) = &mut self.averager {
                let scalars = self.state.averaging.clone().unwrap_or_default();
                averager.load(ckpt.averaged, &scalars)?;
            }
            self.data
                .train
                .set_pending(ckpt.progress.pending_batch.clone())?;
            if ckpt.progress.batch > 0 {
                self.resumed_pass = Some(PassState {
                    base_seed: ckpt.progress.base_seed.unwrap_or_default(),
                    sampler_seed: ckpt.progress.sampler_seed,
                    worker_rng: ckpt.rng_workers,
                });
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
        let resumed = self
            .resumed_pass
            .take()
            .filter(|_| epoch == self.progress.epoch);
        let start_batch = if resumed.is_some() {
            self.progress.batch
        } else {
            0
        };
        let train = self.data.train;
        // PyTorch's `sampler.set_epoch(epoch)` with 0-based epochs.
        train.set_epoch(epoch.saturating_sub(1) as u64);
        let mut batches = match resumed {
            Some(pass) => train.resume(pass, start_batch)?,
            None => {
                self.trainer.each(|c| c.on_epoch_start(epoch))?;
                train.iter()?
            }
        };
        self.model.set_training(true)?;
        let dataset_len = train.dataset().len();
        let accumulate = self.cfg.accumulate_grad_batches;
        let per_epoch = self.batches_per_epoch;
        let mut clock = Instant::now();
        for index in start_batch..per_epoch {
            let data_clock = Instant::now();
            let Some(batch) = batches.next() else {
                break;
            };
            let data = data_clock.elapsed().as_secs_f64();
            let batch = batch?;
            let step_now = (index + 1) % accumulate == 0 || index + 1 == per_epoch;
            let before = BeforeStep {
                epoch,
                batch: index,
                step: self.progress.step,
                last_in_epoch: index + 1 == per_epoch,
            };
            // The lr this batch trains with, as Lightning's LearningRateMonitor logs it.
            let lr = self.optimizer.lr(0);
            let trainer = &mut *self.trainer;
            let outcome = self.path.train_batch(
                &*self.model,
                &mut *self.optimizer,
                &batch,
                step_now,
                Hooks {
                    // nanoGPT's next get_batch, between forward and backward.
                    after_forward: &mut || batches.draw_ahead(),
                    before_step: &mut |params| {
                        trainer.each(|c| c.on_before_optimizer_step(&before, params))
                    },
                },
            )?;
            let (loss, metrics, stepped, grad_norm, skipped) = match outcome {
                Outcome::NonFinite { loss } => {
                    return Ok(Some(StopReason::NonFiniteLoss {
                        epoch,
                        batch: index,
                        step: self.progress.step,
                        loss,
                    }))
                }
                Outcome::Accumulated { loss, metrics } => (loss, metrics, false, None, false),
                Outcome::Stepped {
                    loss,
                    metrics,
                    grad_norm,
                    skipped,
                } => {
                    self.progress.step += 1;
                    if let Some(averager) = &mut self.averager {
                        averager.after_step(&*self.model)?;
                    }
                    let swa_epoch = self.averager.as_ref().is_some_and(|a| a.swa_epoch(epoch));
                    if let (Some((sched, Interval::Step)), false) =
                        (&mut self.trainer.scheduler, swa_epoch)
                    {
                        if !sched.needs_metric() {
                            sched.step(&mut *self.optimizer)?;
                        }
                    }
                    (loss, metrics, true, grad_norm, skipped)
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
                metrics,
                lr,
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
            self.timings.add_batch(&info.timings, stepped);
            self.trainer.each(|c| c.on_batch_end(&info))?;
            if stepped {
                let pass = batches.state()?;
                let cursor = Cursor {
                    progress: Progress {
                        epoch,
                        batch: index + 1,
                        step: self.progress.step,
                        sampler_seed: pass.sampler_seed,
                        base_seed: Some(pass.base_seed),
                        workers: pass.worker_rng.len(),
                        pending_batch: None,
                    },
                    pass,
                };
                if let Some(stop) = self.after_step(epoch, cursor)? {
                    return Ok(Some(stop));
                }
            }
        }
        drop(batches);
        self.end_of_epoch(epoch)
    }

    /// What follows every optimizer step, whatever the optimizer: evaluation
    /// and checkpoints every N steps, the step limit, interrupts. A fit
    /// that stops at its step limit is checkpointed there and then
    /// evaluated (after the checkpoint: an evaluation draws its loader's
    /// seed, and the checkpoint must hold the generator as a run that goes
    /// on has it).
    fn after_step(&mut self, epoch: usize, cursor: Cursor) -> Result<Option<StopReason>> {
        let step = cursor.progress.step;
        let scheduled = self
            .cfg
            .eval_every_steps
            .is_some_and(|n| step.is_multiple_of(n));
        if scheduled {
            let eval = self.evaluate(epoch, false)?;
            self.step_plateau(Interval::Step, &eval)?;
        }
        let every = self.cfg.checkpoint.every_steps;
        let mut saved = false;
        if every.is_some_and(|n| step.is_multiple_of(n)) {
            self.save(&cursor)?;
            saved = true;
        }
        let stop = match self.cfg.max_steps.filter(|m| step >= *m) {
            Some(max_steps) => Some(StopReason::MaxSteps { max_steps }),
            None => self.interrupted(epoch, step)?,
        };
        if stop.is_some() && !saved {
            self.save(&cursor)?;
        }
        if matches!(stop, Some(StopReason::MaxSteps { .. })) && !scheduled {
            self.evaluate(epoch, false)?;
        }
        Ok(stop)
    }

    /// The end of an epoch: evaluation, early stopping, the epoch's
    /// scheduler step, callbacks, the checkpoint and the best one.
    fn end_of_epoch(&mut self, epoch: usize) -> Result<Option<StopReason>> {
        let mut stop = None;
        // SWA: `swa_model.update_parameters(model)` before the evaluation,
        // which reports the averaged model.
        let swa_epoch = self.averager.as_ref().is_some_and(|a| a.swa_epoch(epoch));
        if let Some(averager) = &mut self.averager {
            averager.end_of_epoch(epoch, &*self.model)?;
        }
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
        if let Some(eval) = &eval {
            self.step_plateau(Interval::Step, eval)?;
            self.step_plateau(Interval::Epoch, eval)?;
        }
        match (&mut self.averager, &mut self.trainer.scheduler) {
            // `swa_scheduler.step()` instead of the run's scheduler.
            (Some(averager), _) if swa_epoch => averager.step_lr(&mut *self.optimizer)?,
            (_, Some((sched, Interval::Epoch))) if !sched.needs_metric() => {
                sched.step(&mut *self.optimizer)?;
            }
            _ => {}
        }
        let model: &dyn Model = &*self.model;
        self.trainer.each(|c| c.on_epoch_end(epoch, model))?;
        let path = self.save(&Cursor {
            progress: Progress::epoch_start(epoch + 1, self.progress.step),
            pass: PassState::default(),
        })?;
        if let Some(path) = path {
            self.track_best(&path, eval.as_ref())?;
        }
        match stop {
            Some(stop) => Ok(Some(stop)),
            None => self.interrupted(epoch, self.progress.step),
        }
    }

    /// Steps a metric-driven scheduler (ReduceLROnPlateau) of `interval`
    /// with the monitored metric of `eval`: per-step ones after every
    /// evaluation, as Lightning does; per-epoch ones after the epoch's.
    fn step_plateau(&mut self, interval: Interval, eval: &EvalInfo) -> Result<()> {
        let Some((sched, at)) = &mut self.trainer.scheduler else {
            return Ok(());
        };
        if *at != interval || !sched.needs_metric() {
            return Ok(());
        }
        if let Some(value) = eval.get(&self.cfg.plateau_monitor(&self.data.eval_names())) {
            sched.step_with_metric(&mut *self.optimizer, value)?;
        }
        Ok(())
    }

    /// `Some(Interrupted)` when a signal asked the run to stop, else
    /// `Some(Requested)` when a callback did ([`crate::Callback::should_stop`]);
    /// on any rank: ranks agree (one collective for both), so they stop at
    /// the same step.
    fn interrupted(&self, epoch: usize, step: usize) -> Result<Option<StopReason>> {
        let signal = self
            .trainer
            .interrupt
            .as_ref()
            .map_or(0, |flag| flag.load(Ordering::SeqCst) as u64);
        let requested = self.trainer.callbacks.iter().any(|c| c.should_stop());
        // The signal in the high bits, a callback's request in the lowest:
        // the maximum over ranks keeps the largest signal, or any request.
        let mut word = (signal << 1) | u64::from(requested);
        if let Some(dp) = self.data_parallel {
            word = dp.max_u64(word)?;
        }
        Ok(match (word >> 1, word & 1) {
            (0, 0) => None,
            (0, _) => Some(StopReason::Requested { epoch, step }),
            (signal, _) => Some(StopReason::Interrupted {
                signal: signal as i32,
                epoch,
                step,
            }),
        })
    }

    /// Evaluates every evaluation set and reports `{set}_{metric}`.
    fn evaluate(&mut self, epoch: usize, end_of_epoch: bool) -> Result<EvalInfo> {
        let clock = Instant::now();
        let mut metrics = Vec::new();
        // An evaluation is an unsynchronized forward under DDP: rank 0's
        // buffers first if the last training forward was synchronized.
        if let Some(reducer) = &mut self.path.reducer {
            reducer.pre_forward(&*self.model)?;
            reducer.post_forward(false);
        }
        for (name, loader) in self.data.eval {
            let (step, evaluated) = (self.step, &mut self.trainer.metrics);
            let (limit, precision) = (self.cfg.limit_eval_batches, self.cfg.precision);
            let mut run = |model: &mut dyn Model| {
                crate::eval::evaluate(loader, model, step, evaluated, limit, precision)
            };
            match &self.averager {
                Some(averager) => averager.with_averaged(&mut *self.model, run)?,
                None => run(&mut *self.model)?,
            }
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
        self.timings.evaluation.add(clock.elapsed().as_secs_f64());
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

    /// Writes a checkpoint at `cursor` (when the Trainer has a checkpoint
    /// directory) and prunes old ones. Every callback's records are made
    /// durable first, so a resume from it repeats no logged step and loses
    /// none.
    fn save(&mut self, cursor: &Cursor) -> Result<Option<PathBuf>> {
        let Some(run_dir) = self.trainer.checkpoint_dir.clone() else {
            return Ok(None);
        };
        // The batch drawn ahead is part of where the data stands.
        let progress = Progress {
            pending_batch: self.data.train.pending(),
            ..cursor.progress.clone()
        };
        self.trainer.each(|c| c.on_before_checkpoint(&progress))?;
        let clock = Instant::now();
        self.state.scheduler = self.trainer.scheduler.as_ref().map(|(s, _)| s.state_dict());
        self.state.grad_scaler = self
            .path
            .scaler
            .as_ref()
            .map(|s| s.state_dict())
            .transpose()?;
        let averaged = match &self.averager {
            Some(averager) => {
                let (tensors, scalars) = averager.save()?;
                self.state.averaging = Some(scalars);
                tensors
            }
            None => Vec::new(),
        };
        let (rng_cpu, rng_cuda) = checkpoint::capture_rng()?;
        let ckpt = Checkpoint {
            model: self.model.state_dict()?,
            optimizer: self.optimizer.state_dict()?,
            rng_cpu,
            rng_cuda,
            rng_workers: cursor
                .pass
                .worker_rng
                .iter()
                .map(|s| s.as_ref().map(|t| t.shallow_clone()))
                .collect(),
            progress: progress.clone(),
            trainer: serde_json::to_value(&self.state)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            config: self.trainer.run_config.clone(),
            averaged,
        };
        let path = checkpoint::save(&run_dir, &ckpt)?;
        let best = self
            .state
            .best_checkpoint
            .as_ref()
            .map(|(p, _)| run_dir.join(p));
        checkpoint::prune(&run_dir, self.cfg.checkpoint.keep_last, best.as_deref())?;
        self.timings.checkpoint.add(clock.elapsed().as_secs_f64());
        self.trainer.each(|c| c.on_checkpoint(&path, &progress))?;
        self.summary.last_checkpoint = Some(path.clone());
        Ok(Some(path))
    }

    /// Records `path` as the best checkpoint when `eval` improves the
    /// best-kept metric (`best.json` in the run directory says which).
    fn track_best(&mut self, path: &Path, eval: Option<&EvalInfo>) -> Result<()> {
        let Some(run_dir) = self.trainer.checkpoint_dir.clone() else {
            return Ok(());
        };
        let (Some((metric, mode)), Some(eval)) = (self.cfg.checkpoint.keep_best.clone(), eval)
        else {
            return Ok(());
        };
        let Some(value) = eval.get(&metric) else {
            return Ok(());
        };
        let best = self.state.best_checkpoint.as_ref().map(|(_, v)| *v);
        if !mode.improves(value, best, 0.0) {
            return Ok(());
        }
        let relative = path.strip_prefix(&run_dir).unwrap_or(path).to_path_buf();
        let old = self
            .state
            .best_checkpoint
            .replace((relative.clone(), value));
        checkpoint::write_best(&run_dir, &relative, &metric, value)?;
        if let Some((old, _)) = old.filter(|(old, _)| *old != relative) {
            // The old best goes unless it is still among the newest kept.
            let old = run_dir.join(old);
            let newest = checkpoint::list(&run_dir)?;
            let cut = newest.len().saturating_sub(self.cfg.checkpoint.keep_last);
            if newest.iter().take(cut).any(|p| *p == old) {
                checkpoint::remove(&old)?;
            }
        }
        Ok(())
    }

    /// `RUN/averaged.safetensors`: the averaged model's state dict, named
    /// as the model's (what `swa_model.module.state_dict()` holds), for a
    /// fit that ended well in a run directory.
    fn write_averaged(&mut self) -> Result<()> {
        let (Some(averager), Some(run_dir)) = (&self.averager, &self.trainer.checkpoint_dir) else {
            return Ok(());
        };
        let tensors = averager.state_dict(&mut *self.model)?;
        kiln_tensor::io::write_safetensors(&run_dir.join(checkpoint::AVERAGED_FILE), &tensors)?;
        Ok(())
    }

    /// Ends the fit: drops checkpoints a non-finite loss made worthless,
    /// tells the callbacks.
    fn finish(mut self, stop: StopReason) -> Result<FitSummary> {
        self.summary.steps = self.progress.step;
        if let (StopReason::NonFiniteLoss { step, .. }, Some(run_dir)) =
            (&stop, &self.trainer.checkpoint_dir)
        {
            // The parameters after `step` steps gave a non-finite loss: checkpoints
            // of that step or later hold them. Keep only the good ones.
            for dir in checkpoint::list(run_dir)? {
                if checkpoint::step_of(&dir).is_some_and(|s| s >= *step) {
                    checkpoint::remove(&dir)?;
                }
            }
            self.summary.last_checkpoint = checkpoint::list(run_dir)?.pop();
        }
        if !matches!(
            stop,
            StopReason::Interrupted { .. } | StopReason::NonFiniteLoss { .. }
        ) {
            self.write_averaged()?;
        }
        self.summary.stop = stop;
        self.summary.timings = FitTimings {
            logging: self.trainer.logging,
            wall: self.started.elapsed().as_secs_f64(),
            ..self.timings
        };
        let summary = self.summary;
        self.trainer.each(|c| c.on_run_end(&summary))?;
        Ok(summary)
    }
}
