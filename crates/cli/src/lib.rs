//! The library half of the `kiln` command: the built-in models and the
//! `train` command as a function, so benches and downstream tools can reuse
//! them. The binary (`src/main.rs`) only parses arguments and reports errors.
#![deny(missing_docs)]

pub mod dist;
pub mod models;
pub mod report;
pub mod run;

/// An error in what the user asked for (exit code 2), as opposed to a failure
/// while doing it (exit code 1).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
