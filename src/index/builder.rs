//! Builds the tree (inodes + directory entries) from scanned entries, in stream order, with
//! extraction semantics: the last duplicate wins, hard links name the inode their target had
//! when they were seen, and missing parents become implicit directories.

use super::{ArchiveIdentity, Index, IndexError};
use crate::archive::{Compression, ScannedEntry};
use crate::gzip::AccessPoint;

/// Accumulates entries and access points, then serializes them into an [`Index`].
pub struct IndexBuilder {}

impl IndexBuilder {
    /// Starts an empty tree. `default_mtime` is used for implicit directories (and the root, if
    /// the archive has no `./` entry).
    pub fn new(default_mtime: i64) -> Self {
        let _ = default_mtime;
        IndexBuilder {}
    }

    /// Adds one entry (stream order). Returns a warning when the entry is dropped or replaces
    /// something in a way worth reporting (a hard link to a missing target, say).
    pub fn add_entry(&mut self, entry: ScannedEntry) -> Option<String> {
        let _ = entry;
        todo!()
    }

    /// Adds one access point (stream order); its window is compressed right away.
    pub fn add_point(&mut self, point: AccessPoint) {
        let _ = point;
        todo!()
    }

    /// Records a warning to keep with the index.
    pub fn add_warning(&mut self, warning: String) {
        let _ = warning;
        todo!()
    }

    /// Finishes the tree and serializes it.
    pub fn finish(
        self,
        identity: ArchiveIdentity,
        compression: Compression,
        span: u64,
        uncompressed_size: u64,
    ) -> Result<Index, IndexError> {
        let _ = (identity, compression, span, uncompressed_size);
        todo!()
    }
}
