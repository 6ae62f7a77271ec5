//! kiln-loop: data, models, the training loop and runs.
//!
//! - [`tutorial`]: PyTorch's quickstart `train` and `test` functions as plain
//!   Rust, printing the same lines — the reference loop.
//! - [`Trainer`]: the loop a real run needs (limits, accumulation, clipping,
//!   schedulers, evaluation, early stopping, checkpoints and bit-exact
//!   resume, interrupts, data parallelism), with one step path for every
//!   optimizer and [`Callback`]s for everything that watches it
//!   ([`loggers`]).
//! - [`Model`]: what the Trainer trains ([`models`]).
//! - [`data`]: IDX and CSV data and the [`DataLoader`], which consumes
//!   libtorch's global generator exactly as `torch.utils.data.DataLoader`
//!   does, so a seed gives the same batches in the same order as PyTorch.
//! - [`run`]: what a run is on disk and from flags: its directory, saved
//!   configuration, seed, resume, and building every component from a
//!   [`run::RunConfig`]. The `kiln` CLI is a thin layer over it.
//! - [`lr_find`]: Lightning's learning-rate finder (`kiln lr-find`).
//! - [`profiler`]: `--profile simple` (Lightning's table from the fit's own
//!   timings) and `--profile trace` (libtorch's profiler, a Chrome trace).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod checkpoint;
pub mod data;
pub mod distributed;
mod error;
pub mod eval;
pub mod json_f64;
pub mod lm;
pub mod loggers;
pub mod lr_find;
pub mod metrics;
pub mod models;
pub mod notice;
#[cfg(feature = "plot")]
pub mod plot;
pub mod profiler;
pub mod run;
pub mod step;
pub mod trainer;
pub mod tutorial;

pub use data::{Batch, DataLoader, Dataset, Sample};
pub use error::{Error, Result};
pub use models::Model;
pub use notice::{Notice, Notices};
pub use step::{LossStep, Step, StepOutput};
pub use trainer::{
    BeforeStep, Callback, EvalInfo, FitSummary, FitTimings, Interval, Loaders, PhaseTime, StepInfo,
    StepTimings, StopReason, Trainer, TrainerConfig,
};
pub use tutorial::{test, train, TestSummary, TrainSummary};
