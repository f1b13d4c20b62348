//! The index: an immutable tree of inodes and directory entries plus the gzip access points,
//! built in one pass over the archive, persisted in a versioned, self-checking binary format
//! (see `docs/index-format.md`) and served straight from its bytes.

pub mod builder;
pub mod format;
pub mod open;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub use builder::IndexBuilder;
use format::{AttrRec, ChunkRec, DirentRec, Header, InodeRec, PointRec, Section, XattrRec};
use sha2::{Digest, Sha256};

use crate::archive::{Compression, EntryKind, SparseSegment};
use crate::source::ReadAt;

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

impl PointInfo {
    /// The archive byte that holds the point's first bit: the byte before `compressed` when
    /// bits are primed from it, else `compressed`. A gzip chunk ([`Index::chunk_for`]) starts
    /// there, as the index builder cut it.
    pub fn first_byte(&self) -> u64 {
        if self.bits > 0 && self.has_window {
            self.compressed.saturating_sub(1)
        } else {
            self.compressed
        }
    }
}

/// One chunk of the archive file with the SHA-256 of its bytes (index format version 2). The
/// chunks cover the archive file from byte 0 to its end, back to back: a gzip archive's are its
/// spans (from the byte that holds an access point's first bit to the byte that holds the next
/// one's), a plain tar's are of a fixed size ([`format::plain_chunk_size`]). Bytes of the
/// archive fetched by range are checked by the chunks that hold them before they are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkInfo {
    /// The chunk's number (0-based, in file order).
    pub index: usize,
    /// Offset of its first byte in the archive file.
    pub offset: u64,
    /// Its length in bytes (never 0).
    pub len: u64,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

impl ChunkInfo {
    /// The offset just past the chunk's last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
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
    /// Size of the serialized index in bytes (the whole file, also for an index loaded from
    /// its head).
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
///
/// Loading checks the header, the CRC-32 of every metadata section and every reference once
/// (see [`format::validate`]); the accessors then decode fixed-size records straight from the
/// bytes, and are bounds-checked besides, so no input accepted by [`Index::from_bytes`] or
/// [`Index::from_head`] can make them panic.
///
/// An index loaded from its head ([`Index::from_head`]) holds everything but the windows, and
/// fetches a window from its windows source when a span needs it, checking its SHA-256.
pub struct Index {
    /// The whole file, or (from a head) the file without its windows.
    bytes: Vec<u8>,
    header: Header,
    /// Where the windows come from when `bytes` is only the head: the index file's bytes, at
    /// their offsets in the file.
    windows: Option<Arc<dyn ReadAt>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("bytes", &self.bytes.len())
            .field("head_only", &self.windows.is_some())
            .field("header", &self.header)
            .finish()
    }
}

/// One decoded inode record with its number.
#[derive(Debug, Clone, Copy)]
struct Node {
    ino: Ino,
    rec: InodeRec,
}

