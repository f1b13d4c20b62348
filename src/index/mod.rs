//! The index: an immutable tree of inodes and directory entries plus the gzip access points,
//! built in one pass over the archive, persisted in a versioned, self-checking binary format
//! (see `docs/index-format.md`) and served straight from its bytes.

pub mod builder;
pub mod format;
pub mod open;

use std::path::Path;

pub use builder::IndexBuilder;

use crate::archive::{Compression, EntryKind, SparseSegment};

/// An inode number. The root is [`ROOT_INO`]; numbers are dense, derived from the index, and
/// the same every time the same archive is indexed.
pub type Ino = u64;

/// The inode number of the archive's root directory (FUSE's root id).
pub const ROOT_INO: Ino = 1;

/// What binds an index to one archive file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveIdentity {
    /// Archive file size in bytes.
    pub size: u64,
    /// Archive file modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Archive file modification time, nanoseconds part.
    pub mtime_nsec: u32,
    /// SHA-256 of the archive file's bytes, computed during the indexing pass.
    pub digest: [u8; 32],
}

/// The attributes of one inode, as `stat` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Kind (never [`EntryKind::Hardlink`]: hard links are names of the inode they link to).
    pub kind: EntryKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: u32,
    /// Size in bytes (symlinks: the target's length).
    pub size: u64,
    /// Number of names (files) or `2 + subdirectories` (directories).
    pub nlink: u32,
    /// Device numbers (major, minor).
    pub rdev: (u32, u32),
}

/// Where an inode's bytes are in the uncompressed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// No bytes.
    None,
    /// `size` bytes from this offset.
    Contiguous(u64),
    /// Sparse runs, sorted by logical offset; the rest reads as zeros.
    Sparse(Vec<SparseSegment>),
}

/// One access point as stored (its window is decompressed on demand by
/// [`Index::point_window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointInfo {
    /// Offset in the uncompressed stream.
    pub uncompressed: u64,
    /// Offset in the compressed file.
    pub compressed: u64,
    /// Bits to prime from the byte before `compressed`.
    pub bits: u8,
    /// False for points at a gzip member start (no window needed).
    pub has_window: bool,
}

/// Size figures of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Number of inodes (including the root and implicit directories).
    pub inodes: u64,
    /// Number of directory entries (names).
    pub dirents: u64,
    /// Number of gzip access points.
    pub points: u64,
    /// Size of the serialized index in bytes.
    pub bytes: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
}

/// Why an index could not be loaded or built. A loader error always means "rebuild".
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading or writing the index file failed.
    #[error("index I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not an addonfs index, or are corrupt or truncated.
    #[error("index corrupt: {0}")]
    Corrupt(String),
    /// The index was written by another format version.
    #[error("index format version {found} is not supported (expected {expected})")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The index belongs to another archive, or the archive changed since it was built.
    #[error("index is stale: {0}")]
    Stale(String),
    /// The scanned entries cannot form a tree (too many inodes, say).
    #[error("cannot build index: {0}")]
    Build(String),
}

/// A loaded (or freshly built) index, served from its serialized bytes.
pub struct Index {
    bytes: Vec<u8>,
}

impl Index {
    /// Parses and checks serialized index bytes (magic, version, checksums, bounds).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Index, IndexError> {
        let _ = bytes;
        todo!()
    }

    /// Reads and checks the index file at `path`.
    pub fn load(path: &Path) -> Result<Index, IndexError> {
        Index::from_bytes(std::fs::read(path)?)
    }

    /// The serialized bytes, exactly as [`Index::write`] stores them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the index to `path` atomically (temporary file, fsync, rename).
    pub fn write(&self, path: &Path) -> Result<(), IndexError> {
        let _ = path;
        todo!()
    }

    /// The archive this index describes.
    pub fn identity(&self) -> ArchiveIdentity {
        todo!()
    }

    /// How the archive stores its tar stream.
    pub fn compression(&self) -> Compression {
        todo!()
    }

    /// The span the access points were taken at.
    pub fn span(&self) -> u64 {
        todo!()
    }

    /// Size figures.
    pub fn stats(&self) -> IndexStats {
        todo!()
    }

    /// Non-fatal problems found while indexing (entries dropped, say), kept with the index.
    pub fn warnings(&self) -> Vec<String> {
        todo!()
    }

    /// The attributes of `ino`, or `None` if no such inode.
    pub fn attr(&self, ino: Ino) -> Option<Attr> {
        let _ = ino;
        todo!()
    }

    /// The inode named `name` in directory `dir`.
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        let _ = (dir, name);
        todo!()
    }

    /// The inode at a normalized relative `path` (empty or `/`-only means the root); leading
    /// and repeated slashes are ignored. Symlinks are not followed.
    pub fn resolve(&self, path: &[u8]) -> Option<Ino> {
        let _ = path;
        todo!()
    }

    /// The parent directory of `dir` (the root is its own parent).
    pub fn parent(&self, dir: Ino) -> Option<Ino> {
        let _ = dir;
        todo!()
    }

    /// The number of entries in directory `dir`.
    pub fn child_count(&self, dir: Ino) -> usize {
        let _ = dir;
        todo!()
    }

    /// The entries of directory `dir`, sorted by name, starting after the first `skip`.
    pub fn children(&self, dir: Ino, skip: usize) -> impl Iterator<Item = (&[u8], Ino)> + '_ {
        let _ = (dir, skip);
        std::iter::empty::<(&[u8], Ino)>()
    }

    /// The target of symlink `ino`.
    pub fn symlink_target(&self, ino: Ino) -> Option<&[u8]> {
        let _ = ino;
        todo!()
    }

    /// The extended attributes of `ino` (name, value), in archive order.
    pub fn xattrs(&self, ino: Ino) -> Vec<(&[u8], &[u8])> {
        let _ = ino;
        todo!()
    }

    /// Where the bytes of `ino` are.
    pub fn data(&self, ino: Ino) -> Data {
        let _ = ino;
        todo!()
    }

    /// Number of gzip access points.
    pub fn point_count(&self) -> usize {
        todo!()
    }

    /// Access point `i`.
    pub fn point(&self, i: usize) -> PointInfo {
        let _ = i;
        todo!()
    }

    /// The index of the last access point at or before uncompressed offset `offset`.
    pub fn point_for(&self, offset: u64) -> Option<usize> {
        let _ = offset;
        todo!()
    }

    /// The window of access point `i`, decompressed and checked.
    pub fn point_window(&self, i: usize) -> Result<Vec<u8>, IndexError> {
        let _ = i;
        todo!()
    }
}
