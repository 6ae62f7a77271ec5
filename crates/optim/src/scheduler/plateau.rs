//! ReduceLROnPlateau.
use super::{flist, fnum, group_lrs, GroupValues, LrScheduler, StateReader};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{Choice, OptionInfo, OptionVisitor, Options};
use serde_json::Value;

/// Whether the monitored metric should decrease or increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` defines a significant improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdMode {
    /// `best * (1 - threshold)` (min) or `best * (1 + threshold)` (max).
    Rel,
    /// `best - threshold` (min) or `best + threshold` (max).
    Abs,
}

kiln_tensor::choices!(PlateauMode {
    Min = "min",
    Max = "max",
});

kiln_tensor::choices!(ThresholdMode {
    Rel = "rel",
    Abs = "abs",
});

/// Options of [`ReduceLrOnPlateau`], PyTorch's defaults in `Default`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReduceLrOnPlateauConfig {
    /// `min` or `max` (default min).
    pub mode: PlateauMode,
    /// `new_lr = lr * factor` (default 0.1, must be < 1).
    pub factor: f64,
    /// Bad epochs tolerated before reducing (default 10).
    pub patience: usize,
    /// Significance threshold (default 1e-4).
    pub threshold: f64,
    /// `rel` or `abs` (default rel).
    pub threshold_mode: ThresholdMode,
    /// Epochs to wait after a reduction before counting bad epochs (default 0).
    pub cooldown: usize,
    /// Lower bound of the lr, for all groups or per group (default 0).
    pub min_lr: GroupValues,
    /// Reductions smaller than this are skipped (default 1e-8).
    pub eps: f64,
}

impl Default for ReduceLrOnPlateauConfig {
    fn default() -> Self {
        Self {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: GroupValues::All(0.0),
            eps: 1e-8,
        }
    }
}

impl ReduceLrOnPlateauConfig {
    /// Builds the scheduler with PyTorch's checks (`Factor should be < 1.0.`,
    /// `expected N min_lrs, got M`). Unlike the other schedulers it performs
    /// no initial step and does not touch the learning rates.
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<ReduceLrOnPlateau> {
        if self.factor >= 1.0 {
            return Err(Error::InvalidHyperparameter(
                "Factor should be < 1.0.".into(),
            ));
        }
        let groups = opt.num_groups();
        let (min_lrs, default_min_lr) = match &self.min_lr {
            GroupValues::All(v) => (vec![*v; groups], Some(*v)),
            GroupValues::PerGroup(vs) if vs.len() == groups => (vs.clone(), None),
            GroupValues::PerGroup(vs) => {
                return Err(Error::InvalidArgument(format!(
                    "expected {groups} min_lrs, got {}",
                    vs.len()
                )))
            }
        };
        let mode_worse = match self.mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        Ok(ReduceLrOnPlateau {
            last_lr: group_lrs(opt)?,
            cfg: self,
            min_lrs,
            default_min_lr,
            last_epoch: 0,
            best: mode_worse,
            mode_worse,
            num_bad_epochs: 0,
            cooldown_counter: 0,
        })
    }
}

/// `torch.optim.lr_scheduler.ReduceLROnPlateau`: after more than `patience`
/// steps without a significant improvement of the metric, every group's lr
/// becomes `max(lr * factor, min_lr)` (skipped if the change is `<= eps`),
/// followed by `cooldown` steps in which bad steps are not counted.
///
/// Stepped with [`LrScheduler::step_with_metric`], usually **per epoch** with
/// a validation metric; [`LrScheduler::step`] errors.
pub struct ReduceLrOnPlateau {
    cfg: ReduceLrOnPlateauConfig,
    min_lrs: Vec<f64>,
    default_min_lr: Option<f64>,
    last_epoch: i64,
    best: f64,
    mode_worse: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
    last_lr: Vec<f64>,
}

impl ReduceLrOnPlateau {
    fn is_better(&self, a: f64, best: f64) -> bool {
        let t = self.cfg.threshold;
        match (self.cfg.mode, self.cfg.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < best * (1.0 - t),
            (PlateauMode::Min, ThresholdMode::Abs) => a < best - t,
            (PlateauMode::Max, ThresholdMode::Rel) => a > best * (t + 1.0),
            (PlateauMode::Max, ThresholdMode::Abs) => a > best + t,
        }
    }

    fn reduce_lr(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        let groups = opt.num_groups();
        if groups != self.min_lrs.len() {
            match self.default_min_lr {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "The number of param groups in the `optimizer` ({groups}) differs from when \
                         `ReduceLROnPlateau` was initialized ({}), usually due to a new param group being \
                         added to the optimizer. Please modify the `min_lrs` field to match the length of \
                         the `optimizer` param groups.",
                        self.min_lrs.len()
                    )))
                }
                Some(v) => self.min_lrs = vec![v; groups],
            }
        }
        for (g, min_lr) in self.min_lrs.iter().enumerate() {
            let old_lr = opt
                .lr(g)
                .ok_or_else(|| Error::InvalidArgument(format!("param group {g} has no 'lr'")))?;
            let scaled = old_lr * self.cfg.factor;
            // Python's max(a, b) keeps `a` unless `b > a`.
            let new_lr = if *min_lr > scaled { *min_lr } else { scaled };
            if old_lr - new_lr > self.cfg.eps {
                opt.set_lr(g, new_lr)?;
            }
        }
        Ok(())
    }

    /// The best metric seen so far (`inf`/`-inf` before the first step).
    pub fn best(&self) -> f64 {
        self.best
    }

    /// Consecutive steps without improvement.
    pub fn num_bad_epochs(&self) -> usize {
        self.num_bad_epochs
    }
}

