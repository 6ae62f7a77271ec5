//! Losses by spec string: `cross-entropy:label_smoothing=0.1,ignore_index=3`.
use crate::error::{Error, Result};
use crate::*;
use kiln_tensor::spec::Spec;
use std::sync::Arc;

/// Builds a loss from a parsed spec, reading the options it knows.
pub type LossBuilder = Arc<dyn Fn(&mut Spec) -> Result<Box<dyn Loss>> + Send + Sync>;

/// One option of a registered loss, for [`LossRegistry::describe`].
#[derive(Debug, Clone, PartialEq)]
pub struct LossOption {
    /// Option key as written in spec strings (`label_smoothing`).
    pub name: String,
    /// Default value as text (`0`, `none`).
    pub default: String,
    /// One line on what it does.
    pub help: String,
}

impl LossOption {
    /// An option `name` with default `default` described by `help`.
    pub fn new(name: &str, default: &str, help: &str) -> Self {
        Self {
            name: name.to_string(),
            default: default.to_string(),
            help: help.to_string(),
        }
    }
}

/// A registered loss: its spec name, a one-line summary, its options and a builder.
#[derive(Clone)]
pub struct LossEntry {
    /// Spec name, kebab-case (`cross-entropy`).
    pub name: String,
    /// One line on what the loss is.
    pub summary: String,
    /// Accepted options with their defaults.
    pub options: Vec<LossOption>,
    /// Builds the loss from a spec.
    pub build: LossBuilder,
}

impl std::fmt::Debug for LossEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossEntry")
            .field("name", &self.name)
            .field("summary", &self.summary)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl LossEntry {
    /// An entry; `build` reads its options from the spec (unread options are
    /// rejected by [`LossRegistry::build`]).
    pub fn new(
        name: &str,
        summary: &str,
        options: Vec<LossOption>,
        build: impl Fn(&mut Spec) -> Result<Box<dyn Loss>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.to_string(),
            summary: summary.to_string(),
            options,
            build: Arc::new(build),
        }
    }
}

/// Losses by spec name. [`registry`] holds the 21 of torch.nn; downstream
/// crates [`register`](LossRegistry::register) their own.
#[derive(Debug, Clone, Default)]
pub struct LossRegistry {
    entries: Vec<LossEntry>,
}

impl LossRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `entry`, replacing any entry of the same name.
    pub fn register(&mut self, entry: LossEntry) {
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    /// Builds the loss a spec string names (`huber:delta=0.5`). Errors on an
    /// unknown name (listing the accepted ones), an unknown option (listing the
    /// loss' options) or a bad value.
    pub fn build(&self, spec: &str) -> Result<Box<dyn Loss>> {
        let mut spec: Spec = spec.parse()?;
        let Some(entry) = self.entries.iter().find(|e| e.name == spec.name) else {
            return Err(Error::UnknownLoss {
                name: spec.name.clone(),
                accepted: self.names().join(", "),
            });
        };
        let loss = (entry.build)(&mut spec)?;
        let accepted: Vec<&str> = entry.options.iter().map(|o| o.name.as_str()).collect();
        spec.finish(&accepted)?;
        Ok(loss)
    }

    /// A human listing: each loss with its summary, then each option with its default.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("{:<30}{}\n", e.name, e.summary));
            for o in &e.options {
                out.push_str(&format!(
                    "    {:<20}{:<12}{}\n",
                    o.name,
                    format!("[{}]", o.default),
                    o.help
                ));
            }
        }
        out
    }

    /// The registered names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&LossEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

fn opt(name: &str, default: &str, help: &str) -> LossOption {
    LossOption::new(name, default, help)
}

fn red() -> LossOption {
    opt("reduction", "mean", "none | mean | sum")
}

fn weight(help: &str) -> LossOption {
    opt("weight", "none", help)
}

macro_rules! entry {
    ($ty:ty, $summary:expr, [$($o:expr),* $(,)?]) => {
        LossEntry::new(<$ty>::NAME, $summary, vec![$($o),*], |s| {
            Ok(Box::new(<$ty>::from_spec(s)?) as Box<dyn Loss>)
        })
    };
}

