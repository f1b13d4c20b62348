//! The one-pass indexer: inflates every member of a gzip file in order, serves the bytes
//! through [`BufRead`], and records access points on the way.

use std::io::{self, BufRead, Read};

use super::ffi::{Flush, Inflater, Status, GZIP};
use super::header::{self, Next};
use super::{AccessPoint, GzipError, GzipSummary, WINDOW_SIZE};

/// Compressed bytes read from the input at a time (at most).
const IN_BUF_SIZE: usize = 512 * 1024;
/// Uncompressed bytes produced per refill of the output buffer (after the kept history).
const OUT_CHUNK: usize = 256 * 1024;
/// Refill the input when fewer bytes than this are left, so zlib stays on its fast path.
const MIN_INPUT: usize = 64;
/// Largest distance (uncompressed bytes) since the last point at which a member start still gets
/// its own point; see [`GzipIndexer::new`].
const MEMBER_GAP_CAP: u64 = 64 * 1024;
/// A point is also due once `span / COMPRESSED_SPAN_DIVISOR` compressed bytes were *read* since
/// the last one. Inflating costs more per output byte where data compresses poorly (mostly
/// literals), so a span of binary data at a ratio of 1.5 would cost about twice the inflating of
/// a span of text at 3.5; this bounds the cost of a cold read by input as well as output. (A
/// third, not less: on the Python corpus it adds 8% more points, and the index stays under
/// 4 MB.)
const COMPRESSED_SPAN_DIVISOR: u64 = 3;
/// Calls in a row that neither consume nor produce a byte before giving up (a guard against a
/// hang; zlib needs a handful at most, to decode empty blocks from bits it already holds).
const MAX_IDLE_CALLS: u32 = 100;

/// Where the indexer is in the file.
enum State {
    /// Before the first member or after one: the next bytes decide what comes.
    Between,
    /// Inside the member whose header starts at `start`.
    Member {
        /// Offset of the member's first header byte.
        start: u64,
    },
    /// After the last member; the end of the input was checked.
    Done,
    /// Failed; every later call returns this error again.
    Failed(GzipError),
}

/// Why a refill stopped: an I/O error of the input (kept as is, so errors raised by a wrapping
/// reader travel unchanged) or a gzip error.
enum PumpError {
    Io(io::Error),
    Gzip(GzipError),
}

/// Inflates a gzip file (one or many members) from start to end, serving the uncompressed bytes
/// through [`BufRead`] and recording an [`AccessPoint`] about every `span` uncompressed bytes.
///
/// * zlib runs in gzip mode (window bits 31): it parses each member header and verifies each
///   trailer (CRC-32 and ISIZE), so corrupt data that still inflates is caught at the member end.
/// * A point is taken at the first deflate block boundary after at least `span` uncompressed
///   bytes, or `span / 3` compressed bytes, since the last point; its window is the last 32 KiB
///   the member produced (less if the member produced less).
/// * A point is also taken at the start of every member (window empty, `bits` 0, `compressed` at
///   the header) when at least `min(span, 64 KiB) / 2` bytes were produced since the last
///   point: with BGZF's 64 KiB members that is one cheap point per member.
/// * After the last member, the input must end, or be followed by zero bytes only (padding that
///   `gzip -d` also accepts); anything else is "trailing garbage".
///
/// Offsets in points and errors count from the first byte read from `input`, so `input` must
/// start at the beginning of the file for the points to be usable with
/// [`SpanInflater`](super::SpanInflater).
pub struct GzipIndexer<R: Read> {
    input: R,
    /// None only if zlib could not start (then `state` is `Failed`).
    inflater: Option<Inflater>,
    inbuf: Box<[u8]>,
    /// Next unconsumed byte of `inbuf`.
    in_pos: usize,
    /// End of the valid bytes of `inbuf`.
    in_len: usize,
    /// File offset of `inbuf[0]`.
    in_base: u64,
    /// True once `input` returned end of file.
    in_eof: bool,
    /// Output: kept history, then the bytes being served (`read_pos..write_pos`).
    out: Box<[u8]>,
    read_pos: usize,
    write_pos: usize,
    /// Uncompressed bytes produced so far.
    total_out: u64,
    /// Uncompressed bytes produced by the current member.
    member_out: u64,
    span: u64,
    /// Compressed bytes after which a point is due whatever was produced.
    compressed_span: u64,
    member_gap: u64,
    max_uncompressed: u64,
    /// Uncompressed offset of the last point recorded.
    last_point: Option<u64>,
    /// Compressed offset of the last point recorded (0 before the first).
    last_point_in: u64,
    points: Vec<AccessPoint>,
    /// False in `finish`, where nobody could take new points.
    record: bool,
    members_started: u64,
    members_done: u64,
    state: State,
}

