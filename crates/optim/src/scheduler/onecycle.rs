//! OneCycleLR (the 1cycle policy).
use super::{div, flist, fnum, momentum_key, Attributes, Core, GroupValues, Schedule, StateReader};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{Choice, OptionInfo, OptionVisitor, Options};
use serde_json::{Map, Value};
use std::f64::consts::PI;

/// How OneCycleLR (and SWALR) interpolate within a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnealStrategy {
    /// Cosine: `end + (start - end) / 2 * (cos(pi * pct) + 1)`.
    Cos,
    /// Linear: `(end - start) * pct + start`.
    Linear,
}

kiln_tensor::choices!(AnnealStrategy {
    Cos = "cos",
    Linear = "linear",
});

impl AnnealStrategy {
    /// PyTorch's name (`cos`, `linear`).
    pub fn as_str(self) -> &'static str {
        self.word()
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Self::from_word(s)
    }

    fn anneal(self, start: f64, end: f64, pct: f64) -> f64 {
        match self {
            AnnealStrategy::Cos => {
                let cos_out = (PI * pct).cos() + 1.0;
                end + (start - end) / 2.0 * cos_out
            }
            AnnealStrategy::Linear => (end - start) * pct + start,
        }
    }
}

/// Options of [`OneCycleLr`], PyTorch's defaults in [`OneCycleLrConfig::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct OneCycleLrConfig {
    /// Peak lr of each group. No default.
    pub max_lr: GroupValues,
    /// Total steps of the cycle; else `epochs * steps_per_epoch`.
    pub total_steps: Option<i64>,
    /// Epochs (with `steps_per_epoch`) when `total_steps` is not given.
    pub epochs: Option<i64>,
    /// Steps per epoch (with `epochs`) when `total_steps` is not given.
    pub steps_per_epoch: Option<i64>,
    /// Fraction of the cycle spent increasing the lr (default 0.3).
    pub pct_start: f64,
    /// Annealing strategy (default cos).
    pub anneal_strategy: AnnealStrategy,
    /// Cycle momentum (or `betas.0`) inversely to the lr (default true).
    pub cycle_momentum: bool,
    /// Momentum at the lr peak (default 0.85).
    pub base_momentum: GroupValues,
    /// Momentum at the start and end (default 0.95).
    pub max_momentum: GroupValues,
    /// `initial_lr = max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor` (default 1e4).
    pub final_div_factor: f64,
    /// Three phases (up, down to `initial_lr`, down to `min_lr`) instead of two
    /// (default false).
    pub three_phase: bool,
}

