//! Sparse windows: keep only the bytes of an access point's window that the deflate stream after
//! the point actually copies from, so stored windows compress far better.
//!
//! Deflate decoding (Huffman codes, literals, lengths, distances) does not depend on what the
//! dictionary holds, only the copied bytes do. So inflating the 32 KiB after a point with
//! synthetic windows reveals which window bytes are used: with window byte `i` set to
//! `i & 0xff`, then to `!(i & 0xff)`, an output byte that differs between the two runs was
//! copied (perhaps through earlier output) from the window, and a third run with `i >> 8` gives
//! the high byte of its source position. No back-reference can reach the window from further
//! than 32 KiB after the point. A last run with the sparse window checks the result; any doubt
//! keeps the whole window.

use std::fs::File;
use std::sync::Arc;

use super::{AccessPoint, GzipError, SpanInflater, WINDOW_SIZE};

/// Returns the window of `point` with every byte that the following stream never copies from
/// set to zero (same length). The archive is read from `file`.
pub fn sparsify_window(file: &Arc<File>, point: &AccessPoint) -> Result<Vec<u8>, GzipError> {
    let window = &point.window;
    let n = window.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let lo: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let lo_flipped: Vec<u8> = lo.iter().map(|b| !b).collect();
    let hi: Vec<u8> = (0..n).map(|i| (i >> 8) as u8).collect();
    let a = inflate_after(file, point, &lo)?;
    let b = inflate_after(file, point, &lo_flipped)?;
    let c = inflate_after(file, point, &hi)?;
    if a.len() != b.len() || a.len() != c.len() {
        return Ok(window.clone());
    }
    let mut used = vec![false; n];
    let mut expected = a.clone();
    for q in 0..a.len() {
        if a[q] != b[q] {
            let source = usize::from(c[q]) << 8 | usize::from(a[q]);
            if source >= n {
                return Ok(window.clone());
            }
            used[source] = true;
            expected[q] = window[source];
        }
    }
    let sparse: Vec<u8> =
        window.iter().zip(&used).map(|(&byte, &keep)| if keep { byte } else { 0 }).collect();
    if inflate_after(file, point, &sparse)? != expected {
        return Ok(window.clone());
    }
    Ok(sparse)
}

/// Inflates up to one window's worth of bytes after `point`, using `window` as its history.
fn inflate_after(
    file: &Arc<File>,
    point: &AccessPoint,
    window: &[u8],
) -> Result<Vec<u8>, GzipError> {
    let mut inflater = SpanInflater::new(
        Arc::<File>::clone(file),
        point.uncompressed,
        point.compressed,
        point.bits,
        window,
    )?;
    let mut out = vec![0u8; WINDOW_SIZE];
    let mut filled = 0;
    while filled < out.len() {
        let n = inflater.read(&mut out[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    out.truncate(filled);
    Ok(out)
}
