//! The tuning crate's one error type.

use std::io;
use std::path::PathBuf;

/// What can go wrong while checking, applying or generating. Reading the host never fails
/// (a value that cannot be read is reported as unknown); these are the failures that stop a
/// command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No profile has this name.
    #[error("unknown profile {name:?} (profiles: {known})")]
    UnknownProfile { name: String, known: String },
    /// A profile file does not parse or is rejected by the real config loader.
    #[error("profile {profile}, {file}: {message}")]
    Profile {
        profile: String,
        file: String,
        message: String,
    },
    /// The host cannot run the profile's layout (for `generate`).
    #[error("profile {profile} on this host: {message}")]
    Layout { profile: String, message: String },
    /// A file could not be written (a sysctl under --apply, a generated config).
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The output (stdout) could not be written.
    #[error("writing the output: {0}")]
    Output(#[source] io::Error),
}

/// The tuning crate's result.
pub type Result<T> = std::result::Result<T, Error>;
