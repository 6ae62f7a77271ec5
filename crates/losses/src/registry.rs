//! Losses by spec: `cross-entropy:label_smoothing=0.1,ignore_index=3`, or
//! with PyTorch's names, `CrossEntropyLoss:label_smoothing=0.1`.
//!
//! The registry is kiln-tensor's [`Registry`] (the one registry type of
//! kiln); this module adds the call that builds a loss and the 21 entries.
//! Each entry's options and defaults come from its config's
//! [`Options`] impl and `Default` ([`loss_entry`]).
use crate::error::Result;
use crate::*;
use kiln_tensor::spec::{Entry, Options, Registry, Spec};
use std::sync::Arc;

/// Builds a loss from a resolved spec (canonical keys, every option present).
pub type LossBuild = dyn Fn(&mut Spec) -> Result<Box<dyn Loss>> + Send + Sync;

/// A registered loss: name, aliases, summary, options, builder.
pub type LossEntry = Entry<LossBuild>;

/// Losses by spec: a [`Registry`] of [`LossEntry`] (which it derefs to, for
/// `register`, `resolve`, `describe`, `names`…) plus [`LossRegistry::build`].
/// [`registry`] holds the 21 of torch.nn; a downstream crate
/// [`register`](Registry::register)s its own.
#[derive(Debug, Clone)]
pub struct LossRegistry(Registry<LossBuild>);

impl Default for LossRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for LossRegistry {
    type Target = Registry<LossBuild>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for LossRegistry {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl LossRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self(Registry::new("loss", "Losses"))
    }

    /// Builds the loss a spec names (`huber:delta=0.5`, `HuberLoss:delta=0.5`).
    /// Errors on an unknown name or option (listing the accepted ones, and
    /// the nearest), a bad value or a missing required option before the
    /// loss' builder runs, then on what the loss' own checks refuse.
    pub fn build(&self, spec: &str) -> Result<Box<dyn Loss>> {
        let (entry, mut spec) = self.0.prepare(&spec.parse()?)?;
        (entry.build)(&mut spec)
    }
}

/// An entry for a loss made from a config `C` by `make` (usually the loss'
/// `new`): its options and their defaults are what `C::default()` visits,
/// and its builder reads the spec into `C::default()`.
pub fn loss_entry<C, L>(
    name: &str,
    summary: &str,
    make: impl Fn(C) -> Result<L> + Send + Sync + 'static,
) -> LossEntry
where
    C: Options + Default + 'static,
    L: Loss + 'static,
{
    let build: Arc<LossBuild> = Arc::new(move |spec: &mut Spec| {
        let mut cfg = C::default();
        spec.apply(&mut cfg)?;
        Ok(Box::new(make(cfg)?) as Box<dyn Loss>)
    });
    Entry::new(name, summary, build).options_of(&mut C::default())
}

macro_rules! entry {
    ($loss:ident, $cfg:ty, $alias:literal, $summary:literal) => {
        loss_entry::<$cfg, $loss>($loss::NAME, $summary, $loss::new).alias($alias)
    };
}

/// The registry of all 21 torch.nn losses, each also under its PyTorch
/// class name.
pub fn registry() -> LossRegistry {
    let mut r = LossRegistry::new();
    let entries = [
        entry!(CrossEntropyLoss, CrossEntropyConfig, "CrossEntropyLoss",
            "log-softmax + negative log-likelihood; targets: class indices or probabilities"),
        entry!(NllLoss, NllConfig, "NLLLoss",
            "negative log-likelihood of log-probabilities; targets: class indices"),
        entry!(MseLoss, MseConfig, "MSELoss",
            "mean squared error; class labels are compared as one-hot vectors"),
        entry!(L1Loss, L1Config, "L1Loss",
            "mean absolute error; class labels are compared as one-hot vectors"),
        entry!(CtcLoss, CtcConfig, "CTCLoss",
            "connectionist temporal classification; input = log-probabilities [T, N, C], target = blank-padded labels [N, S]"),
        entry!(PoissonNllLoss, PoissonNllConfig, "PoissonNLLLoss",
            "Poisson negative log-likelihood"),
        entry!(GaussianNllLoss, GaussianNllConfig, "GaussianNLLLoss",
            "Gaussian negative log-likelihood; input = stack([mean, var])"),
        entry!(KlDivLoss, KlDivConfig, "KLDivLoss",
            "Kullback-Leibler divergence of log-probabilities"),
        entry!(BceLoss, BceConfig, "BCELoss",
            "binary cross-entropy of probabilities; targets in [0, 1]"),
        entry!(BceWithLogitsLoss, BceWithLogitsConfig, "BCEWithLogitsLoss",
            "sigmoid + binary cross-entropy; targets in [0, 1]"),
        entry!(MarginRankingLoss, MarginRankingConfig, "MarginRankingLoss",
            "ranking hinge; input = stack([x1, x2]), target = +1/-1"),
        entry!(HingeEmbeddingLoss, HingeEmbeddingConfig, "HingeEmbeddingLoss",
            "hinge embedding; target = +1/-1"),
        entry!(MultiLabelMarginLoss, MultiLabelMarginConfig, "MultiLabelMarginLoss",
            "multi-label hinge; target = class indices ended by -1"),
        entry!(HuberLoss, HuberConfig, "HuberLoss",
            "Huber loss; class labels are compared as one-hot vectors"),
        entry!(SmoothL1Loss, SmoothL1Config, "SmoothL1Loss",
            "smooth L1 loss; class labels are compared as one-hot vectors"),
        entry!(SoftMarginLoss, SoftMarginConfig, "SoftMarginLoss",
            "two-class logistic loss; target = +1/-1"),
        entry!(MultiLabelSoftMarginLoss, MultiLabelSoftMarginConfig, "MultiLabelSoftMarginLoss",
            "one-vs-all logistic loss; targets 0/1 per class"),
        entry!(CosineEmbeddingLoss, CosineEmbeddingConfig, "CosineEmbeddingLoss",
            "cosine embedding; input = stack([x1, x2]), target = +1/-1"),
        entry!(MultiMarginLoss, MultiMarginConfig, "MultiMarginLoss",
            "multi-class hinge; targets: class indices"),
        entry!(TripletMarginLoss, TripletMarginConfig, "TripletMarginLoss",
            "triplet margin; input = anchor, target = stack([positive, negative])"),
        entry!(TripletMarginWithDistanceLoss, TripletMarginWithDistanceConfig, "TripletMarginWithDistanceLoss",
            "triplet margin with a distance; input = anchor, target = stack([positive, negative])"),
    ];
    for e in entries {
        r.register(e);
    }
    r
}
