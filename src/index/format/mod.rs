//! The on-disk index format (see `docs/index-format.md`): constants, fixed-size records, the
//! header, and the load-time validation that lets the accessors read records straight from the
//! bytes.
//!
//! Everything is little-endian. The file is a fixed-size header (with a section table and its
//! own CRC-32) followed by the sections, back to back, in the order of the version's layout
//! ([`Section::layout`]). Every section but the windows blob carries a CRC-32 that is checked at
//! load; each window is a zlib stream whose Adler-32 is checked when it is decompressed, and
//! (version 2) whose SHA-256 is recorded in the `window_sums` section.
//!
//! Version 2 puts the windows **last**, so that everything else (the *head*) is one prefix of
//! the file, enough to serve lookups, listings and attributes: a node fetches the head first
//! and each window only with its span. It also records the `chunks` of the archive file with a
//! SHA-256 each (a gzip's spans, a plain tar's fixed-size pieces), so that bytes of the archive
//! fetched by range are checked before they are used. Version 1 files still load.
//!
//! # Files
//!
//! This file holds the constants, the section list and the kind codes; `bytes` the
//! little-endian readers and the name encoding; `records` the fixed-size records; `header` the
//! header, its section table and checksums; `validate` the one-pass check of every reference
//! that [`super::Index::from_bytes`] runs once, after which no accessor can panic.

mod bytes;
mod header;
mod records;
mod validate;

use super::IndexError;
use crate::archive::EntryKind;

pub use bytes::{put_varint, rd_i64, rd_u16, rd_u32, rd_u64, read_name, sub};
pub use header::{
    check_section_crcs, parse_head, parse_header, peek_head_len, reseal, section_range, Header,
    SectionEntry,
};
pub use records::{AttrRec, ChunkRec, DirentRec, InodeRec, PointRec, SparseRec, XattrRec};
pub use validate::validate;

/// The first 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"ADDONFS\0";

/// The format version this build writes. Any change to the layout or the meaning of a field
/// bumps it. A reader reads this version and the ones since [`OLDEST_VERSION`]; any other is
/// rejected (the index is then rebuilt).
pub const VERSION: u32 = 2;

/// The oldest version this build still reads (version 1: windows not last, no checksums of
/// windows or chunks; such an index serves everything but a lazy read).
pub const OLDEST_VERSION: u32 = 1;

/// The number of distinct sections over all versions (the size of a header's section table in
/// memory, indexed by [`Section`]).
pub const SECTION_KINDS: usize = 11;

/// Size of one section-table entry.
pub const SECTION_ENTRY_LEN: usize = 24;

/// Size of the fixed part of a version-1 header (before the section table).
pub const HEADER_FIXED_LEN_V1: usize = 124;

/// Size of the fixed part of a version-2 header: version 1's, then the chunk count.
pub const HEADER_FIXED_LEN: usize = 128;

/// Total size of a version-1 header: fixed part, section table (9 entries), header CRC-32.
pub const HEADER_LEN_V1: usize = HEADER_FIXED_LEN_V1 + 9 * SECTION_ENTRY_LEN + 4;

/// Total size of a version-2 header: fixed part, section table (11 entries), header CRC-32.
pub const HEADER_LEN: usize = HEADER_FIXED_LEN + SECTION_KINDS * SECTION_ENTRY_LEN + 4;

/// The fixed part's length of a header of `version` (one this build reads).
pub fn header_fixed_len(version: u32) -> usize {
    if version == 1 {
        HEADER_FIXED_LEN_V1
    } else {
        HEADER_FIXED_LEN
    }
}

/// The total header length of `version` (one this build reads).
pub fn header_len(version: u32) -> usize {
    header_fixed_len(version) + Section::layout(version).len() * SECTION_ENTRY_LEN + 4
}

/// Size of one inode record.
pub const INODE_LEN: usize = 25;
/// Size of one attribute-tuple record.
pub const ATTR_LEN: usize = 22;
/// Size of one directory-entry record.
pub const DIRENT_LEN: usize = 8;
/// Size of one sparse-segment record.
pub const SPARSE_LEN: usize = 24;
/// Size of one extended-attribute record.
pub const XATTR_LEN: usize = 20;
/// Size of one access-point record.
pub const POINT_LEN: usize = 32;
/// Size of one window checksum (a SHA-256), one per access point.
pub const WINDOW_SUM_LEN: usize = 32;
/// Size of one chunk record: offset in the archive file, then the SHA-256 of its bytes.
pub const CHUNK_LEN: usize = 40;

/// The chunk size of a plain tar's chunks, from the span: the span itself (1 MiB by default),
/// kept between 64 KiB (so a small test span does not make a record per few bytes) and 4 MiB
/// (so a node never has to fetch more than that to check one byte).
pub fn plain_chunk_size(span: u64) -> u64 {
    span.clamp(64 << 10, 4 << 20)
}

