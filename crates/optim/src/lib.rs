//! kiln-optim: torch.optim for Rust, on libtorch through kiln-tensor.
//!
//! An optimizer is a config plus an object: `SgdConfig { lr: 0.1, ..Default::default() }.build(params)`
//! validates the hyperparameters with PyTorch's messages and returns an
//! [`Sgd`] that implements the object-safe [`Optimizer`] trait, so a program
//! can pick one at run time as a `Box<dyn Optimizer>`. Each update rule is a
//! plain function ([`sgd::sgd_update`]) separate from the bookkeeping of
//! groups and state, like torch.optim's functional API.
#![deny(missing_docs)]

mod error;
pub mod optimizer;
pub mod scheduler;
pub mod sgd;
pub mod swa;

pub use error::{Error, Result};
pub use kiln_tensor::params::NamedParameter;
pub use optimizer::{Optimizer, OptimizerState};
pub use sgd::{Sgd, SgdConfig};
