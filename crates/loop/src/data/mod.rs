//! Data: IDX and CSV files, in-memory datasets, and the PyTorch-seeded
//! [`DataLoader`].
pub mod dataset;
pub mod idx;
pub mod loader;
pub mod source;
pub mod tabular;

pub use dataset::Dataset;
pub use loader::{Batch, Batches, DataLoader};
