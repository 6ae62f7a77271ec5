//! The one update path: how a batch becomes gradients and an optimizer step.
//!
//! This is the only place where optimizers and precisions differ: an
//! ordinary optimizer gets one forward/backward per batch (summed over
//! `accumulate` batches) and then `step()`; a closure optimizer (LBFGS) gets
//! `step(closure)` whose closure clears the gradients and runs
//! forward/backward again each time it is called. Forward and loss run in
//! the precision's autocast region (`torch.autocast(device_type, dtype)`),
//! backward outside it; with a gradient scaler (`16-mixed`) the loss is
//! scaled before backward, the gradients unscaled before clipping, and a
//! step with inf/NaN gradients skipped (`scaler.step`, `scaler.update`), as
//! in PyTorch's AMP recipe. Both optimizer kinds produce their gradients
//! through the same `gradients_ready` (averaging over data-parallel ranks,
//! unscaling, clipping), so every setting works with every optimizer; what
//! happens after a step is the caller's (`fit.rs`), shared by all.
//!
//! Forward and backward run ATen's small elementwise kernels on this thread
//! alone where the model and loss say that keeps the bits
//! (`serial_small_ops`); the GEMMs and the optimizer keep every thread.
//!
//! Data parallelism is DDP's: the gradient [`Reducer`] is armed before the
//! backward pass that ends an accumulation window (the others are
//! `no_sync`), its buckets are summed while backward runs, and
//! `gradients_ready` waits for them; buffers are broadcast from rank 0
//! around forward passes as DDP's forward does.
use super::StepTimings;
use crate::distributed::{DataParallel, Reducer};
use crate::step::Step;
use crate::{Batch, Error, Model, Result};
use kiln_optim::amp::GradScaler;
use kiln_optim::Optimizer;
use kiln_tensor::amp::Precision;
use kiln_tensor::device::SerialAtenKernels;
use kiln_tensor::params::NamedParameter;
use kiln_tensor::{Device, Tensor};
use std::time::Instant;

/// What one training batch did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Gradients were added; the optimizer steps on a later batch.
    Accumulated {
        /// The batch's loss.
        loss: f64,
        /// The step's extra metrics.
        metrics: Vec<(String, f64)>,
    },
    /// The optimizer stepped (or the gradient scaler skipped the step).
    Stepped {
        /// The batch's loss (a closure optimizer's first evaluation).
        loss: f64,
        /// The step's extra metrics (a closure optimizer's first evaluation).
        metrics: Vec<(String, f64)>,
        /// Total gradient norm before clipping, when clipping by norm.
        grad_norm: Option<f64>,
        /// The scaler found inf/NaN gradients and skipped the optimizer step.
        skipped: bool,
    },
    /// The loss was NaN or infinite (on any rank): nothing was stepped.
    NonFinite {
        /// The offending loss.
        loss: f64,
    },
}

/// What the caller runs inside a training batch.
pub(crate) struct Hooks<'h> {
    /// After the batch's (first) forward pass, before its backward pass.
    pub after_forward: &'h mut dyn FnMut() -> Result<()>,
    /// With the final gradients, before the optimizer steps.
    pub before_step: &'h mut dyn FnMut(&[NamedParameter]) -> Result<()>,
}

/// What a closure optimizer's first evaluation of the loss gave: the loss,
/// the step's extra metrics and the gradient norm before clipping.
type FirstEvaluation = (f64, Vec<(String, f64)>, Option<f64>);

/// The settings and handles every step uses.
pub(crate) struct UpdatePath<'a> {
    pub step: &'a dyn Step,
    pub data_parallel: Option<DataParallel<'a>>,
    /// The gradient buckets (with more than one rank).
    pub reducer: Option<Reducer<'a>>,
    pub accumulate: usize,
    pub stop_on_nonfinite: bool,
    pub clip_grad_value: Option<f64>,
    pub clip_grad_norm: Option<f64>,
    /// The model's parameters (handles sharing gradients with the model).
    pub params: Vec<NamedParameter>,
    /// The parameters the optimizer updates: what clipping sees.
    pub clipped: Vec<Tensor>,
    /// Autocast around forward and loss.
    pub precision: Precision,
    /// Where the model runs (the autocast device type).
    pub device: Device,
    /// The gradient scaler (`16-mixed`).
    pub scaler: Option<GradScaler>,
    /// Forward, backward and optimizer time of the last batch (the
    /// caller fills in data and total).
    pub timings: StepTimings,
}

