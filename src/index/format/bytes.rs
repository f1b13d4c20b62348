//! Little-endian readers and the name encoding. The readers never panic: a read past the end
//! yields zero bytes, which callers only ever do on slices whose length they checked.

/// Reads a `u16` at `off` (zero if out of bounds).
#[inline]
pub fn rd_u16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = off.checked_add(2).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

/// Reads a `u32` at `off` (zero if out of bounds).
#[inline]
pub fn rd_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = off.checked_add(4).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

/// Reads a `u64` at `off` (zero if out of bounds).
#[inline]
pub fn rd_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = off.checked_add(8).and_then(|end| b.get(off..end)) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Reads an `i64` at `off` (zero if out of bounds).
#[inline]
pub fn rd_i64(b: &[u8], off: usize) -> i64 {
    rd_u64(b, off) as i64
}

/// The bytes `[off, off + len)` of `b`, if in bounds.
#[inline]
pub fn sub(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    b.get(start..end)
}

/// Appends `len` as an unsigned LEB128 varint (the length prefix of a name).
pub fn put_varint(out: &mut Vec<u8>, mut len: u32) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// The name stored at `off` in the strings blob: an unsigned LEB128 length (at most 5 bytes,
/// fitting a `u32`) followed by that many bytes. `None` if malformed or out of bounds.
#[inline]
pub fn read_name(strings: &[u8], off: u32) -> Option<&[u8]> {
    let mut at = off as usize;
    let mut len: u64 = 0;
    let mut shift = 0u32;
    loop {
        let byte = *strings.get(at)?;
        at += 1;
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    if len > u64::from(u32::MAX) {
        return None;
    }
    strings.get(at..at.checked_add(len as usize)?)
}
