//! Learning-rate schedulers: `torch.optim.lr_scheduler` (and
//! `torch.optim.swa_utils.SWALR`) with PyTorch's semantics and arithmetic.
//!
//! A scheduler is built from a config against an optimizer, exactly like a
//! PyTorch constructor: building records each group's `initial_lr` and
//! performs the *initial step*, which sets the learning rates for epoch 0.
//! Every later [`LrScheduler::step`] is one `scheduler.step()`:
//!
//! ```no_run
//! # fn demo(opt: &mut dyn kiln_optim::Optimizer) -> kiln_optim::Result<()> {
//! use kiln_optim::scheduler::{LrScheduler, StepLrConfig};
//! let mut sched = StepLrConfig { step_size: 30, gamma: 0.1 }.build(opt)?;
//! for _epoch in 0..100 {
//!     // ... train one epoch, calling opt.step() per batch ...
//!     sched.step(opt)?;
//! }
//! # Ok(()) }
//! ```
//!
//! **Per batch or per epoch.** As in PyTorch, the caller decides how often
//! `step` is called; a scheduler only counts its own steps (`last_epoch`).
//! The documentation of each scheduler says what its counters mean and how it
//! is usually stepped (CyclicLR and OneCycleLR per batch, most others per
//! epoch). The training loop exposes this as `--scheduler-interval step|epoch`.
//!
//! **Exact arithmetic.** PyTorch's `step()` uses each scheduler's recursive
//! (chainable) `get_lr`, which reads the optimizer's current `lr`; these ports
//! perform the same f64 operations in the same order, so the learning rates
//! match PyTorch bit for bit (the golden tests check equality). The closed
//! forms are used only where PyTorch uses them (SequentialLR's milestones).
//!
//! **`initial_lr`.** PyTorch stores `initial_lr` in each param group the first
//! time a scheduler is built on an optimizer, and every later scheduler on the
//! same optimizer takes its `base_lrs` from it. kiln does the same through
//! [`Optimizer::hyperparameter`]`(g, "initial_lr")` and
//! [`Optimizer::set_hyperparameter`]: an optimizer whose groups accept the
//! `initial_lr` key behaves exactly like PyTorch. With an optimizer that does
//! not store it (kiln's `Sgd` today), each scheduler takes the group's current
//! `lr` as its `initial_lr`, and [`SequentialLr`] / [`ChainedScheduler`]
//! replay PyTorch's bookkeeping over their schedulers (the first one sets
//! `initial_lr`, OneCycleLR overwrites it) and hand the result to the others
//! ([`Composable::rebase`]); every golden sequence matches PyTorch either
//! way. What the fallback cannot reproduce: two *independent* schedulers built
//! one after the other on the same optimizer, the second of which uses
//! `base_lrs` (LambdaLR, CosineAnnealingLR, CosineAnnealingWarmRestarts) after
//! the first changed the lr in its initial step (ConstantLR, LinearLR,
//! LambdaLR, CyclicLR); and LambdaLR as a later scheduler of a
//! ChainedScheduler (its initial step already used the current lr).
//!
//! **State.** [`LrScheduler::state_dict`] holds the counters, the last
//! learning rates, the hyperparameters and the internal state. Floats are
//! written as decimal strings (Rust's shortest round-trip form, `"inf"` for
//! infinity) because serde_json's default float parsing is not exact through
//! text; loading also accepts plain JSON numbers. A scheduler built afresh
//! and loaded from the state of another continues with identical learning
//! rates.
//!
//! **Spec strings.** [`schedulers()`] is the registry the CLI uses
//! (`onecycle:max_lr=0.1`, `step:step_size=30,gamma=0.1`, `cosine:t_max=100`,
//! or PyTorch's names: `CosineAnnealingLR:T_max=100`; nanoGPT's
//! `warmup-cosine:warmup_steps=2000,min_lr=6e-5`; SequentialLR over nested
//! specs, `sequential:schedulers=[linear:start_factor=0.1,total_iters=5;cosine],milestones=5`). Each config implements
//! [`kiln_tensor::spec::Options`], so the options, their defaults and their
//! PyTorch spellings are written once, next to the config.
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::OptionValue;
use serde_json::{Map, Value};

mod basic;
mod composite;
mod cosine;
mod cyclic;
mod onecycle;
mod plateau;
mod registry;
mod swalr;
mod warmup_cosine;

