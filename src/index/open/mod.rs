//! Building an index from an archive file, and finding, checking and reusing a persisted one.
//!
//! # Files
//!
//! This file finds, checks and reuses a persisted index ([`open`], [`load_matching`]) and
//! holds the layer's error; `build` indexes an archive file on disk; `streaming` writes an
//! incoming archive and indexes it in the same pass; `scan` is the scan both builds run, with
//! its thread that makes the access points' windows sparse; `chunks` the checksums of the
//! archive's chunks that thread takes.

mod build;
mod chunks;
mod scan;
mod streaming;

#[cfg(test)]
mod tests;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ArchiveIdentity, Index, IndexError};
use crate::archive::{self, ScanError, ScanOptions};

pub use build::build;
pub use streaming::build_streaming;

/// Why an archive's index could not be found, built, loaded or written, or its archive opened:
/// each names the file it concerns. The index layer's own error, so that it and the reader
/// above it import nothing of the CLI's top-level error (`crate::cli::Error` converts it).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An I/O error on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The archive could not be scanned.
    #[error("{}: {source}", archive.display())]
    Scan {
        /// The archive.
        archive: PathBuf,
        /// Why.
        #[source]
        source: ScanError,
    },
    /// The index could not be built, loaded or written.
    #[error("{}: {source}", path.display())]
    Index {
        /// The index file (or the archive, when building).
        path: PathBuf,
        /// Why.
        #[source]
        source: IndexError,
    },
}

impl OpenError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> OpenError {
        OpenError::Io { path: path.into(), source }
    }
}

/// The suffix of an index file kept beside its archive.
pub const INDEX_SUFFIX: &str = ".addonfs-index";

/// A callback told how many compressed bytes were read so far (for progress bars).
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// How [`open`] obtained the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A persisted index matched the archive and was loaded.
    Loaded,
    /// The index was built now; `reason` says why an existing one was not used.
    Built {
        /// Why (no index yet, stale, corrupt, forced, ...).
        reason: String,
        /// Whether the new index could be written to disk.
        persisted: bool,
    },
}

/// The outcome of [`open`].
pub struct Opened {
    /// The index.
    pub index: Index,
    /// Where it is (or would be) stored.
    pub path: PathBuf,
    /// How it was obtained.
    pub origin: Origin,
    /// Time spent loading or building (and writing).
    pub elapsed: Duration,
}

/// The identity of `archive` as the file system shows it now (the digest is left zero: it is
/// only known after a full pass).
pub fn current_identity(meta: &std::fs::Metadata) -> ArchiveIdentity {
    ArchiveIdentity {
        size: meta.len(),
        mtime_sec: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        digest: [0; 32],
    }
}

/// The default place of the index of `archive`: beside it, named `<archive>.addonfs-index`.
pub fn default_index_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(INDEX_SUFFIX);
    PathBuf::from(name)
}

/// Loads the index at `index_path` if it belongs to `archive` as it is now and was taken at
/// `span`; otherwise says why not.
pub fn load_matching(archive: &Path, index_path: &Path, span: u64) -> Result<Index, IndexError> {
    let meta = std::fs::metadata(archive)?;
    let index = Index::load(index_path)?;
    let want = current_identity(&meta);
    let have = ArchiveIdentity { digest: [0; 32], ..index.identity() };
    if have != want {
        return Err(IndexError::Stale(format!(
            "built for a file of {} bytes modified at {}.{:09}, the archive now has {} bytes \
             modified at {}.{:09}",
            have.size, have.mtime_sec, have.mtime_nsec, want.size, want.mtime_sec, want.mtime_nsec
        )));
    }
    if index.compression() == archive::Compression::Gzip && index.span() != span {
        return Err(IndexError::Stale(format!(
            "built with a span of {} bytes, {} asked for",
            index.span(),
            span
        )));
    }
    Ok(index)
}

/// Loads the index of `archive` from `index_path` (default: beside the archive) if it is
/// valid and current, else builds it and tries to persist it. `force` always rebuilds.
pub fn open(
    archive: &Path,
    index_path: Option<&Path>,
    opts: &ScanOptions,
    force: bool,
    progress: Option<Progress<'_>>,
) -> Result<Opened, OpenError> {
    let start = Instant::now();
    let path = index_path.map(Path::to_path_buf).unwrap_or_else(|| default_index_path(archive));
    let reason = if force {
        "rebuild forced".to_string()
    } else {
        match load_matching(archive, &path, opts.span) {
            Ok(index) => {
                return Ok(Opened { index, path, origin: Origin::Loaded, elapsed: start.elapsed() })
            }
            Err(IndexError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                // Distinguish a missing archive from a missing index.
                std::fs::metadata(archive).map_err(|e| OpenError::io(archive, e))?;
                "no index yet".to_string()
            }
            Err(e) => e.to_string(),
        }
    };
    let index = build(archive, opts, progress)?;
    let persisted = match index.write(&path) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(index = %path.display(), error = %e, "cannot persist the index; it stays in memory");
            false
        }
    };
    Ok(Opened {
        index,
        path,
        origin: Origin::Built { reason, persisted },
        elapsed: start.elapsed(),
    })
}
