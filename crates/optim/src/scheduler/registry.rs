//! Schedulers by spec: `onecycle:max_lr=0.1`, `step:step_size=30,gamma=0.1`,
//! or with PyTorch's names, `OneCycleLR:max_lr=0.1`, `CosineAnnealingLR:T_max=10`;
//! `sequential:schedulers=[linear:start_factor=0.1,total_iters=5;cosine],milestones=5`
//! nests specs (the bracket rule of [`kiln_tensor::spec`]).
//!
//! The registry is kiln-tensor's [`Registry`] (the one registry type of
//! kiln); each scheduler's options and defaults come from its config's
//! [`Options`] impl and constructor defaults ([`scheduler_entry`]). Unknown
//! names and options, bad values and missing required options are refused
//! before any builder runs, so a bad spec never touches the optimizer.
use super::warmup_cosine::WarmupCosineSpec;
use super::{
    ConstantLrConfig, CosineAnnealingLrConfig, CosineAnnealingWarmRestartsConfig, CyclicLrConfig,
    ExponentialLrConfig, LinearLrConfig, LrScheduler, MultiStepLrConfig, OneCycleLrConfig,
    PolynomialLrConfig, ReduceLrOnPlateauConfig, SequentialLr, StepLrConfig, SwalrConfig,
    WarmupCosineLrConfig,
};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{Entry, OptionInfo, OptionValue, OptionVisitor, Options, Registry, Spec};
use std::sync::Arc;

/// Builds a scheduler on an optimizer from a resolved spec and what else
/// the build knows ([`BuildContext`]).
pub type SchedulerBuild = dyn Fn(&mut Spec, &mut dyn Optimizer, BuildContext) -> Result<Box<dyn LrScheduler>>
    + Send
    + Sync;

/// What a scheduler's builder knows besides its spec and the optimizer.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The number of scheduler steps the run will make, when known: the
    /// default of `onecycle`'s `total_steps`, `cosine`'s `t_max` and
    /// `warmup-cosine`'s `decay_steps`.
    pub total_steps: Option<usize>,
    /// The registry building it, which builds the schedulers a spec holds
    /// (`sequential`'s).
    pub registry: SchedulerRegistry,
}

/// A registered scheduler: name, aliases, summary, options, builder.
pub type SchedulerEntry = Entry<SchedulerBuild>;

/// Schedulers by spec: a [`Registry`] of [`SchedulerEntry`] (which it derefs
/// to, for `register`, `resolve`, `describe`, `names`…) plus
/// [`SchedulerRegistry::build`].
#[derive(Debug, Clone)]
pub struct SchedulerRegistry(Registry<SchedulerBuild>);

impl std::ops::Deref for SchedulerRegistry {
    type Target = Registry<SchedulerBuild>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SchedulerRegistry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl SchedulerRegistry {
    /// An empty registry (see [`schedulers()`] for the built-in one).
    pub fn empty() -> Self {
        Self(Registry::new("scheduler", "Learning-rate schedulers"))
    }

    /// Builds a scheduler from a spec on `opt`. `total_steps_hint` is the
    /// number of scheduler steps the run will make (`onecycle`'s
    /// `total_steps` and `cosine`'s `t_max` when they are `none`). The spec
    /// is checked completely before the optimizer is touched.
    pub fn build(
        &self,
        spec: &str,
        opt: &mut dyn Optimizer,
        total_steps_hint: Option<usize>,
    ) -> Result<Box<dyn LrScheduler>> {
        self.build_spec(&spec.parse()?, opt, total_steps_hint)
    }

    /// [`SchedulerRegistry::build`] from a parsed spec.
    pub fn build_spec(
        &self,
        spec: &Spec,
        opt: &mut dyn Optimizer,
        total_steps_hint: Option<usize>,
    ) -> Result<Box<dyn LrScheduler>> {
        let (entry, mut spec) = self.0.prepare(spec)?;
        let context = BuildContext {
            total_steps: total_steps_hint,
            registry: self.clone(),
        };
        (entry.build)(&mut spec, opt, context)
    }
}

/// Whether the schedule a resolved `spec` names is written for one step per
/// optimizer step (per batch) rather than per epoch: `onecycle`, `cyclic`,
/// `warmup-cosine`, and a `sequential` holding one. A training loop's
/// default `--scheduler-interval` follows it.
pub fn steps_per_batch(spec: &Spec) -> bool {
    match spec.name.as_str() {
        "onecycle" | "cyclic" | "warmup-cosine" => true,
        "sequential" => {
            let mut parts: Vec<Spec> = Vec::new();
            let text = spec.get("schedulers").unwrap_or_default();
            parts.parse_text(text).is_ok() && parts.iter().any(steps_per_batch)
        }
        _ => false,
    }
}

/// An entry for a scheduler made from a config `C` by `build`: its options
/// and their defaults are what `template()` visits (the config's `Default`,
/// or its constructor with placeholders for the required options), and its
/// builder reads the spec into a fresh `template()`.
pub fn scheduler_entry<C, S>(
    name: &str,
    summary: &str,
    template: impl Fn() -> C + Send + Sync + 'static,
    build: impl Fn(C, &mut dyn Optimizer, Option<usize>) -> Result<S> + Send + Sync + 'static,
) -> SchedulerEntry
where
    C: Options + 'static,
    S: LrScheduler + 'static,
{
    let mut docs = template();
    let builder: Arc<SchedulerBuild> = Arc::new(move |spec, opt, context| {
        let mut cfg = template();
        spec.apply(&mut cfg)?;
        Ok(Box::new(build(cfg, opt, context.total_steps)?) as Box<dyn LrScheduler>)
    });
    Entry::new(name, summary, builder).options_of(&mut docs)
}

/// `cosine`'s options: CosineAnnealingLR's, with `t_max` optional. Its
/// default `none` takes the run's scheduler steps.
struct CosineSpec {
    t_max: Option<usize>,
    eta_min: f64,
}

impl Default for CosineSpec {
    fn default() -> Self {
        Self {
            t_max: None,
            eta_min: CosineAnnealingLrConfig::new(0).eta_min,
        }
    }
}

impl Options for CosineSpec {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new("t_max", "half period; none: the run's scheduler steps")
                .aliases(&["T_max"]),
            &mut self.t_max,
        )?;
        v.option(OptionInfo::new("eta_min", "minimum lr"), &mut self.eta_min)
    }
}