pub use basic::{
    ConstantLr, ConstantLrConfig, ExponentialLr, ExponentialLrConfig, LambdaLr, LinearLr,
    LinearLrConfig, LrLambda, MultiStepLr, MultiStepLrConfig, MultiplicativeLr, PolynomialLr,
    PolynomialLrConfig, StepLr, StepLrConfig,
};
pub use composite::{ChainedScheduler, SequentialLr};
pub use cosine::{
    CosineAnnealingLr, CosineAnnealingLrConfig, CosineAnnealingWarmRestarts,
    CosineAnnealingWarmRestartsConfig,
};
pub use cyclic::{CyclicLr, CyclicLrConfig, CyclicMode, ScaleFn, ScaleMode};
pub use onecycle::{AnnealStrategy, OneCycleLr, OneCycleLrConfig};
pub use plateau::{PlateauMode, ReduceLrOnPlateau, ReduceLrOnPlateauConfig, ThresholdMode};
pub use registry::{
    scheduler_entry, schedulers, steps_per_batch, BuildContext, SchedulerBuild, SchedulerEntry,
    SchedulerRegistry,
};
pub use swalr::{Swalr, SwalrConfig};
pub use warmup_cosine::{WarmupCosineLr, WarmupCosineLrConfig};

/// A learning-rate scheduler: PyTorch's `LRScheduler` interface.
///
/// Object safe, so a program can hold a `Box<dyn LrScheduler>` chosen at run
/// time (see [`schedulers()`]). The scheduler does not own the optimizer:
/// every call that changes learning rates takes it as `&mut dyn Optimizer`,
/// and it must be the optimizer the scheduler was built on.
///
/// Six methods are required; the provided ones are the metric-driven step
/// (ReduceLROnPlateau), PyTorch's `step(epoch)` ([`LrScheduler::update_lr_at`])
/// and [`LrScheduler::composable`], the door to the bookkeeping that
/// [`SequentialLr`], [`ChainedScheduler`] and [`resume_at`] perform
/// ([`Composable`]); their defaults suit a scheduler that needs none of it.
pub trait LrScheduler: Send {
    /// The scheduler's name as spec strings use it (`step`, `onecycle`...).
    fn name(&self) -> &str;

    /// One `scheduler.step()`: advances the scheduler's counter and writes the
    /// new learning rate of every group into `opt`. Call it after
    /// `opt.step()`, once per batch or once per epoch as the schedule intends.
    fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;

    /// The learning rates this scheduler last set, one per group
    /// (`get_last_lr()`).
    fn last_lr(&self) -> &[f64];

    /// The scheduler's step counter (`last_epoch`): 0 after building, +1 per step.
    fn last_epoch(&self) -> i64;

    /// Everything needed to continue: counters, last lrs, hyperparameters,
    /// internal state (`state_dict()`); closures are not saved.
    fn state_dict(&self) -> Value;

    /// Restores [`LrScheduler::state_dict`] of a scheduler of the same kind.
    /// Like PyTorch it does not touch the optimizer: restore the optimizer's
    /// own state (its learning rates) after building the scheduler.
    fn load_state_dict(&mut self, state: &Value) -> Result<()>;

    /// One step driven by a metric (ReduceLROnPlateau's `step(metrics)`).
    /// Schedulers that use no metric ignore it and [`LrScheduler::step`].
    fn step_with_metric(&mut self, opt: &mut dyn Optimizer, metric: f64) -> Result<()> {
        let _ = metric;
        self.step(opt)
    }

    /// Whether [`LrScheduler::step_with_metric`] must be used (ReduceLROnPlateau).
    fn needs_metric(&self) -> bool {
        false
    }

    /// PyTorch's `_update_lr(epoch)` (what `step(epoch)` does): sets
    /// `last_epoch` to `epoch` and the learning rates from the closed form
    /// where the scheduler has one (else from its recursive rule), without
    /// counting a step. SequentialLR calls it with 0 when it switches to a
    /// scheduler at a milestone.
    fn update_lr_at(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        let _ = (opt, epoch);
        Err(Error::InvalidArgument(format!(
            "{} cannot restart at an epoch, so it can only be the first scheduler of a SequentialLR",
            self.name()
        )))
    }

    /// This scheduler's construction bookkeeping (its initial step and the
    /// groups' `initial_lr`), for composites and [`resume_at`]; `None`, the
    /// default, for a scheduler without any: it can still be the first
    /// scheduler of a SequentialLR (whose initial step is then redone by
    /// [`LrScheduler::step`]) but cannot be resumed with `last_epoch`.
    fn composable(&mut self) -> Option<&mut dyn Composable> {
        None
    }
}

