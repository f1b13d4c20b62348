//! The on-disk index format (see `docs/index-format.md`): constants, fixed-size records, the
//! header, and the load-time validation that lets the accessors read records straight from the
//! bytes.
//!
//! Everything is little-endian. The file is a fixed-size header (with a section table and its
//! own CRC-32) followed by the sections, back to back, in [`Section`] order. Every section but
//! the windows blob carries a CRC-32 that is checked at load; each window is a zlib stream whose
//! Adler-32 is checked when it is decompressed.

use super::{ArchiveIdentity, IndexError};
use crate::archive::{Compression, EntryKind};

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

// ---------------------------------------------------------------------------------------------
// Little-endian helpers. They never panic: a read past the end yields zero bytes, which callers
// only ever do on slices whose length they checked.

/// Reads a `u16` at `off` (zero if out of bounds).
#[inline]
pub fn rd_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = off.checked_add(2).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

/// Reads a `u32` at `off` (zero if out of bounds).
#[inline]
pub fn rd_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = off.checked_add(4).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// Reads a `u64` at `off` (zero if out of bounds).
#[inline]
pub fn rd_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = off.checked_add(8).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Reads an `i64` at `off` (zero if out of bounds).
#[inline]
pub fn rd_i64(b: &[u8], off: usize) -> i64 {
    rd_u64(b, off) as i64
}

/// The bytes `[off, off + len)` of `b`, if in bounds.
#[inline]
pub fn sub(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    b.get(start..end)
}

/// Appends `len` as an unsigned LEB128 varint (the length prefix of a name).
pub fn put_varint(out: &mut Vec<u8>, mut len: u32) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// The name stored at `off` in the strings blob: an unsigned LEB128 length (at most 5 bytes,
/// fitting a `u32`) followed by that many bytes. `None` if malformed or out of bounds.
#[inline]
pub fn read_name(strings: &[u8], off: u32) -> Option<&[u8]> {
    let mut at = off as usize;
    let mut len: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *strings.get(at)?;
        at += 1;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    if len > u64::from(u32::MAX) {
        return None;
    }
    strings.get(at..at.checked_add(len as usize)?)
}

// ---------------------------------------------------------------------------------------------
// Records.

/// One inode record, decoded (25 bytes on disk).
///
/// On disk: byte 0 = kind code | data kind code << 4; `attr` (u32); `nlink` (u32); then two
/// u64 words `x` and `y` whose meaning depends on the kind:
///
/// | kind | `x` | `y` |
/// |---|---|---|
/// | file, no data | size | 0 |
/// | file, contiguous | size | stream offset |
/// | file, sparse | size | first segment (low 32 bits), segment count (high 32 bits) |
/// | directory | parent inode | first dirent (low 32 bits), dirent count (high 32 bits) |
/// | symlink | target length (= size) | target offset in the strings blob |
/// | char/block device | 0 | major (low 32 bits), minor (high 32 bits) |
/// | fifo | 0 | 0 |
///
/// Decoded, the fields are: files: `size`, `a` = stream offset or first segment, `b` = segment
/// count; directories: `a` = first dirent, `b` = dirent count, `c` = parent inode; symlinks:
/// `size` = `b` = target length, `a` = target offset; devices: `b` = major, `c` = minor. Unused
/// fields are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InodeRec {
    /// Kind code (`KIND_*`).
    pub kind: u8,
    /// Data kind code (`DATA_*`), files only.
    pub data: u8,
    /// Index of the attribute tuple (mode, uid, gid, mtime) in the attrs section.
    pub attr: u32,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes (files and symlinks; zero otherwise).
    pub size: u64,
    /// Kind-specific reference (see the type's doc).
    pub a: u64,
    /// Kind-specific reference.
    pub b: u32,
    /// Kind-specific reference.
    pub c: u32,
}

const LOW32: u64 = 0xffff_ffff;

