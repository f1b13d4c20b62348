//! The archive scan: detect the format by its bytes, then walk the tar headers once while the
//! bytes stream through (inflating gzip and recording seek points on the way).

pub mod entry;
pub mod error;
pub mod tar;

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc;

use sha2::{Digest, Sha256};

pub use entry::{DataLayout, EntryKind, ScannedEntry, SparseSegment};
pub use error::ScanError;

use crate::gzip::{AccessPoint, GzipIndexer};
use crate::limits::Limits;

/// How the tar stream is stored in the archive file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain, uncompressed tar file: the uncompressed stream is the file itself.
    None,
    /// One or more concatenated gzip members (gzip, pigz, BGZF, `cat a.gz b.gz`).
    Gzip,
}

/// Options for one scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanOptions {
    /// Distance between gzip access points, in uncompressed bytes.
    pub span: u64,
    /// Resource limits.
    pub limits: Limits,
}

impl ScanOptions {
    /// The default span between gzip access points: 1 MiB.
    pub const DEFAULT_SPAN: u64 = 1 << 20;
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { span: Self::DEFAULT_SPAN, limits: Limits::default() }
    }
}

/// Something the scan found, in stream order.
#[derive(Debug)]
pub enum ScanEvent {
    /// A tar entry (never a PAX header, long-name block or other metadata pseudo-entry).
    Entry(ScannedEntry),
    /// A gzip access point.
    Point(AccessPoint),
    /// A non-fatal problem (an entry dropped because its name escapes the root, say).
    Warning(String),
}

/// What a whole scan saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// The detected compression.
    pub compression: Compression,
    /// Size of the archive file in bytes.
    pub compressed_size: u64,
    /// Size of the uncompressed tar stream in bytes.
    pub uncompressed_size: u64,
    /// SHA-256 of the archive file's bytes.
    pub digest: [u8; 32],
    /// Number of entries reported.
    pub entries: u64,
    /// Number of gzip members (0 for plain tar).
    pub members: u64,
}

/// Detects the archive format from its first bytes (at least 512 of them, or the whole file if
/// shorter).
pub fn detect(head: &[u8]) -> Result<Compression, ScanError> {
    const OTHERS: [(&[u8], &str); 5] = [
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"BZh", "bzip2"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"PK\x03\x04", "zip (not a tar)"),
    ];
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Compression::Gzip);
    }
    if let Some((_, name)) = OTHERS.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Err(ScanError::UnsupportedCompression(name));
    }
    if head.len() >= 512 && looks_like_tar_header(&head[..512]) {
        return Ok(Compression::None);
    }
    // An all-zero first block is an empty tar (just the end-of-archive marker); an empty file
    // is not an archive at all.
    if !head.is_empty() && head.len().is_multiple_of(512) && head.iter().all(|&b| b == 0) {
        return Ok(Compression::None);
    }
    let shown = &head[..head.len().min(16)];
    let magic = if shown.is_empty() {
        "none: the file is empty".to_string()
    } else {
        shown.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    };
    Err(ScanError::NotAnArchive { magic })
}

/// True if `block` carries a valid tar header checksum (unsigned or historic signed sum).
fn looks_like_tar_header(block: &[u8]) -> bool {
    let field = &block[148..156];
    let text: Vec<u8> = field.iter().copied().take_while(|&b| b != 0 && b != b' ').collect();
    let digits = text.iter().skip_while(|&&b| b == b' ');
    let mut stored: u64 = 0;
    let mut any = false;
    for &b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return false;
        }
        stored = stored * 8 + u64::from(b - b'0');
        any = true;
    }
    if !any {
        return false;
    }
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Scans a whole archive in one pass: detects the format, hashes every byte, inflates gzip
/// (recording access points about every `opts.span` uncompressed bytes) and walks the tar
/// headers, reporting each entry, point and warning to `on_event` in stream order.
///
/// Reading and hashing run on a second thread, so the inflate-and-walk thread only inflates.
pub fn scan<R: Read + Send>(
    input: R,
    opts: &ScanOptions,
    mut on_event: impl FnMut(ScanEvent) -> Result<(), ScanError>,
) -> Result<ScanSummary, ScanError> {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|s| {
        let hasher = s.spawn(move || read_and_hash(input, tx, recycle_rx));
        let mut source = ChunkReader::new(rx, recycle_tx);
        let walked = scan_stream(&mut source, opts, &mut on_event);
        // Stop the reader early if the walk failed: dropping the receiver ends its loop.
        drop(source);
        let (digest, compressed_size) = match hasher.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let (compression, uncompressed_size, members, entries) = walked?;
        Ok(ScanSummary {
            compression,
            compressed_size,
            uncompressed_size,
            digest,
            entries,
            members,
        })
    })
}

/// Chunks read ahead of the inflater.
const READ_AHEAD: usize = 4;
/// Size of one read-ahead chunk.
const CHUNK: usize = 1 << 20;

