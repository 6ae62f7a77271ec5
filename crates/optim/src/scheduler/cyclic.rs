//! CyclicLR (cyclical learning rates, with optional momentum cycling).
use super::{div, flist, fnum, momentum_key, Attributes, Core, GroupValues, Schedule, StateReader};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{Choice, OptionInfo, OptionVisitor, Options};
use serde_json::{Map, Value};

/// CyclicLR's built-in amplitude policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CyclicMode {
    /// Constant amplitude (`scale = 1`), evaluated per cycle.
    Triangular,
    /// Amplitude halved each cycle (`scale = 1 / 2^(cycle - 1)`).
    Triangular2,
    /// Amplitude `gamma^iterations`, evaluated per iteration.
    ExpRange,
}

kiln_tensor::choices!(CyclicMode {
    Triangular = "triangular",
    Triangular2 = "triangular2",
    ExpRange = "exp_range",
});

impl CyclicMode {
    /// PyTorch's name (`triangular`, `triangular2`, `exp_range`).
    pub fn as_str(self) -> &'static str {
        self.word()
    }
}

/// What a custom scale function is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleMode {
    /// The cycle number (1, 2, ...).
    Cycle,
    /// The step count (`last_epoch`).
    Iterations,
}

impl ScaleMode {
    fn as_str(self) -> &'static str {
        match self {
            ScaleMode::Cycle => "cycle",
            ScaleMode::Iterations => "iterations",
        }
    }
}

/// A custom amplitude scale `scale_fn(x)` with `0 <= scale_fn(x) <= 1`.
pub type ScaleFn = Box<dyn Fn(f64) -> f64 + Send>;

/// Options of [`CyclicLr`], PyTorch's defaults in [`CyclicLrConfig::new`].
pub struct CyclicLrConfig {
    /// Lower lr boundary of each group (also the lr at the start). No default.
    pub base_lr: GroupValues,
    /// Upper lr boundary of each group. No default.
    pub max_lr: GroupValues,
    /// Steps in the increasing half of a cycle (default 2000).
    pub step_size_up: usize,
    /// Steps in the decreasing half (default: `step_size_up`).
    pub step_size_down: Option<usize>,
    /// Built-in policy (default triangular); ignored when `scale_fn` is set.
    pub mode: CyclicMode,
    /// The constant of `exp_range` (default 1.0).
    pub gamma: f64,
    /// Custom scale function; replaces `mode` (default none).
    pub scale_fn: Option<ScaleFn>,
    /// What `scale_fn` is evaluated on (default cycle); built-in modes set their own.
    pub scale_mode: ScaleMode,
    /// Cycle momentum (or `betas.0`) inversely to the lr (default true).
    pub cycle_momentum: bool,
    /// Lower momentum boundary (default 0.8).
    pub base_momentum: GroupValues,
    /// Upper momentum boundary (default 0.9).
    pub max_momentum: GroupValues,
}

impl std::fmt::Debug for CyclicLrConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CyclicLrConfig")
            .field("base_lr", &self.base_lr)
            .field("max_lr", &self.max_lr)
            .field("step_size_up", &self.step_size_up)
            .field("step_size_down", &self.step_size_down)
            .field("mode", &self.mode)
            .field("gamma", &self.gamma)
            .field("scale_fn", &self.scale_fn.as_ref().map(|_| "<closure>"))
            .field("scale_mode", &self.scale_mode)
            .field("cycle_momentum", &self.cycle_momentum)
            .field("base_momentum", &self.base_momentum)
            .field("max_momentum", &self.max_momentum)
            .finish()
    }
}

impl CyclicLrConfig {
    /// `base_lr` and `max_lr` with PyTorch's defaults for everything else.
    pub fn new(base_lr: impl Into<GroupValues>, max_lr: impl Into<GroupValues>) -> Self {
        Self {
            base_lr: base_lr.into(),
            max_lr: max_lr.into(),
            step_size_up: 2000,
            step_size_down: None,
            mode: CyclicMode::Triangular,
            gamma: 1.0,
            scale_fn: None,
            scale_mode: ScaleMode::Cycle,
            cycle_momentum: true,
            base_momentum: GroupValues::All(0.8),
            max_momentum: GroupValues::All(0.9),
        }
    }

