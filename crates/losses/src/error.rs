//! Errors of kiln-losses.

/// Errors from a loss: an input or option that breaks one of PyTorch's rules,
/// a libtorch failure, or a bad spec string.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input or option breaks a rule PyTorch enforces; the message names the
    /// loss, the shapes or values involved and the rule.
    #[error("{loss}: {message}")]
    Invalid {
        /// The loss' spec name (`cross-entropy`).
        loss: String,
        /// What is wrong.
        message: String,
    },
    /// libtorch refused the computation of a loss.
    #[error("{loss}: {source}")]
    Kernel {
        /// The loss' spec name.
        loss: String,
        /// What libtorch said (first line, without the C++ backtrace).
        #[source]
        source: kiln_tensor::Error,
    },
    /// An error from kiln-tensor: a bad spec (unknown loss or option, bad
    /// value), libtorch outside a loss kernel.
    #[error(transparent)]
    Tensor(#[from] kiln_tensor::Error),
}

impl From<kiln_tensor::tch::TchError> for Error {
    fn from(err: kiln_tensor::tch::TchError) -> Self {
        Error::Tensor(kiln_tensor::Error::from(err))
    }
}

/// `Result` with kiln-losses' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Invalid`] for loss `loss`.
pub(crate) fn invalid(loss: &str, message: impl Into<String>) -> Error {
    Error::Invalid {
        loss: loss.to_string(),
        message: message.into(),
    }
}
