//! The crate's one error type.

/// What the dispatcher can fail at, with the context a caller needs in the message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("queue ({backend}): {reason}")]
    Queue {
        backend: &'static str,
        reason: String,
    },
    #[error("registry ({backend}): {reason}")]
    Registry {
        backend: &'static str,
        reason: String,
    },
    #[error("{what} did not answer within {ms} ms")]
    Timeout { what: &'static str, ms: u64 },
    #[error("link: {0}")]
    Link(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
