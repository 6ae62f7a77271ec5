//! kiln-optim's integration tests, one binary.
//!
//! `conformance` has a binary of its own: it switches libtorch's
//! process-wide default dtype (`torch.set_default_dtype`) while it runs.
mod common;

mod amp;
mod clip;
mod golden;
mod one_pass;
mod registry;
mod schedulers;
mod state;