impl InodeRec {
    /// Decodes a record from (at least) [`INODE_LEN`] bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> InodeRec {
        let b0 = r.first().copied().unwrap_or(0);
        let (kind, data) = (b0 & 0x0f, b0 >> 4);
        let x = rd_u64(r, 9);
        let y = rd_u64(r, 17);
        let mut rec =
            InodeRec { kind, data, attr: rd_u32(r, 1), nlink: rd_u32(r, 5), ..InodeRec::default() };
        match kind {
            KIND_FILE => {
                rec.size = x;
                if data == DATA_SPARSE {
                    rec.a = y & LOW32;
                    rec.b = (y >> 32) as u32;
                } else {
                    rec.a = y;
                }
            }
            KIND_DIR => {
                // A parent over 32 bits decodes as 0, which validation rejects.
                rec.c = u32::try_from(x).unwrap_or(0);
                rec.a = y & LOW32;
                rec.b = (y >> 32) as u32;
            }
            KIND_SYMLINK => {
                rec.size = x;
                rec.b = x as u32;
                rec.a = y;
            }
            KIND_CHARDEV | KIND_BLOCKDEV => {
                rec.b = y as u32;
                rec.c = (y >> 32) as u32;
            }
            _ => {}
        }
        rec
    }

    /// Appends the encoded record to `out`. References that must fit 32 bits (dirent and
    /// sparse indexes and counts, parents, string offsets) are checked by the builder.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (x, y) = match self.kind {
            KIND_FILE if self.data == DATA_SPARSE => {
                (self.size, (self.a & LOW32) | u64::from(self.b) << 32)
            }
            KIND_FILE => (self.size, self.a),
            KIND_DIR => (u64::from(self.c), (self.a & LOW32) | u64::from(self.b) << 32),
            KIND_SYMLINK => (u64::from(self.b), self.a),
            KIND_CHARDEV | KIND_BLOCKDEV => (0, u64::from(self.b) | u64::from(self.c) << 32),
            _ => (0, 0),
        };
        out.push(self.kind | self.data << 4);
        out.extend_from_slice(&self.attr.to_le_bytes());
        out.extend_from_slice(&self.nlink.to_le_bytes());
        out.extend_from_slice(&x.to_le_bytes());
        out.extend_from_slice(&y.to_le_bytes());
    }
}

