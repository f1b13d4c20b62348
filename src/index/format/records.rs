//! The fixed-size records of the sections, decoded from and encoded to their bytes.

use super::{
    rd_i64, rd_u16, rd_u32, rd_u64, DATA_SPARSE, KIND_BLOCKDEV, KIND_CHARDEV, KIND_DIR, KIND_FILE,
    KIND_SYMLINK,
};

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
    /// Decodes a record from (at least) [`INODE_LEN`](super::INODE_LEN) bytes.
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
    /// Decodes a record from (at least) [`ATTR_LEN`](super::ATTR_LEN) bytes.
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
    /// Decodes a record from (at least) [`DIRENT_LEN`](super::DIRENT_LEN) bytes.
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
    /// Decodes a record from (at least) [`SPARSE_LEN`](super::SPARSE_LEN) bytes.
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
    /// Decodes a record from (at least) [`XATTR_LEN`](super::XATTR_LEN) bytes.
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
    /// Decodes a record from (at least) [`POINT_LEN`](super::POINT_LEN) bytes.
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

/// One chunk of the archive file (40 bytes): where it starts (it ends where the next one
/// starts, the last one at the end of the archive) and the SHA-256 of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkRec {
    /// Offset of the chunk's first byte in the archive file.
    pub offset: u64,
    /// SHA-256 of the chunk's bytes.
    pub sha256: [u8; 32],
}

impl ChunkRec {
    /// Decodes a record from (at least) [`CHUNK_LEN`](super::CHUNK_LEN) bytes.
    #[inline]
    pub fn decode(r: &[u8]) -> ChunkRec {
        let mut sha256 = [0u8; 32];
        if let Some(sum) = r.get(8..40) {
            sha256.copy_from_slice(sum);
        }
        ChunkRec { offset: rd_u64(r, 0), sha256 }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.sha256);
    }
}
