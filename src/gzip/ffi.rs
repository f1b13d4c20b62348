//! The one safe wrapper over zlib-rs's C API (`libz-rs-sys`): an owned, boxed `z_stream` set up
//! for inflating. This file holds the only `unsafe` code of the crate.

use std::ffi::{c_int, CStr};

use libz_rs_sys as z;

/// How far one call of [`Inflater::inflate`] may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Go as far as input and output allow (`Z_NO_FLUSH`).
    None,
    /// Also stop at the next deflate block boundary (`Z_BLOCK`), and after a gzip header.
    Block,
}

/// How one call of [`Inflater::inflate`] ended (errors aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Progress was made, or a requested stop point was reached (`Z_OK`).
    Ok,
    /// The end of the deflate stream (raw mode) or of the gzip member, trailer checked (gzip mode).
    StreamEnd,
    /// No progress was possible: more input (or output space) is needed (`Z_BUF_ERROR`).
    NeedMore,
}

/// What one call of [`Inflater::inflate`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// How it ended.
    pub status: Status,
    /// Input bytes consumed (whole bytes; up to 7 bits of the last one may still wait inside).
    pub consumed: usize,
    /// Output bytes written.
    pub produced: usize,
    /// zlib's `data_type` after the call: bits 0..=5 count the unused input bits zlib holds,
    /// 64 = the last block was seen, 128 = stopped at a block boundary (or just after a header).
    pub data_type: i32,
}

impl Step {
    /// True if the call stopped at a deflate block boundary that a later block follows: the only
    /// place where a random-access point can be taken.
    pub fn at_block_boundary(&self) -> bool {
        self.data_type & 128 != 0 && self.data_type & 64 == 0
    }

    /// Number of input bits zlib holds that it has read but not used (0..=63).
    pub fn held_bits(&self) -> u32 {
        (self.data_type & 63) as u32
    }
}

/// A data error from [`Inflater::inflate`]: zlib's message, and how far into the input it got.
#[derive(Debug, Clone)]
pub(crate) struct InflateError {
    /// zlib's message (or a description of its return code).
    pub msg: String,
    /// Input bytes consumed by the failing call, so the error can point near the bad byte.
    pub consumed: usize,
}

/// Window bits for a raw deflate stream with a 32 KiB window.
pub(crate) const RAW: i32 = -15;
/// Window bits for a gzip member (header and trailer parsed and checked by zlib).
pub(crate) const GZIP: i32 = 31;

/// An inflate stream. Owns its boxed `z_stream` (zlib keeps pointers into it, so it must not
/// move once initialised) and ends it on drop.
pub(crate) struct Inflater {
    /// Invariant: initialised by `inflateInit2_` and not yet ended; `next_in` and `next_out`
    /// are null between calls.
    strm: Box<z::z_stream>,
}

// SAFETY: the z_stream and the state it points to are owned exclusively by this value (nothing
// else holds those pointers), zlib-rs keeps no thread-local data, and the input/output pointers
// are cleared after every call, so moving the whole stream to another thread is sound.
unsafe impl Send for Inflater {}

impl Inflater {
    /// Starts an inflate stream with `window_bits` ([`RAW`] or [`GZIP`]).
    pub fn new(window_bits: i32) -> Result<Self, String> {
        // `Default` sets the allocator callbacks, nulls every pointer and zeroes every count.
        let mut strm = Box::new(z::z_stream::default());
        let size = std::mem::size_of::<z::z_stream>() as c_int;
        // SAFETY: `strm` points to a valid, boxed (so never moving) z_stream whose allocator
        // fields are set and whose buffers are null with zero lengths; `zlibVersion()` returns a
        // static NUL-terminated string; `size` is the size of the struct we pass.
        let ret = unsafe { z::inflateInit2_(&mut *strm, window_bits, z::zlibVersion(), size) };
        if ret != z::Z_OK {
            // On failure zlib frees what it allocated, so there is nothing to end.
            return Err(format!("cannot start zlib inflate (code {ret})"));
        }
        Ok(Inflater { strm })
    }

    /// Resets the stream for a new stream of kind `window_bits`, forgetting all history
    /// (`inflateReset2`).
    pub fn reset(&mut self, window_bits: i32) -> Result<(), String> {
        // SAFETY: `self.strm` is initialised and not ended (type invariant).
        let ret = unsafe { z::inflateReset2(&mut *self.strm, window_bits) };
        self.check(ret, "inflateReset2")
    }

    /// Inserts the `bits` (1..=7) low bits of `value` ahead of the input (`inflatePrime`), to
    /// resume a raw stream mid-byte.
    pub fn prime(&mut self, bits: u8, value: u8) -> Result<(), String> {
        // SAFETY: `self.strm` is initialised and not ended (type invariant); the call reads no
        // memory we pass.
        let ret =
            unsafe { z::inflatePrime(&mut *self.strm, c_int::from(bits), c_int::from(value)) };
        self.check(ret, "inflatePrime")
    }