impl<R: Read> GzipIndexer<R> {
    /// Starts indexing `input` (positioned at the first gzip member). Producing more than
    /// `max_uncompressed` bytes is an error. A `span` of 0 counts as 1.
    pub fn new(input: R, span: u64, max_uncompressed: u64) -> Self {
        let span = span.max(1);
        let (inflater, state) = match Inflater::new(GZIP) {
            Ok(inf) => (Some(inf), State::Between),
            Err(reason) => (None, State::Failed(GzipError { offset: 0, reason })),
        };
        GzipIndexer {
            input,
            inflater,
            inbuf: vec![0; IN_BUF_SIZE].into_boxed_slice(),
            in_pos: 0,
            in_len: 0,
            in_base: 0,
            in_eof: false,
            out: vec![0; WINDOW_SIZE + OUT_CHUNK].into_boxed_slice(),
            read_pos: 0,
            write_pos: 0,
            total_out: 0,
            member_out: 0,
            span,
            compressed_span: (span / COMPRESSED_SPAN_DIVISOR).max(1),
            member_gap: (span.min(MEMBER_GAP_CAP) / 2).max(1),
            max_uncompressed,
            last_point: None,
            last_point_in: 0,
            points: Vec::new(),
            record: true,
            members_started: 0,
            members_done: 0,
            state,
        }
    }

    /// Takes the access points recorded so far (in order); later calls return only newer ones.
    pub fn take_points(&mut self) -> Vec<AccessPoint> {
        std::mem::take(&mut self.points)
    }

    /// Inflates whatever is left (the caller may have stopped reading early), checks that the
    /// input ends cleanly after the last member, and returns the totals. Points past what was
    /// read before are not recorded.
    pub fn finish(mut self) -> Result<GzipSummary, GzipError> {
        self.record = false;
        loop {
            self.read_pos = self.write_pos;
            match self.pump() {
                Ok(()) => {}
                Err(PumpError::Gzip(e)) => return Err(e),
                Err(PumpError::Io(e)) => {
                    return Err(GzipError {
                        offset: self.in_base + self.in_len as u64,
                        reason: format!("read failed: {e}"),
                    })
                }
            }
            if matches!(self.state, State::Done) {
                break;
            }
        }
        Ok(GzipSummary {
            compressed: self.in_base + self.in_pos as u64,
            uncompressed: self.total_out,
            members: self.members_done,
        })
    }

    /// Records `err` as final and returns it.
    fn fail(&mut self, offset: u64, reason: String) -> PumpError {
        let err = GzipError { offset, reason };
        self.state = State::Failed(err.clone());
        PumpError::Gzip(err)
    }

    /// File offset of the next unconsumed input byte.
    fn in_offset(&self) -> u64 {
        self.in_base + self.in_pos as u64
    }

