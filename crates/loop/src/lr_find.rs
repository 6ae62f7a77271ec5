//! The learning-rate finder: Lightning's `Tuner.lr_find` (its
//! `tuner/lr_finder.py`). The Trainer runs up to `num_training` optimizer
//! steps while [`LrSweep`], a per-step scheduler, raises every group's lr
//! from `min_lr` to `max_lr` (exponentially or linearly); after each step
//! the loss is smoothed (an exponential average with `beta = 0.98`, divided
//! by `1 - beta^(step + 1)`), and the sweep stops once the smoothed loss
//! exceeds `early_stop_threshold` times its best. The suggestion is the lr
//! of the steepest descent of the smoothed curve (`torch.gradient` with
//! the lrs as coordinates, its argmin) after skipping the first 10 and the
//! last point. Lightning's arithmetic is kept as it is, quirks included:
//! the first step's lr is `min_lr` and the next `min_lr · (max/min)^(2/N)`
//! (its scheduler's `last_epoch + 1`), the bias correction uses the global
//! step after the step (`1 - beta^2` for the first loss), and the
//! suggestion is computed in float32 (`torch.tensor` of Python floats) with
//! libtorch's kernels in `torch.gradient`'s order. A non-finite loss does
//! not stop the sweep (it never passes the threshold), as in Lightning.
//!
//! [`lr_find`] is the library call; `kiln lr-find` ([`crate::run::lr_find`])
//! builds the model, optimizer and data from `kiln train`'s flags and draws
//! the curve ([`crate::plot::plot_lr_find`]).
use crate::trainer::{Interval, TrainerConfig};
use crate::{Callback, DataLoader, Error, Loaders, Model, Result, StepInfo, StopReason, Trainer};
use kiln_optim::scheduler::LrScheduler;
use kiln_optim::Optimizer;
use kiln_tensor::{Kind, Tensor};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// Lightning's smoothing factor of the loss (`_LRCallback(beta=0.98)`).
pub const BETA: f64 = 0.98;
/// Points skipped at the start of the curve for the suggestion (`skip_begin`).
pub const SKIP_BEGIN: usize = 10;
/// Points skipped at its end (`skip_end`).
pub const SKIP_END: usize = 1;

/// How the lr rises from one step to the next (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SweepMode {
    /// `min_lr · (max_lr / min_lr)^r`, `r` the fraction of the sweep done.
    #[default]
    Exponential,
    /// `min_lr + r · (max_lr - min_lr)`.
    Linear,
}

impl std::str::FromStr for SweepMode {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "exponential" => Ok(SweepMode::Exponential),
            "linear" => Ok(SweepMode::Linear),
            other => Err(Error::Usage(format!(
                "--mode {other}: unknown sweep; accepted: exponential, linear"
            ))),
        }
    }
}

impl std::fmt::Display for SweepMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SweepMode::Exponential => "exponential",
            SweepMode::Linear => "linear",
        })
    }
}

/// The finder's own settings; `Default` is Lightning's `lr_find` defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrFindConfig {
    /// The first lr (`min_lr`, 1e-8).
    pub min_lr: f64,
    /// The last lr (`max_lr`, 1).
    pub max_lr: f64,
    /// Optimizer steps of the sweep (`num_training`, 100).
    pub num_training: usize,
    /// How the lr rises (`mode`, exponential).
    pub mode: SweepMode,
    /// Stop once the smoothed loss passes this many times its best
    /// (`early_stop_threshold`, 4); `None` runs every step.
    pub early_stop_threshold: Option<f64>,
}

impl Default for LrFindConfig {
    fn default() -> Self {
        Self {
            min_lr: 1e-8,
            max_lr: 1.0,
            num_training: 100,
            mode: SweepMode::Exponential,
            early_stop_threshold: Some(4.0),
        }
    }
}

impl LrFindConfig {
    /// Usage errors naming the flag: positive finite lrs with `min_lr <
    /// max_lr`, at least two steps, a positive threshold.
    pub fn validate(&self) -> Result<()> {
        let usage = |m: String| Err(Error::Usage(m));
        if !(self.min_lr.is_finite() && self.min_lr > 0.0) {
            return usage(format!(
                "--min-lr must be a positive number, got {}",
                self.min_lr
            ));
        }
        if !(self.max_lr.is_finite() && self.max_lr > self.min_lr) {
            return usage(format!(
                "--max-lr must be larger than --min-lr ({}), got {}",
                self.min_lr, self.max_lr
            ));
        }
        if self.num_training < 2 {
            return usage(format!(
                "--num-training must be at least 2 steps, got {}",
                self.num_training
            ));
        }
        if let Some(t) = self.early_stop_threshold {
            if !(t.is_finite() && t > 0.0) {
                return usage(format!(
                    "--early-stop-threshold must be a positive number (or none), got {t}"
                ));
            }
        }
        Ok(())
    }
}