    /// Builds the scheduler as PyTorch's constructor: sets each group's lr to
    /// `base_lr` (and momentum to `max_momentum`), then the initial step.
    /// Errors with PyTorch's messages (list lengths; cycle_momentum with an
    /// optimizer that has neither `momentum` nor `betas`).
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<CyclicLr> {
        let groups = opt.num_groups();
        let base_lrs = self.base_lr.per_group("base_lr", groups)?;
        for (g, lr) in base_lrs.iter().enumerate() {
            opt.set_lr(g, *lr)?;
        }
        let max_lrs = self.max_lr.per_group("max_lr", groups)?;
        let up = self.step_size_up as f64;
        let down = self.step_size_down.map_or(up, |d| d as f64);
        let total_size = up + down;
        let step_ratio = div(
            up,
            total_size,
            "CyclicLR (step_size_up + step_size_down is 0)",
        )?;
        let scale_mode = match (&self.scale_fn, self.mode) {
            (Some(_), _) => self.scale_mode,
            (None, CyclicMode::ExpRange) => ScaleMode::Iterations,
            (None, _) => ScaleMode::Cycle,
        };
        let momentum = if self.cycle_momentum {
            let key = momentum_key(opt)?;
            let base = self.base_momentum.per_group("base_momentum", groups)?;
            let max = self.max_momentum.per_group("max_momentum", groups)?;
            for (g, m) in max.iter().enumerate() {
                opt.set_hyperparameter(g, key, *m)?;
            }
            Some(Momentum { key, base, max })
        } else {
            None
        };
        let rule = CyclicRule {
            max_lrs,
            total_size,
            step_ratio,
            mode: self.mode,
            gamma: self.gamma,
            scale_fn: self.scale_fn,
            scale_mode,
            momentum,
        };
        let mut core = Core::build("cyclic", rule, opt)?;
        // PyTorch assigns `self.base_lrs = base_lrs` after the initial step.
        core.base_lrs = base_lrs;
        core.rebasable = false;
        Ok(CyclicLr { core })
    }
}

struct Momentum {
    key: &'static str,
    base: Vec<f64>,
    max: Vec<f64>,
}

struct CyclicRule {
    max_lrs: Vec<f64>,
    total_size: f64,
    step_ratio: f64,
    mode: CyclicMode,
    gamma: f64,
    scale_fn: Option<ScaleFn>,
    scale_mode: ScaleMode,
    momentum: Option<Momentum>,
}

impl CyclicRule {
    fn scale(&self, x: f64) -> f64 {
        match (&self.scale_fn, self.mode) {
            (Some(f), _) => f(x),
            (None, CyclicMode::Triangular) => 1.0,
            (None, CyclicMode::Triangular2) => 1.0 / 2f64.powf(x - 1.0),
            (None, CyclicMode::ExpRange) => self.gamma.powf(x),
        }
    }
}

