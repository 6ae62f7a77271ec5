//! kiln-losses (interim: the full crate lands from the losses branch).
#![deny(missing_docs)]
use kiln_tensor::{Reduction, Tensor};

/// Errors from kiln-losses.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input.
    #[error("{0}")]
    Invalid(String),
    /// Tensor failure.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
}
impl From<kiln_tensor::tch::TchError> for Error {
    fn from(e: kiln_tensor::tch::TchError) -> Self {
        Error::Tensor(e.into())
    }
}
/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A loss.
pub trait Loss: Send + Sync {
    /// Forward.
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor>;
    /// Name.
    fn name(&self) -> &str;
}

/// Cross entropy.
#[derive(Debug, Default)]
pub struct CrossEntropyLoss;
impl Loss for CrossEntropyLoss {
    fn forward(&self, input: &Tensor, target: &Tensor) -> Result<Tensor> {
        Ok(input.f_cross_entropy_loss::<Tensor>(target, None, Reduction::Mean, -100, 0.0)?)
    }
    fn name(&self) -> &str {
        "cross-entropy"
    }
}

/// Registry.
pub struct LossRegistry;
/// The registry.
pub fn registry() -> LossRegistry {
    LossRegistry
}
impl LossRegistry {
    /// Build.
    pub fn build(&self, spec: &str) -> Result<Box<dyn Loss>> {
        match spec {
            "cross-entropy" => Ok(Box::new(CrossEntropyLoss)),
            _ => Err(Error::Invalid(format!("unknown loss {spec}"))),
        }
    }
    /// Describe.
    pub fn describe(&self) -> String {
        "cross-entropy".into()
    }
}
