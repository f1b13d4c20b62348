//! The load-time check of every reference of every record, once, so that no accessor can read
//! out of bounds or loop. One pass of integer checks over the records, no allocation; each rule
//! is one function below, named for what it checks, in the order the records are met.

use super::{
    corrupt, read_name, section_range, sub, ChunkRec, DirentRec, Header, InodeRec, PointRec,
    Section, SparseRec, XattrRec, CHUNK_LEN, DATA_CONTIGUOUS, DATA_NONE, DATA_SPARSE, DIRENT_LEN,
    INODE_LEN, KIND_BLOCKDEV, KIND_CHARDEV, KIND_DIR, KIND_FIFO, KIND_FILE, KIND_SYMLINK,
    MAX_WINDOW, POINT_LEN, SPARSE_LEN, XATTR_LEN,
};
use crate::index::IndexError;

/// Checks every reference of every record once, so that no accessor can read out of bounds or
/// loop: inode kinds and data kinds, attribute indexes, data ranges within the uncompressed
/// stream, dirent and sparse ranges laid out in inode order and covering their sections
/// exactly, directory parents (the root is its own parent, any other directory's parent is a
/// smaller-numbered directory that lists it), names and string references, xattr owners
/// (sorted), and access points (strictly increasing, windows back to back, at most 32 KiB
/// each). One pass of integer checks over the records, no allocation.
pub fn validate(bytes: &[u8], h: &Header) -> Result<(), IndexError> {
    let v = View::new(bytes, h);
    if v.n == 0 {
        return Err(corrupt("no inodes (the root is missing)".into()));
    }
    check_inodes(&v)?;
    check_xattrs(&v)?;
    check_points(&v)?;
    check_chunks(&v)
}

/// The sections of the index being checked, and the figures every check compares against.
struct View<'a> {
    h: &'a Header,
    inodes: &'a [u8],
    dirents: &'a [u8],
    strings: &'a [u8],
    sparse: &'a [u8],
    xattrs: &'a [u8],
    points: &'a [u8],
    chunks: &'a [u8],
    /// The number of inodes.
    n: u64,
    /// The size of the uncompressed stream.
    total: u64,
}

impl<'a> View<'a> {
    fn new(bytes: &'a [u8], h: &'a Header) -> View<'a> {
        let sec = |s: Section| bytes.get(section_range(h, s)).unwrap_or(&[]);
        View {
            h,
            inodes: sec(Section::Inodes),
            dirents: sec(Section::Dirents),
            strings: sec(Section::Strings),
            sparse: sec(Section::Sparse),
            xattrs: sec(Section::Xattrs),
            points: sec(Section::Points),
            chunks: sec(Section::Chunks),
            n: u64::from(h.inode_count),
            total: h.uncompressed_size,
        }
    }

    /// True if `[off, off + len)` is within the strings blob.
    fn in_strings(&self, off: u32, len: u32) -> bool {
        u64::from(off) + u64::from(len) <= self.strings.len() as u64
    }

    /// The record of inode `ino` (an all-zero record, which no check accepts as a directory,
    /// when out of range).
    fn record(&self, ino: u32) -> InodeRec {
        let at = (ino as usize).wrapping_sub(1).wrapping_mul(INODE_LEN);
        InodeRec::decode(self.inodes.get(at..).unwrap_or(&[]))
    }
}

/// Where the next directory's dirents and the next sparse file's segments must start: both are
/// laid out in inode order, back to back, so each range is checked against the end of the one
/// before (no overlap, no gap) and, at the end, against the section's record count.
#[derive(Default)]
struct Cursors {
    dirent: u64,
    sparse: u64,
}

/// Checks every inode record, then that the root is a directory and that the directories and
/// sparse files, together, reference exactly the records their sections hold.
fn check_inodes(v: &View<'_>) -> Result<(), IndexError> {
    let inodes_offset = v.h.sections[Section::Inodes as usize].offset;
    let mut next = Cursors::default();
    for (i, rec) in v.inodes.chunks_exact(INODE_LEN).enumerate() {
        let ino = i as u64 + 1;
        check_inode(v, ino, &InodeRec::decode(rec), &mut next).map_err(|what| {
            corrupt(format!(
                "inode {ino} (offset {}): {what}",
                inodes_offset + i as u64 * INODE_LEN as u64
            ))
        })?;
    }
    if v.record(1).kind != KIND_DIR {
        return Err(corrupt("inode 1 (the root) is not a directory".into()));
    }
    if next.dirent != u64::from(v.h.dirent_count) {
        return Err(corrupt(format!(
            "directories reference {} dirents but the section holds {}",
            next.dirent, v.h.dirent_count
        )));
    }
    if next.sparse != u64::from(v.h.sparse_count) {
        return Err(corrupt(format!(
            "files reference {} sparse segments but the section holds {}",
            next.sparse, v.h.sparse_count
        )));
    }
    Ok(())
}