impl Schedule for CyclicRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let what = "CyclicLR";
        let r = div(attrs.last_epoch as f64, self.total_size, what)?;
        let cycle = (1.0 + r).floor();
        let x = 1.0 + r - cycle;
        let scale_factor = if x <= self.step_ratio {
            div(x, self.step_ratio, what)?
        } else {
            div(x - 1.0, self.step_ratio - 1.0, what)?
        };
        let arg = match self.scale_mode {
            ScaleMode::Cycle => cycle,
            ScaleMode::Iterations => attrs.last_epoch as f64,
        };
        let lrs: Vec<f64> = attrs
            .base_lrs
            .iter()
            .zip(&self.max_lrs)
            .map(|(base, max)| {
                let base_height = (max - base) * scale_factor;
                base + base_height * self.scale(arg)
            })
            .collect();
        if let Some(m) = &self.momentum {
            let momenta: Vec<f64> = m
                .base
                .iter()
                .zip(&m.max)
                .map(|(base, max)| {
                    let base_height = (max - base) * scale_factor;
                    max - base_height * self.scale(arg)
                })
                .collect();
            for (g, v) in momenta.iter().enumerate() {
                opt.set_hyperparameter(g, m.key, *v)?;
            }
        }
        Ok(lrs)
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("max_lrs".into(), flist(&self.max_lrs));
        map.insert("total_size".into(), fnum(self.total_size));
        map.insert("step_ratio".into(), fnum(self.step_ratio));
        map.insert("mode".into(), Value::from(self.mode.as_str()));
        map.insert("gamma".into(), fnum(self.gamma));
        map.insert("scale_mode".into(), Value::from(self.scale_mode.as_str()));
        map.insert(
            "cycle_momentum".into(),
            Value::from(self.momentum.is_some()),
        );
        if let Some(m) = &self.momentum {
            map.insert("use_beta1".into(), Value::from(m.key == "betas.0"));
            map.insert("base_momentums".into(), flist(&m.base));
            map.insert("max_momentums".into(), flist(&m.max));
        }
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        let mode = CyclicMode::from_word(r.str("mode")?)
            .ok_or_else(|| super::bad_state("cyclic", "mode"))?;
        let scale_mode = match r.str("scale_mode")? {
            "cycle" => ScaleMode::Cycle,
            "iterations" => ScaleMode::Iterations,
            _ => return Err(super::bad_state("cyclic", "scale_mode")),
        };
        let momentum = if r.bool("cycle_momentum")? {
            let key = if r.bool("use_beta1")? {
                "betas.0"
            } else {
                "momentum"
            };
            Some(Momentum {
                key,
                base: r.f64_list("base_momentums")?,
                max: r.f64_list("max_momentums")?,
            })
        } else {
            None
        };
        let max_lrs = r.f64_list("max_lrs")?;
        if max_lrs.len() != self.max_lrs.len() {
            return Err(Error::State(
                "cyclic scheduler state has a different number of param groups".into(),
            ));
        }
        self.max_lrs = max_lrs;
        self.total_size = r.f64("total_size")?;
        self.step_ratio = r.f64("step_ratio")?;
        self.mode = mode;
        self.gamma = r.f64("gamma")?;
        self.scale_mode = scale_mode;
        self.momentum = momentum;
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.CyclicLR`: the lr cycles between `base_lr` and
/// `max_lr`:
/// `cycle = floor(1 + t / total)`, `x = 1 + t / total - cycle`,
/// `s = x / ratio` if `x <= ratio` else `(x - 1) / (ratio - 1)`,
/// `lr = base_lr + (max_lr - base_lr) * s * scale_fn(cycle or t)`; with
/// `cycle_momentum` the optimizer's `momentum` (or `betas.0` when it has
/// betas) follows `max_m - (max_m - base_m) * s * scale_fn(...)`.
///
/// Stepped **per batch** (`last_epoch` counts batches). A custom `scale_fn`
/// is not saved in the state (as in PyTorch); the loading scheduler keeps its own.
pub struct CyclicLr {
    core: Core<CyclicRule>,
}
super::core_scheduler!(CyclicLr);

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with PyTorch's names.

/// The options specs can set; `scale_fn` and `scale_mode` need code.
impl Options for CyclicLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "base_lr",
                "lower lr bound (one value, or one per group a;b)",
            )
            .required(),
            &mut self.base_lr,
        )?;
        v.option(
            OptionInfo::new("max_lr", "upper lr bound (one value, or one per group a;b)")
                .required(),
            &mut self.max_lr,
        )?;
        v.option(
            OptionInfo::new("step_size_up", "steps in the increasing half of a cycle"),
            &mut self.step_size_up,
        )?;
        v.option(
            OptionInfo::new(
                "step_size_down",
                "steps in the decreasing half; none: step_size_up",
            ),
            &mut self.step_size_down,
        )?;
        v.option(
            OptionInfo::new("mode", "triangular | triangular2 | exp_range"),
            &mut self.mode,
        )?;
        v.option(
            OptionInfo::new("gamma", "exp_range constant"),
            &mut self.gamma,
        )?;
        v.option(
            OptionInfo::new("cycle_momentum", "cycle momentum (or betas.0) inversely"),
            &mut self.cycle_momentum,
        )?;
        v.option(
            OptionInfo::new("base_momentum", "lower momentum bound"),
            &mut self.base_momentum,
        )?;
        v.option(
            OptionInfo::new("max_momentum", "upper momentum bound"),
            &mut self.max_momentum,
        )
    }
}