/// The groups' `initial_lr` as a scheduler recorded it when it was built.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialLrs {
    /// One per group.
    pub lrs: Vec<f64>,
    /// Whether building it wrote them over the groups' own (OneCycleLR);
    /// the others only set them where a group had none.
    pub overwritten: bool,
}

/// What PyTorch's composites and resuming constructor do to a scheduler
/// besides stepping it: the `LRScheduler` base class's initial step
/// (`_initial_step`, SequentialLR's `recursive_undo`) and `initial_lr`
/// bookkeeping. Reached through [`LrScheduler::composable`]; kiln's
/// schedulers implement it, a downstream one may.
///
/// The `initial_lr` methods matter where the optimizer cannot store
/// `initial_lr` in its groups (kiln's own optimizers): PyTorch's groups
/// would carry it from one scheduler to the next, so [`SequentialLr`] and
/// [`ChainedScheduler`] replay that — the first scheduler records it,
/// OneCycleLR overwrites it — and rebase the others onto it. With an
/// optimizer that stores it (`set_hyperparameter(g, "initial_lr", ..)`
/// succeeds), every scheduler reads it from the groups, as in PyTorch.
pub trait Composable {
    /// Undoes the count of the initial step (`last_epoch -= 1`; a composite
    /// does it for each of its schedulers): SequentialLR's `recursive_undo`.
    fn undo_initial_step(&mut self);

    /// PyTorch's `_initial_step()`: resets the step count and performs the
    /// initial step again (SequentialLR does this for its first scheduler).
    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()>;

    /// The groups' `initial_lr` as this scheduler recorded (or wrote) it,
    /// if it uses one.
    fn initial_lrs(&mut self) -> Option<InitialLrs>;

    /// Takes `initial_lrs` as the groups' `initial_lr`, and as `base_lrs`
    /// where those come from it (no-op for schedulers whose base lrs are
    /// their own options, such as CyclicLR and OneCycleLR).
    fn rebase(&mut self, initial_lrs: &[f64]);

    /// What PyTorch's constructor does when given `last_epoch = N`
    /// (N ≥ 0, resuming): `base_lrs` from the groups' `initial_lr`
    /// (`initial_lrs`), `last_epoch = N`, then `_initial_step()`, which writes
    /// the learning rates of epoch N + 1 from the groups' current ones. Used
    /// through [`resume_at`]. Schedulers whose resuming PyTorch does
    /// differently (CyclicLR, OneCycleLR, CosineAnnealingWarmRestarts, the
    /// composites) refuse with [`cannot_restart`]'s error.
    fn restart_at(
        &mut self,
        opt: &mut dyn Optimizer,
        last_epoch: i64,
        initial_lrs: &[f64],
    ) -> Result<()>;
}

/// The error of [`Composable::restart_at`] for a scheduler named `name`
/// that PyTorch resumes differently.
pub fn cannot_restart(name: &str) -> Error {
    Error::InvalidArgument(format!(
        "{name} cannot be built with last_epoch >= 0 in kiln; restore its state_dict instead"
    ))
}