impl OneCycleLrConfig {
    /// `max_lr` and `total_steps` with PyTorch's defaults for everything else.
    pub fn new(max_lr: impl Into<GroupValues>, total_steps: i64) -> Self {
        Self {
            max_lr: max_lr.into(),
            total_steps: Some(total_steps),
            epochs: None,
            steps_per_epoch: None,
            pct_start: 0.3,
            anneal_strategy: AnnealStrategy::Cos,
            cycle_momentum: true,
            base_momentum: GroupValues::All(0.85),
            max_momentum: GroupValues::All(0.95),
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }

    /// Builds the scheduler with PyTorch's checks and messages (total_steps,
    /// epochs, steps_per_epoch, pct_start, cycle_momentum support), sets each
    /// group's `initial_lr = max_lr / div_factor` (and momentum to
    /// `max_momentum`) and performs the initial step.
    pub fn build(self, opt: &mut dyn Optimizer) -> Result<OneCycleLr> {
        let bad = |m: String| Err(Error::InvalidHyperparameter(m));
        let total_steps = match (self.total_steps, self.epochs, self.steps_per_epoch) {
            (Some(t), _, _) if t <= 0 => {
                return bad(format!(
                    "Expected positive integer total_steps, but got {t}"
                ))
            }
            (Some(t), _, _) => t,
            (None, Some(e), Some(_)) if e <= 0 => {
                return bad(format!("Expected positive integer epochs, but got {e}"))
            }
            (None, Some(_), Some(s)) if s <= 0 => {
                return bad(format!(
                    "Expected positive integer steps_per_epoch, but got {s}"
                ))
            }
            (None, Some(e), Some(s)) => e.checked_mul(s).ok_or_else(|| {
                Error::InvalidHyperparameter("epochs * steps_per_epoch overflows".into())
            })?,
            _ => {
                return bad(
                    "You must define either total_steps OR (epochs AND steps_per_epoch)".into(),
                )
            }
        };
        let (pct, tf) = (self.pct_start, total_steps as f64);
        let phase = |end_step, start, end| Phase {
            end_step,
            start,
            end,
        };
        let phases = if self.three_phase {
            vec![
                phase(pct * tf - 1.0, Point::Initial, Point::Max),
                phase(2.0 * pct * tf - 2.0, Point::Max, Point::Initial),
                phase(tf - 1.0, Point::Initial, Point::Min),
            ]
        } else {
            vec![
                phase(pct * tf - 1.0, Point::Initial, Point::Max),
                phase(tf - 1.0, Point::Max, Point::Min),
            ]
        };
        // `pct_start < 0 or pct_start > 1` in PyTorch: NaN passes.
        if !pct.is_nan() && !(0.0..=1.0).contains(&pct) {
            return bad(format!(
                "Expected float between 0 and 1 pct_start, but got {pct}"
            ));
        }
        let groups = opt.num_groups();
        let max_lrs = self.max_lr.per_group("max_lr", groups)?;
        let initial_lrs = max_lrs
            .iter()
            .map(|m| div(*m, self.div_factor, "OneCycleLR (div_factor is 0)"))
            .collect::<Result<Vec<_>>>()?;
        let min_lrs = initial_lrs
            .iter()
            .map(|i| {
                div(
                    *i,
                    self.final_div_factor,
                    "OneCycleLR (final_div_factor is 0)",
                )
            })
            .collect::<Result<Vec<_>>>()?;
        for (g, v) in initial_lrs.iter().enumerate() {
            // `group["initial_lr"] = ...` where the optimizer stores it.
            let _ = opt.set_hyperparameter(g, "initial_lr", *v);
        }
        let momentum = if self.cycle_momentum {
            let key = momentum_key(opt)?;
            let max = self.max_momentum.per_group("max_momentum", groups)?;
            let base = self.base_momentum.per_group("base_momentum", groups)?;
            for (g, m) in max.iter().enumerate() {
                opt.set_hyperparameter(g, key, *m)?;
            }
            Some((key, base, max))
        } else {
            None
        };
        let (key, base_m, max_m) = match momentum {
            Some((k, b, m)) => (Some(k), b, m),
            None => (None, Vec::new(), Vec::new()),
        };
        let rule = OneCycleRule {
            total_steps,
            phases,
            anneal: self.anneal_strategy,
            initial_lrs: initial_lrs.clone(),
            max_lrs,
            min_lrs,
            momentum_key: key,
            base_momentums: base_m,
            max_momentums: max_m,
        };
        let mut core = Core::build("onecycle", rule, opt)?;
        core.rebasable = false;
        core.overwrites_initial_lr = true;
        if core.initial_lrs != initial_lrs {
            // The optimizer does not store `initial_lr`: PyTorch's base_lrs are
            // the group's `initial_lr` OneCycleLR just wrote.
            core.initial_lrs = initial_lrs.clone();
            core.base_lrs = initial_lrs;
        }
        Ok(OneCycleLr { core })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Initial,
    Max,
    Min,
}

impl Point {
    fn as_str(self) -> &'static str {
        match self {
            Point::Initial => "initial_lr",
            Point::Max => "max_lr",
            Point::Min => "min_lr",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "initial_lr" => Some(Point::Initial),
            "max_lr" => Some(Point::Max),
            "min_lr" => Some(Point::Min),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    end_step: f64,
    start: Point,
    end: Point,
}

struct OneCycleRule {
    total_steps: i64,
    phases: Vec<Phase>,
    anneal: AnnealStrategy,
    initial_lrs: Vec<f64>,
    max_lrs: Vec<f64>,
    min_lrs: Vec<f64>,
    momentum_key: Option<&'static str>,
    base_momentums: Vec<f64>,
    max_momentums: Vec<f64>,
}

impl OneCycleRule {
    fn lr_at(&self, p: Point, g: usize) -> f64 {
        let v = match p {
            Point::Initial => &self.initial_lrs,
            Point::Max => &self.max_lrs,
            Point::Min => &self.min_lrs,
        };
        v.get(g).copied().unwrap_or(f64::NAN)
    }

    /// The momentum at a phase end: `max_momentum` where the lr is at
    /// initial/min, `base_momentum` where it peaks (PyTorch's phase table).
    fn momentum_at(&self, p: Point, g: usize) -> f64 {
        let v = if p == Point::Max {
            &self.base_momentums
        } else {
            &self.max_momentums
        };
        v.get(g).copied().unwrap_or(f64::NAN)
    }
}

impl Schedule for OneCycleRule {
    fn get_lr(&mut self, attrs: &Attributes<'_>, opt: &mut dyn Optimizer) -> Result<Vec<f64>> {
        let step_num = attrs.last_epoch;
        if step_num > self.total_steps {
            return Err(Error::InvalidArgument(format!(
                "Tried to step {step_num} times. The specified number of total steps is {}",
                self.total_steps
            )));
        }
        let mut lrs = Vec::with_capacity(opt.num_groups());
        let mut momenta = Vec::with_capacity(opt.num_groups());
        let last = self.phases.len().saturating_sub(1);
        for g in 0..opt.num_groups() {
            let mut start_step = 0.0;
            let mut found = None;
            for (i, phase) in self.phases.iter().enumerate() {
                let end_step = phase.end_step;
                if step_num as f64 <= end_step || i == last {
                    let pct = div(
                        step_num as f64 - start_step,
                        end_step - start_step,
                        "OneCycleLR",
                    )?;
                    let lr = self.anneal.anneal(
                        self.lr_at(phase.start, g),
                        self.lr_at(phase.end, g),
                        pct,
                    );
                    let m = self.anneal.anneal(
                        self.momentum_at(phase.start, g),
                        self.momentum_at(phase.end, g),
                        pct,
                    );
                    found = Some((lr, m));
                    break;
                }
                start_step = phase.end_step;
            }
            let (lr, m) =
                found.ok_or_else(|| Error::InvalidArgument("OneCycleLR has no phases".into()))?;
            lrs.push(lr);
            momenta.push(m);
        }
        if let Some(key) = self.momentum_key {
            for (g, m) in momenta.iter().enumerate() {
                opt.set_hyperparameter(g, key, *m)?;
            }
        }
        Ok(lrs)
    }
    fn save(&self, map: &mut Map<String, Value>) {
        map.insert("total_steps".into(), Value::from(self.total_steps));
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|p| serde_json::json!({"end_step": fnum(p.end_step), "start_lr": p.start.as_str(), "end_lr": p.end.as_str()}))
            .collect();
        map.insert("schedule_phases".into(), Value::Array(phases));
        map.insert("anneal_strategy".into(), Value::from(self.anneal.as_str()));
        map.insert("group_initial_lrs".into(), flist(&self.initial_lrs));
        map.insert("max_lrs".into(), flist(&self.max_lrs));
        map.insert("min_lrs".into(), flist(&self.min_lrs));
        map.insert(
            "cycle_momentum".into(),
            Value::from(self.momentum_key.is_some()),
        );
        map.insert(
            "use_beta1".into(),
            Value::from(self.momentum_key == Some("betas.0")),
        );
        map.insert("base_momentums".into(), flist(&self.base_momentums));
        map.insert("max_momentums".into(), flist(&self.max_momentums));
    }
    fn load(&mut self, r: &StateReader<'_>) -> Result<()> {
        let bad = || super::bad_state("onecycle", "schedule_phases");
        let phases = r
            .value("schedule_phases")?
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|p| {
                let end_step = match p.get("end_step") {
                    Some(Value::String(s)) => s.parse::<f64>().ok(),
                    Some(Value::Number(n)) => n.as_f64(),
                    _ => None,
                };
                let point = |k: &str| p.get(k).and_then(Value::as_str).and_then(Point::parse);
                Some(Phase {
                    end_step: end_step?,
                    start: point("start_lr")?,
                    end: point("end_lr")?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        let anneal = AnnealStrategy::parse(r.str("anneal_strategy")?)
            .ok_or_else(|| super::bad_state("onecycle", "anneal_strategy"))?;
        let key = match (r.bool("cycle_momentum")?, r.bool("use_beta1")?) {
            (false, _) => None,
            (true, true) => Some("betas.0"),
            (true, false) => Some("momentum"),
        };
        self.total_steps = r.i64("total_steps")?;
        self.phases = phases;
        self.anneal = anneal;
        self.initial_lrs = r.f64_list("group_initial_lrs")?;
        self.max_lrs = r.f64_list("max_lrs")?;
        self.min_lrs = r.f64_list("min_lrs")?;
        self.momentum_key = key;
        self.base_momentums = r.f64_list("base_momentums")?;
        self.max_momentums = r.f64_list("max_momentums")?;
        Ok(())
    }
}

/// `torch.optim.lr_scheduler.OneCycleLR` (1cycle): from
/// `initial_lr = max_lr / div_factor` up to `max_lr` over the first
/// `pct_start` of `total_steps`, then down to `min_lr = initial_lr /
/// final_div_factor` (three_phase: down to `initial_lr`, then to `min_lr`).
/// Within a phase `pct = (t - phase_start) / (phase_end - phase_start)` and
/// the lr is `anneal(start, end, pct)`; momentum (or `betas.0`) moves the
/// opposite way between `max_momentum` and `base_momentum`.
///
/// Stepped **per batch**: exactly `total_steps` steps may follow the initial
/// one; stepping further errors with PyTorch's message. Not chainable.
pub struct OneCycleLr {
    core: Core<OneCycleRule>,
}
super::core_scheduler!(OneCycleLr);

// ---------------------------------------------------------------------------
// Spec options (see `kiln_tensor::spec::Options`), with PyTorch's names.

impl Options for OneCycleLrConfig {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("max_lr", "peak lr (one value, or one per group a;b)").required(),
            &mut self.max_lr,
        )?;
        v.option(
            OptionInfo::new(
                "total_steps",
                "steps in the cycle; none: epochs * steps_per_epoch, else the run's scheduler steps",
            ),
            &mut self.total_steps,
        )?;
        v.option(
            OptionInfo::new("epochs", "with steps_per_epoch, instead of total_steps"),
            &mut self.epochs,
        )?;
        v.option(
            OptionInfo::new("steps_per_epoch", "with epochs, instead of total_steps"),
            &mut self.steps_per_epoch,
        )?;
        v.option(
            OptionInfo::new("pct_start", "fraction of the cycle spent increasing the lr"),
            &mut self.pct_start,
        )?;
        v.option(
            OptionInfo::new("anneal_strategy", "cos | linear"),
            &mut self.anneal_strategy,
        )?;
        v.option(
            OptionInfo::new("cycle_momentum", "cycle momentum (or betas.0) inversely"),
            &mut self.cycle_momentum,
        )?;
        v.option(
            OptionInfo::new("base_momentum", "momentum at the lr peak"),
            &mut self.base_momentum,
        )?;
        v.option(
            OptionInfo::new("max_momentum", "momentum at the start and end"),
            &mut self.max_momentum,
        )?;
        v.option(
            OptionInfo::new("div_factor", "initial_lr = max_lr / div_factor"),
            &mut self.div_factor,
        )?;
        v.option(
            OptionInfo::new("final_div_factor", "min_lr = initial_lr / final_div_factor"),
            &mut self.final_div_factor,
        )?;
        v.option(
            OptionInfo::new("three_phase", "three phases instead of two"),
            &mut self.three_phase,
        )
    }
}
