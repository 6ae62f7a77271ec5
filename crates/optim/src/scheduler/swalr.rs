//! SWALR (`torch.optim.swa_utils.SWALR`).
use super::{
    flist, group_lrs, AnnealStrategy, Attributes, Core, GroupValues, Schedule, StateReader,
};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use serde_json::{Map, Value};
use std::f64::consts::PI;

/// Options of [`Swalr`]
/// (`SWALR(optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos")`).
#[derive(Debug, Clone, PartialEq)]
pub struct SwalrConfig {
    /// The lr to anneal to, for all groups or per group. No default.
    pub swa_lr: GroupValues,
    /// Steps of the annealing phase (>= 0, default 10).
    pub anneal_epochs: i64,
    /// `cos` or `linear` (default cos).
    pub anneal_strategy: AnnealStrategy,
}

impl SwalrConfig {
    /// `swa_lr` with PyTorch's defaults.
    pub fn new(swa_lr: impl Into<GroupValues>) -> Self {
        Self {
            swa_lr: swa_lr.into(),
            anneal_epochs: 10,
            anneal_strategy: AnnealStrategy::Cos,
        }
    }

    /// Builds the scheduler with PyTorch's checks (`swa_lr` length,
    /// `anneal_epochs must be equal or greater than 0, got N`).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<Swalr> {
        let swa_lrs = self.swa_lr.per_group("swa_lr", opt.num_groups())?;
        if self.anneal_epochs < 0 {
            return Err(Error::InvalidHyperparameter(format!(
                "anneal_epochs must be equal or greater than 0, got {}",
                self.anneal_epochs
            )));
        }
        let rule = SwalrRule {
            swa_lrs,
            anneal_epochs: self.anneal_epochs,
            strategy: self.anneal_strategy,
        };
        Ok(Swalr {
            core: Core::build("swalr", rule, opt)?,
        })
    }
}

struct SwalrRule {
    swa_lrs: Vec<f64>,
    anneal_epochs: i64,
    strategy: AnnealStrategy,
}

impl SwalrRule {
    fn anneal(&self, t: f64) -> f64 {
        match self.strategy {
            AnnealStrategy::Linear => t,
            AnnealStrategy::Cos => (1.0 - (PI * t).cos()) / 2.0,
        }
    }
}

/// Python's `max(0, min(1, x))` (keeps the first argument unless the second
/// is strictly smaller/greater, as Python does).
fn clamp01(x: f64) -> f64 {
    let m = if x < 1.0 { x } else { 1.0 };
    if m > 0.0 {
        m
    } else {
        0.0
    }
}

impl Schedule for SwalrRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let mut step = attrs.step_count - 1;
        if self.anneal_epochs == 0 {
            step = step.max(1);
        }
        let denom = self.anneal_epochs.max(1) as f64;
        let prev_alpha = self.anneal(clamp01((step - 1) as f64 / denom));
        let alpha = self.anneal(clamp01(step as f64 / denom));
        let lrs = group_lrs(opt)?;
        Ok(lrs
            .iter()
            .zip(&self.swa_lrs)
            .map(|(lr, swa_lr)| {
                let prev = if prev_alpha == 1.0 {
                    *swa_lr
                } else {
                    (lr - prev_alpha * swa_lr) / (1.0 - prev_alpha)
                };
                swa_lr * alpha + prev * (1.0 - alpha)
            })
            .collect())
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("swa_lrs".into(), flist(&self.swa_lrs));
        map.insert("anneal_epochs".into(), Value::from(self.anneal_epochs));
        map.insert(
            "anneal_strategy".into(),
            Value::from(self.strategy.as_str()),
        );
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        let strategy = AnnealStrategy::parse(r.str("anneal_strategy")?)
            .ok_or_else(|| super::bad_state("swalr", "anneal_strategy"))?;
        self.swa_lrs = r.f64_list("swa_lrs")?;
        self.anneal_epochs = r.i64("anneal_epochs")?;
        self.strategy = strategy;
        Ok(())
    }
}

/// `torch.optim.swa_utils.SWALR`: anneals each group's lr to `swa_lr` over
/// `anneal_epochs` steps and then holds it:
/// `lr_t = swa_lr * alpha_t + lr_0 * (1 - alpha_t)` with
/// `alpha_t = anneal(min(1, t / anneal_epochs))` (`cos`: `(1 - cos(pi t)) / 2`,
/// `linear`: `t`), computed as PyTorch does from the current lr (recovering
/// `lr_0` from `alpha_{t-1}`), so another scheduler's changes carry over.
///
/// Usually stepped **per epoch** during the SWA phase, with
/// [`crate::swa::AveragedModel`] updated at the same time.
pub struct Swalr {
    core: Core<SwalrRule>,
}
super::core_scheduler!(Swalr);

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with PyTorch's names.

impl Options for SwalrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "swa_lr",
                "lr to anneal to (one value, or one per group a;b)",
            )
            .required(),
            &mut self.swa_lr,
        )?;
        v.option(
            OptionInfo::new("anneal_epochs", "steps of annealing"),
            &mut self.anneal_epochs,
        )?;
        v.option(
            OptionInfo::new("anneal_strategy", "cos | linear"),
            &mut self.anneal_strategy,
        )
    }
}
