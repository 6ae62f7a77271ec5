//! kiln-tensor's integration tests, one binary.
//!
//! Two tests have binaries of their own, because what they test is
//! process-wide and cannot be undone: `arena_allocator` installs libtorch's
//! CPU allocator, and `serial_kernels` needs a process where nothing has
//! called `set_threads` yet.
mod common;

mod checkpoint;
mod generator;