/// Largest window an access point may carry (the deflate history size).
pub const MAX_WINDOW: usize = 32 * 1024;

/// Inode kind codes as stored.
pub const KIND_FILE: u8 = 1;
/// Directory.
pub const KIND_DIR: u8 = 2;
/// Symbolic link.
pub const KIND_SYMLINK: u8 = 3;
/// Character device.
pub const KIND_CHARDEV: u8 = 4;
/// Block device.
pub const KIND_BLOCKDEV: u8 = 5;
/// Named pipe.
pub const KIND_FIFO: u8 = 6;

/// Data kind codes as stored (files only).
pub const DATA_NONE: u8 = 0;
/// Contiguous data.
pub const DATA_CONTIGUOUS: u8 = 1;
/// Sparse data.
pub const DATA_SPARSE: u8 = 2;

/// The sections of an index (their numbers index a header's section table in memory; their
/// order in the file is the version's [`Section::layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Inode records, indexed by `ino - 1`.
    Inodes = 0,
    /// Distinct attribute tuples (mode, uid, gid, mtime), referenced by the inodes.
    Attrs = 1,
    /// Directory-entry records, grouped per directory (in inode order), sorted by name.
    Dirents = 2,
    /// Names (length-prefixed), link targets, extended-attribute names and values.
    Strings = 3,
    /// Sparse-segment records, grouped per file (in inode order).
    Sparse = 4,
    /// Extended-attribute records, sorted by inode.
    Xattrs = 5,
    /// Access-point records, sorted by uncompressed offset.
    Points = 6,
    /// zlib-compressed windows, back to back (not checked at load).
    Windows = 7,
    /// Warnings: `u32` length + UTF-8 bytes, repeated.
    Warnings = 8,
    /// Version 2: the SHA-256 of each access point's stored (compressed) window, in point order
    /// (zeros for a point without a window).
    WindowSums = 9,
    /// Version 2: the chunks of the archive file, [`CHUNK_LEN`] bytes each, by offset.
    Chunks = 10,
}

impl Section {
    /// The sections of a version-1 index, in file order.
    pub const LAYOUT_V1: [Section; 9] = [
        Section::Inodes,
        Section::Attrs,
        Section::Dirents,
        Section::Strings,
        Section::Sparse,
        Section::Xattrs,
        Section::Points,
        Section::Windows,
        Section::Warnings,
    ];

    /// The sections of a version-2 index, in file order: the windows last, so that the rest
    /// (the head) is one prefix of the file.
    pub const LAYOUT: [Section; SECTION_KINDS] = [
        Section::Inodes,
        Section::Attrs,
        Section::Dirents,
        Section::Strings,
        Section::Sparse,
        Section::Xattrs,
        Section::Points,
        Section::WindowSums,
        Section::Chunks,
        Section::Warnings,
        Section::Windows,
    ];

    /// The sections of an index of `version`, in file order (this version's for any version
    /// but 1: the version is checked before the layout is used).
    pub fn layout(version: u32) -> &'static [Section] {
        if version == 1 {
            &Self::LAYOUT_V1
        } else {
            &Self::LAYOUT
        }
    }

    /// The section's name, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Section::Inodes => "inodes",
            Section::Attrs => "attrs",
            Section::Dirents => "dirents",
            Section::Strings => "strings",
            Section::Sparse => "sparse",
            Section::Xattrs => "xattrs",
            Section::Points => "points",
            Section::Windows => "windows",
            Section::Warnings => "warnings",
            Section::WindowSums => "window_sums",
            Section::Chunks => "chunks",
        }
    }

    /// True for the sections whose CRC-32 is checked at load (all but the windows blob).
    pub fn checked_at_load(self) -> bool {
        self != Section::Windows
    }
}

/// Maps an entry kind to its stored code ([`EntryKind::Hardlink`] is never stored).
pub fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File | EntryKind::Hardlink => KIND_FILE,
        EntryKind::Dir => KIND_DIR,
        EntryKind::Symlink => KIND_SYMLINK,
        EntryKind::CharDev => KIND_CHARDEV,
        EntryKind::BlockDev => KIND_BLOCKDEV,
        EntryKind::Fifo => KIND_FIFO,
    }
}

/// Maps a stored kind code back to the entry kind.
pub fn kind_from_code(code: u8) -> Option<EntryKind> {
    Some(match code {
        KIND_FILE => EntryKind::File,
        KIND_DIR => EntryKind::Dir,
        KIND_SYMLINK => EntryKind::Symlink,
        KIND_CHARDEV => EntryKind::CharDev,
        KIND_BLOCKDEV => EntryKind::BlockDev,
        KIND_FIFO => EntryKind::Fifo,
        _ => return None,
    })
}

/// A corrupt-index error with its message (which names the offending record or offset).
fn corrupt(msg: String) -> IndexError {
    IndexError::Corrupt(msg)
}
