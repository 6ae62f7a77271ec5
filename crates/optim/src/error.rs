/// Errors from kiln-optim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hyperparameter is out of its domain; the message is PyTorch's
    /// (`Invalid learning rate: -1`).
    #[error("{0}")]
    InvalidHyperparameter(String),
    /// A group index, hyperparameter name or similar does not exist.
    #[error("{0}")]
    InvalidArgument(String),
    /// Loaded state does not fit this optimizer (missing names, wrong shapes).
    #[error("optimizer state does not fit: {0}")]
    State(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
}

impl From<kiln_tensor::tch::TchError> for Error {
    fn from(err: kiln_tensor::tch::TchError) -> Self {
        Error::Tensor(err.into())
    }
}

/// `Result` with kiln-optim's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