/// Lightning's `_ExponentialLR` / `_LinearLR`: built on the optimizer, it
/// sets every group's lr to `min_lr`; each step sets `min_lr` moved a
/// fraction `(last_epoch + 1) / num_training` of the way to `max_lr`.
pub struct LrSweep {
    mode: SweepMode,
    base_lrs: Vec<f64>,
    end_lr: f64,
    num_iter: usize,
    last_epoch: i64,
    last_lr: Vec<f64>,
}

impl LrSweep {
    /// The sweep of `config` over `opt`'s groups (their lrs set to `min_lr`).
    pub fn new(opt: &mut dyn Optimizer, config: &LrFindConfig) -> Result<Self> {
        let groups = opt.num_groups();
        for group in 0..groups {
            opt.set_lr(group, config.min_lr)?;
        }
        let base_lrs = vec![config.min_lr; groups];
        Ok(Self {
            mode: config.mode,
            last_lr: base_lrs.clone(),
            base_lrs,
            end_lr: config.max_lr,
            num_iter: config.num_training,
            // The initial step of PyTorch's LRScheduler has run: `get_lr` at 0.
            last_epoch: 0,
        })
    }

    /// `get_lr()` at the current `last_epoch`.
    fn lrs(&self) -> Vec<f64> {
        if self.last_epoch <= 0 {
            return self.base_lrs.clone();
        }
        let r = (self.last_epoch + 1) as f64 / self.num_iter as f64;
        self.base_lrs
            .iter()
            .map(|&base| match self.mode {
                SweepMode::Exponential => base * (self.end_lr / base).powf(r),
                SweepMode::Linear => base + r * (self.end_lr - base),
            })
            .collect()
    }
}

impl LrScheduler for LrSweep {
    fn name(&self) -> &str {
        "lr-find"
    }

    fn step(&mut self, opt: &mut dyn Optimizer) -> kiln_optim::Result<()> {
        self.last_epoch += 1;
        let lrs = self.lrs();
        for (group, lr) in lrs.iter().enumerate() {
            opt.set_lr(group, *lr)?;
        }
        self.last_lr = lrs;
        Ok(())
    }

    fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    fn state_dict(&self) -> Value {
        json!({
            "last_epoch": self.last_epoch,
            "base_lrs": self.base_lrs,
            "_last_lr": self.last_lr,
        })
    }

    fn load_state_dict(&mut self, state: &Value) -> kiln_optim::Result<()> {
        let bad = || kiln_optim::Error::InvalidArgument("not an lr-find sweep's state".into());
        let lrs = |key: &str| -> kiln_optim::Result<Vec<f64>> {
            serde_json::from_value(state[key].clone()).map_err(|_| bad())
        };
        self.last_epoch = state["last_epoch"].as_i64().ok_or_else(bad)?;
        self.base_lrs = lrs("base_lrs")?;
        self.last_lr = lrs("_last_lr")?;
        Ok(())
    }
}

/// What a sweep recorded, step by step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LrCurve {
    /// The lr each recorded step trained with.
    pub lrs: Vec<f64>,
    /// Its loss as the step computed it.
    pub raw_losses: Vec<f64>,
    /// The smoothed loss (what the suggestion and the chart use).
    pub losses: Vec<f64>,
}

/// Lightning's `_LRCallback`: after every optimizer step, the lr it used
/// and the smoothed loss; asks the fit to stop once the loss diverges.
struct Recorder {
    curve: Rc<RefCell<LrCurve>>,
    threshold: Option<f64>,
    avg_loss: f64,
    best_loss: f64,
    stop: bool,
}