    /// Moves the unconsumed input to the front of the buffer and reads once more after it.
    fn fill_input(&mut self) -> Result<(), PumpError> {
        if self.in_eof {
            return Ok(());
        }
        if self.in_pos > 0 {
            self.inbuf.copy_within(self.in_pos..self.in_len, 0);
            self.in_base += self.in_pos as u64;
            self.in_len -= self.in_pos;
            self.in_pos = 0;
        }
        if self.in_len == self.inbuf.len() {
            return Ok(());
        }
        loop {
            match self.input.read(&mut self.inbuf[self.in_len..]) {
                Ok(0) => {
                    self.in_eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.in_len += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(PumpError::Io(e)),
            }
        }
    }

    /// Produces more output after the bytes already served (which the caller has consumed):
    /// fills the output buffer, or stops at the end of the input.
    fn pump(&mut self) -> Result<(), PumpError> {
        // Keep the history a window may need (it never spans members) and drop the rest.
        let keep = (WINDOW_SIZE as u64).min(self.member_out) as usize;
        if self.write_pos > keep {
            self.out.copy_within(self.write_pos - keep..self.write_pos, 0);
            self.write_pos = keep;
        }
        self.read_pos = self.write_pos;
        let mut idle = 0u32;
        loop {
            match self.state {
                State::Failed(ref e) => return Err(PumpError::Gzip(e.clone())),
                State::Done => return Ok(()),
                State::Between => self.next_member()?,
                State::Member { start } => {
                    if self.write_pos == self.out.len() {
                        return Ok(());
                    }
                    if self.inflate_step(start)? {
                        idle = 0;
                    } else {
                        idle += 1;
                        if idle > MAX_IDLE_CALLS {
                            let at = self.in_offset();
                            return Err(self.fail(at, "inflate makes no progress".to_string()));
                        }
                    }
                }
            }
        }
    }

    /// Looks at what follows the previous member (or opens the file) and starts the next member,
    /// or ends (checking the padding), or fails.
    fn next_member(&mut self) -> Result<(), PumpError> {
        loop {
            while self.in_len - self.in_pos < header::FIXED_HEADER_LEN && !self.in_eof {
                self.fill_input()?;
            }
            let offset = self.in_offset();
            let avail = &self.inbuf[self.in_pos..self.in_len];
            let first = self.members_started == 0;
            match header::classify(avail, self.in_eof) {
                Next::NeedMore => continue,
                Next::Member => {
                    if let Err(reason) = header::check_fixed_header(avail) {
                        return Err(self.fail(offset, reason));
                    }
                    return self.start_member(offset);
                }
                Next::End if first => return Err(self.fail(offset, "empty file".to_string())),
                Next::End => {
                    self.state = State::Done;
                    return Ok(());
                }
                Next::Zeros if !first => return self.skip_padding(),
                Next::Zeros | Next::Garbage => {
                    let reason = if first {
                        format!("not a gzip file (first bytes: {})", header::hex_prefix(avail))
                    } else {
                        format!(
                            "trailing garbage after the last gzip member (bytes: {})",
                            header::hex_prefix(avail)
                        )
                    };
                    return Err(self.fail(offset, reason));
                }
            }
        }
    }

    /// Consumes zero bytes up to the end of the input: padding after the last member. Any other
    /// byte, even the start of another member, is trailing garbage.
    fn skip_padding(&mut self) -> Result<(), PumpError> {
        loop {
            let avail = &self.inbuf[self.in_pos..self.in_len];
            if let Some(i) = avail.iter().position(|&b| b != 0) {
                let reason = format!(
                    "trailing garbage after the last gzip member: byte 0x{:02x} after zero padding",
                    avail[i]
                );
                let at = self.in_offset() + i as u64;
                return Err(self.fail(at, reason));
            }
            self.in_pos = self.in_len;
            if self.in_eof {
                self.state = State::Done;
                return Ok(());
            }
            self.fill_input()?;
        }
    }

    /// Starts the member whose header begins at `offset` (the next input byte).
    fn start_member(&mut self, offset: u64) -> Result<(), PumpError> {
        if self.members_started > 0 {
            let reset = match self.inflater.as_mut() {
                Some(inf) => inf.reset(GZIP),
                None => Err("zlib stream missing".to_string()),
            };
            if let Err(reason) = reset {
                return Err(self.fail(offset, reason));
            }
        }
        let since = self.last_point.map(|p| self.total_out - p);
        if self.record && since.is_none_or(|d| d >= self.member_gap) {
            self.points.push(AccessPoint {
                uncompressed: self.total_out,
                compressed: offset,
                bits: 0,
                window: Vec::new(),
            });
            self.last_point = Some(self.total_out);
            self.last_point_in = offset;
        }
        self.members_started += 1;
        self.member_out = 0;
        self.state = State::Member { start: offset };
        Ok(())
    }

    /// One call of inflate inside the member that starts at `start`. Returns whether it consumed
    /// or produced anything.
    fn inflate_step(&mut self, start: u64) -> Result<bool, PumpError> {
        if self.in_len - self.in_pos < MIN_INPUT && !self.in_eof {
            self.fill_input()?;
        }
        // Never produce more than one byte past the limit, so a bomb fails fast.
        let budget = self.max_uncompressed.saturating_sub(self.total_out).saturating_add(1);
        let mut room = (self.out.len() - self.write_pos) as u64;
        room = room.min(budget);
        // Stop at block boundaries only once a point is due; until then inflate freely, but no
        // further (in output or input) than where it becomes due, so the point lands on the
        // first boundary after.
        let mut flush = Flush::None;
        let mut in_end = self.in_len;
        if let (true, Some(last)) = (self.record, self.last_point) {
            if self.point_due() {
                flush = Flush::Block;
            } else {
                let since = self.total_out - last;
                let since_in = self.in_offset().saturating_sub(self.last_point_in);
                room = room.min(self.span - since);
                let left = usize::try_from(self.compressed_span - since_in).unwrap_or(usize::MAX);
                in_end = in_end.min(self.in_pos.saturating_add(left));
            }
        }
        let room = room as usize;
        let Some(inflater) = self.inflater.as_mut() else {
            let at = self.in_offset();
            return Err(self.fail(at, "zlib stream missing".to_string()));
        };
        let result = inflater.inflate(
            &self.inbuf[self.in_pos..in_end],
            &mut self.out[self.write_pos..self.write_pos + room],
            flush,
        );
        let step = match result {
            Ok(step) => step,
            Err(e) => {
                let at = self.in_offset() + e.consumed as u64;
                return Err(self.fail(at, describe_zlib_error(&e.msg, start)));
            }
        };
        self.in_pos += step.consumed;
        self.write_pos += step.produced;
        self.total_out += step.produced as u64;
        self.member_out += step.produced as u64;
        if self.total_out > self.max_uncompressed {
            let at = self.in_offset();
            let reason = format!(
                "uncompressed size exceeds the limit of {} bytes: decompression bomb?",
                self.max_uncompressed
            );
            return Err(self.fail(at, reason));
        }
        match step.status {
            Status::StreamEnd => {
                self.members_done += 1;
                self.state = State::Between;
                return Ok(true);
            }
            Status::NeedMore if self.in_pos == self.in_len && self.in_eof => {
                let at = self.in_offset();
                let reason = format!(
                    "truncated gzip member (started at offset {start}): unexpected end of file"
                );
                return Err(self.fail(at, reason));
            }
            Status::Ok | Status::NeedMore => {}
        }
        if self.record && step.at_block_boundary() && self.member_out > 0 && self.point_due() {
            self.add_point(step.held_bits());
        }
        Ok(step.consumed > 0 || step.produced > 0)
    }

    /// Whether enough was produced, or read, since the last point for the next one.
    fn point_due(&self) -> bool {
        self.last_point.is_none_or(|p| {
            self.total_out - p >= self.span
                || self.in_offset().saturating_sub(self.last_point_in) >= self.compressed_span
        })
    }

    /// Records a point at the block boundary just reached, where zlib holds `held_bits` input
    /// bits it has read but not used.
    fn add_point(&mut self, held_bits: u32) {
        let consumed = self.in_offset();
        let compressed = consumed.saturating_sub(u64::from(held_bits / 8));
        let keep = (WINDOW_SIZE as u64).min(self.member_out) as usize;
        let window = self.out[self.write_pos - keep..self.write_pos].to_vec();
        self.points.push(AccessPoint {
            uncompressed: self.total_out,
            compressed,
            bits: (held_bits % 8) as u8,
            window,
        });
        self.last_point = Some(self.total_out);
        self.last_point_in = compressed;
    }
}

/// Words for zlib's message about a member that starts at `start`.
pub(crate) fn describe_zlib_error(msg: &str, start: u64) -> String {
    match msg {
        "incorrect data check" => {
            format!("CRC-32 mismatch in the trailer of the member starting at offset {start}")
        }
        "incorrect length check" => {
            format!(
                "ISIZE (length) mismatch in the trailer of the member starting at offset {start}"
            )
        }
        m if m.contains("header") || m.contains("compression method") => {
            format!("bad gzip header (member starting at offset {start}): {m}")
        }
        m => format!("corrupt deflate data (member starting at offset {start}): {m}"),
    }
}

impl<R: Read> Read for GzipIndexer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for GzipIndexer<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let State::Failed(ref e) = self.state {
            return Err(io::Error::other(e.clone()));
        }
        if self.read_pos == self.write_pos {
            match self.pump() {
                Ok(()) => {}
                Err(PumpError::Io(e)) => return Err(e),
                Err(PumpError::Gzip(e)) => return Err(io::Error::other(e)),
            }
        }
        Ok(&self.out[self.read_pos..self.write_pos])
    }

    fn consume(&mut self, amt: usize) {
        self.read_pos = (self.read_pos + amt).min(self.write_pos);
    }
}
