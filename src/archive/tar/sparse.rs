//! Sparse maps: old-GNU descriptors (in the header and its extension blocks), the PAX 1.0 map
//! (decimal text at the start of the data), and their validation into [`SparseSegment`]s.

use super::header::{self, field};
use crate::archive::SparseSegment;

/// Descriptors in one old-GNU extension block (21 x 24 bytes, then the `isextended` flag).
pub(super) const EXT_DESCRIPTORS: usize = 21;
/// Offset of the `isextended` flag in an extension block.
pub(super) const EXT_ISEXTENDED: usize = 504;

/// Decodes old-GNU sparse descriptors (12-byte offset, 12-byte length each) from `area` into
/// `map`. Returns `false` once a descriptor is empty (the list ended), like GNU tar.
pub(super) fn old_gnu_descriptors(area: &[u8], map: &mut Vec<(u64, u64)>) -> Result<bool, String> {
    for d in area.chunks_exact(24) {
        if d[12] == 0 {
            return Ok(false);
        }
        let off = header::unsigned(&d[..12], i64::MAX as u64, "sparse offset")?;
        let len = header::unsigned(&d[12..], i64::MAX as u64, "sparse length")?;
        map.push((off, len));
    }
    Ok(true)
}

/// What an old-GNU sparse header (`S`) says about its file.
pub(super) struct OldGnuHeader {
    /// The descriptors in the header itself.
    pub map: Vec<(u64, u64)>,
    /// True if extension blocks follow the header.
    pub extended: bool,
    /// The size of the file as extracted.
    pub realsize: u64,
}

/// Decodes the sparse fields of an old-GNU sparse header.
pub(super) fn old_gnu_header(b: &header::Block) -> Result<OldGnuHeader, String> {
    let mut map = Vec::new();
    let more = old_gnu_descriptors(&b[field::GNU_SPARSE], &mut map)?;
    let realsize = header::unsigned(&b[field::GNU_REALSIZE], i64::MAX as u64, "sparse real size")?;
    Ok(OldGnuHeader { map, extended: more && b[field::GNU_ISEXTENDED] != 0, realsize })
}

/// Incremental parser of the PAX sparse 1.0 map: decimal numbers, each ended by a newline:
/// the count N, then N (offset, length) pairs.
#[derive(Debug, Default)]
pub(super) struct MapText {
    count: Option<u64>,
    cur: Option<u64>,
    digits: usize,
    first: Option<u64>,
    /// The pairs decoded so far.
    pub map: Vec<(u64, u64)>,
}

impl MapText {
    /// Feeds the next bytes of the map. Returns `Ok(true)` once the map is complete (the rest
    /// of `bytes` is ignored). `max_pairs` bounds the announced count before anything is
    /// allocated; exceeding it is reported as `Err(None)`, a syntax error as `Err(Some(_))`.
    pub fn feed(&mut self, bytes: &[u8], max_pairs: u64) -> Result<bool, Option<String>> {
        for &c in bytes {
            if self.is_done() {
                return Ok(true);
            }
            match c {
                b'0'..=b'9' => {
                    self.digits += 1;
                    let v = self.cur.unwrap_or(0);
                    let v = v.checked_mul(10).and_then(|v| v.checked_add(u64::from(c - b'0')));
                    self.cur = Some(
                        v.filter(|&v| v <= i64::MAX as u64)
                            .ok_or_else(|| Some("number too large in sparse map".to_string()))?,
                    );
                }
                b'\n' => {
                    let v = self
                        .cur
                        .take()
                        .ok_or_else(|| Some("empty number in sparse map".to_string()))?;
                    self.digits = 0;
                    if self.count.is_none() {
                        if v > max_pairs {
                            return Err(None);
                        }
                        self.count = Some(v);
                    } else if let Some(off) = self.first.take() {
                        self.map.push((off, v));
                    } else {
                        self.first = Some(v);
                    }
                }
                _ => {
                    return Err(Some(format!(
                        "byte 0x{c:02x} in sparse map where a digit was expected"
                    )))
                }
            }
        }
        Ok(self.is_done())
    }

