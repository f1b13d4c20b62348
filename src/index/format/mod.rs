//! The on-disk index format (see `docs/index-format.md`): constants, fixed-size records, the
//! header, and the load-time validation that lets the accessors read records straight from the
//! bytes.
//!
//! Everything is little-endian. The file is a fixed-size header (with a section table and its
//! own CRC-32) followed by the sections, back to back, in [`Section`] order. Every section but
//! the windows blob carries a CRC-32 that is checked at load; each window is a zlib stream whose
//! Adler-32 is checked when it is decompressed.
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
pub use header::{check_section_crcs, parse_header, reseal, section_range, Header, SectionEntry};
pub use records::{AttrRec, DirentRec, InodeRec, PointRec, SparseRec, XattrRec};
pub use validate::validate;

/// The first 8 bytes of every index file.
pub const MAGIC: [u8; 8] = *b"ADDONFS\0";

/// The format version this build writes and reads. Any change to the layout or the meaning of a
/// field bumps it; a reader rejects every other version (the index is then rebuilt).
pub const VERSION: u32 = 1;

/// Number of sections in a version-1 index.
pub const SECTION_COUNT: usize = 9;

/// Size of the fixed part of the header (before the section table).
pub const HEADER_FIXED_LEN: usize = 124;

/// Size of one section-table entry.
pub const SECTION_ENTRY_LEN: usize = 24;

/// Total header size: fixed part, section table, header CRC-32.
pub const HEADER_LEN: usize = HEADER_FIXED_LEN + SECTION_COUNT * SECTION_ENTRY_LEN + 4;

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

/// The sections of an index, in file order.
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
}

impl Section {
    /// All sections in file order.
    pub const ALL: [Section; SECTION_COUNT] = [
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
