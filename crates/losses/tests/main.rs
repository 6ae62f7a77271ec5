//! kiln-losses' integration tests, one binary.
//!
//! `conformance` has a binary of its own: it pins ATen's CPU capability and
//! MKL's reproducibility mode through the environment before libtorch runs
//! its first kernel, which holds for the whole process.
mod common;

mod errors;
mod golden;
mod registry;