/// Checks one inode record: what every inode needs (a link, an attribute tuple, data only on
/// a regular file), then what its kind references. `Err` carries what is wrong, which the
/// caller prefixes with the inode and its offset.
fn check_inode(v: &View<'_>, ino: u64, r: &InodeRec, next: &mut Cursors) -> Result<(), String> {
    if r.nlink == 0 {
        return Err("link count is zero".into());
    }
    if r.attr >= v.h.attr_count {
        return Err(format!("attribute index {} out of range", r.attr));
    }
    if r.kind != KIND_FILE && r.data != DATA_NONE {
        return Err("data reference on an inode that is not a regular file".into());
    }
    match r.kind {
        KIND_FILE => check_file_data(v, r, &mut next.sparse),
        KIND_DIR => check_directory(v, ino, r, &mut next.dirent),
        KIND_SYMLINK => check_symlink(v, r),
        KIND_CHARDEV | KIND_BLOCKDEV | KIND_FIFO => Ok(()),
        other => Err(format!("unknown kind {other}")),
    }
}

/// Checks where a regular file's bytes are: contiguous data lies within the uncompressed
/// stream (a read then never asks the reader for bytes past its end), sparse data is a
/// checked run of segments.
fn check_file_data(v: &View<'_>, r: &InodeRec, next_sparse: &mut u64) -> Result<(), String> {
    match r.data {
        DATA_NONE => Ok(()),
        DATA_CONTIGUOUS => {
            if r.a.checked_add(r.size).is_none_or(|end| end > v.total) {
                return Err(format!(
                    "data {}+{} runs past the uncompressed stream ({} bytes)",
                    r.a, r.size, v.total
                ));
            }
            Ok(())
        }
        DATA_SPARSE => check_sparse_segments(v, r, next_sparse),
        other => Err(format!("unknown data kind {other}")),
    }
}

/// Checks a sparse file's segments: they start where the previous sparse file's end (so every
/// segment belongs to one file), and each lies after the one before, within the file's size
/// and within the stream (the read path walks them in order and zero-fills the gaps).
fn check_sparse_segments(v: &View<'_>, r: &InodeRec, next_sparse: &mut u64) -> Result<(), String> {
    if r.a != *next_sparse {
        return Err(format!("sparse segments start at {} (expected {next_sparse})", r.a));
    }
    *next_sparse += u64::from(r.b);
    if *next_sparse > u64::from(v.h.sparse_count) {
        return Err("sparse segment range runs past the sparse section".into());
    }
    let segs =
        sub(v.sparse, r.a * SPARSE_LEN as u64, u64::from(r.b) * SPARSE_LEN as u64).unwrap_or(&[]);
    let mut prev_end = 0u64;
    for seg in segs.chunks_exact(SPARSE_LEN) {
        let s = SparseRec::decode(seg);
        let ok = s.logical >= prev_end
            && s.logical.checked_add(s.len).is_some_and(|e| e <= r.size)
            && s.stream_offset.checked_add(s.len).is_some_and(|e| e <= v.total);
        if !ok {
            return Err(format!(
                "sparse segment (logical {}, length {}, stream offset {}) is out of order or \
                 out of bounds",
                s.logical, s.len, s.stream_offset
            ));
        }
        prev_end = s.logical + s.len;
    }
    Ok(())
}

/// Checks a directory: its dirents start where the previous directory's end, and its parent is
/// the root's own number for the root, else a smaller-numbered directory. Parents pointing
/// down the numbering would let `..` walk in a circle; the dirents' side of the same rule is in
/// [`check_dirents`].
fn check_directory(
    v: &View<'_>,
    ino: u64,
    r: &InodeRec,
    next_dirent: &mut u64,
) -> Result<(), String> {
    if r.a != *next_dirent {
        return Err(format!("dirents start at {} (expected {next_dirent})", r.a));
    }
    *next_dirent += u64::from(r.b);
    if *next_dirent > u64::from(v.h.dirent_count) {
        return Err("dirent range runs past the dirents section".into());
    }
    let parent_ok = if ino == 1 {
        r.c == 1
    } else {
        r.c >= 1 && u64::from(r.c) < ino && v.record(r.c).kind == KIND_DIR
    };
    if !parent_ok {
        return Err(format!("bad parent directory {}", r.c));
    }
    check_dirents(v, ino, r)
}