/// `sequential`'s options: SequentialLR's `schedulers` (specs of this
/// registry) and `milestones`.
#[derive(Default)]
struct SequentialSpec {
    schedulers: Vec<Spec>,
    milestones: Vec<usize>,
}

impl Options for SequentialSpec {
    fn options(&mut self, v: &mut dyn OptionVisitor) -> kiln_tensor::Result<()> {
        v.option(
            OptionInfo::new(
                "schedulers",
                "the schedulers in order, as specs: [linear:total_iters=5;cosine]",
            )
            .required(),
            &mut self.schedulers,
        )?;
        v.option(
            OptionInfo::new(
                "milestones",
                "steps at which the next scheduler takes over, e.g. 5;10",
            )
            .required(),
            &mut self.milestones,
        )
    }
}

/// `sequential`: `SequentialLR(optimizer, schedulers, milestones)` with the
/// schedulers built from their specs, in order, on the same optimizer (as a
/// PyTorch program builds them before the SequentialLR). Scheduler `i` gets
/// the steps from its start to the next milestone (or the run's end) as its
/// total steps (a `cosine` without `t_max` anneals over its own stretch).
fn sequential_entry() -> SchedulerEntry {
    let build: Arc<SchedulerBuild> = Arc::new(|spec, opt, context| {
        let mut cfg = SequentialSpec::default();
        spec.apply(&mut cfg)?;
        let (schedulers, milestones) = (cfg.schedulers, cfg.milestones);
        // SequentialLR's own checks, before any scheduler touches the optimizer.
        if schedulers.is_empty() {
            return Err(Error::InvalidArgument(
                "SequentialLR expects at least one scheduler, but got no scheduler.".into(),
            ));
        }
        if milestones.len() + 1 != schedulers.len() {
            return Err(Error::InvalidArgument(format!(
                "Sequential Schedulers expects number of schedulers provided to be one more than the number of \
                 milestone points, but got number of schedulers {} and the number of milestones to be equal to {}",
                schedulers.len(),
                milestones.len()
            )));
        }
        let mut built = Vec::with_capacity(schedulers.len());
        for (i, child) in schedulers.iter().enumerate() {
            let start = if i == 0 {
                Some(0)
            } else {
                milestones.get(i - 1).copied()
            };
            let end = milestones.get(i).copied().or(context.total_steps);
            let steps = end
                .zip(start)
                .and_then(|(end, start)| end.checked_sub(start))
                .filter(|n| *n > 0);
            let scheduler = context
                .registry
                .build_spec(child, opt, steps)
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "sequential: scheduler {i} ({}): {e}",
                        child.name
                    ))
                })?;
            built.push(scheduler);
        }
        Ok(Box::new(SequentialLr::new(opt, built, milestones)?) as Box<dyn LrScheduler>)
    });
    Entry::new(
        "sequential",
        "the schedulers one after the other, switching at the milestones (as they are stepped)",
        build,
    )
    .options_of(&mut SequentialSpec::default())
}