/// The registry of all 21 torch.nn losses by spec name.
pub fn registry() -> LossRegistry {
    let mut r = LossRegistry::new();
    let entries = vec![
        entry!(CrossEntropyLoss, "log-softmax + negative log-likelihood (nn.CrossEntropyLoss)", [
            weight("per-class weights, ;-separated (C values)"),
            opt("ignore_index", "-100", "target value that is ignored"),
            red(),
            opt("label_smoothing", "0", "label smoothing in [0, 1]"),
        ]),
        entry!(NllLoss, "negative log-likelihood of log-probabilities (nn.NLLLoss)", [
            weight("per-class weights, ;-separated (C values)"),
            opt("ignore_index", "-100", "target value that is ignored"),
            red(),
        ]),
        entry!(MseLoss, "mean squared error (nn.MSELoss)", [red()]),
        entry!(L1Loss, "mean absolute error (nn.L1Loss)", [red()]),
        entry!(CtcLoss, "connectionist temporal classification (nn.CTCLoss)", [
            opt("blank", "0", "index of the blank label"),
            red(),
            opt("zero_infinity", "false", "zero infinite losses and their gradients"),
        ]),
        entry!(PoissonNllLoss, "Poisson negative log-likelihood (nn.PoissonNLLLoss)", [
            opt("log_input", "true", "input is log(rate)"),
            opt("full", "false", "add the Stirling approximation term"),
            opt("eps", "1e-8", "added to the rate before log when log_input=false"),
            red(),
        ]),
        entry!(GaussianNllLoss, "Gaussian negative log-likelihood; input = stack([mean, var]) (nn.GaussianNLLLoss)", [
            opt("full", "false", "add the constant 0.5 log(2 pi)"),
            opt("eps", "1e-6", "variances are clamped to at least eps"),
            red(),
        ]),
        entry!(KlDivLoss, "Kullback-Leibler divergence of log-probabilities (nn.KLDivLoss)", [
            opt("reduction", "mean", "none | mean | sum | batchmean"),
            opt("log_target", "false", "target is given as log-probabilities"),
        ]),
        entry!(BceLoss, "binary cross-entropy of probabilities (nn.BCELoss)", [
            weight("rescaling weights, ;-separated, broadcast over the last dimension"),
            red(),
        ]),
        entry!(BceWithLogitsLoss, "sigmoid + binary cross-entropy (nn.BCEWithLogitsLoss)", [
            weight("rescaling weights, ;-separated, broadcast over the last dimension"),
            red(),
            opt("pos_weight", "none", "positive-example weights per class, ;-separated"),
        ]),
        entry!(MarginRankingLoss, "ranking hinge; input = stack([x1, x2]), target = ±1 (nn.MarginRankingLoss)", [
            opt("margin", "0", "margin"),
            red(),
        ]),
        entry!(HingeEmbeddingLoss, "hinge embedding with ±1 targets (nn.HingeEmbeddingLoss)", [
            opt("margin", "1", "margin"),
            red(),
        ]),
        entry!(MultiLabelMarginLoss, "multi-label hinge over class indices (nn.MultiLabelMarginLoss)", [red()]),
        entry!(HuberLoss, "Huber loss (nn.HuberLoss)", [
            red(),
            opt("delta", "1", "threshold between quadratic and linear, > 0"),
        ]),
        entry!(SmoothL1Loss, "smooth L1 loss (nn.SmoothL1Loss)", [
            red(),
            opt("beta", "1", "threshold between quadratic and linear, >= 0"),
        ]),
        entry!(SoftMarginLoss, "two-class logistic loss with ±1 targets (nn.SoftMarginLoss)", [red()]),
        entry!(MultiLabelSoftMarginLoss, "one-vs-all logistic loss (nn.MultiLabelSoftMarginLoss)", [
            weight("per-class weights, ;-separated"),
            red(),
        ]),
        entry!(CosineEmbeddingLoss, "cosine embedding; input = stack([x1, x2]), target = ±1 (nn.CosineEmbeddingLoss)", [
            opt("margin", "0", "margin in [-1, 1]"),
            red(),
        ]),
        entry!(MultiMarginLoss, "multi-class hinge (nn.MultiMarginLoss)", [
            opt("p", "1", "exponent, 1 or 2"),
            opt("margin", "1", "margin"),
            weight("per-class weights, ;-separated (C values)"),
            red(),
        ]),
        entry!(TripletMarginLoss, "triplet margin; input = anchor, target = stack([positive, negative]) (nn.TripletMarginLoss)", [
            opt("margin", "1", "margin, > 0"),
            opt("p", "2", "norm degree of the pairwise distance"),
            opt("eps", "1e-6", "added inside the pairwise distance"),
            opt("swap", "false", "use the distance swap"),
            red(),
        ]),
        entry!(TripletMarginWithDistanceLoss, "triplet margin with a distance; input = anchor, target = stack([positive, negative]) (nn.TripletMarginWithDistanceLoss)", [
            opt("distance", "pairwise", "pairwise | cosine (a closure via the Rust API)"),
            opt("margin", "1", "margin, > 0"),
            opt("swap", "false", "use the distance swap"),
            red(),
        ]),
    ];
    for e in entries {
        r.register(e);
    }
    r
}
