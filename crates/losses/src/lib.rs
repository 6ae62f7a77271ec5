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
//! [`registry`] names all 21 by spec string
//! (`cross-entropy:label_smoothing=0.1,ignore_index=3`):
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
pub use registry::{registry, LossBuilder, LossEntry, LossOption, LossRegistry};
pub use regression::*;

/// A loss function: object safe, so a program can pick one at run time as a
/// `Box<dyn Loss>`.
pub trait Loss: Send + Sync {
    /// Loss of `input` against `target`.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor>;
    /// Name as spec strings use it (`cross-entropy`).
    fn name(&self) -> &str;
}

/// A closure is a Loss (name `custom`).
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