/// `Scheduler(optimizer, ..., last_epoch=N)`: a scheduler `build` makes,
/// resumed after epoch `last_epoch` as PyTorch's constructor resumes it.
/// `last_epoch = -1` is a fresh scheduler (`build(opt)`). Otherwise every
/// group must have an `initial_lr` (PyTorch's error otherwise); the groups'
/// learning rates are those the checkpoint restored, and the scheduler's
/// initial step computes epoch N + 1 from them (see
/// [`Composable::restart_at`]). Resuming from a saved
/// [`LrScheduler::state_dict`] is the other way, and works for every
/// scheduler.
pub fn resume_at<S: LrScheduler + ?Sized>(
    opt: &mut dyn Optimizer,
    last_epoch: i64,
    build: impl FnOnce(&mut dyn Optimizer) -> Result<Box<S>>,
) -> Result<Box<S>> {
    if last_epoch == -1 {
        return build(opt);
    }
    if last_epoch < -1 {
        return Err(Error::InvalidArgument(format!(
            "last_epoch must be -1 (a fresh scheduler) or an epoch >= 0, got {last_epoch}"
        )));
    }
    let initial_lrs = (0..opt.num_groups())
        .map(|g| {
            opt.hyperparameter(g, "initial_lr").ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "param 'initial_lr' is not specified in param_groups[{g}] when resuming scheduler with last_epoch >= 0."
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Building performs a fresh initial step; PyTorch's resuming constructor
    // does not, so the restored learning rates are put back first.
    let lrs = group_lrs(opt)?;
    let mut sched = build(opt)?;
    apply_lrs(opt, &lrs)?;
    let name = sched.name().to_string();
    sched
        .composable()
        .ok_or_else(|| cannot_restart(&name))?
        .restart_at(opt, last_epoch, &initial_lrs)?;
    Ok(sched)
}

/// A value per param group, or one value for all groups (PyTorch's
/// `float or list` arguments such as `max_lr`, `min_lr`, `swa_lr`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum GroupValues {
    /// The same value for every group.
    All(f64),
    /// One value per group, in group order.
    PerGroup(Vec<f64>),
}

impl From<f64> for GroupValues {
    fn from(v: f64) -> Self {
        GroupValues::All(v)
    }
}

impl From<Vec<f64>> for GroupValues {
    fn from(v: Vec<f64>) -> Self {
        GroupValues::PerGroup(v)
    }
}

impl GroupValues {
    /// PyTorch's `_format_param(name, optimizer, param)`: one value per group,
    /// erroring with PyTorch's message when a list has the wrong length.
    pub fn per_group(&self, name: &str, groups: usize) -> Result<Vec<f64>> {
        match self {
            GroupValues::All(v) => Ok(vec![*v; groups]),
            GroupValues::PerGroup(vs) if vs.len() == groups => Ok(vs.clone()),
            GroupValues::PerGroup(vs) => Err(Error::InvalidArgument(format!(
                "{name} must have the same length as optimizer.param_groups. {name} has {} values, param_groups has {groups}.",
                vs.len()
            ))),
        }
    }
}

/// One value (`0.1`, every group) or one per group (`0.1;0.01`) in specs.
impl OptionValue for GroupValues {
    fn parse_text(&mut self, text: &str) -> std::result::Result<(), String> {
        let mut list: Vec<f64> = Vec::new();
        list.parse_text(text)
            .map_err(|_| "a number or one number per param group, a;b".to_string())?;
        *self = match list.as_slice() {
            [one] => GroupValues::All(*one),
            _ => GroupValues::PerGroup(list),
        };
        Ok(())
    }
    fn format_text(&self) -> String {
        match self {
            GroupValues::All(v) => v.format_text(),
            GroupValues::PerGroup(vs) => vs.format_text(),
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers shared by the schedulers.

/// `a / b` with Python's `ZeroDivisionError` as an error.
pub(crate) fn div(a: f64, b: f64, what: &str) -> Result<f64> {
    if b == 0.0 {
        Err(Error::InvalidArgument(format!(
            "{what}: float division by zero"
        )))
    } else {
        Ok(a / b)
    }
}

/// Python's `bisect.bisect_right` (same probes, so same answer on unsorted input).
pub(crate) fn bisect_right(a: &[i64], x: i64) -> usize {
    let (mut lo, mut hi) = (0usize, a.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if a.get(mid).is_some_and(|m| x < *m) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The current learning rate of every group.
pub(crate) fn group_lrs(opt: &dyn Optimizer) -> Result<Vec<f64>> {
    (0..opt.num_groups())
        .map(|g| {
            opt.lr(g)
                .ok_or_else(|| Error::InvalidArgument(format!("param group {g} has no 'lr'")))
        })
        .collect()
}

/// Writes `lrs` into the groups and returns what the optimizer now holds
/// (`_update_lr` + `_param_groups_val_list(optimizer, "lr")`).
pub(crate) fn apply_lrs(opt: &mut dyn Optimizer, lrs: &[f64]) -> Result<Vec<f64>> {
    if lrs.len() != opt.num_groups() {
        return Err(Error::InvalidArgument(format!(
            "the scheduler has {} learning rates but the optimizer has {} param groups",
            lrs.len(),
            opt.num_groups()
        )));
    }
    for (g, lr) in lrs.iter().enumerate() {
        opt.set_lr(g, *lr)?;
    }
    group_lrs(opt)
}

/// `group.setdefault("initial_lr", group["lr"])` for every group: the stored
/// `initial_lr` where the optimizer has one, else the current lr (which is
/// then stored if the optimizer accepts the key).
pub(crate) fn setdefault_initial_lrs(opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(opt.num_groups());
    for g in 0..opt.num_groups() {
        match opt.hyperparameter(g, "initial_lr") {
            Some(v) => out.push(v),
            None => {
                let lr = opt.lr(g).ok_or_else(|| {
                    Error::InvalidArgument(format!("param group {g} has no 'lr'"))
                })?;
                // Optimizers without an `initial_lr` key refuse; the scheduler keeps it.
                let _ = opt.set_hyperparameter(g, "initial_lr", lr);
                out.push(lr);
            }
        }
    }
    Ok(out)
}

/// Whether the optimizer stores `initial_lr` in its groups.
pub(crate) fn stores_initial_lr(opt: &dyn Optimizer) -> bool {
    opt.num_groups() > 0 && opt.hyperparameter(0, "initial_lr").is_some()
}

/// Which hyperparameter carries momentum for cycling (PyTorch: `betas[0]` if
/// the optimizer has `betas`, else `momentum`), or PyTorch's error.
pub(crate) fn momentum_key(opt: &dyn Optimizer) -> Result<&'static str> {
    if opt.hyperparameter(0, "betas.0").is_some() {
        Ok("betas.0")
    } else if opt.hyperparameter(0, "momentum").is_some() {
        Ok("momentum")
    } else {
        Err(Error::InvalidArgument(
            "optimizer must support momentum or beta1 with `cycle_momentum` option enabled".into(),
        ))
    }
}

/// An f64 as it is stored in a state dict: its shortest round-trip decimal
/// form as a string (exact through JSON text, and able to hold inf and NaN).
pub(crate) fn fnum(x: f64) -> Value {
    Value::String(format!("{x:?}"))
}

pub(crate) fn flist(xs: &[f64]) -> Value {
    Value::Array(xs.iter().map(|x| fnum(*x)).collect())
}

pub(crate) fn bad_state(name: &str, key: &str) -> Error {
    Error::State(format!(
        "{name} scheduler state: '{key}' is missing or malformed"
    ))
}

/// Reads state dicts written by [`fnum`]/[`flist`] (or plain JSON numbers).
pub(crate) struct StateReader<'a> {
    pub(crate) name: &'a str,
    pub(crate) map: &'a Map<String, Value>,
}

impl<'a> StateReader<'a> {
    /// Checks that `state` is an object saved by scheduler `name`.
    pub(crate) fn new(name: &'a str, state: &'a Value) -> Result<Self> {
        let map = state
            .as_object()
            .ok_or_else(|| Error::State(format!("{name} scheduler state must be a JSON object")))?;
        match map.get("scheduler").and_then(Value::as_str) {
            Some(n) if n == name => Ok(Self { name, map }),
            Some(other) => Err(Error::State(format!(
                "it was saved by scheduler '{other}', not '{name}'"
            ))),
            None => Err(bad_state(name, "scheduler")),
        }
    }

    pub(crate) fn value(&self, key: &str) -> Result<&'a Value> {
        self.map.get(key).ok_or_else(|| bad_state(self.name, key))
    }

    fn parse_f64(v: &Value) -> Option<f64> {
        match v {
            Value::String(s) => s.parse::<f64>().ok(),
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub(crate) fn f64(&self, key: &str) -> Result<f64> {
        Self::parse_f64(self.value(key)?).ok_or_else(|| bad_state(self.name, key))
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::parse_f64(v)
                .map(Some)
                .ok_or_else(|| bad_state(self.name, key)),
        }
    }

    pub(crate) fn f64_list(&self, key: &str) -> Result<Vec<f64>> {
        self.value(key)?
            .as_array()
            .and_then(|a| a.iter().map(Self::parse_f64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad_state(self.name, key))
    }

    pub(crate) fn i64(&self, key: &str) -> Result<i64> {
        self.value(key)?
            .as_i64()
            .ok_or_else(|| bad_state(self.name, key))
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        self.value(key)?
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad_state(self.name, key))
    }

    pub(crate) fn i64_list(&self, key: &str) -> Result<Vec<i64>> {
        self.value(key)?
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad_state(self.name, key))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<bool> {
        self.value(key)?
            .as_bool()
            .ok_or_else(|| bad_state(self.name, key))
    }

    pub(crate) fn str(&self, key: &str) -> Result<&'a str> {
        self.value(key)?
            .as_str()
            .ok_or_else(|| bad_state(self.name, key))
    }
}

// ---------------------------------------------------------------------------
// The common machinery of PyTorch's `LRScheduler` base class.

/// The attributes of PyTorch's `LRScheduler` a [`Schedule`] reads:
/// `self.base_lrs`, `self.last_epoch`, `self._step_count` and `self._is_initial`.
pub(crate) struct Attributes<'a> {
    pub(crate) base_lrs: &'a [f64],
    pub(crate) last_epoch: i64,
    pub(crate) step_count: i64,
    pub(crate) is_initial: bool,
}

/// The part that differs between schedulers (an optimizer's update rule is
/// [`crate::Rule`]; this is a scheduler's): `get_lr`, `_get_closed_form_lr`
/// and the extra state.
pub(crate) trait Schedule: Send {
    /// PyTorch's `get_lr()` (it may write other hyperparameters, e.g. momentum).
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>>;

    /// PyTorch's `_get_closed_form_lr()`, where the scheduler has one.
    fn closed_form(&self, _attrs: &Attributes<'_>) -> Option<Result<Vec<f64>>> {
        None
    }

    /// The schedule's own state entries (hyperparameters and internal state).
    fn save(&self, map: &mut Map<String, Value>);

    /// Restores what [`Schedule::save`] wrote.
    fn load(&mut self, state: &StateReader<'_>) -> Result<()>;
}

/// PyTorch's `LRScheduler` bookkeeping around a [`Schedule`].
pub(crate) struct Core<R> {
    pub(crate) name: &'static str,
    pub(crate) rule: R,
    pub(crate) base_lrs: Vec<f64>,
    pub(crate) initial_lrs: Vec<f64>,
    pub(crate) last_epoch: i64,
    pub(crate) step_count: i64,
    pub(crate) last_lr: Vec<f64>,
    /// Whether `base_lrs` come from `initial_lr` (so [`Composable::rebase`] applies).
    pub(crate) rebasable: bool,
    /// Whether building wrote `initial_lr` over the groups' own (OneCycleLR).
    pub(crate) overwrites_initial_lr: bool,
}

impl<R: Schedule> Core<R> {
    /// `LRScheduler.__init__(optimizer, last_epoch=-1)`: records `initial_lr`
    /// (`setdefault`) and performs the initial step.
    pub(crate) fn build(name: &'static str, rule: R, opt: &mut dyn Optimizer) -> Result<Self> {
        let initial_lrs = setdefault_initial_lrs(opt)?;
        let mut core = Self {
            name,
            rule,
            base_lrs: initial_lrs.clone(),
            initial_lrs,
            last_epoch: -1,
            step_count: 0,
            last_lr: Vec::new(),
            rebasable: true,
            overwrites_initial_lr: false,
        };
        core.initial_step(opt)?;
        Ok(core)
    }

    fn advance(&mut self, opt: &mut dyn Optimizer, is_initial: bool) -> Result<()> {
        let (epoch, count) = (self.last_epoch + 1, self.step_count + 1);
        let attrs = Attributes {
            base_lrs: &self.base_lrs,
            last_epoch: epoch,
            step_count: count,
            is_initial,
        };
        let lrs = self.rule.get_lr(&attrs, opt)?;
        self.last_epoch = epoch;
        self.step_count = count;
        self.last_lr = apply_lrs(opt, &lrs)?;
        Ok(())
    }

    /// `LRScheduler.step()`.
    pub(crate) fn step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.advance(opt, false)
    }

    /// `LRScheduler._initial_step()`.
    pub(crate) fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        self.step_count = 0;
        self.advance(opt, true)
    }

    /// `LRScheduler._update_lr(epoch)`.
    pub(crate) fn update_lr_at(&mut self, opt: &mut dyn Optimizer, epoch: i64) -> Result<()> {
        let attrs = Attributes {
            base_lrs: &self.base_lrs,
            last_epoch: epoch,
            step_count: self.step_count,
            is_initial: false,
        };
        let lrs = match self.rule.closed_form(&attrs) {
            Some(lrs) => lrs?,
            None => self.rule.get_lr(&attrs, opt)?,
        };
        self.last_epoch = epoch;
        self.last_lr = apply_lrs(opt, &lrs)?;
        Ok(())
    }

    pub(crate) fn state_dict(&self) -> Value {
        let mut map = Map::new();
        map.insert("scheduler".into(), Value::String(self.name.into()));
        map.insert("last_epoch".into(), Value::from(self.last_epoch));
        map.insert("step_count".into(), Value::from(self.step_count));
        map.insert("base_lrs".into(), flist(&self.base_lrs));
        map.insert("initial_lrs".into(), flist(&self.initial_lrs));
        map.insert("last_lr".into(), flist(&self.last_lr));
        self.rule.save(&mut map);
        Value::Object(map)
    }

    pub(crate) fn load_state_dict(&mut self, state: &Value) -> Result<()> {
        let r = StateReader::new(self.name, state)?;
        let base_lrs = r.f64_list("base_lrs")?;
        let initial_lrs = r.f64_list("initial_lrs")?;
        let last_lr = r.f64_list("last_lr")?;
        if base_lrs.len() != self.base_lrs.len() || last_lr.len() != self.last_lr.len() {
            return Err(Error::State(format!(
                "{} scheduler state has {} param groups, this scheduler has {}",
                self.name,
                base_lrs.len(),
                self.base_lrs.len()
            )));
        }
        let (last_epoch, step_count) = (r.i64("last_epoch")?, r.i64("step_count")?);
        self.rule.load(&r)?;
        self.base_lrs = base_lrs;
        self.initial_lrs = initial_lrs;
        self.last_lr = last_lr;
        self.last_epoch = last_epoch;
        self.step_count = step_count;
        Ok(())
    }
}

/// The bookkeeping every [`Core`]-based scheduler shares.
impl<R: Schedule> Composable for Core<R> {
    fn undo_initial_step(&mut self) {
        self.last_epoch -= 1;
    }

    fn initial_step(&mut self, opt: &mut dyn Optimizer) -> Result<()> {
        Core::initial_step(self, opt)
    }

    fn initial_lrs(&mut self) -> Option<InitialLrs> {
        Some(InitialLrs {
            lrs: self.initial_lrs.clone(),
            overwritten: self.overwrites_initial_lr,
        })
    }

    fn rebase(&mut self, initial_lrs: &[f64]) {
        if self.rebasable && initial_lrs.len() == self.base_lrs.len() {
            self.base_lrs = initial_lrs.to_vec();
            self.initial_lrs = initial_lrs.to_vec();
        }
    }

    /// For schedulers whose base lrs are the groups' `initial_lr` (the
    /// others refuse).
    fn restart_at(
        &mut self,
        opt: &mut dyn Optimizer,
        last_epoch: i64,
        initial_lrs: &[f64],
    ) -> Result<()> {
        if !self.rebasable {
            return Err(Error::InvalidArgument(format!(
                "{} cannot be built with last_epoch >= 0 in kiln (its base lrs are its own options); restore its state_dict instead",
                self.name
            )));
        }
        if initial_lrs.len() != self.base_lrs.len() {
            return Err(Error::InvalidArgument(format!(
                "{} initial lrs for {} param groups",
                initial_lrs.len(),
                self.base_lrs.len()
            )));
        }
        self.base_lrs = initial_lrs.to_vec();
        self.initial_lrs = initial_lrs.to_vec();
        self.last_epoch = last_epoch;
        Core::initial_step(self, opt)
    }
}

/// Implements [`LrScheduler`] for a struct with a `core: Core<_>` field.
macro_rules! core_scheduler {
    ($ty:ty) => {
        impl $crate::scheduler::LrScheduler for $ty {
            fn name(&self) -> &str {
                self.core.name
            }
            fn step(&mut self, opt: &mut dyn $crate::Optimizer) -> $crate::Result<()> {
                self.core.step(opt)
            }
            fn last_lr(&self) -> &[f64] {
                &self.core.last_lr
            }
            fn last_epoch(&self) -> i64 {
                self.core.last_epoch
            }
            fn state_dict(&self) -> serde_json::Value {
                self.core.state_dict()
            }
            fn load_state_dict(&mut self, state: &serde_json::Value) -> $crate::Result<()> {
                self.core.load_state_dict(state)
            }
            fn update_lr_at(
                &mut self,
                opt: &mut dyn $crate::Optimizer,
                epoch: i64,
            ) -> $crate::Result<()> {
                self.core.update_lr_at(opt, epoch)
            }
            fn composable(&mut self) -> Option<&mut dyn $crate::scheduler::Composable> {
                Some(&mut self.core)
            }
        }
    };
}
pub(crate) use core_scheduler;
