//! kiln-loop: datasets, loaders and the train/test loops.
//!
//! The loops are PyTorch's quickstart `train` and `test` functions as plain
//! Rust functions ([`train()`], [`test()`]), printing the same lines. The
//! [`DataLoader`] consumes libtorch's global generator exactly as
//! `torch.utils.data.DataLoader` does (a base seed per iterator, and for a
//! shuffled loader a sampler seed feeding `randperm`), so a seed gives the
//! same batches, in the same order, as in PyTorch.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod dataset;
pub mod distributed;
mod error;
pub mod idx;
pub mod loader;
pub mod metrics;
pub mod metrics_log;
pub mod plot;
pub mod tabular;
pub mod tensorboard;
pub mod train;
pub mod trainer;

pub use dataset::Dataset;
pub use error::{Error, Result};
pub use loader::{Batch, DataLoader};
pub use train::{test, train, TestSummary, TrainSummary};
pub use trainer::{
    Callback, EvalInfo, FitSummary, Interval, StepInfo, StopReason, Trainer, TrainerConfig,
    TutorialPrinter,
};