/// Checks a directory's entries: each has a non-empty name in the strings blob and a child
/// inode in range, and a child directory is numbered after this one and names it as its
/// parent (so the tree is a tree: every directory is listed by exactly the parent it names).
fn check_dirents(v: &View<'_>, ino: u64, r: &InodeRec) -> Result<(), String> {
    let ents =
        sub(v.dirents, r.a * DIRENT_LEN as u64, u64::from(r.b) * DIRENT_LEN as u64).unwrap_or(&[]);
    for (j, ent) in ents.chunks_exact(DIRENT_LEN).enumerate() {
        let d = DirentRec::decode(ent);
        let which = r.a + j as u64;
        if read_name(v.strings, d.name_off).is_none_or(<[u8]>::is_empty) {
            return Err(format!("dirent {which}: bad name reference"));
        }
        if d.ino == 0 || u64::from(d.ino) > v.n {
            return Err(format!("dirent {which}: child inode {} out of range", d.ino));
        }
        let child = v.record(d.ino);
        if child.kind == KIND_DIR && (u64::from(d.ino) <= ino || u64::from(child.c) != ino) {
            return Err(format!(
                "dirent {which}: directory {} does not have this directory as its parent",
                d.ino
            ));
        }
    }
    Ok(())
}

/// Checks a symlink's target: it lies within the strings blob and its length is the size that
/// `stat` shows (`readlink` answers exactly `size` bytes).
fn check_symlink(v: &View<'_>, r: &InodeRec) -> Result<(), String> {
    let fits = u32::try_from(r.a).is_ok_and(|off| v.in_strings(off, r.b));
    if !fits || r.size != u64::from(r.b) {
        return Err("bad symlink target reference".into());
    }
    Ok(())
}

/// Checks the extended attributes: sorted by owner (the accessor finds an inode's attributes
/// by binary search), owners in range, names and values within the strings blob.
fn check_xattrs(v: &View<'_>) -> Result<(), IndexError> {
    let mut prev_ino = 0u32;
    for (i, rec) in v.xattrs.chunks_exact(XATTR_LEN).enumerate() {
        let x = XattrRec::decode(rec);
        if x.ino < prev_ino
            || x.ino == 0
            || u64::from(x.ino) > v.n
            || !v.in_strings(x.name_off, x.name_len)
            || !v.in_strings(x.value_off, x.value_len)
        {
            return Err(corrupt(format!(
                "xattr record {i} (inode {}): bad owner or string reference",
                x.ino
            )));
        }
        prev_ino = x.ino;
    }
    Ok(())
}

/// The most bytes a stored window can take: zlib never makes 32 KiB bigger than stored blocks
/// (5 bytes a block) plus its 6-byte frame; the margin is generous. Bounding it keeps a forged
/// head from making a node fetch (and allocate) gigabytes for one window.
const MAX_STORED_WINDOW: usize = MAX_WINDOW + 1024;

/// Checks the access points: strictly increasing uncompressed offsets within the stream (the
/// reader binary-searches them), at most 7 priming bits and the reserved byte zero, windows of
/// at most 32 KiB laid back to back that cover the windows blob exactly (each window is then
/// located by its offset alone, and its own Adler-32 is checked when it is inflated).
fn check_points(v: &View<'_>) -> Result<(), IndexError> {
    let windows_len = v.h.sections[Section::Windows as usize].len;
    let mut next_window = 0u64;
    let mut prev: Option<u64> = None;
    for (i, rec) in v.points.chunks_exact(POINT_LEN).enumerate() {
        let p = PointRec::decode(rec);
        let bad = |what: &str| corrupt(format!("access point {i}: {what}"));
        if prev.is_some_and(|u| p.uncompressed <= u) {
            return Err(bad("uncompressed offsets not strictly increasing"));
        }
        prev = Some(p.uncompressed);
        if p.uncompressed > v.total {
            return Err(bad("uncompressed offset past the end of the stream"));
        }
        if p.bits > 7 || rec.get(31).copied().unwrap_or(0) != 0 {
            return Err(bad("bit count over 7 or reserved byte set"));
        }
        if usize::from(p.window_len) > MAX_WINDOW
            || (p.window_len == 0) != (p.window_zlen == 0)
            || p.window_zlen as usize > MAX_STORED_WINDOW
        {
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

/// Checks the chunks of the archive (version 2): none (the builder was given no checksums, so
/// nothing can be read lazily), or offsets strictly increasing from 0 with the last one before
/// the end of the archive, so that the chunks cover the archive file exactly, with no gap and
/// no empty chunk, and [`crate::index::Index::chunk_for`] finds one for every byte.
fn check_chunks(v: &View<'_>) -> Result<(), IndexError> {
    let size = v.h.identity.size;
    let mut prev: Option<u64> = None;
    for (i, rec) in v.chunks.chunks_exact(CHUNK_LEN).enumerate() {
        let offset = ChunkRec::decode(rec).offset;
        let ok = match prev {
            None => offset == 0,
            Some(p) => offset > p,
        };
        if !ok || offset >= size {
            return Err(corrupt(format!(
                "chunk {i} at archive offset {offset}: chunks must start at 0 and increase \
                 strictly within the archive ({size} bytes)"
            )));
        }
        prev = Some(offset);
    }
    Ok(())
}
