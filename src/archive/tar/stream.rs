//! The input side of the walker: a [`BufRead`] with its offset tracked, read in blocks and
//! skipped in place (`fill_buf` + `consume`, never copying skipped data).

use std::io::{self, BufRead};

use super::TarError;
use crate::archive::ScanError;

/// A [`BufRead`] plus the offset of its next byte in the uncompressed stream.
pub(super) struct Stream<'a, R: BufRead> {
    inner: &'a mut R,
    /// Offset of the next byte.
    pub pos: u64,
}

/// Converts an input error; a bare `UnexpectedEof` becomes a truncation error at `pos`.
fn io_error(err: io::Error, pos: u64) -> ScanError {
    match ScanError::from_io(err) {
        ScanError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            ScanError::Tar(TarError { offset: pos, reason: format!("archive is truncated: {e}") })
        }
        other => other,
    }
}

impl<'a, R: BufRead> Stream<'a, R> {
    /// Wraps `inner`, whose next byte is at offset 0.
    pub fn new(inner: &'a mut R) -> Self {
        Stream { inner, pos: 0 }
    }

    fn fill(&mut self) -> Result<&[u8], ScanError> {
        loop {
            match self.inner.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(e, self.pos)),
            }
        }
        // The loop above proved that fill_buf succeeds; a BufRead returns its buffer again.
        self.inner.fill_buf().map_err(|e| io_error(e, self.pos))
    }

    /// Reads until `out` is full or the input ends; returns the number of bytes read.
    pub fn read_full(&mut self, out: &mut [u8]) -> Result<usize, ScanError> {
        let mut got = 0;
        while got < out.len() {
            let buf = self.fill()?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(out.len() - got);
            out[got..got + n].copy_from_slice(&buf[..n]);
            self.inner.consume(n);
            self.pos += n as u64;
            got += n;
        }
        Ok(got)
    }

    /// Skips up to `n` bytes; returns how many were skipped (fewer only at the end of input).
    pub fn skip(&mut self, n: u64) -> Result<u64, ScanError> {
        let mut left = n;
        while left > 0 {
            let avail = self.fill()?.len();
            if avail == 0 {
                break;
            }
            let k = usize::try_from(left).map_or(avail, |l| l.min(avail));
            self.inner.consume(k);
            self.pos += k as u64;
            left -= k as u64;
        }
        Ok(n - left)
    }
}