impl Callback for Recorder {
    fn on_batch_end(&mut self, info: &StepInfo) -> Result<()> {
        // Only batches that end with an optimizer step (gradient accumulation).
        if !info.stepped {
            return Ok(());
        }
        let step = info.step;
        self.avg_loss = BETA * self.avg_loss + (1.0 - BETA) * info.loss;
        let smoothed = self.avg_loss / (1.0 - BETA.powf((step + 1) as f64));
        if let Some(threshold) = self.threshold {
            if step > 1 && smoothed > threshold * self.best_loss {
                self.stop = true;
            }
        }
        if smoothed < self.best_loss || step == 1 {
            self.best_loss = smoothed;
        }
        let mut curve = self.curve.borrow_mut();
        curve.lrs.push(info.lr.unwrap_or(f64::NAN));
        curve.raw_losses.push(info.loss);
        curve.losses.push(smoothed);
        Ok(())
    }

    fn should_stop(&self) -> bool {
        self.stop
    }
}

/// What [`lr_find`] found.
#[derive(Debug, Clone)]
pub struct LrFindResult {
    /// The recorded curve.
    pub curve: LrCurve,
    /// The suggested lr, `None` when fewer than two finite points are left
    /// after skipping (as Lightning, which logs an error and returns None).
    pub suggestion: Option<f64>,
    /// The suggestion's index in the curve.
    pub suggestion_index: Option<usize>,
    /// Why the sweep ended: `MaxSteps` after `num_training` steps,
    /// `Requested` when the loss diverged.
    pub stop: StopReason,
}

/// Lightning's `_LRFinder.suggestion(skip_begin, skip_end)`: the index of
/// the steepest descent of `losses` against `lrs` among the finite points
/// of `[skip_begin .. len - skip_end]`, in float32 as Lightning's
/// `torch.tensor(list)` holds them; `None` with fewer than two.
pub fn suggestion_index(
    lrs: &[f64],
    losses: &[f64],
    skip_begin: usize,
    skip_end: usize,
) -> Result<Option<usize>> {
    let end = losses.len().min(lrs.len()).saturating_sub(skip_end);
    if end <= skip_begin {
        return Ok(None);
    }
    let float32 = |v: &[f64]| Tensor::f_from_slice(v).and_then(|t| t.f_to_kind(Kind::Float));
    let losses = float32(&losses[skip_begin..end])?;
    let lrs = float32(&lrs[skip_begin..end])?;
    let finite = losses.f_isfinite()?;
    let kept: Vec<bool> = Vec::<bool>::try_from(&finite)?;
    let losses = losses.f_masked_select(&finite)?;
    let lrs = lrs.f_masked_select(&finite)?;
    if losses.size()[0] < 2 {
        return Ok(None);
    }
    let gradients = gradient(&losses, &lrs)?;
    let min_grad = usize::try_from(gradients.f_argmin(None, false)?.f_int64_value(&[])?)
        .map_err(|_| Error::InvalidArgument("argmin returned a negative index".into()))?;
    Ok((skip_begin..end)
        .zip(kept)
        .filter_map(|(i, finite)| finite.then_some(i))
        .nth(min_grad))
}

/// `torch.gradient(f, spacing=[x])[0]` of a 1-D `f` (at least two points)
/// with coordinates `x`, `edge_order=1`: ATen's `gradient_helper`, its
/// operations in its order (second-order central differences inside,
/// one-sided at the ends).
fn gradient(f: &Tensor, x: &Tensor) -> Result<Tensor> {
    let n = f.size()[0];
    let dx = x.f_diff(1, 0, None::<Tensor>, None::<Tensor>)?;
    let dx1 = dx.f_slice(0, 0, n - 2, 1)?;
    let dx2 = dx.f_slice(0, 1, n - 1, 1)?;
    let a = dx2.f_neg()?.f_div(&dx1.f_mul(&dx1.f_add(&dx2)?)?)?;
    let b = dx2.f_sub(&dx1)?.f_div(&dx1.f_mul(&dx2)?)?;
    let c = dx1.f_div(&dx2.f_mul(&dx1.f_add(&dx2)?)?)?;
    let center = a
        .f_mul(&f.f_slice(0, 0, n - 2, 1)?)?
        .f_add(&b.f_mul(&f.f_slice(0, 1, n - 1, 1)?)?)?
        .f_add(&c.f_mul(&f.f_slice(0, 2, n, 1)?)?)?;
    let prepend = f
        .f_slice(0, 1, 2, 1)?
        .f_sub(&f.f_slice(0, 0, 1, 1)?)?
        .f_div(&dx.f_get(0)?)?;
    let append = f
        .f_slice(0, n - 1, n, 1)?
        .f_sub(&f.f_slice(0, n - 2, n - 1, 1)?)?
        .f_div(&dx.f_get(n - 2)?)?;
    Ok(Tensor::f_cat(&[prepend, center, append], 0)?)
}

