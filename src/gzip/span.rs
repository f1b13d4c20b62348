//! Resuming at an access point: inflate from a point to wherever the reader needs, reading the
//! compressed file with positioned reads from a [`ReadAt`] source (a local file, or a node's
//! lazily fetched ranges).

use std::sync::Arc;

use super::ffi::{Flush, Inflater, Status, GZIP, RAW};
use super::header::{self, Next};
use super::indexer::describe_zlib_error;
use super::{GzipError, WINDOW_SIZE};
use crate::source::ReadAt;

/// Compressed bytes read per positioned read. A cold read at a 1 MiB span inflates about
/// 0.5 MiB on average (~150 KiB compressed), so this costs a few reads while not reading far
/// past what is needed.
const IN_BUF_SIZE: usize = 64 * 1024;
/// Scratch space for [`SpanInflater::skip`].
const SCRATCH_SIZE: usize = 64 * 1024;

/// Where the inflater is.
enum State {
    /// Inside a member. `raw`: started mid-member in raw mode, so the trailer is skipped
    /// unchecked; otherwise zlib (gzip mode) checks it. `start`: where this member (or the
    /// resumed part of it) starts, for messages.
    Member { raw: bool, start: u64 },
    /// After a member: the next bytes decide what comes.
    Between,
    /// At the true end.
    Done,
}

/// Resumes inflating at an access point, reading the compressed file with positioned reads, so
/// many inflaters can share one open file (or one lazy source).
pub struct SpanInflater {
    source: Arc<dyn ReadAt>,
    inflater: Inflater,
    inbuf: Box<[u8]>,
    in_pos: usize,
    in_len: usize,
    /// File offset of `inbuf[0]`.
    in_base: u64,
    in_eof: bool,
    /// Uncompressed offset of the next byte `read` returns.
    position: u64,
    state: State,
    scratch: Vec<u8>,
}

impl SpanInflater {
    /// Positions a new inflater at `point`, whose window (if any) is `window`, reading the
    /// compressed bytes from `source` (an `Arc<File>` coerces to it).
    ///
    /// An empty window means the point is the start of a member's header at `compressed`; else
    /// raw inflating resumes at `compressed`, first priming the `bits` (0..=7) high bits of the
    /// byte before it, with `window` (at most 32 KiB) as history.
    pub fn new(
        source: Arc<dyn ReadAt>,
        uncompressed: u64,
        compressed: u64,
        bits: u8,
        window: &[u8],
    ) -> Result<Self, GzipError> {
        let err = |reason: String| GzipError { offset: compressed, reason };
        if bits > 7 {
            return Err(err(format!("bad access point: {bits} bits to prime (at most 7)")));
        }
        if window.len() > WINDOW_SIZE {
            return Err(err(format!(
                "bad access point: window of {} bytes (at most {WINDOW_SIZE})",
                window.len()
            )));
        }
        let at_member_start = window.is_empty();
        let prime_from = if at_member_start || bits == 0 {
            compressed
        } else {
            compressed
                .checked_sub(1)
                .ok_or_else(|| err("bad access point: bits to prime before offset 0".to_string()))?
        };
        let inflater = Inflater::new(if at_member_start { GZIP } else { RAW }).map_err(err)?;
        let mut this = SpanInflater {
            source,
            inflater,
            inbuf: vec![0; IN_BUF_SIZE].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_base: prime_from,
            in_eof: false,
            position: uncompressed,
            state: State::Member { raw: !at_member_start, start: compressed },
            scratch: Vec::new(),
        };
        if at_member_start {
            this.fill_to(header::FIXED_HEADER_LEN)?;
            let head = &this.inbuf[..this.in_len];
            if header::classify(head, this.in_eof) != Next::Member {
                return Err(err(format!(
                    "bad access point: no gzip member starts here (bytes: {})",
                    header::hex_prefix(head)
                )));
            }
            header::check_fixed_header(head).map_err(err)?;
        } else {
            if bits != 0 {
                this.fill_to(1)?;
                let Some(&byte) = this.inbuf[..this.in_len].first() else {
                    return Err(err("bad access point: past the end of the file".to_string()));
                };
                this.in_pos = 1;
                this.inflater.prime(bits, byte >> (8 - bits)).map_err(err)?;
            }
            this.inflater.set_dictionary(window).map_err(err)?;
        }
        Ok(this)
    }

