//! PAX extended headers: the `"%d %s=%s\n"` record syntax, and the keywords addonfs honours.

use std::ops::Range;

/// The records of one PAX extended header (`x` or `g`), kept in their raw buffer.
#[derive(Debug, Default)]
pub(super) struct PaxHeader {
    buf: Vec<u8>,
    /// Per record: the key's range and the value's range in `buf`.
    records: Vec<(Range<usize>, Range<usize>)>,
}

impl PaxHeader {
    /// Splits `buf` into records. Each is `LEN SP KEY=VALUE NL` where LEN counts the whole
    /// record in bytes; the value is raw bytes (it may hold NUL or newlines). Trailing NUL
    /// padding is accepted. The error names the record's offset within the header.
    pub(super) fn parse(buf: Vec<u8>) -> Result<PaxHeader, String> {
        let mut records = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            if rest.iter().all(|&c| c == 0) {
                break;
            }
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(format!("PAX record at byte {at}: missing length"));
            }
            if rest.get(digits) != Some(&b' ') {
                return Err(format!("PAX record at byte {at}: missing blank after length"));
            }
            let len = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&l| l > digits + 1 && l <= rest.len())
                .ok_or_else(|| {
                    format!(
                        "PAX record at byte {at}: length out of range ({} bytes left)",
                        rest.len()
                    )
                })?;
            let body = &rest[digits + 1..len];
            if body.last() != Some(&b'\n') {
                return Err(format!("PAX record at byte {at}: missing newline at its end"));
            }
            let eq = body
                .iter()
                .position(|&c| c == b'=')
                .filter(|&e| e > 0)
                .ok_or_else(|| format!("PAX record at byte {at}: missing keyword or '='"))?;
            let start = at + digits + 1;
            records.push((start..start + eq, start + eq + 1..at + len - 1));
            at += len;
        }
        Ok(PaxHeader { buf, records })
    }

    /// The records in archive order, as (keyword, value).
    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.records.iter().map(|(k, v)| (&self.buf[k.clone()], &self.buf[v.clone()]))
    }
}

/// PAX sparse-file keywords (`GNU.sparse.*`).
#[derive(Debug, Default, Clone)]
pub(super) struct SparseRecords {
    /// `GNU.sparse.major` (1 for format 1.0, where the map is in the data).
    pub major: Option<u64>,
    /// `GNU.sparse.minor`.
    pub minor: Option<u64>,
    /// `GNU.sparse.name`: the real name (1.0).
    pub name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` or `GNU.sparse.size`: the size as extracted.
    pub realsize: Option<u64>,
    /// The map of formats 0.0 (`offset`/`numbytes` pairs) and 0.1 (`map`).
    pub map: Vec<(u64, u64)>,
    /// A `GNU.sparse.offset` waiting for its `GNU.sparse.numbytes` (0.0).
    pending_offset: Option<u64>,
}

impl SparseRecords {
    /// True if any keyword marks the entry as a PAX sparse file.
    pub fn is_sparse(&self) -> bool {
        self.major.is_some() || !self.map.is_empty() || self.pending_offset.is_some()
    }
}

/// The effect of the PAX records (global, then local) on one entry. `None` means "use the
/// header field".
#[derive(Debug, Default, Clone)]
pub(super) struct Overrides {
    /// `path`.
    pub path: Option<Vec<u8>>,
    /// `linkpath`.
    pub linkpath: Option<Vec<u8>>,
    /// `size`: the stored size.
    pub size: Option<u64>,
    /// `mtime`: seconds and nanoseconds.
    pub mtime: Option<(i64, u32)>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gid`.
    pub gid: Option<u32>,
    /// `SCHILY.devmajor`.
    pub devmajor: Option<u32>,
    /// `SCHILY.devminor`.
    pub devminor: Option<u32>,
    /// `SCHILY.xattr.NAME`, in archive order (duplicates included; see [`dedup_xattrs`]).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `GNU.sparse.*`.
    pub sparse: SparseRecords,
}

