//! kiln-losses: every `torch.nn` loss behind one object-safe [`Loss`] trait,
//! equal to PyTorch in value and gradient.
//!
//! Each loss is a type with a config struct whose `Default` is PyTorch's
//! defaults (`CrossEntropyLoss::new(CrossEntropyConfig { label_smoothing: 0.1,
//! ..Default::default() })`). Where libtorch has a kernel the loss calls it
//! exactly as `torch.nn.functional` does; the others are composed from tensor
//! ops in the order of PyTorch's Python. Every input is checked (shapes,
//! dtypes, class ranges) before libtorch runs, and a broken rule comes back as
//! an [`Error`] naming the loss, the shapes and the rule.
//!
//! Losses with more than two inputs have inherent methods with PyTorch's full
//! signature (`forward3`, `forward_var`, `forward_ctc`); their
//! [`Loss::forward`] stacks the extra inputs along a new leading dimension, as
//! each type documents.
//!
//! Each config implements [`kiln_tensor::spec::Options`] (its fields as spec
//! options, PyTorch's argument names), so [`registry`] names all 21 by spec
//! (`cross-entropy:label_smoothing=0.1,ignore_index=3`, or with PyTorch's
//! class name as an alias, `CrossEntropyLoss:label_smoothing=0.1`), documents
//! their defaults from the configs' `Default` and resolves a spec to every
//! option's effective value. Each loss says what targets it takes
//! ([`Loss::targets`], [`Targets`]), so a training loop can adapt and check
//! its data before the first step.
//!
//! | spec name | type | libtorch kernel |
//! |---|---|---|
//! | `cross-entropy` | [`CrossEntropyLoss`] | `cross_entropy_loss` |
//! | `nll` | [`NllLoss`] | `nll_loss_nd` |
//! | `mse` | [`MseLoss`] | `mse_loss` |
//! | `l1` | [`L1Loss`] | `l1_loss` |
//! | `ctc` | [`CtcLoss`] | `ctc_loss` |
//! | `poisson-nll` | [`PoissonNllLoss`] | `poisson_nll_loss` |
//! | `gaussian-nll` | [`GaussianNllLoss`] | composed (as `F.gaussian_nll_loss`) |
//! | `kl-div` | [`KlDivLoss`] | `kl_div` |
//! | `bce` | [`BceLoss`] | `binary_cross_entropy` |
//! | `bce-with-logits` | [`BceWithLogitsLoss`] | `binary_cross_entropy_with_logits` |
//! | `margin-ranking` | [`MarginRankingLoss`] | `margin_ranking_loss` |
//! | `hinge-embedding` | [`HingeEmbeddingLoss`] | `hinge_embedding_loss` |
//! | `multilabel-margin` | [`MultiLabelMarginLoss`] | `multilabel_margin_loss` |
//! | `huber` | [`HuberLoss`] | `huber_loss` |
//! | `smooth-l1` | [`SmoothL1Loss`] | `smooth_l1_loss` (`l1_loss` for β = 0) |
//! | `soft-margin` | [`SoftMarginLoss`] | `soft_margin_loss` |
//! | `multilabel-soft-margin` | [`MultiLabelSoftMarginLoss`] | composed (as `F.multilabel_soft_margin_loss`) |
//! | `cosine-embedding` | [`CosineEmbeddingLoss`] | `cosine_embedding_loss` |
//! | `multi-margin` | [`MultiMarginLoss`] | `multi_margin_loss` (through kiln-tensor's shim) |
//! | `triplet-margin` | [`TripletMarginLoss`] | `triplet_margin_loss` |
//! | `triplet-margin-with-distance` | [`TripletMarginWithDistanceLoss`] | composed (as `F.triplet_margin_with_distance_loss`) |
//!
//! Every loss is checked against values and gradients PyTorch computes
//! (`tests/golden/make_golden.py`), and every loss input of PyTorch's own
//! `module_db` is replayed bit for bit (`tests/conformance/make_module_db.py`,
//! `make conformance`). Deliberate divergences are documented on
//! the type: [`MultiMarginLoss`] (empty batch), [`CtcLoss`] (padding values),
//! and the broadcasting losses, which broadcast silently where PyTorch warns.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod binary;
mod classification;
mod ctc;
mod embedding;
mod error;
mod reduction;
mod registry;
mod regression;
mod util;

pub use binary::*;
pub use classification::*;
pub use ctc::*;
pub use embedding::*;
pub use error::{Error, Result};
pub use kiln_tensor::{Device, Kind, Tensor};
pub use reduction::{KlDivReduction, Reduction};
pub use registry::{loss_entry, registry, LossBuild, LossEntry, LossRegistry};
pub use regression::*;

/// A loss function: object safe, so a program can pick one at run time as a
/// `Box<dyn Loss>`.
pub trait Loss: Send + Sync {
    /// Loss of `input` against `target`.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor>;
    /// Name as spec strings use it (`cross-entropy`).
    fn name(&self) -> &str;
    /// What the targets are, so a training loop can adapt its data (one-hot
    /// class labels for the regression losses) and check loss against data
    /// before the first step. The default, [`Targets::ANY`], declares
    /// nothing: the data is passed as it is and not checked.
    fn targets(&self) -> Targets {
        Targets::ANY
    }
    /// Whether this loss, forward and backward, computes the same bits for
    /// `target` when ATen's OpenMP kernels run on one thread as when they
    /// split the work over several: true only where every kernel it runs
    /// computes each output independently of the split (elementwise ops,
    /// row-wise softmax, a serial reduction). A training step may then run
    /// the loss on one thread (see `kiln_tensor::device::SerialAtenKernels`).
    /// The default, `false`, claims nothing.
    fn exact_on_one_thread(&self, target: &Tensor) -> bool {
        let _ = target;
        false
    }
}