    /// The uncompressed offset of the next byte [`SpanInflater::read`] returns.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Inflates the next bytes into `out`; returns 0 only at the end of the last member (or if
    /// `out` is empty).
    pub fn read(&mut self, out: &mut [u8]) -> Result<usize, GzipError> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut idle = 0u32;
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Between => self.next_member()?,
                State::Member { raw, start } => {
                    if self.in_pos == self.in_len {
                        self.fill_to(1)?;
                    }
                    let step = self
                        .inflater
                        .inflate(&self.inbuf[self.in_pos..self.in_len], out, Flush::None)
                        .map_err(|e| GzipError {
                            offset: self.in_base + (self.in_pos + e.consumed) as u64,
                            reason: describe_zlib_error(&e.msg, start),
                        })?;
                    self.in_pos += step.consumed;
                    self.position += step.produced as u64;
                    match step.status {
                        Status::StreamEnd => {
                            if raw {
                                self.skip_trailer()?;
                            }
                            self.state = State::Between;
                        }
                        Status::NeedMore if self.in_pos == self.in_len && self.in_eof => {
                            return Err(GzipError {
                                offset: self.in_base + self.in_pos as u64,
                                reason: format!(
                                    "truncated gzip member (resumed at offset {start}): \
                                     unexpected end of file"
                                ),
                            });
                        }
                        Status::Ok | Status::NeedMore => {}
                    }
                    if step.produced > 0 {
                        return Ok(step.produced);
                    }
                    if step.consumed > 0 || step.status == Status::StreamEnd {
                        idle = 0;
                    } else {
                        idle += 1;
                        if idle > 100 {
                            return Err(GzipError {
                                offset: self.in_base + self.in_pos as u64,
                                reason: "inflate makes no progress".to_string(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Inflates and drops the next `n` bytes.
    pub fn skip(&mut self, mut n: u64) -> Result<(), GzipError> {
        if n == 0 {
            return Ok(());
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(SCRATCH_SIZE, 0);
        let result = loop {
            if n == 0 {
                break Ok(());
            }
            let want = n.min(scratch.len() as u64) as usize;
            match self.read(&mut scratch[..want]) {
                Ok(0) => {
                    break Err(GzipError {
                        offset: self.in_base + self.in_pos as u64,
                        reason: format!(
                            "cannot skip {n} more bytes: the stream ends at uncompressed offset {}",
                            self.position
                        ),
                    })
                }
                Ok(got) => n -= got as u64,
                Err(e) => break Err(e),
            }
        };
        self.scratch = scratch;
        result
    }

    /// Reads until at least `want` unconsumed bytes are buffered, or the file ends.
    fn fill_to(&mut self, want: usize) -> Result<(), GzipError> {
        while self.in_len - self.in_pos < want && !self.in_eof {
            if self.in_pos > 0 {
                self.inbuf.copy_within(self.in_pos..self.in_len, 0);
                self.in_base += self.in_pos as u64;
                self.in_len -= self.in_pos;
                self.in_pos = 0;
            }
            let at = self.in_base + self.in_len as u64;
            // One block at a time (fewer bytes only at the end of the source): a local file
            // is read by `pread` as before, a lazy source fetches what covers the block.
            match self.source.read_at_most(&mut self.inbuf[self.in_len..], at) {
                Ok(0) => self.in_eof = true,
                Ok(n) => self.in_len += n,
                Err(e) => {
                    return Err(GzipError { offset: at, reason: format!("read failed: {e}") })
                }
            }
        }
        Ok(())
    }

    /// Steps over the trailer of a member that was inflated in raw mode (unchecked: the indexer
    /// checked it).
    fn skip_trailer(&mut self) -> Result<(), GzipError> {
        self.fill_to(header::TRAILER_LEN)?;
        if self.in_len - self.in_pos < header::TRAILER_LEN {
            return Err(GzipError {
                offset: self.in_base + self.in_len as u64,
                reason: "truncated gzip member: unexpected end of file in the trailer".to_string(),
            });
        }
        self.in_pos += header::TRAILER_LEN;
        Ok(())
    }

    /// Looks at what follows a member: another member (start it), or the end (the end of the
    /// file or zero padding, which the indexer checked).
    fn next_member(&mut self) -> Result<(), GzipError> {
        self.fill_to(header::FIXED_HEADER_LEN)?;
        let offset = self.in_base + self.in_pos as u64;
        let avail = &self.inbuf[self.in_pos..self.in_len];
        match header::classify(avail, self.in_eof) {
            Next::Member => {
                header::check_fixed_header(avail).map_err(|reason| GzipError { offset, reason })?;
                self.inflater.reset(GZIP).map_err(|reason| GzipError { offset, reason })?;
                self.state = State::Member { raw: false, start: offset };
                Ok(())
            }
            Next::End | Next::Zeros => {
                self.state = State::Done;
                Ok(())
            }
            Next::Garbage | Next::NeedMore => Err(GzipError {
                offset,
                reason: format!(
                    "trailing garbage after a gzip member (bytes: {})",
                    header::hex_prefix(avail)
                ),
            }),
        }
    }
}
