//! The multiplicative schedulers: LambdaLR, MultiplicativeLR, StepLR,
//! MultiStepLR, ConstantLR, LinearLR, ExponentialLR, PolynomialLR.
//!
//! All of them are usually stepped once per epoch (`last_epoch` counts epochs),
//! but nothing stops stepping them per batch with counts in batches.
use super::{core_scheduler, div, fnum, group_lrs, Attributes, Core, Schedule, StateReader};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{OptionInfo, OptionVisitor, Options};
use serde_json::{Map, Value};

/// A learning-rate factor as a function of the epoch (`lr_lambda`).
pub type LrLambda = Box<dyn Fn(usize) -> f64 + Send>;

/// One function for every group, or one per group.
enum Lambdas {
    One(LrLambda),
    PerGroup(Vec<LrLambda>),
}

impl Lambdas {
    fn new(fs: Vec<LrLambda>, groups: usize) -> Result<Self> {
        if fs.len() != groups {
            return Err(Error::InvalidArgument(format!(
                "Expected {groups} lr_lambdas, but got {}",
                fs.len()
            )));
        }
        Ok(Lambdas::PerGroup(fs))
    }

    fn call(&self, group: usize, epoch: i64) -> Result<f64> {
        let epoch = usize::try_from(epoch).unwrap_or_default();
        match self {
            Lambdas::One(f) => Ok(f(epoch)),
            Lambdas::PerGroup(fs) => fs.get(group).map(|f| f(epoch)).ok_or_else(|| {
                Error::InvalidArgument(format!("no lr_lambda for param group {group}"))
            }),
        }
    }
}

/// Every lr times one factor.
fn scaled(lrs: &[f64], factor: f64) -> Vec<f64> {
    lrs.iter().map(|lr| lr * factor).collect()
}

fn epoch_usize(e: i64) -> usize {
    usize::try_from(e).unwrap_or_default()
}

// ---------------------------------------------------------------------------

struct LambdaRule {
    lambdas: Lambdas,
}

impl Schedule for LambdaRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, _opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        attrs
            .base_lrs
            .iter()
            .enumerate()
            .map(|(g, base)| Ok(base * self.lambdas.call(g, attrs.last_epoch)?))
            .collect()
    }
    fn save(&self, _map: &mut Map<String, Value>) {}
    fn load(&mut self, _state: &StateReader<'_>) -> Result<()> {
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.LambdaLR`: `lr = base_lr * lr_lambda(last_epoch)`,
/// where `base_lr` is the group's `initial_lr`.
///
/// Usually stepped per epoch (the lambda receives the step count, so per
/// batch works as well). Built from code only (the lambda is a closure); its
/// state holds the counters but not the closures, as in PyTorch.
pub struct LambdaLr {
    core: Core<LambdaRule>,
}

impl LambdaLr {
    /// One function for all groups: `LambdaLR(optimizer, lr_lambda=f)`.
    pub fn new(opt: &mut dyn Optimizer, lr_lambda: LrLambda) -> Result<Self> {
        let rule = LambdaRule {
            lambdas: Lambdas::One(lr_lambda),
        };
        Ok(Self {
            core: Core::build("lambda", rule, opt)?,
        })
    }

    /// One function per group: `LambdaLR(optimizer, lr_lambda=[f, g])`; errors
    /// with PyTorch's message unless there is one per group.
    pub fn per_group(opt: &mut dyn Optimizer, lr_lambdas: Vec<LrLambda>) -> Result<Self> {
        let rule = LambdaRule {
            lambdas: Lambdas::new(lr_lambdas, opt.num_groups())?,
        };
        Ok(Self {
            core: Core::build("lambda", rule, opt)?,
        })
    }
}
core_scheduler!(LambdaLr);

// ---------------------------------------------------------------------------

struct MultiplicativeRule {
    lambdas: Lambdas,
}

impl Schedule for MultiplicativeRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        if attrs.is_initial {
            return Ok(lrs);
        }
        lrs.iter()
            .enumerate()
            .map(|(g, lr)| Ok(lr * self.lambdas.call(g, attrs.last_epoch)?))
            .collect()
    }
    fn save(&self, _map: &mut Map<String, Value>) {}
    fn load(&mut self, _state: &StateReader<'_>) -> Result<()> {
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.MultiplicativeLR`: each step (not the initial
/// one) multiplies the current lr by `lr_lambda(last_epoch)`:
/// `lr_t = lr_{t-1} * lr_lambda(t)`.
///
/// Usually stepped per epoch. Built from code only (closures).
pub struct MultiplicativeLr {
    core: Core<MultiplicativeRule>,
}

impl MultiplicativeLr {
    /// One function for all groups.
    pub fn new(opt: &mut dyn Optimizer, lr_lambda: LrLambda) -> Result<Self> {
        let rule = MultiplicativeRule {
            lambdas: Lambdas::One(lr_lambda),
        };
        Ok(Self {
            core: Core::build("multiplicative", rule, opt)?,
        })
    }

    /// One function per group (PyTorch's message unless there is one per group).
    pub fn per_group(opt: &mut dyn Optimizer, lr_lambdas: Vec<LrLambda>) -> Result<Self> {
        let rule = MultiplicativeRule {
            lambdas: Lambdas::new(lr_lambdas, opt.num_groups())?,
        };
        Ok(Self {
            core: Core::build("multiplicative", rule, opt)?,
        })
    }
}
core_scheduler!(MultiplicativeLr);

// ---------------------------------------------------------------------------

/// Options of [`StepLr`] (`StepLR(optimizer, step_size, gamma=0.1)`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLrConfig {
    /// Period of learning rate decay, in steps (usually epochs). No default.
    pub step_size: usize,
    /// Multiplicative factor of learning rate decay (default 0.1).
    pub gamma: f64,
}

impl StepLrConfig {
    /// `step_size` with PyTorch's default `gamma=0.1`.
    pub fn new(step_size: usize) -> Self {
        Self {
            step_size,
            gamma: 0.1,
        }
    }

    /// Builds the scheduler (records `initial_lr`, performs the initial step).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<StepLr> {
        Ok(StepLr {
            core: Core::build("step", StepRule { cfg: self }, opt)?,
        })
    }
}

