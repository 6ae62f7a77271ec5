//! kiln-tensor: the only door to libtorch in kiln.
//!
//! Everything that names libtorch or tch internals lives here; the other kiln
//! crates use what this crate re-exports ([`tch`], [`Tensor`], [`Kind`],
//! [`Device`]). It provides:
//! - [`Error`]: one typed error for libtorch failures and invalid arguments;
//! - [`device`]: parsing `auto | cpu | cuda | cuda:N` into a checked [`Device`];
//! - [`cuda`]: the CUDA libraries, loaded at run time in one place, and the
//!   CUDA runtime's streams and events; [`nccl`]: NCCL collectives on CUDA
//!   tensors (data-parallel training on GPUs);
//! - [`rng`]: seeding and the exact random draws PyTorch's `DataLoader` and
//!   `RandomSampler` make, so a seed gives the same numbers as in PyTorch;
//! - [`init`]: PyTorch's default initialisers (`nn.Linear` and `nn.Conv2d`'s
//!   `reset_parameters`);
//! - [`ops`]: the few libtorch calls tch does not wrap (`add_` with `alpha`,
//!   `grad = None`, multi-tensor kernels), through a small C++ shim;
//! - [`io`]: atomic file writes and safetensors I/O;
//! - [`params`]: a `VarStore`'s parameters by name, in creation order.
//! - [`datafile`]: [`datafile::DataFile`] and [`datafile::StoredArray`], data files read in pieces, resident memory kept flat;
//! - [`shared`]: [`shared::SharedTensor`], a tensor several threads read at once;
//! - [`spec`]: `name:key=value,...` component spec strings for registries;
//! - [`dtype`]: libtorch's default dtype (`torch.set_default_dtype`).
//! - [`memory`]: kiln's CPU allocator (huge-page arenas, blocks reused per size);
//! - [`jit`]: TorchScript modules loaded for training ([`jit::ScriptModule`]).
//! - [`profiler`]: libtorch's own profiler (Kineto, `torch.profiler`) writing Chrome traces;
//! - [`autograd`]: activation checkpointing (`torch.utils.checkpoint`);
//! - [`amp`]: mixed precision — autocast regions through libtorch's own
//!   state, the GradScaler kernels, and [`amp::Precision`] (Lightning's names).
#![deny(missing_docs)]

pub mod amp;
pub mod autograd;
pub mod cuda;
pub mod datafile;
pub mod device;
pub mod dtype;
mod error;
pub mod init;
pub mod io;
pub mod jit;
pub mod memory;
pub mod nccl;
pub mod ops;
pub mod params;
pub mod profiler;
pub mod rng;
pub mod shared;
mod shim;
pub mod spec;

pub use dtype::{default_dtype, set_default_dtype};
pub use error::{Error, Result};
pub use tch;
pub use tch::{nn, Device, Kind, Reduction, Tensor};

/// Serialises tests that reseed or restore libtorch's global generator (a
/// checkpoint's recomputation restores it).
#[cfg(test)]
pub(crate) static TEST_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Serialises tests that leave an outermost autocast region (a checkpoint's
/// recomputation does too): that clears libtorch's weight-cast cache, which
/// is global to the process, while another test may be reading it.
#[cfg(test)]
pub(crate) static TEST_AUTOCAST: std::sync::Mutex<()> = std::sync::Mutex::new(());
