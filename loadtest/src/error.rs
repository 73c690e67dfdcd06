//! The load tester's one error type. Problems of single connections (refused, reset, closed by
//! the server, malformed frames) are not errors: they are counted in the report. An [`Error`]
//! means the run itself could not go on.

use std::io;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option is out of range or inconsistent; the message names it.
    #[error("invalid option: {0}")]
    Options(String),
    /// A system call the engine needs failed (creating a ring, an eventfd, a thread).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A worker thread stopped with an error or panicked.
    #[error("worker thread {thread}: {message}")]
    Worker { thread: usize, message: String },
    /// A report given to `corecast loadtest merge` could not be used; the message names the
    /// file and what is wrong with it.
    #[error("merge: {0}")]
    Merge(String),
    /// The report could not be written.
    #[error("writing the report to {path}: {source}")]
    Report {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
