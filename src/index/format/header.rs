//! The header: the fixed fields, the section table and the CRC-32s that guard them, for both
//! versions this build reads (the layouts differ in the fixed part's length and the table).

use super::super::ArchiveIdentity;
use super::{
    corrupt, header_fixed_len, rd_i64, rd_u32, rd_u64, sub, Section, ATTR_LEN, CHUNK_LEN,
    DIRENT_LEN, HEADER_FIXED_LEN, HEADER_LEN, INODE_LEN, MAGIC, OLDEST_VERSION, POINT_LEN,
    SECTION_ENTRY_LEN, SECTION_KINDS, SPARSE_LEN, VERSION, WINDOW_SUM_LEN, XATTR_LEN,
};
use crate::archive::Compression;
use crate::index::IndexError;

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
    /// The format version of the file (1 or 2; [`Header::encode`] writes [`VERSION`]).
    pub version: u32,
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
    /// Number of access-point records (and, version 2, of window checksums).
    pub point_count: u32,
    /// Number of warnings.
    pub warning_count: u32,
    /// Number of chunk records (version 2; 0 in version 1).
    pub chunk_count: u32,
    /// The section table, indexed by [`Section`] (a version-1 file's `window_sums` and
    /// `chunks` are empty, at offset 0).
    pub sections: [SectionEntry; SECTION_KINDS],
}

fn compression_code(c: Compression) -> u32 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
    }
}

impl Header {
    /// Encodes the header (with its CRC-32) in the current version's layout: exactly
    /// [`HEADER_LEN`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // flags
        h.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        h.extend_from_slice(&(Section::LAYOUT.len() as u32).to_le_bytes());
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
        h.extend_from_slice(&self.chunk_count.to_le_bytes());
        debug_assert_eq!(h.len(), HEADER_FIXED_LEN);
        for section in Section::LAYOUT {
            let s = self.sections[section as usize];
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

    /// The record counts of version 1, in header order.
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

    /// The length of the whole index file (where its last section ends).
    pub fn file_len(&self) -> u64 {
        let last = Section::layout(self.version).last().copied().unwrap_or(Section::Warnings);
        let s = self.sections[last as usize];
        s.offset.saturating_add(s.len)
    }

    /// The length of the head (everything before the windows) of a version-2 index; `None`
    /// for version 1, whose windows are not last.
    pub fn head_len(&self) -> Option<u64> {
        (self.version >= 2).then_some(self.sections[Section::Windows as usize].offset)
    }
}

/// Parses and checks the header of a whole index file: magic, version, length, flags, header
/// CRC-32, the section table (sections back to back after the header, ending at the end of the
/// file, each record section exactly its count times its record size).
pub fn parse_header(bytes: &[u8]) -> Result<Header, IndexError> {
    parse(bytes, Extent::Whole)
}

/// Parses and checks the header of the head of a version-2 index (the file without its
/// windows, which come last): the same checks as [`parse_header`], except that the bytes end
/// where the windows section starts.
pub fn parse_head(bytes: &[u8]) -> Result<Header, IndexError> {
    parse(bytes, Extent::Head)
}

/// The head length a version-2 index's header states, from the file's first bytes (at least
/// the header; the header's CRC-32 is checked): how much to fetch to load it with
/// [`parse_head`]. A version-1 index has no head: `IndexError::Version`.
pub fn peek_head_len(bytes: &[u8]) -> Result<u64, IndexError> {
    let version = check_preamble(bytes)?;
    if version < 2 {
        return Err(IndexError::Version { found: version, expected: VERSION });
    }
    let sections = read_section_table(bytes, version, None)?;
    Ok(sections[Section::Windows as usize].offset)
}

/// How much of the index the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extent {
    /// The whole file.
    Whole,
    /// The head: everything before the windows section (version 2).
    Head,
}

fn parse(bytes: &[u8], extent: Extent) -> Result<Header, IndexError> {
    let version = check_preamble(bytes)?;
    if extent == Extent::Head && version < 2 {
        return Err(IndexError::Version { found: version, expected: VERSION });
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
    let sections = read_section_table(bytes, version, Some(extent))?;
    let header = Header {
        version,
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
        chunk_count: if version >= 2 { rd_u32(bytes, 124) } else { 0 },
        sections,
    };
    check_record_sections(&header)?;
    Ok(header)
}

/// Checks what comes before any field is trusted: the magic and the version first (a file that
/// is not an index, or one of another version, is told apart from a corrupt one: the caller
/// rebuilds either way, but the message says which), then the header's length and CRC-32
/// (every later field is read from checked bytes), then the flags, lengths and section count
/// this version knows (nothing unknown is silently ignored). Returns the version.
fn check_preamble(bytes: &[u8]) -> Result<u32, IndexError> {
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
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return Err(IndexError::Version { found: version, expected: VERSION });
    }
    let header_len = super::header_len(version);
    if bytes.len() < header_len {
        return Err(corrupt(format!(
            "file is {} bytes, shorter than the {header_len}-byte header",
            bytes.len()
        )));
    }
    let stored = rd_u32(bytes, header_len - 4);
    let computed = crc32fast::hash(&bytes[..header_len - 4]);
    if stored != computed {
        return Err(corrupt(format!(
            "header crc32 mismatch at offset {}: stored {stored:08x}, computed {computed:08x}",
            header_len - 4
        )));
    }
    let flags = rd_u32(bytes, 12);
    if flags != 0 {
        return Err(corrupt(format!("unknown header flags {flags:#x} at offset 12")));
    }
    let stated_len = rd_u32(bytes, 16);
    if stated_len as usize != header_len {
        return Err(corrupt(format!(
            "header length {stated_len} at offset 16 (expected {header_len})"
        )));
    }
    let section_count = rd_u32(bytes, 20);
    let sections = Section::layout(version).len();
    if section_count as usize != sections {
        return Err(corrupt(format!(
            "section count {section_count} at offset 20 (expected {sections})"
        )));
    }
    Ok(version)
}

