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
//! (`cross-entropy:label_smoothing=0.1,ignore_index=3`).
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