/// One attribute tuple (22 bytes), shared by every inode with the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AttrRec {
    /// Modification time, seconds.
    pub mtime: i64,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777` mask).
    pub mode: u16,
}

impl AttrRec {
    /// Decodes a record from (at least) [`ATTR_LEN`] bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> AttrRec {
        AttrRec {
            mtime: rd_i64(r, 0),
            uid: rd_u32(r, 8),
            gid: rd_u32(r, 12),
            mtime_nsec: rd_u32(r, 16),
            mode: rd_u16(r, 20),
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
        out.extend_from_slice(&self.mtime_nsec.to_le_bytes());
        out.extend_from_slice(&self.mode.to_le_bytes());
    }
}

/// One directory entry (8 bytes): where the (length-prefixed) name is in the strings blob, and
/// the child inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirentRec {
    /// Offset of the length-prefixed name in the strings blob.
    pub name_off: u32,
    /// The child inode.
    pub ino: u32,
}

impl DirentRec {
    /// Decodes a record from (at least) [`DIRENT_LEN`] bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> DirentRec {
        DirentRec { name_off: rd_u32(r, 0), ino: rd_u32(r, 4) }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name_off.to_le_bytes());
        out.extend_from_slice(&self.ino.to_le_bytes());
    }
}

/// One sparse segment (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SparseRec {
    /// Logical offset in the file.
    pub logical: u64,
    /// Length of the run.
    pub len: u64,
    /// Offset of the run in the uncompressed stream.
    pub stream_offset: u64,
}

impl SparseRec {
    /// Decodes a record from (at least) [`SPARSE_LEN`] bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> SparseRec {
        SparseRec { logical: rd_u64(r, 0), len: rd_u64(r, 8), stream_offset: rd_u64(r, 16) }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.logical.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.stream_offset.to_le_bytes());
    }
}

/// One extended attribute (20 bytes): owner inode, name and value (in the strings blob).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XattrRec {
    /// The inode the attribute belongs to.
    pub ino: u32,
    /// Offset of the name in the strings blob.
    pub name_off: u32,
    /// Length of the name.
    pub name_len: u32,
    /// Offset of the value in the strings blob.
    pub value_off: u32,
    /// Length of the value.
    pub value_len: u32,
}

impl XattrRec {
    /// Decodes a record from (at least) [`XATTR_LEN`] bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> XattrRec {
        XattrRec {
            ino: rd_u32(r, 0),
            name_off: rd_u32(r, 4),
            name_len: rd_u32(r, 8),
            value_off: rd_u32(r, 12),
            value_len: rd_u32(r, 16),
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ino.to_le_bytes());
        out.extend_from_slice(&self.name_off.to_le_bytes());
        out.extend_from_slice(&self.name_len.to_le_bytes());
        out.extend_from_slice(&self.value_off.to_le_bytes());
        out.extend_from_slice(&self.value_len.to_le_bytes());
    }
}

/// One access point (32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PointRec {
    /// Offset in the uncompressed stream.
    pub uncompressed: u64,
    /// Offset in the compressed file.
    pub compressed: u64,
    /// Offset of the compressed window in the windows blob.
    pub window_off: u64,
    /// Length of the compressed window (0 when there is no window).
    pub window_zlen: u32,
    /// Length of the window once decompressed (0 when there is no window).
    pub window_len: u16,
    /// Bits to prime from the byte before `compressed`.
    pub bits: u8,
}

impl PointRec {
    /// Decodes a record from (at least) [`POINT_LEN`] bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> PointRec {
        PointRec {
            uncompressed: rd_u64(r, 0),
            compressed: rd_u64(r, 8),
            window_off: rd_u64(r, 16),
            window_zlen: rd_u32(r, 24),
            window_len: rd_u16(r, 28),
            bits: r.get(30).copied().unwrap_or(0),
        }
    }

    /// Appends the encoded record to `out` (byte 31 is reserved, zero).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.uncompressed.to_le_bytes());
        out.extend_from_slice(&self.compressed.to_le_bytes());
        out.extend_from_slice(&self.window_off.to_le_bytes());
        out.extend_from_slice(&self.window_zlen.to_le_bytes());
        out.extend_from_slice(&self.window_len.to_le_bytes());
        out.push(self.bits);
        out.push(0);
    }
}

// ---------------------------------------------------------------------------------------------
// Header.

/// Where one section is and its CRC-32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SectionEntry {
    /// Byte offset of the section in the file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// CRC-32 (IEEE, as `crc32fast`) of the section's bytes.
    pub crc: u32,
}

/// Every header field (the parsed header of a checked index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The archive the index describes.
    pub identity: ArchiveIdentity,
    /// How the archive stores the tar stream.
    pub compression: Compression,
    /// The access-point span.
    pub span: u64,
    /// Size of the uncompressed tar stream.
    pub uncompressed_size: u64,
    /// Number of inode records.
    pub inode_count: u32,
    /// Number of attribute-tuple records.
    pub attr_count: u32,
    /// Number of dirent records.
    pub dirent_count: u32,
    /// Number of sparse-segment records.
    pub sparse_count: u32,
    /// Number of xattr records.
    pub xattr_count: u32,
    /// Number of access-point records.
    pub point_count: u32,
    /// Number of warnings.
    pub warning_count: u32,
    /// The section table.
    pub sections: [SectionEntry; SECTION_COUNT],
}

fn compression_code(c: Compression) -> u32 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
    }
}

impl Header {
    /// Encodes the header (with its CRC-32): exactly [`HEADER_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // flags
        h.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h.extend_from_slice(&(SECTION_COUNT as u32).to_le_bytes());
        h.extend_from_slice(&self.identity.size.to_le_bytes());
        h.extend_from_slice(&self.identity.mtime_sec.to_le_bytes());
        h.extend_from_slice(&self.identity.mtime_nsec.to_le_bytes());
        h.extend_from_slice(&compression_code(self.compression).to_le_bytes());
        h.extend_from_slice(&self.identity.digest);
        h.extend_from_slice(&self.span.to_le_bytes());
        h.extend_from_slice(&self.uncompressed_size.to_le_bytes());
        for count in self.counts() {
            h.extend_from_slice(&count.to_le_bytes());
        }
        debug_assert_eq!(h.len(), HEADER_FIXED_LEN);
        for s in &self.sections {
            h.extend_from_slice(&s.offset.to_le_bytes());
            h.extend_from_slice(&s.len.to_le_bytes());
            h.extend_from_slice(&s.crc.to_le_bytes());
            h.extend_from_slice(&0u32.to_le_bytes());
        }
        let crc = crc32fast::hash(&h);
        h.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(h.len(), HEADER_LEN);
        h
    }

    /// The record counts, in header order.
    fn counts(&self) -> [u32; 7] {
        [
            self.inode_count,
            self.attr_count,
            self.dirent_count,
            self.sparse_count,
            self.xattr_count,
            self.point_count,
            self.warning_count,
        ]
    }
}

