//! The gzip framing around the deflate data (RFC 1952): what may follow a member, and the checks
//! of a member header's fixed part. zlib (in gzip mode) parses the variable part of the header
//! and checks the CRC-32/ISIZE trailer; this module gives the framing errors precise words.

/// Length of a member trailer: CRC-32 then ISIZE, both little-endian u32.
pub(crate) const TRAILER_LEN: usize = 8;
/// Length of the fixed part of a member header.
pub(crate) const FIXED_HEADER_LEN: usize = 10;

/// What the bytes after a member (or at the start of the file) are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The magic bytes of another member.
    Member,
    /// The end of the file.
    End,
    /// A zero byte: padding after the last member (accepted when only zeros follow).
    Zeros,
    /// Anything else.
    Garbage,
    /// Not enough bytes to tell yet.
    NeedMore,
}

/// Classifies the bytes `avail` found after a member; `eof` says no more bytes follow them.
pub(crate) fn classify(avail: &[u8], eof: bool) -> Next {
    match avail {
        [] if eof => Next::End,
        [] => Next::NeedMore,
        [0x1f] if !eof => Next::NeedMore,
        [0x1f, 0x8b, ..] => Next::Member,
        [0, ..] => Next::Zeros,
        _ => Next::Garbage,
    }
}

/// Checks the fixed part of a member header that `head` starts with (it may be shorter: only
/// what is there is checked; zlib checks the rest). Returns the rule that broke.
pub(crate) fn check_fixed_header(head: &[u8]) -> Result<(), String> {
    if let Some(&method) = head.get(2) {
        if method != 8 {
            return Err(format!(
                "bad gzip header: unknown compression method {method} (only 8, deflate, exists)"
            ));
        }
    }
    if let Some(&flags) = head.get(3) {
        if flags & 0xe0 != 0 {
            return Err(format!("bad gzip header: reserved flag bits set (flags 0x{flags:02x})"));
        }
    }
    Ok(())
}

/// Hex of up to the first 8 bytes of `bytes`, for error messages.
pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    let mut s = String::new();
    for b in bytes.iter().take(8) {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_cases() {
        assert_eq!(classify(&[], true), Next::End);
        assert_eq!(classify(&[], false), Next::NeedMore);
        assert_eq!(classify(&[0x1f], false), Next::NeedMore);
        assert_eq!(classify(&[0x1f], true), Next::Garbage);
        assert_eq!(classify(&[0x1f, 0x8b], true), Next::Member);
        assert_eq!(classify(&[0x1f, 0x8c], false), Next::Garbage);
        assert_eq!(classify(&[0, 1], false), Next::Zeros);
        assert_eq!(classify(b"PK", false), Next::Garbage);
    }

    #[test]
    fn fixed_header_checks() {
        assert!(check_fixed_header(&[0x1f, 0x8b, 8, 0]).is_ok());
        assert!(check_fixed_header(&[0x1f, 0x8b]).is_ok());
        assert!(check_fixed_header(&[0x1f, 0x8b, 7]).unwrap_err().contains("method 7"));
        assert!(check_fixed_header(&[0x1f, 0x8b, 8, 0x20]).unwrap_err().contains("reserved"));
        assert_eq!(hex_prefix(&[0x1f, 0x8b, 0]), "1f 8b 00");
    }
}