/// Reads the section table of a header of `version` and checks that the sections lie back to
/// back from the end of the header to the end of the file (for a head: to the start of the
/// windows, which come last; with no extent, only that they are back to back): then every
/// section's range is within the bytes, so the accessors' slicing cannot fail, and no byte of
/// the file is unaccounted for (a truncated or extended file is refused here rather than read
/// wrong later).
fn read_section_table(
    bytes: &[u8],
    version: u32,
    extent: Option<Extent>,
) -> Result<[SectionEntry; SECTION_KINDS], IndexError> {
    let mut sections = [SectionEntry::default(); SECTION_KINDS];
    let fixed = header_fixed_len(version);
    let mut expected_offset = super::header_len(version) as u64;
    for (i, &section) in Section::layout(version).iter().enumerate() {
        let at = fixed + i * SECTION_ENTRY_LEN;
        let name = section.name();
        let s = &mut sections[section as usize];
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
        if section == Section::Windows
            && extent == Some(Extent::Head)
            && s.offset != bytes.len() as u64
        {
            return Err(corrupt(format!(
                "the head is {} bytes but its windows start at offset {} (truncated or \
                 trailing data)",
                bytes.len(),
                s.offset
            )));
        }
        expected_offset = s.offset.checked_add(s.len).ok_or_else(|| {
            corrupt(format!("section {name}: offset {} + length {} overflows", s.offset, s.len))
        })?;
    }
    if extent == Some(Extent::Whole) && expected_offset != bytes.len() as u64 {
        return Err(corrupt(format!(
            "sections end at offset {expected_offset} but the file is {} bytes (truncated or \
             trailing data)",
            bytes.len()
        )));
    }
    Ok(sections)
}

/// Checks that each record section holds exactly its count of records: the accessors find a
/// record by multiplying its number by the record size, and the counts bound every reference
/// that [`super::validate`] checks.
fn check_record_sections(header: &Header) -> Result<(), IndexError> {
    let v2 = header.version >= 2;
    for (section, count, rec) in [
        (Section::Inodes, header.inode_count, INODE_LEN),
        (Section::Attrs, header.attr_count, ATTR_LEN),
        (Section::Dirents, header.dirent_count, DIRENT_LEN),
        (Section::Sparse, header.sparse_count, SPARSE_LEN),
        (Section::Xattrs, header.xattr_count, XATTR_LEN),
        (Section::Points, header.point_count, POINT_LEN),
        (Section::WindowSums, if v2 { header.point_count } else { 0 }, WINDOW_SUM_LEN),
        (Section::Chunks, header.chunk_count, CHUNK_LEN),
    ] {
        let len = header.sections[section as usize].len;
        if len != u64::from(count) * rec as u64 {
            return Err(corrupt(format!(
                "section {} is {len} bytes, expected {count} records of {rec} bytes",
                section.name()
            )));
        }
    }
    Ok(())
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
    for &section in Section::layout(h.version) {
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

/// Recomputes, in place, the CRC-32 of every section the table locates within `bytes` and then
/// the header's, without checking anything else. Returns false if `bytes` is shorter than a
/// header. For tests and fuzzing: it lets forged or mutated bytes through the checksums, so
/// that the structural checks behind them get exercised.
pub fn reseal(bytes: &mut [u8]) -> bool {
    let version = rd_u32(bytes, 8);
    if !(OLDEST_VERSION..=VERSION).contains(&version) {
        return false;
    }
    let (fixed, header_len) = (header_fixed_len(version), super::header_len(version));
    if bytes.len() < header_len {
        return false;
    }
    for i in 0..Section::layout(version).len() {
        let at = fixed + i * SECTION_ENTRY_LEN;
        let range = sub(bytes, rd_u64(bytes, at), rd_u64(bytes, at + 8));
        if let Some(section) = range {
            let crc = crc32fast::hash(section);
            bytes[at + 16..at + 20].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&bytes[..header_len - 4]);
    bytes[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
    true
}