fn corrupt(msg: String) -> IndexError {
    IndexError::Corrupt(msg)
}

/// Parses and checks the header: magic, version, length, flags, header CRC-32, the section
/// table (sections back to back after the header, ending at the end of the file, each record
/// section exactly its count times its record size).
pub fn parse_header(bytes: &[u8]) -> Result<Header, IndexError> {
    if bytes.len() < 12 {
        return Err(corrupt(format!(
            "file is {} bytes, too short for the magic and version (12 bytes)",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt(format!(
            "bad magic at offset 0: {:02x?} (expected {:02x?})",
            &bytes[..8],
            MAGIC
        )));
    }
    let version = rd_u32(bytes, 8);
    if version != VERSION {
        return Err(IndexError::Version { found: version, expected: VERSION });
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    let stored = rd_u32(bytes, HEADER_LEN - 4);
    let computed = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
    if stored != computed {
        return Err(corrupt(format!(
            "header crc32 mismatch at offset {}: stored {stored:08x}, computed {computed:08x}",
            HEADER_LEN - 4
        )));
    }
    let flags = rd_u32(bytes, 12);
    if flags != 0 {
        return Err(corrupt(format!("unknown header flags {flags:#x} at offset 12")));
    }
    let header_len = rd_u32(bytes, 16);
    if header_len as usize != HEADER_LEN {
        return Err(corrupt(format!(
            "header length {header_len} at offset 16 (expected {HEADER_LEN})"
        )));
    }
    let section_count = rd_u32(bytes, 20);
    if section_count as usize != SECTION_COUNT {
        return Err(corrupt(format!(
            "section count {section_count} at offset 20 (expected {SECTION_COUNT})"
        )));
    }
    let compression = match rd_u32(bytes, 44) {
        0 => Compression::None,
        1 => Compression::Gzip,
        other => return Err(corrupt(format!("unknown compression code {other} at offset 44"))),
    };
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes[48..80]);
    let identity = ArchiveIdentity {
        size: rd_u64(bytes, 24),
        mtime_sec: rd_i64(bytes, 32),
        mtime_nsec: rd_u32(bytes, 40),
        digest,
    };
    let mut sections = [SectionEntry::default(); SECTION_COUNT];
    let mut expected_offset = HEADER_LEN as u64;
    for (i, s) in sections.iter_mut().enumerate() {
        let at = HEADER_FIXED_LEN + i * SECTION_ENTRY_LEN;
        let name = Section::ALL[i].name();
        s.offset = rd_u64(bytes, at);
        s.len = rd_u64(bytes, at + 8);
        s.crc = rd_u32(bytes, at + 16);
        if rd_u32(bytes, at + 20) != 0 {
            return Err(corrupt(format!(
                "section table entry {i} ({name}) at offset {at}: reserved field is not zero"
            )));
        }
        if s.offset != expected_offset {
            return Err(corrupt(format!(
                "section {name} starts at offset {} (expected {expected_offset}, right after \
                 the previous one)",
                s.offset
            )));
        }
        expected_offset = s.offset.checked_add(s.len).ok_or_else(|| {
            corrupt(format!("section {name}: offset {} + length {} overflows", s.offset, s.len))
        })?;
    }
    if expected_offset != bytes.len() as u64 {
        return Err(corrupt(format!(
            "sections end at offset {expected_offset} but the file is {} bytes (truncated or \
             trailing data)",
            bytes.len()
        )));
    }
    let header = Header {
        identity,
        compression,
        span: rd_u64(bytes, 80),
        uncompressed_size: rd_u64(bytes, 88),
        inode_count: rd_u32(bytes, 96),
        attr_count: rd_u32(bytes, 100),
        dirent_count: rd_u32(bytes, 104),
        sparse_count: rd_u32(bytes, 108),
        xattr_count: rd_u32(bytes, 112),
        point_count: rd_u32(bytes, 116),
        warning_count: rd_u32(bytes, 120),
        sections,
    };
    for (section, count, rec) in [
        (Section::Inodes, header.inode_count, INODE_LEN),
        (Section::Attrs, header.attr_count, ATTR_LEN),
        (Section::Dirents, header.dirent_count, DIRENT_LEN),
        (Section::Sparse, header.sparse_count, SPARSE_LEN),
        (Section::Xattrs, header.xattr_count, XATTR_LEN),
        (Section::Points, header.point_count, POINT_LEN),
    ] {
        let len = header.sections[section as usize].len;
        if len != u64::from(count) * rec as u64 {
            return Err(corrupt(format!(
                "section {} is {len} bytes, expected {count} records of {rec} bytes",
                section.name()
            )));
        }
    }
    Ok(header)
}

/// The byte range of `section` in a file whose header is `h` (checked by [`parse_header`] to be
/// within the file).
pub fn section_range(h: &Header, section: Section) -> std::ops::Range<usize> {
    let s = h.sections[section as usize];
    let start = usize::try_from(s.offset).unwrap_or(usize::MAX);
    let len = usize::try_from(s.len).unwrap_or(0);
    start..start.saturating_add(len)
}

/// Checks the CRC-32 of every metadata section (all but the windows blob).
pub fn check_section_crcs(bytes: &[u8], h: &Header) -> Result<(), IndexError> {
    for section in Section::ALL {
        if !section.checked_at_load() {
            continue;
        }
        let range = section_range(h, section);
        let stored = h.sections[section as usize].crc;
        let computed = crc32fast::hash(bytes.get(range.clone()).unwrap_or(&[]));
        if stored != computed {
            return Err(corrupt(format!(
                "section {} (offset {}, length {}): crc32 mismatch, stored {stored:08x}, \
                 computed {computed:08x}",
                section.name(),
                range.start,
                range.len()
            )));
        }
    }
    Ok(())
}

/// Checks every reference of every record once, so that no accessor can read out of bounds or
/// loop: inode kinds and data kinds, attribute indexes, data ranges within the uncompressed
/// stream, dirent and sparse ranges laid out in inode order and covering their sections
/// exactly, directory parents (the root is its own parent, any other directory's parent is a
/// smaller-numbered directory that lists it), names and string references, xattr owners
/// (sorted), and access points (strictly increasing, windows back to back, at most 32 KiB
/// each). One pass of integer checks over the records, no allocation.
pub fn validate(bytes: &[u8], h: &Header) -> Result<(), IndexError> {
    let sec = |s: Section| bytes.get(section_range(h, s)).unwrap_or(&[]);
    let inodes = sec(Section::Inodes);
    let dirents = sec(Section::Dirents);
    let strings = sec(Section::Strings);
    let sparse = sec(Section::Sparse);
    let xattrs = sec(Section::Xattrs);
    let points = sec(Section::Points);
    let strings_len = strings.len() as u64;
    let windows_len = h.sections[Section::Windows as usize].len;
    let n = u64::from(h.inode_count);
    let total = h.uncompressed_size;
    let inodes_offset = h.sections[Section::Inodes as usize].offset;

    if n == 0 {
        return Err(corrupt("no inodes (the root is missing)".into()));
    }
    let in_strings = |off: u32, len: u32| u64::from(off) + u64::from(len) <= strings_len;
    let record = |ino: u32| -> InodeRec {
        let at = (ino as usize).wrapping_sub(1).wrapping_mul(INODE_LEN);
        InodeRec::decode(inodes.get(at..).unwrap_or(&[]))
    };

    let mut next_dirent: u64 = 0;
    let mut next_sparse: u64 = 0;
    for (i, rec) in inodes.chunks_exact(INODE_LEN).enumerate() {
        let ino = i as u64 + 1;
        let r = InodeRec::decode(rec);
        let bad = |what: &str| {
            corrupt(format!(
                "inode {ino} (offset {}): {what}",
                inodes_offset + i as u64 * INODE_LEN as u64
            ))
        };
        if r.nlink == 0 {
            return Err(bad("link count is zero"));
        }
        if r.attr >= h.attr_count {
            return Err(bad(&format!("attribute index {} out of range", r.attr)));
        }
        if r.kind != KIND_FILE && r.data != DATA_NONE {
            return Err(bad("data reference on an inode that is not a regular file"));
        }
        match r.kind {
            KIND_FILE => match r.data {
                DATA_NONE => {}
                DATA_CONTIGUOUS => {
                    if r.a.checked_add(r.size).is_none_or(|end| end > total) {
                        return Err(bad(&format!(
                            "data {}+{} runs past the uncompressed stream ({total} bytes)",
                            r.a, r.size
                        )));
                    }
                }
                DATA_SPARSE => {
                    if r.a != next_sparse {
                        return Err(bad(&format!(
                            "sparse segments start at {} (expected {next_sparse})",
                            r.a
                        )));
                    }
                    next_sparse += u64::from(r.b);
                    if next_sparse > u64::from(h.sparse_count) {
                        return Err(bad("sparse segment range runs past the sparse section"));
                    }
                    let segs =
                        sub(sparse, r.a * SPARSE_LEN as u64, u64::from(r.b) * SPARSE_LEN as u64)
                            .unwrap_or(&[]);
                    let mut prev_end = 0u64;
                    for seg in segs.chunks_exact(SPARSE_LEN) {
                        let s = SparseRec::decode(seg);
                        let ok = s.logical >= prev_end
                            && s.logical.checked_add(s.len).is_some_and(|e| e <= r.size)
                            && s.stream_offset.checked_add(s.len).is_some_and(|e| e <= total);
                        if !ok {
                            return Err(bad(&format!(
                                "sparse segment (logical {}, length {}, stream offset {}) is \
                                 out of order or out of bounds",
                                s.logical, s.len, s.stream_offset
                            )));
                        }
                        prev_end = s.logical + s.len;
                    }
                }
                other => return Err(bad(&format!("unknown data kind {other}"))),
            },
            KIND_DIR => {
                if r.a != next_dirent {
                    return Err(bad(&format!("dirents start at {} (expected {next_dirent})", r.a)));
                }
                next_dirent += u64::from(r.b);
                if next_dirent > u64::from(h.dirent_count) {
                    return Err(bad("dirent range runs past the dirents section"));
                }
                let parent_ok = if ino == 1 {
                    r.c == 1
                } else {
                    r.c >= 1 && u64::from(r.c) < ino && record(r.c).kind == KIND_DIR
                };
                if !parent_ok {
                    return Err(bad(&format!("bad parent directory {}", r.c)));
                }
                let ents =
                    sub(dirents, r.a * DIRENT_LEN as u64, u64::from(r.b) * DIRENT_LEN as u64)
                        .unwrap_or(&[]);
                for (j, ent) in ents.chunks_exact(DIRENT_LEN).enumerate() {
                    let d = DirentRec::decode(ent);
                    let which = r.a + j as u64;
                    if read_name(strings, d.name_off).is_none_or(<[u8]>::is_empty) {
                        return Err(bad(&format!("dirent {which}: bad name reference")));
                    }
                    if d.ino == 0 || u64::from(d.ino) > n {
                        return Err(bad(&format!(
                            "dirent {which}: child inode {} out of range",
                            d.ino
                        )));
                    }
                    let child = record(d.ino);
                    if child.kind == KIND_DIR
                        && (u64::from(d.ino) <= ino || u64::from(child.c) != ino)
                    {
                        return Err(bad(&format!(
                            "dirent {which}: directory {} does not have this directory as its \
                             parent",
                            d.ino
                        )));
                    }
                }
            }
            KIND_SYMLINK => {
                let fits = u32::try_from(r.a).is_ok_and(|off| in_strings(off, r.b));
                if !fits || r.size != u64::from(r.b) {
                    return Err(bad("bad symlink target reference"));
                }
            }
            KIND_CHARDEV | KIND_BLOCKDEV | KIND_FIFO => {}
            other => return Err(bad(&format!("unknown kind {other}"))),
        }
    }
    if record(1).kind != KIND_DIR {
        return Err(corrupt("inode 1 (the root) is not a directory".into()));
    }
    if next_dirent != u64::from(h.dirent_count) {
        return Err(corrupt(format!(
            "directories reference {next_dirent} dirents but the section holds {}",
            h.dirent_count
        )));
    }
    if next_sparse != u64::from(h.sparse_count) {
        return Err(corrupt(format!(
            "files reference {next_sparse} sparse segments but the section holds {}",
            h.sparse_count
        )));
    }

    let mut prev_ino = 0u32;
    for (i, rec) in xattrs.chunks_exact(XATTR_LEN).enumerate() {
        let x = XattrRec::decode(rec);
        if x.ino < prev_ino
            || x.ino == 0
            || u64::from(x.ino) > n
            || !in_strings(x.name_off, x.name_len)
            || !in_strings(x.value_off, x.value_len)
        {
            return Err(corrupt(format!(
                "xattr record {i} (inode {}): bad owner or string reference",
                x.ino
            )));
        }
        prev_ino = x.ino;
    }

    let mut next_window = 0u64;
    let mut prev: Option<u64> = None;
    for (i, rec) in points.chunks_exact(POINT_LEN).enumerate() {
        let p = PointRec::decode(rec);
        let bad = |what: &str| corrupt(format!("access point {i}: {what}"));
        if prev.is_some_and(|u| p.uncompressed <= u) {
            return Err(bad("uncompressed offsets not strictly increasing"));
        }
        prev = Some(p.uncompressed);
        if p.uncompressed > total {
            return Err(bad("uncompressed offset past the end of the stream"));
        }
        if p.bits > 7 || rec.get(31).copied().unwrap_or(0) != 0 {
            return Err(bad("bit count over 7 or reserved byte set"));
        }
        if usize::from(p.window_len) > MAX_WINDOW || (p.window_len == 0) != (p.window_zlen == 0) {
            return Err(bad("bad window length"));
        }
        if p.window_off != next_window {
            return Err(bad("windows are not back to back"));
        }
        next_window += u64::from(p.window_zlen);
        if next_window > windows_len {
            return Err(bad("window runs past the windows section"));
        }
    }
    if next_window != windows_len {
        return Err(corrupt(format!(
            "access points reference {next_window} bytes of windows but the section holds \
             {windows_len}"
        )));
    }
    Ok(())
}

/// Recomputes, in place, the CRC-32 of every section the table locates within `bytes` and then
/// the header's, without checking anything else. Returns false if `bytes` is shorter than a
/// header. For tests and fuzzing: it lets forged or mutated bytes through the checksums, so
/// that the structural checks behind them get exercised.
pub fn reseal(bytes: &mut [u8]) -> bool {
    if bytes.len() < HEADER_LEN {
        return false;
    }
    for i in 0..SECTION_COUNT {
        let at = HEADER_FIXED_LEN + i * SECTION_ENTRY_LEN;
        let range = sub(bytes, rd_u64(bytes, at), rd_u64(bytes, at + 8));
        if let Some(section) = range {
            let crc = crc32fast::hash(section);
            bytes[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes[..HEADER_LEN - 4]);
    bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    true
}
