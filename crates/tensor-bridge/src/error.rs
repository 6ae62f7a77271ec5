use std::path::PathBuf;

/// Errors from kiln-tensor: libtorch failures and invalid arguments.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libtorch raised an error (message without its C++ backtrace).
    #[error("libtorch: {0}")]
    Torch(String),
    /// An argument was out of its domain; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
}

impl From<tch::TchError> for Error {
    fn from(err: tch::TchError) -> Self {
        // tch's messages carry a long C++ backtrace after the first line.
        let text = err.to_string();
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("unknown libtorch error");
        let first = first.strip_prefix("Torch(\"").unwrap_or(first);
        Error::Torch(first.trim_end_matches('"').trim().to_string())
    }
}

/// `Result` with kiln-tensor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
