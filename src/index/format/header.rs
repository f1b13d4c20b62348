//! The header: the fixed fields, the section table and the CRC-32s that guard them.

use super::super::ArchiveIdentity;
use super::{
    corrupt, rd_i64, rd_u32, rd_u64, sub, Section, ATTR_LEN, DIRENT_LEN, HEADER_FIXED_LEN,
    HEADER_LEN, INODE_LEN, MAGIC, POINT_LEN, SECTION_COUNT, SECTION_ENTRY_LEN, SPARSE_LEN, VERSION,
    XATTR_LEN,
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

/// Parses and checks the header: magic, version, length, flags, header CRC-32, the section
/// table (sections back to back after the header, ending at the end of the file, each record
/// section exactly its count times its record size).
pub fn parse_header(bytes: &[u8]) -> Result<Header, IndexError> {
    check_preamble(bytes)?;
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
    let sections = read_section_table(bytes)?;
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
    check_record_sections(&header)?;
    Ok(header)
}

/// Checks what comes before any field is trusted: the magic and the version first (a file that
/// is not an index, or one of another version, is told apart from a corrupt one: the caller
/// rebuilds either way, but the message says which), then the header's length and CRC-32
/// (every later field is read from checked bytes), then the flags, lengths and section count
/// this version knows (nothing unknown is silently ignored).
fn check_preamble(bytes: &[u8]) -> Result<(), IndexError> {
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
    Ok(())
}

/// Reads the section table and checks that the sections lie back to back from the end of the
/// header to the end of the file: then every section's range is within the bytes, so the
/// accessors' slicing cannot fail, and no byte of the file is unaccounted for (a truncated or
/// extended file is refused here rather than read wrong later).
fn read_section_table(bytes: &[u8]) -> Result<[SectionEntry; SECTION_COUNT], IndexError> {
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
    Ok(sections)
}

/// Checks that each record section holds exactly its count of records: the accessors find a
/// record by multiplying its number by the record size, and the counts bound every reference
/// that [`super::validate`] checks.
fn check_record_sections(header: &Header) -> Result<(), IndexError> {
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
