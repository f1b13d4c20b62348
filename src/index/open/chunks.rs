//! The chunk checksums of an archive (format version 2): the SHA-256 of each chunk of the
//! archive file, so that a node that fetches the archive by ranges checks every byte before it
//! inflates or serves it.
//!
//! They are taken on the scan's window thread, by reading the chunk back from the file just
//! written or read (from the page cache, in practice) as soon as its end is known: a gzip
//! chunk ends where the next access point starts, which the inflater only finds after the
//! reading thread has hashed those bytes for the archive's digest, and SHA-256 cannot be split
//! after the fact. The window thread has time for it: it otherwise waits for points, while the
//! inflater is the bottleneck (measured in `docs/benchmarks.md`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::streaming::Watermark;
use crate::gzip::AccessPoint;
use crate::index::format::ChunkRec;

/// Bytes read back at a time.
const READ_BLOCK: usize = 1 << 20;

/// Hashes an archive file chunk by chunk, front to back, as the chunks' ends become known.
pub(super) struct ChunkHasher<'a> {
    file: &'a File,
    /// For a file still being written: how far it is.
    written: Option<&'a Watermark>,
    /// Where the current chunk starts.
    start: u64,
    chunks: Vec<ChunkRec>,
    buf: Vec<u8>,
}

impl<'a> ChunkHasher<'a> {
    pub(super) fn new(file: &'a File, written: Option<&'a Watermark>) -> Self {
        ChunkHasher { file, written, start: 0, chunks: Vec::new(), buf: Vec::new() }
    }

    /// Where a gzip chunk starts for `point`: the byte that holds its first bit.
    pub(super) fn point_start(point: &AccessPoint) -> u64 {
        if point.bits > 0 && !point.at_member_start() {
            point.compressed.saturating_sub(1)
        } else {
            point.compressed
        }
    }

    /// Ends the current chunk at `end` (nothing if `end` is not past its start: the first
    /// point is at byte 0). Fails if the file ends before `end`.
    pub(super) fn cut(&mut self, end: u64) -> io::Result<()> {
        if end <= self.start {
            return Ok(());
        }
        let got = self.hash_up_to(end)?;
        if got < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the archive ends at {got}, before the access point at {end}"),
            ));
        }
        Ok(())
    }

    /// Hashes the rest of the file in chunks of at most `size` bytes (a plain tar's fixed
    /// chunks; `u64::MAX` for a gzip's last span), until the end of the file; `stop` is
    /// checked between chunks (the scan failed: nobody wants them).
    pub(super) fn through_end(&mut self, size: u64, stop: &dyn Fn() -> bool) -> io::Result<()> {
        loop {
            if stop() {
                return Ok(());
            }
            let end = self.start.saturating_add(size.max(1));
            let got = self.hash_up_to(end)?;
            if got < end {
                return Ok(());
            }
        }
    }

    /// The chunks hashed, and where the last one ends (the caller checks that it is the end
    /// of the archive the scan saw).
    pub(super) fn finish(self) -> (Vec<ChunkRec>, u64) {
        (self.chunks, self.start)
    }

    /// Hashes `[start, end)` (less if the file ends first) as one chunk, unless it is empty;
    /// returns where it ended.
    fn hash_up_to(&mut self, end: u64) -> io::Result<u64> {
        if let Some(written) = self.written {
            written.wait_for(end);
        }
        if self.buf.is_empty() {
            self.buf = vec![0; READ_BLOCK];
        }
        let mut sha = Sha256::new();
        let mut at = self.start;
        while at < end {
            let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(self.buf.len());
            let n = match self.file.read_at(&mut self.buf[..want], at) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sha.update(&self.buf[..n]);
            at += n as u64;
        }
        if at > self.start {
            self.chunks.push(ChunkRec { offset: self.start, sha256: sha.finalize().into() });
            self.start = at;
        }
        Ok(at)
    }
}