/// A closure is a Loss (name `custom`, targets [`Targets::ANY`]).
impl<F> Loss for F
where
    F: Fn(&Tensor, &Tensor) -> Result<Tensor> + Send + Sync,
{
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        self(input, target)
    }
    fn name(&self) -> &str {
        "custom"
    }
}

/// What a loss's [`Loss::forward`] takes: the kind of target and how many
/// tensors its input and target stack along a new first dimension.
///
/// | loss | kind | input, target stacks |
/// |---|---|---|
/// | `cross-entropy` | class indices (or class probabilities) | 1, 1 |
/// | `nll`, `multi-margin` | class indices | 1, 1 |
/// | `multilabel-margin` | class-index lists | 1, 1 |
/// | `ctc` | label sequences | 1, 1 |
/// | `mse`, `l1`, `huber`, `smooth-l1` | values, one-hot from class labels | 1, 1 |
/// | `bce`, `bce-with-logits`, `multilabel-soft-margin`, `poisson-nll`, `kl-div` | values | 1, 1 |
/// | `gaussian-nll` | values | 2 (`[mean, var]`), 1 |
/// | `soft-margin`, `hinge-embedding` | signs | 1, 1 |
/// | `margin-ranking`, `cosine-embedding` | signs | 2 (`[x1, x2]`), 1 |
/// | `triplet-margin`, `triplet-margin-with-distance` | values | 1, 2 (`[positive, negative]`) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    /// What the target tensor holds.
    pub kind: TargetKind,
    /// How many tensors the input stacks (1: a plain input, as a model's output).
    pub input_stack: usize,
    /// How many tensors the target stacks (1: a plain target).
    pub target_stack: usize,
}

impl Targets {
    /// Nothing declared: closures and losses that do not say.
    pub const ANY: Targets = Targets::new(TargetKind::Any);

    /// Targets of `kind` for a plain input and target.
    pub const fn new(kind: TargetKind) -> Self {
        Self {
            kind,
            input_stack: 1,
            target_stack: 1,
        }
    }

    /// The same targets for an input stacking `input` tensors and a target
    /// stacking `target` tensors.
    pub const fn stacked(mut self, input: usize, target: usize) -> Self {
        self.input_stack = input;
        self.target_stack = target;
        self
    }

    /// Whether a model's single output can be the input and a dataset's
    /// targets the target (nothing stacked).
    pub fn is_plain(&self) -> bool {
        self.input_stack == 1 && self.target_stack == 1
    }

    /// Whether int64 class labels `[N]` can be the target as they are.
    pub fn takes_class_indices(&self) -> bool {
        matches!(self.kind, TargetKind::ClassIndices { .. } | TargetKind::Any)
    }

    /// Whether floating-point values (regression targets) can be the target
    /// as they are. Class probabilities are not values: cross-entropy answers
    /// `false` (a column of regression targets is no distribution over classes).
    pub fn takes_values(&self) -> bool {
        matches!(
            self.kind,
            TargetKind::Values { .. } | TargetKind::Signs | TargetKind::Any
        )
    }

    /// Whether int64 class labels become one-hot float vectors for this loss
    /// (what `kiln train` does for the regression losses on class data).
    pub fn one_hot_from_classes(&self) -> bool {
        matches!(
            self.kind,
            TargetKind::Values {
                one_hot_from_classes: true
            }
        )
    }
}

/// The kind of target a loss compares its input with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// int64 class indices: `[N]` for an input `[N, C]` (`[N, d1, ...]` for
    /// `[N, C, d1, ...]`). With `probabilities`, floating class
    /// probabilities shaped like the input are accepted too (cross-entropy).
    ClassIndices {
        /// Also takes class probabilities shaped like the input.
        probabilities: bool,
    },
    /// int64 class indices per sample, shaped like the input, ended by -1
    /// (multilabel-margin).
    ClassIndexLists,
    /// int64 label sequences padded with the blank label, `[N, S]` (ctc).
    LabelSequences,
    /// Floating values shaped like (or broadcastable with) the input.
    Values {
        /// With class-label data, compare against one-hot vectors of the
        /// labels (mse, l1, huber, smooth-l1).
        one_hot_from_classes: bool,
    },
    /// Floating labels +1 or -1.
    Signs,
    /// Not declared: anything is passed as it is.
    Any,
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TargetKind::ClassIndices {
                probabilities: true,
            } => "class indices (int64) or class probabilities",
            TargetKind::ClassIndices {
                probabilities: false,
            } => "class indices (int64)",
            TargetKind::ClassIndexLists => "lists of class indices (int64, ended by -1)",
            TargetKind::LabelSequences => "label sequences (int64, padded with the blank label)",
            TargetKind::Values { .. } => "floating-point values",
            TargetKind::Signs => "labels +1 or -1",
            TargetKind::Any => "any targets",
        })
    }
}
