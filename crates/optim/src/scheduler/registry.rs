//! Schedulers by spec: `onecycle:max_lr=0.1`, `step:step_size=30,gamma=0.1`,
//! or with PyTorch's names, `OneCycleLR:max_lr=0.1`, `CosineAnnealingLR:T_max=10`.
//!
//! The registry is kiln-tensor's [`Registry`] (the one registry type of
//! kiln); each scheduler's options and defaults come from its config's
//! [`Options`] impl and constructor defaults ([`scheduler_entry`]). Unknown
//! names and options, bad values and missing required options are refused
//! before any builder runs, so a bad spec never touches the optimizer.
use super::{
    ConstantLrConfig, CosineAnnealingLrConfig, CosineAnnealingWarmRestartsConfig, CyclicLrConfig,
    ExponentialLrConfig, LinearLrConfig, LrScheduler, MultiStepLrConfig, OneCycleLrConfig,
    PolynomialLrConfig, ReduceLrOnPlateauConfig, StepLrConfig, SwalrConfig,
};
use crate::{Error, Optimizer, Result};
use kiln_tensor::spec::{Entry, OptionInfo, OptionVisitor, Options, Registry, Spec};
use std::sync::Arc;

/// Builds a scheduler on an optimizer from a resolved spec, given the number
/// of scheduler steps the run will make when known (the default of
/// `onecycle`'s `total_steps` and `cosine`'s `t_max`).
pub type SchedulerBuild = dyn Fn(&mut Spec, &mut dyn Optimizer, Option<usize>) -> Result<Box<dyn LrScheduler>>
    + Send
    + Sync;

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
        let (entry, mut spec) = self.0.prepare(&spec.parse()?)?;
        (entry.build)(&mut spec, opt, total_steps_hint)
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
    let builder: Arc<SchedulerBuild> = Arc::new(move |spec, opt, hint| {
        let mut cfg = template();
        spec.apply(&mut cfg)?;
        Ok(Box::new(build(cfg, opt, hint)?) as Box<dyn LrScheduler>)
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

/// The registry of kiln's schedulers buildable from specs, each also under
/// its PyTorch class name: `step`, `multistep`, `constant`, `linear`,
/// `exponential`, `polynomial`, `cosine`, `cosine-restarts`, `cyclic`,
/// `onecycle`, `plateau`, `swalr`. LambdaLR, MultiplicativeLR, SequentialLR
/// and ChainedScheduler need code; the registry names them as such.
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
            "sequential",
            "SequentialLR",
            "scheduler::SequentialLr needs the schedulers it sequences",
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
