//! Registering an add-on from local files: the metadata rules, a copy of the tarball indexed in
//! the same pass, the paths checked against that index, then an atomic commit. What `addonfs
//! addons register` does against a local state directory, and how the startup benchmark adds
//! its add-ons. (The HTTP API does the same steps while the upload streams in.)

use std::path::{Path, PathBuf};

use super::metadata::{self, MetadataError, MAX_METADATA_BYTES};
use super::{Record, Store, StoreError};
use crate::archive::ScanOptions;
use crate::index::open::OpenError;

/// Why an add-on could not be registered from local files.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// An I/O error on a named file (the metadata, the tarball).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The add-on broke a registry rule (the message lists every problem, each naming the
    /// metadata file).
    #[error("{0}")]
    Invalid(String),
    /// The tarball could not be indexed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The store refused or failed (a name taken, a conflict, its lock, its files).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegisterError {
    fn io(path: &Path, source: std::io::Error) -> RegisterError {
        RegisterError::Io { path: path.to_path_buf(), source }
    }
}

/// Reads a `metadata.json`, refusing one over [`MAX_METADATA_BYTES`]. At most the limit plus one
/// byte is read, whatever the file is: a device or a FIFO (`/dev/zero`, `<(yes)`) has no size to
/// check up front and would otherwise be read until memory runs out.
pub fn read_metadata(path: &Path) -> Result<Vec<u8>, RegisterError> {
    let bytes = crate::limits::read_at_most(path, MAX_METADATA_BYTES as u64 + 1)
        .map_err(|e| RegisterError::io(path, e))?;
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(RegisterError::Invalid(format!(
            "{}: metadata is larger than the limit of {MAX_METADATA_BYTES} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Every problem, one a line, each prefixed with the metadata file's path.
pub fn problems_text(path: &Path, problems: &[MetadataError]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{}: {p}", path.display())).collect();
    lines.join("\naddonfs: ")
}

/// Registers the add-on described by `metadata_bytes` (read from `metadata_path`, which names
/// it in errors) with the tarball at `tarball`: checks every metadata rule and that no add-on
/// has the name yet, copies the tarball into the store's staging while indexing it in one pass,
/// checks each requested path against the index, and commits. Nothing is left behind on error.
pub fn register(
    store: &Store,
    metadata_path: &Path,
    metadata_bytes: &[u8],
    tarball: &Path,
) -> Result<Record, RegisterError> {
    let meta = metadata::validate(metadata_bytes, None)
        .map_err(|p| RegisterError::Invalid(problems_text(metadata_path, &p)))?;
    store.check_new(&meta)?;
    let staging = store.stage()?;
    let source = std::fs::File::open(tarball).map_err(|e| RegisterError::io(tarball, e))?;
    let index =
        crate::index::open::build_streaming(&staging.tarball(), source, &ScanOptions::default())
            .map_err(|e| match e {
                // Name the file the user gave, not its copy in the staging directory.
                OpenError::Scan { source, .. } => {
                    OpenError::Scan { archive: tarball.to_path_buf(), source }
                }
                other => other,
            })?;
    let problems = meta.check_against(&index);
    if !problems.is_empty() {
        return Err(RegisterError::Invalid(problems_text(metadata_path, &problems)));
    }
    Ok(store.commit(staging, &meta, metadata_bytes, &index)?)
}
