//! One 512-byte tar header block: field layout, numeric fields (octal and base-256), the
//! checksum and the name fields, decoded the way GNU tar 1.34 decodes them.

/// Size of a tar block.
pub(super) const BLOCK: usize = 512;

/// One tar block.
pub(super) type Block = [u8; BLOCK];

/// Byte ranges of the header fields shared by every format.
pub(super) mod field {
    use std::ops::Range;

    pub const NAME: Range<usize> = 0..100;
    pub const MODE: Range<usize> = 100..108;
    pub const UID: Range<usize> = 108..116;
    pub const GID: Range<usize> = 116..124;
    pub const SIZE: Range<usize> = 124..136;
    pub const MTIME: Range<usize> = 136..148;
    pub const CHKSUM: Range<usize> = 148..156;
    pub const TYPEFLAG: usize = 156;
    pub const LINKNAME: Range<usize> = 157..257;
    pub const DEVMAJOR: Range<usize> = 329..337;
    pub const DEVMINOR: Range<usize> = 337..345;
    /// POSIX ustar only: the name prefix.
    pub const PREFIX: Range<usize> = 345..500;
    /// Old GNU only: four sparse descriptors (12-byte offset + 12-byte length each).
    pub const GNU_SPARSE: Range<usize> = 386..482;
    /// Old GNU only: set when sparse extension blocks follow the header.
    pub const GNU_ISEXTENDED: usize = 482;
    /// Old GNU only: the size of the file as extracted.
    pub const GNU_REALSIZE: Range<usize> = 483..495;
}

/// The header dialect, from the magic field (GNU tar's `decode_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// POSIX ustar (`"ustar\0"`), including PAX: has the name prefix field.
    Ustar,
    /// GNU and old GNU (`"ustar  \0"`): no prefix; sparse fields instead.
    Gnu,
    /// Unix v7: no magic, no user/group names, no device numbers.
    V7,
}

/// Detects the header dialect from its magic.
pub(super) fn format(b: &Block) -> Format {
    if &b[257..263] == b"ustar\0" {
        Format::Ustar
    } else if &b[257..265] == b"ustar  \0" {
        Format::Gnu
    } else {
        Format::V7
    }
}

/// True for an all-zero block (an end-of-archive marker).
pub(super) fn is_zero(b: &[u8]) -> bool {
    b.chunks_exact(8).all(|c| c == [0u8; 8])
        && b.chunks_exact(8).remainder().iter().all(|&x| x == 0)
}

/// The bytes of a NUL-terminated field, up to (not including) the first NUL.
pub(super) fn cstr(f: &[u8]) -> &[u8] {
    match f.iter().position(|&c| c == 0) {
        Some(n) => &f[..n],
        None => f,
    }
}

