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
    /// Reading one sample failed (a file that cannot be read or decoded);
    /// names the sample, as its dataset describes it.
    #[error("{sample}: {source}")]
    Sample {
        /// The sample (`sample 7 of data.safetensors`, a file path…).
        sample: String,
        /// Why it could not be read.
        source: Box<Error>,
    },
    /// Writing a file of the run failed (a full disk, permissions); the
    /// message says why and what a resume would continue from.
    #[error("writing {path}: {message}")]
    Write {
        /// The file that could not be written.
        path: PathBuf,
        /// What the operating system said, and the way out.
        message: String,
    },
    /// What the user asked for cannot work (a bad flag value, an unknown
    /// component or option, settings that contradict each other or the
    /// data); the message names the flag. `kiln` exits with code 2.
    #[error("{0}")]
    Usage(String),
    /// A setting cannot work (a count of 0, a negative threshold, a metric
    /// nothing reports, a precision the device or optimizer cannot run);
    /// `setting` is its name in [`crate::TrainerConfig`] (or the run's
    /// configuration), which the run layer turns into the flag's name.
    /// `kiln` exits with code 2.
    #[error("{setting} {message}")]
    Setting {
        /// The setting's name (`accumulate_grad_batches`, `precision`).
        setting: &'static str,
        /// What is wrong: `must be at least 1, got 0`.
        message: String,
    },
    /// An argument is out of its domain.
    #[error("{0}")]
    InvalidArgument(String),
    /// The training loss became NaN or infinite; the message says what was kept.
    #[error("{0}")]
    NonFiniteLoss(String),
    /// A signal stopped the run after a checkpoint; the message says how to resume.
    #[error("{message}")]
    Interrupted {
        /// The signal number (SIGINT 2, SIGTERM 15).
        signal: i32,
        /// What happened and how to resume.
        message: String,
    },
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
    /// The ranks of a data-parallel job disagree: their flags, data or
    /// model differ from rank 0's. `ranks` are the ones that differ; the
    /// message names them. `kiln` exits with code 2.
    #[error("{message}")]
    RankMismatch {
        /// The ranks whose values differ from rank 0's.
        ranks: Vec<usize>,
        /// What differs, naming the ranks.
        message: String,
    },
    /// Writing the report failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<kiln_tensor::tch::TchError> for Error {
    fn from(err: kiln_tensor::tch::TchError) -> Self {
        Error::Tensor(err.into())
    }
}

impl Error {
    /// [`Error::Setting`] for `setting`.
    pub fn setting(setting: &'static str, message: impl Into<String>) -> Self {
        Error::Setting {
            setting,
            message: message.into(),
        }
    }

    /// The error of reading the safetensors file `path` (a state dict, a
    /// data file): the file named once, with `no such file`, the operating
    /// system's reason, or that it is not a readable safetensors file.
    pub(crate) fn safetensors_read(path: &std::path::Path, err: kiln_tensor::Error) -> Self {
        let message = match err {
            kiln_tensor::Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                "no such file".to_string()
            }
            kiln_tensor::Error::Io { source, .. } => source.to_string(),
            // kiln-tensor's own check of the format names the file first.
            kiln_tensor::Error::InvalidArgument(message) => message
                .strip_prefix(&format!("{} is ", path.display()))
                .unwrap_or(&message)
                .to_string(),
            other => format!("not a readable safetensors file ({other})"),
        };
        Error::Data {
            path: path.to_path_buf(),
            message,
        }
    }

    /// The exit code a command-line tool should end with: 2 for a usage
    /// error, 128 + the signal for an interrupt (130 for SIGINT, 143 for
    /// SIGTERM), 1 for any other failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Setting { .. } | Error::RankMismatch { .. } => 2,
            Error::Interrupted { signal, .. } => 128 + signal,
            _ => 1,
        }
    }
}

/// `Result` with kiln-loop's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