/// Runs Lightning's lr finder: `finder.num_training` optimizer steps of
/// `model` with `step` and `optimizer` over `train` (cycling through its
/// epochs), under `config`'s precision, accumulation, clipping and batch
/// limits; no evaluation, no checkpoint, no callback but the finder's.
/// The model's and optimizer's state are restored afterwards (Lightning
/// reloads the checkpoint it saved before the sweep), so training can
/// follow with the suggestion.
pub fn lr_find(
    config: &TrainerConfig,
    model: &mut dyn Model,
    step: &dyn crate::step::Step,
    optimizer: &mut dyn Optimizer,
    train: &DataLoader,
    finder: &LrFindConfig,
) -> Result<LrFindResult> {
    finder.validate()?;
    let weights: Vec<(String, Tensor)> = model
        .state_dict()?
        .into_iter()
        .map(|(name, t)| Ok((name, kiln_tensor::ops::detached_clone(&t)?)))
        .collect::<Result<_>>()?;
    let mut saved_optimizer = optimizer.state_dict()?;
    saved_optimizer.tensors = saved_optimizer
        .tensors
        .into_iter()
        .map(|(name, t)| Ok((name, kiln_tensor::ops::detached_clone(&t)?)))
        .collect::<Result<_>>()?;
    let sweep_config = TrainerConfig {
        max_steps: Some(finder.num_training),
        // Enough passes for every step, however short an epoch is.
        epochs: finder.num_training * config.accumulate_grad_batches.max(1),
        eval_every_epochs: 0,
        eval_every_steps: None,
        early_stopping: None,
        monitor: None,
        stop_on_nonfinite: false,
        ..config.clone()
    };
    let curve = Rc::new(RefCell::new(LrCurve::default()));
    let sweep = LrSweep::new(optimizer, finder)?;
    let mut trainer = Trainer::new(sweep_config)?
        .scheduler(Box::new(sweep), Interval::Step)
        .callback(Recorder {
            curve: curve.clone(),
            threshold: finder.early_stop_threshold,
            avg_loss: 0.0,
            best_loss: 0.0,
            stop: false,
        });
    let fitted = trainer.fit(model, step, optimizer, Loaders { train, eval: &[] }, None);
    drop(trainer);
    model.load_state_dict(&weights)?;
    optimizer.load_state_dict(&saved_optimizer)?;
    let summary = fitted?;
    let curve = curve.take();
    let index = suggestion_index(&curve.lrs, &curve.losses, SKIP_BEGIN, SKIP_END)?;
    Ok(LrFindResult {
        suggestion: index.and_then(|i| curve.lrs.get(i).copied()),
        suggestion_index: index,
        curve,
        stop: summary.stop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_usage_errors_naming_the_flag() {
        let bad = [
            (
                LrFindConfig {
                    min_lr: 0.0,
                    ..LrFindConfig::default()
                },
                "--min-lr",
            ),
            (
                LrFindConfig {
                    max_lr: 1e-9,
                    ..LrFindConfig::default()
                },
                "--max-lr",
            ),
            (
                LrFindConfig {
                    num_training: 1,
                    ..LrFindConfig::default()
                },
                "--num-training",
            ),
            (
                LrFindConfig {
                    early_stop_threshold: Some(-1.0),
                    ..LrFindConfig::default()
                },
                "--early-stop-threshold",
            ),
        ];
        for (config, flag) in bad {
            match config.validate() {
                Err(Error::Usage(m)) => assert!(m.starts_with(flag), "{m}"),
                other => panic!("{flag}: {other:?}"),
            }
        }
        assert!(LrFindConfig::default().validate().is_ok());
    }

    #[test]
    fn gradient_is_second_order_on_a_quadratic_with_uneven_spacing() -> Result<()> {
        // Central differences are exact for a quadratic up to rounding; the
        // one-sided ends are first-order. (tests/lr_find.rs holds the
        // suggestion to torch.gradient's bits.)
        let x = [0.0, 1.0, 3.0, 4.0, 7.0];
        let f: Vec<f64> = x.iter().map(|v| v * v).collect();
        let g = gradient(&Tensor::f_from_slice(&f)?, &Tensor::f_from_slice(&x)?)?;
        let g = Vec::<f64>::try_from(&g)?;
        let expected = [1.0, 2.0, 6.0, 8.0, 11.0];
        for (got, want) in g.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{g:?}");
        }
        Ok(())
    }
}