    fn is_done(&self) -> bool {
        self.count.is_some_and(|n| self.map.len() as u64 == n)
    }
}

/// Validates `map` (sorted, non-overlapping, inside `realsize`) and lays its runs out in the
/// `stored` bytes that follow at `data_start`. Like GNU tar's extraction, each run starts on a
/// block boundary (runs other than the last are whole blocks in practice, as GNU tar finds holes
/// at file system block granularity). Zero-length runs take no room and are dropped. The caller
/// guarantees that `data_start + stored` does not overflow.
pub(super) fn segments(
    map: &[(u64, u64)],
    realsize: u64,
    data_start: u64,
    stored: u64,
) -> Result<Vec<SparseSegment>, String> {
    let mut out = Vec::with_capacity(map.len());
    let mut prev_end = 0u64;
    // Stored bytes taken by the runs so far, rounded up to whole blocks.
    let mut used = 0u64;
    for (i, &(off, len)) in map.iter().enumerate() {
        let end = off
            .checked_add(len)
            .ok_or_else(|| format!("sparse map run {i} ({off}+{len}) overflows"))?;
        if off < prev_end {
            return Err(format!(
                "sparse map run {i} at {off} overlaps or precedes the run before it (ending at {prev_end})"
            ));
        }
        if end > realsize {
            return Err(format!(
                "sparse map run {i} ({off}+{len}) ends beyond the real size {realsize}"
            ));
        }
        prev_end = end;
        if len == 0 {
            continue;
        }
        if used > stored || len > stored - used {
            return Err(format!(
                "sparse map runs need more than the {stored} bytes stored (run {i}: {off}+{len})"
            ));
        }
        // No overflow: data_start + stored fits, and used + len <= stored.
        out.push(SparseSegment { logical: off, len, stream_offset: data_start + used });
        used = used.saturating_add(len.div_ceil(512).saturating_mul(512));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_text_incremental() {
        let mut m = MapText::default();
        assert_eq!(m.feed(b"2\n0\n1", 10), Ok(false));
        assert_eq!(m.feed(b"0\n4096\n", 10), Ok(false));
        assert_eq!(m.feed(b"5\n\0\0\0", 10), Ok(true));
        assert_eq!(m.map, vec![(0, 10), (4096, 5)]);
        let mut m = MapText::default();
        assert_eq!(m.feed(b"0\n", 10), Ok(true));
        assert!(MapText::default().feed(b"11\n", 10) == Err(None));
        assert!(matches!(MapText::default().feed(b"1\n\n", 10), Err(Some(_))));
        assert!(matches!(MapText::default().feed(b"1\nx", 10), Err(Some(_))));
        assert!(matches!(MapText::default().feed(b"99999999999999999999\n", 10), Err(Some(_))));
    }

    #[test]
    fn segments_validate() {
        let s = segments(&[(0, 10), (100, 5), (200, 0)], 200, 1000, 517).unwrap();
        assert_eq!(
            s,
            vec![
                SparseSegment { logical: 0, len: 10, stream_offset: 1000 },
                SparseSegment { logical: 100, len: 5, stream_offset: 1512 }
            ]
        );
        let err = |map: &[(u64, u64)], realsize, stored, want: &str| {
            let e = segments(map, realsize, 0, stored).unwrap_err();
            assert!(e.contains(want), "{map:?}: {e} lacks {want:?}");
        };
        err(&[(0, 10), (100, 5)], 200, 516, "need more than the 516 bytes stored (run 1");
        err(&[(100, 5), (0, 10)], 200, 1024, "run 1 at 0 overlaps or precedes");
        err(&[(0, 10), (5, 10)], 200, 1024, "run 1 at 5 overlaps or precedes");
        err(&[(0, 10), (195, 10)], 200, 1024, "run 1 (195+10) ends beyond the real size 200");
        err(&[(u64::MAX, 10)], u64::MAX, 20, "run 0 (18446744073709551615+10) overflows");
        assert_eq!(segments(&[(0, 0), (7, 0)], 7, 0, 0), Ok(vec![]));
    }
}
