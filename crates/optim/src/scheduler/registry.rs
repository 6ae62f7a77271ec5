//! Spec strings for schedulers: `onecycle:max_lr=0.1`, `step:step_size=30,gamma=0.1`.
use super::{
    AnnealStrategy, ConstantLrConfig, CosineAnnealingLrConfig, CosineAnnealingWarmRestartsConfig,
    CyclicLrConfig, CyclicMode, ExponentialLrConfig, GroupValues, LinearLrConfig, LrScheduler,
    MultiStepLrConfig, OneCycleLrConfig, PlateauMode, PolynomialLrConfig, ReduceLrOnPlateauConfig,
    StepLrConfig, SwalrConfig, ThresholdMode,
};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::Spec;

/// The second phase of a builder: builds the scheduler on the optimizer.
pub type SchedulerFactory = Box<dyn FnOnce(&mut dyn Optimizer) -> Result<Box<dyn LrScheduler>>>;

/// Reads a scheduler's options from a [`Spec`] (given the total number of
/// scheduler steps when known) and returns the factory that builds it. The
/// registry checks for unknown options between the two phases, so a bad spec
/// never touches the optimizer.
pub type SchedulerBuilder =
    Box<dyn Fn(&mut Spec, Option<usize>) -> Result<SchedulerFactory> + Send + Sync>;

/// One option of a registered scheduler, for [`SchedulerRegistry::describe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDoc {
    /// The option's key in the spec string.
    pub name: String,
    /// Its default, or `required`.
    pub default: String,
    /// What it does.
    pub help: String,
}

impl OptionDoc {
    /// An option with its default and help text.
    pub fn new(name: &str, default: &str, help: &str) -> Self {
        Self {
            name: name.into(),
            default: default.into(),
            help: help.into(),
        }
    }
}

struct Entry {
    name: String,
    summary: String,
    options: Vec<OptionDoc>,
    builder: SchedulerBuilder,
}

/// Schedulers by name, for spec strings; a downstream crate can
/// [`SchedulerRegistry::register`] its own.
pub struct SchedulerRegistry {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for SchedulerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerRegistry")
            .field("names", &self.names())
            .finish()
    }
}

/// Schedulers that need code (closures or other schedulers), listed by describe().
const CODE_ONLY: &[(&str, &str)] = &[
    ("lambda", "LambdaLR (scheduler::LambdaLr): needs a closure"),
    (
        "multiplicative",
        "MultiplicativeLR (scheduler::MultiplicativeLr): needs a closure",
    ),
    (
        "sequential",
        "SequentialLR (scheduler::SequentialLr): needs the schedulers it sequences",
    ),
    (
        "chained",
        "ChainedScheduler (scheduler::ChainedScheduler): needs the schedulers it chains",
    ),
];

impl SchedulerRegistry {
    /// An empty registry (see [`schedulers()`] for the built-in one).
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Adds a scheduler; errors if the name is taken.
    pub fn register(
        &mut self,
        name: &str,
        summary: &str,
        options: Vec<OptionDoc>,
        builder: SchedulerBuilder,
    ) -> Result<()> {
        if self.entries.iter().any(|e| e.name == name) {
            return Err(Error::InvalidArgument(format!(
                "scheduler '{name}' is already registered"
            )));
        }
        self.entries.push(Entry {
            name: name.into(),
            summary: summary.into(),
            options,
            builder,
        });
        Ok(())
    }

    /// Builds a scheduler from a spec string on `opt`. `total_steps_hint` is
    /// the number of scheduler steps the run will make (for `onecycle`'s
    /// `total_steps` and `cosine`'s `t_max` when omitted).
    pub fn build(
        &self,
        spec: &str,
        opt: &mut dyn Optimizer,
        total_steps_hint: Option<usize>,
    ) -> Result<Box<dyn LrScheduler>> {
        let mut spec: Spec = spec.parse()?;
        let Some(entry) = self.entries.iter().find(|e| e.name == spec.name) else {
            let hint = if CODE_ONLY.iter().any(|(n, _)| *n == spec.name) {
                " (it is built from code, not from a spec string)"
            } else {
                ""
            };
            return Err(Error::InvalidArgument(format!(
                "unknown scheduler '{}'{hint}; known: {}",
                spec.name,
                self.names().join(", ")
            )));
        };
        let factory = (entry.builder)(&mut spec, total_steps_hint)?;
        let accepted: Vec<&str> = entry.options.iter().map(|o| o.name.as_str()).collect();
        spec.finish(&accepted)?;
        factory(opt)
    }

