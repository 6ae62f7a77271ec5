//! nanoGPT's learning-rate schedule: linear warm-up, cosine decay to a
//! floor, then the floor (`get_lr(it)` in nanoGPT's `train.py`).
use super::{fnum, Attributes, Core, Schedule, StateReader};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use serde_json::{Map, Value};
use std::f64::consts::PI;

/// Options of [`WarmupCosineLr`], nanoGPT's `warmup_iters`, `lr_decay_iters`
/// and `min_lr` under the names kiln's specs use.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupCosineLrConfig {
    /// Steps of linear warm-up (`warmup_iters`).
    pub warmup_steps: usize,
    /// The step from which the lr is `min_lr` (`lr_decay_iters`); more than
    /// `warmup_steps`.
    pub decay_steps: usize,
    /// The lr after `decay_steps` (`min_lr`), the same for every group; at
    /// least 0.
    pub min_lr: f64,
}

impl WarmupCosineLrConfig {
    /// Builds the scheduler, refusing `warmup_steps >= decay_steps` and a
    /// negative or non-finite `min_lr`; records `initial_lr` and sets every
    /// group's lr to `get_lr(0)`.
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<WarmupCosineLr> {
        if self.warmup_steps >= self.decay_steps {
            return Err(Error::InvalidHyperparameter(format!(
                "warmup-cosine: warmup_steps ({}) must be less than decay_steps ({})",
                self.warmup_steps, self.decay_steps
            )));
        }
        if !(self.min_lr >= 0.0 && self.min_lr.is_finite()) {
            return Err(Error::InvalidHyperparameter(format!(
                "warmup-cosine: min_lr must be a finite number >= 0, got {}",
                crate::py_float(self.min_lr)
            )));
        }
        Ok(WarmupCosineLr {
            core: Core::build("warmup-cosine", WarmupCosineRule { cfg: self }, opt)?,
        })
    }

    /// nanoGPT's `get_lr(it)` for a group whose `learning_rate` is `lr`, with
    /// its operations in its order (Python's float arithmetic is f64's).
    pub fn lr_at(&self, it: i64, lr: f64) -> f64 {
        let (warmup, decay, min_lr) = (
            self.warmup_steps as i64,
            self.decay_steps as i64,
            self.min_lr,
        );
        if it < warmup {
            return lr * (it + 1) as f64 / (warmup + 1) as f64;
        }
        if it > decay {
            return min_lr;
        }
        let decay_ratio = (it - warmup) as f64 / (decay - warmup) as f64;
        let coeff = 0.5 * (1.0 + (PI * decay_ratio).cos());
        min_lr + coeff * (lr - min_lr)
    }
}

struct WarmupCosineRule {
    cfg: WarmupCosineLrConfig,
}

impl Schedule for WarmupCosineRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, _opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        Ok(self.lrs(attrs))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        Some(Ok(self.lrs(attrs)))
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("warmup_steps".into(), Value::from(self.cfg.warmup_steps));
        map.insert("decay_steps".into(), Value::from(self.cfg.decay_steps));
        map.insert("min_lr".into(), fnum(self.cfg.min_lr));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = WarmupCosineLrConfig {
            warmup_steps: r.usize("warmup_steps")?,
            decay_steps: r.usize("decay_steps")?,
            min_lr: r.f64("min_lr")?,
        };
        Ok(())
    }
}

impl WarmupCosineRule {
    /// `get_lr(last_epoch)` of every group, its base lr as `learning_rate`.
    fn lrs(&self, attrs: &Attributes<'_>) -> Vec<f64> {
        attrs
            .base_lrs
            .iter()
            .map(|lr| self.cfg.lr_at(attrs.last_epoch, *lr))
            .collect()
    }
}

/// nanoGPT's schedule, stepped once per optimizer step: with `it` the
/// number of steps taken so far (`last_epoch`) and `learning_rate` the
/// group's `initial_lr`, the lr is
///
/// - `learning_rate * (it + 1) / (warmup_steps + 1)` while `it < warmup_steps`,
/// - `min_lr` once `it > decay_steps`,
/// - else `min_lr + coeff * (learning_rate - min_lr)` with
///   `coeff = 0.5 * (1 + cos(pi * (it - warmup_steps) / (decay_steps - warmup_steps)))`,
///
/// f64 operations in nanoGPT's order, so the lrs are its bits. As nanoGPT
/// sets `get_lr(it)` before step `it`'s update, building sets `get_lr(0)`
/// (the lr of the first step) and each [`step`](super::LrScheduler::step)
/// the next. Every group gets the schedule of its own `initial_lr` (nanoGPT
/// has one lr for all groups); the closed form also serves `step(epoch)` and
/// SequentialLR's milestones.
pub struct WarmupCosineLr {
    core: Core<WarmupCosineRule>,
}
super::core_scheduler!(WarmupCosineLr);

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with nanoGPT's names as aliases.

/// `warmup-cosine`'s options: [`WarmupCosineLrConfig`]'s, with `decay_steps`
/// optional: its default `none` takes the run's scheduler steps (nanoGPT's
/// advice: `lr_decay_iters ~= max_iters`).
pub(crate) struct WarmupCosineSpec {
    pub(crate) warmup_steps: usize,
    pub(crate) decay_steps: Option<usize>,
    pub(crate) min_lr: f64,
}

impl Default for WarmupCosineSpec {
    fn default() -> Self {
        Self {
            warmup_steps: 0,
            decay_steps: None,
            min_lr: 0.0,
        }
    }
}

impl Options for WarmupCosineSpec {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("warmup_steps", "steps of linear warm-up")
                .aliases(&["warmup_iters"])
                .required(),
            &mut self.warmup_steps,
        )?;
        v.option(
            OptionInfo::new(
                "decay_steps",
                "step from which the lr is min_lr; none: the run's scheduler steps",
            )
            .aliases(&["lr_decay_iters"]),
            &mut self.decay_steps,
        )?;
        v.option(
            OptionInfo::new("min_lr", "lr after decay_steps, for every group"),
            &mut self.min_lr,
        )
    }
}