struct StepRule {
    cfg: StepLrConfig,
}

impl Schedule for StepRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        if attrs.last_epoch == 0 {
            return Ok(lrs);
        }
        if self.cfg.step_size == 0 {
            return Err(Error::InvalidArgument(
                "StepLR: integer modulo by zero (step_size is 0)".into(),
            ));
        }
        if !epoch_usize(attrs.last_epoch).is_multiple_of(self.cfg.step_size) {
            return Ok(lrs);
        }
        Ok(scaled(&lrs, self.cfg.gamma))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        if self.cfg.step_size == 0 {
            return Some(Err(Error::InvalidArgument(
                "StepLR: integer division by zero (step_size is 0)".into(),
            )));
        }
        let k = (epoch_usize(attrs.last_epoch) / self.cfg.step_size) as f64;
        Some(Ok(scaled(attrs.base_lrs, self.cfg.gamma.powf(k))))
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("step_size".into(), Value::from(self.cfg.step_size));
        map.insert("gamma".into(), fnum(self.cfg.gamma));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = StepLrConfig {
            step_size: r.usize("step_size")?,
            gamma: r.f64("gamma")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.StepLR`: multiplies the lr by `gamma` every
/// `step_size` steps: `lr_t = lr_{t-1} * gamma` if `t > 0 and t % step_size == 0`
/// (closed form `base_lr * gamma^(t // step_size)`).
///
/// Usually stepped per epoch.
pub struct StepLr {
    core: Core<StepRule>,
}
core_scheduler!(StepLr);

// ---------------------------------------------------------------------------

/// Options of [`MultiStepLr`] (`MultiStepLR(optimizer, milestones, gamma=0.1)`).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiStepLrConfig {
    /// Steps (usually epochs) at which to decay; a milestone listed `n` times
    /// decays by `gamma^n`. No default.
    pub milestones: Vec<usize>,
    /// Multiplicative factor of learning rate decay (default 0.1).
    pub gamma: f64,
}

impl MultiStepLrConfig {
    /// `milestones` with PyTorch's default `gamma=0.1`.
    pub fn new(milestones: Vec<usize>) -> Self {
        Self {
            milestones,
            gamma: 0.1,
        }
    }

    /// Builds the scheduler (records `initial_lr`, performs the initial step).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<MultiStepLr> {
        Ok(MultiStepLr {
            core: Core::build("multistep", MultiStepRule { cfg: self }, opt)?,
        })
    }
}

