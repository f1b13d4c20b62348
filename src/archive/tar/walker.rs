//! The walk itself: reads header blocks, gathers extended headers, decodes each entry, skips
//! its data in place and reports it.

use std::fmt::{self, Display};
use std::io::BufRead;

use super::header::{self, field, Block, Format, BLOCK};
use super::path::{has_trailing_slash, normalize};
use super::pax::{dedup_xattrs, Overrides, PaxHeader};
use super::sparse::{self, MapText};
use super::stream::Stream;
use super::TarError;
use crate::archive::{DataLayout, EntryKind, ScanError, ScannedEntry};
use crate::limits::Limits;

fn tar_err(offset: u64, reason: impl Into<String>) -> ScanError {
    ScanError::Tar(TarError { offset, reason: reason.into() })
}

/// A name for messages: lossy UTF-8, shortened.
fn show(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(&name[..name.len().min(200)]);
    if name.len() > 200 {
        format!("{s:?}...")
    } else {
        format!("{s:?}")
    }
}

/// "the data of entry NAME", formatted only when an error needs it.
struct DataOf<'a>(&'a [u8]);

impl Display for DataOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the data of entry {}", show(self.0))
    }
}

/// "the sparse map of entry NAME", formatted only when an error needs it.
struct MapOf<'a>(&'a [u8]);

impl Display for MapOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the sparse map of entry {}", show(self.0))
    }
}

/// `size` rounded up to whole blocks, or `None` on overflow.
fn padded(size: u64) -> Option<u64> {
    size.checked_add(BLOCK as u64 - 1).map(|s| s & !(BLOCK as u64 - 1))
}

/// Extended headers read ahead of an entry's own header.
#[derive(Default)]
struct Pending {
    /// Offset of the first of them.
    start: Option<u64>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<PaxHeader>,
}

/// The walk's state.
pub(super) struct Walker<'a, R: BufRead> {
    s: Stream<'a, R>,
    limits: &'a Limits,
    on_entry: &'a mut dyn FnMut(ScannedEntry) -> Result<(), ScanError>,
    on_warning: &'a mut dyn FnMut(String),
    /// The records of the last PAX global header, applied.
    globals: Overrides,
    pending: Pending,
    /// Real entries seen (reported or dropped).
    entries: u64,
}

/// How the entry's data is stored.
enum Storage {
    /// Contiguous bytes (or none).
    Plain,
    /// Old-GNU sparse (`S`): the map is in the header and extension blocks.
    OldGnuSparse,
    /// PAX sparse: the map is in the records (0.x) or at the start of the data (1.0).
    PaxSparse,
}

impl<'a, R: BufRead> Walker<'a, R> {
    pub fn new(
        input: &'a mut R,
        limits: &'a Limits,
        on_entry: &'a mut dyn FnMut(ScannedEntry) -> Result<(), ScanError>,
        on_warning: &'a mut dyn FnMut(String),
    ) -> Self {
        Walker {
            s: Stream::new(input),
            limits,
            on_entry,
            on_warning,
            globals: Overrides::default(),
            pending: Pending::default(),
            entries: 0,
        }
    }

    /// Walks to the end of the input; returns the bytes consumed.
    pub fn run(mut self) -> Result<u64, ScanError> {
        let mut blk: Block = [0; BLOCK];
        // True once an end-of-archive block was seen (and no header since).
        let mut after_end = false;
        loop {
            let at = self.s.pos;
            let n = self.s.read_full(&mut blk)?;
            if n == BLOCK && header::is_zero(&blk) {
                if let Some(start) = self.pending.start {
                    return Err(tar_err(
                        start,
                        "extended header is followed by an end-of-archive block, not by its entry",
                    ));
                }
                after_end = true;
                continue;
            }
            if n < BLOCK {
                if let Some(start) = self.pending.start {
                    return Err(tar_err(
                        start,
                        format!("archive is truncated: extended header is not followed by its entry (input ends at {})", self.s.pos),
                    ));
                }
                if n == 0 {
                    if !after_end {
                        (self.on_warning)(format!(
                            "archive ends at offset {at} without end-of-archive blocks"
                        ));
                    }
                    return Ok(self.s.pos);
                }
                if after_end && header::is_zero(&blk[..n]) {
                    return Ok(self.s.pos);
                }
                if after_end {
                    return Err(tar_err(at, "trailing garbage after end of archive"));
                }
                return Err(tar_err(
                    at,
                    format!("archive is truncated: header block has only {n} of {BLOCK} bytes"),
                ));
            }
            if let Err(reason) = header::check_checksum(&blk) {
                if after_end {
                    return Err(tar_err(
                        at,
                        format!("trailing garbage after end of archive ({reason})"),
                    ));
                }
                return Err(tar_err(at, reason));
            }
            after_end = false;
            match blk[field::TYPEFLAG] {
                b'L' | b'K' | b'x' | b'X' | b'g' => self.extended(&blk, at)?,
                _ => {
                    let pending = std::mem::take(&mut self.pending);
                    self.entry(&blk, at, pending)?;
                }
            }
        }
    }

