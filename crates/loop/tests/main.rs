//! kiln-loop's integration tests, one binary. Tests that seed or draw from
//! libtorch's global generator (every model initialisation, training and
//! run) hold `common::global_state()`.
mod common;

mod gpt;
mod images;
mod loader;
#[cfg(feature = "plot")]
mod lr_find;
mod metrics_log;
#[cfg(feature = "plot")]
mod plot;
mod profiler;
mod random_split;
mod run;
mod summary;
mod tabular;
#[cfg(feature = "tensorboard")]
mod tensorboard;
mod trainer;