/// The entry name as the header spells it: the POSIX prefix (ustar only) joined to the name.
pub(super) fn name(b: &Block) -> Vec<u8> {
    let name = cstr(&b[field::NAME]);
    let prefix = cstr(&b[field::PREFIX]);
    if format(b) == Format::Ustar && !prefix.is_empty() {
        let mut out = Vec::with_capacity(prefix.len() + 1 + name.len());
        out.extend_from_slice(prefix);
        out.push(b'/');
        out.extend_from_slice(name);
        out
    } else {
        name.to_vec()
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Decodes a numeric header field like GNU tar's `from_header`: optional leading NUL and
/// blanks, then octal digits terminated by NUL, blank or the field end; or (unless
/// `octal_only`) base-256, a leading 0x80 (positive) or 0xff (negative, two's complement) byte.
/// An all-NUL field reads as 0. The error says what was wrong.
pub(super) fn number(f: &[u8], octal_only: bool) -> Result<i128, String> {
    let mut i = usize::from(f.first() == Some(&0));
    while i < f.len() && is_space(f[i]) {
        i += 1;
    }
    if i == f.len() {
        return Err("blanks where a number was expected".into());
    }
    let mut value: i128 = 0;
    if f[i].is_ascii_digit() && f[i] < b'8' {
        // At most 12 octal digits (36 bits): no overflow in i128.
        while i < f.len() && (b'0'..=b'7').contains(&f[i]) {
            value = value * 8 + i128::from(f[i] - b'0');
            i += 1;
        }
    } else if !octal_only && (f[i] == 0x80 || f[i] == 0xff) {
        // At most 11 further bytes (88 bits) after the marker: no overflow in i128.
        value = if f[i] == 0xff { -1 } else { 0 };
        for &c in &f[i + 1..] {
            value = (value << 8) | i128::from(c);
        }
        i = f.len();
    }
    if i < f.len() && f[i] != 0 && !is_space(f[i]) {
        return Err(format!("{:?} where a number was expected", String::from_utf8_lossy(cstr(f))));
    }
    Ok(value)
}

/// Decodes a numeric field that must lie in `0..=max`; `what` names it in the error.
pub(super) fn unsigned(f: &[u8], max: u64, what: &str) -> Result<u64, String> {
    let v = number(f, false).map_err(|e| format!("bad {what} field: {e}"))?;
    u64::try_from(v)
        .ok()
        .filter(|&v| v <= max)
        .ok_or_else(|| format!("{what} field value {v} is out of range 0..={max}"))
}

/// Decodes the (signed) mtime field.
pub(super) fn mtime(b: &Block) -> Result<i64, String> {
    let v = number(&b[field::MTIME], false).map_err(|e| format!("bad mtime field: {e}"))?;
    i64::try_from(v).map_err(|_| format!("mtime field value {v} is out of range"))
}

/// Verifies the header checksum: the recorded sum must equal the unsigned (POSIX) or the
/// signed (historic Sun/BSD) sum of the block with the checksum field counted as blanks.
pub(super) fn check_checksum(b: &Block) -> Result<(), String> {
    let field = &b[field::CHKSUM];
    let unsigned: u32 = b.iter().map(|&c| u32::from(c)).sum::<u32>()
        - field.iter().map(|&c| u32::from(c)).sum::<u32>()
        + 8 * u32::from(b' ');
    let recorded = match number(field, true) {
        Ok(v) => v,
        Err(e) => return Err(format!("bad header checksum field: {e} (computed {unsigned:o})")),
    };
    if recorded == i128::from(unsigned) {
        return Ok(());
    }
    let signed: i32 = b.iter().map(|&c| i32::from(c as i8)).sum::<i32>()
        - field.iter().map(|&c| i32::from(c as i8)).sum::<i32>()
        + 8 * i32::from(b' ');
    if recorded == i128::from(signed) {
        return Ok(());
    }
    Err(format!("header checksum mismatch: recorded {recorded:o}, computed {unsigned:o}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_decode_like_gnu_tar() {
        assert_eq!(number(b"0000644\0", false), Ok(0o644));
        assert_eq!(number(b"  644 \0\0", false), Ok(0o644));
        assert_eq!(number(b"\0\0\0\0\0\0\0\0", false), Ok(0));
        assert_eq!(number(b"\x000000644", false), Ok(0o644));
        assert_eq!(number(b"        ", false), Err("blanks where a number was expected".into()));
        assert_eq!(
            number(b"00006x4\0", false),
            Err("\"00006x4\" where a number was expected".into())
        );
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 0x01, 0x00], false), Ok(256));
        assert_eq!(number(&[0xff; 12], false), Ok(-1));
        assert_eq!(number(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe], false), Ok(-2));
        // Base-256 where only octal is allowed.
        let e = number(&[0x80, 0, 0, 0, 0, 0, 0, 1], true).unwrap_err();
        assert!(e.ends_with("where a number was expected"), "{e}");
        let e = unsigned(&[0xff; 12], u64::MAX, "size").unwrap_err();
        assert_eq!(e, format!("size field value -1 is out of range 0..={}", u64::MAX));
        let big = [0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let e = unsigned(&big, u64::MAX, "size").unwrap_err();
        assert!(e.starts_with("size field value ") && e.contains("out of range"), "{e}");
    }

    #[test]
    fn zero_blocks() {
        assert!(is_zero(&[0u8; 512]));
        let mut b = [0u8; 512];
        b[511] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 13]));
        assert!(!is_zero(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]));
    }
}