impl Index {
    /// Parses and checks serialized index bytes (magic, version, checksums, bounds).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Index, IndexError> {
        let header = format::parse_header(&bytes)?;
        format::check_section_crcs(&bytes, &header)?;
        format::validate(&bytes, &header)?;
        Ok(Index { bytes, header, windows: None })
    }

    /// Parses and checks the head of a version-2 index (its first [`Index::head_len`] bytes:
    /// everything but the windows, which come last) with every check [`Index::from_bytes`]
    /// runs but the windows blob's CRC-32, which no load reads anyway. `windows` reads the
    /// index file's bytes at their offsets in the file (a range of the index object, say); its
    /// length must be the whole file's. A window is fetched from it when a span needs it and
    /// checked against the SHA-256 the head records: a window that does not match is
    /// [`IndexError::Corrupt`], a source that fails is [`IndexError::Io`], never a wrong
    /// window. A version-1 index has no head ([`IndexError::Version`]).
    pub fn from_head(head: Vec<u8>, windows: Arc<dyn ReadAt>) -> Result<Index, IndexError> {
        let header = format::parse_head(&head)?;
        format::check_section_crcs(&head, &header)?;
        format::validate(&head, &header)?;
        if windows.len() != header.file_len() {
            return Err(IndexError::Corrupt(format!(
                "the index file is {} bytes by its header, the windows' source has {}",
                header.file_len(),
                windows.len()
            )));
        }
        Ok(Index { bytes: head, header, windows: Some(windows) })
    }

    /// The head length a version-2 index states in its header, from the file's first bytes (at
    /// least [`format::HEADER_LEN`] of them; the header's own CRC-32 is checked): how many bytes
    /// to fetch for [`Index::from_head`]. A version-1 index is [`IndexError::Version`].
    pub fn peek_head_len(first_bytes: &[u8]) -> Result<u64, IndexError> {
        format::peek_head_len(first_bytes)
    }

    /// The format version of the file this index was loaded from (or [`format::VERSION`]).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// The length of the head (everything but the windows: a prefix of the file) of a
    /// version-2 index; `None` for version 1, which cannot be loaded from a head.
    pub fn head_len(&self) -> Option<u64> {
        self.header.head_len()
    }

    /// The head's bytes (see [`Index::head_len`]), as [`Index::from_head`] takes them; `None`
    /// for version 1.
    pub fn head(&self) -> Option<&[u8]> {
        let len = usize::try_from(self.head_len()?).ok()?;
        self.bytes.get(..len)
    }

    /// True if this index holds its windows (loaded whole or built), false if it was loaded
    /// from its head and fetches them.
    pub fn is_whole(&self) -> bool {
        self.windows.is_none()
    }

    /// Reads and checks the index file at `path`.
    pub fn load(path: &Path) -> Result<Index, IndexError> {
        Index::from_bytes(std::fs::read(path)?)
    }

    /// The serialized bytes, exactly as [`Index::write`] stores them (only the head, for an
    /// index loaded from its head).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Writes the index to `path` atomically: a temporary file in the same directory, written
    /// and fsynced, renamed over `path`, then the directory fsynced. A reader sees either the
    /// old file or the new one, never a partial one.
    pub fn write(&self, path: &Path) -> Result<(), IndexError> {
        if !self.is_whole() {
            return Err(IndexError::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "an index loaded from its head has no windows to write",
            )));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp =
            tempfile::Builder::new().prefix(".addonfs-index-").suffix(".tmp").tempfile_in(dir)?;
        tmp.write_all(&self.bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| IndexError::Io(e.error))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// The archive this index describes.
    pub fn identity(&self) -> ArchiveIdentity {
        self.header.identity
    }

    /// How the archive stores its tar stream.
    pub fn compression(&self) -> Compression {
        self.header.compression
    }

    /// The span the access points were taken at.
    pub fn span(&self) -> u64 {
        self.header.span
    }

    /// Size figures.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            inodes: u64::from(self.header.inode_count),
            dirents: u64::from(self.header.dirent_count),
            points: u64::from(self.header.point_count),
            bytes: self.header.file_len(),
            uncompressed_size: self.header.uncompressed_size,
        }
    }

    /// Non-fatal problems found while indexing (entries dropped, say), kept with the index.
    pub fn warnings(&self) -> Vec<String> {
        let blob = self.section(Section::Warnings);
        let mut out = Vec::new();
        let mut at = 0usize;
        for _ in 0..self.header.warning_count {
            let len = format::rd_u32(blob, at) as usize;
            let Some(text) = at.checked_add(4).and_then(|s| Some(s..s.checked_add(len)?)) else {
                break;
            };
            let Some(text_bytes) = blob.get(text.clone()) else {
                break;
            };
            out.push(String::from_utf8_lossy(text_bytes).into_owned());
            at = text.end;
        }
        out
    }

    /// The attributes of `ino`, or `None` if no such inode.
    pub fn attr(&self, ino: Ino) -> Option<Attr> {
        let Node { ino, rec } = self.node(ino)?;
        let kind = format::kind_from_code(rec.kind)?;
        let start = (rec.attr as usize).checked_mul(format::ATTR_LEN)?;
        let a = AttrRec::decode(self.section(Section::Attrs).get(start..start + format::ATTR_LEN)?);
        let rdev = match kind {
            EntryKind::CharDev | EntryKind::BlockDev => (rec.b, rec.c),
            _ => (0, 0),
        };
        Some(Attr {
            ino,
            kind,
            mode: u32::from(a.mode),
            uid: a.uid,
            gid: a.gid,
            mtime: a.mtime,
            mtime_nsec: a.mtime_nsec,
            size: rec.size,
            nlink: rec.nlink,
            rdev,
        })
    }

    /// The inode named `name` in directory `dir` (binary search over the sorted entries).
    pub fn lookup(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        let (first, count) = self.dir_range(dir)?;
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (entry, ino) = self.dirent(first + mid)?;
            match entry.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(ino),
            }
        }
        None
    }

    /// The inode at a normalized relative `path` (empty or `/`-only means the root); leading
    /// and repeated slashes are ignored. Symlinks are not followed.
    pub fn resolve(&self, path: &[u8]) -> Option<Ino> {
        let mut ino = ROOT_INO;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            ino = self.lookup(ino, comp)?;
        }
        Some(ino)
    }

    /// The parent directory of `dir` (the root is its own parent).
    pub fn parent(&self, dir: Ino) -> Option<Ino> {
        let node = self.node(dir)?;
        (node.rec.kind == format::KIND_DIR).then_some(Ino::from(node.rec.c))
    }

    /// The number of entries in directory `dir` (0 if `dir` is not a directory).
    pub fn child_count(&self, dir: Ino) -> usize {
        self.dir_range(dir).map_or(0, |(_, count)| count)
    }

    /// The entries of directory `dir`, sorted by name, starting after the first `skip`.
    pub fn children(&self, dir: Ino, skip: usize) -> impl Iterator<Item = (&[u8], Ino)> + '_ {
        let (first, count) = self.dir_range(dir).unwrap_or((0, 0));
        (skip.min(count)..count).filter_map(move |i| self.dirent(first + i))
    }

    /// The target of symlink `ino`.
    pub fn symlink_target(&self, ino: Ino) -> Option<&[u8]> {
        let node = self.node(ino)?;
        if node.rec.kind != format::KIND_SYMLINK {
            return None;
        }
        format::sub(self.section(Section::Strings), node.rec.a, u64::from(node.rec.b))
    }

    /// The extended attributes of `ino` (name, value), in archive order.
    pub fn xattrs(&self, ino: Ino) -> Vec<(&[u8], &[u8])> {
        let Ok(ino) = u32::try_from(ino) else {
            return Vec::new();
        };
        let recs = self.section(Section::Xattrs);
        let strings = self.section(Section::Strings);
        let count = recs.len() / format::XATTR_LEN;
        let owner = |i: usize| format::rd_u32(recs, i * format::XATTR_LEN);
        // First record whose owner is >= ino.
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if owner(mid) < ino {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        for i in lo..count {
            let Some(rec) = recs.get(i * format::XATTR_LEN..(i + 1) * format::XATTR_LEN) else {
                break;
            };
            let x = XattrRec::decode(rec);
            if x.ino != ino {
                break;
            }
            let name = format::sub(strings, u64::from(x.name_off), u64::from(x.name_len));
            let value = format::sub(strings, u64::from(x.value_off), u64::from(x.value_len));
            if let (Some(name), Some(value)) = (name, value) {
                out.push((name, value));
            }
        }
        out
    }

    /// Where the bytes of `ino` are ([`Data::None`] for anything but a regular file with data,
    /// or an unknown inode).
    pub fn data(&self, ino: Ino) -> Data {
        let Some(Node { rec, .. }) = self.node(ino) else {
            return Data::None;
        };
        if rec.kind != format::KIND_FILE {
            return Data::None;
        }
        match rec.data {
            format::DATA_CONTIGUOUS => Data::Contiguous(rec.a),
            format::DATA_SPARSE => {
                let recs = self.section(Section::Sparse);
                let segs = rec
                    .a
                    .checked_mul(format::SPARSE_LEN as u64)
                    .and_then(|start| {
                        format::sub(recs, start, u64::from(rec.b) * format::SPARSE_LEN as u64)
                    })
                    .unwrap_or(&[]);
                Data::Sparse(
                    segs.chunks_exact(format::SPARSE_LEN)
                        .map(|r| {
                            let s = format::SparseRec::decode(r);
                            SparseSegment {
                                logical: s.logical,
                                len: s.len,
                                stream_offset: s.stream_offset,
                            }
                        })
                        .collect(),
                )
            }
            _ => Data::None,
        }
    }

    /// Number of gzip access points.
    pub fn point_count(&self) -> usize {
        self.section(Section::Points).len() / format::POINT_LEN
    }

    /// Access point `i`, or `None` if `i >= point_count()`.
    pub fn get_point(&self, i: usize) -> Option<PointInfo> {
        let p = self.point_rec(i)?;
        Some(PointInfo {
            uncompressed: p.uncompressed,
            compressed: p.compressed,
            bits: p.bits,
            has_window: p.window_len != 0,
        })
    }

    /// Access point `i`.
    ///
    /// # Panics
    ///
    /// If `i >= point_count()` (a caller bug, like indexing a slice out of bounds; use
    /// [`Index::get_point`] for a checked access). Indexes from [`Index::point_for`] are always
    /// in range.
    pub fn point(&self, i: usize) -> PointInfo {
        match self.get_point(i) {
            Some(p) => p,
            None => panic!("access point {i} out of range ({} points)", self.point_count()),
        }
    }

    /// The index of the last access point at or before uncompressed offset `offset`.
    pub fn point_for(&self, offset: u64) -> Option<usize> {
        let recs = self.section(Section::Points);
        let count = recs.len() / format::POINT_LEN;
        // Number of points with uncompressed <= offset.
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if format::rd_u64(recs, mid * format::POINT_LEN) <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// The window of access point `i`, decompressed and checked (zlib's Adler-32, and the length
    /// recorded for it, at most 32 KiB). Empty for a point at a gzip member start.
    pub fn point_window(&self, i: usize) -> Result<Vec<u8>, IndexError> {
        let p = self.point_rec(i).ok_or_else(|| {
            IndexError::Corrupt(format!(
                "access point {i} out of range ({} points)",
                self.point_count()
            ))
        })?;
        if p.window_len == 0 {
            return Ok(Vec::new());
        }
        let windows_offset = self.header.sections[Section::Windows as usize].offset;
        let bad = |what: String| {
            IndexError::Corrupt(format!(
                "window of access point {i} (file offset {}, {} compressed bytes): {what}",
                windows_offset.saturating_add(p.window_off),
                p.window_zlen
            ))
        };
        let fetched;
        let input = match &self.windows {
            None => {
                format::sub(self.section(Section::Windows), p.window_off, u64::from(p.window_zlen))
                    .ok_or_else(|| bad("out of bounds".into()))?
            }
            Some(source) => {
                let mut buf = vec![0u8; p.window_zlen as usize];
                source.read_exact_at(&mut buf, windows_offset.saturating_add(p.window_off))?;
                fetched = buf;
                &fetched[..]
            }
        };
        if let Some(want) = self.window_sum(i) {
            let got: [u8; 32] = Sha256::digest(input).into();
            if got != want {
                return Err(bad(
                    "SHA-256 mismatch (the stored window is not the indexed one)".into()
                ));
            }
        }
        let want = usize::from(p.window_len);
        let mut out = Vec::with_capacity(want);
        let mut z = flate2::Decompress::new(true);
        let status = z
            .decompress_vec(input, &mut out, flate2::FlushDecompress::Finish)
            .map_err(|e| bad(format!("zlib error: {e}")))?;
        if status != flate2::Status::StreamEnd {
            return Err(bad(format!(
                "zlib stream does not end within {want} bytes (truncated or too long)"
            )));
        }
        if z.total_in() != u64::from(p.window_zlen) || out.len() != want {
            return Err(bad(format!(
                "decompressed {} bytes from {} input bytes (expected {want} from {})",
                out.len(),
                z.total_in(),
                p.window_zlen
            )));
        }
        Ok(out)
    }

    /// Checks the CRC-32 of the windows blob, which loading skips (each window is checked by
    /// its Adler-32, and in version 2 its SHA-256, when used). For a full offline
    /// verification; an index loaded from its head fetches the whole blob for it.
    pub fn verify_windows(&self) -> Result<(), IndexError> {
        let entry = self.header.sections[Section::Windows as usize];
        let fetched;
        let blob = match &self.windows {
            None => self.section(Section::Windows),
            Some(source) => {
                let len = usize::try_from(entry.len).map_err(|_| {
                    IndexError::Corrupt(format!("windows section of {} bytes", entry.len))
                })?;
                let mut buf = vec![0u8; len];
                source.read_exact_at(&mut buf, entry.offset)?;
                fetched = buf;
                &fetched[..]
            }
        };
        let computed = crc32fast::hash(blob);
        if computed != entry.crc {
            return Err(IndexError::Corrupt(format!(
                "section windows (offset {}, length {}): crc32 mismatch, stored {:08x}, \
                 computed {computed:08x}",
                entry.offset, entry.len, entry.crc
            )));
        }
        Ok(())
    }

    /// The number of chunks of the archive (0 for a version-1 index, or one built without
    /// checksums of the archive's bytes: such an index cannot check ranges).
    pub fn chunk_count(&self) -> usize {
        self.section(Section::Chunks).len() / format::CHUNK_LEN
    }

    /// Chunk `i`, or `None` if `i >= chunk_count()`.
    pub fn chunk(&self, i: usize) -> Option<ChunkInfo> {
        let rec = |i: usize| {
            let start = i.checked_mul(format::CHUNK_LEN)?;
            let bytes = self.section(Section::Chunks).get(start..start + format::CHUNK_LEN)?;
            Some(ChunkRec::decode(bytes))
        };
        let this = rec(i)?;
        let end = match rec(i + 1) {
            Some(next) => next.offset,
            None => self.header.identity.size,
        };
        Some(ChunkInfo {
            index: i,
            offset: this.offset,
            // Validation made the offsets strictly increasing and below the archive's size.
            len: end.saturating_sub(this.offset),
            sha256: this.sha256,
        })
    }

    /// The chunk holding byte `offset` of the archive file, or `None` past its end (or if the
    /// index has no chunks: see [`Index::chunk_count`]). The chunks cover the archive with no
    /// gap, so the chunks that hold a range are `chunk_for(start)` up to `chunk_for(end - 1)`.
    pub fn chunk_for(&self, offset: u64) -> Option<ChunkInfo> {
        if offset >= self.header.identity.size {
            return None;
        }
        let recs = self.section(Section::Chunks);
        let count = recs.len() / format::CHUNK_LEN;
        // Number of chunks starting at or before offset.
        let (mut lo, mut hi) = (0usize, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if format::rd_u64(recs, mid * format::CHUNK_LEN) <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.chunk(lo.checked_sub(1)?)
    }

    /// Every chunk, in file order.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkInfo> + '_ {
        (0..self.chunk_count()).filter_map(|i| self.chunk(i))
    }

    /// The recorded SHA-256 of point `i`'s stored window (version 2).
    fn window_sum(&self, i: usize) -> Option<[u8; 32]> {
        let start = i.checked_mul(format::WINDOW_SUM_LEN)?;
        let sum = self.section(Section::WindowSums).get(start..start + format::WINDOW_SUM_LEN)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(sum);
        Some(out)
    }

    fn section(&self, s: Section) -> &[u8] {
        self.bytes.get(format::section_range(&self.header, s)).unwrap_or(&[])
    }

    fn node(&self, ino: Ino) -> Option<Node> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        let start = i.checked_mul(format::INODE_LEN)?;
        let rec = self.section(Section::Inodes).get(start..start + format::INODE_LEN)?;
        Some(Node { ino, rec: InodeRec::decode(rec) })
    }

    /// First dirent index and count of directory `dir`.
    fn dir_range(&self, dir: Ino) -> Option<(usize, usize)> {
        let node = self.node(dir)?;
        if node.rec.kind != format::KIND_DIR {
            return None;
        }
        Some((usize::try_from(node.rec.a).ok()?, node.rec.b as usize))
    }

    fn dirent(&self, i: usize) -> Option<(&[u8], Ino)> {
        let start = i.checked_mul(format::DIRENT_LEN)?;
        let rec =
            self.section(Section::Dirents).get(start..start.checked_add(format::DIRENT_LEN)?)?;
        let d = DirentRec::decode(rec);
        let name = format::read_name(self.section(Section::Strings), d.name_off)?;
        Some((name, Ino::from(d.ino)))
    }

    fn point_rec(&self, i: usize) -> Option<PointRec> {
        let start = i.checked_mul(format::POINT_LEN)?;
        let rec =
            self.section(Section::Points).get(start..start.checked_add(format::POINT_LEN)?)?;
        Some(PointRec::decode(rec))
    }
}