struct MultiStepRule {
    cfg: MultiStepLrConfig,
}

impl MultiStepRule {
    fn count(&self, epoch: i64) -> usize {
        self.cfg
            .milestones
            .iter()
            .filter(|m| i64::try_from(**m).ok() == Some(epoch))
            .count()
    }
}

impl Schedule for MultiStepRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        let n = self.count(attrs.last_epoch);
        if n == 0 {
            return Ok(lrs);
        }
        let factor = self.cfg.gamma.powf(n as f64);
        Ok(scaled(&lrs, factor))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        let mut sorted: Vec<i64> = self.cfg.milestones.iter().map(|m| *m as i64).collect();
        sorted.sort_unstable();
        let k = super::bisect_right(&sorted, attrs.last_epoch) as f64;
        Some(Ok(scaled(attrs.base_lrs, self.cfg.gamma.powf(k))))
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert(
            "milestones".into(),
            Value::from(self.cfg.milestones.clone()),
        );
        map.insert("gamma".into(), fnum(self.cfg.gamma));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        let milestones = r
            .i64_list("milestones")?
            .into_iter()
            .map(|m| usize::try_from(m).map_err(|_| super::bad_state("multistep", "milestones")))
            .collect::<Result<Vec<_>>>()?;
        self.cfg = MultiStepLrConfig {
            milestones,
            gamma: r.f64("gamma")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.MultiStepLR`: `lr_t = lr_{t-1} * gamma^count(t)`
/// where `count(t)` is how often `t` appears in `milestones` (closed form
/// `base_lr * gamma^bisect_right(milestones, t)`).
///
/// Usually stepped per epoch.
pub struct MultiStepLr {
    core: Core<MultiStepRule>,
}
core_scheduler!(MultiStepLr);

// ---------------------------------------------------------------------------

/// Options of [`ConstantLr`] (`ConstantLR(optimizer, factor=1/3, total_iters=5)`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConstantLrConfig {
    /// The factor applied until `total_iters` (default 1/3, in `[0, 1]`).
    pub factor: f64,
    /// Steps during which the factor applies (default 5).
    pub total_iters: usize,
}

impl Default for ConstantLrConfig {
    fn default() -> Self {
        Self {
            factor: 1.0 / 3.0,
            total_iters: 5,
        }
    }
}

impl ConstantLrConfig {
    /// Builds the scheduler; PyTorch's check of `factor`.
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<ConstantLr> {
        if self.factor > 1.0 || self.factor < 0.0 {
            return Err(Error::InvalidHyperparameter(
                "Constant multiplicative factor expected to be between 0 and 1.".into(),
            ));
        }
        Ok(ConstantLr {
            core: Core::build("constant", ConstantRule { cfg: self }, opt)?,
        })
    }
}

struct ConstantRule {
    cfg: ConstantLrConfig,
}

impl Schedule for ConstantRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        if attrs.last_epoch == 0 {
            return Ok(scaled(&lrs, self.cfg.factor));
        }
        if attrs.last_epoch != self.cfg.total_iters as i64 {
            return Ok(lrs);
        }
        let inv = div(1.0, self.cfg.factor, "ConstantLR (factor is 0)")?;
        Ok(scaled(&lrs, inv))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        let f = self.cfg.factor;
        let reached = if attrs.last_epoch >= self.cfg.total_iters as i64 {
            1.0 - f
        } else {
            0.0
        };
        Some(Ok(scaled(attrs.base_lrs, f + reached)))
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("factor".into(), fnum(self.cfg.factor));
        map.insert("total_iters".into(), Value::from(self.cfg.total_iters));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = ConstantLrConfig {
            factor: r.f64("factor")?,
            total_iters: r.usize("total_iters")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.ConstantLR`: multiplies the lr by `factor` at
/// step 0 and divides it back (`lr * (1.0 / factor)`) at step `total_iters`
/// (closed form `base_lr * (factor + (t >= total_iters) * (1 - factor))`).
///
/// Usually stepped per epoch, often as the warm-up of a [`super::SequentialLr`].
pub struct ConstantLr {
    core: Core<ConstantRule>,
}
core_scheduler!(ConstantLr);

// ---------------------------------------------------------------------------

/// Options of [`LinearLr`]
/// (`LinearLR(optimizer, start_factor=1/3, end_factor=1.0, total_iters=5)`).
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLrConfig {
    /// Factor at step 0 (default 1/3, in `(0, 1]`).
    pub start_factor: f64,
    /// Factor from step `total_iters` on (default 1.0, in `[0, 1]`).
    pub end_factor: f64,
    /// Steps over which the factor moves linearly (default 5).
    pub total_iters: usize,
}

impl Default for LinearLrConfig {
    fn default() -> Self {
        Self {
            start_factor: 1.0 / 3.0,
            end_factor: 1.0,
            total_iters: 5,
        }
    }
}

impl LinearLrConfig {
    /// Builds the scheduler; PyTorch's checks of the factors.
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<LinearLr> {
        if self.start_factor > 1.0 || self.start_factor <= 0.0 {
            return Err(Error::InvalidHyperparameter(
                "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.".into(),
            ));
        }
        if self.end_factor > 1.0 || self.end_factor < 0.0 {
            return Err(Error::InvalidHyperparameter(
                "Ending multiplicative factor expected to be between 0 and 1.".into(),
            ));
        }
        Ok(LinearLr {
            core: Core::build("linear", LinearRule { cfg: self }, opt)?,
        })
    }
}

struct LinearRule {
    cfg: LinearLrConfig,
}

impl Schedule for LinearRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        let (s, e, n) = (
            self.cfg.start_factor,
            self.cfg.end_factor,
            self.cfg.total_iters as i64,
        );
        if attrs.last_epoch == 0 {
            return Ok(scaled(&lrs, s));
        }
        if attrs.is_initial || attrs.last_epoch > n {
            return Ok(lrs);
        }
        let denom = n as f64 * s + (attrs.last_epoch - 1) as f64 * (e - s);
        let factor = 1.0 + div(e - s, denom, "LinearLR")?;
        Ok(scaled(&lrs, factor))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        let (s, e, n) = (
            self.cfg.start_factor,
            self.cfg.end_factor,
            self.cfg.total_iters as i64,
        );
        let m = n.min(attrs.last_epoch) as f64;
        Some(
            div((e - s) * m, n as f64, "LinearLR (total_iters is 0)")
                .map(|frac| scaled(attrs.base_lrs, s + frac)),
        )
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("start_factor".into(), fnum(self.cfg.start_factor));
        map.insert("end_factor".into(), fnum(self.cfg.end_factor));
        map.insert("total_iters".into(), Value::from(self.cfg.total_iters));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = LinearLrConfig {
            start_factor: r.f64("start_factor")?,
            end_factor: r.f64("end_factor")?,
            total_iters: r.usize("total_iters")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.LinearLR`: the lr factor moves linearly from
/// `start_factor` (step 0) to `end_factor` (step `total_iters`). Recursively,
/// `lr_t = lr_{t-1} * (1 + (end - start) / (total_iters * start + (t - 1) * (end - start)))`
/// for `0 < t <= total_iters` (closed form
/// `base_lr * (start + (end - start) * min(total_iters, t) / total_iters)`).
///
/// Usually stepped per epoch or per batch as a warm-up.
pub struct LinearLr {
    core: Core<LinearRule>,
}
core_scheduler!(LinearLr);

// ---------------------------------------------------------------------------

/// Options of [`ExponentialLr`] (`ExponentialLR(optimizer, gamma)`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialLrConfig {
    /// Multiplicative factor per step. No default.
    pub gamma: f64,
}

impl ExponentialLrConfig {
    /// Builds the scheduler (records `initial_lr`, performs the initial step).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<ExponentialLr> {
        Ok(ExponentialLr {
            core: Core::build("exponential", ExponentialRule { cfg: self }, opt)?,
        })
    }
}

struct ExponentialRule {
    cfg: ExponentialLrConfig,
}

impl Schedule for ExponentialRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        if attrs.is_initial {
            return Ok(lrs);
        }
        Ok(scaled(&lrs, self.cfg.gamma))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        let f = self.cfg.gamma.powf(attrs.last_epoch as f64);
        Some(Ok(scaled(attrs.base_lrs, f)))
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("gamma".into(), fnum(self.cfg.gamma));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = ExponentialLrConfig {
            gamma: r.f64("gamma")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.ExponentialLR`: `lr_t = lr_{t-1} * gamma`
/// (closed form `base_lr * gamma^t`).
///
/// Usually stepped per epoch.
pub struct ExponentialLr {
    core: Core<ExponentialRule>,
}
core_scheduler!(ExponentialLr);

// ---------------------------------------------------------------------------

/// Options of [`PolynomialLr`] (`PolynomialLR(optimizer, total_iters=5, power=1.0)`).
#[derive(Debug, Clone, PartialEq)]
pub struct PolynomialLrConfig {
    /// Steps over which the lr decays to 0 (default 5).
    pub total_iters: usize,
    /// The power of the polynomial (default 1.0).
    pub power: f64,
}

impl Default for PolynomialLrConfig {
    fn default() -> Self {
        Self {
            total_iters: 5,
            power: 1.0,
        }
    }
}

impl PolynomialLrConfig {
    /// Builds the scheduler (records `initial_lr`, performs the initial step).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<PolynomialLr> {
        Ok(PolynomialLr {
            core: Core::build("polynomial", PolynomialRule { cfg: self }, opt)?,
        })
    }
}

struct PolynomialRule {
    cfg: PolynomialLrConfig,
}

impl Schedule for PolynomialRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let lrs = group_lrs(opt)?;
        let n = self.cfg.total_iters as i64;
        if attrs.is_initial || attrs.last_epoch > n {
            return Ok(lrs);
        }
        let what = "PolynomialLR (total_iters is 0)";
        let num = 1.0 - div(attrs.last_epoch as f64, n as f64, what)?;
        let den = 1.0 - div((attrs.last_epoch - 1) as f64, n as f64, what)?;
        let decay = div(num, den, "PolynomialLR")?.powf(self.cfg.power);
        Ok(scaled(&lrs, decay))
    }
    fn closed_form(&self, attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        let n = self.cfg.total_iters as i64;
        let m = n.min(attrs.last_epoch) as f64;
        Some(
            div(m, n as f64, "PolynomialLR (total_iters is 0)").map(|frac| {
                let f = (1.0 - frac).powf(self.cfg.power);
                scaled(attrs.base_lrs, f)
            }),
        )
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("total_iters".into(), Value::from(self.cfg.total_iters));
        map.insert("power".into(), fnum(self.cfg.power));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        self.cfg = PolynomialLrConfig {
            total_iters: r.usize("total_iters")?,
            power: r.f64("power")?,
        };
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.PolynomialLR`: decays towards 0 as
/// `base_lr * (1 - min(t, total_iters) / total_iters)^power`; recursively
/// `lr_t = lr_{t-1} * ((1 - t/T) / (1 - (t-1)/T))^power` for `0 < t <= T`.
///
/// Usually stepped per epoch (or per batch with `total_iters` in batches).
pub struct PolynomialLr {
    core: Core<PolynomialRule>,
}
core_scheduler!(PolynomialLr);

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with PyTorch's names.

impl Options for StepLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("step_size", "period of decay, in steps").required(),
            &mut self.step_size,
        )?;
        v.option(OptionInfo::new("gamma", "decay factor"), &mut self.gamma)
    }
}

impl Options for MultiStepLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("milestones", "steps at which to decay, e.g. 30;80").required(),
            &mut self.milestones,
        )?;
        v.option(OptionInfo::new("gamma", "decay factor"), &mut self.gamma)
    }
}

impl Options for ConstantLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("factor", "factor in [0, 1]"),
            &mut self.factor,
        )?;
        v.option(
            OptionInfo::new("total_iters", "steps with the factor"),
            &mut self.total_iters,
        )
    }
}

impl Options for LinearLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("start_factor", "factor at step 0, in (0, 1]"),
            &mut self.start_factor,
        )?;
        v.option(
            OptionInfo::new("end_factor", "factor from total_iters on, in [0, 1]"),
            &mut self.end_factor,
        )?;
        v.option(
            OptionInfo::new("total_iters", "steps of the linear change"),
            &mut self.total_iters,
        )
    }
}

impl Options for ExponentialLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("gamma", "decay factor per step").required(),
            &mut self.gamma,
        )
    }
}

impl Options for PolynomialLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("total_iters", "steps to reach 0"),
            &mut self.total_iters,
        )?;
        v.option(
            OptionInfo::new("power", "power of the polynomial"),
            &mut self.power,
        )
    }
}