/// The registry of kiln's schedulers buildable from specs, each also under
/// its PyTorch class name: `step`, `multistep`, `constant`, `linear`,
/// `exponential`, `polynomial`, `cosine`, `cosine-restarts`, `cyclic`,
/// `onecycle`, `plateau`, `swalr`, `sequential` (SequentialLR over
/// nested specs), and nanoGPT's `warmup-cosine`. LambdaLR,
/// MultiplicativeLR and ChainedScheduler need code; the registry names them
/// as such.
pub fn schedulers() -> SchedulerRegistry {
    let mut r = SchedulerRegistry::empty();
    let entries = [
        scheduler_entry(
            "step",
            "lr *= gamma every step_size steps (usually per epoch)",
            || StepLrConfig::new(0),
            |c, o, _| c.build(o),
        )
        .alias("StepLR"),
        scheduler_entry(
            "multistep",
            "lr *= gamma at each milestone (usually per epoch)",
            || MultiStepLrConfig::new(Vec::new()),
            |c, o, _| c.build(o),
        )
        .alias("MultiStepLR"),
        scheduler_entry(
            "constant",
            "lr * factor until total_iters (usually per epoch)",
            ConstantLrConfig::default,
            |c, o, _| c.build(o),
        )
        .alias("ConstantLR"),
        scheduler_entry(
            "linear",
            "factor moves linearly from start_factor to end_factor (warm-up; per epoch or batch)",
            LinearLrConfig::default,
            |c, o, _| c.build(o),
        )
        .alias("LinearLR"),
        scheduler_entry(
            "exponential",
            "lr *= gamma every step (usually per epoch)",
            || ExponentialLrConfig { gamma: 1.0 },
            |c, o, _| c.build(o),
        )
        .alias("ExponentialLR"),
        scheduler_entry(
            "polynomial",
            "base_lr * (1 - t/total_iters)^power (per epoch or batch)",
            PolynomialLrConfig::default,
            |c, o, _| c.build(o),
        )
        .alias("PolynomialLR"),
        scheduler_entry(
            "cosine",
            "cosine from base_lr to eta_min over t_max steps (per epoch or batch)",
            CosineSpec::default,
            |c, o, hint| {
                let t_max = c.t_max.or(hint).ok_or_else(|| {
                    Error::InvalidArgument(
                        "cosine: option t_max is required (no total steps known)".into(),
                    )
                })?;
                CosineAnnealingLrConfig {
                    t_max,
                    eta_min: c.eta_min,
                }
                .build(o)
            },
        )
        .alias("CosineAnnealingLR"),
        scheduler_entry(
            "cosine-restarts",
            "SGDR: cosine with restarts every t_0 * t_mult^i steps",
            || CosineAnnealingWarmRestartsConfig::new(1),
            |c, o, _| c.build(o),
        )
        .alias("CosineAnnealingWarmRestarts"),
        scheduler_entry(
            "cyclic",
            "lr cycles between base_lr and max_lr (per batch)",
            || CyclicLrConfig::new(0.0, 0.0),
            |c, o, _| c.build(o),
        )
        .alias("CyclicLR"),
        scheduler_entry(
            "onecycle",
            "1cycle policy: up to max_lr, then down to max_lr/div_factor/final_div_factor (per batch)",
            || OneCycleLrConfig {
                total_steps: None,
                ..OneCycleLrConfig::new(0.0, 0)
            },
            |mut c, o, hint| {
                let from_epochs = c.epochs.is_some() && c.steps_per_epoch.is_some();
                if c.total_steps.is_none() && !from_epochs {
                    c.total_steps = hint.map(|h| i64::try_from(h).unwrap_or(i64::MAX));
                }
                c.build(o)
            },
        )
        .alias("OneCycleLR"),
        scheduler_entry(
            "plateau",
            "lr *= factor when a metric stops improving (per epoch, needs a metric)",
            ReduceLrOnPlateauConfig::default,
            |c, o, _| c.build(o),
        )
        .alias("ReduceLROnPlateau"),
        scheduler_entry(
            "swalr",
            "anneal to swa_lr over anneal_epochs, then hold (per epoch, with swa::AveragedModel)",
            || SwalrConfig::new(0.0),
            |c, o, _| c.build(o),
        )
        .alias("SWALR"),
        scheduler_entry(
            "warmup-cosine",
            "nanoGPT's get_lr: linear warm-up, cosine down to min_lr at decay_steps, then min_lr (per step)",
            WarmupCosineSpec::default,
            |c, o, total_steps| {
                let decay_steps = c.decay_steps.or(total_steps).ok_or_else(|| {
                    Error::InvalidArgument(
                        "warmup-cosine: option decay_steps is required (no total steps known)"
                            .into(),
                    )
                })?;
                WarmupCosineLrConfig {
                    warmup_steps: c.warmup_steps,
                    decay_steps,
                    min_lr: c.min_lr,
                }
                .build(o)
            },
        )
        .alias("WarmupCosineLR"),
        sequential_entry().alias("SequentialLR"),
    ];
    for e in entries {
        r.register(e);
    }
    for (name, alias, what) in [
        ("lambda", "LambdaLR", "scheduler::LambdaLr needs a closure"),
        (
            "multiplicative",
            "MultiplicativeLR",
            "scheduler::MultiplicativeLr needs a closure",
        ),
        (
            "chained",
            "ChainedScheduler",
            "scheduler::ChainedScheduler needs the schedulers it chains",
        ),
    ] {
        r.register_code_only(name, &[alias], what);
    }
    r
}
