//! Data: IDX, CSV and safetensors files, in-memory datasets, and the PyTorch-seeded
//! [`DataLoader`].
pub mod dataset;
pub mod idx;
pub mod loader;
pub mod meta;
pub mod pickle;
pub mod source;
pub mod tabular;
pub mod tensors;
pub mod tokens;

pub use dataset::{Dataset, InputTransform};
pub use loader::{Batch, Batches, DataLoader};
