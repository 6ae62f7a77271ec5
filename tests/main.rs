//! kiln's end-to-end tests: one binary (one link, one process) that runs the
//! `kiln` executable and the PyTorch reference programs and compares what
//! they print and write. It does not link libtorch: checkpoints and weights
//! are read by their file formats (`common`).
//!
//! `ddp_batchnorm` is a binary of its own: it is an MPI program (no libtest
//! harness) that `mpirun` starts as its own workers.
mod common;

mod averaging;
mod cli_errors;
mod data;
mod disk_full;
#[cfg(feature = "mpi")]
mod distributed;
mod images;
mod interop;
mod lm;
mod models;
mod predict;
mod resume;
mod run_dir;
mod runs;
mod same_seed;
mod tensorboard;
mod tidy;
mod tools;
mod train_small;
mod tuning;
