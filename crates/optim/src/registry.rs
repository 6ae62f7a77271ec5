//! Optimizers by spec: `adamw:lr=3e-4,weight_decay=0.05`,
//! `sgd:lr=1e-3,momentum=0.9`, `adam:betas=0.9;0.999,amsgrad=true`, or with
//! PyTorch's class names, `AdamW:lr=3e-4`.
//!
//! Every option is a hyperparameter under its PyTorch name; a tuple
//! (`betas`, `etas`, `step_sizes`) is written `a;b` (or `[a;b]`); booleans are
//! `true`/`false`/`1`/`0`. The registry is kiln-tensor's [`Registry`] (the one
//! registry type of kiln); each optimizer's options and defaults come from its
//! [`Rule`]'s [`hyperparameter_table!`](crate::hyperparameter_table) and
//! `Default` ([`rule_entry`]). A downstream crate registers its own with
//! [`Registry::register`].
use crate::groups::GroupOverride;
use crate::lbfgs::{Lbfgs, LbfgsConfig};
use crate::rule::{Grouped, Rule, RuleOptions};
use crate::{Error, NamedParameter, Optimizer, Result};
use kiln_tensor::spec::{Entry, Registry, Spec};
use std::sync::Arc;

/// Builds an optimizer from a resolved spec and the parameters; extra param
/// groups chosen by selectors ([`GroupOverride`]) may be passed.
pub type OptimizerBuild = dyn Fn(&mut Spec, Vec<NamedParameter>, &[GroupOverride]) -> Result<Box<dyn Optimizer>>
    + Send
    + Sync;

/// A registered optimizer: name, aliases, summary, options, builder.
pub type OptimizerEntry = Entry<OptimizerBuild>;

/// Optimizers by spec: a [`Registry`] of [`OptimizerEntry`] (which it derefs
/// to, for `register`, `resolve`, `describe`, `names`…) plus the calls that
/// build an optimizer over parameters.
#[derive(Debug, Clone)]
pub struct OptimizerRegistry(Registry<OptimizerBuild>);

impl std::ops::Deref for OptimizerRegistry {
    type Target = Registry<OptimizerBuild>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for OptimizerRegistry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl OptimizerRegistry {
    /// An empty registry (see [`optimizers`] for the built-in one).
    pub fn empty() -> Self {
        Self(Registry::new("optimizer", "Optimizers"))
    }

    /// Builds the optimizer a spec names over `params` (one param group).
    pub fn build(&self, spec: &str, params: Vec<NamedParameter>) -> Result<Box<dyn Optimizer>> {
        self.build_with_overrides(spec, params, &[])
    }

    /// Like [`OptimizerRegistry::build`], with extra param groups chosen by
    /// selectors (see [`Grouped::with_overrides`]): what
    /// `--param-group SELECTOR:options` gives, each parsed with
    /// `GroupOverride::from_str` (`"ndim<2:weight_decay=0".parse()`). Unknown
    /// names and options, bad values and missing options are errors before
    /// the optimizer's builder runs; then the optimizer's own checks (with
    /// PyTorch's messages) and the groups' (an unknown selector or
    /// hyperparameter, a group selecting no parameter) apply. LBFGS refuses
    /// extra groups, as PyTorch's does.
    pub fn build_with_overrides(
        &self,
        spec: &str,
        params: Vec<NamedParameter>,
        overrides: &[GroupOverride],
    ) -> Result<Box<dyn Optimizer>> {
        let (entry, mut spec) = self.0.prepare(&spec.parse()?)?;
        (entry.build)(&mut spec, params, overrides)
    }
}

/// Reads `spec`'s options into `C::default()` through the rule's
/// hyperparameter table and checks them with PyTorch's messages.
pub fn config_from_spec<C: Rule + Default>(spec: &mut Spec) -> Result<C> {
    let mut cfg = C::default();
    spec.apply(&mut RuleOptions(&mut cfg))?;
    cfg.validate()?;
    Ok(cfg)
}

/// The entry of a [`Rule`]-based optimizer: named `C::NAME`, its options and
/// their defaults from the rule's hyperparameter table and `C::default()`,
/// built as a [`Grouped`] over the parameters.
pub fn rule_entry<C: Rule + Default>(summary: &str) -> OptimizerEntry {
    let build: Arc<OptimizerBuild> = Arc::new(|spec, params, overrides| {
        let cfg: C = config_from_spec(spec)?;
        Ok(Box::new(Grouped::with_overrides(cfg, params, overrides)?) as Box<dyn Optimizer>)
    });
    Entry::new(C::NAME, summary, build).options_of(&mut RuleOptions(&mut C::default()))
}

/// LBFGS: its own object (one param group, closures); options from
/// [`LbfgsConfig`]'s `Options` and `Default`.
fn lbfgs_entry() -> OptimizerEntry {
    let build: Arc<OptimizerBuild> = Arc::new(|spec, params, overrides| {
        if !overrides.is_empty() {
            return Err(Error::InvalidArgument(
                "LBFGS doesn't support per-parameter options (parameter groups)".into(),
            ));
        }
        let mut cfg = LbfgsConfig::default();
        spec.apply(&mut cfg)?;
        cfg.validate()?;
        Ok(Box::new(Lbfgs::new(cfg, params)?) as Box<dyn Optimizer>)
    });
    Entry::new(
        "lbfgs",
        "L-BFGS with an optional strong-Wolfe line search; steps with a closure",
        build,
    )
    .options_of(&mut LbfgsConfig::default())
}

/// The registry of every kiln optimizer, each also under its PyTorch class
/// name (`SGD`, `AdamW`, `SparseAdam`…).
pub fn optimizers() -> OptimizerRegistry {
    use crate::*;
    let mut r = OptimizerRegistry::empty();
    let entries = [
        rule_entry::<SgdConfig>("stochastic gradient descent, with momentum and Nesterov")
            .alias("SGD"),
        rule_entry::<AdamConfig>("Adam").alias("Adam"),
        rule_entry::<AdamWConfig>("Adam with decoupled weight decay").alias("AdamW"),
        rule_entry::<AdagradConfig>(
            "Adagrad: per-coordinate steps from the sum of squared gradients",
        )
        .alias("Adagrad"),
        rule_entry::<AdadeltaConfig>(
            "Adadelta: steps from running averages of squared gradients and updates",
        )
        .alias("Adadelta"),
        rule_entry::<AdamaxConfig>("Adamax: Adam with the infinity norm").alias("Adamax"),
        rule_entry::<NAdamConfig>("NAdam: Adam with Nesterov momentum").alias("NAdam"),
        rule_entry::<RAdamConfig>("RAdam: Adam with a rectified adaptive learning rate")
            .alias("RAdam"),
        rule_entry::<RmspropConfig>("RMSprop").alias("RMSprop"),
        rule_entry::<RpropConfig>("Rprop: resilient backpropagation, full-batch").alias("Rprop"),
        rule_entry::<AsgdConfig>("averaged stochastic gradient descent").alias("ASGD"),
        rule_entry::<AdafactorConfig>("Adafactor: factored second moments").alias("Adafactor"),
        rule_entry::<MuonConfig>("Muon: orthogonalised momentum, for 2-D parameters").alias("Muon"),
        rule_entry::<SparseAdamConfig>("lazy Adam for sparse gradients")
            .aliases(&["SparseAdam", "sparse_adam"]),
        lbfgs_entry().alias("LBFGS"),
    ];
    for e in entries {
        r.register(e);
    }
    r
}
