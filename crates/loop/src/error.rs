use std::path::PathBuf;

/// Errors from kiln-loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is missing, truncated or malformed; names the file.
    #[error("{path}: {message}")]
    Data {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong and, where possible, what to do.
        message: String,
    },
    /// An argument is out of its domain.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model's forward pass failed.
    #[error("model forward failed: {0}")]
    Model(String),
    /// A loss failed (shapes, targets…).
    #[error(transparent)]
    Loss(#[from] kiln_losses::Error),
    /// An optimizer failed.
    #[error(transparent)]
    Optim(#[from] kiln_optim::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
    /// Writing the report failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<kiln_tensor::tch::TchError> for Error {
    fn from(err: kiln_tensor::tch::TchError) -> Self {
        Error::Tensor(err.into())
    }
}

/// `Result` with kiln-loop's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
