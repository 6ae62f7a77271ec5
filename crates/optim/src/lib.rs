//! kiln-optim: torch.optim for Rust, on libtorch through kiln-tensor.
//!
//! An optimizer is a config plus an object: `SgdConfig { lr: 0.1, ..Default::default() }.build(params)`
//! validates the hyperparameters with PyTorch's messages and returns an
//! [`Sgd`] that implements the object-safe [`Optimizer`] trait, so a program
//! can pick one at run time as a `Box<dyn Optimizer>` (see [`registry`]).
//!
//! Every optimizer except LBFGS is a [`rule::Grouped`] over a config that
//! implements [`rule::Rule`]: the config carries the hyperparameter table and
//! a per-tensor update function that performs PyTorch's single-tensor
//! (default CPU) path operation for operation, so the numbers are PyTorch's
//! bit for bit; `Grouped` does param groups (also chosen by name pattern or
//! number of dimensions, [`groups`]), state
//! keyed by parameter name, skipping parameters without gradients and state
//! dicts. SGD, Adam, AdamW and Adagrad also have `fused: true`, libtorch's
//! one-pass multi-tensor kernels (PyTorch's `fused=True` numbers).
//!
//! State dicts are saved with [`OptimizerState::save`] as a safetensors file
//! plus a JSON file, both written atomically.
//!
//! # Parity and deliberate differences from torch.optim
//!
//! The golden tests (`tests/golden/make_golden.py`) check every optimizer
//! and flag combination against PyTorch 2.11 in float64 and float32: the
//! trajectories are identical bit for bit, also after a save/load in the
//! middle. The conformance test (`tests/conformance/make_optim_db.py`,
//! `make conformance`) replays PyTorch's own `optim_db` the same way, also
//! under the default dtype float64 ([`kiln_tensor::set_default_dtype`]):
//! NAdam's `mu_product` and ASGD's `eta` and `mu` are kept in
//! `torch.get_default_dtype()`, as in PyTorch. Differences, all deliberate:
//! - Step counters are `f64` (PyTorch's float32 `step` tensor stops counting
//!   at 2^24 steps); the fused kernels get float32 step tensors as in PyTorch.
//! - Not implemented: `foreach`, `capturable`, `differentiable`, complex
//!   parameters (refused at construction, also where PyTorch refuses only at
//!   the first step), tensor-valued `lr`/`betas`, sparse gradients for
//!   Adagrad (SparseAdam has them).
//! - A parameter name given twice is an error (state is keyed by name);
//!   PyTorch only warns about a repeated tensor in one group.
//! - LBFGS's state dict has no `al` (scratch space of the two-loop
//!   recursion, rewritten before every read).
//! - State is keyed by parameter *name* and stored as safetensors + JSON
//!   (not PyTorch's pickled, id-keyed `state_dict`); LBFGS's state is over the
//!   flattened parameters (`lbfgs.d`, `lbfgs.old_dirs.NNNNNN`…) and checks
//!   the parameter names and shapes on load.
//! - Hyperparameters that are not numbers read as numbers through
//!   [`Optimizer::hyperparameter`]: booleans as 0/1, Adafactor's `eps.0 =
//!   None` as NaN, Muon's `adjust_lr_fn` and LBFGS's `line_search_fn` as 0/1.
//! - [`Optimizer::set_hyperparameter`] validates like the constructor
//!   (PyTorch accepts anything assigned to `param_groups`).
//! - Fused SGD with momentum where only some parameters have a momentum
//!   buffer yet runs the kernel twice (first-step and later parameters);
//!   PyTorch assumes all or none.
//! - Results are PyTorch's for the same intra-op thread count (reductions in
//!   `clip_grad_norm_`, Adafactor and Muon may depend on it, in both).
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// Validation mirrors PyTorch's `not 0.0 <= x`, which is true for NaN; the
// negated comparisons are deliberate.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod adadelta;
pub mod adafactor;
pub mod adagrad;
pub mod adam;
pub mod adamax;
pub mod amp;
pub mod asgd;
pub mod clip;
mod error;
pub mod groups;
pub mod lbfgs;
pub mod muon;
pub mod nadam;
pub mod optimizer;
pub mod radam;
pub mod registry;
pub mod rmsprop;
pub mod rprop;
pub mod rule;
pub mod scheduler;
pub mod sgd;
pub mod sparse_adam;
pub mod swa;
mod util;

pub use adadelta::{Adadelta, AdadeltaConfig};
pub use adafactor::{Adafactor, AdafactorConfig};
pub use adagrad::{Adagrad, AdagradConfig};
pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use adamax::{Adamax, AdamaxConfig};
pub use amp::{GradScaler, GradScalerConfig, GradScalerState};
pub use asgd::{Asgd, AsgdConfig};
pub use clip::{clip_grad_norm_, clip_grad_value_};
pub use error::{Error, Result};
pub use groups::{glob_match, GroupOverride, Selector};
pub use kiln_tensor::params::NamedParameter;
pub use lbfgs::{Lbfgs, LbfgsConfig};
pub use muon::{Muon, MuonConfig};
pub use nadam::{NAdam, NAdamConfig};
pub use optimizer::{Optimizer, OptimizerState, STATE_SCALARS_FILE, STATE_TENSORS_FILE};
pub use radam::{RAdam, RAdamConfig};
pub use registry::{optimizers, rule_entry, OptimizerBuild, OptimizerEntry, OptimizerRegistry};
pub use rmsprop::{Rmsprop, RmspropConfig};
pub use rprop::{Rprop, RpropConfig};
pub use rule::{Grouped, Hyperparameter, ParamGroup, ParamState, Rule, RuleOptions};
pub use sgd::{Sgd, SgdConfig};
pub use sparse_adam::{SparseAdam, SparseAdamConfig};
pub use util::py_float;
