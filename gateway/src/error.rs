//! The crate's one error type.

use std::io;

/// What can stop the gateway from starting or running (connection-level problems never reach
/// here: they close the connection concerned and are counted).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config: {0}")]
    Config(String),
    #[error("io_uring setup on shard {shard}: {source}")]
    Uring { shard: usize, source: io::Error },
    #[error("listening on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
    /// The WSS certificate or key (at start, or on a reload): names the file and the fault.
    #[error("tls: {0}")]
    Tls(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