fn mode_str(m: PlateauMode) -> &'static str {
    m.word()
}

fn threshold_mode_str(m: ThresholdMode) -> &'static str {
    m.word()
}

impl LrScheduler for ReduceLrOnPlateau {
    fn name(&self) -> &str {
        "plateau"
    }

    fn step(&mut self, _opt: &mut dyn Optimizer) -> Result<()> {
        Err(Error::InvalidArgument(
            "ReduceLROnPlateau needs the monitored metric: call step_with_metric(optimizer, metric)".into(),
        ))
    }

    fn step_with_metric(&mut self, opt: &mut dyn Optimizer, metric: f64) -> Result<()> {
        self.last_epoch += 1;
        if self.is_better(metric, self.best) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.cfg.patience {
            self.reduce_lr(opt)?;
            self.cooldown_counter = self.cfg.cooldown;
            self.num_bad_epochs = 0;
        }
        self.last_lr = group_lrs(opt)?;
        Ok(())
    }

    fn needs_metric(&self) -> bool {
        true
    }

    fn last_lr(&self) -> &[f64] {
        &self.last_lr
    }

    fn last_epoch(&self) -> i64 {
        self.last_epoch
    }

    fn state_dict(&self) -> Value {
        serde_json::json!({
            "scheduler": "plateau",
            "mode": mode_str(self.cfg.mode),
            "factor": fnum(self.cfg.factor),
            "patience": self.cfg.patience,
            "threshold": fnum(self.cfg.threshold),
            "threshold_mode": threshold_mode_str(self.cfg.threshold_mode),
            "cooldown": self.cfg.cooldown,
            "min_lrs": flist(&self.min_lrs),
            "default_min_lr": self.default_min_lr.map(fnum),
            "eps": fnum(self.cfg.eps),
            "last_epoch": self.last_epoch,
            "best": fnum(self.best),
            "mode_worse": fnum(self.mode_worse),
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_lr": flist(&self.last_lr),
        })
    }

    fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let r = StateReader::new("plateau", state)?;
        let m = r.str("mode")?;
        let mode = PlateauMode::from_word(m)
            .ok_or_else(|| Error::InvalidArgument(format!("mode {m} is unknown!")))?;
        let m = r.str("threshold_mode")?;
        let threshold_mode = ThresholdMode::from_word(m)
            .ok_or_else(|| Error::InvalidArgument(format!("threshold mode {m} is unknown!")))?;
        let min_lrs = r.f64_list("min_lrs")?;
        let default_min_lr = r.opt_f64("default_min_lr")?;
        let cfg = ReduceLrOnPlateauConfig {
            mode,
            factor: r.f64("factor")?,
            patience: r.usize("patience")?,
            threshold: r.f64("threshold")?,
            threshold_mode,
            cooldown: r.usize("cooldown")?,
            min_lr: default_min_lr
                .map_or_else(|| GroupValues::PerGroup(min_lrs.clone()), GroupValues::All),
            eps: r.f64("eps")?,
        };
        let (last_epoch, best) = (r.i64("last_epoch")?, r.f64("best")?);
        let (num_bad_epochs, cooldown_counter) =
            (r.usize("num_bad_epochs")?, r.usize("cooldown_counter")?);
        let last_lr = r.f64_list("last_lr")?;
        self.mode_worse = match mode {
            PlateauMode::Min => f64::INFINITY,
            PlateauMode::Max => f64::NEG_INFINITY,
        };
        self.cfg = cfg;
        self.min_lrs = min_lrs;
        self.default_min_lr = default_min_lr;
        self.last_epoch = last_epoch;
        self.best = best;
        self.num_bad_epochs = num_bad_epochs;
        self.cooldown_counter = cooldown_counter;
        self.last_lr = last_lr;
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with PyTorch's names.

impl Options for ReduceLrOnPlateauConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(OptionInfo::new("mode", "min | max"), &mut self.mode)?;
        v.option(
            OptionInfo::new("factor", "new_lr = lr * factor, < 1"),
            &mut self.factor,
        )?;
        v.option(
            OptionInfo::new("patience", "bad steps tolerated before reducing"),
            &mut self.patience,
        )?;
        v.option(
            OptionInfo::new("threshold", "significance threshold"),
            &mut self.threshold,
        )?;
        v.option(
            OptionInfo::new("threshold_mode", "rel | abs"),
            &mut self.threshold_mode,
        )?;
        v.option(
            OptionInfo::new("cooldown", "steps to wait after a reduction"),
            &mut self.cooldown,
        )?;
        v.option(
            OptionInfo::new("min_lr", "lower lr bound (one value, or one per group a;b)"),
            &mut self.min_lr,
        )?;
        v.option(
            OptionInfo::new("eps", "smaller reductions are skipped"),
            &mut self.eps,
        )
    }
}
