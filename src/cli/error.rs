//! The command-line tool's error: what a command failed with, each layer's error converted
//! into it once, here, and mapped to an exit code once, by [`super::exit_code`]. Only `cli`
//! uses it: the layers below return their own errors (the index's `OpenError`, the reader's
//! `ReadError`, the store's `StoreError`, registering's `RegisterError`, the daemon's
//! `DaemonError`, the API client's `ClientError`). Every failure names the file it concerns.

use std::path::PathBuf;

use crate::addon::register::RegisterError;
use crate::daemon::DaemonError;

/// An addonfs failure, with the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// An archive or its index could not be opened, scanned, built, loaded or written (the
    /// index layer's own error, naming its file).
    #[error(transparent)]
    Open(#[from] crate::index::open::OpenError),
    /// A path was not found in the archive.
    #[error("{}: no such entry: {entry}", archive.display())]
    NotFound {
        /// The archive.
        archive: PathBuf,
        /// The path asked for.
        entry: String,
    },
    /// Reading an entry's bytes failed.
    #[error(transparent)]
    Read(#[from] crate::reader::ReadError),
    /// An add-on broke a registry rule (the message lists every problem).
    #[error("{0}")]
    Invalid(String),
    /// The state directory is locked by another process.
    #[error(transparent)]
    Locked(#[from] crate::addon::LockError),
    /// A request to a running daemon's API failed.
    #[error(transparent)]
    Api(#[from] crate::api::ClientError),
    /// Bad usage (a directory where a file was expected, say).
    #[error("{0}")]
    Usage(String),
    /// No add-on matches what an admin command named (exit code 4, like a missing entry).
    #[error("{0}")]
    NoSuchAddon(String),
    /// The daemon could not do its work: listen on its address (a port in use), start its
    /// runtime, or build its mount's namespace. An environment failure (exit code 1), not bad
    /// usage.
    #[error("{0}")]
    Daemon(String),
}

impl From<crate::addon::StoreError> for Error {
    /// A store's I/O error stays an I/O error on its file, a lock conflict stays a lock
    /// conflict, an unknown add-on is "no such add-on", a failed, taken or damaged store is an
    /// environment failure; everything else is a broken registry rule.
    fn from(e: crate::addon::StoreError) -> Error {
        use crate::addon::StoreError;
        match e {
            StoreError::Io { path, source } => Error::Io { path, source },
            StoreError::Locked(e) => Error::Locked(e),
            e @ StoreError::NotFound(_) => Error::NoSuchAddon(e.to_string()),
            // The store itself failed, is taken, or is damaged: an environment failure.
            e @ (StoreError::Backend { .. }
            | StoreError::Open(_)
            | StoreError::Catalog { .. }
            | StoreError::WriterHeld { .. }
            | StoreError::Fenced { .. }
            | StoreError::ReadOnly(_)) => Error::Daemon(e.to_string()),
            other => Error::Invalid(other.to_string()),
        }
    }
}

impl From<RegisterError> for Error {
    /// Registering's failures keep their kind: an I/O error on its file, a broken rule, the
    /// index's error, the store's (converted as the store's own are).
    fn from(e: RegisterError) -> Error {
        match e {
            RegisterError::Io { path, source } => Error::Io { path, source },
            RegisterError::Invalid(message) => Error::Invalid(message),
            RegisterError::Open(e) => Error::Open(e),
            RegisterError::Store(e) => Error::from(e),
        }
    }
}

impl From<DaemonError> for Error {
    /// The daemon's failures keep their kind: an I/O error on its file, a malformed keys file is
    /// bad usage, the store's, index's and reader's errors as their own are converted, and what
    /// kept the daemon from its work (a port in use) is an environment failure.
    fn from(e: DaemonError) -> Error {
        match e {
            DaemonError::Io { path, source } => Error::Io { path, source },
            DaemonError::BadKeyFile(message) => Error::Usage(message),
            DaemonError::Store(e) => Error::from(e),
            DaemonError::Open(e) => Error::Open(e),
            DaemonError::Read(e) => Error::Read(e),
            DaemonError::BadStore(e) => Error::Usage(e.to_string()),
            DaemonError::BadTls(e) => Error::Usage(e.to_string()),
            DaemonError::Locked(e) => Error::Locked(e),
            e @ DaemonError::Cache(_) => Error::Daemon(e.to_string()),
            DaemonError::Failed(message) => Error::Daemon(message),
        }
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}
