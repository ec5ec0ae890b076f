//! The library's error type: every failure names the file and says what was expected and found.

use std::path::{Path, PathBuf};

use crate::pickle::PickleError;

/// What went wrong, without the file name (see [`Error`]).
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a torch checkpoint.
    #[error("not a PyTorch checkpoint: {0}")]
    NotACheckpoint(String),
    /// The container (zip, legacy stream) is malformed or truncated.
    #[error("{0}")]
    Malformed(String),
    /// The pickle could not be executed.
    #[error("{member} {source}")]
    Pickle {
        /// Which pickle (`data.pkl`, `main pickle`, …).
        member: String,
        /// Where and why.
        source: PickleError,
    },
    /// A tensor cannot be converted as declared.
    #[error("tensor {name:?}{}: {msg}", storage.as_ref().map(|s| format!(" (storage {s:?})")).unwrap_or_default())]
    Tensor {
        /// The tensor's name in the output.
        name: String,
        /// The storage key it views, when known.
        storage: Option<String>,
        /// What was expected and what was found.
        msg: String,
    },
    /// A valid checkpoint that holds something this tool cannot convert.
    #[error("{0}")]
    Unsupported(String),
    /// The selection asked for does not exist or holds nothing to write.
    #[error("{0}")]
    Selection(String),
    /// The file names globals (or opcode shapes) that would run code in a normal unpickler.
    /// Nothing was called; the CLI maps this to exit code 3.
    #[error("refusing a file that references globals that would run code in a normal unpickler: {}; nothing was executed (pass --allow-dangerous to convert it anyway)", globals.join(", "))]
    Dangerous {
        /// The names, each with its class, opcode, byte offset and pickle.
        globals: Vec<String>,
    },
    /// Under `--strict`, the file names globals outside the known set (none of them dangerous).
    /// Nothing was called; the CLI maps this to exit code 3.
    #[error("refusing a file that references globals outside the known set (--strict): {}; nothing was executed (pass --allow-dangerous to convert it anyway, or drop --strict)", globals.join(", "))]
    UnknownUnderStrict {
        /// The names, each with its class, opcode, byte offset and pickle.
        globals: Vec<String>,
    },
    /// A configured bound was exceeded; the message names the limit and the flag that raises it.
    #[error("{0}")]
    LimitExceeded(String),
    /// The output exists and `overwrite` was not asked for.
    #[error("output {0} already exists (pass --overwrite to replace it)")]
    OutputExists(PathBuf),
    /// The output exists but is not what this conversion would write (other tensors, older than
    /// its source, incomplete); `overwrite` was not asked for.
    #[error("the output exists but {0}; pass --overwrite to replace it")]
    OutputDiffers(String),
    /// A written output, re-read, is not what was meant to be written.
    #[error("re-reading the output failed: {0}")]
    Reread(String),
    /// The run was stopped (SIGINT, SIGTERM) before this output was started.
    #[error("interrupted before it was written")]
    Interrupted,
}

impl ErrorKind {
    /// A pickle stopped by one of the caller's limits is reported as the limit it exceeded
    /// (the same text, which names the flag); every other kind is unchanged.
    pub fn limit_first(self) -> ErrorKind {
        match self {
            ErrorKind::Pickle { member, source } if source.is_limit() => {
                ErrorKind::LimitExceeded(format!("{member} {source}"))
            }
            k => k,
        }
    }
}

/// A failure while handling one file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    /// The file concerned.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

impl Error {
    /// Attaches a file to an error kind.
    pub fn new(path: &Path, kind: ErrorKind) -> Self {
        Error {
            path: path.to_path_buf(),
            kind,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ErrorKind {
    let context = context.into();
    move |source| ErrorKind::Io { context, source }
}
