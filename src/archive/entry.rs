//! What the scanner records for each tar entry.

/// The kind of a tar entry, as extraction would create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (including contiguous and sparse files).
    File,
    /// A directory.
    Dir,
    /// A symbolic link; the target is in [`ScannedEntry::link_target`].
    Symlink,
    /// A hard link to an earlier entry; the (normalized) target path is in
    /// [`ScannedEntry::link_target`].
    Hardlink,
    /// A character device.
    CharDev,
    /// A block device.
    BlockDev,
    /// A named pipe.
    Fifo,
}

impl EntryKind {
    /// A human name, as `stat` says it ("regular file", "directory", ...).
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "regular file",
            EntryKind::Dir => "directory",
            EntryKind::Symlink => "symbolic link",
            EntryKind::Hardlink => "hard link",
            EntryKind::CharDev => "character device",
            EntryKind::BlockDev => "block device",
            EntryKind::Fifo => "fifo",
        }
    }
}

/// One run of data of a sparse file: `len` bytes at logical offset `logical` are stored at
/// `stream_offset` in the uncompressed tar stream. Everything not covered reads as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseSegment {
    /// Offset in the file as extracted.
    pub logical: u64,
    /// Length of the run in bytes.
    pub len: u64,
    /// Offset of the run's first byte in the uncompressed tar stream.
    pub stream_offset: u64,
}

/// Where an entry's bytes live in the uncompressed tar stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataLayout {
    /// No data (directories, links, devices, empty files).
    None,
    /// `size` contiguous bytes starting at this offset of the uncompressed stream.
    Contiguous {
        /// Offset of the first data byte in the uncompressed tar stream.
        offset: u64,
    },
    /// A sparse file: data runs sorted by logical offset, holes read as zeros.
    Sparse(Vec<SparseSegment>),
}

/// One entry of the archive, fully decoded (long names, PAX records and sparse maps applied) and
/// with its path normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedEntry {
    /// Normalized path relative to the archive root: no leading `/` or `./`, no `.` or `..`
    /// components, no trailing `/`, components separated by single `/`. Empty means the root.
    pub path: Vec<u8>,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Sub-second part of the modification time, in nanoseconds (PAX `mtime` only).
    pub mtime_nsec: u32,
    /// Logical size in bytes (for sparse files, the real size as extracted).
    pub size: u64,
    /// Where the bytes are.
    pub data: DataLayout,
    /// Symlink target (raw bytes, as stored) or hardlink target (normalized path).
    pub link_target: Option<Vec<u8>>,
    /// Device numbers (major, minor) for character and block devices.
    pub rdev: (u32, u32),
    /// Extended attributes from PAX `SCHILY.xattr.*` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the entry's first header block (including any extended headers) in the
    /// uncompressed stream, for error messages.
    pub header_offset: u64,
}