/// Parses a decimal number without sign.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &c| acc.checked_mul(10)?.checked_add(u64::from(c - b'0')))
}

/// Parses a PAX time: `[-]SECONDS[.FRACTION]`, the fraction truncated to nanoseconds.
fn time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, v) = match v.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, v),
    };
    let (int, frac) = match v.iter().position(|&c| c == b'.') {
        Some(p) => (&v[..p], &v[p + 1..]),
        None => (v, &b""[..]),
    };
    let secs = i64::try_from(decimal(int)?).ok()?;
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut nsec = 0u32;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |&c| u32::from(c - b'0'));
    }
    if !neg {
        return Some((secs, nsec));
    }
    if nsec == 0 {
        Some((-secs, 0))
    } else {
        Some((-secs - 1, 1_000_000_000 - nsec))
    }
}

/// A string value: up to its first NUL (GNU tar decodes these as C strings).
fn string(v: &[u8]) -> Vec<u8> {
    super::header::cstr(v).to_vec()
}

/// Keeps only the last record for each xattr name (a local record overrides a global one),
/// in the order of those last records. Linear time, whatever the count.
pub(super) fn dedup_xattrs(mut xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if xattrs.len() < 2 {
        return xattrs;
    }
    let mut seen = std::collections::HashSet::new();
    let mut keep = vec![false; xattrs.len()];
    for (i, (name, _)) in xattrs.iter().enumerate().rev() {
        keep[i] = seen.insert(name.clone());
    }
    let mut i = 0;
    xattrs.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    xattrs
}

impl Overrides {
    /// Applies every record of `h`, in order.
    pub fn apply_all(&mut self, h: &PaxHeader) -> Result<(), String> {
        h.iter().try_for_each(|(k, v)| self.apply(k, v))
    }

