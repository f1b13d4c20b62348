//! The daemon's error: why `serve` could not start or keep running. The CLI converts it to
//! its top-level error and exit code (a malformed keys file is bad usage, a port in use an
//! environment failure).

use std::path::PathBuf;

use crate::addon::backend::BackendError;
use crate::addon::{LockError, StoreError};
use crate::daemon::cache::CacheError;
use crate::index::open::OpenError;
use crate::reader::ReadError;

/// Why the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// An I/O error on a named file (the keys file, the mount point).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The keys file given is malformed (the message names it).
    #[error("{0}")]
    BadKeyFile(String),
    /// The store failed (its lock held by another process, its files).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An add-on's index could not be loaded or built.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// An add-on's archive could not be opened.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The TLS certificate or key could not be loaded (bad usage: the message names the file).
    #[error(transparent)]
    BadTls(#[from] crate::api::tls::TlsError),
    /// The store's URL names no store addonfs can open (bad usage).
    #[error(transparent)]
    BadStore(#[from] BackendError),
    /// Another process holds a directory this daemon must own alone (a node's cache).
    #[error(transparent)]
    Locked(#[from] LockError),
    /// A node's cache directory could not be opened.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The daemon could not do its work: listen on its address (a port in use), start its
    /// runtime, or build its mount's namespace.
    #[error("{0}")]
    Failed(String),
}

impl DaemonError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> DaemonError {
        DaemonError::Io { path: path.into(), source }
    }
}