    /// Sets the history a raw stream resumes with (`inflateSetDictionary`); at most 32 KiB.
    pub fn set_dictionary(&mut self, dict: &[u8]) -> Result<(), String> {
        let len = u32::try_from(dict.len()).map_err(|_| "dictionary too long".to_string())?;
        // SAFETY: `self.strm` is initialised and not ended (type invariant); `dict` is a live
        // slice of exactly `len` bytes that zlib only reads (copying it) during the call.
        let ret = unsafe { z::inflateSetDictionary(&mut *self.strm, dict.as_ptr(), len) };
        self.check(ret, "inflateSetDictionary")
    }

    /// Inflates from `input` into `output`. Returns what happened, or zlib's message on a data
    /// error (corrupt stream, bad header, check mismatch).
    pub fn inflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<Step, InflateError> {
        // zlib counts lengths in u32: offer at most that much (callers loop anyway).
        let avail_in = u32::try_from(input.len()).unwrap_or(u32::MAX);
        let avail_out = u32::try_from(output.len()).unwrap_or(u32::MAX);
        self.strm.next_in = input.as_ptr();
        self.strm.avail_in = avail_in;
        self.strm.next_out = output.as_mut_ptr();
        self.strm.avail_out = avail_out;
        let flush = match flush {
            Flush::None => z::Z_NO_FLUSH,
            Flush::Block => z::Z_BLOCK,
        };
        // SAFETY: `self.strm` is initialised and not ended (type invariant). `next_in`/`avail_in`
        // describe the live, borrowed `input` slice (zlib only reads it) and `next_out`/
        // `avail_out` the live, exclusively borrowed `output` slice; both borrows outlive the
        // call, and the pointers are cleared right after it, so zlib never uses them later.
        let ret = unsafe { z::inflate(&mut *self.strm, flush) };
        let consumed = (avail_in - self.strm.avail_in) as usize;
        let produced = (avail_out - self.strm.avail_out) as usize;
        self.strm.next_in = std::ptr::null();
        self.strm.avail_in = 0;
        self.strm.next_out = std::ptr::null_mut();
        self.strm.avail_out = 0;
        let status = match ret {
            z::Z_OK => Status::Ok,
            z::Z_STREAM_END => Status::StreamEnd,
            z::Z_BUF_ERROR => Status::NeedMore,
            z::Z_NEED_DICT => {
                let msg = "stream asks for a preset dictionary".to_string();
                return Err(InflateError { msg, consumed });
            }
            _ => return Err(InflateError { msg: self.message(ret), consumed }),
        };
        Ok(Step { status, consumed, produced, data_type: self.strm.data_type })
    }

    /// Turns a non-OK return code of a setup call into an error.
    fn check(&self, ret: c_int, what: &str) -> Result<(), String> {
        if ret == z::Z_OK {
            Ok(())
        } else {
            Err(format!("{what} failed: {}", self.message(ret)))
        }
    }

    /// zlib's message for the last error, or a description of the return code.
    fn message(&self, ret: c_int) -> String {
        if self.strm.msg.is_null() {
            return match ret {
                z::Z_DATA_ERROR => "invalid deflate data".to_string(),
                z::Z_MEM_ERROR => "out of memory".to_string(),
                z::Z_STREAM_ERROR => "inconsistent zlib stream state".to_string(),
                _ => format!("zlib error code {ret}"),
            };
        }
        // SAFETY: a non-null `msg` always points to one of zlib-rs's static, NUL-terminated
        // message strings (it asserts the terminator before storing the pointer).
        let msg = unsafe { CStr::from_ptr(self.strm.msg) };
        msg.to_string_lossy().into_owned()
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: `self.strm` is initialised and not yet ended (type invariant); after this the
        // value is gone, so it is never used again.
        unsafe {
            z::inflateEnd(&mut *self.strm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_roundtrip_with_block_stops() {
        use std::io::Write;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        enc.write_all(&data).unwrap();
        let comp = enc.finish().unwrap();
        let mut inf = Inflater::new(RAW).unwrap();
        let mut out = vec![0u8; data.len() + 10];
        let (mut i, mut o) = (0, 0);
        loop {
            let step = inf.inflate(&comp[i..], &mut out[o..], Flush::Block).unwrap();
            i += step.consumed;
            o += step.produced;
            if step.status == Status::StreamEnd {
                break;
            }
            assert_ne!(step.status, Status::NeedMore);
        }
        assert_eq!(i, comp.len());
        assert_eq!(&out[..o], &data[..]);
    }

    #[test]
    fn corrupt_input_reports_zlib_message() {
        let mut inf = Inflater::new(RAW).unwrap();
        // Block type 3 is reserved.
        let err = inf.inflate(&[0xff, 0xff, 0xff], &mut [0u8; 64], Flush::None).unwrap_err();
        assert!(err.msg.contains("invalid block type"), "{}", err.msg);
        assert_eq!(err.consumed, 1);
    }
}