    /// Applies one record. An empty value resets the keyword to the header's field (POSIX).
    /// Unknown and ignored keywords (atime, ctime, uname, gname, charset, comment...) are
    /// skipped. The error names the keyword and value.
    pub fn apply(&mut self, key: &[u8], v: &[u8]) -> Result<(), String> {
        let bad = || {
            format!(
                "bad PAX record {}={:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&v[..v.len().min(64)])
            )
        };
        let num = || decimal(v).ok_or_else(bad);
        let id = || num().and_then(|n| u32::try_from(n).map_err(|_| bad()));
        let empty = v.is_empty();
        match key {
            b"path" => self.path = (!empty).then(|| string(v)),
            b"linkpath" => self.linkpath = (!empty).then(|| string(v)),
            b"size" => self.size = if empty { None } else { Some(num()?) },
            b"mtime" => self.mtime = if empty { None } else { Some(time(v).ok_or_else(bad)?) },
            b"uid" => self.uid = if empty { None } else { Some(id()?) },
            b"gid" => self.gid = if empty { None } else { Some(id()?) },
            b"SCHILY.devmajor" => self.devmajor = if empty { None } else { Some(id()?) },
            b"SCHILY.devminor" => self.devminor = if empty { None } else { Some(id()?) },
            b"GNU.sparse.major" => self.sparse.major = Some(num()?),
            b"GNU.sparse.minor" => self.sparse.minor = Some(num()?),
            b"GNU.sparse.name" => self.sparse.name = (!empty).then(|| string(v)),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => self.sparse.realsize = Some(num()?),
            b"GNU.sparse.numblocks" => {
                num()?;
            }
            b"GNU.sparse.offset" => self.sparse.pending_offset = Some(num()?),
            b"GNU.sparse.numbytes" => {
                let off = self.sparse.pending_offset.take().ok_or_else(|| {
                    format!("{}: GNU.sparse.numbytes without a GNU.sparse.offset before it", bad())
                })?;
                self.sparse.map.push((off, num()?));
            }
            b"GNU.sparse.map" => {
                let nums: Option<Vec<u64>> = if empty {
                    Some(Vec::new())
                } else {
                    v.split(|&c| c == b',').map(decimal).collect()
                };
                let nums = nums.filter(|n| n.len() % 2 == 0).ok_or_else(bad)?;
                self.sparse.map = nums.chunks_exact(2).map(|p| (p[0], p[1])).collect();
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    self.xattrs.push((name.to_vec(), v.to_vec()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &[u8]) -> Vec<u8> {
        let body_len = k.len() + v.len() + 3;
        let mut n = body_len + 1;
        while format!("{n} ").len() + body_len - 1 != n {
            n += 1;
        }
        let mut out = format!("{n} {k}=").into_bytes();
        out.extend_from_slice(v);
        out.push(b'\n');
        assert_eq!(out.len(), n);
        out
    }

    #[test]
    fn records_with_raw_values() {
        let mut buf = rec("path", b"a/b");
        buf.extend(rec("SCHILY.xattr.user.x", b"a\0b\nc=d"));
        buf.extend([0u8; 20]);
        let h = PaxHeader::parse(buf).unwrap();
        let recs: Vec<_> = h.iter().collect();
        assert_eq!(
            recs,
            vec![(&b"path"[..], &b"a/b"[..]), (&b"SCHILY.xattr.user.x"[..], &b"a\0b\nc=d"[..])]
        );
        let mut o = Overrides::default();
        o.apply_all(&h).unwrap();
        assert_eq!(o.path.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(o.xattrs, vec![(b"user.x".to_vec(), b"a\0b\nc=d".to_vec())]);
    }

    #[test]
    fn malformed_records() {
        for bad in [
            &b"x"[..],
            b"5 a=b",
            b"7 a=b\n",
            b"5 a=b\n",
            b"6 ab\n\n",
            b"06 =b\n",
            b"99 a=b\n",
            b"3 a\n",
            b"0 \n",
        ] {
            let e = PaxHeader::parse(bad.to_vec())
                .err()
                .unwrap_or_else(|| panic!("{:?} accepted", String::from_utf8_lossy(bad)));
            assert!(e.to_string().contains("PAX record at byte 0"), "{e}");
        }
        assert!(PaxHeader::parse(b"6 a=b\n".to_vec()).is_ok());
    }

    #[test]
    fn times() {
        assert_eq!(time(b"1000000000.5"), Some((1_000_000_000, 500_000_000)));
        assert_eq!(time(b"12"), Some((12, 0)));
        assert_eq!(time(b"1.1234567899"), Some((1, 123_456_789)));
        assert_eq!(time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(time(b"-3"), Some((-3, 0)));
        assert_eq!(time(b"1.x"), None);
        assert_eq!(time(b""), None);
        assert_eq!(time(b"99999999999999999999"), None);
    }

    #[test]
    fn values() {
        let mut o = Overrides::default();
        assert_eq!(o.apply(b"uid", b"4294967296"), Err("bad PAX record uid=\"4294967296\"".into()));
        o.apply(b"uid", b"4294967295").unwrap();
        assert_eq!(o.uid, Some(u32::MAX));
        o.apply(b"uid", b"").unwrap();
        assert_eq!(o.uid, None);
        assert_eq!(o.apply(b"size", b"-1"), Err("bad PAX record size=\"-1\"".into()));
        o.apply(b"GNU.sparse.map", b"0,10,20,5").unwrap();
        assert_eq!(o.sparse.map, vec![(0, 10), (20, 5)]);
        assert_eq!(
            o.apply(b"GNU.sparse.map", b"0,10,20"),
            Err("bad PAX record GNU.sparse.map=\"0,10,20\"".into())
        );
        let e = o.apply(b"GNU.sparse.numbytes", b"3").unwrap_err();
        assert!(e.ends_with("without a GNU.sparse.offset before it"), "{e}");
        o.apply(b"atime", b"garbage").unwrap();
    }
}