    /// The names that spec strings can use.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Human-readable list of the schedulers, their options and defaults
    /// (what `kiln schedulers` prints), and the ones built from code only.
    pub fn describe(&self) -> String {
        let mut out =
            String::from("Learning-rate schedulers (spec: name:key=value,...; lists as a;b;c):\n");
        for e in &self.entries {
            out.push_str(&format!("\n  {}  {}\n", e.name, e.summary));
            for o in &e.options {
                out.push_str(&format!(
                    "      {:<18} {:<14} {}\n",
                    o.name, o.default, o.help
                ));
            }
        }
        out.push_str("\nBuilt from code only (no spec string):\n");
        for (name, what) in CODE_ONLY {
            out.push_str(&format!("  {name:<16} {what}\n"));
        }
        out
    }
}

// ---------------------------------------------------------------------------

fn required<T>(value: Option<T>, spec: &Spec, key: &str) -> Result<T> {
    value.ok_or_else(|| Error::InvalidArgument(format!("{}: option {key} is required", spec.name)))
}

fn count(spec: &mut Spec, key: &str) -> Result<Option<usize>> {
    match spec.i64(key)? {
        None => Ok(None),
        Some(v) => usize::try_from(v).map(Some).map_err(|_| {
            Error::InvalidArgument(format!(
                "{}: option {key}={v} must be a non-negative integer",
                spec.name
            ))
        }),
    }
}

fn group_values(spec: &mut Spec, key: &str) -> Result<Option<GroupValues>> {
    Ok(GroupValues::from_spec(spec.f64_list(key)?))
}

fn boxed<S: LrScheduler + 'static>(
    f: impl FnOnce(&mut dyn Optimizer) -> Result<S> + 'static,
) -> Result<SchedulerFactory> {
    Ok(Box::new(move |opt: &mut dyn Optimizer| {
        Ok(Box::new(f(opt)?) as Box<dyn LrScheduler>)
    }))
}

fn anneal(spec: &mut Spec, key: &str, message: &str) -> Result<Option<AnnealStrategy>> {
    match spec.raw(key) {
        None => Ok(None),
        Some(v) => AnnealStrategy::parse(&v).map(Some).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: {message}, instead got {v}", spec.name))
        }),
    }
}

/// Overrides a config's default with an option's value when the spec gives one.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Reads an option that names one of `choices`; any other value is an
/// `InvalidArgument` with the message `unknown(value)`.
fn choice<T: Copy>(
    spec: &mut Spec,
    key: &str,
    choices: &[(&str, T)],
    unknown: impl FnOnce(&str) -> String,
) -> Result<Option<T>> {
    let Some(value) = spec.raw(key) else {
        return Ok(None);
    };
    match choices.iter().find(|(name, _)| *name == value) {
        Some((_, v)) => Ok(Some(*v)),
        None => Err(Error::InvalidArgument(unknown(&value))),
    }
}

fn opt(name: &str, default: &str, help: &str) -> OptionDoc {
    OptionDoc::new(name, default, help)
}

