//! Gzip with random access, zran style: while indexing, record access points at deflate block
//! boundaries (with the 32 KiB window that precedes them); later, resume inflating at any point.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::sync::Arc;

/// A place where inflating can resume without reading what comes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    /// Offset in the uncompressed stream.
    pub uncompressed: u64,
    /// Offset in the compressed file of the first byte to feed the inflater. When `bits` is not
    /// zero, the byte before it holds `bits` more bits to prime.
    pub compressed: u64,
    /// Number of bits (0..=7) of the byte at `compressed - 1` that belong to the next block.
    pub bits: u8,
    /// The uncompressed bytes before this point (at most 32 KiB), or empty when the point sits
    /// at the start of a gzip member's header, where no history is needed.
    pub window: Vec<u8>,
}

impl AccessPoint {
    /// True if the point sits at the start of a gzip member (its header), needing no window.
    pub fn at_member_start(&self) -> bool {
        self.window.is_empty()
    }
}

/// A problem in the gzip layer.
#[derive(Debug, thiserror::Error)]
#[error("gzip stream corrupt at compressed offset {offset}: {reason}")]
pub struct GzipError {
    /// Offset in the compressed file where the problem was found.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// What a finished indexing pass saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipSummary {
    /// Compressed bytes consumed.
    pub compressed: u64,
    /// Uncompressed bytes produced.
    pub uncompressed: u64,
    /// Number of gzip members.
    pub members: u64,
}

/// Inflates a gzip file (one or many members) from start to end, serving the uncompressed bytes
/// through [`BufRead`] and recording an [`AccessPoint`] about every `span` uncompressed bytes.
pub struct GzipIndexer<R: Read> {
    _input: R,
}

impl<R: Read> GzipIndexer<R> {
    /// Starts indexing `input` (positioned at the first gzip member). Producing more than
    /// `max_uncompressed` bytes is an error.
    pub fn new(input: R, span: u64, max_uncompressed: u64) -> Self {
        let _ = (input, span, max_uncompressed);
        todo!("GzipIndexer::new")
    }

    /// Takes the access points recorded so far (in order); later calls return only newer ones.
    pub fn take_points(&mut self) -> Vec<AccessPoint> {
        todo!("take_points")
    }

    /// Inflates whatever is left (the caller may have stopped reading early), checks that the
    /// input ends cleanly after the last member, and returns the totals.
    pub fn finish(self) -> Result<GzipSummary, GzipError> {
        todo!("finish")
    }
}

impl<R: Read> Read for GzipIndexer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = buf;
        todo!()
    }
}

impl<R: Read> BufRead for GzipIndexer<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        todo!()
    }

    fn consume(&mut self, amt: usize) {
        let _ = amt;
        todo!()
    }
}

/// Resumes inflating at an access point, reading the compressed file with positioned reads, so
/// many inflaters can share one open file.
pub struct SpanInflater {
    _file: Arc<File>,
}

impl SpanInflater {
    /// Positions a new inflater at `point`, whose window (if any) is `window`.
    pub fn new(
        file: Arc<File>,
        uncompressed: u64,
        compressed: u64,
        bits: u8,
        window: &[u8],
    ) -> Result<Self, GzipError> {
        let _ = (uncompressed, compressed, bits, window);
        Ok(SpanInflater { _file: file })
    }

    /// The uncompressed offset of the next byte [`SpanInflater::read`] returns.
    pub fn position(&self) -> u64 {
        todo!()
    }

    /// Inflates the next bytes into `out`; returns 0 only at the end of the last member.
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, GzipError> {
        let _ = out;
        todo!()
    }
}