/// The reading thread: reads `input` in chunks, hashes them, and hands them over.
fn read_and_hash<R: Read>(
    mut input: R,
    tx: mpsc::SyncSender<io::Result<Vec<u8>>>,
    recycle: mpsc::Receiver<Vec<u8>>,
) -> ([u8; 32], u64) {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let mut buf = recycle.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut filled = 0;
        let result = loop {
            match input.read(&mut buf[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        buf.truncate(filled);
        hasher.update(&buf);
        total += filled as u64;
        let end = filled == 0;
        let message = match result {
            Ok(()) => Ok(buf),
            Err(e) => Err(e),
        };
        let failed = message.is_err();
        if tx.send(message).is_err() || end || failed {
            break;
        }
    }
    (hasher.finalize().into(), total)
}

/// The consuming side of the read-ahead channel, as a plain [`Read`].
struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    recycle: mpsc::Sender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ChunkReader {
    fn new(rx: mpsc::Receiver<io::Result<Vec<u8>>>, recycle: mpsc::Sender<Vec<u8>>) -> Self {
        ChunkReader { rx, recycle, current: Vec::new(), pos: 0, done: false }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            let next = match self.rx.recv() {
                Ok(next) => next?,
                Err(_) => Vec::new(),
            };
            if next.is_empty() {
                self.done = true;
            }
            let old = std::mem::replace(&mut self.current, next);
            let _ = self.recycle.send(old);
            self.pos = 0;
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Detects the format of `source` and walks it; returns (compression, uncompressed size,
/// gzip members, entries reported).
fn scan_stream(
    source: &mut ChunkReader,
    opts: &ScanOptions,
    on_event: &mut dyn FnMut(ScanEvent) -> Result<(), ScanError>,
) -> Result<(Compression, u64, u64, u64), ScanError> {
    let mut head = Vec::with_capacity(512);
    source.by_ref().take(512).read_to_end(&mut head).map_err(ScanError::Io)?;
    let compression = detect(&head)?;
    let input = io::Cursor::new(head).chain(source);
    let limits = opts.limits;
    let mut entries = 0u64;
    match compression {
        Compression::None => {
            let mut stream = BufReader::with_capacity(CHUNK, LimitedRead::new(input, limits));
            let size =
                walk_reporting(&mut stream, &limits, on_event, &mut entries, &mut |_| Ok(()))?;
            Ok((compression, size, 0, entries))
        }
        Compression::Gzip => {
            let mut gz = GzipIndexer::new(input, opts.span, limits.max_uncompressed);
            let pending = RefCell::new(Vec::new());
            let mut flush = |on_event: &mut dyn FnMut(ScanEvent) -> Result<(), ScanError>| {
                let points = std::mem::take(&mut *pending.borrow_mut());
                points.into_iter().try_for_each(|p| on_event(ScanEvent::Point(p)))
            };
            {
                let mut stream = DrainPoints { gz: &mut gz, pending: &pending };
                walk_reporting(&mut stream, &limits, on_event, &mut entries, &mut flush)?;
                // The walker reads to the end; make sure nothing is left unreported.
                loop {
                    let n = stream.fill_buf().map_err(ScanError::from_io)?.len();
                    if n == 0 {
                        break;
                    }
                    stream.consume(n);
                }
            }
            flush(on_event)?;
            let summary = gz.finish()?;
            Ok((compression, summary.uncompressed, summary.members, entries))
        }
    }
}

/// A [`BufRead`] over the gzip indexer that moves every access point it records into
/// `pending`, so the walker's entry callback can report them in stream order.
struct DrainPoints<'a, R: Read> {
    gz: &'a mut GzipIndexer<R>,
    pending: &'a RefCell<Vec<AccessPoint>>,
}

impl<R: Read> DrainPoints<'_, R> {
    fn collect(&mut self) {
        let points = self.gz.take_points();
        if !points.is_empty() {
            self.pending.borrow_mut().extend(points);
        }
    }
}

impl<R: Read> Read for DrainPoints<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.gz.read(buf)?;
        self.collect();
        Ok(n)
    }
}

impl<R: Read> BufRead for DrainPoints<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.gz.fill_buf()?;
        self.collect();
        self.gz.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        self.gz.consume(amt)
    }
}

/// Counts the bytes of a plain tar and fails once they pass `limits.max_uncompressed`.
struct LimitedRead<R> {
    inner: R,
    seen: u64,
    limit: u64,
}

impl<R> LimitedRead<R> {
    fn new(inner: R, limits: Limits) -> Self {
        LimitedRead { inner, seen: 0, limit: limits.max_uncompressed }
    }
}

impl<R: Read> Read for LimitedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if self.seen > self.limit {
            return Err(io::Error::other(ScanError::Limit {
                what: "uncompressed size",
                limit: self.limit,
                offset: self.seen,
            }));
        }
        Ok(n)
    }
}

/// Where scan events go.
type EventSink<'a> = &'a mut dyn FnMut(ScanEvent) -> Result<(), ScanError>;

/// Runs the tar walker, forwarding entries and warnings, and calling `flush` before each entry
/// so access points reach `on_event` in stream order.
fn walk_reporting<B: BufRead>(
    stream: &mut B,
    limits: &Limits,
    on_event: &mut dyn FnMut(ScanEvent) -> Result<(), ScanError>,
    entries: &mut u64,
    flush: &mut dyn FnMut(EventSink<'_>) -> Result<(), ScanError>,
) -> Result<u64, ScanError> {
    let warnings = RefCell::new(Vec::new());
    let mut on_entry = |entry: ScannedEntry| {
        flush(on_event)?;
        for warning in warnings.borrow_mut().drain(..) {
            on_event(ScanEvent::Warning(warning))?;
        }
        *entries += 1;
        on_event(ScanEvent::Entry(entry))
    };
    let mut on_warning = |w: String| warnings.borrow_mut().push(w);
    let size = tar::walk(stream, limits, &mut on_entry, &mut on_warning)?;
    flush(on_event)?;
    for warning in warnings.into_inner() {
        on_event(ScanEvent::Warning(warning))?;
    }
    Ok(size)
}