/// The registry of kiln's schedulers, buildable from spec strings:
/// `step`, `multistep`, `constant`, `linear`, `exponential`, `polynomial`,
/// `cosine`, `cosine-restarts`, `cyclic`, `onecycle`, `plateau`, `swalr`.
/// LambdaLR, MultiplicativeLR, SequentialLR and ChainedScheduler need code.
pub fn schedulers() -> SchedulerRegistry {
    let mut r = SchedulerRegistry::empty();
    let mut add =
        |name: &str, summary: &str, options: Vec<OptionDoc>, builder: SchedulerBuilder| {
            // Names are distinct literals, so registering cannot fail here.
            let _ = r.register(name, summary, options, builder);
        };
    add(
        "step",
        "StepLR: lr *= gamma every step_size steps (usually per epoch)",
        vec![
            opt("step_size", "required", "period of decay"),
            opt("gamma", "0.1", "decay factor"),
        ],
        Box::new(|s, _| {
            let step_size = required(count(s, "step_size")?, s, "step_size")?;
            let cfg = StepLrConfig {
                step_size,
                gamma: s.f64("gamma")?.unwrap_or(0.1),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "multistep",
        "MultiStepLR: lr *= gamma at each milestone (usually per epoch)",
        vec![
            opt(
                "milestones",
                "required",
                "steps at which to decay, e.g. 30;80",
            ),
            opt("gamma", "0.1", "decay factor"),
        ],
        Box::new(|s, _| {
            let list = required(s.f64_list("milestones")?, s, "milestones")?;
            let milestones = list
                .iter()
                .map(|m| {
                    if m.fract() == 0.0 && *m >= 0.0 && *m < 9.0e15 {
                        Ok(*m as usize)
                    } else {
                        Err(Error::InvalidArgument(format!(
                            "multistep: milestone {m} is not a non-negative integer"
                        )))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let cfg = MultiStepLrConfig {
                milestones,
                gamma: s.f64("gamma")?.unwrap_or(0.1),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "constant",
        "ConstantLR: lr * factor until total_iters (usually per epoch)",
        vec![
            opt("factor", "1/3", "factor in [0, 1]"),
            opt("total_iters", "5", "steps with the factor"),
        ],
        Box::new(|s, _| {
            let d = ConstantLrConfig::default();
            let cfg = ConstantLrConfig {
                factor: s.f64("factor")?.unwrap_or(d.factor),
                total_iters: count(s, "total_iters")?.unwrap_or(d.total_iters),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "linear",
        "LinearLR: factor moves linearly from start_factor to end_factor (warm-up; per epoch or batch)",
        vec![
            opt("start_factor", "1/3", "factor at step 0, in (0, 1]"),
            opt("end_factor", "1.0", "factor from total_iters on"),
            opt("total_iters", "5", "steps of the linear change"),
        ],
        Box::new(|s, _| {
            let d = LinearLrConfig::default();
            let cfg = LinearLrConfig {
                start_factor: s.f64("start_factor")?.unwrap_or(d.start_factor),
                end_factor: s.f64("end_factor")?.unwrap_or(d.end_factor),
                total_iters: count(s, "total_iters")?.unwrap_or(d.total_iters),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "exponential",
        "ExponentialLR: lr *= gamma every step (usually per epoch)",
        vec![opt("gamma", "required", "decay factor per step")],
        Box::new(|s, _| {
            let cfg = ExponentialLrConfig {
                gamma: required(s.f64("gamma")?, s, "gamma")?,
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "polynomial",
        "PolynomialLR: base_lr * (1 - t/total_iters)^power (per epoch or batch)",
        vec![
            opt("total_iters", "5", "steps to reach 0"),
            opt("power", "1.0", "power of the polynomial"),
        ],
        Box::new(|s, _| {
            let d = PolynomialLrConfig::default();
            let cfg = PolynomialLrConfig {
                total_iters: count(s, "total_iters")?.unwrap_or(d.total_iters),
                power: s.f64("power")?.unwrap_or(d.power),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "cosine",
        "CosineAnnealingLR: cosine from base_lr to eta_min over t_max steps (per epoch or batch)",
        vec![
            opt(
                "t_max",
                "total steps",
                "half period; defaults to the run's scheduler steps",
            ),
            opt("eta_min", "0", "minimum lr"),
        ],
        Box::new(|s, hint| {
            let t_max = match count(s, "t_max")? {
                Some(t) => t,
                None => hint.ok_or_else(|| {
                    Error::InvalidArgument(
                        "cosine: option t_max is required (no total steps known)".into(),
                    )
                })?,
            };
            let cfg = CosineAnnealingLrConfig {
                t_max,
                eta_min: s.f64("eta_min")?.unwrap_or(0.0),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "cosine-restarts",
        "CosineAnnealingWarmRestarts (SGDR): cosine with restarts every t_0 * t_mult^i steps",
        vec![
            opt("t_0", "required", "steps until the first restart"),
            opt("t_mult", "1", "period growth factor after a restart"),
            opt("eta_min", "0", "minimum lr"),
        ],
        Box::new(|s, _| {
            let cfg = CosineAnnealingWarmRestartsConfig {
                t_0: required(s.i64("t_0")?, s, "t_0")?,
                t_mult: s.i64("t_mult")?.unwrap_or(1),
                eta_min: s.f64("eta_min")?.unwrap_or(0.0),
            };
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "cyclic",
        "CyclicLR: lr cycles between base_lr and max_lr (per batch)",
        vec![
            opt(
                "base_lr",
                "required",
                "lower lr bound (one value, or one per group a;b)",
            ),
            opt("max_lr", "required", "upper lr bound"),
            opt("step_size_up", "2000", "steps in the increasing half"),
            opt(
                "step_size_down",
                "step_size_up",
                "steps in the decreasing half",
            ),
            opt("mode", "triangular", "triangular | triangular2 | exp_range"),
            opt("gamma", "1.0", "exp_range constant"),
            opt(
                "cycle_momentum",
                "true",
                "cycle momentum (or betas.0) inversely",
            ),
            opt("base_momentum", "0.8", "lower momentum bound"),
            opt("max_momentum", "0.9", "upper momentum bound"),
        ],
        Box::new(|s, _| {
            let base_lr = required(group_values(s, "base_lr")?, s, "base_lr")?;
            let max_lr = required(group_values(s, "max_lr")?, s, "max_lr")?;
            let mut cfg = CyclicLrConfig::new(base_lr, max_lr);
            set(&mut cfg.step_size_up, count(s, "step_size_up")?);
            cfg.step_size_down = count(s, "step_size_down")?;
            let modes = [
                ("triangular", CyclicMode::Triangular),
                ("triangular2", CyclicMode::Triangular2),
                ("exp_range", CyclicMode::ExpRange),
            ];
            let mode = choice(s, "mode", &modes, |_| {
                "cyclic: mode is invalid and scale_fn is None".into()
            })?;
            set(&mut cfg.mode, mode);
            set(&mut cfg.gamma, s.f64("gamma")?);
            set(&mut cfg.cycle_momentum, s.bool("cycle_momentum")?);
            set(&mut cfg.base_momentum, group_values(s, "base_momentum")?);
            set(&mut cfg.max_momentum, group_values(s, "max_momentum")?);
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "onecycle",
        "OneCycleLR: 1cycle policy, up to max_lr then down to max_lr/div_factor/final_div_factor (per batch)",
        vec![
            opt("max_lr", "required", "peak lr (one value, or one per group a;b)"),
            opt("total_steps", "total steps", "steps in the cycle; defaults to the run's scheduler steps"),
            opt("epochs", "none", "with steps_per_epoch, instead of total_steps"),
            opt("steps_per_epoch", "none", "with epochs, instead of total_steps"),
            opt("pct_start", "0.3", "fraction of the cycle spent increasing"),
            opt("anneal_strategy", "cos", "cos | linear"),
            opt("cycle_momentum", "true", "cycle momentum (or betas.0) inversely"),
            opt("base_momentum", "0.85", "momentum at the lr peak"),
            opt("max_momentum", "0.95", "momentum at the start and end"),
            opt("div_factor", "25", "initial_lr = max_lr / div_factor"),
            opt("final_div_factor", "1e4", "min_lr = initial_lr / final_div_factor"),
            opt("three_phase", "false", "three phases instead of two"),
        ],
        Box::new(|s, hint| {
            let max_lr = required(group_values(s, "max_lr")?, s, "max_lr")?;
            let (total, epochs, spe) = (s.i64("total_steps")?, s.i64("epochs")?, s.i64("steps_per_epoch")?);
            let total = match (total, epochs, spe, hint) {
                (Some(t), _, _, _) => Some(t),
                (None, Some(_), Some(_), _) => None,
                (None, _, _, Some(h)) => Some(i64::try_from(h).unwrap_or(i64::MAX)),
                _ => None,
            };
            let mut cfg = OneCycleLrConfig::new(max_lr, 0);
            cfg.total_steps = total;
            cfg.epochs = epochs;
            cfg.steps_per_epoch = spe;
            set(&mut cfg.pct_start, s.f64("pct_start")?);
            set(&mut cfg.anneal_strategy, anneal(s, "anneal_strategy", "anneal_strategy must be one of 'cos' or 'linear'")?);
            set(&mut cfg.cycle_momentum, s.bool("cycle_momentum")?);
            set(&mut cfg.base_momentum, group_values(s, "base_momentum")?);
            set(&mut cfg.max_momentum, group_values(s, "max_momentum")?);
            set(&mut cfg.div_factor, s.f64("div_factor")?);
            set(&mut cfg.final_div_factor, s.f64("final_div_factor")?);
            set(&mut cfg.three_phase, s.bool("three_phase")?);
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "plateau",
        "ReduceLROnPlateau: lr *= factor when a metric stops improving (per epoch, needs a metric)",
        vec![
            opt("mode", "min", "min | max"),
            opt("factor", "0.1", "new_lr = lr * factor"),
            opt("patience", "10", "bad steps tolerated"),
            opt("threshold", "1e-4", "significance threshold"),
            opt("threshold_mode", "rel", "rel | abs"),
            opt("cooldown", "0", "steps to wait after a reduction"),
            opt(
                "min_lr",
                "0",
                "lower bound (one value, or one per group a;b)",
            ),
            opt("eps", "1e-8", "smaller reductions are skipped"),
        ],
        Box::new(|s, _| {
            let mut cfg = ReduceLrOnPlateauConfig::default();
            let modes = [("min", PlateauMode::Min), ("max", PlateauMode::Max)];
            let mode = choice(s, "mode", &modes, |m| {
                format!("plateau: mode {m} is unknown!")
            })?;
            set(&mut cfg.mode, mode);
            let modes = [("rel", ThresholdMode::Rel), ("abs", ThresholdMode::Abs)];
            let mode = choice(s, "threshold_mode", &modes, |m| {
                format!("plateau: threshold mode {m} is unknown!")
            })?;
            set(&mut cfg.threshold_mode, mode);
            set(&mut cfg.factor, s.f64("factor")?);
            set(&mut cfg.patience, count(s, "patience")?);
            set(&mut cfg.threshold, s.f64("threshold")?);
            set(&mut cfg.cooldown, count(s, "cooldown")?);
            set(&mut cfg.min_lr, group_values(s, "min_lr")?);
            set(&mut cfg.eps, s.f64("eps")?);
            boxed(move |o| cfg.build(o))
        }),
    );
    add(
        "swalr",
        "SWALR: anneal to swa_lr over anneal_epochs, then hold (per epoch, with swa::AveragedModel)",
        vec![
            opt("swa_lr", "required", "lr to anneal to (one value, or one per group a;b)"),
            opt("anneal_epochs", "10", "steps of annealing"),
            opt("anneal_strategy", "cos", "cos | linear"),
        ],
        Box::new(|s, _| {
            let mut cfg = SwalrConfig::new(required(group_values(s, "swa_lr")?, s, "swa_lr")?);
            set(&mut cfg.anneal_epochs, s.i64("anneal_epochs")?);
            set(&mut cfg.anneal_strategy, anneal(s, "anneal_strategy", "anneal_strategy must by one of 'cos' or 'linear'")?);
            boxed(move |o| cfg.build(o))
        }),
    );
    r
}