impl UpdatePath<'_> {
    /// Trains on one batch; `step_now` says whether this batch ends an
    /// accumulation window. `hooks.after_forward` runs once after the
    /// batch's (first) forward pass, before backward (where nanoGPT draws
    /// its next batch); `hooks.before_step` sees the final gradients (the
    /// callbacks' `on_before_optimizer_step`).
    pub fn train_batch(
        &mut self,
        model: &dyn Model,
        optimizer: &mut dyn Optimizer,
        batch: &Batch,
        step_now: bool,
        hooks: Hooks<'_>,
    ) -> Result<Outcome> {
        self.timings = StepTimings::default();
        if optimizer.requires_closure() {
            self.closure_step(model, optimizer, batch, hooks)
        } else {
            self.plain_step(model, optimizer, batch, step_now, hooks)
        }
    }

    fn plain_step(
        &mut self,
        model: &dyn Model,
        optimizer: &mut dyn Optimizer,
        batch: &Batch,
        step_now: bool,
        hooks: Hooks<'_>,
    ) -> Result<Outcome> {
        let Hooks {
            after_forward,
            before_step,
        } = hooks;
        let serial = self.serial_small_ops(model, batch)?;
        let clock = Instant::now();
        let (loss, metrics) = self.forward_loss(model, batch, step_now)?;
        self.timings.forward = clock.elapsed().as_secs_f64();
        after_forward()?;
        let value = loss.f_double_value(&[])?;
        if self.nonfinite(value)? {
            return Ok(Outcome::NonFinite { loss: value });
        }
        let loss = if self.accumulate > 1 {
            loss.f_div_scalar(self.accumulate as f64)?
        } else {
            loss
        };
        if let (Some(reducer), true) = (&mut self.reducer, step_now) {
            reducer.prepare_for_backward()?;
        }
        let clock = Instant::now();
        match &mut self.scaler {
            Some(scaler) => scaler.scale(&loss)?.f_backward()?,
            None => loss.f_backward()?,
        }
        self.timings.backward = clock.elapsed().as_secs_f64();
        drop(serial);
        if !step_now {
            return Ok(Outcome::Accumulated {
                loss: value,
                metrics,
            });
        }
        let grad_norm = self.gradients_ready(Some(&*optimizer))?;
        before_step(&self.params)?;
        let clock = Instant::now();
        let skipped = match &mut self.scaler {
            Some(scaler) => {
                let stepped = scaler.step(optimizer)?;
                scaler.update()?;
                !stepped
            }
            None => {
                optimizer.step()?;
                false
            }
        };
        optimizer.zero_grad()?;
        self.timings.optimizer = clock.elapsed().as_secs_f64();
        Ok(Outcome::Stepped {
            loss: value,
            metrics,
            grad_norm,
            skipped,
        })
    }

    /// `optimizer.step(closure)`: the closure clears the gradients, runs
    /// forward and backward and prepares the gradients like any step; under
    /// data parallelism the loss it returns is the mean over ranks, so every
    /// replica's optimizer takes the same decisions (LBFGS's line search and
    /// tolerances read it).
    fn closure_step(
        &mut self,
        model: &dyn Model,
        optimizer: &mut dyn Optimizer,
        batch: &Batch,
        hooks: Hooks<'_>,
    ) -> Result<Outcome> {
        let Hooks {
            after_forward,
            before_step,
        } = hooks;
        let start = Instant::now();
        let (mut forward, mut backward) = (0.0, 0.0);
        // The first evaluation's loss, step metrics and gradient norm.
        let mut first: Option<FirstEvaluation> = None;
        let mut nonfinite: Option<f64> = None;
        let mut failure: Option<Error> = None;
        let mut closure = || -> kiln_optim::Result<f64> {
            let mut run = || -> Result<f64> {
                for p in &self.params {
                    kiln_tensor::ops::clear_grad(&p.tensor)?;
                }
                let serial = self.serial_small_ops(model, batch)?;
                let clock = Instant::now();
                let (loss, metrics) = self.forward_loss(model, batch, true)?;
                forward += clock.elapsed().as_secs_f64();
                if first.is_none() {
                    after_forward()?;
                }
                let mut value = loss.f_double_value(&[])?;
                if let Some(dp) = self.data_parallel {
                    value = dp.mean(value)?;
                }
                if self.stop_on_nonfinite && !value.is_finite() {
                    nonfinite = Some(value);
                    return Err(Error::InvalidArgument(format!("non-finite loss {value}")));
                }
                if let Some(reducer) = &mut self.reducer {
                    reducer.prepare_for_backward()?;
                }
                let clock = Instant::now();
                loss.f_backward()?;
                backward += clock.elapsed().as_secs_f64();
                drop(serial);
                // No scaler here: GradScaler refuses closure optimizers, as PyTorch's does.
                let grad_norm = self.gradients_ready(None)?;
                before_step(&self.params)?;
                first.get_or_insert((value, metrics, grad_norm));
                Ok(value)
            };
            run().map_err(|e| {
                let message = e.to_string();
                failure = Some(e);
                kiln_optim::Error::InvalidArgument(message)
            })
        };
        let result = optimizer.step_with_closure(&mut closure);
        if let Some(loss) = nonfinite {
            return Ok(Outcome::NonFinite { loss });
        }
        if let Err(err) = result {
            // Report the loop's own error rather than its text inside the optimizer's.
            return Err(failure.unwrap_or(Error::Optim(err)));
        }
        optimizer.zero_grad()?;
        self.timings.forward = forward;
        self.timings.backward = backward;
        self.timings.optimizer = (start.elapsed().as_secs_f64() - forward - backward).max(0.0);
        let (loss, metrics, grad_norm) = first.unwrap_or((f64::NAN, Vec::new(), None));
        Ok(Outcome::Stepped {
            loss,
            metrics,
            grad_norm,
            skipped: false,
        })
    }

    /// The step's loss (and extra metrics) on the batch, in the
    /// precision's autocast region (which ends before backward).
    /// `synchronized`: its backward pass will be averaged over ranks (DDP
    /// broadcasts buffers before the forward that follows such a forward).
    fn forward_loss(
        &mut self,
        model: &dyn Model,
        batch: &Batch,
        synchronized: bool,
    ) -> Result<(Tensor, Vec<(String, f64)>)> {
        if let Some(reducer) = &mut self.reducer {
            reducer.pre_forward(model)?;
        }
        let out = {
            let _autocast = self.precision.autocast(self.device)?;
            self.step.forward(model, batch)?
        };
        if let Some(reducer) = &mut self.reducer {
            reducer.post_forward(synchronized);
        }
        let metrics = out.metric_values()?;
        Ok((out.loss, metrics))
    }

    /// Runs ATen's own (OpenMP) kernels of the forward and backward passes
    /// on this thread alone where that keeps every bit: float32 on the CPU,
    /// and a model and loss that say their ops compute each output
    /// independently of how ATen splits the work. The matrix products keep
    /// MKL's threads (its own count), so their bits do not move either.
    /// On a batch's activations (64 x 512 in the tutorial) a parallel
    /// region costs more in fork/join than it saves, and on a busy machine
    /// it waits for a descheduled worker; the optimizer step, over the whole
    /// model, keeps every thread.
    fn serial_small_ops(
        &self,
        model: &dyn Model,
        batch: &Batch,
    ) -> Result<Option<SerialAtenKernels>> {
        let exact = self.device == Device::Cpu
            && self.precision == Precision::F32True
            && self.step.exact_on_one_thread(model, batch);
        Ok(if exact {
            SerialAtenKernels::enter()?
        } else {
            None
        })
    }

    /// Whether training must stop on `loss` (agreed over ranks).
    fn nonfinite(&self, loss: f64) -> Result<bool> {
        if !self.stop_on_nonfinite {
            return Ok(false);
        }
        match self.data_parallel {
            Some(dp) => dp.any(!loss.is_finite()),
            None => Ok(!loss.is_finite()),
        }
    }

    /// Turns the backward pass's gradients into the ones the optimizer uses:
    /// averaged over ranks (the buckets DDP sums during backward, waited for
    /// here, so clipping sees the averaged gradients), unscaled by the gradient scaler (its
    /// `unscale_(optimizer)`, before clipping as PyTorch's recipe says), then
    /// clipped. Returns the total norm before clipping when clipping by norm.
    fn gradients_ready(&mut self, optimizer: Option<&dyn Optimizer>) -> Result<Option<f64>> {
        if let Some(reducer) = &mut self.reducer {
            reducer.finish_backward()?;
        }
        if let (Some(scaler), Some(optimizer)) = (&mut self.scaler, optimizer) {
            scaler.unscale_(optimizer)?;
        }
        if let Some(value) = self.clip_grad_value {
            kiln_optim::clip_grad_value_(self.clipped.iter(), value)?;
        }
        match self.clip_grad_norm {
            Some(max_norm) => {
                let total = kiln_optim::clip_grad_norm_(self.clipped.iter(), max_norm, 2.0, false)?;
                Ok(Some(total.f_double_value(&[])?))
            }
            None => Ok(None),
        }
    }
}