    /// Reads exactly `buf.len()` bytes or fails with a truncation error about `what`.
    fn read_exact(&mut self, buf: &mut [u8], at: u64, what: impl Display) -> Result<(), ScanError> {
        let got = self.s.read_full(buf)?;
        if got < buf.len() {
            return Err(tar_err(
                at,
                format!("archive is truncated inside {what} (input ends at {})", self.s.pos),
            ));
        }
        Ok(())
    }

    /// Skips exactly `n` bytes or fails with a truncation error about `what`.
    fn skip_exact(&mut self, n: u64, at: u64, what: impl Display) -> Result<(), ScanError> {
        if self.s.skip(n)? < n {
            return Err(tar_err(
                at,
                format!("archive is truncated inside {what} (input ends at {})", self.s.pos),
            ));
        }
        Ok(())
    }

    /// A GNU long name/link or a PAX header: read its data and keep it for the next entry
    /// (or, for a PAX global header, for every later entry).
    fn extended(&mut self, b: &Block, at: u64) -> Result<(), ScanError> {
        let ty = b[field::TYPEFLAG];
        let what = match ty {
            b'L' => "GNU long name",
            b'K' => "GNU long link name",
            b'g' => "PAX global header",
            _ => "PAX extended header",
        };
        let size = header::unsigned(&b[field::SIZE], u64::MAX, "size")
            .map_err(|e| tar_err(at, format!("{what}: {e}")))?;
        let limit = self.limits.max_header_bytes;
        let len = usize::try_from(size).ok().filter(|_| size <= limit);
        let Some(len) = len else {
            return Err(ScanError::Limit { what, limit, offset: at });
        };
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf, at, what)?;
        // No overflow: size <= max_header_bytes, a u64 far from its end in practice; checked.
        let pad =
            padded(size).ok_or_else(|| tar_err(at, format!("{what}: size overflows")))? - size;
        self.skip_exact(pad, at, what)?;
        let bad = |e: String| tar_err(at, format!("{what}: {e}"));
        match ty {
            b'L' => self.pending.long_name = Some(header::cstr(&buf).to_vec()),
            b'K' => self.pending.long_link = Some(header::cstr(&buf).to_vec()),
            b'g' => {
                let h = PaxHeader::parse(buf).map_err(bad)?;
                let mut globals = Overrides::default();
                globals.apply_all(&h).map_err(bad)?;
                self.globals = globals;
                return Ok(());
            }
            _ => {
                // Its values are checked when applied to the entry (errors at `start`).
                self.pending.pax = Some(PaxHeader::parse(buf).map_err(bad)?);
            }
        }
        self.pending.start.get_or_insert(at);
        Ok(())
    }

    /// A real entry's header at `at`, with the extended headers read before it.
    fn entry(&mut self, b: &Block, at: u64, p: Pending) -> Result<(), ScanError> {
        let start = p.start.unwrap_or(at);
        let ty = b[field::TYPEFLAG];
        let mut ext = self.globals.clone();
        if let Some(x) = &p.pax {
            ext.apply_all(x).map_err(|e| tar_err(start, format!("PAX extended header: {e}")))?;
        }
        let regular = matches!(ty, b'0' | 0 | b'7');
        let pax_sparse = regular && ext.sparse.is_sparse();
        let name = match (pax_sparse, ext.sparse.name.take(), ext.path.take(), p.long_name) {
            (true, Some(n), _, _) => n,
            (_, _, Some(n), _) | (_, _, None, Some(n)) => n,
            _ => header::name(b),
        };
        let fail = |reason: String| tar_err(at, format!("entry {}: {reason}", show(&name)));

        // Hard links have no data on tape (GNU tar), unless a PAX size says otherwise.
        let stored = match ext.size {
            Some(s) => s,
            None if ty == b'1' => 0,
            None => header::unsigned(&b[field::SIZE], u64::MAX, "size").map_err(fail)?,
        };
        let (kind, storage) = match ty {
            b'0' | 0 | b'7' if has_trailing_slash(&name) => (EntryKind::Dir, Storage::Plain),
            b'0' | 0 | b'7' if pax_sparse => (EntryKind::File, Storage::PaxSparse),
            b'0' | 0 | b'7' => (EntryKind::File, Storage::Plain),
            b'1' => (EntryKind::Hardlink, Storage::Plain),
            b'2' => (EntryKind::Symlink, Storage::Plain),
            b'3' => (EntryKind::CharDev, Storage::Plain),
            b'4' => (EntryKind::BlockDev, Storage::Plain),
            b'5' | b'D' => (EntryKind::Dir, Storage::Plain),
            b'6' => (EntryKind::Fifo, Storage::Plain),
            b'S' => (EntryKind::File, Storage::OldGnuSparse),
            b'M' => return Err(fail("multi-volume continuation entries are not supported".into())),
            b'V' | b'N' => {
                let what = if ty == b'V' { "volume label" } else { "old GNU names entry" };
                if ty == b'N' {
                    (self.on_warning)(format!("entry at offset {start}: {what} skipped"));
                }
                let skip = padded(stored).ok_or_else(|| fail("size overflows".into()))?;
                return self.skip_exact(skip, at, what);
            }
            other => {
                (self.on_warning)(format!(
                    "entry at offset {start}: {}: unknown type {:?}, read as a regular file",
                    show(&name),
                    char::from(other)
                ));
                (EntryKind::File, Storage::Plain)
            }
        };
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ScanError::Limit {
                what: "entry count",
                limit: self.limits.max_entries,
                offset: start,
            });
        }

        let mode = (header::number(&b[field::MODE], false)
            .map_err(|e| fail(format!("bad mode field: {e}")))?
            & 0o7777) as u32;
        let uid = match ext.uid {
            Some(u) => u,
            None => header::unsigned(&b[field::UID], u32::MAX.into(), "uid").map_err(fail)? as u32,
        };
        let gid = match ext.gid {
            Some(g) => g,
            None => header::unsigned(&b[field::GID], u32::MAX.into(), "gid").map_err(fail)? as u32,
        };
        let (mtime, mtime_nsec) = match ext.mtime {
            Some(t) => t,
            None => (header::mtime(b).map_err(fail)?, 0),
        };
        let rdev = if matches!(kind, EntryKind::CharDev | EntryKind::BlockDev)
            && header::format(b) != Format::V7
        {
            let major = match ext.devmajor {
                Some(m) => m,
                None => header::unsigned(&b[field::DEVMAJOR], u32::MAX.into(), "devmajor")
                    .map_err(fail)? as u32,
            };
            let minor = match ext.devminor {
                Some(m) => m,
                None => header::unsigned(&b[field::DEVMINOR], u32::MAX.into(), "devminor")
                    .map_err(fail)? as u32,
            };
            (major, minor)
        } else {
            (0, 0)
        };

        // Data: lay it out, then skip it (so a truncated entry is never reported).
        let (size, data) = match storage {
            Storage::Plain => {
                // GNU tar never skips data after a directory header.
                let on_tape = if ty == b'5' { 0 } else { stored };
                let skip = padded(on_tape)
                    .filter(|&s| self.s.pos.checked_add(s).is_some())
                    .ok_or_else(|| fail(format!("size {stored} overflows")))?;
                let offset = self.s.pos;
                self.skip_exact(skip, at, DataOf(&name))?;
                if kind == EntryKind::File && stored > 0 {
                    (stored, DataLayout::Contiguous { offset })
                } else {
                    (0, DataLayout::None)
                }
            }
            Storage::OldGnuSparse => self.old_gnu_sparse(b, at, stored, &name)?,
            Storage::PaxSparse => self.pax_sparse(&mut ext, at, stored, &name)?,
        };

        // Names.
        let Some(path) = normalize(&name) else {
            (self.on_warning)(format!(
                "entry at offset {start}: {} dropped: its name escapes the archive root",
                show(&name)
            ));
            return Ok(());
        };
        if path.is_empty() && kind != EntryKind::Dir {
            (self.on_warning)(format!(
                "entry at offset {start}: {} dropped: a non-directory cannot be the archive root",
                show(&name)
            ));
            return Ok(());
        }
        self.check_path_len(&path, start)?;
        let raw_link = || match (ext.linkpath.take(), p.long_link) {
            (Some(l), _) | (None, Some(l)) => l,
            _ => header::cstr(&b[field::LINKNAME]).to_vec(),
        };
        let link_target = match kind {
            EntryKind::Symlink => Some(raw_link()),
            EntryKind::Hardlink => {
                let raw = raw_link();
                match normalize(&raw) {
                    Some(t) if !t.is_empty() => {
                        self.check_path_len(&t, start)?;
                        Some(t)
                    }
                    target => {
                        let why = if target.is_none() {
                            "escapes the archive root"
                        } else {
                            "is the archive root"
                        };
                        (self.on_warning)(format!(
                            "entry at offset {start}: {} dropped: its hard-link target {} {why}",
                            show(&name),
                            show(&raw)
                        ));
                        return Ok(());
                    }
                }
            }
            _ => None,
        };
        (self.on_entry)(ScannedEntry {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime,
            mtime_nsec,
            size,
            data,
            link_target,
            rdev,
            xattrs: dedup_xattrs(ext.xattrs),
            header_offset: start,
        })
    }

    fn check_path_len(&self, path: &[u8], offset: u64) -> Result<(), ScanError> {
        let limit = self.limits.max_path_len;
        if path.len() > limit {
            return Err(ScanError::Limit { what: "path length", limit: limit as u64, offset });
        }
        Ok(())
    }

    /// The data of an old-GNU sparse entry (`S`): descriptors in the header and extension
    /// blocks, then the runs back to back in `stored` bytes.
    fn old_gnu_sparse(
        &mut self,
        b: &Block,
        at: u64,
        stored: u64,
        name: &[u8],
    ) -> Result<(u64, DataLayout), ScanError> {
        let fail = |reason: String| tar_err(at, format!("entry {}: {reason}", show(name)));
        let sparse::OldGnuHeader { mut map, extended: mut more, realsize } =
            sparse::old_gnu_header(b).map_err(fail)?;
        let mut ext_bytes = 0u64;
        let mut blk: Block = [0; BLOCK];
        while more {
            ext_bytes += BLOCK as u64;
            if ext_bytes > self.limits.max_header_bytes {
                return Err(ScanError::Limit {
                    what: "sparse map",
                    limit: self.limits.max_header_bytes,
                    offset: at,
                });
            }
            self.read_exact(&mut blk, at, MapOf(name))?;
            let area = &blk[..sparse::EXT_DESCRIPTORS * 24];
            more = sparse::old_gnu_descriptors(area, &mut map).map_err(fail)?
                && blk[sparse::EXT_ISEXTENDED] != 0;
        }
        self.sparse_data(&map, realsize, stored, at, name)
    }

    /// The data of a PAX sparse entry: format 1.0 keeps the map as text at the start of the
    /// data (padded to a block); 0.0 and 0.1 keep it in the records.
    fn pax_sparse(
        &mut self,
        ext: &mut Overrides,
        at: u64,
        stored: u64,
        name: &[u8],
    ) -> Result<(u64, DataLayout), ScanError> {
        let fail = |reason: String| tar_err(at, format!("entry {}: {reason}", show(name)));
        let realsize = ext
            .sparse
            .realsize
            .ok_or_else(|| fail("PAX sparse file without GNU.sparse.realsize".into()))?;
        let major = ext.sparse.major.unwrap_or(0);
        if major > 1 {
            let minor = ext.sparse.minor.unwrap_or(0);
            return Err(fail(format!("unsupported PAX sparse format {major}.{minor}")));
        }
        if major == 0 {
            let map = std::mem::take(&mut ext.sparse.map);
            return self.sparse_data(&map, realsize, stored, at, name);
        }
        let limit = self.limits.max_header_bytes;
        let mut text = MapText::default();
        let mut used = 0u64;
        let mut blk: Block = [0; BLOCK];
        loop {
            used += BLOCK as u64;
            if used > stored {
                return Err(fail(format!("sparse map runs past the {stored} bytes of data")));
            }
            if used > limit {
                return Err(ScanError::Limit { what: "sparse map", limit, offset: at });
            }
            self.read_exact(&mut blk, at, MapOf(name))?;
            match text.feed(&blk, limit / 4) {
                Ok(true) => break,
                Ok(false) => {}
                Err(None) => {
                    return Err(ScanError::Limit { what: "sparse map", limit, offset: at })
                }
                Err(Some(e)) => return Err(fail(e)),
            }
        }
        self.sparse_data(&text.map, realsize, stored - used, at, name)
    }

    /// Validates a sparse map against the `stored` bytes that follow, skips them, and
    /// returns the real size and layout.
    fn sparse_data(
        &mut self,
        map: &[(u64, u64)],
        realsize: u64,
        stored: u64,
        at: u64,
        name: &[u8],
    ) -> Result<(u64, DataLayout), ScanError> {
        let fail = |reason: String| tar_err(at, format!("entry {}: {reason}", show(name)));
        let start = self.s.pos;
        let skip = padded(stored)
            .filter(|&s| start.checked_add(s).is_some())
            .ok_or_else(|| fail(format!("size {stored} overflows")))?;
        let segments = sparse::segments(map, realsize, start, stored).map_err(fail)?;
        self.skip_exact(skip, at, DataOf(name))?;
        Ok((realsize, DataLayout::Sparse(segments)))
    }
}
